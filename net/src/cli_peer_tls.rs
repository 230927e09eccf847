//! The command line and config-file settings of mutual TLS between peers and of the admin
//! endpoint's access (`kvstore serve --peer-tls-* --admin-tls --admin-token*`).

use std::path::PathBuf;

use clap::Args;

use crate::admin_http::AdminToken;
use crate::error::ConfigError;
use crate::node::NodeConfig;
use crate::tls::peer::PeerTlsFiles;

#[derive(Args, Debug, Clone, Default)]
pub struct PeerTlsArgs {
    /// This node's certificate for mutual TLS with its peers (PEM; it must name
    /// node-ID.kvstore.internal). Give --peer-tls-cert, --peer-tls-key and --peer-tls-ca
    /// together, or none (plain TCP between peers).
    #[arg(long, value_name = "FILE")]
    pub peer_tls_cert: Option<PathBuf>,
    /// The private key of --peer-tls-cert (PEM).
    #[arg(long, value_name = "FILE")]
    pub peer_tls_key: Option<PathBuf>,
    /// The cluster CA (PEM): only peers whose certificates it signed are accepted or dialed.
    #[arg(long, value_name = "FILE")]
    pub peer_tls_ca: Option<PathBuf>,
    /// Serve the admin endpoints (--admin-addr) over HTTPS with the peer certificate.
    #[arg(long)]
    pub admin_tls: bool,
    /// /metrics answers only requests with `Authorization: Bearer TOKEN` (/health and /ready
    /// stay open). Prefer --admin-token-file: a command line is visible to other users.
    #[arg(long, value_name = "TOKEN", conflicts_with = "admin_token_file")]
    pub admin_token: Option<String>,
    /// Like --admin-token, the token being the first line of FILE.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
}

/// The same settings from a config file (`peer-tls-cert = FILE`, ...).
#[derive(Debug, Default, Clone)]
pub struct PeerTlsSettings {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    admin_tls: Option<bool>,
    admin_token: Option<String>,
    admin_token_file: Option<PathBuf>,
}

impl PeerTlsSettings {
    /// Takes `key = value` if it is one of these settings: `Ok(false)` if it is not.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let path = || Some(PathBuf::from(value));
        match key.replace('_', "-").as_str() {
            "peer-tls-cert" => self.cert = path(),
            "peer-tls-key" => self.key = path(),
            "peer-tls-ca" => self.ca = path(),
            "admin-tls" => {
                self.admin_tls = Some(match value {
                    "true" | "yes" | "1" => true,
                    "false" | "no" | "0" => false,
                    _ => return Err(format!("`{key}` is true or false, not `{value}`")),
                })
            }
            "admin-token" => self.admin_token = Some(value.to_string()),
            "admin-token-file" => self.admin_token_file = path(),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Puts the peer TLS files and the admin access into `cfg` (flags win over the file).
pub fn apply(
    args: &PeerTlsArgs,
    file: PeerTlsSettings,
    cfg: &mut NodeConfig,
) -> Result<(), ConfigError> {
    let cert = args.peer_tls_cert.clone().or(file.cert);
    let key = args.peer_tls_key.clone().or(file.key);
    let ca = args.peer_tls_ca.clone().or(file.ca);
    cfg.peer_tls = match (cert, key, ca) {
        (None, None, None) => None,
        (Some(cert), Some(key), Some(ca)) => Some(PeerTlsFiles { cert, key, ca }),
        (cert, key, ca) => {
            let missing: Vec<&str> = [
                (cert.is_none(), "--peer-tls-cert"),
                (key.is_none(), "--peer-tls-key"),
                (ca.is_none(), "--peer-tls-ca"),
            ]
            .into_iter()
            .filter_map(|(absent, flag)| absent.then_some(flag))
            .collect();
            return Err(ConfigError::Invalid(format!(
                "mutual TLS between peers needs --peer-tls-cert, --peer-tls-key and \
                 --peer-tls-ca together; missing {}",
                missing.join(", ")
            )));
        }
    };
    cfg.admin_tls = args.admin_tls || file.admin_tls.unwrap_or(false);
    if cfg.admin_tls && cfg.peer_tls.is_none() {
        return Err(ConfigError::Invalid(
            "--admin-tls serves the admin endpoints with the peer certificate: give \
             --peer-tls-cert, --peer-tls-key and --peer-tls-ca too"
                .into(),
        ));
    }
    let token = match (&args.admin_token, &args.admin_token_file) {
        (Some(token), _) => Some(AdminToken::new(token)),
        (None, Some(path)) => Some(AdminToken::from_file(path)),
        (None, None) => match (file.admin_token, file.admin_token_file) {
            (Some(token), _) => Some(AdminToken::new(&token)),
            (None, Some(path)) => Some(AdminToken::from_file(&path)),
            (None, None) => None,
        },
    };
    cfg.admin_token = token.transpose().map_err(ConfigError::Invalid)?;
    if (cfg.admin_tls || cfg.admin_token.is_some()) && cfg.admin_addr.is_none() {
        return Err(ConfigError::Invalid(
            "--admin-tls and --admin-token protect the admin endpoints: give --admin-addr too"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NodeConfig {
        let peers = [(1, "h:1".to_string())].into_iter().collect();
        let mut cfg = NodeConfig::new(1, peers, PathBuf::from("/tmp/x"));
        cfg.admin_addr = Some("h:3".into());
        cfg
    }

    #[test]
    fn the_three_files_come_together_and_flags_win_over_the_file() {
        let mut file = PeerTlsSettings::default();
        assert_eq!(file.set("peer-tls-cert", "f.pem"), Ok(true));
        assert_eq!(file.set("peer_tls_key", "f-key.pem"), Ok(true));
        assert_eq!(file.set("peer-tls-ca", "ca.pem"), Ok(true));
        assert_eq!(file.set("admin-tls", "yes"), Ok(true));
        assert_eq!(file.set("admin-token", "t"), Ok(true));
        assert_eq!(file.set("tick-ms", "5"), Ok(false));
        assert!(file.set("admin-tls", "maybe").is_err());
        let args = PeerTlsArgs {
            peer_tls_cert: Some("flag.pem".into()),
            ..Default::default()
        };
        let mut c = cfg();
        apply(&args, file.clone(), &mut c).unwrap();
        let files = c.peer_tls.clone().unwrap();
        assert_eq!(files.cert, PathBuf::from("flag.pem"));
        assert_eq!(files.ca, PathBuf::from("ca.pem"));
        assert!(c.admin_tls);
        assert!(c.admin_token.unwrap().authorizes(Some("Bearer t")));

        let half = PeerTlsArgs {
            peer_tls_cert: Some("a.pem".into()),
            peer_tls_ca: Some("ca.pem".into()),
            ..Default::default()
        };
        let e = apply(&half, PeerTlsSettings::default(), &mut cfg()).unwrap_err();
        assert!(e.to_string().contains("missing --peer-tls-key"), "{e}");
        let admin_only = PeerTlsArgs {
            admin_tls: true,
            ..Default::default()
        };
        let e = apply(&admin_only, PeerTlsSettings::default(), &mut cfg()).unwrap_err();
        assert!(e.to_string().contains("--peer-tls-cert"), "{e}");
    }
}
