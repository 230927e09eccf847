//! `kvstore backup` and `kvstore restore`: an online backup of a cluster into one file, its
//! check, and the seeding of a new cluster's data directories from it (`kv::backup` has the
//! file's layout and the restore's steps, `server_backup` the serving side).
//!
//! A backup is asked of the servers in the order given; one that cannot serve it before the
//! first chunk (down, no leader, still loading) is skipped. A stream that breaks once begun
//! fails the backup, leaving no file behind: the file is written as `FILE.partial`, synced and
//! renamed to `FILE` only once it is complete and checked.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use kv::backup::restore::{restore_into, RestorePlan};
use kv::backup::{BackupReader, BackupSummary, BackupWriter};
use kv::identity::DEFAULT_CLUSTER_TOKEN;
use kv::{ClusterIdText, MemberAddrs, MemberTable};

use crate::cli::{new_incarnation, parse_peers, ServersArg};
use crate::cli_data::Outcome;
use crate::error::{CliError, ConfigError};
use crate::resp::{encode_request, Limits, Reply, ReplyParser};
use crate::server_backup::BACKUP_COMMAND;
use crate::tls::MaybeTlsNet;
use crate::transport::Net;

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Write the backup to FILE (as FILE.partial until it is complete and checked).
    #[arg(long, value_name = "FILE", required_unless_present = "verify")]
    pub out: Option<PathBuf>,
    /// Check a backup file and print what it holds, instead of taking a backup.
    #[arg(long, value_name = "FILE", conflicts_with = "out")]
    pub verify: Option<PathBuf>,
    #[command(flatten)]
    pub servers: ServersArg,
    /// Give up on a server after this many seconds without progress (taking the image of a
    /// large cluster may take a while before the first byte).
    #[arg(long = "timeout", value_name = "SECONDS", default_value_t = 60)]
    pub timeout_seconds: u64,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup file (from `kvstore backup`).
    pub file: PathBuf,
    /// The new node's data directory; it must be absent or empty.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// This node's id in the new cluster (one of --peers).
    #[arg(long)]
    pub id: u64,
    /// Every member of the new cluster and its peer address, 1=HOST:PORT,2=HOST:PORT,... (as
    /// `kvstore serve --peers`); the same on every node restored.
    #[arg(long)]
    pub peers: String,
    /// Every member's client address, 1=HOST:PORT,... (as `kvstore serve --client-addrs`).
    #[arg(long)]
    pub client_addrs: Option<String>,
    /// Names the new cluster: with the backup and the members' ids it makes the new cluster
    /// id, so give the same token to every node of one restored cluster and another token to
    /// restore the same backup into a second cluster [default: kvstore]
    #[arg(long)]
    pub cluster_token: Option<String>,
}

/// Why one server's attempt failed.
enum Attempt {
    /// Nothing was received: another server may serve the backup.
    Refused(String),
    /// The stream broke or was invalid once begun, or the file cannot be written.
    Broken(String),
}

fn backup_error(why: String) -> CliError {
    CliError::Backup {
        why,
        no_server: false,
    }
}

pub async fn backup(args: BackupArgs) -> Result<Outcome, CliError> {
    if let Some(path) = &args.verify {
        let summary = verify(path)?;
        println!("{}: a complete kvstore backup", path.display());
        print_summary(&summary);
        return Ok(Outcome::Done);
    }
    let Some(out) = args.out else {
        return Err(CliError::Usage("give --out FILE, or --verify FILE"));
    };
    // Plain TCP or TLS as the flags say; a bad --cacert fails here, before any server is tried.
    let net = args.servers.tls.net()?;
    let partial = partial_path(&out);
    let idle = Duration::from_secs(args.timeout_seconds.max(1));
    let mut refusals = Vec::new();
    for addr in &args.servers.servers {
        let started = Instant::now();
        let bar = progress_bar(None);
        bar.set_message(format!("from {addr}"));
        let login = args.servers.login.credentials();
        let attempt = fetch(&net, addr, login.as_ref(), &partial, idle, &bar).await;
        bar.finish_and_clear();
        match attempt {
            Ok(summary) => {
                std::fs::rename(&partial, &out).map_err(|e| {
                    backup_error(format!(
                        "cannot rename {} to {}: {e}",
                        partial.display(),
                        out.display()
                    ))
                })?;
                sync_parent(&out);
                let secs = started.elapsed().as_secs_f64();
                println!(
                    "backup written to {} by {addr} in {secs:.1} s ({:.1} MB/s)",
                    out.display(),
                    summary.file_bytes as f64 / 1e6 / secs.max(1e-3)
                );
                print_summary(&summary);
                return Ok(Outcome::Done);
            }
            Err(Attempt::Refused(why)) => {
                let _ = std::fs::remove_file(&partial);
                refusals.push(format!("{addr}: {why}"));
            }
            Err(Attempt::Broken(why)) => {
                let _ = std::fs::remove_file(&partial);
                return Err(backup_error(format!(
                    "the backup from {addr} failed: {why}; nothing was written to {} (run it \
                     again, with another server first)",
                    out.display()
                )));
            }
        }
    }
    Err(CliError::Backup {
        why: format!("no server could serve a backup: {}", refusals.join("; ")),
        no_server: true,
    })
}

