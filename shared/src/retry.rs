//! The one retry loop: a budget (a deadline, a limit per attempt, a number
//! of attempts) within which transient failures are retried with backoff.
//! The SDK's own retries are off, so a request is never retried by two
//! loops at once; every store and catalog call of walvault's logic runs
//! under a budget that fits the time its caller has left.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{chain, Retryable};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The request limits of the configuration: how long one attempt may take
/// (`WALVAULT_REQUEST_TIMEOUT_SECS`), and how many attempts a request gets
/// (`WALVAULT_MAX_ATTEMPTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub timeout: Duration,
    pub attempts: u32,
}

impl RequestLimits {
    pub fn from_config(config: &crate::config::Config) -> Self {
        RequestLimits {
            timeout: config.request_timeout,
            attempts: config.max_attempts,
        }
    }

    /// Work that must stop by `deadline`, each of its requests within
    /// these limits.
    pub fn until(&self, deadline: Instant) -> Budget {
        Budget::until(deadline, self.timeout).at_most(self.attempts)
    }

    /// One request's worth: these limits, starting now.
    pub fn one_request(&self) -> Budget {
        Budget::attempts(self.attempts, self.timeout)
    }
}

/// An attempt that the budget cut off: the request may still have landed,
/// so it counts as transient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: no answer within {after:?}")]
pub struct TimedOut {
    pub what: String,
    pub after: Duration,
}

/// How long a piece of work may take, and each of its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    deadline: Instant,
    attempt_timeout: Duration,
    max_attempts: u32,
}

impl Budget {
    /// Work that must be done by `deadline`, each request attempt taking
    /// at most `attempt_timeout`; attempts are not counted.
    pub fn until(deadline: Instant, attempt_timeout: Duration) -> Self {
        Budget {
            deadline,
            attempt_timeout,
            max_attempts: u32::MAX,
        }
    }

    /// `attempts` attempts of at most `attempt_timeout` each, starting now.
    pub fn attempts(attempts: u32, attempt_timeout: Duration) -> Self {
        let attempts = attempts.max(1);
        Budget {
            deadline: Instant::now() + attempt_timeout * attempts + backoff_total(attempts),
            attempt_timeout,
            max_attempts: attempts,
        }
    }

    /// The same budget, with at most `attempts` attempts per request.
    pub fn at_most(self, attempts: u32) -> Self {
        Budget {
            max_attempts: attempts.max(1),
            ..self
        }
    }

