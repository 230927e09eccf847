//! Mutual TLS between peers (`kvstore serve --peer-tls-cert --peer-tls-key --peer-tls-ca`):
//! [`PeerTlsNet`] is the [`Net`] a node runs its peer port and every peer connection it dials
//! on (Raft messages, snapshot transfers, join requests, bootstrap probes) when given them.
//!
//! - Accepting: a peer must present a certificate the cluster CA signed (the handshake checks
//!   it, in the connection's own task and within a timeout); what it names is handed to the
//!   transport ([`PeerIdentity`]), which refuses any frame claiming a member the certificate
//!   does not name (`node-N.kvstore.internal`).
//! - Dialing member N: its certificate must be the CA's and name `node-N.kvstore.internal`.
//!   Dialing an address without knowing which member listens there (a join request, a
//!   bootstrap probe): it must be the CA's and name some member.
//! - The node's own certificate is presented on both sides, and is checked at start to be the
//!   CA's. SIGHUP reads the three files again; a failed reload keeps the ones in force.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use raft_core::NodeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};

use super::stream::host_of;
use super::{
    certificate_dns_names, load_identity, load_root_store, node_dns_name, provider, ClientTlsFiles,
    Reloadable, ServerTlsFiles, TlsError, TlsListener, TlsStream, DEFAULT_HANDSHAKE_TIMEOUT,
};
use crate::metrics::NodeMetrics;
use crate::transport::{BoxFuture, Listener, Net, PeerIdentity, PeerRefusals, Refusal, TokioNet};

/// The files of mutual TLS between peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerTlsFiles {
    /// This node's certificate (chain), naming `node-N.kvstore.internal` for its id N.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The cluster CA: peers' certificates must chain to it.
    pub ca: PathBuf,
}

/// The peer network over TCP with mutual TLS. Cloning shares the configurations.
#[derive(Clone)]
pub struct PeerTlsNet {
    server: Reloadable<rustls::ServerConfig>,
    /// Dialing a known member: the server name checked is that member's.
    client: Reloadable<rustls::ClientConfig>,
    /// Dialing an address: any member's certificate of the CA will do.
    any_member: Reloadable<rustls::ClientConfig>,
    refusals: Arc<PeerRefusals>,
    handshake_timeout: Duration,
}

impl PeerTlsNet {
    /// Reads and checks the files (an error names the file and what is wrong), and reloads
    /// them on every SIGHUP. Refusals are counted in `metrics`.
    pub fn load(files: &PeerTlsFiles, metrics: Arc<NodeMetrics>) -> Result<Self, TlsError> {
        let server_files = ServerTlsFiles {
            cert: files.cert.clone(),
            key: files.key.clone(),
            client_ca: Some(files.ca.clone()),
            cert_signed_by: Some(files.ca.clone()),
        };
        let client_files = ClientTlsFiles {
            ca: files.ca.clone(),
            identity: Some((files.cert.clone(), files.key.clone())),
        };
        let any_files = files.clone();
        let net = PeerTlsNet {
            server: Reloadable::load("peer port certificate", move || server_files.load())?,
            client: Reloadable::load("peer certificate (dialing)", move || client_files.load())?,
            any_member: Reloadable::load("peer certificate (dialing any member)", move || {
                any_member_config(&any_files)
            })?,
            refusals: Arc::new(PeerRefusals::new(metrics)),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        };
        net.server.reload_on_sighup();
        net.client.reload_on_sighup();
        net.any_member.reload_on_sighup();
        Ok(net)
    }

    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    fn dial(
        &self,
        addr: String,
        config: &Reloadable<rustls::ClientConfig>,
        server_name: String,
    ) -> BoxFuture<'static, io::Result<TlsStream<TcpStream>>> {
        let (config, timeout) = (config.current(), self.handshake_timeout);
        Box::pin(async move {
            let tcp = TokioNet.connect(addr).await?;
            TlsStream::connect(tcp, config, &server_name, timeout).await
        })
    }
}

impl Net for PeerTlsNet {
    type Stream = TlsStream<TcpStream>;
    type Listener = PeerTlsListener;

