//! How podkeeper proves who it is to ZooKeeper: TLS (CA, optional client certificate) and a
//! login (digest or SASL DIGEST-MD5), read from files a Secret mounts and re-read when they
//! change. Owns credentials and connection diagnosis; which ACLs nodes get is `acl.rs`.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use zookeeper_client::{Connector, SaslOptions, TlsCa, TlsCerts, TlsDynamicCerts, TlsIdentity};

/// How the login authenticates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mechanism {
    /// ZooKeeper's `digest` scheme (`addauth digest user:password`; the password travels in
    /// the clear unless TLS is on).
    #[default]
    Digest,
    /// SASL DIGEST-MD5 against the server's JAAS `Server` section; ACL id `sasl:<user>`.
    SaslDigestMd5,
}

impl std::str::FromStr for Mechanism {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "digest" => Ok(Mechanism::Digest),
            "sasl" | "sasl-digest-md5" | "digest-md5" => Ok(Mechanism::SaslDigestMd5),
            _ => Err(format!(
                "unknown ZooKeeper auth mechanism {s:?}: use digest or sasl-digest-md5 \
                 (Kerberos/GSSAPI is not supported)"
            )),
        }
    }
}

/// Where the credentials are. Empty: plaintext, anonymous.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecurityFiles {
    /// Directory with `ca.crt`, and `tls.crt` + `tls.key` for mutual TLS (a Kubernetes TLS
    /// Secret plus its CA, as cert-manager writes it).
    pub tls_dir: Option<PathBuf>,
    /// Accept a server certificate that does not name the host connected to.
    pub skip_hostname_verification: bool,
    /// File holding `user:password`.
    pub auth_file: Option<PathBuf>,
    /// How that login authenticates.
    pub mechanism: Mechanism,
}

impl SecurityFiles {
    /// Nothing configured.
    pub fn is_empty(&self) -> bool {
        self.tls_dir.is_none() && self.auth_file.is_none()
    }
}

/// A credentials file that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecurityError {
    /// Missing or unreadable.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// Read, but not what it should hold.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// A user and password.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    /// The user.
    pub user: String,
    password: String,
    /// How it authenticates.
    pub mechanism: Mechanism,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} login as {}", self.mechanism, self.user)
    }
}

impl Login {
    /// Parses `user:password` (surrounding whitespace and a trailing newline are ignored).
    pub fn parse(text: &str, mechanism: Mechanism) -> Result<Login, String> {
        let text = text.trim();
        match text.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(Login {
                user: user.to_string(),
                password: password.to_string(),
                mechanism,
            }),
            _ => Err("expected one line `user:password`".into()),
        }
    }

    /// The ACL id ZooKeeper gives this login: `digest:user:base64(sha1(user:password))` or
    /// `sasl:user`.
    pub fn acl_id(&self) -> (String, String) {
        use base64::Engine as _;
        match self.mechanism {
            Mechanism::Digest => {
                let mut sha = sha1_smol::Sha1::new();
                sha.update(format!("{}:{}", self.user, self.password).as_bytes());
                let hash = base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes());
                ("digest".into(), format!("{}:{hash}", self.user))
            }
            Mechanism::SaslDigestMd5 => ("sasl".into(), self.user.clone()),
        }
    }
}

/// What the files held at the last successful read.
struct Snapshot {
    certs: Option<TlsCerts>,
    login: Option<Login>,
    stamp: u64,
}

