//! TLS from the command line: the client port's certificate (`kvstore serve --tls-cert ...`),
//! the client commands' `--tls --cacert ...`, `kvstore certs` and the certificates of
//! `kvstore cluster --tls`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use rand::Rng;
use tokio::sync::watch;

use crate::error::{CliError, ConfigError};
use crate::metrics::NodeMetrics;
use crate::request::NodeHandle;
use crate::server;
use crate::tls::{
    CertAuthority, ClientTlsFiles, MaybeTlsListener, MaybeTlsNet, PemPair, Reloadable,
    ServerTlsFiles, TlsError, TlsListener, TlsNet, DEFAULT_HANDSHAKE_TIMEOUT,
};
use crate::transport::{Net, TokioNet};

/// `kvstore serve`'s client-port TLS flags (also `tls-cert`, ... in a `--config` file).
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeTlsArgs {
    /// Serve clients over TLS with this certificate chain (PEM, the node's certificate first).
    /// Without --tls-client-addr, --client-addr speaks TLS; SIGHUP re-reads the files.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Accept only clients presenting a certificate signed by a CA of this file (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve TLS on this second address (HOST:PORT), and plain text on --client-addr.
    #[arg(long, value_name = "HOST:PORT")]
    pub tls_client_addr: Option<String>,
}

impl ServeTlsArgs {
    /// Takes a `--config` file's setting if it is one of these; false if not.
    pub(crate) fn set_from_file(&mut self, key: &str, value: &str) -> bool {
        match key {
            "tls-cert" | "tls_cert" => self.tls_cert = Some(value.into()),
            "tls-key" | "tls_key" => self.tls_key = Some(value.into()),
            "tls-client-ca" | "tls_client_ca" => self.tls_client_ca = Some(value.into()),
            "tls-client-addr" | "tls_client_addr" => self.tls_client_addr = Some(value.into()),
            _ => return false,
        }
        true
    }

    /// These flags, each falling back to the file's setting.
    pub(crate) fn or(self, file: ServeTlsArgs) -> ServeTlsArgs {
        ServeTlsArgs {
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            tls_client_ca: self.tls_client_ca.or(file.tls_client_ca),
            tls_client_addr: self.tls_client_addr.or(file.tls_client_addr),
        }
    }

    /// The client ports these settings ask for, beside `client_addr`.
    pub(crate) fn client_ports(self, client_addr: String) -> Result<ClientPorts, ConfigError> {
        let (cert, key) = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => (cert, key),
            (Some(_), None) => return Err(ConfigError::Missing("--tls-key (for --tls-cert)")),
            (None, Some(_)) => return Err(ConfigError::Missing("--tls-cert (for --tls-key)")),
            (None, None) => {
                if self.tls_client_ca.is_some() || self.tls_client_addr.is_some() {
                    return Err(ConfigError::Missing(
                        "--tls-cert and --tls-key (for --tls-client-ca or --tls-client-addr)",
                    ));
                }
                return Ok(ClientPorts::plain(client_addr));
            }
        };
        let mut files = ServerTlsFiles::new(cert, key);
        files.client_ca = self.tls_client_ca;
        Ok(ClientPorts {
            addr: client_addr,
            tls: Some(ClientPortTls {
                files,
                addr: self.tls_client_addr,
            }),
        })
    }
}

/// Where a node serves clients: `addr`, plain or TLS, and maybe a second TLS port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientPorts {
    pub addr: String,
    pub tls: Option<ClientPortTls>,
}

/// The client port's TLS: its files, and its own address if `addr` stays plain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientPortTls {
    pub files: ServerTlsFiles,
    pub addr: Option<String>,
}

/// The client ports, bound.
pub(crate) struct BoundClientPorts {
    listeners: Vec<(MaybeTlsListener, u16)>,
}

impl ClientPorts {
    pub(crate) fn plain(addr: String) -> Self {
        ClientPorts { addr, tls: None }
    }

    /// Where TLS clients connect, if anywhere.
    pub(crate) fn tls_addr(&self) -> Option<&str> {
        let tls = self.tls.as_ref()?;
        Some(tls.addr.as_deref().unwrap_or(&self.addr))
    }

