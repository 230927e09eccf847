//! Where the `kvstore` binary's logs go and what they hold: standard error, filtered by
//! `KVSTORE_LOG` or else `RUST_LOG` (the usual `tracing` filter syntax, for example
//! `info,raft_core=debug`), as text for people or as one JSON object per line for log
//! collectors (`--log-format json`).

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// The filter when neither variable is set: warnings, and the node's own lifecycle lines.
pub const DEFAULT_FILTER: &str = "warn,net=info";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, fields.
    Json,
}

/// The filter text and where it came from: `KVSTORE_LOG`, then `RUST_LOG`, then the default.
pub fn filter_source(
    kvstore_log: Option<String>,
    rust_log: Option<String>,
) -> (String, &'static str) {
    match (kvstore_log, rust_log) {
        (Some(f), _) => (f, "KVSTORE_LOG"),
        (None, Some(f)) => (f, "RUST_LOG"),
        (None, None) => (DEFAULT_FILTER.to_string(), "the default"),
    }
}

/// Installs the subscriber. A filter that does not parse is reported and the default used.
pub fn init(format: LogFormat) {
    let (text, source) = filter_source(
        std::env::var("KVSTORE_LOG").ok(),
        std::env::var("RUST_LOG").ok(),
    );
    let (filter, refused) = match EnvFilter::try_new(&text) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new(DEFAULT_FILTER), Some(e)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().init(),
    }
    if let Some(e) = refused {
        tracing::warn!(
            "the log filter `{text}` from {source} is not valid ({e}); using `{DEFAULT_FILTER}`"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvstore_log_wins_then_rust_log_then_the_default() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            filter_source(s("debug"), s("trace")),
            ("debug".to_string(), "KVSTORE_LOG")
        );
        assert_eq!(
            filter_source(None, s("trace")),
            ("trace".to_string(), "RUST_LOG")
        );
        assert_eq!(
            filter_source(None, None),
            (DEFAULT_FILTER.to_string(), "the default")
        );
    }
}
