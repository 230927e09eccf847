//! The cluster's clients: the workload clients, and the probe that checks liveness once the
//! faults stop and reads every key on every node at the end.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use net::client::{ClientConfig, KvClient};
use rand::Rng;

use super::config::RunConfig;
use super::redis_ops::{self, execute_redis, outcome_of, Via};
use super::{now, ClientTasks};
use crate::history::{History, Observed, Op, Operation, Outcome};
use crate::net::TurmoilNet;
use crate::observe::Observer;
use crate::rng::{self, SimRng};

/// The run's client history, shared by every client task.
pub(super) type SharedHistory = Rc<RefCell<History>>;

/// The liveness probe's verdict, once it has finished.
pub(super) type ProbeResult = Rc<RefCell<Result<(), String>>>;

/// Adds the workload clients to `tasks`: each runs random operations until the workload ends.
pub(super) fn start_workload(
    tasks: &mut ClientTasks,
    cfg: &RunConfig,
    servers: &[String],
    history: &SharedHistory,
    observer: &Observer,
    rng: &mut SimRng,
) {
    let workload_end = cfg.workload.as_nanos() as u64;
    for c in 1..=cfg.clients {
        let client_id = rng.gen::<u64>() | 1;
        let mut config = client_config(4);
        config.follow_leader = !cfg.sticky_clients.contains(&c);
        let client =
            KvClient::over(TurmoilNet, servers.to_vec(), config, client_id).starting_at(c as usize);
        let w = Workload {
            client,
            history: history.clone(),
            observer: observer.clone(),
            rng: rng::seeded(rng.gen()),
            keys: cfg.keys,
            id: c,
            reads_only: cfg.read_only_clients.contains(&c),
            last_seen: BTreeMap::new(),
            next_value: 0,
        };
        tasks.add(w.run(workload_end));
    }
}

/// Adds the probe to `tasks`: from `heal` on, a write and a read must succeed within the
/// liveness bound, then a final read of every key joins the history (so a lost acknowledged
/// write shows up there), and every key is read on every node.
pub(super) fn start_probe(
    tasks: &mut ClientTasks,
    cfg: &RunConfig,
    heal: Duration,
    servers: &[String],
    history: &SharedHistory,
    rng: &mut SimRng,
) -> ProbeResult {
    let liveness: ProbeResult = Rc::new(RefCell::new(Err(
        "the liveness probe never finished".into()
    )));
    let heal = heal.as_nanos() as u64;
    let bound = cfg.liveness_bound.as_nanos() as u64;
    let client_id = rng.gen::<u64>() | 1;
    let client = KvClient::over(
        TurmoilNet,
        servers.to_vec(),
        client_config(1_000),
        client_id,
    );
    // One client per node that stays on it: the last reads of every key on every node show a
    // replica whose state machine went astray.
    let replicas: Vec<(u64, KvClient<TurmoilNet>)> = servers
        .iter()
        .enumerate()
        .map(|(i, server)| {
            let mut config = client_config(3);
            config.follow_leader = false;
            let id = rng.gen::<u64>() | 1;
            let client = KvClient::over(TurmoilNet, vec![server.clone()], config, id);
            (i as u64 + 1, client)
        })
        .collect();
    let (verdict, history, keys) = (liveness.clone(), history.clone(), cfg.keys);
    tasks.add(async move {
        tokio::time::sleep(Duration::from_nanos(heal.saturating_sub(now()))).await;
        *verdict.borrow_mut() = probe(client, replicas, history, keys, heal + bound).await;
    });
    liveness
}

fn client_config(max_attempts: u32) -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(3),
        max_attempts,
        backoff: Duration::from_millis(100),
        follow_leader: true,
        credentials: None,
    }
}

/// Keys written rarely (`w0`, `w1`, ...), besides the hot ones: a replica whose state machine
/// went astray keeps the difference on them long enough for a read to see it, where the hot
/// keys are overwritten within milliseconds.
const COLD_KEYS: u64 = 16;

