//! Membership changes in a run: spare hosts for nodes that are not members yet, and the operator
//! that changes the configuration while the workload and the faults go on.
//!
//! A spare node's host exists from the start (so that its name resolves) but runs nothing until
//! the operator has added it as a learner; then it starts on its empty simulated disk as a node
//! joining the cluster (`NodeConfig::join`, as `kvstore serve --join`), learning the
//! configuration from the cluster. The operator is a client that sends each change of its plan
//! to the leader (`RAFT.MEMBER ...`, `RAFT.TRANSFER-LEADER`, which the node hands to
//! `NodeHandle::admin`), retrying until it is done, and between changes may ask the fault loop
//! for a fault action or check that the cluster serves.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use net::client::{ClientConfig, ClientError, KvClient};
use net::node::admin::MemberList;
use raft_core::NodeId;
use rand::Rng;

use super::{node_name, now, CLIENT_PORT, PEER_PORT};
use crate::faults::FaultAction;
use crate::net::TurmoilNet;

/// One step of the operator's plan.
#[derive(Clone, Debug, PartialEq)]
pub enum MemberOp {
    /// Adds the node as a learner, then starts its host (on its empty disk, joining).
    AddLearner(NodeId),
    /// Waits until the leader lists the member with some of its log and at most
    /// [`CAUGHT_UP_LAG`] entries behind, as an operator reads `member list` before promoting.
    AwaitCaughtUp(NodeId),
    /// Makes a learner a voter (retried while it is not ready).
    Promote(NodeId),
    /// Removes a voter or a learner.
    Remove(NodeId),
    /// Makes the node the leader.
    TransferLeader(NodeId),
    /// Asks the fault loop for this action now (after the steps before it are done).
    Fault(FaultAction),
    /// A write and then a read must succeed within this long.
    ExpectServing(Duration),
    /// Waits this long.
    Wait(Duration),
    /// Arms a crash of the leader for the moment the next joint configuration commits (some
    /// node applied `C_old,new`, none a later configuration yet); the leader restarts this long
    /// after. Done at once: the next steps (the change that goes joint) follow.
    CrashLeaderWhileJoint(Duration),
    /// Waits until the node, asked alone, answers that it was removed (`-REMOVED`).
    AwaitRemoved(NodeId),
    /// Waits until each of these nodes has refused frames from a peer whose incarnation is not
    /// the one it pinned (`refused_incarnation_frames` in its INFO): the nodes saw a member
    /// come back with a wiped disk, and shut it out.
    AwaitRefusals(Vec<NodeId>),
}

/// How far behind the leader's log a member may be for [`MemberOp::AwaitCaughtUp`].
pub const CAUGHT_UP_LAG: u64 = 100;

/// The operator's plan: its steps, in order, from `start` on.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberPlan {
    pub start: Duration,
    /// Nodes beyond the founding ones (numbered from `nodes + 1`) with a host waiting to join.
    pub spares: u64,
    pub steps: Vec<MemberOp>,
    /// The drawn fault schedule strikes the spare nodes too, as any other node (a random run's
    /// plan); a scenario's leaves them out.
    pub faults_on_spares: bool,
}

/// What the operator did, as the run's report shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OperatorReport {
    /// Each step done, with the simulated time it was done at.
    pub done: Vec<String>,
    /// Why the plan could not be carried out, if it could not.
    pub error: Option<String>,
    /// The members as the cluster listed them once the plan was done.
    pub final_members: Option<MemberList>,
}

/// Shared by the operator, the spare hosts and the fault loop.
#[derive(Default)]
pub(super) struct OperatorState {
    /// Spare nodes added as learners: their hosts may start.
    pub(super) admitted: BTreeSet<NodeId>,
    /// Fault actions asked for and not yet made.
    pub(super) faults: Vec<FaultAction>,
    /// A crash of the leader armed for the next joint configuration: its downtime.
    pub(super) crash_leader_while_joint: Option<Duration>,
    pub(super) report: OperatorReport,
}

pub(super) type SharedOperator = Rc<RefCell<OperatorState>>;

/// The peer and client addresses of node `id`.
pub(super) fn addresses(id: NodeId) -> (String, String) {
    (
        format!("{}:{PEER_PORT}", node_name(id)),
        format!("{}:{CLIENT_PORT}", node_name(id)),
    )
}