    /// Reads the certificate (a clear error if it cannot serve) and binds every port.
    pub(crate) async fn bind(&self, id: u64) -> Result<BoundClientPorts, CliError> {
        let config = match &self.tls {
            None => None,
            Some(tls) => {
                let files = tls.files.clone();
                let what = format!("node {id}'s client port certificate");
                let config = Reloadable::load(what, move || files.load()).map_err(|source| {
                    CliError::TlsSetup {
                        what: format!("node {id} cannot serve TLS to clients"),
                        source,
                    }
                })?;
                config.reload_on_sighup();
                Some(config)
            }
        };
        let mut wanted: Vec<(&str, Option<Reloadable<rustls::ServerConfig>>)> = Vec::new();
        match (&self.tls, config) {
            (
                Some(ClientPortTls {
                    addr: Some(tls_addr),
                    ..
                }),
                Some(config),
            ) => {
                wanted.push((self.addr.as_str(), None));
                wanted.push((tls_addr.as_str(), Some(config)));
            }
            (_, config) => wanted.push((self.addr.as_str(), config)),
        }
        let mut listeners = Vec::new();
        for (addr, config) in wanted {
            let tcp =
                TokioNet
                    .bind(addr.to_string())
                    .await
                    .map_err(|source| CliError::ClientPort {
                        id,
                        addr: addr.to_string(),
                        source,
                    })?;
            let port = tcp.local_addr().map(|a| a.port()).unwrap_or(0);
            let listener = match config {
                None => MaybeTlsListener::Plain(tcp),
                Some(config) => {
                    MaybeTlsListener::Tls(TlsListener::new(tcp, config, DEFAULT_HANDSHAKE_TIMEOUT))
                }
            };
            listeners.push((listener, port));
        }
        Ok(BoundClientPorts { listeners })
    }
}

impl BoundClientPorts {
    /// Serves every port (see [`server::serve_clients`]) until `shutdown`; ends once all have
    /// closed.
    pub(crate) fn serve(
        self,
        node: watch::Receiver<Option<NodeHandle>>,
        shutdown: watch::Receiver<bool>,
        metrics: Arc<NodeMetrics>,
        authority: Option<Arc<crate::auth::Authority>>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let mut ports = self.listeners.into_iter().map(|(listener, port)| {
            server::serve_clients(
                listener,
                node.clone(),
                shutdown.clone(),
                rand::thread_rng().gen(),
                port,
                metrics.clone(),
                authority.clone(),
            )
        });
        let first = ports.next();
        let second = ports.next();
        async move {
            let first = async {
                if let Some(port) = first {
                    port.await
                }
            };
            let second = async {
                if let Some(port) = second {
                    port.await
                }
            };
            tokio::join!(first, second);
        }
    }
}

/// The client commands' TLS flags.
#[derive(Args, Debug, Clone, Default)]
pub struct ClientTlsArgs {
    /// Connect over TLS (needs --cacert).
    #[arg(long)]
    pub tls: bool,
    /// The CA certificate (PEM) the servers' certificates must be signed by; implies --tls.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// A client certificate (PEM), for servers started with --tls-client-ca.
    #[arg(
        long = "cert",
        id = "client_cert",
        value_name = "FILE",
        requires = "client_key"
    )]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(
        long = "key",
        id = "client_key",
        value_name = "FILE",
        requires = "client_cert"
    )]
    pub key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// The network these flags ask for: plain TCP, or TLS with the files given.
    pub fn net(&self) -> Result<MaybeTlsNet, CliError> {
        let Some(ca) = &self.cacert else {
            if self.tls || self.cert.is_some() {
                return Err(CliError::Usage(
                    "--tls needs --cacert FILE: the CA that signed the servers' certificates",
                ));
            }
            return Ok(MaybeTlsNet::Plain);
        };
        let mut files = ClientTlsFiles::new(ca);
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            files.identity = Some((cert.clone(), key.clone()));
        }
        let config = files.load().map_err(|source| CliError::TlsSetup {
            what: "cannot connect over TLS".into(),
            source,
        })?;
        Ok(MaybeTlsNet::Tls(TlsNet::client(
            TokioNet,
            Reloadable::fixed(config),
        )))
    }
}

