//! `kvstore bench`: a closed-loop load generator. Each client sends one request, waits for the
//! answer, and sends the next; clients are spread over the servers round-robin. It prints a
//! progress bar on stderr when it is a terminal (requests done, rate, time left) and one
//! summary line on stdout in the format of the shared load generator.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use rand::{Rng, SeedableRng};

use crate::cli::ServersArg;
use crate::client::{ClientConfig, KvClient};
use crate::error::CliError;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(flatten)]
    pub servers: ServersArg,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Requests in all.
    #[arg(long, default_value_t = 20_000)]
    pub ops: u64,
    /// Bytes per written value.
    #[arg(long, default_value_t = 128)]
    pub value_size: usize,
    /// Share of reads (GET) among requests, from 0.0 to 1.0; the rest are SETs.
    #[arg(long, default_value_t = 0.0)]
    pub read_ratio: f64,
    /// Requests go to this many distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Take keys in order (request n uses key n mod --keys) rather than at random: with
    /// `--ops` equal to `--keys`, every key is written exactly once.
    #[arg(long)]
    pub sequential_keys: bool,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub ok: u64,
    pub errors: u64,
    pub seconds: f64,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ok={} errors={} seconds={:.2} ops_per_s={:.0} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2}",
            self.ok, self.errors, self.seconds, self.ops_per_s, self.p50_ms, self.p99_ms, self.p999_ms, self.max_ms
        )
    }
}

pub async fn run(args: BenchArgs) -> Result<(), CliError> {
    if args.clients == 0 || args.servers.servers.is_empty() {
        return Err(CliError::Bench("need at least one client and one server"));
    }
    if !(0.0..=1.0).contains(&args.read_ratio) {
        return Err(CliError::Bench("--read-ratio must be between 0 and 1"));
    }
    // Over TLS if the flags ask for it: a wrong --cacert is an error before any request.
    let net = args.servers.tls.net()?;
    let report = bench(&args, net).await;
    println!("clients={} {report}", args.clients);
    if report.ok == 0 {
        return Err(CliError::Bench("no request succeeded"));
    }
    Ok(())
}

/// A bar of requests done on stderr, with the rate and the time left; hidden when stderr is
/// not a terminal, so that scripts and tests read no escape codes.
fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:30} {human_pos}/{human_len} requests  {rate}  {eta} left",
    ) {
        bar.set_style(style.with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} ops/s", state.per_sec());
            },
        ));
    }
    bar
}

pub async fn bench(args: &BenchArgs, net: crate::tls::MaybeTlsNet) -> BenchReport {
    let claimed = Arc::new(AtomicU64::new(0));
    let progress = progress_bar(args.ops);
    let start = Instant::now();
    let tasks: Vec<_> = (0..args.clients)
        .map(|i| {
            let (claimed, progress, args) = (claimed.clone(), progress.clone(), args.clone());
            let net = net.clone();
            tokio::spawn(async move {
                // Clients stay on the node they start at (followers forward): the client-protocol
                // work spreads over every node, which measured a lower tail than all on the leader.
                let cfg = args.servers.client_config(ClientConfig {
                    follow_leader: false,
                    ..ClientConfig::default()
                });
                let client_id = rand::Rng::gen::<u64>(&mut rand::thread_rng()) | 1;
                let mut client = KvClient::over(net, args.servers.servers.clone(), cfg, client_id)
                    .starting_at(i);
                let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
                let value = vec![b'v'; args.value_size];
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                loop {
                    let n = claimed.fetch_add(1, Ordering::Relaxed);
                    if n >= args.ops {
                        break;
                    }
                    let k = if args.sequential_keys {
                        n % args.keys.max(1)
                    } else {
                        rng.gen_range(0..args.keys.max(1))
                    };
                    let key = format!("key:{k}");
                    let t = Instant::now();
                    let ok = if rng.gen_bool(args.read_ratio) {
                        client.get(key.as_bytes()).await.is_ok()
                    } else {
                        client.set(key.as_bytes(), &value).await.is_ok()
                    };
                    if ok {
                        latencies.push(t.elapsed().as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                    progress.inc(1);
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        } else {
            errors += 1;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    progress.finish_and_clear();
    all.sort_unstable();
    let pct = |q: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 * q).ceil() as usize).clamp(1, all.len()) - 1;
        all[i] as f64 / 1000.0
    };
    BenchReport {
        ok: all.len() as u64,
        errors,
        seconds,
        ops_per_s: all.len() as f64 / seconds.max(1e-9),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        p999_ms: pct(0.999),
        max_ms: all.last().map_or(0.0, |&m| m as f64 / 1000.0),
    }
}