/// The live credentials of one ensemble: the TLS certificates every new connection uses and
/// the login every new session sends, replaced when the files change.
pub struct Credentials {
    files: SecurityFiles,
    tls: Option<TlsDynamicCerts>,
    login: RwLock<Option<Login>>,
    stamp: Mutex<u64>,
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Credentials {
    /// Reads the files once; any problem is an error (the operator refuses to start).
    pub fn load(files: SecurityFiles) -> Result<Arc<Credentials>, SecurityError> {
        install_crypto_provider();
        let snap = read(&files)?;
        Ok(Arc::new(Credentials {
            tls: snap.certs.map(TlsDynamicCerts::new),
            login: RwLock::new(snap.login),
            stamp: Mutex::new(snap.stamp),
            files,
            last_error: Mutex::new(None),
        }))
    }

    /// Re-reads the files; returns whether anything changed. A broken file keeps the last
    /// good credentials in use and is reported.
    pub fn reload(&self) -> Result<bool, SecurityError> {
        let result = read(&self.files);
        *self.last_error.lock().expect("credentials lock") =
            result.as_ref().err().map(ToString::to_string);
        let snap = result?;
        let mut stamp = self.stamp.lock().expect("credentials lock");
        if *stamp == snap.stamp {
            return Ok(false);
        }
        *stamp = snap.stamp;
        if let (Some(tls), Some(certs)) = (&self.tls, snap.certs) {
            tls.update(certs);
        }
        *self.login.write().expect("credentials lock") = snap.login;
        Ok(true)
    }

    /// Re-reads the files every `every` until the credentials are dropped.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(creds) = weak.upgrade() else { return };
                match creds.reload() {
                    Ok(true) => {
                        crate::metrics::get().credential_reloads.inc();
                        tracing::info!(credentials = %creds.describe(), "ZooKeeper credentials changed on disk; new connections use them");
                    }
                    Ok(false) => {}
                    Err(err) => {
                        crate::metrics::get().credential_reload_errors.inc();
                        tracing::error!(%err, "ZooKeeper credentials on disk are unusable; keeping the last good ones");
                    }
                }
            }
        });
    }

    /// Why the files on disk are not in use, if they are not.
    pub fn file_error(&self) -> Option<String> {
        self.last_error.lock().expect("credentials lock").clone()
    }

    /// The login in use.
    pub fn login(&self) -> Option<Login> {
        self.login.read().expect("credentials lock").clone()
    }

    /// TLS on?
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// For logs: what is in use, never secrets.
    pub fn describe(&self) -> String {
        let tls = match (&self.tls, &self.files.tls_dir) {
            (Some(_), Some(dir)) => format!("TLS from {}", dir.display()),
            _ => "plaintext".into(),
        };
        match self.login() {
            Some(l) => format!("{tls}, {:?}", l),
            None => format!("{tls}, no login"),
        }
    }

    /// A connector carrying the current TLS certificates and login.
    pub(super) fn connector(&self) -> Connector {
        let mut connector = Client::connector();
        if let Some(tls) = &self.tls {
            let mut options = zookeeper_client::TlsOptions::new().with_certs(tls.clone());
            if self.files.skip_hostname_verification {
                // SAFETY (as the crate means it): the operator asked for it by flag.
                options = unsafe { options.with_no_hostname_verification() };
            }
            connector = connector.with_tls(options);
        }
        // A digest login is sent after the session is up (`digest_auth`): sent with the connect
        // request, ZooKeeper 3.8's Netty handler may answer it first and the client misreads
        // the connect reply. SASL has no such later call; the session loop retries instead.
        if let Some(l) = self
            .login()
            .filter(|l| l.mechanism == Mechanism::SaslDigestMd5)
        {
            connector = connector.with_sasl(SaslOptions::digest_md5(l.user, l.password));
        }
        connector
    }

    /// The `digest` login to add to a new session, if that is the mechanism.
    pub(super) fn digest_auth(&self) -> Option<Vec<u8>> {
        self.login()
            .filter(|l| l.mechanism == Mechanism::Digest)
            .map(|l| format!("{}:{}", l.user, l.password).into_bytes())
    }

    /// Turns a failed connect into a message that says what to fix.
    pub(super) async fn diagnose(&self, connect: &str, err: &zookeeper_client::Error) -> String {
        if matches!(err, zookeeper_client::Error::AuthFailed) {
            return match self.login() {
                Some(l) => format!(
                    "ZooKeeper refused the {:?} login of user {:?}: wrong password or unknown user \
                     (fix the credentials file {}; podkeeper re-reads it)",
                    l.mechanism,
                    l.user,
                    self.files
                        .auth_file
                        .as_deref()
                        .map_or("?".into(), |p| p.display().to_string())
                ),
                None => format!("ZooKeeper refused authentication: {err}"),
            };
        }
        let Some(dir) = self.files.tls_dir.clone().filter(|_| self.tls.is_some()) else {
            return err.to_string();
        };
        let Some((host, port)) = first_server(connect) else {
            return err.to_string();
        };
        let skip = self.files.skip_hostname_verification;
        let probe =
            tokio::task::spawn_blocking(move || super::tls_probe::probe(&dir, &host, port, skip));
        match probe.await {
            Ok(Some(problem)) => format!("{err}: {problem}"),
            _ => match self.login() {
                Some(l) => format!(
                    "{err} (the TLS handshake succeeds; if the session is refused after it, check \
                     the {:?} login of user {:?})",
                    l.mechanism, l.user
                ),
                None => err.to_string(),
            },
        }
    }
}