/// Every key the workload touches: the hot keys `k0..k{hot}`, the cold ones, the group keys
/// and the volatile ones.
fn all_keys(hot: u64) -> Vec<Vec<u8>> {
    (0..hot)
        .map(|k| format!("k{k}").into_bytes())
        .chain((0..COLD_KEYS).map(|k| format!("w{k}").into_bytes()))
        .chain(redis_ops::group_keys())
        .chain(redis_ops::volatile_keys())
        .collect()
}

/// One simulated client: random operations on a few hot keys, now and then on one of the cold
/// keys, on several group keys at once, or on a volatile key, until the workload ends.
struct Workload {
    client: KvClient<TurmoilNet>,
    history: SharedHistory,
    observer: Observer,
    rng: SimRng,
    keys: u64,
    id: u64,
    /// Only GETs of the hot and cold keys ([`RunConfig::read_only_clients`]).
    reads_only: bool,
    /// The value this client last saw at each key, for compare-and-set.
    last_seen: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    next_value: u64,
}

impl Workload {
    async fn run(mut self, until: u64) {
        while now() < until {
            let (key, op, via) = self.pick();
            let invoke = now();
            let outcome = match execute_redis(&mut self.client, &key, &op, via).await {
                Some(outcome) => outcome,
                None => execute(&mut self.client, &key, &op).await,
            };
            let complete = now();
            if let Outcome::Ok(Observed::Value(v)) = &outcome {
                self.last_seen.insert(key.clone(), v.clone());
            }
            let mut event = format!("{} {:?} {:?}", self.id, op, outcome).into_bytes();
            event.extend(complete.to_be_bytes());
            self.observer.record(&event);
            self.history
                .borrow_mut()
                .push(Operation::new(self.id, key, op, invoke, complete, outcome));
            let think = self.rng.gen_range(0..20);
            tokio::time::sleep(Duration::from_millis(think)).await;
        }
    }

    /// The next operation: seven in ten on the hot and cold keys, the rest on the group keys
    /// and the volatile ones (`redis_ops.rs`).
    fn pick(&mut self) -> (Vec<u8>, Op, Via) {
        // Values are integers, unique per write, so that INCR always applies and every read
        // names the write it saw.
        if self.reads_only {
            return (pick_key(&mut self.rng, self.keys), Op::Get, Via::Command);
        }
        let (id, next_value) = (self.id, &mut self.next_value);
        let mut unique = || {
            *next_value += 1;
            (id * 1_000_000 + *next_value).to_string().into_bytes()
        };
        match self.rng.gen_range(0..100) {
            0..=69 => {}
            70..=84 => return redis_ops::pick_group(&mut self.rng, &mut unique),
            _ => return redis_ops::pick_volatile(&mut self.rng, &mut unique),
        }
        let key = pick_key(&mut self.rng, self.keys);
        let unique = unique();
        let op = match self.rng.gen_range(0..100) {
            0..=34 => Op::Get,
            35..=59 => Op::Set(unique),
            60..=74 => Op::Cas {
                expected: self.last_seen.get(&key).cloned().flatten(),
                new: Some(unique),
            },
            75..=89 => Op::Incr(self.rng.gen_range(1..=5)),
            _ => Op::Delete,
        };
        (key, op, Via::Command)
    }
}

/// One of the `hot` hot keys nine times in ten, else a cold one.
fn pick_key(rng: &mut SimRng, hot: u64) -> Vec<u8> {
    if rng.gen_bool(0.1) {
        format!("w{}", rng.gen_range(0..COLD_KEYS)).into_bytes()
    } else {
        format!("k{}", rng.gen_range(0..hot)).into_bytes()
    }
}

