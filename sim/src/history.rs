//! Client histories of the key-value store, as the simulator's clients record them.
//!
//! Each [`Operation`] touches one key, or several at once for an [`Op::Atomic`] one (MGET,
//! MSET, a transaction, a SCAN call). It carries the client that issued it, its invoke and
//! complete times on the simulator's global clock (simulated nanoseconds) and an [`Outcome`]:
//!
//! * `Ok(observed)`: the server answered; `observed` is what the client saw.
//! * `Failed`: the operation definitely took no effect (the server said so, or it never left the
//!   client).
//! * `Unknown`: the client gave up waiting (a timeout, a dropped connection). The operation may
//!   take effect at any time after its invocation, or never; its complete time is effectively
//!   infinity and is kept only for display.
//!
//! Values are bytes; `Incr` reads and writes them as decimal ASCII, as Redis `INCRBY` does (an
//! absent key counts as 0), and fails without effect on a value that is not an `i64` or when the
//! sum would overflow.

use std::collections::BTreeMap;
use std::fmt;

/// A key of the store.
pub type Key = Vec<u8>;
/// A value of the store.
pub type Value = Vec<u8>;
/// A client of the simulation.
pub type ClientId = u64;
/// Simulated nanoseconds on the simulator's global clock.
pub type Time = u64;

/// What an operation asks of its key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Read the value. Observes [`Observed::Value`].
    Get,
    /// Write a value. Observes [`Observed::Done`].
    Set(Value),
    /// Remove the key. Observes [`Observed::Existed`], or [`Observed::Done`] if the client did not
    /// look at the answer.
    Delete,
    /// If the value equals `expected` (`None`: the key is absent), replace it with `new` (`None`:
    /// delete it). Observes [`Observed::Swapped`].
    Cas {
        expected: Option<Value>,
        new: Option<Value>,
    },
    /// Add to the value read as a decimal `i64` (absent counts as 0). Observes [`Observed::Int`],
    /// the new value.
    Incr(i64),
    /// Redis `SET key value [NX|XX] [PX ttl]`: write `value` unless `cond` rules it out. With
    /// `ttl_ms` the key expires that long after the write, in the log's time: from some moment
    /// after the write on (the model cannot know when), it is absent on every replica alike.
    /// Observes [`Observed::Swapped`] (written or not) with a condition, [`Observed::Done`]
    /// without.
    SetWith {
        value: Value,
        cond: Option<SetCond>,
        ttl_ms: Option<u64>,
    },
    /// Whether the key exists (what a `SCAN` listing tells of it). Observes
    /// [`Observed::Existed`].
    Exists,
    /// Single-key operations applied together, atomically and in order: `MGET`, `MSET`, a
    /// `MULTI`/`EXEC` transaction, one `SCAN` call (an [`Op::Exists`] per key it covers). The
    /// operation's own key only names it for display. Observes [`Observed::Results`], one per
    /// part.
    Atomic(Vec<(Key, Op)>),
}

/// The condition of a conditional `SET`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetCond {
    /// `NX`: only if the key is absent.
    IfAbsent,
    /// `XX`: only if the key exists.
    IfPresent,
}

impl Op {
    /// Whether it only reads: leaving it out of a history changes no state.
    pub fn is_read(&self) -> bool {
        match self {
            Op::Get | Op::Exists => true,
            Op::Atomic(parts) => parts.iter().all(|(_, op)| op.is_read()),
            _ => false,
        }
    }

    /// The keys it touches: its parts' for an atomic one, else `own`.
    pub fn keys<'a>(&'a self, own: &'a [u8]) -> Vec<&'a [u8]> {
        match self {
            Op::Atomic(parts) => parts.iter().map(|(k, _)| k.as_slice()).collect(),
            _ => vec![own],
        }
    }