/// Streams a backup from `addr` into `partial`, checked chunk by chunk; synced once complete.
async fn fetch(
    net: &MaybeTlsNet,
    addr: &str,
    login: Option<&crate::client::Credentials>,
    partial: &Path,
    idle: Duration,
    bar: &ProgressBar,
) -> Result<BackupSummary, Attempt> {
    let timed = |what: &str| format!("no progress for {} s {what}", idle.as_secs());
    // A TLS connect includes the handshake, so a wrong CA is reported as a refusal here.
    let mut stream = match tokio::time::timeout(idle, net.connect(addr.to_owned())).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(Attempt::Refused(format!("cannot connect: {e}"))),
        Err(_) => return Err(Attempt::Refused(timed("connecting"))),
    };
    if let Some(login) = login {
        crate::cli_auth::log_in(&mut stream, login, idle)
            .await
            .map_err(|e| Attempt::Refused(format!("the login failed: {e}")))?;
    }
    let mut request = BytesMut::new();
    encode_request(&[BACKUP_COMMAND.as_bytes()], &mut request);
    if let Err(e) = stream.write_all(&request).await {
        return Err(Attempt::Refused(format!("cannot send the request: {e}")));
    }
    let file = File::create(partial)
        .map_err(|e| Attempt::Broken(format!("cannot create {}: {e}", partial.display())))?;
    let io_broken =
        |e: std::io::Error| Attempt::Broken(format!("writing {}: {e}", partial.display()));
    let mut writer =
        BackupWriter::new(BufWriter::with_capacity(1 << 20, file)).map_err(io_broken)?;
    let mut parser = ReplyParser::new(Limits {
        max_bulk_len: kv::snapshot::MAX_CHUNK_LEN,
        ..Limits::default()
    });
    let mut buf = BytesMut::with_capacity(1 << 20);
    loop {
        let begun = writer.header().is_some();
        let fail = |why: String| {
            if begun {
                Attempt::Broken(why)
            } else {
                Attempt::Refused(why)
            }
        };
        while let Some(reply) = parser
            .parse(&mut buf)
            .map_err(|e| Attempt::Broken(format!("unreadable reply: {e}")))?
        {
            match reply {
                Reply::Bulk(chunk) => {
                    writer
                        .push(&chunk)
                        .map_err(|e| Attempt::Broken(e.to_string()))?;
                    bar.set_position(writer.written());
                }
                Reply::Error(e) => return Err(fail(format!("the server answered {e}"))),
                other => return Err(Attempt::Broken(format!("unexpected reply {other:?}"))),
            }
            if writer.is_complete() {
                let (summary, out) = writer
                    .finish()
                    .map_err(|e| Attempt::Broken(e.to_string()))?;
                let file = out.into_inner().map_err(|e| io_broken(e.into_error()))?;
                file.sync_all().map_err(io_broken)?;
                return Ok(summary);
            }
        }
        match tokio::time::timeout(idle, stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) => {
                return Err(fail(format!(
                    "the server closed the connection after {} bytes",
                    writer.written()
                )))
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(fail(format!(
                    "the connection failed after {} bytes: {e}",
                    writer.written()
                )))
            }
            Err(_) => return Err(fail(timed("waiting for the image"))),
        }
    }
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_os_string();
    name.push(".partial");
    PathBuf::from(name)
}

fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
    }
}

