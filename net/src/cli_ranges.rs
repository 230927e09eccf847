//! `kvstore ranges` and `kvstore split`: the key ranges (issue 16) through the client port's
//! `RAFT.RANGES` and `RAFT.SPLIT` ([`crate::server_ranges`]).

use clap::Args;
use kv::ranges::show_key;

use crate::cli::ServersArg;
use crate::client::ClientConfig;
use crate::error::CliError;
use crate::server_ranges::RangeStatus;

/// When ranges split by themselves.
#[derive(Args, Debug, Clone, Default)]
pub struct RangeArgs {
    /// Split a range in two at its middle key once it holds more than this many keys (checked
    /// every 2 s by the range's leader). Off by default: a node hosting several ranges takes
    /// no snapshots and does not compact its log yet (docs/OPERATIONS.md)
    #[arg(long, value_name = "N")]
    pub range_max_keys: Option<u64>,
}

#[derive(Args, Debug)]
pub struct SplitArgs {
    /// The first key of the new range: the range owning it is split there, and keeps the keys
    /// before it.
    pub key: String,
    #[command(flatten)]
    pub servers: ServersArg,
}

/// A range's id, bounds (start included, end excluded; keys printed as quoted, escaped text)
/// and epoch.
pub fn format_range_bounds(range: &RangeStatus) -> String {
    let end = range.end.as_deref().map_or("none".to_string(), show_key);
    format!(
        "{} start={} end={} epoch={}",
        range.id,
        show_key(&range.start),
        end,
        range.epoch
    )
}

/// One line per range: its id first, then its bounds, epoch, leader and keys.
pub fn format_range_line(range: &RangeStatus) -> String {
    let leader = range.leader.map_or("none".to_string(), |l| l.to_string());
    let keys = range.keys.map_or("?".to_string(), |k| k.to_string());
    format!(
        "{} leader={} keys={}",
        format_range_bounds(range),
        leader,
        keys
    )
}

pub async fn run_ranges(servers: ServersArg) -> Result<(), CliError> {
    let ranges = servers.client(ClientConfig::default())?.ranges().await?;
    for range in &ranges {
        println!("{}", format_range_line(range));
    }
    Ok(())
}

pub async fn run_split(args: SplitArgs) -> Result<(), CliError> {
    let mut client = args.servers.client(ClientConfig {
        max_attempts: 50,
        ..Default::default()
    })?;
    let [left, right] = client.split(args.key.as_bytes()).await?;
    println!("{}", format_range_bounds(&left));
    println!("{}", format_range_bounds(&right));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_range_line_starts_with_its_id_and_names_every_field() {
        let range = RangeStatus {
            id: 7,
            start: Bytes::from_static(b"m"),
            end: None,
            epoch: 2,
            leader: Some(3),
            keys: Some(41),
        };
        assert_eq!(
            format_range_line(&range),
            r#"7 start="m" end=none epoch=2 leader=3 keys=41"#
        );
        let first = RangeStatus {
            id: 1,
            start: Bytes::new(),
            end: Some(Bytes::from_static(b"m\n")),
            epoch: 2,
            leader: None,
            keys: None,
        };
        assert_eq!(
            format_range_line(&first),
            r#"1 start="" end="m\n" epoch=2 leader=none keys=?"#
        );
        assert_eq!(
            format_range_bounds(&first),
            r#"1 start="" end="m\n" epoch=2"#
        );
    }
}
