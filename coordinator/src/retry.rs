//! How often a job may be retried and how long it waits in between. Pure: the store asks this
//! module for decisions, so the numbers can be tested without a database.

use std::time::Duration;

/// Retry budget and backoff of a job. One policy per coordinator; the store takes it as an argument
/// of the operations that need it so tests can vary it per scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Claims a job may use within one budget (the first try included) before a retryable failure
    /// becomes final. Lost leases do not count against it.
    pub max_attempts: u32,
    /// Wait before the second attempt; each further retry doubles it.
    pub backoff_base: Duration,
    /// Ceiling of the doubling, so a long-failing job is still retried within a bounded time.
    pub backoff_max: Duration,
    /// Lost leases (worker died, network partition) tolerated before the job fails: it stops a
    /// job that crashes every worker it lands on from bouncing forever.
    pub max_lost: u32,
    /// Retryable failures in a row after which a worker gets no more jobs of the run
    /// ([`crate::quarantine`]); 0 never quarantines.
    pub quarantine_after: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 3, backoff_base: Duration::from_secs(10), backoff_max: Duration::from_secs(600), max_lost: 5, quarantine_after: 3 }
    }
}

impl RetryPolicy {
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder(Self::default())
    }

    /// Wait before retrying after the failure of `attempt` (1-based within the budget): attempt 1
    /// waits `backoff_base`, each later one twice as long, never more than `backoff_max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1);
        1u32.checked_shl(doublings).and_then(|factor| self.backoff_base.checked_mul(factor)).map_or(self.backoff_max, |wait| wait.min(self.backoff_max))
    }

    /// Whether a retryable failure of the `attempts_used`-th attempt of the budget may be retried.
    pub fn attempts_remain(&self, attempts_used: u32) -> bool {
        attempts_used < self.max_attempts
    }

    /// Whether a job that has now lost `lost` leases must fail instead of going back to the queue.
    pub fn lost_cap_exceeded(&self, lost: u32) -> bool {
        lost > self.max_lost
    }
}

/// Builds a [`RetryPolicy`] from the defaults, changing only what the caller names.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicyBuilder(RetryPolicy);

impl RetryPolicyBuilder {
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.0.max_attempts = max_attempts.max(1);
        self
    }

    pub fn backoff_base(mut self, base: Duration) -> Self {
        self.0.backoff_base = base;
        self
    }

    pub fn backoff_max(mut self, max: Duration) -> Self {
        self.0.backoff_max = max;
        self
    }

    pub fn max_lost(mut self, max_lost: u32) -> Self {
        self.0.max_lost = max_lost;
        self
    }

    pub fn quarantine_after(mut self, failures: u32) -> Self {
        self.0.quarantine_after = failures;
        self
    }

    pub fn build(self) -> RetryPolicy {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn backoff_doubles_from_base_and_is_capped() {
        let policy = RetryPolicy::builder().backoff_base(secs(10)).backoff_max(secs(300)).build();
        let waits: Vec<u64> = (1..=8).map(|attempt| policy.backoff(attempt).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn backoff_treats_attempt_zero_as_first_and_survives_huge_attempts() {
        let policy = RetryPolicy::builder().backoff_base(Duration::from_millis(250)).backoff_max(secs(60)).build();
        assert_eq!(policy.backoff(0), Duration::from_millis(250));
        assert_eq!(policy.backoff(3), secs(1));
        assert_eq!(policy.backoff(33), secs(60));
        assert_eq!(policy.backoff(u32::MAX), secs(60));
    }

    #[test]
    fn attempts_remain_until_the_budget_is_used() {
        let policy = RetryPolicy::builder().max_attempts(3).build();
        assert!(policy.attempts_remain(1));
        assert!(policy.attempts_remain(2));
        assert!(!policy.attempts_remain(3));
        assert_eq!(RetryPolicy::builder().max_attempts(0).build().max_attempts, 1, "a job always gets one try");
    }

    #[test]
    fn lost_cap_allows_max_lost_losses() {
        let policy = RetryPolicy::builder().max_lost(2).build();
        assert!(!policy.lost_cap_exceeded(2));
        assert!(policy.lost_cap_exceeded(3));
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        assert_eq!(RetryPolicy::default(), RetryPolicy { max_attempts: 3, backoff_base: secs(10), backoff_max: secs(600), max_lost: 5, quarantine_after: 3 });
    }
}
