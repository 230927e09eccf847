//! `--read-mode` and `--max-clock-drift`, shared by `kvstore serve` and `kvstore cluster`.

use clap::Args;
use raft_core::ReadMode;

use crate::error::ConfigError;
use crate::node::NodeConfig;

/// The drift bound a lease assumes unless told: one node's tick may last up to 1.5 times
/// another's. Far beyond what quartz clocks drift; what it mostly covers is a timer firing late.
pub const DEFAULT_MAX_CLOCK_DRIFT: f64 = 0.5;

/// How a leader confirms linearizable reads.
#[derive(Args, Debug, Clone, Default)]
pub struct ReadModeArgs {
    /// How the leader confirms a linearizable read: `read-index` (a heartbeat round a quorum
    /// acknowledges, one per batch of reads) or `lease` (at once while its lease, renewed by
    /// every acknowledged heartbeat, holds; assumes clocks drift apart by no more than
    /// --max-clock-drift). Give every node the same [default: read-index]
    #[arg(long, value_name = "MODE")]
    pub read_mode: Option<String>,
    /// With --read-mode lease: how much longer one node's tick may last than another's, as a
    /// ratio (0.5: up to 1.5 times as long); the lease is shortened to match [default: 0.5]
    #[arg(long, value_name = "RATIO")]
    pub max_clock_drift: Option<f64>,
}

/// The read mode `mode` and `drift` ask for, checked against the node's timing in `cfg`.
pub fn read_mode(
    mode: Option<&str>,
    drift: Option<f64>,
    cfg: &NodeConfig,
) -> Result<ReadMode, ConfigError> {
    let invalid = ConfigError::Invalid;
    let mode = match mode.unwrap_or("read-index") {
        "read-index" if drift.is_some() => {
            return Err(invalid("--max-clock-drift needs --read-mode lease".into()))
        }
        "read-index" => return Ok(ReadMode::ReadIndex),
        "lease" => ReadMode::Lease {
            max_clock_drift: drift.unwrap_or(DEFAULT_MAX_CLOCK_DRIFT),
        },
        other => {
            return Err(invalid(format!(
                "--read-mode is read-index or lease, not `{other}`"
            )))
        }
    };
    let mut core = raft_core::Config::new(cfg.id, vec![cfg.id]);
    core.election_ticks = cfg.election_ticks;
    core.heartbeat_ticks = cfg.heartbeat_ticks;
    core.read_mode = mode;
    core.validate()
        .map_err(|e| invalid(format!("--read-mode lease: {e}")))?;
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_mode_is_read_index_unless_a_lease_is_asked_for_and_fits_the_timing() {
        let mut cfg = NodeConfig::new(1, Default::default(), "/tmp/x".into());
        assert_eq!(read_mode(None, None, &cfg).unwrap(), ReadMode::ReadIndex);
        assert_eq!(
            read_mode(Some("lease"), None, &cfg).unwrap(),
            ReadMode::Lease {
                max_clock_drift: 0.5
            }
        );
        assert!(read_mode(Some("read-index"), Some(0.2), &cfg).is_err());
        assert!(read_mode(Some("fast"), None, &cfg).is_err());
        assert!(read_mode(Some("lease"), Some(3.0), &cfg).is_err());
        cfg.election_ticks = 2;
        let err = read_mode(Some("lease"), None, &cfg)
            .unwrap_err()
            .to_string();
        assert!(err.contains("must exceed heartbeat_ticks"), "{err}");
    }
}
