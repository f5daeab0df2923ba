//! What every walvault error type has in common: the underlying cause kept
//! as a value (not flattened into a string), one answer to "can retrying
//! help?", and a way to print the whole chain of causes on one line.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// The underlying error of a failure, shared so that one failure can be
/// reported for several keys (a batch delete) without losing its type.
pub type Cause = Arc<dyn Error + Send + Sync + 'static>;

/// Wraps any error as a [`Cause`].
pub fn cause(error: impl Error + Send + Sync + 'static) -> Cause {
    Arc::new(error)
}

/// A cause made of a message only, where no error value exists (an S3
/// batch-delete entry, an injected fault).
#[derive(Debug)]
pub struct Message(pub String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for Message {}

pub fn message(text: impl Into<String>) -> Cause {
    Arc::new(Message(text.into()))
}

/// Read by every retry loop, exit-code mapping, batch-failure decision
/// and metric: whether trying the same thing again can succeed.
pub trait Retryable {
    /// `true` when the same request will fail again the same way: a
    /// human (or different input) is needed.
    fn is_permanent(&self) -> bool;

    /// The least time to wait before trying again (a service that asked
    /// to slow down); zero leaves it to the retry loop's backoff.
    fn retry_after(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// An error and its causes on one line, `outer: inner: innermost`: how
/// errors are logged and printed (each level's Display shows only itself).
pub struct Chain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(inner) = source {
            write!(f, ": {inner}")?;
            source = inner.source();
        }
        Ok(())
    }
}

/// [`Chain`] as a `String`.
pub fn chain(error: &dyn Error) -> String {
    Chain(error).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer {
        #[source]
        source: Cause,
    }

    #[test]
    fn a_chain_prints_every_cause_once() {
        let e = Outer {
            source: message("inner"),
        };
        assert_eq!(chain(&e), "outer: inner");
        assert_eq!(e.to_string(), "outer");
    }
}
