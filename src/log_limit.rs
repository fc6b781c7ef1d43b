//! Rate limiting for log lines a guest can trigger at will (unclaimed port accesses, bad
//! register values): the first few are logged, then only every power of two.
//!
//! Our own guest-triggerable log lines use a [`LogLimit`] per call site. Crates that log what
//! a guest does themselves (virtio-queue's `error!` on a bad ring or queue setup) are limited
//! in the logger: [`LimitedTargets`] wraps the real logger.

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

/// Log targets (module-path prefixes) of other crates whose messages a guest can trigger.
pub const GUEST_TRIGGERED_TARGETS: &[&str] = &["virtio_queue"];

/// A logger that passes records on to `inner`, except that records whose target starts with
/// one of `prefixes` are rate limited (one [`LogLimit`] per prefix) and carry their count.
pub struct LimitedTargets<L> {
    inner: L,
    prefixes: &'static [&'static str],
    limits: Vec<LogLimit>,
}

impl<L: log::Log> LimitedTargets<L> {
    pub fn new(inner: L, prefixes: &'static [&'static str]) -> Self {
        LimitedTargets {
            inner,
            prefixes,
            limits: prefixes.iter().map(|_| LogLimit::new()).collect(),
        }
    }
}

impl<L: log::Log> log::Log for LimitedTargets<L> {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        let target = record.target();
        let Some(i) = self.prefixes.iter().position(|p| target.starts_with(p)) else {
            self.inner.log(record);
            return;
        };
        // Only records that would be printed count.
        if !self.inner.enabled(record.metadata()) {
            return;
        }
        let Some(n) = self.limits.get(i).and_then(LogLimit::hit) else {
            return;
        };
        self.inner.log(
            &log::Record::builder()
                .metadata(record.metadata().clone())
                .args(format_args!("{} ({n}x)", record.args()))
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Log;
    use std::sync::Mutex;

    /// Keeps what it is asked to log (warnings and above).
    #[derive(Default)]
    struct Keep(Mutex<Vec<String>>);

    impl Log for Keep {
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            m.level() <= log::Level::Warn
        }
        fn log(&self, r: &log::Record<'_>) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{}: {}", r.target(), r.args()));
        }
        fn flush(&self) {}
    }

    fn record(l: &impl Log, level: log::Level, target: &str, msg: &str) {
        l.log(
            &log::Record::builder()
                .level(level)
                .target(target)
                .args(format_args!("{msg}"))
                .build(),
        );
    }

    #[test]
    fn guest_triggered_targets_are_limited_others_pass() {
        let l = LimitedTargets::new(Keep::default(), GUEST_TRIGGERED_TARGETS);
        for _ in 0..10_000 {
            record(&l, log::Level::Error, "virtio_queue::queue", "bad ring");
            // Filtered out by the inner logger: neither printed nor counted.
            record(&l, log::Level::Debug, "virtio_queue::queue", "debug");
        }
        for _ in 0..100 {
            record(&l, log::Level::Warn, "micro_vmm::vmm", "host");
        }
        let kept = l.inner.0.lock().unwrap();
        let queue: Vec<&String> = kept.iter().filter(|s| s.contains("bad ring")).collect();
        assert_eq!(queue.len(), 8 + 10); // 1..=8, then 16, 32, ..., 8192
        assert_eq!(queue[0], "virtio_queue::queue: bad ring (1x)");
        assert_eq!(queue[17], "virtio_queue::queue: bad ring (8192x)");
        assert!(!kept.iter().any(|s| s.contains("debug")));
        assert_eq!(kept.iter().filter(|s| s.ends_with("host")).count(), 100);
    }

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
