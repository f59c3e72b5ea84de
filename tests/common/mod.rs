pub mod clients;
pub mod zk;