/// `kvstore certs`: a CA and a certificate per node for a real deployment.
#[derive(Args, Debug)]
pub struct CertsArgs {
    /// Directory to write ca.pem, ca-key.pem, nodeN.pem and nodeN-key.pem into (created if
    /// missing; keys are written readable by their owner only).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The nodes, ID=HOST,...: HOST is the name or IP address clients and peers reach node ID
    /// by (a :PORT after it is ignored). Each certificate also names node-ID.kvstore.internal
    /// (which peers check), localhost and 127.0.0.1.
    #[arg(long, value_name = "ID=HOST,...")]
    pub nodes: String,
    /// Sign with the CA already in --out (ca.pem and ca-key.pem), to add nodes to a cluster
    /// whose certificates it made; otherwise --out must hold no CA yet.
    #[arg(long)]
    pub existing_ca: bool,
}

/// Writes what `kvstore certs` asks for, and says what it wrote.
pub fn run_certs(args: CertsArgs) -> Result<(), CliError> {
    let nodes = parse_node_hosts(&args.nodes)?;
    let ca_exists = args.out.join("ca.pem").exists();
    if ca_exists && !args.existing_ca {
        return Err(ConfigError::Invalid(format!(
            "{} already holds a CA (ca.pem): add --existing-ca to sign new node certificates \
             with it, or choose another --out",
            args.out.display()
        ))
        .into());
    }
    for (id, _) in &nodes {
        let cert = args.out.join(format!("node{id}.pem"));
        if cert.exists() {
            return Err(ConfigError::Invalid(format!(
                "{} exists: remove it to issue node {id} a new certificate",
                cert.display()
            ))
            .into());
        }
    }
    let ca = if args.existing_ca {
        load_ca(&args.out)?
    } else {
        new_ca(&args.out)?
    };
    for (id, host) in &nodes {
        write_node(&args.out, &ca, *id, host)?;
    }
    println!(
        "kvstore: wrote {} (CA) and {} in {}\n  keep ca-key.pem offline: it signs certificates every node trusts\n  node N: kvstore serve ... --tls-cert {dir}/nodeN.pem --tls-key {dir}/nodeN-key.pem\n  clients: redis-cli --tls --cacert {dir}/ca.pem ...; kvstore get KEY --cacert {dir}/ca.pem --servers ...",
        if args.existing_ca { "nothing new" } else { "ca.pem, ca-key.pem" },
        nodes
            .iter()
            .map(|(id, _)| format!("node{id}.pem, node{id}-key.pem"))
            .collect::<Vec<_>>()
            .join(", "),
        args.out.display(),
        dir = args.out.display(),
    );
    Ok(())
}

/// The files of `kvstore cluster --tls` in `dir` (DATA_DIR/tls): made on the first start,
/// reused after (a node added since gets its certificate from the same CA).
pub(crate) fn cluster_certificates(dir: &Path, nodes: u64, host: &str) -> Result<(), CliError> {
    let ca = if dir.join("ca.pem").exists() && dir.join("ca-key.pem").exists() {
        load_ca(dir)?
    } else {
        new_ca(dir)?
    };
    for id in 1..=nodes {
        if !dir.join(format!("node{id}.pem")).exists() {
            write_node(dir, &ca, id, host)?;
        }
    }
    Ok(())
}

/// `ID=HOST,...`, a port after a host dropped.
fn parse_node_hosts(text: &str) -> Result<Vec<(u64, String)>, ConfigError> {
    let mut nodes: Vec<(u64, String)> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let invalid = || ConfigError::Invalid(format!("--nodes: `{part}` is not ID=HOST"));
        let (id, host) = part.split_once('=').ok_or_else(invalid)?;
        let id: u64 = id.trim().parse().map_err(|_| invalid())?;
        let host = host.trim();
        let host = match host.rsplit_once(':') {
            Some((h, port)) if port.parse::<u16>().is_ok() && !h.is_empty() => h,
            _ => host,
        };
        if id == 0 || host.is_empty() {
            return Err(invalid());
        }
        if nodes.iter().any(|(seen, _)| *seen == id) {
            return Err(ConfigError::Invalid(format!(
                "--nodes: id {id} appears twice"
            )));
        }
        nodes.push((id, host.to_string()));
    }
    if nodes.is_empty() {
        return Err(ConfigError::Invalid("--nodes is empty".into()));
    }
    Ok(nodes)
}