    /// Whether `observed` is an answer of the kind this operation gets.
    fn fits(&self, observed: &Observed) -> bool {
        match (self, observed) {
            (Op::Atomic(parts), Observed::Results(results)) => {
                parts.len() == results.len()
                    && parts
                        .iter()
                        .zip(results)
                        .all(|((_, op), r)| !matches!(op, Op::Atomic(_)) && op.fits(r))
            }
            (Op::SetWith { cond: Some(_), .. }, observed) => {
                matches!(observed, Observed::Swapped(_))
            }
            (Op::SetWith { cond: None, .. }, observed) => matches!(observed, Observed::Done),
            (op, observed) => matches!(
                (op, observed),
                (Op::Get, Observed::Value(_))
                    | (Op::Set(_), Observed::Done)
                    | (Op::Delete, Observed::Done | Observed::Existed(_))
                    | (Op::Cas { .. }, Observed::Swapped(_))
                    | (Op::Incr(_), Observed::Int(_))
                    | (Op::Exists, Observed::Existed(_))
            ),
        }
    }
}

/// What the client saw when the server answered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Observed {
    /// `Get`: the value read, `None` if the key was absent.
    Value(Option<Value>),
    /// `Set`, or a `Delete` whose answer was not inspected.
    Done,
    /// `Delete`: whether the key existed.
    Existed(bool),
    /// `Cas`: whether the value matched and was replaced.
    Swapped(bool),
    /// `Incr`: the new value.
    Int(i64),
    /// `Atomic`: each part's answer, in order.
    Results(Vec<Observed>),
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The server answered.
    Ok(Observed),
    /// Definitely not applied: it took no effect.
    Failed,
    /// Timed out: it may take effect at any point after its invocation, or never.
    Unknown,
}

/// One client operation on one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Operation {
    pub client: ClientId,
    pub key: Key,
    pub op: Op,
    /// When the client sent it.
    pub invoke: Time,
    /// When the client got the answer (or, for `Unknown`, gave up; ignored by the checker).
    pub complete: Time,
    pub outcome: Outcome,
}

impl Operation {
    pub fn new(
        client: ClientId,
        key: impl Into<Key>,
        op: Op,
        invoke: Time,
        complete: Time,
        outcome: Outcome,
    ) -> Self {
        Self {
            client,
            key: key.into(),
            op,
            invoke,
            complete,
            outcome,
        }
    }

    /// Whether an answer of this kind fits this operation, and the times are in order.
    pub fn validate(&self) -> Result<(), String> {
        if let Op::Atomic(parts) = &self.op {
            if parts.iter().any(|(_, op)| matches!(op, Op::Atomic(_))) {
                return Err("an atomic operation has an atomic part".into());
            }
        }
        if let Outcome::Ok(observed) = &self.outcome {
            if !self.op.fits(observed) {
                return Err(format!("{observed:?} is not an answer to {:?}", self.op));
            }
        }
        if self.outcome != Outcome::Unknown && self.complete < self.invoke {
            return Err(format!(
                "completed at {} before it was invoked at {}",
                self.complete, self.invoke
            ));
        }
        Ok(())
    }
}

/// Renders a value as a quoted, escaped string, or `nil`.
pub(crate) fn show_value(v: Option<&[u8]>) -> String {
    match v {
        Some(v) => format!("\"{}\"", v.escape_ascii()),
        None => "nil".to_string(),
    }
}

impl fmt::Display for Operation {
    /// `c3 [1200..1500] set "k" "v" -> ok`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = show_value(Some(&self.key));
        match self.outcome {
            Outcome::Unknown => write!(f, "c{} [{}..?] ", self.client, self.invoke)?,
            _ => write!(f, "c{} [{}..{}] ", self.client, self.invoke, self.complete)?,
        }
        write_op(f, &key, &self.op)?;
        match &self.outcome {
            Outcome::Ok(observed) => write!(f, " => {}", show_observed(observed)),
            Outcome::Failed => write!(f, " => FAILED"),
            Outcome::Unknown => write!(f, " => UNKNOWN (gave up at {})", self.complete),
        }
    }
}

