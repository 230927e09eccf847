//! Structural checks on what comes from outside the core: a peer's message before it touches
//! any state, and a driver's restart state before a core is built on it.

use crate::error::ConfigError;
use crate::membership::ConfChangeEntry;
use crate::message::{Message, MessageBody};
use crate::types::{EntryKind, RestartState};

/// Structural checks on a message; anything failing them is dropped before it touches state.
pub(crate) fn validate_message(m: &Message) -> Result<(), &'static str> {
    if let MessageBody::AppendRequest {
        prev_log_index,
        prev_log_term,
        entries,
        ..
    } = &m.body
    {
        let mut expected_index = prev_log_index
            .checked_add(1)
            .ok_or("prev_log_index overflows")?;
        let mut min_term = *prev_log_term;
        for e in entries {
            if e.index != expected_index {
                return Err("entries are not contiguous after prev_log_index");
            }
            if e.term < min_term || e.term > m.term {
                return Err("entry terms must not decrease and not exceed the message term");
            }
            min_term = e.term;
            if e.kind == EntryKind::ConfChange && ConfChangeEntry::decode(&e.payload).is_err() {
                return Err("a configuration-change entry does not decode");
            }
            expected_index = expected_index
                .checked_add(1)
                .ok_or("entry index overflows")?;
        }
        if *prev_log_term > m.term {
            return Err("prev_log_term beyond the message term");
        }
    }
    if let MessageBody::InstallSnapshot { snapshot } = &m.body {
        if snapshot.index == 0 || snapshot.term == 0 {
            return Err("a snapshot must cover at least one entry");
        }
        if snapshot.term > m.term {
            return Err("snapshot term beyond the message term");
        }
        snapshot.membership.validate()?;
        if snapshot.membership.voters.is_empty() {
            return Err("a snapshot's configuration has no voter");
        }
    }
    Ok(())
}

pub(crate) fn check_restart_state(state: &RestartState) -> Result<(), ConfigError> {
    let snapshot = &state.snapshot;
    let current_term = state.hard_state.term;
    if snapshot.index > 0 && snapshot.term == 0 {
        return Err(ConfigError::SnapshotWithoutTerm {
            index: snapshot.index,
        });
    }
    if snapshot.term > current_term {
        return Err(ConfigError::TermAboveCurrentTerm {
            term: snapshot.term,
            current_term,
        });
    }
    if state.applied < snapshot.index {
        return Err(ConfigError::AppliedBelowSnapshot {
            applied: state.applied,
            snapshot_index: snapshot.index,
        });
    }
    if let Some(first) = state.entries.first() {
        if first.index <= snapshot.index {
            return Err(ConfigError::EntriesOverlapSnapshot {
                first: first.index,
                snapshot_index: snapshot.index,
            });
        }
    }
    let mut expected = snapshot.index + 1;
    let mut prev_term = snapshot.term;
    for e in &state.entries {
        if e.index != expected {
            return Err(ConfigError::LogGap {
                expected,
                found: e.index,
            });
        }
        if e.term < prev_term {
            return Err(ConfigError::TermDecreases { index: e.index });
        }
        prev_term = e.term;
        expected += 1;
    }
    let last_index = expected - 1;
    if prev_term > current_term {
        return Err(ConfigError::TermAboveCurrentTerm {
            term: prev_term,
            current_term,
        });
    }
    // A vote for a node no longer in any configuration this log knows is legitimate (it was
    // removed since, and the change compacted), so only the reserved id is refused.
    if state.hard_state.vote == Some(0) {
        return Err(ConfigError::VoteForNonVoter { vote: 0 });
    }
    for e in state
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::ConfChange)
    {
        if ConfChangeEntry::decode(&e.payload).is_err() {
            return Err(ConfigError::BadConfChange { index: e.index });
        }
    }
    if let Err(why) = snapshot.membership.validate() {
        return Err(ConfigError::BadSnapshotMembership { why });
    }
    if state.applied > last_index {
        return Err(ConfigError::AppliedBeyondLog {
            applied: state.applied,
            last_index,
        });
    }
    Ok(())
}
