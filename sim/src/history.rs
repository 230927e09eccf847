//! Client histories of the key-value store, as the simulator's clients record them.
//!
//! Each [`Operation`] touches one key. It carries the client that issued it, its invoke and
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
        if let Outcome::Ok(observed) = &self.outcome {
            let fits = matches!(
                (&self.op, observed),
                (Op::Get, Observed::Value(_))
                    | (Op::Set(_), Observed::Done)
                    | (Op::Delete, Observed::Done | Observed::Existed(_))
                    | (Op::Cas { .. }, Observed::Swapped(_))
                    | (Op::Incr(_), Observed::Int(_))
            );
            if !fits {
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
        match &self.op {
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
        }
        match &self.outcome {
            Outcome::Ok(Observed::Value(v)) => write!(f, " => {}", show_value(v.as_deref())),
            Outcome::Ok(Observed::Done) => write!(f, " => ok"),
            Outcome::Ok(Observed::Existed(true)) => write!(f, " => existed"),
            Outcome::Ok(Observed::Existed(false)) => write!(f, " => was absent"),
            Outcome::Ok(Observed::Swapped(true)) => write!(f, " => swapped"),
            Outcome::Ok(Observed::Swapped(false)) => write!(f, " => not swapped"),
            Outcome::Ok(Observed::Int(n)) => write!(f, " => {n}"),
            Outcome::Failed => write!(f, " => FAILED"),
            Outcome::Unknown => write!(f, " => UNKNOWN (gave up at {})", self.complete),
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