fn write_op(f: &mut fmt::Formatter<'_>, key: &str, op: &Op) -> fmt::Result {
    match op {
        Op::Get => write!(f, "get {key}")?,
        Op::Set(v) => write!(f, "set {key} {}", show_value(Some(v)))?,
        Op::Delete => write!(f, "del {key}")?,
        Op::Cas { expected, new } => write!(
            f,
            "cas {key} {} -> {}",
            show_value(expected.as_deref()),
            show_value(new.as_deref())
        )?,
        Op::Incr(by) => write!(f, "incr {key} {by}")?,
        Op::SetWith {
            value,
            cond,
            ttl_ms,
        } => {
            write!(f, "set {key} {}", show_value(Some(value)))?;
            match cond {
                Some(SetCond::IfAbsent) => write!(f, " nx")?,
                Some(SetCond::IfPresent) => write!(f, " xx")?,
                None => {}
            }
            if let Some(ms) = ttl_ms {
                write!(f, " px {ms}")?;
            }
        }
        Op::Exists => write!(f, "exists {key}")?,
        Op::Atomic(parts) => {
            write!(f, "atomic [")?;
            for (i, (k, op)) in parts.iter().enumerate() {
                if i > 0 {
                    write!(f, "; ")?;
                }
                write_op(f, &show_value(Some(k)), op)?;
            }
            write!(f, "]")?;
        }
    }
    Ok(())
}

fn show_observed(observed: &Observed) -> String {
    match observed {
        Observed::Value(v) => show_value(v.as_deref()),
        Observed::Done => "ok".into(),
        Observed::Existed(true) => "existed".into(),
        Observed::Existed(false) => "was absent".into(),
        Observed::Swapped(true) => "swapped".into(),
        Observed::Swapped(false) => "not swapped".into(),
        Observed::Int(n) => n.to_string(),
        Observed::Results(results) => {
            let parts: Vec<String> = results.iter().map(show_observed).collect();
            format!("[{}]", parts.join("; "))
        }
    }
}

/// A client history: operations in the order they were recorded (any order will do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    ops: Vec<Operation>,
}

/// Refers to an operation of a [`History`], to complete it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(usize);

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, op: Operation) -> OpId {
        self.ops.push(op);
        OpId(self.ops.len() - 1)
    }

    /// Records an invocation. Until [`complete`](Self::complete)d, the operation is `Unknown`
    /// (and its complete time is `Time::MAX`), which is exactly what an operation still pending
    /// at the end of a run is.
    pub fn invoke(&mut self, client: ClientId, key: impl Into<Key>, op: Op, at: Time) -> OpId {
        self.push(Operation::new(
            client,
            key,
            op,
            at,
            Time::MAX,
            Outcome::Unknown,
        ))
    }

    /// Records how an invoked operation ended.
    pub fn complete(&mut self, id: OpId, at: Time, outcome: Outcome) {
        let op = &mut self.ops[id.0];
        op.complete = at;
        op.outcome = outcome;
    }

    pub fn get(&self, id: OpId) -> &Operation {
        &self.ops[id.0]
    }

    pub fn ops(&self) -> &[Operation] {
        &self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Operation> {
        self.ops.iter()
    }

    /// The operations of each key, each list in recorded order; keys in byte order.
    pub fn by_key(&self) -> BTreeMap<&[u8], Vec<&Operation>> {
        let mut keys: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
        for op in &self.ops {
            keys.entry(op.key.as_slice()).or_default().push(op);
        }
        keys
    }

    /// One history per key; keys in byte order.
    pub fn split_by_key(&self) -> BTreeMap<Key, History> {
        let mut keys: BTreeMap<Key, History> = BTreeMap::new();
        for op in &self.ops {
            keys.entry(op.key.clone()).or_default().push(op.clone());
        }
        keys
    }
}

impl From<Vec<Operation>> for History {
    fn from(ops: Vec<Operation>) -> Self {
        Self { ops }
    }
}

impl FromIterator<Operation> for History {
    fn from_iter<I: IntoIterator<Item = Operation>>(iter: I) -> Self {
        Self {
            ops: iter.into_iter().collect(),
        }
    }
}

impl Extend<Operation> for History {
    fn extend<I: IntoIterator<Item = Operation>>(&mut self, iter: I) {
        self.ops.extend(iter);
    }
}

impl IntoIterator for History {
    type Item = Operation;
    type IntoIter = std::vec::IntoIter<Operation>;
    fn into_iter(self) -> Self::IntoIter {
        self.ops.into_iter()
    }
}

impl<'a> IntoIterator for &'a History {
    type Item = &'a Operation;
    type IntoIter = std::slice::Iter<'a, Operation>;
    fn into_iter(self) -> Self::IntoIter {
        self.ops.iter()
    }
}
