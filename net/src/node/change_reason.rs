//! The operator's text for why a node's role, term or leader changed ([`ChangeReason`]), for
//! the INFO line each change logs: "no heartbeat from leader 2 for 1000 ms", "leadership
//! transfer from 3", "check-quorum: lost the quorum, stepping down".

use std::time::Duration;

use raft_core::{ChangeReason, Role, SoftState};

/// The reason in words, with tick counts turned into milliseconds of `tick`.
pub fn describe(reason: ChangeReason, tick: Duration) -> String {
    let ms = |ticks: u32| tick.as_millis().saturating_mul(u128::from(ticks));
    match reason {
        ChangeReason::Started => "started".to_string(),
        ChangeReason::ElectionTimeout {
            leader: Some(leader),
            ticks,
        } => format!("no heartbeat from leader {leader} for {} ms", ms(ticks)),
        ChangeReason::ElectionTimeout {
            leader: None,
            ticks,
        } => {
            format!("no leader heard from for {} ms", ms(ticks))
        }
        ChangeReason::CampaignRequested => "campaign requested".to_string(),
        ChangeReason::TransferFrom { from } => format!("leadership transfer from {from}"),
        ChangeReason::PreVoteWon => "pre-vote won".to_string(),
        ChangeReason::ElectionWon => "election won".to_string(),
        ChangeReason::ElectionLost { pre_vote: true } => "pre-vote lost".to_string(),
        ChangeReason::ElectionLost { pre_vote: false } => "election lost".to_string(),
        ChangeReason::QuorumLost { ticks } => format!(
            "check-quorum: lost the quorum (no majority heard from in {} ms), stepping down",
            ms(ticks)
        ),
        ChangeReason::LeaderFound { leader } => format!("heard from leader {leader}"),
        ChangeReason::HigherTerm { from } => format!("higher term from {from}"),
        ChangeReason::RemovedFromConfiguration => {
            "removed from the configuration, stepping down".to_string()
        }
    }
}

/// Logs one INFO line for a role, term or leader change: "starting an election: REASON" when
/// the node campaigns (a pre-vote or a vote), "role change: REASON" otherwise, with the term,
/// the role and the leader it knows.
pub fn log_change(soft: &SoftState, tick: Duration) {
    let reason = describe(soft.reason, tick);
    let leader = soft
        .leader
        .map_or_else(|| "none".to_string(), |l| l.to_string());
    if matches!(soft.role, Role::PreCandidate | Role::Candidate) {
        tracing::info!(term = soft.term, role = ?soft.role, leader = %leader, "starting an election: {reason}");
    } else {
        tracing::info!(term = soft.term, role = ?soft.role, leader = %leader, "role change: {reason}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_become_milliseconds_and_leaders_are_named() {
        let tick = Duration::from_millis(100);
        let timeout = ChangeReason::ElectionTimeout {
            leader: Some(2),
            ticks: 10,
        };
        assert_eq!(
            describe(timeout, tick),
            "no heartbeat from leader 2 for 1000 ms"
        );
        assert_eq!(
            describe(ChangeReason::TransferFrom { from: 3 }, tick),
            "leadership transfer from 3"
        );
        assert_eq!(describe(ChangeReason::PreVoteWon, tick), "pre-vote won");
        assert!(describe(ChangeReason::QuorumLost { ticks: 20 }, tick)
            .starts_with("check-quorum: lost the quorum (no majority heard from in 2000 ms)"));
    }
}
