//! A configuration that can be read again from its files while connections use it: new
//! handshakes take the current one, open connections keep theirs. A reload that fails (a
//! missing or half-written file, a key that does not match) keeps the configuration in force
//! and says why, so an operator's mistake never takes a port down.

use std::sync::{Arc, RwLock, Weak};

use super::error::TlsError;

type Loader<T> = dyn Fn() -> Result<Arc<T>, TlsError> + Send + Sync;

struct Inner<T> {
    /// What this is, in log lines ("client port certificate").
    what: String,
    load: Box<Loader<T>>,
    current: RwLock<Arc<T>>,
}

/// A configuration (`rustls::ServerConfig`, `rustls::ClientConfig`) with the means to read it
/// again. Cloning shares it.
pub struct Reloadable<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Reloadable<T> {
    fn clone(&self) -> Self {
        Reloadable {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Send + Sync + 'static> Reloadable<T> {
    /// Loads the configuration for the first time (an error here should stop the start) and
    /// keeps `load` for reloads. `what` names it in log lines.
    pub fn load(
        what: impl Into<String>,
        load: impl Fn() -> Result<Arc<T>, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let first = load()?;
        Ok(Reloadable {
            inner: Arc::new(Inner {
                what: what.into(),
                load: Box::new(load),
                current: RwLock::new(first),
            }),
        })
    }

    /// A configuration that never changes (tests, or files known good).
    pub fn fixed(config: Arc<T>) -> Self {
        let kept = config.clone();
        Reloadable {
            inner: Arc::new(Inner {
                what: "fixed TLS configuration".into(),
                load: Box::new(move || Ok(kept.clone())),
                current: RwLock::new(config),
            }),
        }
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<T> {
        self.inner
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Reads the files again. On success the new configuration is in force for the next
    /// handshakes; on failure the old one stays and the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = (self.inner.load)()?;
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh;
        Ok(())
    }

    /// Reloads on every SIGHUP the process receives, logging the outcome, for as long as a
    /// clone of this holder lives. Needs a tokio runtime; on platforms without SIGHUP it does
    /// nothing.
    pub fn reload_on_sighup(&self) {
        let weak = Arc::downgrade(&self.inner);
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::hangup()) {
                Ok(hangups) => {
                    tokio::spawn(reload_on_each(hangups, weak));
                }
                Err(e) => tracing::warn!(error = %e, what = %self.inner.what,
                    "cannot listen for SIGHUP: TLS files will not be reloaded"),
            }
        }
        #[cfg(not(unix))]
        drop(weak);
    }
}

#[cfg(unix)]
async fn reload_on_each<T: Send + Sync + 'static>(
    mut hangups: tokio::signal::unix::Signal,
    weak: Weak<Inner<T>>,
) {
    while hangups.recv().await.is_some() {
        let Some(inner) = weak.upgrade() else { return };
        let holder = Reloadable { inner };
        match holder.reload() {
            Ok(()) => tracing::info!(what = %holder.inner.what, "SIGHUP: TLS files reloaded"),
            Err(e) => tracing::warn!(what = %holder.inner.what, error = %e,
                "SIGHUP: TLS files not reloaded, the previous ones stay in force"),
        }
    }
}
