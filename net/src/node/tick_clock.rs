//! The core's ticks kept in step with the clock, for lease reads. A lease is counted in the
//! leader's ticks, so a leader that counts fewer ticks than its clock says passed (its process
//! was paused, its timer fired late) would hold its lease too long. In lease mode the group
//! makes up the ticks it missed whenever the ticker fires and before it asks for a read.

use std::time::Duration;

use tokio::time::Instant;

pub(super) struct TickClock {
    period: Duration,
    /// When the first tick was counted.
    origin: Option<Instant>,
    /// Ticks counted since `origin`, the first included.
    counted: u64,
}

impl TickClock {
    pub(super) fn new(period: Duration) -> Self {
        Self {
            period,
            origin: None,
            counted: 0,
        }
    }

    /// The ticks owed at `now`; `at_least` one when the ticker fired (it may fire a hair before
    /// a whole period has passed since `origin`, and a tick counted early is on the safe side).
    pub(super) fn owed(&mut self, now: Instant, at_least: u64) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        let periods = now.saturating_duration_since(origin).as_nanos() / self.period.as_nanos();
        let due = u64::try_from(periods).unwrap_or(u64::MAX).saturating_add(1);
        let owed = due.saturating_sub(self.counted).max(at_least);
        self.counted = self.counted.saturating_add(owed);
        owed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_is_made_up_in_ticks() {
        let ms = Duration::from_millis;
        let mut clock = TickClock::new(ms(100));
        let t0 = Instant::now();
        assert_eq!(clock.owed(t0, 1), 1, "the first tick");
        assert_eq!(clock.owed(t0 + ms(100), 1), 1);
        assert_eq!(clock.owed(t0 + ms(150), 0), 0, "before a read: none owed");
        assert_eq!(clock.owed(t0 + ms(1_150), 0), 10, "a pause of ten periods");
        assert_eq!(clock.owed(t0 + ms(1_150), 1), 1, "the ticker fires anyway");
        assert_eq!(
            clock.owed(t0 + ms(1_250), 0),
            0,
            "that tick was counted early"
        );
    }
}