/// Runs a single-key operation with its own command and turns the client's answer into a
/// history outcome.
async fn execute(client: &mut KvClient<TurmoilNet>, key: &[u8], op: &Op) -> Outcome {
    let is_write = !op.is_read();
    let result = match op {
        Op::Get => client
            .get(key)
            .await
            .map(|v| Observed::Value(v.map(|b| b.to_vec()))),
        Op::Set(v) => client.set(key, v).await.map(|()| Observed::Done),
        Op::Delete => client.del(key).await.map(Observed::Existed),
        Op::Cas { expected, new } => match new {
            Some(new) => client
                .cas(key, expected.as_deref(), new)
                .await
                .map(Observed::Swapped),
            None => return Outcome::Failed,
        },
        Op::Incr(by) => client.incr_by(key, *by).await.map(Observed::Int),
        Op::SetWith { .. } | Op::Exists | Op::Atomic(_) => {
            return match execute_redis(client, key, op, Via::Command).await {
                Some(outcome) => outcome,
                None => Outcome::Failed,
            }
        }
    };
    outcome_of(result, is_write)
}

/// After the faults stop: a write and a read succeed before `deadline`, then every key is read
/// once more into the history, and once on each node (`replicas`: a client for each, by node
/// id; a follower serves a read from its own state machine once the leader confirms the index).
async fn probe(
    mut client: KvClient<TurmoilNet>,
    replicas: Vec<(u64, KvClient<TurmoilNet>)>,
    history: SharedHistory,
    keys: u64,
    deadline: u64,
) -> Result<(), String> {
    let started = now();
    let write_and_read = async {
        let write = client.set(b"liveness", b"1").await;
        let read = client.get(b"liveness").await;
        (write, read)
    };
    let limit = Duration::from_nanos(deadline.saturating_sub(started));
    match tokio::time::timeout(limit, write_and_read).await {
        Ok((Ok(()), Ok(Some(_)))) => {}
        Ok((w, r)) => {
            return Err(format!(
                "after the faults stopped at {:.1}s: write {w:?}, read {r:?}",
                started as f64 / 1e9
            ))
        }
        Err(_) => {
            return Err(format!(
                "no write and read succeeded within {:.1}s of the faults stopping at {:.1}s",
                limit.as_secs_f64(),
                started as f64 / 1e9
            ))
        }
    }
    for key in all_keys(keys) {
        let invoke = now();
        let outcome = execute(&mut client, &key, &Op::Get).await;
        history.borrow_mut().push(Operation::new(
            u64::MAX,
            key,
            Op::Get,
            invoke,
            now(),
            outcome,
        ));
    }
    // Bounded: a replica that cannot serve reads is not what liveness asks (one write and one
    // read), and reads left unfinished take no effect.
    let per_replica = async {
        for (node, mut client) in replicas {
            for key in all_keys(keys) {
                let invoke = now();
                let outcome = execute(&mut client, &key, &Op::Get).await;
                history.borrow_mut().push(Operation::new(
                    100 + node,
                    key,
                    Op::Get,
                    invoke,
                    now(),
                    outcome,
                ));
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), per_replica).await;
    volatile_keys_expire(&mut client, &history).await
}

/// Every write to a volatile key has a time to live of at most 500 ms of log time, and once the
/// faults stop a leader keeps the log's time going (at 0.8x real time at the slowest): a few
/// seconds after the last write, each volatile key must read as absent (the reads join the
/// history too).
async fn volatile_keys_expire(
    client: &mut KvClient<TurmoilNet>,
    history: &SharedHistory,
) -> Result<(), String> {
    tokio::time::sleep(Duration::from_secs(5)).await;
    for key in redis_ops::volatile_keys() {
        let invoke = now();
        let outcome = execute(client, &key, &Op::Get).await;
        let op = Operation::new(u64::MAX, key.clone(), Op::Get, invoke, now(), outcome);
        history.borrow_mut().push(op.clone());
        if let Outcome::Ok(Observed::Value(Some(_))) = op.outcome {
            return Err(format!(
                "a volatile key did not expire: every write to it had a time to live of at most \
                 500 ms, yet 5 s after the probe's reads: {op}"
            ));
        }
    }
    Ok(())
}
