//! The secure test server is configured as production runs ZooKeeper: proven with the real Java
//! client (Debian's zookeeper.jar) and with the Rust `zookeeper-client` the operator uses.

mod common;

use std::time::Duration;

use common::zk::{CertKey, Credential, ZkServer, four_letter};
use zookeeper_client as zkc;

/// rustls has ring (through kube) and aws-lc-rs (through zookeeper-client) compiled in, so it
/// cannot choose a CryptoProvider itself; the first caller installs ring for the process.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn tls_options(ca_pem: &str, identity: Option<&CertKey>) -> zkc::TlsOptions {
    let tls = zkc::TlsOptions::new().with_pem_ca(ca_pem).unwrap();
    match identity {
        Some(id) => tls
            .with_pem_identity(&id.cert_pem(), &id.key_pem())
            .unwrap(),
        None => tls,
    }
}

/// Connects to the TLS port with `identity` and optionally a SASL login; bounded by 15s.
async fn rust_connect(
    zk: &ZkServer,
    identity: Option<&CertKey>,
    sasl: Option<&Credential>,
) -> Result<zkc::Client, zkc::Error> {
    install_crypto_provider();
    let mut connector = zkc::Client::connector()
        .with_tls(tls_options(&zk.pki().ca_pem(), identity))
        .with_session_timeout(Duration::from_secs(10))
        .with_connection_timeout(Duration::from_secs(5))
        .with_fail_eagerly();
    if let Some(c) = sasl {
        connector = connector.with_sasl(zkc::SaslOptions::digest_md5(
            c.user.clone(),
            c.password.clone(),
        ));
    }
    tokio::time::timeout(
        Duration::from_secs(15),
        connector.secure_connect(&zk.secure_connect_string()),
    )
    .await
    .expect("connect did not finish within 15s")
}

fn ids(users: &[zkc::AuthUser]) -> Vec<(String, String)> {
    let mut ids: Vec<(String, String)> = users
        .iter()
        .map(|u| (u.scheme().to_string(), u.user().to_string()))
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn rust_client_over_tls_with_sasl_has_x509_and_sasl_ids() {
    let zk = ZkServer::shared_secure();
    assert!(
        four_letter(zk.port(), "srvr").is_some_and(|s| s.contains("Mode: standalone")),
        "the plain port answers four-letter words"
    );
    let client = rust_connect(
        zk,
        Some(&zk.pki().podkeeper),
        Some(zk.sasl_user("podkeeper")),
    )
    .await
    .expect("podkeeper connects over TLS with SASL");
    let users = client.list_auth_users().await.unwrap();
    eprintln!("rust who_am_i (podkeeper cert + SASL podkeeper): {users:?}");
    assert_eq!(
        ids(&users),
        vec![
            ("ip".to_string(), "127.0.0.1".to_string()),
            ("sasl".to_string(), "podkeeper".to_string()),
            ("x509".to_string(), zk.pki().podkeeper.x509_id.clone()),
        ]
    );
}