fn open_backup(path: &Path) -> Result<(BackupReader<BufReader<File>>, u64), CliError> {
    let refused = |e: String| backup_error(format!("{}: {e}", path.display()));
    let file = File::open(path).map_err(|e| refused(e.to_string()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let reader = BackupReader::new(BufReader::with_capacity(1 << 20, file))
        .map_err(|e| refused(format!("refused {e}")))?;
    Ok((reader, size))
}

fn verify(path: &Path) -> Result<BackupSummary, CliError> {
    let (reader, size) = open_backup(path)?;
    let bar = progress_bar(Some(size));
    bar.set_message("checking");
    let checked = reader.verify(&mut |n| bar.set_position(n));
    bar.finish_and_clear();
    checked.map_err(|e| backup_error(format!("{}: refused {e}", path.display())))
}

pub fn restore(args: RestoreArgs) -> Result<Outcome, CliError> {
    let peers = parse_peers(&args.peers)?;
    if !peers.contains_key(&args.id) {
        return Err(ConfigError::Invalid(format!("--id {} is not one of --peers", args.id)).into());
    }
    let clients = match &args.client_addrs {
        Some(text) => {
            parse_peers(text).map_err(|e| ConfigError::Invalid(format!("--client-addrs: {e}")))?
        }
        None => BTreeMap::new(),
    };
    if let Some(id) = clients.keys().find(|id| !peers.contains_key(id)) {
        return Err(
            ConfigError::Invalid(format!("--client-addrs names {id}, not one of --peers")).into(),
        );
    }
    let addrs = peers
        .iter()
        .map(|(&id, peer)| {
            let client = clients.get(&id).cloned().unwrap_or_default();
            (id, MemberAddrs::new(peer.clone(), client))
        })
        .collect();
    let plan = RestorePlan {
        node_id: args.id,
        members: MemberTable::founding(addrs),
        cluster_token: args
            .cluster_token
            .unwrap_or_else(|| DEFAULT_CLUSTER_TOKEN.to_string()),
        incarnation: new_incarnation(),
    };
    let (reader, size) = open_backup(&args.file)?;
    let started = Instant::now();
    let bar = progress_bar(Some(size));
    bar.set_message("restoring");
    let restored = restore_into(reader, &args.data_dir, &plan, &mut |n| bar.set_position(n));
    bar.finish_and_clear();
    let restored = restored.map_err(|e| {
        backup_error(format!(
            "restoring {} into {}: {e}",
            args.file.display(),
            args.data_dir.display()
        ))
    })?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "restored {} into {} in {secs:.1} s ({:.1} MB/s): node {} of the new cluster {} \
         (the backup is of cluster {})",
        args.file.display(),
        args.data_dir.display(),
        restored.backup.file_bytes as f64 / 1e6 / secs.max(1e-3),
        args.id,
        ClusterIdText(restored.cluster_id),
        ClusterIdText(restored.backup.header.cluster_id),
    );
    let b = &restored.backup;
    println!(
        "  the backup: index {}, term {}, {} {}, {} bytes, crc32 {:08x}",
        b.header.applied_index,
        b.header.applied_term,
        b.keys,
        if b.keys == 1 { "key" } else { "keys" },
        b.file_bytes,
        b.crc
    );
    for (id, addrs) in &plan.members.addrs {
        println!(
            "  member {id} (voter): peer {}, client {}",
            or_unknown(&addrs.peer_addr),
            or_unknown(&addrs.client_addr)
        );
    }
    println!(
        "start it with: kvstore serve --id {} --data-dir {} --peers {} --client-addr HOST:PORT",
        args.id,
        args.data_dir.display(),
        args.peers
    );
    Ok(Outcome::Done)
}

fn print_summary(s: &BackupSummary) {
    let h = &s.header;
    println!(
        "  index {}, term {}, of cluster {}",
        h.applied_index,
        h.applied_term,
        ClusterIdText(h.cluster_id)
    );
    for id in h.membership.members() {
        let role = if h.membership.is_voter(id) {
            "voter"
        } else {
            "learner"
        };
        let addrs = s.addrs.get(&id).cloned().unwrap_or_default();
        println!(
            "  member {id} ({role}): peer {}, client {}",
            or_unknown(&addrs.peer_addr),
            or_unknown(&addrs.client_addr)
        );
    }
    println!(
        "  {} {} ({} bytes of keys and values), {} records in {} chunks",
        s.keys,
        if s.keys == 1 { "key" } else { "keys" },
        s.key_bytes,
        s.records,
        s.chunks
    );
    println!(
        "  file: {} bytes, format {}, crc32 {:08x}",
        s.file_bytes, s.format, s.crc
    );
}

fn or_unknown(addr: &str) -> &str {
    if addr.is_empty() {
        "unknown"
    } else {
        addr
    }
}

/// A progress bar on standard error, hidden when that is not a terminal. Without a total
/// (a backup's size is not known before its end) it counts bytes.
fn progress_bar(total: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    match total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} ({binary_bytes_per_sec}, {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template(
                "{spinner} backup {msg}: {bytes} ({binary_bytes_per_sec})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    }
}
