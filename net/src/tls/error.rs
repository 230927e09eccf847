//! Why a certificate, key or CA bundle could not be used, in words that name the file and what
//! to do about it.

use std::error::Error;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// What a PEM file was expected to hold (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemKind {
    /// A certificate chain: the node's certificate first, then any intermediates.
    CertificateChain,
    /// A private key (PKCS#8, PKCS#1 or SEC1).
    PrivateKey,
    /// One or more CA certificates to trust.
    CaBundle,
}

impl fmt::Display for PemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PemKind::CertificateChain => "certificate",
            PemKind::PrivateKey => "private key",
            PemKind::CaBundle => "CA certificate",
        })
    }
}

/// Why TLS could not be set up from the files given.
#[derive(Debug)]
pub enum TlsError {
    /// The file could not be read (missing, unreadable).
    Read {
        kind: PemKind,
        path: PathBuf,
        source: io::Error,
    },
    /// The file is not valid PEM.
    NotPem {
        kind: PemKind,
        path: PathBuf,
        detail: String,
    },
    /// The file is PEM but holds nothing of the kind wanted (e.g. a key file given as the
    /// certificate).
    Missing { kind: PemKind, path: PathBuf },
    /// A certificate in the file is not a certificate X.509 parsers accept.
    Malformed { path: PathBuf, detail: String },
    /// A certificate's validity period ended.
    Expired {
        path: PathBuf,
        subject: String,
        not_after: String,
    },
    /// A certificate's validity period has not begun.
    NotYetValid {
        path: PathBuf,
        subject: String,
        not_before: String,
    },
    /// The private key is not the one the certificate was issued for.
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// The certificate does not chain to the CA it must be signed by.
    NotSignedByCa {
        cert: PathBuf,
        ca: PathBuf,
        detail: String,
    },
    /// A node's peer certificate does not name the member the node is (its peers would refuse
    /// every frame from it).
    NotThisMember {
        cert: PathBuf,
        expected: String,
        names: Vec<String>,
    },
    /// rustls refused the configuration built from otherwise valid files.
    Config { detail: String },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { kind, path, source } if source.kind() == io::ErrorKind::NotFound => {
                write!(f, "{kind} file {} does not exist", path.display())
            }
            TlsError::Read { kind, path, source } => {
                write!(f, "cannot read {kind} file {}: {source}", path.display())
            }
            TlsError::NotPem { kind, path, detail } => write!(
                f,
                "{kind} file {} is not valid PEM ({detail}); expected -----BEGIN ...----- blocks",
                path.display()
            ),
            TlsError::Missing { kind, path } => {
                let wanted = match kind {
                    PemKind::PrivateKey => "PRIVATE KEY",
                    PemKind::CertificateChain | PemKind::CaBundle => "CERTIFICATE",
                };
                write!(
                    f,
                    "{kind} file {} holds no {wanted} block (is it the right file?)",
                    path.display()
                )
            }
            TlsError::Malformed { path, detail } => {
                write!(
                    f,
                    "{} holds a malformed certificate: {detail}",
                    path.display()
                )
            }
            TlsError::Expired {
                path,
                subject,
                not_after,
            } => write!(
                f,
                "certificate {subject} in {} expired on {not_after}; issue a new one",
                path.display()
            ),
            TlsError::NotYetValid {
                path,
                subject,
                not_before,
            } => write!(
                f,
                "certificate {subject} in {} is not valid before {not_before} (check the clock)",
                path.display()
            ),
            TlsError::KeyMismatch { cert, key } => write!(
                f,
                "private key {} does not belong to certificate {}",
                key.display(),
                cert.display()
            ),
            TlsError::NotSignedByCa { cert, ca, detail } => write!(
                f,
                "certificate {} is not signed by the CA in {} ({detail})",
                cert.display(),
                ca.display()
            ),
            TlsError::NotThisMember {
                cert,
                expected,
                names,
            } => write!(
                f,
                "certificate {} does not name this node ({expected}); it names {}: the peers \
                 would refuse this node (is it another node's certificate? `kvstore certs` \
                 makes node N's as nodeN.pem)",
                cert.display(),
                if names.is_empty() {
                    "no DNS name".to_string()
                } else {
                    names.join(", ")
                }
            ),
            TlsError::Config { detail } => write!(f, "TLS configuration refused: {detail}"),
        }
    }
}

impl Error for TlsError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            TlsError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}
