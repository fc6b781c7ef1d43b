//! Rate limiting for log lines a guest can trigger at will (unclaimed port accesses, bad
//! register values): the first few are logged, then only every power of two.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counts occurrences of one kind of event and says which ones deserve a log line.
#[derive(Debug, Default)]
pub struct LogLimit {
    count: AtomicU64,
}

/// How many occurrences are always logged.
const ALWAYS: u64 = 8;

impl LogLimit {
    pub const fn new() -> Self {
        LogLimit {
            count: AtomicU64::new(0),
        }
    }

    /// Records one occurrence; returns its 1-based number when it should be logged.
    pub fn hit(&self) -> Option<u64> {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        (n <= ALWAYS || n.is_power_of_two()).then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_first_few_then_powers_of_two() {
        let l = LogLimit::new();
        let logged: Vec<u64> = (0..1000).filter_map(|_| l.hit()).collect();
        assert_eq!(
            logged,
            vec![1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64, 128, 256, 512]
        );
    }
}
