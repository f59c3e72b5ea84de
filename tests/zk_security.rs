//! ZooKeeper security against a server configured the way production teams run it (TLS with
//! client certificates required, SASL DIGEST-MD5, x509 and digest providers): the operator's
//! writes go through it, get ACLs only podkeeper may write, drifted ACLs are repaired, other
//! identities can read but not change anything, bad credentials are named, fixed files are
//! picked up without a restart, and the tamper watch tells others' writes from ours.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pki::CertKey;
use common::zk::ZkServer;
use podkeeper::model::record::{Owner, PublishedRecord, ServiceRecord};
use podkeeper::zk::acl::{AclPolicy, Identity, NodeKind};
use podkeeper::zk::layout::{endpoint_path, endpoints_path};
use podkeeper::zk::security::{Credentials, Mechanism, SecurityFiles};
use podkeeper::zk::session::{Session, SessionOptions, Target};
use podkeeper::zk::tamper::{Change, Tamper};
use podkeeper::zk::writer::{self, ServiceState, Synced, WriteOptions};
use smol_str::SmolStr;
use zookeeper_client::{Acls, Client, CreateMode, Error as ZkErr, SaslOptions, TlsOptions};

const DEADLINE: Duration = Duration::from_secs(30);

/// A TLS directory as a Secret mounts it: ca.crt, and tls.crt + tls.key when `id` is given.
fn tls_dir(ca: &Path, id: Option<&CertKey>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_tls(dir.path(), ca, id);
    dir
}

fn write_tls(dir: &Path, ca: &Path, id: Option<&CertKey>) {
    std::fs::copy(ca, dir.join("ca.crt")).unwrap();
    if let Some(id) = id {
        std::fs::copy(&id.cert, dir.join("tls.crt")).unwrap();
        std::fs::copy(&id.key, dir.join("tls.key")).unwrap();
    }
}

fn login_file(user: &str, password: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), format!("{user}:{password}\n")).unwrap();
    f
}

fn files(tls: &Path, login: &Path) -> SecurityFiles {
    SecurityFiles {
        tls_dir: Some(tls.to_path_buf()),
        skip_hostname_verification: false,
        auth_file: Some(login.to_path_buf()),
        mechanism: Mechanism::SaslDigestMd5,
    }
}

fn start(zk: &ZkServer, creds: &Arc<Credentials>) -> Arc<Session> {
    start_with(zk, creds, AclPolicy::default())
}

fn start_with(zk: &ZkServer, creds: &Arc<Credentials>, acl: AclPolicy) -> Arc<Session> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::mem::forget(rx);
    Session::start(
        Target {
            connect: zk.secure_connect_string(),
            chroot: None,
        },
        SessionOptions {
            timeout: Duration::from_secs(4),
            credentials: Some(creds.clone()),
            acl,
        },
        tx,
    )
}