use zookeeper_client::Client;

/// rustls needs one process-wide crypto provider; this crate links two (ring through kube,
/// aws-lc-rs through zookeeper-client's rustls), so none is chosen implicitly. Pick ring.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The first `host` and `port` of a connect string (`tcp+tls://` and a chroot allowed).
pub(super) fn first_server(connect: &str) -> Option<(String, u16)> {
    let first = connect.split(',').next()?.trim();
    let first = first
        .strip_prefix("tcp+tls://")
        .or_else(|| first.strip_prefix("tcp://"))
        .unwrap_or(first);
    let first = first.split('/').next()?;
    match first.rsplit_once(':') {
        Some((host, port)) => Some((
            host.trim_matches(['[', ']']).to_string(),
            port.parse().ok()?,
        )),
        None => Some((first.to_string(), 2181)),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|e| SecurityError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn invalid(path: &Path, reason: impl std::fmt::Display) -> SecurityError {
    SecurityError::Invalid {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Reads every configured file; the stamp changes when any byte does.
fn read(files: &SecurityFiles) -> Result<Snapshot, SecurityError> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let certs = match &files.tls_dir {
        None => None,
        Some(dir) => Some(read_tls(dir, &mut hasher)?),
    };
    let login = match &files.auth_file {
        None => None,
        Some(path) => {
            let bytes = read_file(path)?;
            bytes.hash(&mut hasher);
            let text = String::from_utf8(bytes).map_err(|_| invalid(path, "not UTF-8"))?;
            Some(Login::parse(&text, files.mechanism).map_err(|e| invalid(path, e))?)
        }
    };
    files.mechanism.hash_into(&mut hasher);
    Ok(Snapshot {
        certs,
        login,
        stamp: hasher.finish(),
    })
}

impl Mechanism {
    fn hash_into(self, h: &mut impl Hasher) {
        (self as u8).hash(h);
    }
}

fn read_tls(dir: &Path, hasher: &mut impl Hasher) -> Result<TlsCerts, SecurityError> {
    let ca_path = dir.join("ca.crt");
    let ca_pem = read_file(&ca_path)?;
    ca_pem.hash(hasher);
    let ca = std::str::from_utf8(&ca_pem)
        .ok()
        .and_then(|pem| TlsCa::from_pem(pem).ok())
        .ok_or_else(|| invalid(&ca_path, "no PEM CA certificate in it"))?;
    let mut builder = TlsCerts::builder().with_ca(ca);
    let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
    match (cert_path.exists(), key_path.exists()) {
        (false, false) => {}
        (true, true) => {
            let (cert, key) = (read_file(&cert_path)?, read_file(&key_path)?);
            cert.hash(hasher);
            key.hash(hasher);
            let identity = std::str::from_utf8(&cert)
                .ok()
                .zip(std::str::from_utf8(&key).ok())
                .and_then(|(c, k)| TlsIdentity::from_pem(c, k).ok())
                .ok_or_else(|| {
                    invalid(
                        &cert_path,
                        "tls.crt and tls.key are not a PEM certificate and its private key",
                    )
                })?;
            builder = builder.with_identity(identity);
        }
        (true, false) => {
            return Err(invalid(
                &key_path,
                "tls.crt is there but tls.key is missing",
            ));
        }
        (false, true) => {
            return Err(invalid(
                &cert_path,
                "tls.key is there but tls.crt is missing",
            ));
        }
    }
    builder.build().map_err(|e| invalid(&ca_path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_parse_and_name_their_acl_ids() {
        let l = Login::parse("podkeeper:secret\n", Mechanism::Digest).unwrap();
        // ZooKeeper's DigestAuthenticationProvider.generateDigest("podkeeper:secret").
        assert_eq!(
            l.acl_id(),
            (
                "digest".into(),
                "podkeeper:RLY8efECmGYaNQFKLLto8hVs3rY=".into()
            )
        );
        let s = Login::parse("podkeeper:secret", Mechanism::SaslDigestMd5).unwrap();
        assert_eq!(s.acl_id(), ("sasl".into(), "podkeeper".into()));
        for bad in ["", "user", "user:", ":pw"] {
            assert!(Login::parse(bad, Mechanism::Digest).is_err(), "{bad:?}");
        }
        assert!(!format!("{l:?}").contains("secret"));
    }

    #[test]
    fn mechanisms_parse_and_gssapi_is_named_unsupported() {
        assert_eq!("digest".parse::<Mechanism>(), Ok(Mechanism::Digest));
        assert_eq!(
            "SASL-DIGEST-MD5".parse::<Mechanism>(),
            Ok(Mechanism::SaslDigestMd5)
        );
        assert!(
            "gssapi"
                .parse::<Mechanism>()
                .unwrap_err()
                .contains("not supported")
        );
    }

    #[test]
    fn the_first_server_of_a_connect_string() {
        assert_eq!(
            first_server("zk1:2281,zk2:2281/chroot"),
            Some(("zk1".into(), 2281))
        );
        assert_eq!(
            first_server("tcp+tls://127.0.0.1:3000"),
            Some(("127.0.0.1".into(), 3000))
        );
        assert_eq!(first_server("zk"), Some(("zk".into(), 2181)));
        assert_eq!(first_server("zk:notaport"), None);
    }

    #[test]
    fn broken_files_are_named_and_a_reload_keeps_the_last_good_login() {
        let dir = tempfile::tempdir().unwrap();
        let auth = dir.path().join("auth");
        std::fs::write(&auth, "podkeeper:one").unwrap();
        let files = SecurityFiles {
            auth_file: Some(auth.clone()),
            ..Default::default()
        };
        let creds = Credentials::load(files.clone()).unwrap();
        assert!(!creds.reload().unwrap(), "unchanged files are no change");
        std::fs::write(&auth, "nonsense").unwrap();
        let err = creds.reload().unwrap_err().to_string();
        assert!(
            err.contains("user:password") && err.contains("auth"),
            "{err}"
        );
        assert_eq!(
            creds.login().unwrap().acl_id().1.split(':').next(),
            Some("podkeeper")
        );
        assert!(creds.file_error().is_some());
        std::fs::write(&auth, "podkeeper:two").unwrap();
        assert!(creds.reload().unwrap());
        assert_eq!(creds.login().unwrap().password, "two");
        assert!(creds.file_error().is_none());

        let tls = SecurityFiles {
            tls_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let err = Credentials::load(tls).unwrap_err().to_string();
        assert!(err.contains("ca.crt"), "{err}");
    }
}
