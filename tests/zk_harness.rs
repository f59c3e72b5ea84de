//! The test harness itself: a real ZooKeeper starts, answers, restarts and stops.

mod common;

use common::zk::{ZkServer, four_letter};

#[test]
fn zookeeper_starts_restarts_and_stops() {
    let mut zk = ZkServer::start();
    let port: u16 = zk
        .connect_string()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(four_letter(port, "ruok").as_deref(), Some("imok"));
    zk.restart();
    assert_eq!(four_letter(port, "ruok").as_deref(), Some("imok"));
    let dir = zk.data_dir().to_path_buf();
    drop(zk);
    assert_eq!(four_letter(port, "ruok"), None);
    assert!(!dir.exists(), "{} was left behind", dir.display());
}