/// Waits until the session connects; on timeout, fails with the session's last error.
async fn connected(session: &Session) -> Client {
    let started = Instant::now();
    loop {
        if let Ok((c, _)) = session.client() {
            return c;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "no session within {DEADLINE:?}: {:?}",
            session.last_error()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the session's last error mentions `words`.
async fn refused_with(session: &Session, words: &str) -> String {
    let started = Instant::now();
    loop {
        let err = session.last_error().unwrap_or_default();
        if err.contains(words) {
            assert!(session.client().is_err(), "an error while connected: {err}");
            return err;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "within {DEADLINE:?} the session did not fail with {words:?}; last error: {err:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn record(uid: &str) -> ServiceRecord {
    ServiceRecord {
        service_name: "web".into(),
        policy: Default::default(),
        owner: Owner {
            cluster_id: "test".into(),
            namespace: "sec".into(),
            name: "web".into(),
            uid: uid.into(),
        },
        generation: 1,
        stale: false,
        warmup_seconds: 0,
        load: None,
    }
}

fn endpoints(n: usize) -> BTreeMap<SmolStr, Arc<PublishedRecord>> {
    (0..n)
        .map(|i| {
            let rec: PublishedRecord = serde_json::from_value(common::records::endpoint(
                serde_json::json!({"host": format!("10.0.0.{i}"), "pod": format!("web-{i}")}),
            ))
            .unwrap();
            (format!("web-{i}").into(), Arc::new(rec))
        })
        .collect()
}

async fn publish(
    c: &Client,
    path: &str,
    want: &BTreeMap<SmolStr, Arc<PublishedRecord>>,
    cache: &mut Option<ServiceState>,
    options: &WriteOptions,
) -> Synced {
    let planned = |s: &ServiceState| {
        (
            podkeeper::model::plan::diff(want, &s.endpoints),
            Default::default(),
        )
    };
    let synced = writer::sync(c, path, &record("uid-1"), cache, options, planned)
        .await
        .unwrap();
    assert!(matches!(synced, Synced::Applied { .. }), "{synced:?}");
    synced
}

/// A podkeeper session over TLS with the podkeeper certificate and SASL login.
async fn operator(
    zk: &ZkServer,
) -> (
    Arc<Session>,
    Client,
    tempfile::TempDir,
    tempfile::NamedTempFile,
) {
    operator_with(zk, AclPolicy::default()).await
}

async fn operator_with(
    zk: &ZkServer,
    acl: AclPolicy,
) -> (
    Arc<Session>,
    Client,
    tempfile::TempDir,
    tempfile::NamedTempFile,
) {
    let pki = zk.pki();
    let tls = tls_dir(&pki.ca, Some(&pki.podkeeper));
    let pk = zk.sasl_user("podkeeper");
    let login = login_file(&pk.user, &pk.password);
    let creds = Credentials::load(files(tls.path(), login.path())).unwrap();
    let session = start_with(zk, &creds, acl);
    let client = connected(&session).await;
    (session, client, tls, login)
}

/// An anonymous client on the plaintext port.
async fn anonymous(zk: &ZkServer) -> Client {
    Client::connector()
        .connect(&zk.connect_string())
        .await
        .unwrap()
}

/// A client that authenticated as someone else: the intruder certificate and the reader login.
async fn other_identity(zk: &ZkServer) -> Client {
    podkeeper::zk::security::install_crypto_provider();
    let pki = zk.pki();
    let id = &pki.intruder;
    let tls = TlsOptions::new()
        .with_pem_ca(&std::fs::read_to_string(&pki.ca).unwrap())
        .unwrap()
        .with_pem_identity(&id.cert_pem(), &id.key_pem())
        .unwrap();
    let reader = zk.sasl_user("reader");
    Client::connector()
        .with_tls(tls)
        .with_sasl(SaslOptions::digest_md5(
            reader.user.clone(),
            reader.password.clone(),
        ))
        .secure_connect(&zk.secure_connect_string())
        .await
        .unwrap()
}

async fn superuser(zk: &ZkServer) -> Client {
    let su = zk.super_user();
    Client::connector()
        .with_auth("digest", format!("{}:{}", su.user, su.password).as_bytes())
        .connect(&zk.connect_string())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_over_tls_and_sasl_get_acls_that_let_others_read_but_not_change() {
    let zk = ZkServer::shared_secure();
    let (session, c, _tls, _login) = operator(zk).await;
    let acls = session.acls();
    let podkeeper_cert = Identity {
        scheme: "x509".into(),
        id: zk.pki().podkeeper.x509_id.clone(),
    };
    let sasl: Identity = "sasl:podkeeper".parse().unwrap();
    assert_eq!(acls.writers, {
        let mut w = vec![sasl, podkeeper_cert];
        w.sort();
        w
    });
    let options = WriteOptions {
        acls: acls.clone(),
        ..Default::default()
    };
    let path = "/podkeeper/sec/readonly";
    let want = endpoints(3);
    publish(&c, path, &want, &mut None, &options).await;

    let ep = endpoint_path(path, "web-0");
    for node in [path.to_string(), endpoints_path(path), ep.clone()] {
        let (have, _) = c.get_acl(&node).await.unwrap();
        assert!(!acls.differs(NodeKind::Owned, &have), "{node}: {have:?}");
    }
    for (who, other) in [
        ("anonymous", anonymous(zk).await),
        ("intruder", other_identity(zk).await),
    ] {
        let children = other.list_children(&endpoints_path(path)).await.unwrap();
        assert_eq!(children.len(), 3, "{who} reads the endpoints");
        other.get_data(&ep).await.unwrap();
        let create = CreateMode::Persistent.with_acls(Acls::anyone_all());
        let attempts = [
            (
                "create an endpoint",
                other
                    .create(&endpoint_path(path, "evil"), b"{}", &create)
                    .await
                    .err(),
            ),
            (
                "create under the record",
                other
                    .create(&format!("{path}/evil"), b"", &create)
                    .await
                    .err(),
            ),
            (
                "rewrite an endpoint",
                other.set_data(&ep, b"{}", None).await.err(),
            ),
            (
                "rewrite the record",
                other.set_data(path, b"{}", None).await.err(),
            ),
            ("delete an endpoint", other.delete(&ep, None).await.err()),
            (
                "set an ACL",
                other.set_acl(&ep, &Acls::anyone_all(), None).await.err(),
            ),
        ];
        for (what, err) in attempts {
            assert_eq!(err, Some(ZkErr::NoAuth), "{who} may not {what}");
        }
    }
    // Ancestors let others register their own services beside podkeeper's.
    let other = anonymous(zk).await;
    let beside = "/podkeeper/sec/someone-else";
    let create = CreateMode::Persistent.with_acls(Acls::anyone_all());
    match other.create(beside, b"", &create).await {
        Ok(_) | Err(ZkErr::NodeExists) => {}
        Err(e) => panic!("creating beside podkeeper's services: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_acl_a_superuser_opened_is_closed_again_by_the_next_full_read() {
    let zk = ZkServer::shared_secure();
    let (session, c, _tls, _login) = operator(zk).await;
    let options = WriteOptions {
        acls: session.acls(),
        ..Default::default()
    };
    let path = "/podkeeper/sec/drift";
    let want = endpoints(2);
    publish(&c, path, &want, &mut None, &options).await;
    let su = superuser(zk).await;
    let ep = endpoint_path(path, "web-1");
    su.set_acl(&ep, &Acls::anyone_all(), None).await.unwrap();
    su.set_acl(path, &Acls::anyone_all(), None).await.unwrap();
    let before = podkeeper::metrics::get().acl_repairs.get();
    // A full resync starts from an empty cache.
    publish(&c, path, &want, &mut None, &options).await;
    for node in [path, ep.as_str()] {
        let (have, _) = c.get_acl(node).await.unwrap();
        assert!(
            !session.acls().differs(NodeKind::Owned, &have),
            "{node}: {have:?}"
        );
    }
    assert!(podkeeper::metrics::get().acl_repairs.get() >= before + 2);
}

/// A former leader (its fence passed) sets no ACL, neither on what it owns nor on the folders
/// above: setACL cannot go into a `multi()`, so the fence is checked just before it.
#[tokio::test(flavor = "multi_thread")]
async fn a_fenced_former_leader_repairs_no_acl() {
    let zk = ZkServer::shared_secure();
    let home = format!("/home-fence-{}", std::process::id());
    let policy = AclPolicy {
        home: Some(home.clone()),
        ..Default::default()
    };
    let (session, c, _tls, _login) = operator_with(zk, policy).await;
    let epoch = &format!("{home}/.leader-epoch-test");
    let acls = session.acls();
    let bump = |who| podkeeper::zk::fence::bump_epoch(&c, epoch, who, &acls);
    let old = WriteOptions {
        acls: acls.clone(),
        fence: Some(bump("replica-a").await.unwrap()),
        ..Default::default()
    };
    let path = &format!("{home}/sec/web");
    publish(&c, path, &endpoints(2), &mut None, &old).await;
    bump("replica-b").await.unwrap();
    let su = superuser(zk).await;
    let ep = endpoint_path(path, "web-1");
    su.set_acl(&ep, &Acls::anyone_all(), None).await.unwrap();
    let loose = &format!("{home}/loose");
    let open = CreateMode::Persistent.with_acls(Acls::anyone_all());
    su.create(loose, b"", &open).await.unwrap();

    let planned = |_: &ServiceState| Default::default();
    let full = writer::sync(&c, path, &record("uid-1"), &mut None, &old, planned).await;
    assert!(
        matches!(full, Err(podkeeper::zk::ZkError::Fenced { .. })),
        "{full:?}"
    );
    let above = format!("{loose}/web");
    let home = writer::repair_home_parents(&c, &above, &session.acls(), old.fence.as_ref()).await;
    assert!(
        matches!(home, Err(podkeeper::zk::ZkError::Fenced { .. })),
        "{home:?}"
    );
    for node in [ep.as_str(), loose.as_str()] {
        let (have, _) = c.get_acl(node).await.unwrap();
        assert_eq!(have, Acls::anyone_all().to_vec(), "{node} left as it was");
    }
}

/// With the record's ACL as wanted, the full read reads only the nodes whose ACL was set after
/// their creation: one endpoint a superuser opened is among them and is closed again.
#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_acl_opened_alone_is_found_by_its_aversion_and_closed() {
    let zk = ZkServer::shared_secure();
    let (session, c, _tls, _login) = operator(zk).await;
    let options = WriteOptions {
        acls: session.acls(),
        ..Default::default()
    };
    let path = "/podkeeper/sec/drift-one";
    let want = endpoints(3);
    publish(&c, path, &want, &mut None, &options).await;
    let ep = endpoint_path(path, "web-2");
    superuser(zk)
        .await
        .set_acl(&ep, &Acls::anyone_all(), None)
        .await
        .unwrap();
    publish(&c, path, &want, &mut None, &options).await;
    let (have, stat) = c.get_acl(&ep).await.unwrap();
    assert!(!session.acls().differs(NodeKind::Owned, &have), "{have:?}");
    assert_eq!(stat.aversion, 2, "opened once, repaired once");
}

/// Nodes created under another policy (open ACLs, as before the operator had credentials) were
/// never set after their creation, so only the record's ACL tells: the next full read finds it
/// off and repairs every node, the record last.
#[tokio::test(flavor = "multi_thread")]
async fn nodes_created_under_another_policy_are_all_repaired_by_the_next_full_read() {
    let zk = ZkServer::shared_secure();
    let (session, c, _tls, _login) = operator(zk).await;
    let path = "/podkeeper/sec/policy";
    let want = endpoints(3);
    publish(&c, path, &want, &mut None, &WriteOptions::default()).await;
    let nodes: Vec<String> = [path.to_string(), endpoints_path(path)]
        .into_iter()
        .chain(want.keys().map(|n| endpoint_path(path, n)))
        .collect();
    let (open, _) = c.get_acl(&nodes[2]).await.unwrap();
    assert!(session.acls().differs(NodeKind::Owned, &open), "{open:?}");
    let options = WriteOptions {
        acls: session.acls(),
        ..Default::default()
    };
    let before = podkeeper::metrics::get().acl_repairs.get();
    publish(&c, path, &want, &mut None, &options).await;
    for node in &nodes {
        let (have, _) = c.get_acl(node).await.unwrap();
        assert!(
            !session.acls().differs(NodeKind::Owned, &have),
            "{node}: {have:?}"
        );
    }
    assert!(podkeeper::metrics::get().acl_repairs.get() >= before + nodes.len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_ca_is_named_and_the_fixed_file_is_used_without_a_restart() {
    let zk = ZkServer::shared_secure();
    let pki = zk.pki();
    let tls = tls_dir(&pki.wrong_ca, Some(&pki.podkeeper));
    let pk = zk.sasl_user("podkeeper");
    let login = login_file(&pk.user, &pk.password);
    let creds = Credentials::load(files(tls.path(), login.path())).unwrap();
    let session = start(zk, &creds);
    let err = refused_with(&session, "not signed by a CA in ca.crt").await;
    assert!(err.contains("UnknownIssuer"), "{err}");
    write_tls(tls.path(), &pki.ca, None);
    assert!(creds.reload().unwrap(), "the new CA is a change");
    connected(&session).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_client_certificate_is_named_and_a_rotated_one_is_picked_up() {
    let zk = ZkServer::shared_secure();
    let pki = zk.pki();
    let tls = tls_dir(&pki.ca, Some(&pki.expired_podkeeper));
    let pk = zk.sasl_user("podkeeper");
    let login = login_file(&pk.user, &pk.password);
    let creds = Credentials::load(files(tls.path(), login.path())).unwrap();
    let session = start(zk, &creds);
    refused_with(&session, "refused podkeeper's client certificate").await;
    write_tls(tls.path(), &pki.ca, Some(&pki.podkeeper));
    assert!(creds.reload().unwrap());
    connected(&session).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_named_and_the_fixed_login_is_used_without_a_restart() {
    let zk = ZkServer::shared_secure();
    let pki = zk.pki();
    let tls = tls_dir(&pki.ca, Some(&pki.podkeeper));
    let login = login_file("podkeeper", "not-the-password");
    let creds = Credentials::load(files(tls.path(), login.path())).unwrap();
    let session = start(zk, &creds);
    let err = refused_with(&session, "refused the").await;
    assert!(
        err.contains("\"podkeeper\"") && !err.contains("not-the-password"),
        "{err}"
    );
    let pk = zk.sasl_user("podkeeper");
    std::fs::write(login.path(), format!("{}:{}", pk.user, pk.password)).unwrap();
    assert!(creds.reload().unwrap());
    connected(&session).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tamper_watch_ignores_our_writes_and_reports_a_superusers_at_once() {
    let zk = ZkServer::shared_secure();
    let (session, c, _tls, _login) = operator(zk).await;
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let tamper = Tamper::new(tx);
    let options = WriteOptions {
        acls: session.acls(),
        ledger: Some(tamper.ledger("")),
        ..Default::default()
    };
    let path = "/podkeeper/sec/tamper";
    let mut cache = None;
    publish(&c, path, &endpoints(3), &mut cache, &options).await;
    let (_, generation) = session.client().unwrap();
    tamper
        .watch(&c, generation, "", path, "sec/web")
        .await
        .unwrap();
    // Our own changes: one removal, then two additions.
    publish(&c, path, &endpoints(2), &mut cache, &options).await;
    publish(&c, path, &endpoints(4), &mut cache, &options).await;
    // Then someone else's: the first event reported must be theirs.
    let ep = endpoint_path(path, "web-3");
    let started = Instant::now();
    superuser(zk)
        .await
        .set_data(&ep, b"{\"host\":\"6.6.6.6\"}", None)
        .await
        .unwrap();
    let t = tokio::time::timeout(DEADLINE, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (t.path.as_str(), t.kind, t.tag.as_str()),
        (ep.as_str(), Change::Changed, "sec/web")
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        tamper.ledger("").pending(),
        0,
        "every write of ours raised its event"
    );
    assert!(events.try_recv().is_err(), "nothing else was reported");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_discovery_client_reads_over_tls_as_a_read_only_identity() {
    let zk = ZkServer::shared_secure();
    let (session, c, _tls, _login) = operator(zk).await;
    let options = WriteOptions {
        acls: session.acls(),
        ..Default::default()
    };
    let path = "/podkeeper/sec/discovered";
    publish(&c, path, &endpoints(3), &mut None, &options).await;
    // The reader: its own certificate (the intruder's, a valid identity without rights) and the
    // SASL user `reader`.
    let pki = zk.pki();
    let tls = tls_dir(&pki.ca, Some(&pki.intruder));
    let reader = zk.sasl_user("reader");
    let login = login_file(&reader.user, &reader.password);
    let mut ensemble = podkeeper::discovery::Ensemble::new(zk.secure_connect_string());
    ensemble.security = files(tls.path(), login.path());
    // The default 10 s: a SASL connect to ZooKeeper 3.8's Netty handler may need a retry
    // inside the client (see tests/zk_secure_server.rs), slow on a loaded machine.
    let discovery = podkeeper::discovery::Discovery::builder(zk.secure_connect_string(), path)
        .ensemble(ensemble.clone())
        .start()
        .await
        .unwrap();
    assert_eq!(discovery.snapshot().endpoints().len(), 3);
    // A wrong CA fails with the reason, not a bare timeout (and needs no long wait).
    ensemble.session_timeout = Duration::from_secs(3);
    write_tls(tls.path(), &pki.wrong_ca, None);
    let refused = podkeeper::discovery::Discovery::builder(zk.secure_connect_string(), path)
        .ensemble(ensemble)
        .start()
        .await;
    let Err(err) = refused else {
        panic!("a wrong CA is refused")
    };
    assert!(
        err.to_string().contains("not signed by a CA in ca.crt"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nobody_else_can_create_under_the_home_prefix_and_a_loose_folder_is_repaired() {
    let zk = ZkServer::shared_secure();
    let home = format!("/home-{}", std::process::id());
    let policy = AclPolicy {
        home: Some(home.clone()),
        ..Default::default()
    };
    let (session, c, _tls, _login) = operator_with(zk, policy).await;
    let options = WriteOptions {
        acls: session.acls(),
        ..Default::default()
    };
    let path = format!("{home}/sec/web");
    publish(&c, &path, &endpoints(2), &mut None, &options).await;
    // Anyone without podkeeper's identity: no service, namespace folder or epoch planted.
    let intruder = anonymous(zk).await;
    let open = CreateMode::Persistent.with_acls(Acls::anyone_all());
    for planted in [
        format!("{home}/forged"),
        format!("{home}/other-ns"),
        format!("{home}/sec/forged"),
        format!("{home}/.leader-epoch-test"),
    ] {
        let r = intruder.create(&planted, b"", &open).await;
        assert!(matches!(r, Err(ZkErr::NoAuth)), "{planted}: {r:?}");
    }
    // An epoch node planted before (here by a superuser, read-only for all): the bump takes it
    // back instead of failing every write with NoAuth.
    let su = superuser(zk).await;
    let epoch = format!("{home}/.leader-epoch-planted");
    su.create(
        &epoch,
        b"{}",
        &CreateMode::Persistent.with_acls(Acls::anyone_all()),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        su.set_data(&epoch, b"{}", None).await.unwrap();
    }
    su.set_acl(&epoch, &Acls::anyone_read(), None)
        .await
        .unwrap();
    let fence = podkeeper::zk::fence::bump_epoch(&c, &epoch, "replica-0", &session.acls())
        .await
        .expect("a planted epoch is taken back");
    assert_eq!(fence.path, epoch);
    // Past the version the planted node had (3): a fence taken on it never passes again.
    assert!(fence.version > 3, "{fence:?}");
    // A folder an older version (or someone) left open is set back on the next audit.
    let loose = format!("{home}/loose");
    su.create(&loose, b"", &open).await.unwrap();
    let repaired = writer::repair_home_parents(&c, &format!("{loose}/web"), &session.acls(), None)
        .await
        .unwrap();
    assert_eq!(
        repaired, 1,
        "the loose folder (the home folder was already right)"
    );
    let r = intruder
        .create(&format!("{loose}/forged"), b"", &open)
        .await;
    assert!(matches!(r, Err(ZkErr::NoAuth)), "{r:?}");
}
