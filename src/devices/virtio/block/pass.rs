//! How much one pass over the queue may do before the device thread goes back to its event
//! loop (which then serves the other devices and can notice a stop). A pass that runs out
//! with requests left re-arms the queue's eventfd, so the next loop iteration continues.

use std::time::{Duration, Instant};

/// Most requests in one pass.
pub const PASS_REQUESTS: u32 = 64;
/// Most data bytes in one pass (the request that crosses it still completes: a request is at
/// most `MAX_REQUEST_BYTES`).
pub const PASS_BYTES: u64 = 16 << 20;
/// Longest pass (checked between requests, so a pass ends at most one request later).
pub const PASS_TIME: Duration = Duration::from_millis(20);

/// What the current pass has used.
#[derive(Debug)]
pub struct Budget {
    start: Instant,
    requests: u32,
    bytes: u64,
}

impl Budget {
    pub fn new() -> Self {
        Budget::started_at(Instant::now())
    }

    fn started_at(start: Instant) -> Self {
        Budget {
            start,
            requests: 0,
            bytes: 0,
        }
    }

    /// Records one served request of `bytes` data bytes.
    pub fn spend(&mut self, bytes: u64) {
        self.requests = self.requests.saturating_add(1);
        self.bytes = self.bytes.saturating_add(bytes);
    }

    /// Whether the pass must end before the next request.
    pub fn exhausted(&self) -> bool {
        self.requests >= PASS_REQUESTS
            || self.bytes >= PASS_BYTES
            || self.start.elapsed() >= PASS_TIME
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_on_requests_bytes_or_time() {
        let mut b = Budget::new();
        for _ in 0..PASS_REQUESTS - 1 {
            b.spend(0);
        }
        assert!(!b.exhausted());
        b.spend(0);
        assert!(b.exhausted());

        let mut b = Budget::new();
        b.spend(PASS_BYTES - 1);
        assert!(!b.exhausted());
        b.spend(1);
        assert!(b.exhausted());
        b.spend(u64::MAX);
        assert!(b.exhausted());

        let Some(past) = Instant::now().checked_sub(PASS_TIME) else {
            return; // a clock this close to its origin cannot go back a pass
        };
        assert!(Budget::started_at(past).exhausted());
    }
}
