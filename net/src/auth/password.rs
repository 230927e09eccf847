//! Password hashes and their checks.
//!
//! A users file holds argon2id hashes as PHC strings (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`):
//! a slow, memory-hard function, so that a copied users file does not give the passwords away
//! to a cheap offline search, as a fast hash (Redis's SHA-256) would. Checking one costs tens of
//! milliseconds of one core, so it runs on a blocking thread, and failures are rate-limited per
//! connection ([`super::limiter`]).
//!
//! `--requirepass` is held in memory anyway; it is kept as its SHA-256 digest and an attempt is
//! compared digest to digest in constant time, so a login costs microseconds.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A stored password.
#[derive(Clone)]
pub enum Secret {
    /// An argon2id PHC string from a users file, checked to parse when the file was read.
    Argon2(String),
    /// The SHA-256 digest of `--requirepass`.
    Digest([u8; 32]),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a hash: it is what an offline search starts from.
        match self {
            Secret::Argon2(_) => write!(f, "Secret::Argon2(..)"),
            Secret::Digest(_) => write!(f, "Secret::Digest(..)"),
        }
    }
}

impl Secret {
    /// The secret `--requirepass PASSWORD` sets.
    pub fn from_plain(password: &[u8]) -> Self {
        Secret::Digest(Sha256::digest(password).into())
    }

    /// An argon2id PHC string, checked: an error says what is wrong with it.
    pub fn from_phc(text: &str) -> Result<Self, String> {
        let parsed = PasswordHash::new(text)
            .map_err(|e| format!("`{}` is not an argon2id hash ({e})", shorten(text)))?;
        if parsed.algorithm.as_str() != "argon2id" {
            return Err(format!(
                "the hash uses `{}`; only argon2id hashes are accepted",
                parsed.algorithm
            ));
        }
        if parsed.hash.is_none() || parsed.salt.is_none() {
            return Err("the argon2id hash has no salt or no hash value".into());
        }
        // The parameters must be ones this build can run (a hostile file could ask for
        // gigabytes of memory per check).
        let params = argon2::Params::try_from(&parsed)
            .map_err(|e| format!("the argon2id parameters are not usable: {e}"))?;
        if params.m_cost() > MAX_MEMORY_KIB || params.t_cost() > MAX_PASSES {
            return Err(format!(
                "the argon2id parameters ask for too much work (m={} KiB, t={}; at most m={MAX_MEMORY_KIB}, t={MAX_PASSES})",
                params.m_cost(),
                params.t_cost()
            ));
        }
        Ok(Secret::Argon2(text.to_string()))
    }

    /// Whether `password` is this secret. Slow for an argon2id hash: call it off the async
    /// threads ([`tokio::task::spawn_blocking`]).
    pub fn matches(&self, password: &[u8]) -> bool {
        match self {
            Secret::Digest(digest) => {
                let attempt: [u8; 32] = Sha256::digest(password).into();
                attempt.ct_eq(digest).into()
            }
            Secret::Argon2(phc) => match PasswordHash::new(phc) {
                // The comparison inside the verifier is constant-time.
                Ok(hash) => Argon2::default().verify_password(password, &hash).is_ok(),
                Err(_) => false,
            },
        }
    }

    /// Whether checking takes long enough to be run on a blocking thread.
    pub fn is_slow(&self) -> bool {
        matches!(self, Secret::Argon2(_))
    }
}

/// Largest argon2 memory cost a users file may ask for per check (256 MiB).
const MAX_MEMORY_KIB: u32 = 256 * 1024;
/// Largest number of argon2 passes a users file may ask for.
const MAX_PASSES: u32 = 16;

/// A new argon2id hash of `password`, with the crate's default parameters (19 MiB, 2 passes:
/// OWASP's recommendation) and a random 16-byte salt.
pub fn hash(password: &[u8]) -> Result<String, String> {
    use rand::RngCore;
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// The start of a long token, for an error message.
fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(24).collect();
    if short.len() < text.len() {
        short.push_str("...");
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_matches_its_password_only() {
        let phc = hash(b"correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        let secret = Secret::from_phc(&phc).unwrap();
        assert!(secret.matches(b"correct horse"));
        assert!(!secret.matches(b"correct horsf"));
        assert!(!secret.matches(b""));
        assert_ne!(
            hash(b"correct horse").unwrap(),
            phc,
            "a new salt every time"
        );
    }

    #[test]
    fn requirepass_is_compared_by_digest() {
        let secret = Secret::from_plain(b"s3cret");
        assert!(secret.matches(b"s3cret"));
        assert!(!secret.matches(b"s3cre"));
        assert!(!secret.matches(b"s3cret "));
        assert!(!secret.is_slow());
        assert_eq!(format!("{secret:?}"), "Secret::Digest(..)");
    }

    #[test]
    fn other_hashes_and_costly_parameters_are_refused() {
        assert!(Secret::from_phc("not a hash").is_err());
        assert!(
            Secret::from_phc("$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")
                .unwrap_err()
                .contains("only argon2id")
        );
        let greedy = "$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        assert!(Secret::from_phc(greedy)
            .unwrap_err()
            .contains("too much work"));
    }
}
