//! The rule for a request refused because its range moved: the node's table was older than the
//! range's log (a split applied in the group, not yet published), or the range is not hosted
//! here (yet). The client port waits briefly for the table to change, routes again and tries
//! again, up to [`ROUTING_ATTEMPTS`] tries; the last refusal reaches the client as TRYAGAIN,
//! which it retries itself. Several tries, because a follower's table changes only once it has
//! applied the split the leader already refused by, and a split's right half appears only once
//! its log is open: with two tries `redis-benchmark` (which stops at the first error) met a
//! TRYAGAIN while ranges split under its load.
//!
//! Retrying is safe for writes: a refusal for ownership applies nothing and is not kept in the
//! session, and a request for a range not hosted never reached a log, so the same session and
//! sequence number go to the new owner.

use std::time::Duration;

use crate::request::RequestError;
use crate::resp::Reply;

/// How many times a request is routed before the client is told to try again.
pub const ROUTING_ATTEMPTS: usize = 4;

/// How long the client port waits for the node's table to change before routing again.
pub const TABLE_PATIENCE: Duration = Duration::from_millis(250);

/// How long the client port waits for this node to apply the split a range's leader refused a
/// request by (`NodeHandle::ranges_at_epoch`): a follower applies what its leader applied a
/// little later, longer under load.
pub const CATCH_UP_PATIENCE: Duration = Duration::from_secs(2);

/// What the store answers for a range it does not host (`node/store.rs`).
const NOT_HOSTED: &str = "is not hosted on this node";

/// One routed try of a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Attempt {
    /// The reply (an error included) for the client.
    Done(Reply),
    /// Refused because the range moved or is unknown here; the text says why.
    Moved(String),
}

/// What to do after try number `attempt` (0: the first).
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Answer(Reply),
    RouteAgain,
}

pub fn after(attempt: usize, outcome: Attempt) -> Step {
    match outcome {
        Attempt::Done(reply) => Step::Answer(reply),
        Attempt::Moved(_) if attempt + 1 < ROUTING_ATTEMPTS => Step::RouteAgain,
        Attempt::Moved(why) => Step::Answer(Reply::error(format!("TRYAGAIN {why}"))),
    }
}

/// The reason, if a request error is the store's refusal of a range it does not host.
pub fn not_hosted(error: &RequestError) -> Option<&str> {
    match error {
        RequestError::TryAgain(why) if why.contains(NOT_HOSTED) => Some(why),
        _ => None,
    }
}

/// The refusal of a command whose key the range no longer owns, as the client sees it.
pub fn moved_out(range: kv::ranges::RangeId, epoch: u64) -> String {
    format!("the key moved out of range {range} (epoch {epoch})")
}
