//! Failure injection for tests of the logic: which failure, on which
//! request, how many times. [`crate::store::FaultyStore`] and
//! [`crate::catalog::FaultyCatalog`] wrap a store or catalog with it; faults on
//! the wire (resets, throttling answers, truncated bodies) belong to the
//! harness's behaviour profiles, in front of the real clients.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// A failure to inject: one per class of store and catalog error, and the
/// two that no error value can express (a hang, a lost answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The key holds nothing (a catalog read finds no record).
    NotFound,
    /// A different object holds the key / the record is not in the state
    /// the write required.
    PreconditionFailed,
    /// Access denied, a missing bucket or table: permanent.
    Refused,
    /// A 5xx, throttling, a reset: transient.
    Transient,
    /// No answer, ever; the caller's budget must cut it off.
    Hang,
    /// The answer arrives damaged: an object body with a flipped byte, an
    /// unreadable catalog item.
    Corrupt,
    /// The request is carried out, but its answer is lost (transient).
    LostAnswer,
}

impl Fault {
    pub const ALL: [Fault; 7] = [
        Fault::NotFound,
        Fault::PreconditionFailed,
        Fault::Refused,
        Fault::Transient,
        Fault::Hang,
        Fault::Corrupt,
        Fault::LostAnswer,
    ];
}

struct Rule<Op> {
    operation: Op,
    key_contains: Option<String>,
    fault: Fault,
    /// Injections left; `None` until healed.
    remaining: Option<u32>,
}

/// The rules of one wrapper, and its call counts.
pub struct Injector<Op> {
    state: Mutex<State<Op>>,
}

struct State<Op> {
    rules: Vec<Rule<Op>>,
    calls: HashMap<Op, u64>,
    injected: u64,
}

impl<Op: Copy + Eq + Hash> Default for Injector<Op> {
    fn default() -> Self {
        Injector {
            state: Mutex::new(State {
                rules: Vec::new(),
                calls: HashMap::new(),
                injected: 0,
            }),
        }
    }
}

impl<Op: Copy + Eq + Hash> Injector<Op> {
    /// The next `times` calls of `operation` fail with `fault`.
    pub fn fail_next(&self, operation: Op, fault: Fault, times: u32) {
        self.add(operation, None, fault, Some(times));
    }

    /// Every call of `operation` fails with `fault` until healed.
    pub fn fail_always(&self, operation: Op, fault: Fault) {
        self.add(operation, None, fault, None);
    }

    /// Every call of `operation` whose key (or file name) contains
    /// `key_contains` fails with `fault` until healed.
    pub fn fail_key(&self, operation: Op, key_contains: &str, fault: Fault) {
        self.add(operation, Some(key_contains.to_owned()), fault, None);
    }

    /// The next `times` such calls fail with `fault`.
    pub fn fail_key_next(&self, operation: Op, key_contains: &str, fault: Fault, times: u32) {
        self.add(operation, Some(key_contains.to_owned()), fault, Some(times));
    }

    pub fn heal(&self) {
        self.lock().rules.clear();
    }

    /// Calls of `operation` so far, failed ones included.
    pub fn calls(&self, operation: Op) -> u64 {
        self.lock().calls.get(&operation).copied().unwrap_or(0)
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    /// Counts a call and picks the fault to inject into it, if any.
    pub fn enter(&self, operation: Op, key: &str) -> Option<Fault> {
        let mut state = self.lock();
        *state.calls.entry(operation).or_default() += 1;
        let rule = state.rules.iter_mut().find(|r| {
            r.operation == operation
                && r.key_contains.as_deref().is_none_or(|k| key.contains(k))
                && r.remaining != Some(0)
        })?;
        if let Some(n) = rule.remaining.as_mut() {
            *n -= 1;
        }
        let fault = rule.fault;
        state.injected += 1;
        Some(fault)
    }

    fn add(
        &self,
        operation: Op,
        key_contains: Option<String>,
        fault: Fault,
        remaining: Option<u32>,
    ) {
        self.lock().rules.push(Rule {
            operation,
            key_contains,
            fault,
            remaining,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<Op>> {
        // A panic while holding this lock is a test failure already; the
        // rules and counters are still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
