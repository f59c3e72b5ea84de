//! The secure test server is configured as production runs ZooKeeper: proven with the real Java
//! client (Debian's zookeeper.jar) and with the Rust `zookeeper-client` the operator uses.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::zk::{CertKey, ClientAuth, Credential, SecureOptions, ZkServer, four_letter};
use zookeeper_client as zkc;

/// The Java side: one connection with the ZKClientConfig properties given as `key=value`
/// arguments (`addauth.digest=user:pw` adds digest auth), then `whoAmI()`. It prints `STATE`
/// lines, `WHOAMI <scheme> <id>` lines and one `RESULT` line: CONNECTED, AUTH_FAILED,
/// NOT_CONNECTED (no session before its deadline) or WHOAMI_FAILED.
const JAVA_PROBE: &str = r#"import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import org.apache.zookeeper.Watcher.Event.EventType;
import org.apache.zookeeper.Watcher.Event.KeeperState;
import org.apache.zookeeper.ZooKeeper;
import org.apache.zookeeper.client.ZKClientConfig;
import org.apache.zookeeper.data.ClientInfo;

/** Connects once with the client settings given as key=value arguments, prints what happens. */
public class SecureProbe {
    public static void main(String[] args) throws Exception {
        String server = args[0];
        long deadline = System.currentTimeMillis() + Long.parseLong(args[1]);
        ZKClientConfig config = new ZKClientConfig();
        String digest = null;
        for (int i = 2; i < args.length; i++) {
            String[] kv = args[i].split("=", 2);
            if (kv[0].equals("addauth.digest")) {
                digest = kv[1];
            } else {
                config.setProperty(kv[0], kv[1]);
            }
        }
        // With SASL on, requests wait for the login: its outcome is SaslAuthenticated or AuthFailed.
        KeeperState ready = "true".equals(config.getProperty(ZKClientConfig.ENABLE_CLIENT_SASL_KEY))
            ? KeeperState.SaslAuthenticated : KeeperState.SyncConnected;
        LinkedBlockingQueue<KeeperState> states = new LinkedBlockingQueue<>();
        ZooKeeper zk = new ZooKeeper(server, 10000, e -> {
            if (e.getType() == EventType.None) {
                states.add(e.getState());
            }
        }, config);
        if (digest != null) {
            zk.addAuthInfo("digest", digest.getBytes(java.nio.charset.StandardCharsets.UTF_8));
        }
        int code = 3;
        try {
            while (true) {
                KeeperState s = states.poll(Math.max(1, deadline - System.currentTimeMillis()), TimeUnit.MILLISECONDS);
                if (s == null) {
                    System.out.println("RESULT NOT_CONNECTED");
                    break;
                }
                System.out.println("STATE " + s);
                if (s == KeeperState.AuthFailed) {
                    System.out.println("RESULT AUTH_FAILED");
                    code = 2;
                    break;
                }
                if (s == ready) {
                    java.util.List<ClientInfo> ids = zk.whoAmI();
                    if (ids == null) {
                        System.out.println("RESULT WHOAMI_FAILED");
                        code = 4;
                        break;
                    }
                    for (ClientInfo c : ids) {
                        System.out.println("WHOAMI " + c.getAuthScheme() + " " + c.getUser());
                    }
                    System.out.println("RESULT CONNECTED");
                    code = 0;
                    break;
                }
            }
        } finally {
            zk.close(1000);
        }
        System.exit(code);
    }
}
"#;

