//! Faults on the wire, injected by the profile layer in front of any
//! stand-in: the one fault injector of the project's integration tests
//! (the in-process one, `shared::fault`, strikes inside the logic).

use std::sync::Mutex;

use hyper::http::Method;

/// What the service does to a request instead of answering it properly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetFault {
    /// An error answer: 500 `InternalError`, 503 `SlowDown`, 429 …
    Status { status: u16, code: &'static str },
    /// The connection is reset before any answer.
    Reset,
    /// No answer, ever (the connection stays open).
    Hang,
    /// The answer's headers promise the whole body; half arrives, then the
    /// connection drops.
    Truncate,
}

impl NetFault {
    pub const SLOW_DOWN: NetFault = NetFault::Status {
        status: 503,
        code: "SlowDown",
    };
    pub const INTERNAL_ERROR: NetFault = NetFault::Status {
        status: 500,
        code: "InternalError",
    };
    pub const TOO_MANY_REQUESTS: NetFault = NetFault::Status {
        status: 429,
        code: "TooManyRequests",
    };

    /// A short name for reports.
    pub fn class(&self) -> &'static str {
        match self {
            NetFault::Status { status: 429, .. } => "429",
            NetFault::Status { status: 503, .. } => "503 SlowDown",
            NetFault::Status { .. } => "5xx",
            NetFault::Reset => "reset",
            NetFault::Hang => "hang",
            NetFault::Truncate => "truncated body",
        }
    }
}

struct Rule {
    fault: NetFault,
    /// Injections left; `None` until cleared.
    remaining: Option<u32>,
    method: Option<Method>,
    path_contains: Option<String>,
}

#[derive(Default)]
pub struct NetFaults {
    rules: Mutex<Vec<Rule>>,
    down: std::sync::atomic::AtomicBool,
    injected: Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl NetFaults {
    /// The next `times` requests get `fault`.
    pub fn next(&self, fault: NetFault, times: u32) {
        self.add(fault, Some(times), None, None);
    }

    /// Every request with `method` whose path contains `path_contains` gets
    /// `fault` until cleared.
    pub fn on(&self, fault: NetFault, method: Option<Method>, path_contains: Option<&str>) {
        self.add(fault, None, method, path_contains.map(str::to_owned));
    }

    /// The service is unreachable: every connection is reset.
    pub fn go_down(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn come_back(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn clear(&self) {
        self.lock().clear();
        self.come_back();
    }

    /// Faults injected so far, by class.
    pub fn injected(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.injected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn add(
        &self,
        fault: NetFault,
        remaining: Option<u32>,
        method: Option<Method>,
        path_contains: Option<String>,
    ) {
        self.lock().push(Rule {
            fault,
            remaining,
            method,
            path_contains,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Rule>> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fault for this request, if any (counted).
    pub fn pick(&self, method: &Method, path: &str) -> Option<NetFault> {
        let fault = if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            Some(NetFault::Reset)
        } else {
            let mut rules = self.lock();
            let rule = rules.iter_mut().find(|r| {
                r.remaining != Some(0)
                    && r.method.as_ref().is_none_or(|m| m == method)
                    && r.path_contains.as_deref().is_none_or(|p| path.contains(p))
            })?;
            if let Some(n) = rule.remaining.as_mut() {
                *n -= 1;
            }
            Some(rule.fault.clone())
        };
        if let Some(fault) = &fault {
            *self
                .injected
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(fault.class())
                .or_default() += 1;
        }
        fault
    }
}