/// Adds the operator to `tasks`; it must be done by `deadline` (simulated ns). Its draws come from
/// a generator of its own.
pub(super) fn start_operator(
    tasks: &mut super::ClientTasks,
    plan: &MemberPlan,
    state: &SharedOperator,
    servers: &[String],
    deadline: u64,
    seed: u64,
) {
    let mut operator = Operator {
        client: KvClient::over(TurmoilNet, Vec::new(), operator_config(), 1),
        servers: servers.to_vec(),
        rng: crate::rng::seeded(seed ^ 0x0FE2_A702_3E3B_E25D),
        next_server: 0,
        state: state.clone(),
        deadline,
    };
    operator.move_on();
    let plan = plan.clone();
    tasks.add(async move {
        tokio::time::sleep(plan.start).await;
        operator.run(&plan.steps).await;
    });
}

fn operator_config() -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(3),
        max_attempts: 5,
        backoff: Duration::from_millis(100),
        follow_leader: true,
        credentials: None,
    }
}

struct Operator {
    client: KvClient<TurmoilNet>,
    servers: Vec<String>,
    rng: crate::rng::SimRng,
    /// Where the next client starts.
    next_server: usize,
    state: SharedOperator,
    deadline: u64,
}

impl Operator {
    /// A new client (a new session, so that no write is taken for an earlier one), starting at
    /// the next server: a node that refuses the operator outright (one removed from the cluster
    /// answers every request with an error) is not asked again and again.
    fn move_on(&mut self) {
        let id = self.rng.gen::<u64>() | 1;
        self.client = KvClient::over(TurmoilNet, self.servers.clone(), operator_config(), id)
            .starting_at(self.next_server);
        self.next_server = (self.next_server + 1) % self.servers.len().max(1);
    }

    /// A new client, starting at node `id` (the servers are in node order).
    fn ask_next(&mut self, id: NodeId) {
        let position = (id as usize).saturating_sub(1);
        if position < self.servers.len() {
            self.next_server = position;
            self.move_on();
        }
    }

    async fn run(mut self, steps: &[MemberOp]) {
        for step in steps {
            if let Err(e) = self.carry_out(step).await {
                self.state.borrow_mut().report.error =
                    Some(format!("{step:?} at {:.3}s: {e}", now() as f64 / 1e9));
                return;
            }
            let line = format!("{:>10.3}s {step:?}", now() as f64 / 1e9);
            self.state.borrow_mut().report.done.push(line);
        }
        match self.retry(Request::List).await {
            Ok(list) => self.state.borrow_mut().report.final_members = list,
            Err(e) => {
                self.state.borrow_mut().report.error = Some(format!("listing the members: {e}"))
            }
        }
    }

