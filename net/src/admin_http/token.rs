//! The admin endpoint's bearer token (`--admin-token`, `--admin-token-file`).

use std::path::Path;

use ring::digest::{digest, SHA256};
use subtle::ConstantTimeEq;

/// A secret a request must present as `Authorization: Bearer TOKEN`. Kept as its SHA-256
/// digest: comparing digests in constant time takes as long whatever the guess and its length.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// A token from its text; empty or blank is refused (every request would carry it).
    pub fn new(token: &str) -> Result<Self, String> {
        let token = token.trim();
        if token.is_empty() {
            return Err("the admin token is empty".into());
        }
        Ok(Self {
            digest: sha256(token.as_bytes()),
        })
    }

    /// The token in `path`: its first line, without surrounding whitespace.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the admin token file {}: {e}", path.display()))?;
        Self::new(text.lines().next().unwrap_or(""))
            .map_err(|e| format!("{e} (file {})", path.display()))
    }

    /// Whether an `Authorization` header value carries this token.
    pub fn authorizes(&self, authorization: Option<&str>) -> bool {
        let presented = authorization
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .unwrap_or("");
        bool::from(sha256(presented.as_bytes()).ct_eq(&self.digest)) && !presented.is_empty()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_as_a_bearer_is_accepted() {
        let token = AdminToken::new("s3cret-token").unwrap();
        assert!(token.authorizes(Some("Bearer s3cret-token")));
        for wrong in [
            None,
            Some(""),
            Some("Bearer "),
            Some("s3cret-token"),
            Some("Basic s3cret-token"),
            Some("Bearer s3cret-toke"),
            Some("Bearer s3cret-token2"),
            Some("Bearer S3CRET-TOKEN"),
        ] {
            assert!(!token.authorizes(wrong), "{wrong:?}");
        }
        assert!(AdminToken::new("  ").is_err());
        assert_eq!(format!("{token:?}"), "AdminToken(..)", "never printed");
    }
}
