//! rustls configurations built from files: a server's (its certificate, optionally requiring
//! client certificates signed by a CA) and a client's (the CAs it trusts, optionally a client
//! certificate). Each `load` reads and checks the files anew, so a reload is another `load`.

use std::path::PathBuf;
use std::sync::Arc;

use super::error::TlsError;
use super::pem::{check_signed_by, load_ca_bundle, load_identity, load_root_store};
use super::provider;

/// The files of a TLS server (the client port, the peer port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// The certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// The certificate's private key.
    pub key: PathBuf,
    /// If set, clients must present a certificate signed by a CA in this bundle.
    pub client_ca: Option<PathBuf>,
    /// If set, the server's own certificate must be signed by a CA in this bundle (the peer
    /// port: the other members verify it against the same CA), checked at every load.
    pub cert_signed_by: Option<PathBuf>,
}

impl ServerTlsFiles {
    /// A server with `cert` and `key`, no client certificates asked for.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        ServerTlsFiles {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
            cert_signed_by: None,
        }
    }

    /// Reads and checks the files, and builds the configuration.
    pub fn load(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let identity = load_identity(&self.cert, &self.key)?;
        if let Some(ca_path) = &self.cert_signed_by {
            let ca = load_ca_bundle(ca_path)?;
            check_signed_by(&self.cert, &identity.chain, ca_path, &ca)?;
        }
        let builder = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .map_err(config_error)?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca_path) => {
                let roots = load_root_store(ca_path)?;
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::new(provider()),
                )
                .build()
                .map_err(|e| TlsError::Config {
                    detail: format!("client CA {}: {e}", ca_path.display()),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(identity.chain, identity.key)
            .map_err(config_error)?;
        Ok(Arc::new(config))
    }
}

/// The files of a TLS client (`KvClient`, the `kvstore` client commands, a dialing peer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// The CA bundle the server's certificate must chain to.
    pub ca: PathBuf,
    /// A client certificate and its key, for servers that ask for one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ClientTlsFiles {
    /// A client trusting the CAs in `ca`, without a client certificate.
    pub fn new(ca: impl Into<PathBuf>) -> Self {
        ClientTlsFiles {
            ca: ca.into(),
            identity: None,
        }
    }

    /// Reads and checks the files, and builds the configuration.
    pub fn load(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let roots = load_root_store(&self.ca)?;
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_root_certificates(roots);
        let config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let identity = load_identity(cert, key)?;
                builder
                    .with_client_auth_cert(identity.chain, identity.key)
                    .map_err(config_error)?
            }
        };
        Ok(Arc::new(config))
    }
}

fn config_error(e: rustls::Error) -> TlsError {
    TlsError::Config {
        detail: e.to_string(),
    }
}
