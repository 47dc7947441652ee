//! Drift events, and the guard that stops tiernet from fighting another daemon forever.

use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// One detected difference between the kernel and the desired state, and what was done.
#[derive(Debug, Clone, Serialize)]
pub struct DriftEvent {
    pub gateway: String,
    /// Unix time in milliseconds.
    pub at_ms: u128,
    /// The kernel notifications (or periodic check) that led to it.
    pub cause: Vec<String>,
    /// What differed, as the corrective actions that would restore the desired state.
    pub expected: Vec<String>,
    /// Reported-only differences (e.g. a foreign base chain on our hooks).
    pub notices: Vec<String>,
    /// `reverted`, `reported` (observe mode or backing off) or `failed: ...`.
    pub action: String,
    /// From the first notification to the state read back as desired.
    pub latency_ms: f64,
}

pub fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Counts reverts of the same change; past `limit` within `window` the object is
/// flapping, and the agent stops reverting that change (only that one) for `backoff`.
pub struct FlapGuard {
    window: Duration,
    limit: usize,
    backoff: Duration,
    seen: HashMap<String, VecDeque<Instant>>,
    paused_until: HashMap<String, Instant>,
}

impl FlapGuard {
    pub fn new(window: Duration, limit: usize, backoff: Duration) -> Self {
        FlapGuard {
            window,
            limit,
            backoff,
            seen: HashMap::new(),
            paused_until: HashMap::new(),
        }
    }

    /// Records that `key` is about to be reverted; false if it is flapping and should only
    /// be reported for now.
    pub fn allow(&mut self, key: &str, now: Instant) -> bool {
        if self.paused_until.get(key).is_some_and(|until| now < *until) {
            return false;
        }
        let hits = self.seen.entry(key.to_string()).or_default();
        while hits
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            hits.pop_front();
        }
        hits.push_back(now);
        if hits.len() > self.limit {
            hits.clear();
            self.paused_until
                .insert(key.to_string(), now + self.backoff);
            return false;
        }
        true
    }

    /// When the earliest pause still running ends (to look again then, not at the next
    /// event); forgets pauses that have ended.
    pub fn next_resume(&mut self) -> Option<Instant> {
        let now = Instant::now();
        self.paused_until.retain(|_, until| *until > now);
        self.paused_until.values().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flapping_object_is_paused_then_retried() {
        let mut g = FlapGuard::new(Duration::from_secs(10), 3, Duration::from_secs(30));
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(g.allow("route", t0 + Duration::from_secs(i)));
        }
        assert!(
            !g.allow("route", t0 + Duration::from_secs(3)),
            "fourth revert within the window is refused"
        );
        assert!(
            !g.allow("route", t0 + Duration::from_secs(20)),
            "still backing off"
        );
        assert!(
            g.allow("route", t0 + Duration::from_secs(34)),
            "retried after the backoff"
        );
        assert!(g.allow("other", t0), "other objects are unaffected");
    }
}