    /// The same budget, ending no later than `deadline`.
    pub fn by(self, deadline: Instant) -> Self {
        Budget {
            deadline: self.deadline.min(deadline),
            ..self
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    pub fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    pub fn is_spent(&self) -> bool {
        self.left().is_zero()
    }

    /// How long the next attempt may take: the per-attempt limit, or less
    /// if the deadline is nearer.
    pub fn attempt_limit(&self) -> Duration {
        self.attempt_timeout.min(self.left())
    }

    /// Runs `attempt` until it succeeds, fails permanently, runs out of
    /// attempts, or the next try could not finish by the deadline; the last
    /// error is returned then. Each attempt is cut off at
    /// [`Budget::attempt_limit`]. Backoff doubles from 100 ms up to 5 s. A
    /// throttled answer (the service asked for a pause) does not use up an
    /// attempt, only time: the pause it asks for, plus up to half as much
    /// again at random, so that writers throttled together do not all come
    /// back at the same instant.
    pub async fn run<T, E, F, Fut>(&self, what: impl fmt::Display, mut attempt: F) -> Result<T, E>
    where
        E: Retryable + From<TimedOut> + std::error::Error,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut backoff = FIRST_BACKOFF;
        let mut tries = 0u32;
        loop {
            tries += 1;
            let limit = self.attempt_limit();
            if limit.is_zero() {
                return Err(E::from(TimedOut {
                    what: what.to_string(),
                    after: limit,
                }));
            }
            let result = match tokio::time::timeout(limit, attempt()).await {
                Ok(result) => result,
                Err(_) => Err(E::from(TimedOut {
                    what: what.to_string(),
                    after: limit,
                })),
            };
            let throttled = result
                .as_ref()
                .err()
                .map(|e| e.retry_after())
                .filter(|p| !p.is_zero());
            if throttled.is_some() {
                tries -= 1;
            }
            match result {
                Err(e)
                    if !e.is_permanent()
                        && tries < self.max_attempts
                        && Instant::now() + backoff.max(e.retry_after()) < self.deadline =>
                {
                    let pause = match throttled {
                        Some(asked) => asked + jitter(asked / 2),
                        None => backoff,
                    };
                    tracing::warn!(%what, tries, error = %chain(&e), retry_in_ms = pause.as_millis() as u64, "transient failure, retrying");
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                other => return other,
            }
        }
    }
}

/// A random duration up to `at_most` (the standard library's per-instance
/// random hash keys are randomness enough for spreading retries).
fn jitter(at_most: Duration) -> Duration {
    use std::hash::{BuildHasher, RandomState};
    let random = RandomState::new().hash_one(0u8);
    at_most.mul_f64((random % 1024) as f64 / 1024.0)
}

/// The backoff slept between `attempts` attempts.
fn backoff_total(attempts: u32) -> Duration {
    let mut total = Duration::ZERO;
    let mut backoff = FIRST_BACKOFF;
    for _ in 1..attempts {
        total += backoff;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[derive(Debug, PartialEq, thiserror::Error)]
    enum Failure {
        #[error("transient")]
        Transient,
        #[error("permanent")]
        Permanent,
        #[error(transparent)]
        TimedOut(#[from] TimedOut),
    }

    impl Retryable for Failure {
        fn is_permanent(&self) -> bool {
            matches!(self, Failure::Permanent)
        }
    }

    fn minute() -> Budget {
        Budget::until(
            Instant::now() + Duration::from_secs(60),
            Duration::from_secs(5),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures_until_success() {
        let calls = Cell::new(0);
        let result = minute()
            .run("test", || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    if n < 4 {
                        Err(Failure::Transient)
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(result, Ok(4));
    }

    #[derive(Debug, PartialEq, thiserror::Error)]
    #[error("slow down")]
    struct SlowDown;

    impl From<TimedOut> for SlowDown {
        fn from(_: TimedOut) -> Self {
            SlowDown
        }
    }

    impl Retryable for SlowDown {
        fn is_permanent(&self) -> bool {
            false
        }
        fn retry_after(&self) -> Duration {
            Duration::from_secs(1)
        }
    }

    /// Five writers throttled together (R2: one write a second to a key)
    /// get through one by one: throttling costs time, not attempts.
    #[tokio::test(start_paused = true)]
    async fn throttled_answers_cost_time_not_attempts() {
        let start = Instant::now();
        let calls = Cell::new(0);
        let result = Budget::attempts(3, Duration::from_secs(30))
            .run("throttled", || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    if n <= 5 {
                        Err(SlowDown)
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(result, Ok(6));
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(5) && waited <= Duration::from_millis(7_500),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_a_permanent_failure() {
        let calls = Cell::new(0);
        let result: Result<(), _> = minute()
            .run("test", || {
                calls.set(calls.get() + 1);
                async { Err(Failure::Permanent) }
            })
            .await;
        assert_eq!(result, Err(Failure::Permanent));
        assert_eq!(calls.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_deadline() {
        let start = Instant::now();
        let calls = Cell::new(0);
        let budget = Budget::until(start + Duration::from_secs(10), Duration::from_secs(5));
        let result: Result<(), _> = budget
            .run("test", || {
                calls.set(calls.get() + 1);
                async { Err(Failure::Transient) }
            })
            .await;
        assert_eq!(result, Err(Failure::Transient));
        assert!(start.elapsed() <= Duration::from_secs(10));
        // 0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 3.2 = 6.3 s of backoff, then 5 s would pass the deadline.
        assert_eq!(calls.get(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_attempt_is_cut_off_and_retried_within_the_attempt_budget() {
        let start = Instant::now();
        let calls = Cell::new(0);
        let result: Result<(), Failure> = Budget::attempts(3, Duration::from_secs(2))
            .run("hung request", || {
                calls.set(calls.get() + 1);
                std::future::pending()
            })
            .await;
        assert_eq!(calls.get(), 3);
        assert_eq!(
            result,
            Err(Failure::TimedOut(TimedOut {
                what: "hung request".into(),
                after: Duration::from_secs(2)
            }))
        );
        assert_eq!(start.elapsed(), Duration::from_millis(6_300));
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_attempt_gets_only_the_time_left() {
        let start = Instant::now();
        let budget = Budget::until(start + Duration::from_secs(3), Duration::from_secs(30));
        let result: Result<(), Failure> = budget.run("hung", std::future::pending).await;
        assert!(matches!(result, Err(Failure::TimedOut(t)) if t.after == Duration::from_secs(3)));
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        let spent = budget.run("after the deadline", || async { Ok::<_, Failure>(()) });
        assert!(matches!(spent.await, Err(Failure::TimedOut(t)) if t.after.is_zero()));
    }
}
