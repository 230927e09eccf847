//! TLS for the client port and the peer port, on rustls with the `ring` provider (installed
//! explicitly through [`provider`], never a process default).
//!
//! The pieces, for whoever wires a port:
//!
//! - **Files** ([`pem`]): [`load_identity`] reads a certificate chain and its key and checks
//!   that they belong together and are valid now; [`load_ca_bundle`] / [`load_root_store`]
//!   read CAs to trust; [`check_signed_by`] says whether a CA signed a certificate;
//!   [`certificate_dns_names`] lists a certificate's DNS names. Every failure is a
//!   [`TlsError`] naming the file and what is wrong with it (missing, not PEM, no certificate
//!   or key in it, key of another certificate, expired or not yet valid, another CA's).
//! - **Configurations** ([`config`]): [`ServerTlsFiles::load`] builds a `rustls::ServerConfig`
//!   (optionally requiring client certificates from a CA, optionally checking its own
//!   certificate against a CA); [`ClientTlsFiles::load`] a `rustls::ClientConfig` (CAs to
//!   trust, optionally a client certificate).
//! - **Reloading** ([`reload`]): [`Reloadable`] holds a configuration and the closure that
//!   loads it; `reload()` swaps in a fresh one or keeps the old one and says why;
//!   `reload_on_sighup()` does that on every SIGHUP. New handshakes use the current one.
//! - **Streams** ([`stream`]): [`TlsListener`] wraps any [`crate::transport::Listener`]; its
//!   [`TlsStream`]s do their handshake in the connection's own task on first use (or on
//!   [`TlsStream::handshake`]), bounded by a timeout ([`DEFAULT_HANDSHAKE_TIMEOUT`]), so a
//!   stalled client never holds up the accept loop; [`TlsStream::peer_certificates`] gives
//!   the other side's certificate after it. [`TlsStream::connect`] dials with an expected
//!   server name; [`TlsNet`] is a [`crate::transport::Net`] doing TLS over another one.
//! - **Generation** ([`generate`]): [`CertAuthority`] makes a CA and node certificates named
//!   [`node_dns_name`] (`node-N.kvstore.internal`) plus `localhost`, `127.0.0.1` and the host,
//!   usable for server and client authentication.
//! - **Plain or TLS** ([`maybe`]): [`MaybeTlsNet`], one `Net` type for either, as a command
//!   line chooses.
//!
//! Example, a server port:
//! ```no_run
//! # async fn f(listener: tokio::net::TcpListener) -> Result<(), net::tls::TlsError> {
//! use net::tls::{Reloadable, ServerTlsFiles, TlsListener, DEFAULT_HANDSHAKE_TIMEOUT};
//! let files = ServerTlsFiles::new("node1.pem", "node1-key.pem");
//! let config = Reloadable::load("client port certificate", move || files.load())?;
//! config.reload_on_sighup();
//! let tls_listener = TlsListener::new(listener, config, DEFAULT_HANDSHAKE_TIMEOUT);
//! # Ok(()) }
//! ```

pub mod config;
pub mod error;
pub mod generate;
pub mod maybe;
pub mod peer;
pub mod pem;
pub mod reload;
pub mod stream;

#[cfg(test)]
mod tests;

pub use config::{ClientTlsFiles, ServerTlsFiles};
pub use error::{PemKind, TlsError};
pub use generate::{node_dns_name, CertAuthority, PemPair};
pub use maybe::{MaybeTlsListener, MaybeTlsNet, MaybeTlsStream};
pub use peer::{check_names_member, PeerTlsFiles, PeerTlsNet};
pub use pem::{
    certificate_dns_names, check_signed_by, load_ca_bundle, load_identity, load_root_store,
    Identity,
};
pub use reload::Reloadable;
pub use stream::{TlsListener, TlsNet, TlsStream, DEFAULT_HANDSHAKE_TIMEOUT};

/// The crypto provider every TLS configuration of the node uses: rustls's `ring`.
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}
