//! When a TLS connect fails, `zookeeper-client` only reports that no server answered. This
//! repeats the handshake with the same files and says which side refused what, and why.
//! Blocking: run it on a blocking thread. Reads the TLS files; writes nothing.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, CertificateError, ClientConfig, Error as TlsError, RootCertStore};

const TIMEOUT: Duration = Duration::from_secs(2);

/// Handshakes with `host:port` as podkeeper would; `None` when the handshake succeeds (the
/// problem is elsewhere), else what went wrong, in words.
pub(super) fn probe(dir: &Path, host: &str, port: u16, skip_hostname: bool) -> Option<String> {
    let config = match config(dir, skip_hostname) {
        Ok(c) => c,
        Err(e) => return Some(e),
    };
    let name = ServerName::try_from(host.to_string()).ok()?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
    let addr = (host, port).to_socket_addrs().ok()?.next()?;
    let mut sock = match TcpStream::connect_timeout(&addr, TIMEOUT) {
        Ok(s) => s,
        Err(e) => return Some(format!("cannot reach {host}:{port}: {e}")),
    };
    sock.set_read_timeout(Some(TIMEOUT)).ok()?;
    sock.set_write_timeout(Some(TIMEOUT)).ok()?;
    if let Err(e) = handshake(&mut conn, &mut sock) {
        return Some(explain(&e, host));
    }
    // With TLS 1.3 the server judges the client certificate after the handshake: its verdict is
    // the first thing read. A ZooKeeper connect request makes it answer either way.
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let _ = tls.write_all(&connect_request());
    let mut buf = [0u8; 64];
    match tls.read(&mut buf) {
        Ok(0) => Some(
            "the server closed the connection right after the TLS handshake \
                       (it may require a client certificate: is tls.crt set?)"
                .into(),
        ),
        Ok(_) => None,
        Err(e) => match e.get_ref().and_then(|e| e.downcast_ref::<TlsError>()) {
            Some(t) => Some(explain(t, host)),
            None if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                None
            }
            None => Some(format!(
                "the connection failed after the TLS handshake: {e}"
            )),
        },
    }
}

fn handshake(conn: &mut rustls::ClientConnection, sock: &mut TcpStream) -> Result<(), TlsError> {
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(sock) {
            return Err(
                match e.into_inner().and_then(|i| i.downcast::<TlsError>().ok()) {
                    Some(t) => *t,
                    None => {
                        TlsError::General("the connection broke during the TLS handshake".into())
                    }
                },
            );
        }
    }
    Ok(())
}

/// A ZooKeeper ConnectRequest for a new session (protocol 0, 10 s timeout).
fn connect_request() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&0i32.to_be_bytes()); // protocol version
    body.extend_from_slice(&0i64.to_be_bytes()); // last zxid seen
    body.extend_from_slice(&10_000i32.to_be_bytes()); // timeout
    body.extend_from_slice(&0i64.to_be_bytes()); // session id
    body.extend_from_slice(&16i32.to_be_bytes()); // password length
    body.extend_from_slice(&[0u8; 16]);
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

fn config(dir: &Path, skip_hostname: bool) -> Result<ClientConfig, String> {
    let pem = |name: &str| {
        std::fs::read(dir.join(name))
            .map_err(|e| format!("cannot read {}: {e}", dir.join(name).display()))
    };
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem("ca.crt")?.as_slice()).flatten() {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if skip_hostname {
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .map_err(|e| e.to_string())?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyName(verifier)))
    } else {
        builder.with_root_certificates(roots)
    };
    if !dir.join("tls.crt").exists() {
        return Ok(builder.with_no_client_auth());
    }
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut pem("tls.crt")?.as_slice())
            .flatten()
            .collect();
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem("tls.key")?.as_slice())
        .ok()
        .flatten()
        .ok_or("tls.key holds no private key")?;
    builder
        .with_client_auth_cert(certs, key)
        .map_err(|e| format!("tls.crt and tls.key do not match: {e}"))
}

/// What a TLS error means for the person fixing it.
fn explain(e: &TlsError, host: &str) -> String {
    use CertificateError as C;
    match e {
        TlsError::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => format!(
            "the server's certificate is not signed by a CA in ca.crt ({e}): wrong CA bundle?"
        ),
        TlsError::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            format!("the server's certificate has expired ({e})")
        }
        TlsError::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            format!(
                "the server's certificate does not name {host} ({e}): connect by a name it carries, \
             or turn hostname verification off"
            )
        }
        TlsError::AlertReceived(
            a @ (AlertDescription::BadCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateRequired
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateRevoked
            | AlertDescription::HandshakeFailure),
        ) => format!(
            "the server refused podkeeper's client certificate (TLS alert {a:?}): tls.crt is \
             missing, expired, revoked or not signed by a CA the server trusts"
        ),
        other => format!("TLS failed: {other}"),
    }
}

/// Checks the chain but not the name (the operator turned hostname verification off).
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, TlsError> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, TlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, TlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
