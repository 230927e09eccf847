//! Making a CA and node certificates (with rcgen), for `kvstore certs` and `kvstore cluster
//! --tls`, and for tests. A node certificate names its member with the DNS name
//! [`node_dns_name`], carries `localhost`, `127.0.0.1` and the node's host too, and is valid
//! for both server and client authentication, so one certificate serves the client port and
//! the peer port in both directions.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

use super::error::TlsError;

/// The DNS name a member's certificate carries, which peers check against the id it claims.
pub fn node_dns_name(id: u64) -> String {
    format!("node-{id}.kvstore.internal")
}

/// How long generated certificates are valid: CA ten years, nodes five.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
pub const NODE_VALIDITY: Duration = Duration::from_secs(5 * 365 * 24 * 3600);

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct PemPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate authority able to sign certificates.
pub struct CertAuthority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl CertAuthority {
    /// A new self-signed CA named `common_name`, valid from an hour ago (clock skew between
    /// machines) for [`CA_VALIDITY`].
    pub fn generate(common_name: &str) -> Result<Self, TlsError> {
        Self::generate_valid(common_name, valid_from_now(CA_VALIDITY))
    }

    /// A CA valid between the two times given (tests make expired ones).
    pub fn generate_valid(
        common_name: &str,
        (not_before, not_after): (OffsetDateTime, OffsetDateTime),
    ) -> Result<Self, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let cert = params.self_signed(&key).map_err(rcgen_error)?;
        Ok(CertAuthority { cert, key })
    }

    /// A CA made earlier, from its certificate and key (PEM), to sign more certificates.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(rcgen_error)?;
        let params = CertificateParams::from_ca_cert_pem(cert_pem).map_err(rcgen_error)?;
        // Signing the same name and key again gives an issuer equal to the original for
        // every certificate it signs.
        let cert = params.self_signed(&key).map_err(rcgen_error)?;
        Ok(CertAuthority { cert, key })
    }

    /// The CA's certificate and key, PEM.
    pub fn pem(&self) -> PemPair {
        PemPair {
            cert_pem: self.cert.pem(),
            key_pem: self.key.serialize_pem(),
        }
    }

    /// A certificate for member `id` on `host` (a DNS name or an IP address), valid for
    /// [`NODE_VALIDITY`]: see the module's description for its names and usages.
    pub fn issue_node(&self, id: u64, host: &str) -> Result<PemPair, TlsError> {
        self.issue(
            &format!("kvstore node {id}"),
            &node_names(id, host),
            valid_from_now(NODE_VALIDITY),
        )
    }

    /// A certificate named `common_name` with subject alternative names `names` (IP
    /// addresses where they parse as one), for server and client authentication, valid between
    /// the two times given.
    pub fn issue(
        &self,
        common_name: &str,
        names: &[String],
        (not_before, not_after): (OffsetDateTime, OffsetDateTime),
    ) -> Result<PemPair, TlsError> {
        let mut params = CertificateParams::new(names.to_vec()).map_err(rcgen_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(rcgen_error)?;
        Ok(PemPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The subject alternative names of member `id`'s certificate on `host`.
pub fn node_names(id: u64, host: &str) -> Vec<String> {
    let mut names = vec![
        node_dns_name(id),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ];
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if !host.is_empty() && !names.iter().any(|n| n == host) {
        names.push(host.to_string());
    }
    names
}

/// From an hour ago (clock skew) to `validity` from now.
pub fn valid_from_now(validity: Duration) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (
        now - time::Duration::hours(1),
        now + time::Duration::try_from(validity).unwrap_or(time::Duration::days(365)),
    )
}

fn rcgen_error(e: rcgen::Error) -> TlsError {
    TlsError::Config {
        detail: format!("generating a certificate: {e}"),
    }
}
