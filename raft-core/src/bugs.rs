//! Deliberately broken Raft variants. They exist so that tests can show the invariant checks
//! catch each bug; a product build cannot turn them on (they need the `deliberate-bugs` feature).

/// Each switch breaks one Raft rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// Grant votes without checking that the candidate's log is at least as up to date (§5.4.1).
    pub vote_without_log_check: bool,
    /// Commit any entry once a majority stores it, even from an earlier term (Figure 8).
    pub commit_earlier_term_by_counting: bool,
    /// Acknowledge appends (and count the leader's own entries) before their write is durable.
    pub ack_before_persist: bool,
    /// Serve read-index requests at once, without confirming leadership with a quorum.
    pub read_index_without_quorum: bool,
    /// Change several voters in one step, without the joint configuration (thesis §4.3).
    pub conf_change_without_joint: bool,
    /// Count learners toward elections, commit, ReadIndex and check-quorum.
    pub learners_count_in_quorum: bool,
    /// Leave the joint configuration as soon as it is appended, before the joint entry commits.
    pub leave_joint_before_commit: bool,
    /// Hold a read lease for twice the election timeout, ignoring the drift bound and the
    /// followers' vote-refusal window.
    pub lease_outlasts_election_timeout: bool,
}