fn new_ca(dir: &Path) -> Result<CertAuthority, CliError> {
    let ca = CertAuthority::generate("kvstore cluster CA").map_err(generating)?;
    std::fs::create_dir_all(dir).map_err(|e| writing(dir, e))?;
    write_pair(dir, "ca", &ca.pem())?;
    Ok(ca)
}

fn load_ca(dir: &Path) -> Result<CertAuthority, CliError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| {
            CliError::Config(ConfigError::Invalid(format!(
                "cannot read the CA's {}: {e}",
                path.display()
            )))
        })
    };
    CertAuthority::from_pem(&read("ca.pem")?, &read("ca-key.pem")?).map_err(|source| {
        CliError::TlsSetup {
            what: format!("the CA in {}", dir.display()),
            source,
        }
    })
}

fn write_node(dir: &Path, ca: &CertAuthority, id: u64, host: &str) -> Result<(), CliError> {
    let pair = ca.issue_node(id, host).map_err(generating)?;
    write_pair(dir, &format!("node{id}"), &pair)
}

/// `STEM.pem`, and `STEM-key.pem` readable by its owner only.
fn write_pair(dir: &Path, stem: &str, pair: &PemPair) -> Result<(), CliError> {
    let cert = dir.join(format!("{stem}.pem"));
    std::fs::write(&cert, &pair.cert_pem).map_err(|e| writing(&cert, e))?;
    let key = dir.join(format!("{stem}-key.pem"));
    write_private(&key, pair.key_pem.as_bytes()).map_err(|e| writing(&key, e))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn generating(source: TlsError) -> CliError {
    CliError::TlsSetup {
        what: "cannot make certificates".into(),
        source,
    }
}

fn writing(path: &Path, e: std::io::Error) -> CliError {
    CliError::Config(ConfigError::Invalid(format!(
        "cannot write {}: {e}",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_hosts_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_node_hosts("1=10.0.0.1, 2=db2.example.com:7001,3=[::1]:7001").unwrap(),
            vec![
                (1, "10.0.0.1".to_string()),
                (2, "db2.example.com".to_string()),
                (3, "[::1]".to_string())
            ]
        );
        for bad in ["", "1", "x=h", "0=h", "1=h,1=g", "1="] {
            assert!(parse_node_hosts(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn certs_writes_a_ca_and_nodes_then_adds_nodes_with_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tls");
        let certs = |nodes: &str, existing_ca: bool| CertsArgs {
            out: out.clone(),
            nodes: nodes.into(),
            existing_ca,
        };
        run_certs(certs("1=127.0.0.1,2=db2.example.com", false)).unwrap();
        // A second run would make a new CA the nodes do not trust: refused.
        assert!(run_certs(certs("3=h", false)).is_err());
        assert!(run_certs(certs("2=h", true)).is_err(), "node 2 exists");
        run_certs(certs("3=h", true)).unwrap();
        let ca = crate::tls::load_ca_bundle(&out.join("ca.pem")).unwrap();
        for id in 1..=3 {
            let cert = out.join(format!("node{id}.pem"));
            let mut files = ServerTlsFiles::new(&cert, out.join(format!("node{id}-key.pem")));
            files.cert_signed_by = Some(out.join("ca.pem"));
            files.load().unwrap();
            let chain =
                crate::tls::pem::load_certificates(&cert, crate::tls::PemKind::CertificateChain)
                    .unwrap();
            crate::tls::check_signed_by(&cert, &chain, &out.join("ca.pem"), &ca).unwrap();
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(out.join("node1-key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn serve_tls_flags_need_a_certificate_and_a_key() {
        let plain = ServeTlsArgs::default().client_ports("h:1".into()).unwrap();
        assert_eq!(plain, ClientPorts::plain("h:1".into()));
        let only_ca = ServeTlsArgs {
            tls_client_ca: Some("ca.pem".into()),
            ..Default::default()
        };
        assert!(only_ca.client_ports("h:1".into()).is_err());
        let no_key = ServeTlsArgs {
            tls_cert: Some("c.pem".into()),
            ..Default::default()
        };
        assert!(no_key.client_ports("h:1".into()).is_err());
        let both = ServeTlsArgs {
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            tls_client_addr: Some("h:2".into()),
            ..Default::default()
        };
        let ports = both.client_ports("h:1".into()).unwrap();
        assert_eq!(ports.tls_addr(), Some("h:2"));
    }
}
