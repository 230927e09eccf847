//! Reading certificates, private keys and CA bundles from PEM files, and the checks that turn
//! a wrong file into a clear error at start rather than a failed handshake later: the file
//! exists and is PEM, holds what it should, its certificates are within their validity period,
//! the key belongs to the certificate, and (where a CA is given) the CA signed it.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::sign::CertifiedKey;

use super::error::{PemKind, TlsError};
use super::provider;

/// A certificate chain (the node's certificate first) with its private key, checked: the key
/// belongs to the first certificate and every certificate is within its validity period.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Reads `cert` (a chain) and `key`, and checks that they go together and are valid now.
pub fn load_identity(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    let chain = load_certificates(cert, PemKind::CertificateChain)?;
    check_validity(cert, &chain, SystemTime::now())?;
    let key_der = load_private_key(key)?;
    check_key_matches(cert, key, &chain, &key_der)?;
    Ok(Identity {
        chain,
        key: key_der,
    })
}

/// Reads every `CERTIFICATE` block of `path`; at least one must be there. `kind` is what the
/// file is for, in error messages.
pub fn load_certificates(
    path: &Path,
    kind: PemKind,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path, kind)?;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        certs.push(item.map_err(|e| not_pem(path, kind, e))?);
    }
    if certs.is_empty() {
        return Err(TlsError::Missing {
            kind,
            path: path.to_path_buf(),
        });
    }
    for cert in &certs {
        parse(path, cert)?;
    }
    Ok(certs)
}

/// Reads a CA bundle (one or more certificates to trust), checking each is valid now.
pub fn load_ca_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = load_certificates(path, PemKind::CaBundle)?;
    check_validity(path, &certs, SystemTime::now())?;
    Ok(certs)
}

/// The CA bundle at `path` as a rustls root store.
pub fn load_root_store(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_ca_bundle(path)? {
        roots.add(cert).map_err(|e| TlsError::Malformed {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of `path`.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path, PemKind::PrivateKey)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Missing {
            kind: PemKind::PrivateKey,
            path: path.to_path_buf(),
        },
        e => not_pem(path, PemKind::PrivateKey, e),
    })
}

/// Fails if any certificate of `certs` (read from `path`) is outside its validity period at
/// `now`.
pub fn check_validity(
    path: &Path,
    certs: &[CertificateDer<'_>],
    now: SystemTime,
) -> Result<(), TlsError> {
    let now = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    };
    for der in certs {
        let cert = parse(path, der)?;
        let validity = cert.validity();
        if now > validity.not_after.timestamp() {
            return Err(TlsError::Expired {
                path: path.to_path_buf(),
                subject: cert.subject().to_string(),
                not_after: validity.not_after.to_string(),
            });
        }
        if now < validity.not_before.timestamp() {
            return Err(TlsError::NotYetValid {
                path: path.to_path_buf(),
                subject: cert.subject().to_string(),
                not_before: validity.not_before.to_string(),
            });
        }
    }
    Ok(())
}

/// Fails unless `key` is the private key of the first certificate of `chain`.
pub fn check_key_matches(
    cert_path: &Path,
    key_path: &Path,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<(), TlsError> {
    let signing_key = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| TlsError::NotPem {
            kind: PemKind::PrivateKey,
            path: key_path.to_path_buf(),
            detail: format!("unsupported key: {e}"),
        })?;
    let certified = CertifiedKey::new(chain.to_vec(), signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(()),
        // The key type cannot say which public key it has: the handshake will tell.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(_) => Err(TlsError::KeyMismatch {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
        }),
    }
}

/// Fails unless the first certificate of `chain` (the rest are intermediates) chains up to a
/// certificate of `ca`, with valid signatures, now. Any extended key usage is accepted: this
/// asks only "did this CA sign it".
pub fn check_signed_by(
    cert_path: &Path,
    chain: &[CertificateDer<'static>],
    ca_path: &Path,
    ca: &[CertificateDer<'static>],
) -> Result<(), TlsError> {
    let refused = |detail: String| TlsError::NotSignedByCa {
        cert: cert_path.to_path_buf(),
        ca: ca_path.to_path_buf(),
        detail,
    };
    let Some(leaf) = chain.first() else {
        return Err(refused("the chain is empty".into()));
    };
    let anchors = ca
        .iter()
        .map(|c| webpki::anchor_from_trusted_cert(c).map(|a| a.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| refused(format!("the CA certificate is unusable: {e}")))?;
    let end_entity =
        webpki::EndEntityCert::try_from(leaf).map_err(|e| refused(format!("unreadable: {e}")))?;
    let provider = provider();
    end_entity
        .verify_for_usage(
            provider.signature_verification_algorithms.all,
            &anchors,
            &chain[1..],
            UnixTime::now(),
            AnyKeyUsage,
            None,
            None,
        )
        .map(|_| ())
        .map_err(|e| {
            refused(match e {
                webpki::Error::UnknownIssuer => "it was issued by another CA".into(),
                e => e.to_string(),
            })
        })
}

/// The DNS names in a certificate's subject alternative names (empty if it has none or cannot
/// be parsed). The peer port checks a peer's certificate names the member it claims to be.
pub fn certificate_dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
            _ => None,
        })
        .collect()
}

struct AnyKeyUsage;

impl webpki::ExtendedKeyUsageValidator for AnyKeyUsage {
    fn validate(&self, _: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

fn read(path: &Path, kind: PemKind) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        kind,
        path: path.to_path_buf(),
        source,
    })
}

fn not_pem(path: &Path, kind: PemKind, e: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::NotPem {
        kind,
        path: path.to_path_buf(),
        detail: format!("{e:?}"),
    }
}

fn parse<'a>(
    path: &Path,
    der: &'a CertificateDer<'_>,
) -> Result<x509_parser::certificate::X509Certificate<'a>, TlsError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| TlsError::Malformed {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
}
