//! TLS helpers: read a server certificate's expiry even when its chain is not
//! trusted here (Caddy's internal CA, a staging issuer), and an opt-in
//! non-verifying client for such endpoints.

use crate::error::{Error, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client config that accepts any certificate (signatures are still checked).
pub fn insecure_client_config() -> Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    Ok(cfg)
}

/// Connects to `host:port`, completes a TLS handshake and returns the leaf
/// certificate's `notAfter`. Trust is not checked: this answers "when does it
/// expire", the HTTP check answers "is it trusted".
pub fn certificate_not_after(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<chrono::DateTime<chrono::Utc>> {
    let what = format!("{host}:{port}");
    let unreachable = |detail: String| Error::HttpUnreachable {
        url: format!("https://{what}"),
        detail,
    };
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("resolving: {e}")))?
        .next()
        .ok_or_else(|| unreachable("no address".into()))?;
    let mut tcp =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| unreachable(e.to_string()))?;
    tcp.set_read_timeout(Some(timeout))
        .and_then(|_| tcp.set_write_timeout(Some(timeout)))
        .map_err(|e| unreachable(e.to_string()))?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| unreachable(format!("bad server name: {e}")))?;
    let mut conn = rustls::ClientConnection::new(Arc::new(insecure_client_config()?), name)
        .map_err(|e| unreachable(format!("TLS: {e}")))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .map_err(|e| unreachable(format!("TLS handshake: {e}")))?;
    }
    let certs = conn
        .peer_certificates()
        .ok_or_else(|| unreachable("the server sent no certificate".into()))?;
    let leaf = certs
        .first()
        .ok_or_else(|| unreachable("the server sent no certificate".into()))?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| Error::HttpProtocol {
            url: format!("https://{what}"),
            detail: format!("unparsable certificate: {e}"),
        })?;
    let ts = cert.validity().not_after.timestamp();
    chrono::DateTime::from_timestamp(ts, 0).ok_or_else(|| Error::HttpProtocol {
        url: format!("https://{what}"),
        detail: format!("certificate notAfter {ts} out of range"),
    })
}