/// The Java probe compiled once into the shared server's directory, and a JAAS file with a
/// `Client_<user>` section per SASL user and a `WrongPassword` section (user podkeeper).
fn java_client_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let zk = ZkServer::shared_secure();
        let dir = zk.data_dir().join("java-client");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("SecureProbe.java"), JAVA_PROBE).unwrap();
        let section = |name: &str, c: &Credential| {
            format!(
                "{name} {{\n  org.apache.zookeeper.server.auth.DigestLoginModule required\n  \
                 username=\"{}\"\n  password=\"{}\";\n}};\n",
                c.user, c.password
            )
        };
        let mut jaas: String = zk
            .secure_options()
            .sasl_users
            .iter()
            .map(|c| section(&format!("Client_{}", c.user), c))
            .collect();
        jaas += &section(
            "WrongPassword",
            &Credential::new("podkeeper", "not-the-secret"),
        );
        std::fs::write(dir.join("jaas.conf"), jaas).unwrap();
        let out = Command::new("timeout")
            .args(["60", "javac", "-cp", common::zk::classpath(), "-d"])
            .arg(&dir)
            .arg(dir.join("SecureProbe.java"))
            .output()
            .expect("run javac");
        assert!(
            out.status.success(),
            "javac failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// What the Java client saw.
#[derive(Debug)]
struct JavaOutcome {
    result: String,
    ids: Vec<(String, String)>,
    log: String,
}

/// Runs the Java probe against `port` (TLS unless `plain`), with `identity` as the keystore and
/// the JAAS section `sasl` (none: SASL off). Waits for a session at most `wait`.
fn java_connect(
    port: u16,
    plain: bool,
    identity: Option<&CertKey>,
    sasl: Option<&str>,
    extra: &[String],
    wait: Duration,
) -> JavaOutcome {
    let zk = ZkServer::shared_secure();
    let dir = java_client_dir();
    let mut props = vec![
        format!("zookeeper.client.secure={}", !plain),
        "zookeeper.clientCnxnSocket=org.apache.zookeeper.ClientCnxnSocketNetty".to_string(),
        format!(
            "zookeeper.ssl.trustStore.location={}",
            zk.pki().ca.display()
        ),
        "zookeeper.ssl.trustStore.type=PEM".to_string(),
        format!("zookeeper.sasl.client={}", sasl.is_some()),
    ];
    if let Some(id) = identity {
        props.push(format!(
            "zookeeper.ssl.keyStore.location={}",
            id.keystore.display()
        ));
        props.push("zookeeper.ssl.keyStore.type=PEM".to_string());
    }
    if let Some(section) = sasl {
        props.push(format!("zookeeper.sasl.clientconfig={section}"));
    }
    props.extend_from_slice(extra);
    let out = Command::new("timeout")
        .args(["60", "java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
        .arg(format!(
            "-Djava.security.auth.login.config={}",
            dir.join("jaas.conf").display()
        ))
        .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
        .arg("-cp")
        .arg(format!("{}:{}", common::zk::classpath(), dir.display()))
        .arg("SecureProbe")
        .arg(format!("127.0.0.1:{port}"))
        .arg(wait.as_millis().to_string())
        .args(&props)
        .output()
        .expect("run java");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "the Java probe printed no RESULT; stdout:\n{stdout}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_string();
    let mut ids: Vec<(String, String)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("WHOAMI "))
        .map(|l| {
            let (scheme, id) = l.split_once(' ').unwrap();
            (scheme.to_string(), id.to_string())
        })
        .collect();
    ids.sort();
    JavaOutcome {
        result,
        ids,
        log: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
    }
}

fn id(scheme: &str, id: &str) -> (String, String) {
    (scheme.to_string(), id.to_string())
}

/// A refused TLS client never gets a session: it must show the server's handshake alert, so the
/// test sees a refusal and not merely a slow server.
fn assert_refused_by_handshake(outcome: &JavaOutcome) {
    assert_eq!(outcome.result, "NOT_CONNECTED", "{}", outcome.log);
    assert!(
        outcome
            .log
            .contains("SSLHandshakeException: Received fatal alert"),
        "no TLS alert from the server:\n{}",
        outcome.log
    );
}

/// rustls has ring (through kube) and aws-lc-rs (through zookeeper-client) compiled in, so it
/// cannot choose a CryptoProvider itself; the first caller installs ring for the process.
fn install_crypto_provider() {
    // RUST_LOG=zookeeper_client=debug shows the client's connection attempts.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
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

/// How a Rust client logs in on the TLS port.
#[derive(Default)]
struct Login<'a> {
    identity: Option<&'a CertKey>,
    sasl: Option<&'a Credential>,
    digest: Option<&'a Credential>,
    /// Give up after the first failed attempt (`with_fail_eagerly`) instead of retrying until
    /// the session timeout: for clients the server must refuse.
    once: bool,
}

/// Connects to the TLS port of `port`; bounded by 15s.
async fn rust_connect(
    zk: &ZkServer,
    port: u16,
    login: Login<'_>,
) -> Result<zkc::Client, zkc::Error> {
    install_crypto_provider();
    let mut connector = zkc::Client::connector()
        .with_tls(tls_options(&zk.pki().ca_pem(), login.identity))
        .with_session_timeout(Duration::from_secs(10))
        .with_connection_timeout(Duration::from_secs(5));
    if login.once {
        connector = connector.with_fail_eagerly();
    }
    if let Some(c) = login.digest {
        connector = connector.with_auth("digest", &c.digest_auth());
    }
    if let Some(c) = login.sasl {
        connector = connector.with_sasl(zkc::SaslOptions::digest_md5(
            c.user.clone(),
            c.password.clone(),
        ));
    }
    tokio::time::timeout(
        Duration::from_secs(15),
        connector.secure_connect(&format!("127.0.0.1:{port}")),
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

const JAVA_WAIT: Duration = Duration::from_secs(10);
/// How long a refused Java client keeps trying: its refusal shows in the first handshake.
const JAVA_REFUSED_WAIT: Duration = Duration::from_secs(5);

#[test]
fn java_client_over_tls_with_sasl_is_x509_and_sasl() {
    let zk = ZkServer::shared_secure();
    let pki = zk.pki();
    let out = java_connect(
        zk.secure_port(),
        false,
        Some(&pki.podkeeper),
        Some("Client_podkeeper"),
        &[],
        JAVA_WAIT,
    );
    eprintln!(
        "java whoAmI (podkeeper cert + SASL podkeeper): {:?}",
        out.ids
    );
    assert_eq!(out.result, "CONNECTED", "{}", out.log);
    assert_eq!(
        out.ids,
        vec![
            id("ip", "127.0.0.1"),
            id("sasl", "podkeeper"),
            id("x509", &pki.podkeeper.x509_id),
        ]
    );
}

#[test]
fn java_client_with_digest_superuser_is_super() {
    let zk = ZkServer::shared_secure();
    let pki = zk.pki();
    let sup = zk.super_user();
    let out = java_connect(
        zk.secure_port(),
        false,
        Some(&pki.intruder),
        None,
        &[format!("addauth.digest={}:{}", sup.user, sup.password)],
        JAVA_WAIT,
    );
    eprintln!("java whoAmI (intruder cert + digest super): {:?}", out.ids);
    assert_eq!(out.result, "CONNECTED", "{}", out.log);
    assert_eq!(
        out.ids,
        vec![
            id("digest", &sup.user),
            id("ip", "127.0.0.1"),
            id("super", ""),
            id("x509", &pki.intruder.x509_id),
        ]
    );
}

#[test]
fn java_client_on_the_plain_port_is_only_its_ip() {
    let zk = ZkServer::shared_secure();
    assert!(
        four_letter(zk.port(), "srvr").is_some_and(|s| s.contains("Mode: standalone")),
        "four-letter words go to the plain port"
    );
    let out = java_connect(zk.port(), true, None, None, &[], JAVA_WAIT);
    assert_eq!(out.result, "CONNECTED", "{}", out.log);
    assert_eq!(out.ids, vec![id("ip", "127.0.0.1")]);
}

#[test]
fn java_client_without_certificate_is_refused() {
    let zk = ZkServer::shared_secure();
    let out = java_connect(zk.secure_port(), false, None, None, &[], JAVA_REFUSED_WAIT);
    assert_refused_by_handshake(&out);
}

#[test]
fn java_client_with_wrong_ca_certificate_is_refused() {
    let zk = ZkServer::shared_secure();
    let out = java_connect(
        zk.secure_port(),
        false,
        Some(&zk.pki().wrong_ca_podkeeper),
        None,
        &[],
        JAVA_REFUSED_WAIT,
    );
    assert_refused_by_handshake(&out);
    // JSSE's key manager offers only certificates issued by a CA the server names in its
    // CertificateRequest, so the Java client sends none and gets the no-certificate alert; the
    // Rust test sees the server judge the wrong-CA certificate itself (certificate_unknown).
    assert!(
        out.log.contains("bad_certificate"),
        "the Java client sent no certificate:\n{}",
        out.log
    );
}

#[test]
fn java_client_with_expired_certificate_is_refused() {
    let zk = ZkServer::shared_secure();
    let out = java_connect(
        zk.secure_port(),
        false,
        Some(&zk.pki().expired_podkeeper),
        None,
        &[],
        JAVA_REFUSED_WAIT,
    );
    assert_refused_by_handshake(&out);
    assert!(
        out.log.contains("certificate_unknown"),
        "the expired certificate was sent and judged:\n{}",
        out.log
    );
}

#[test]
fn java_client_with_wrong_sasl_password_fails_auth() {
    let zk = ZkServer::shared_secure();
    let out = java_connect(
        zk.secure_port(),
        false,
        Some(&zk.pki().podkeeper),
        Some("WrongPassword"),
        &[],
        JAVA_WAIT,
    );
    assert_eq!(out.result, "AUTH_FAILED", "{}", out.log);
}

/// Who the server says a Rust client is, sorted.
async fn rust_ids(zk: &ZkServer, login: Login<'_>) -> Vec<(String, String)> {
    let client = rust_connect(zk, zk.secure_port(), login)
        .await
        .expect("connects over TLS");
    let users = client.list_auth_users().await.unwrap();
    eprintln!("rust list_auth_users: {users:?}");
    ids(&users)
}

#[tokio::test]
async fn rust_client_over_tls_with_sasl_is_x509_and_sasl() {
    let zk = ZkServer::shared_secure();
    let pki = zk.pki();
    let podkeeper = rust_ids(
        zk,
        Login {
            identity: Some(&pki.podkeeper),
            sasl: Some(zk.sasl_user("podkeeper")),
            ..Login::default()
        },
    )
    .await;
    assert_eq!(
        podkeeper,
        vec![
            id("ip", "127.0.0.1"),
            id("sasl", "podkeeper"),
            id("x509", &pki.podkeeper.x509_id),
        ]
    );
    let reader = rust_ids(
        zk,
        Login {
            identity: Some(&pki.podkeeper),
            sasl: Some(zk.sasl_user("reader")),
            ..Login::default()
        },
    )
    .await;
    assert_eq!(
        reader,
        vec![
            id("ip", "127.0.0.1"),
            id("sasl", "reader"),
            id("x509", &pki.podkeeper.x509_id),
        ]
    );
}

#[tokio::test]
async fn rust_client_ids_of_certificate_only_and_of_superuser() {
    let zk = ZkServer::shared_secure();
    let pki = zk.pki();
    let intruder = rust_ids(
        zk,
        Login {
            identity: Some(&pki.intruder),
            ..Login::default()
        },
    )
    .await;
    assert_eq!(
        intruder,
        vec![id("ip", "127.0.0.1"), id("x509", &pki.intruder.x509_id)]
    );
    let sup = rust_ids(
        zk,
        Login {
            identity: Some(&pki.podkeeper),
            digest: Some(zk.super_user()),
            ..Login::default()
        },
    )
    .await;
    assert_eq!(
        sup,
        vec![
            id("digest", &zk.super_user().user),
            id("ip", "127.0.0.1"),
            id("super", ""),
            id("x509", &pki.podkeeper.x509_id),
        ]
    );
}

/// An ACL made with the `auth` scheme names every authenticated id of its creator: this is where
/// the operator's ACL ids come from, and they match `x509_id` and the SASL user.
#[tokio::test]
async fn auth_acl_names_the_x509_and_sasl_ids_and_keeps_others_out() {
    let zk = ZkServer::shared_secure();
    let pki = zk.pki();
    let owner = rust_connect(
        zk,
        zk.secure_port(),
        Login {
            identity: Some(&pki.podkeeper),
            sasl: Some(zk.sasl_user("podkeeper")),
            ..Login::default()
        },
    )
    .await
    .unwrap();
    let path = "/auth-acl-owned";
    let options = zkc::CreateMode::Persistent.with_acls(zkc::Acls::creator_all());
    owner.create(path, b"secret", &options).await.unwrap();
    let (acls, _) = owner.get_acl(path).await.unwrap();
    let mut acl_ids: Vec<(String, String)> = acls
        .iter()
        .map(|a| (a.scheme().to_string(), a.id().to_string()))
        .collect();
    acl_ids.sort();
    eprintln!("auth ACL of podkeeper (cert + SASL): {acl_ids:?}");
    assert_eq!(
        acl_ids,
        vec![id("sasl", "podkeeper"), id("x509", &pki.podkeeper.x509_id),]
    );
    let intruder = rust_connect(
        zk,
        zk.secure_port(),
        Login {
            identity: Some(&pki.intruder),
            ..Login::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        intruder.get_data(path).await.unwrap_err(),
        zkc::Error::NoAuth
    );
    let sup = rust_connect(
        zk,
        zk.secure_port(),
        Login {
            identity: Some(&pki.intruder),
            digest: Some(zk.super_user()),
            ..Login::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(sup.get_data(path).await.unwrap().0, b"secret");
}

/// A bare rustls handshake (the TLS stack of zookeeper-client) followed by `ruok`: Ok with the
/// protocol version and the answer, or the TLS error, e.g. the server's alert.
fn tls_ruok(
    port: u16,
    ca_pem: &str,
    identity: Option<&CertKey>,
) -> Result<(String, String), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match identity {
        Some(id) => {
            let certs = CertificateDer::pem_file_iter(&id.cert)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(&id.key).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"ruok").map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            // The server may close without close_notify once it has answered.
            Err(_) if !answer.is_empty() => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    let version = format!("{:?}", tls.conn.protocol_version().unwrap());
    Ok((version, String::from_utf8_lossy(&answer).into_owned()))
}

/// The server refuses the client in the TLS handshake (a TLS alert, seen with bare rustls) and
/// zookeeper-client gets no session from it.
async fn assert_rust_client_refused(zk: &ZkServer, identity: Option<&CertKey>, alert: &str) {
    let handshake = tls_ruok(zk.secure_port(), &zk.pki().ca_pem(), identity);
    eprintln!("bare rustls handshake: {handshake:?}");
    let err = handshake.expect_err("the server refuses the handshake");
    assert!(err.contains(alert), "expected alert {alert}, got {err}");
    let refused = rust_connect(
        zk,
        zk.secure_port(),
        Login {
            identity,
            once: true,
            ..Login::default()
        },
    )
    .await;
    let Err(err) = refused else {
        panic!("zookeeper-client got a session");
    };
    eprintln!("zookeeper-client: {err:?}");
    assert_eq!(err, zkc::Error::NoHosts);
}

#[tokio::test]
async fn rust_client_accepted_certificate_answers_over_tls() {
    let zk = ZkServer::shared_secure();
    let (version, answer) = tls_ruok(
        zk.secure_port(),
        &zk.pki().ca_pem(),
        Some(&zk.pki().podkeeper),
    )
    .unwrap();
    assert_eq!(answer, "imok");
    assert_eq!(version, "TLSv1_2", "ZooKeeper 3.8's default ssl.protocol");
}

#[tokio::test]
async fn rust_client_without_certificate_is_refused() {
    let zk = ZkServer::shared_secure();
    assert_rust_client_refused(zk, None, "BadCertificate").await;
}

#[tokio::test]
async fn rust_client_with_wrong_ca_certificate_is_refused() {
    let zk = ZkServer::shared_secure();
    assert_rust_client_refused(zk, Some(&zk.pki().wrong_ca_podkeeper), "CertificateUnknown").await;
}

#[tokio::test]
async fn rust_client_with_expired_certificate_is_refused() {
    let zk = ZkServer::shared_secure();
    assert_rust_client_refused(zk, Some(&zk.pki().expired_podkeeper), "CertificateUnknown").await;
}

#[tokio::test]
async fn rust_client_with_wrong_sasl_password_fails_auth() {
    let zk = ZkServer::shared_secure();
    let wrong = Credential::new("podkeeper", "not-the-secret");
    let result = rust_connect(
        zk,
        zk.secure_port(),
        Login {
            identity: Some(&zk.pki().podkeeper),
            sasl: Some(&wrong),
            ..Login::default()
        },
    )
    .await;
    assert_eq!(result.err(), Some(zkc::Error::AuthFailed));
}

/// `ClientAuth::Want` with TLS 1.3 enabled: a client without a certificate gets a session but no
/// x509 id; one with a certificate still gets its x509 id; TLS 1.3 is negotiated; the server
/// restarts with the same ports and certificates.
#[tokio::test]
async fn want_client_auth_with_tls13_admits_clients_without_certificate() {
    let started = std::time::Instant::now();
    let mut zk = ZkServer::start_secure(SecureOptions {
        client_auth: ClientAuth::Want,
        tls_protocols: vec!["TLSv1.3".to_string(), "TLSv1.2".to_string()],
        ..SecureOptions::default()
    });
    eprintln!(
        "start_secure (certificates + server) took {:?}",
        started.elapsed()
    );
    let (version, answer) = tls_ruok(zk.secure_port(), &zk.pki().ca_pem(), None).unwrap();
    assert_eq!((version.as_str(), answer.as_str()), ("TLSv1_3", "imok"));
    let anonymous = rust_ids(&zk, Login::default()).await;
    assert_eq!(anonymous, vec![id("ip", "127.0.0.1")]);
    let podkeeper = rust_ids(
        &zk,
        Login {
            identity: Some(&zk.pki().podkeeper),
            ..Login::default()
        },
    )
    .await;
    assert_eq!(
        podkeeper,
        vec![
            id("ip", "127.0.0.1"),
            id("x509", &zk.pki().podkeeper.x509_id)
        ]
    );
    zk.restart();
    let (_, answer) = tls_ruok(zk.secure_port(), &zk.pki().ca_pem(), None).unwrap();
    assert_eq!(
        answer, "imok",
        "the secure port serves again after a restart"
    );
}

/// zookeeper-client 0.11.2 sends its first SASL packet (and `with_auth` packets) right behind the
/// ConnectRequest. ZooKeeper 3.8.0's Netty connection factory (which TLS needs) sometimes answers
/// such a packet before the ConnectResponse; the client reads that reply as the ConnectResponse
/// and fails: "unsupported server version 1" (the SASL reply, xid 1) or "insufficient buf" (the
/// 16-byte auth reply). The NIO factory did not (0 of 40). A client that retries (no
/// `with_fail_eagerly`) recovers on a later attempt. Ignored: it fails while the race exists
/// (a third to a half of the connects); run it to check a client or server upgrade.
#[tokio::test]
#[ignore]
async fn pipelined_auth_connects_succeed_at_first_attempt() {
    let zk = ZkServer::shared_secure();
    let mut failures = Vec::new();
    for i in 0..80 {
        let login = if i % 2 == 0 {
            Login {
                sasl: Some(zk.sasl_user("podkeeper")),
                ..Login::default()
            }
        } else {
            Login {
                digest: Some(zk.sasl_user("podkeeper")),
                ..Login::default()
            }
        };
        let kind = if login.sasl.is_some() {
            "sasl"
        } else {
            "digest"
        };
        let attempt = rust_connect(
            zk,
            zk.secure_port(),
            Login {
                identity: Some(&zk.pki().podkeeper),
                once: true,
                ..login
            },
        )
        .await;
        if let Err(e) = attempt {
            failures.push((kind, e));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 80 failed: {failures:?}",
        failures.len()
    );
}