    async fn carry_out(&mut self, step: &MemberOp) -> Result<(), String> {
        match step {
            MemberOp::AddLearner(id) => {
                self.retry(Request::AddLearner(*id)).await?;
                self.state.borrow_mut().admitted.insert(*id);
                self.await_ranges_following().await
            }
            MemberOp::AwaitCaughtUp(id) => loop {
                let list = self
                    .retry(Request::List)
                    .await?
                    .unwrap_or_else(|| MemberList {
                        answered_by: 0,
                        leader: None,
                        joint: false,
                        members: Vec::new(),
                        ranges_behind: Vec::new(),
                    });
                let member = list.members.iter().find(|m| m.id == *id);
                if let Some(m) = member {
                    let (matched, lag) = (m.match_index.unwrap_or(0), m.lag.unwrap_or(u64::MAX));
                    if matched > 0 && lag <= CAUGHT_UP_LAG {
                        return Ok(());
                    }
                }
                if now() >= self.deadline {
                    return Err(format!("node {id} never caught up: {list:?}"));
                }
                // Only the leader knows how far each member has got; a follower's list (a
                // client that stays on the node it reached) tells where to ask instead.
                if let Some(leader) = list.leader.filter(|l| *l != list.answered_by) {
                    self.ask_next(leader);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            },
            MemberOp::Promote(id) => {
                self.retry(Request::Promote(*id)).await?;
                self.await_ranges_following().await
            }
            MemberOp::Remove(id) => {
                self.retry(Request::Remove(*id)).await?;
                self.await_ranges_following().await
            }
            MemberOp::TransferLeader(to) => {
                self.retry(Request::TransferLeader(*to)).await.map(drop)
            }
            MemberOp::Fault(action) => {
                self.state.borrow_mut().faults.push(action.clone());
                Ok(())
            }
            MemberOp::ExpectServing(within) => {
                let client = &mut self.client;
                let write_and_read = async {
                    loop {
                        if client.set(b"operator", b"1").await.is_ok()
                            && matches!(client.get(b"operator").await, Ok(Some(_)))
                        {
                            return;
                        }
                    }
                };
                tokio::time::timeout(*within, write_and_read)
                    .await
                    .map_err(|_| {
                        format!(
                            "no write and read succeeded within {:.1}s",
                            within.as_secs_f64()
                        )
                    })
            }
            MemberOp::Wait(d) => {
                tokio::time::sleep(*d).await;
                Ok(())
            }
            MemberOp::CrashLeaderWhileJoint(downtime) => {
                self.state.borrow_mut().crash_leader_while_joint = Some(*downtime);
                Ok(())
            }
            MemberOp::AwaitRemoved(id) => self.await_removed(*id).await,
            MemberOp::AwaitRefusals(ids) => {
                for &id in ids {
                    self.await_refusal(id).await?;
                }
                Ok(())
            }
        }
    }

    /// On a split keyspace: waits, as `kvstore member` does, until the node answering the
    /// member list sees every range's configuration follow the first range's.
    async fn await_ranges_following(&mut self) -> Result<(), String> {
        loop {
            let list = self.retry(Request::List).await?;
            let behind = list.map(|l| l.ranges_behind).unwrap_or_default();
            if behind.is_empty() {
                return Ok(());
            }
            if now() >= self.deadline {
                return Err(format!(
                    "ranges {behind:?} never followed the first range's configuration"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Asks node `id` alone for a key until it answers that it was removed.
    async fn await_removed(&self, id: NodeId) -> Result<(), String> {
        let mut client = self.client_of(id);
        loop {
            let answer = client.get(b"operator").await;
            if let Err(ClientError::Unavailable { last_error, .. }) = &answer {
                if last_error.starts_with("REMOVED") {
                    return Ok(());
                }
            }
            if now() >= self.deadline {
                return Err(format!("node {id} never said it was removed: {answer:?}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A client of node `id` alone, one attempt per request.
    fn client_of(&self, id: NodeId) -> KvClient<TurmoilNet> {
        let config = ClientConfig {
            follow_leader: false,
            max_attempts: 1,
            ..operator_config()
        };
        let (_, address) = addresses(id);
        KvClient::over(TurmoilNet, vec![address], config, 1)
    }

    /// Asks node `id` alone for its INFO until it reports refused frames.
    async fn await_refusal(&self, id: NodeId) -> Result<(), String> {
        let mut client = self.client_of(id);
        loop {
            let info = client.info().await.unwrap_or_default();
            let refused = info
                .lines()
                .find_map(|l| l.strip_prefix("refused_incarnation_frames:"))
                .and_then(|n| n.trim().parse::<u64>().ok());
            if refused.is_some_and(|n| n > 0) {
                return Ok(());
            }
            if now() >= self.deadline {
                return Err(format!("node {id} never refused a peer's frames: {info:?}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sends `request` until it succeeds, pausing between tries (a change in progress, a
    /// learner not ready, no leader), until the operator's deadline.
    async fn retry(&mut self, request: Request) -> Result<Option<MemberList>, String> {
        loop {
            match request.send(&mut self.client).await {
                Ok(v) => return Ok(v),
                Err(e) if now() >= self.deadline => {
                    return Err(format!("still refused at the deadline: {e}"))
                }
                Err(e) => {
                    if matches!(e, ClientError::Server(_)) {
                        self.move_on();
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
            }
        }
    }
}

/// An operator request, as sent to the cluster.
#[derive(Clone, Copy)]
enum Request {
    AddLearner(NodeId),
    Promote(NodeId),
    Remove(NodeId),
    TransferLeader(NodeId),
    List,
}

impl Request {
    async fn send(self, c: &mut KvClient<TurmoilNet>) -> Result<Option<MemberList>, ClientError> {
        match self {
            Request::AddLearner(id) => {
                let (peer, client) = addresses(id);
                c.member_add(id, &peer, &client).await?;
            }
            Request::Promote(id) => c.member_promote(id).await?,
            Request::Remove(id) => c.member_remove(id).await?,
            Request::TransferLeader(to) => c.transfer_leader(to).await?,
            Request::List => return c.member_list().await.map(Some),
        }
        Ok(None)
    }
}
