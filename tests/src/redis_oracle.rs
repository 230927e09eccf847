//! Redis as a test oracle: the same command scripts sent to a real `redis-server` and to a
//! cluster, over raw TCP, and the replies compared exactly, but for the few differences listed in
//! [`NORMALISATIONS`] (each with its reason).
//!
//! A script is text, one command per line, arguments split as redis-cli splits them (see
//! [`split_args`]); `#` starts a comment line. A line starting with `?` compares only the
//! reply's type (for replies that name the server, such as `? CLIENT ID`).
//!
//! Before each script both servers are emptied with FLUSHALL when the cluster knows the command;
//! until then, each script uses keys of its own (a script reading another's key shows up as a
//! mismatch, never as a silent pass, since redis-server is then not emptied either).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;
use crate::resp_wire::{split_args, RespConn, RespValue};

/// A `redis-server` child process on a free loopback port, persistence off, killed on drop.
pub struct RedisServer {
    pub addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one and waits until it answers PING. Panics, saying how to get it, when
    /// `redis-server` is not installed: the tests that need it must fail, not pass unchecked.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("redis.log")).expect("redis log");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): the Redis oracle tests compare against a real \
                     one; install it (`apt-get install redis-server`, as .ci/run does)"
                )
            });
        let server = Self {
            addr: format!("127.0.0.1:{port}"),
            child,
            _dir: dir,
        };
        let start = Instant::now();
        loop {
            let pong = RespConn::connect(&server.addr).and_then(|mut c| c.call_str(&["PING"]));
            if matches!(pong, Ok(RespValue::Simple(ref s)) if s == "PONG") {
                return server;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "redis-server on {} does not answer PING: {pong:?}",
                server.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of the installed Redis tool `name` (redis-cli, redis-benchmark, ...).
pub fn redis_tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "{name} is not installed: this test runs the real Redis tool; install it \
             (`apt-get install redis-tools redis-server`, as .ci/run does)"
        )
    })
}

/// A difference between Redis's reply and ours that the comparison forgives, and why.
pub struct Normalisation {
    pub name: &'static str,
    pub reason: &'static str,
    /// Rewrites a reply (either server's) to the form compared, or None to leave it.
    pub rewrite: fn(command: &[Vec<u8>], reply: &RespValue) -> Option<RespValue>,
}

/// The differences forgiven; every other byte of every reply must be Redis's.
pub const NORMALISATIONS: &[Normalisation] = &[
    Normalisation {
        name: "KEYS order",
        reason: "Redis lists keys in its hash table's order, ours in our index's; neither order \
                 is specified, so the lists are compared sorted",
        rewrite: |command, reply| match reply {
            RespValue::Array(Some(keys)) if is_command(command, "KEYS") => {
                Some(RespValue::Array(Some(sorted(keys))))
            }
            _ => None,
        },
    },
    Normalisation {
        name: "SCAN order",
        reason: "as for KEYS; the cursor is compared as it is, so a script scans in one call \
                 (COUNT above the key count) and both end at cursor 0",
        rewrite: |command, reply| match reply {
            RespValue::Array(Some(parts)) if is_command(command, "SCAN") && parts.len() == 2 => {
                let keys = match &parts[1] {
                    RespValue::Array(Some(keys)) => RespValue::Array(Some(sorted(keys))),
                    other => other.clone(),
                };
                Some(RespValue::Array(Some(vec![parts[0].clone(), keys])))
            }
            _ => None,
        },
    },
];

fn is_command(command: &[Vec<u8>], name: &str) -> bool {
    command
        .first()
        .is_some_and(|c| c.eq_ignore_ascii_case(name.as_bytes()))
}

fn sorted(items: &[RespValue]) -> Vec<RespValue> {
    let mut items = items.to_vec();
    items.sort_by_key(|item| item.to_string());
    items
}

fn normalised(command: &[Vec<u8>], reply: RespValue) -> RespValue {
    NORMALISATIONS
        .iter()
        .fold(reply, |r, n| (n.rewrite)(command, &r).unwrap_or(r))
}

/// One line of a script whose replies differ.
#[derive(Debug)]
pub struct Mismatch {
    pub script: String,
    pub line: usize,
    pub command: String,
    pub redis: String,
    pub ours: String,
}

/// The oracle and the system under test, each behind one connection.
pub struct Oracle {
    pub redis: RespConn,
    pub ours: RespConn,
    /// Whether the cluster knows FLUSHALL (then every script starts on empty servers).
    flush: bool,
}

impl Oracle {
    /// Connects to a redis-server and to one node of the cluster (`ours`).
    pub fn connect(redis: &RedisServer, ours: &str) -> Self {
        let mut oracle = Self {
            redis: RespConn::connect(&redis.addr).expect("connecting to redis-server"),
            ours: RespConn::connect(ours).expect("connecting to the cluster"),
            flush: false,
        };
        let flushed = oracle.ours.call_str(&["FLUSHALL"]).expect("FLUSHALL");
        oracle.flush = flushed == RespValue::Simple("OK".into());
        oracle
    }

    /// Runs `script` on both servers and returns every line whose replies differ.
    pub fn run(&mut self, name: &str, script: &str) -> Vec<Mismatch> {
        if self.flush {
            for conn in [&mut self.redis, &mut self.ours] {
                let ok = conn.call_str(&["FLUSHALL"]).expect("FLUSHALL");
                assert_eq!(ok, RespValue::Simple("OK".into()), "FLUSHALL before {name}");
            }
        }
        let mut mismatches = Vec::new();
        let mut commands = 0;
        for (n, line) in script.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            commands += 1;
            let (shape_only, text) = match line.strip_prefix('?') {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let args = split_args(text)
                .unwrap_or_else(|| panic!("script {name} line {}: open quote", n + 1));
            let redis = self.redis.call(&args).expect("redis-server reply");
            let ours = self
                .ours
                .call(&args)
                .unwrap_or_else(|e| panic!("script {name} line {}: {line}: {e}", n + 1));
            let (redis, ours) = (normalised(&args, redis), normalised(&args, ours));
            let same = if shape_only {
                redis.kind() == ours.kind()
            } else {
                redis == ours
            };
            if !same {
                mismatches.push(Mismatch {
                    script: name.to_string(),
                    line: n + 1,
                    command: text.trim().to_string(),
                    redis: redis.to_string(),
                    ours: ours.to_string(),
                });
            }
        }
        assert!(commands > 0, "script {name} sends no command");
        mismatches
    }
}

/// Splits a text of scripts, each headed by a `## name` line, into (name, script) pairs.
pub fn split_scripts(text: &str) -> Vec<(&str, &str)> {
    let mut scripts = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("## ") {
        let after = &rest[at + 3..];
        let (name, body) = after.split_once('\n').unwrap_or((after, ""));
        let end = body.find("\n## ").map_or(body.len(), |e| e + 1);
        scripts.push((name.trim(), &body[..end]));
        rest = &body[end..];
    }
    scripts
}

/// The mismatches as a failure message, one block each.
pub fn report(mismatches: &[Mismatch]) -> String {
    mismatches
        .iter()
        .map(|m| {
            format!(
                "{} line {}: {}\n  redis-server: {}\n  ours:         {}\n",
                m.script, m.line, m.command, m.redis, m.ours
            )
        })
        .collect()
}
