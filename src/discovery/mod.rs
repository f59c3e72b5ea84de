//! Client library: discovers the endpoints podkeeper publishes and picks one per request.
//! Reads ZooKeeper only; never writes.

pub mod cli;