    fn bind(&self, addr: String) -> BoxFuture<'static, io::Result<Self::Listener>> {
        let (server, refusals) = (self.server.clone(), self.refusals.clone());
        let timeout = self.handshake_timeout;
        Box::pin(async move {
            let tcp = TokioNet.bind(addr).await?;
            Ok(PeerTlsListener {
                inner: TlsListener::new(tcp, server, timeout),
                refusals,
            })
        })
    }

    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<Self::Stream>> {
        // The any-member verifier ignores the name; the host keeps rustls's SNI meaningful.
        let host = host_of(&addr).to_owned();
        self.dial(addr, &self.any_member, host)
    }

    fn connect_member(
        &self,
        addr: String,
        member: NodeId,
    ) -> BoxFuture<'static, io::Result<Self::Stream>> {
        self.dial(addr, &self.client, node_dns_name(member))
    }
}

/// The peer port's listener: accepts TCP; [`Listener::establish`] completes the handshake in
/// the connection's task and says which members the certificate names.
pub struct PeerTlsListener {
    inner: TlsListener<TcpListener>,
    refusals: Arc<PeerRefusals>,
}

impl Listener for PeerTlsListener {
    type Stream = TlsStream<TcpStream>;

    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Self::Stream, String)>> {
        self.inner.accept()
    }

    fn establish(
        &self,
        mut stream: Self::Stream,
        remote: String,
    ) -> BoxFuture<'static, Option<(Self::Stream, PeerIdentity)>> {
        let refusals = self.refusals.clone();
        Box::pin(async move {
            if let Err(e) = stream.handshake().await {
                // Keyed by host and reason: a refused peer reconnects from ever new ports.
                let why = format!("TLS handshake failed: {e}");
                let peer = format!("{} {e}", host_of(&remote));
                refusals.refuse(Refusal::Handshake, &peer, &remote, &why);
                return None;
            }
            let dns_names = stream
                .peer_certificates()
                .and_then(<[_]>::first)
                .map(certificate_dns_names)
                .unwrap_or_default();
            let identity = PeerIdentity::Certified {
                dns_names: dns_names.into(),
                refusals,
            };
            Some((stream, identity))
        })
    }
}

/// A client configuration presenting this node's certificate and accepting any server whose
/// certificate the CA signed and that names some member.
/// Checks that the node's own certificate (the first of `files.cert`) names member `id`
/// (`node-N.kvstore.internal`), as its peers will require of every frame it sends: a node
/// started with another member's certificate fails at start with this, not later with every
/// peer refusing it.
pub fn check_names_member(files: &PeerTlsFiles, id: NodeId) -> Result<(), TlsError> {
    let chain = super::pem::load_certificates(&files.cert, super::PemKind::CertificateChain)?;
    let names = chain.first().map(certificate_dns_names).unwrap_or_default();
    let expected = node_dns_name(id);
    if names.iter().any(|n| n.eq_ignore_ascii_case(&expected)) {
        return Ok(());
    }
    Err(TlsError::NotThisMember {
        cert: files.cert.clone(),
        expected,
        names,
    })
}

fn any_member_config(files: &PeerTlsFiles) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = Arc::new(load_root_store(&files.ca)?);
    let identity = load_identity(&files.cert, &files.key)?;
    let config_error = |e: rustls::Error| TlsError::Config {
        detail: e.to_string(),
    };
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, Arc::new(provider()))
        .build()
        .map_err(|e| TlsError::Config {
            detail: format!("CA {}: {e}", files.ca.display()),
        })?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyMember { webpki }))
        .with_client_auth_cert(identity.chain, identity.key)
        .map_err(config_error)?;
    Ok(Arc::new(config))
}

/// The member id a DNS name `node-N.kvstore.internal` names.
fn member_of_name(name: &str) -> Option<NodeId> {
    let lower = name.to_ascii_lowercase();
    let digits = lower
        .strip_prefix("node-")?
        .strip_suffix(".kvstore.internal")?;
    let id: NodeId = digits.parse().ok()?;
    // `node-07` is not the name of member 7.
    (node_dns_name(id) == lower).then_some(id)
}

/// Verifies a server as the CA's certificate of some member: the member it names is then the
/// name checked, with all of webpki's checks (chain, validity, usage).
#[derive(Debug)]
struct AnyMember {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for AnyMember {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let member = certificate_dns_names(end_entity)
            .iter()
            .find_map(|n| member_of_name(n))
            .ok_or(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))?;
        let name = ServerName::try_from(node_dns_name(member))
            .map_err(|_| rustls::Error::General("member name is not a DNS name".into()))?;
        self.webpki
            .verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests;
