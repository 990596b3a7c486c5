//! TLS on both sides: the acceptor clients meet, and the connector each target uses upstream.
//!
//! rustls with the aws-lc-rs provider. Certificates and keys are read as PEM through
//! rustls-pki-types.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::{ClientTls, TlsMode, UpstreamTls};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {message}")]
    Pem { path: String, message: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn pem_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Pem {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no certificate found"));
    }
    Ok(certs)
}

/// The acceptor for clients: after an SSLRequest, or at once for direct TLS.
pub fn acceptor(cfg: &ClientTls) -> Result<TlsAcceptor, Error> {
    let certs = load_certs(&cfg.cert)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| pem_error(&cfg.key, e))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // PostgreSQL 17 clients send this ALPN name; a client offering only other names fails the
    // handshake, one offering none is let through here (after an SSLRequest that is today's
    // clients; startup refuses direct TLS without it).
    server.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// How tollgate reaches one target over TLS.
#[derive(Clone)]
pub struct Upstream {
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
}

/// Builds the upstream TLS settings of a target; `None` for mode `disable`.
pub fn upstream(cfg: &UpstreamTls, host: &str) -> Result<Option<Upstream>, Error> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let client = match cfg.mode {
        TlsMode::Disable => return Ok(None),
        TlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider())))
            .with_no_client_auth(),
        TlsMode::VerifyFull => {
            let mut roots = rustls::RootCertStore::empty();
            let path = cfg
                .ca_file
                .as_deref()
                .ok_or_else(|| Error::ServerName("verify-full needs ca_file".into()))?;
            for cert in load_certs(path)? {
                roots.add(cert).map_err(|e| pem_error(path, e))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    let name = cfg.server_name.as_deref().unwrap_or(host).to_owned();
    let server_name = ServerName::try_from(name.clone()).map_err(|_| Error::ServerName(name))?;
    Ok(Some(Upstream {
        connector: TlsConnector::from(Arc::new(client)),
        server_name,
    }))
}

/// libpq's `sslmode=require`: the channel is encrypted and the handshake signatures are
/// checked, but the certificate is not (the operator chose this mode for the target).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
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
