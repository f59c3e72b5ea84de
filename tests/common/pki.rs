//! Test certificates made with the `openssl` command at test time (nothing is committed): a CA, an
//! unrelated "wrong" CA, a server certificate for 127.0.0.1/localhost and client certificates.
//!
//! Why the `openssl` command and not `rcgen`: no new crate in Cargo.lock (other branches change it
//! in parallel), nothing to compile, and `openssl ca -startdate/-enddate` makes a truly expired
//! certificate. Keys are EC P-256 in PKCS#8 PEM ("BEGIN PRIVATE KEY"): fast to make, read by
//! ZooKeeper's PemReader, rustls (ring) and Java alike.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// One certificate with its key.
#[derive(Clone, Debug)]
pub struct CertKey {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PKCS#8 PEM, unencrypted).
    pub key: PathBuf,
    /// Key then certificate in one PEM file: what ZooKeeper's `ssl.keyStore.type=PEM` reads.
    pub keystore: PathBuf,
    /// The id ZooKeeper's X509AuthenticationProvider gives this certificate (scheme `x509`): the
    /// subject as `X500Principal.getName()` (RFC 2253) prints it, e.g. `CN=podkeeper`.
    pub x509_id: String,
}

impl CertKey {
    /// The certificate's PEM text.
    pub fn cert_pem(&self) -> String {
        std::fs::read_to_string(&self.cert).unwrap()
    }

    /// The key's PEM text.
    pub fn key_pem(&self) -> String {
        std::fs::read_to_string(&self.key).unwrap()
    }
}

/// All files of the test PKI.
#[derive(Clone, Debug)]
pub struct Pki {
    /// Where the files are.
    pub dir: PathBuf,
    /// The CA ZooKeeper trusts (certificate PEM), which also signed the server certificate.
    pub ca: PathBuf,
    /// A CA nobody trusts (certificate PEM).
    pub wrong_ca: PathBuf,
    /// The server: CN=zookeeper, SAN IP:127.0.0.1 and DNS:localhost.
    pub server: CertKey,
    /// Client CN=podkeeper, signed by the CA.
    pub podkeeper: CertKey,
    /// Client CN=intruder, signed by the CA (a valid identity without rights).
    pub intruder: CertKey,
    /// Client CN=podkeeper, signed by the CA, valid only in January 2020.
    pub expired_podkeeper: CertKey,
    /// Client CN=podkeeper, signed by the wrong CA.
    pub wrong_ca_podkeeper: CertKey,
}

const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ca]
default_ca = ca_default
[ca_default]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = policy_any
unique_subject = no
[policy_any]
commonName = supplied
";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .env("OPENSSL_CONF", dir.join("openssl.cnf"))
        .output()
        .expect("run openssl (apt-get install -y openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn new_key(dir: &Path, name: &str) -> String {
    let key = format!("{name}.key");
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &key,
        ],
    );
    key
}

fn new_csr(dir: &Path, name: &str, cn: &str) -> String {
    let key = new_key(dir, name);
    let csr = format!("{name}.csr");
    let subj = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-config",
            "openssl.cnf",
            "-key",
            &key,
            "-subj",
            &subj,
            "-out",
            &csr,
        ],
    );
    csr
}

fn new_ca(dir: &Path, name: &str, cn: &str) -> String {
    let key = new_key(dir, name);
    let cert = format!("{name}.crt");
    let subj = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-config",
            "openssl.cnf",
            "-key",
            &key,
            "-subj",
            &subj,
            "-extensions",
            "ca_ext",
            "-days",
            "30",
            "-out",
            &cert,
        ],
    );
    cert
}

fn finish(dir: &Path, name: &str, cn: &str) -> CertKey {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let keystore = dir.join(format!("{name}.keystore.pem"));
    let both = std::fs::read_to_string(&key).unwrap() + &std::fs::read_to_string(&cert).unwrap();
    std::fs::write(&keystore, both).unwrap();
    CertKey {
        cert,
        key,
        keystore,
        x509_id: format!("CN={cn}"),
    }
}

/// Signs `name` (CN=`cn`) with CA `ca`, valid from an hour ago for 30 days.
fn signed(dir: &Path, ca: &str, name: &str, cn: &str, ext: &str, serial: u32) -> CertKey {
    let csr = new_csr(dir, name, cn);
    let cert = format!("{name}.crt");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-set_serial",
            &serial.to_string(),
            "-days",
            "30",
            "-sha256",
            "-extfile",
            "openssl.cnf",
            "-extensions",
            ext,
            "-out",
            &cert,
        ],
    );
    finish(dir, name, cn)
}

/// Signs `name` with CA `ca` for January 2020 only (`openssl ca` takes explicit dates).
fn expired(dir: &Path, ca: &str, name: &str, cn: &str) -> CertKey {
    let csr = new_csr(dir, name, cn);
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "1000\n").unwrap();
    openssl(
        dir,
        &[
            "ca",
            "-config",
            "openssl.cnf",
            "-batch",
            "-notext",
            "-cert",
            &format!("{ca}.crt"),
            "-keyfile",
            &format!("{ca}.key"),
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200131000000Z",
            "-extensions",
            "client_ext",
            "-in",
            &csr,
            "-out",
            &format!("{name}.crt"),
        ],
    );
    finish(dir, name, cn)
}

impl Pki {
    /// Makes every file in `dir` (created if missing). About 20 short `openssl` runs.
    pub fn generate(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("openssl.cnf"), OPENSSL_CNF).unwrap();
        let ca = new_ca(dir, "ca", "podkeeper test CA");
        let wrong_ca = new_ca(dir, "wrong-ca", "unrelated test CA");
        Pki {
            dir: dir.to_path_buf(),
            ca: dir.join(ca),
            wrong_ca: dir.join(wrong_ca),
            server: signed(dir, "ca", "server", "zookeeper", "server_ext", 1),
            podkeeper: signed(dir, "ca", "podkeeper", "podkeeper", "client_ext", 2),
            intruder: signed(dir, "ca", "intruder", "intruder", "client_ext", 3),
            expired_podkeeper: expired(dir, "ca", "expired-podkeeper", "podkeeper"),
            wrong_ca_podkeeper: signed(
                dir,
                "wrong-ca",
                "wrong-ca-podkeeper",
                "podkeeper",
                "client_ext",
                4,
            ),
        }
    }

    /// The trusted CA's PEM text.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(&self.ca).unwrap()
    }
}

/// `user:base64(sha1(user:password))`: the form of `zookeeper.DigestAuthenticationProvider.superDigest`
/// and of `digest` scheme ACL ids.
pub fn digest_id(user: &str, password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("openssl dgst -sha1 -binary | openssl base64 -A")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run openssl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{user}:{password}").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl dgst failed");
    format!("{user}:{}", String::from_utf8(out.stdout).unwrap().trim())
}
