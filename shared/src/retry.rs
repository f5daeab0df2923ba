//! Retrying transient failures with backoff, bounded by a total deadline.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Something that knows whether trying again might help.
pub trait Transient {
    fn is_transient(&self) -> bool;
}

impl Transient for crate::store::StoreError {
    fn is_transient(&self) -> bool {
        self.is_retryable()
    }
}

impl Transient for crate::catalog::CatalogError {
    fn is_transient(&self) -> bool {
        self.is_retryable()
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs `attempt` until it succeeds, fails for good, or the next try would
/// start after `deadline`; the last error is returned then. Backoff doubles
/// from 100 ms up to 5 s.
pub async fn retry_until<T, E, F, Fut>(
    deadline: Instant,
    what: &str,
    mut attempt: F,
) -> Result<T, E>
where
    E: Transient + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut tries = 1u32;
    loop {
        match attempt().await {
            Err(e) if e.is_transient() && Instant::now() + backoff < deadline => {
                tracing::warn!(what, tries, error = %e, retry_in_ms = backoff.as_millis() as u64, "transient failure, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                tries += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[derive(Debug, PartialEq)]
    struct Failure(bool);

    impl Transient for Failure {
        fn is_transient(&self) -> bool {
            self.0
        }
    }

    impl std::fmt::Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "failure (transient: {})", self.0)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures_until_success() {
        let calls = Cell::new(0);
        let result = retry_until(Instant::now() + Duration::from_secs(60), "test", || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 4 {
                    Err(Failure(true))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(result, Ok(4));
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_a_permanent_failure() {
        let calls = Cell::new(0);
        let result: Result<(), _> =
            retry_until(Instant::now() + Duration::from_secs(60), "test", || {
                calls.set(calls.get() + 1);
                async { Err(Failure(false)) }
            })
            .await;
        assert_eq!(result, Err(Failure(false)));
        assert_eq!(calls.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_deadline() {
        let start = Instant::now();
        let calls = Cell::new(0);
        let result: Result<(), _> = retry_until(start + Duration::from_secs(10), "test", || {
            calls.set(calls.get() + 1);
            async { Err(Failure(true)) }
        })
        .await;
        assert_eq!(result, Err(Failure(true)));
        assert!(
            start.elapsed() <= Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        // 0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 3.2 = 6.3 s of backoff, then 5 s would pass the deadline.
        assert_eq!(calls.get(), 7);
    }
}
