//! Failed logins, counted per connection: each failure is answered after a growing delay, and
//! the connection is closed after [`MAX_FAILURES`]. A password guesser then gets a handful of
//! tries per connection, each slower than the last, and must open a new connection (which is
//! logged) to go on.

use std::time::Duration;

/// Failures after which the connection is closed.
pub const MAX_FAILURES: u32 = 5;

/// The delay before answering the first failure; it doubles with each one after.
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(2);

/// One connection's failed logins.
#[derive(Debug, Default)]
pub struct FailureLimiter {
    failures: u32,
}

/// What to do after a failed login.
#[derive(Debug, PartialEq, Eq)]
pub struct Penalty {
    /// Wait this long before answering.
    pub delay: Duration,
    /// Then close the connection.
    pub close: bool,
}

impl FailureLimiter {
    /// Counts one more failure.
    pub fn fail(&mut self) -> Penalty {
        self.failures = self.failures.saturating_add(1);
        let doublings = (self.failures - 1).min(16);
        Penalty {
            delay: FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY),
            close: self.failures >= MAX_FAILURES,
        }
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_waits_longer_and_the_last_closes() {
        let mut limiter = FailureLimiter::default();
        let penalties: Vec<Penalty> = (0..MAX_FAILURES).map(|_| limiter.fail()).collect();
        let delays: Vec<u64> = penalties
            .iter()
            .map(|p| p.delay.as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600]);
        assert!(penalties[..penalties.len() - 1].iter().all(|p| !p.close));
        assert!(penalties.last().unwrap().close);
        assert_eq!(limiter.failures(), MAX_FAILURES);
    }

    #[test]
    fn the_delay_is_bounded_however_many_failures() {
        let mut limiter = FailureLimiter {
            failures: u32::MAX - 1,
        };
        for _ in 0..3 {
            let p = limiter.fail();
            assert_eq!(p.delay, MAX_DELAY);
            assert!(p.close);
        }
    }
}
