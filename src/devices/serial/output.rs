//! Serial output that never stalls a vCPU: bytes go into a bounded buffer that a writer
//! thread drains to the host file or stdout. When the reader is slow and the buffer is full,
//! new bytes are dropped and counted. An output may also have a total limit (a file the guest
//! fills): once that many bytes were taken, one final line says so and later bytes are
//! dropped and counted.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// Default buffer size per output (1 MiB: several screens of boot log).
pub const DEFAULT_CAPACITY: usize = 1 << 20;
/// Largest chunk handed to the host file in one `write`.
const CHUNK: usize = 64 << 10;

#[derive(Default)]
struct State {
    buf: VecDeque<u8>,
    capacity: usize,
    dropped: u64,
    /// The total limit in bytes (`None`: unlimited), what was taken so far, and the bytes
    /// refused once it was reached.
    limit: Option<u64>,
    taken: u64,
    over_limit: u64,
    /// The last byte taken (the final line starts on a line of its own).
    last: u8,
    closed: bool,
    /// The writer thread is inside a host `write` (so the buffer alone does not say whether
    /// everything reached the host).
    writing: bool,
    /// Test sinks keep bytes here instead of running a thread.
    memory: Option<Vec<u8>>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when bytes arrive or the sink is closed.
    data: Condvar,
    /// Signalled when the writer made progress.
    drained: Condvar,
}

/// A cheap, cloneable handle; all clones feed the same buffer.
#[derive(Clone)]
pub struct OutputSink {
    shared: Option<Arc<Shared>>,
}

fn lock(s: &Shared) -> MutexGuard<'_, State> {
    s.state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl OutputSink {
    /// Output that goes nowhere.
    pub fn discard() -> Self {
        OutputSink { shared: None }
    }

    fn with_state(state: State) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(state),
            data: Condvar::new(),
            drained: Condvar::new(),
        })
    }

    /// Output drained by a thread into `target`; at most `limit` bytes of the guest's output
    /// (then the final line) reach it.
    pub fn spawn<W: Write + Send + 'static>(
        name: &str,
        mut target: W,
        capacity: usize,
        limit: Option<u64>,
    ) -> io::Result<Self> {
        let shared = Self::with_state(State {
            capacity,
            limit,
            ..Default::default()
        });
        let s = shared.clone();
        thread::Builder::new()
            .name(format!("out-{name}"))
            .stack_size(128 << 10)
            .spawn(move || {
                crate::sandbox::enter(crate::sandbox::ThreadKind::Output);
                let mut chunk = Vec::with_capacity(CHUNK);
                loop {
                    let mut st = lock(&s);
                    while st.buf.is_empty() && !st.closed {
                        st = s.data.wait(st).unwrap_or_else(PoisonError::into_inner);
                    }
                    if st.buf.is_empty() {
                        return;
                    }
                    let n = st.buf.len().min(CHUNK);
                    chunk.clear();
                    chunk.extend(st.buf.drain(..n));
                    st.writing = true;
                    drop(st);
                    // A failing host file (closed pipe, full disk) loses this chunk but never
                    // the VM; the loss is counted like a full buffer.
                    let ok = target
                        .write_all(&chunk)
                        .and_then(|_| target.flush())
                        .is_ok();
                    let mut st = lock(&s);
                    st.writing = false;
                    if !ok {
                        st.dropped += chunk.len() as u64;
                    }
                    s.drained.notify_all();
                }
            })?;
        Ok(OutputSink {
            shared: Some(shared),
        })
    }

    /// Output kept in memory (tests).
    pub fn memory(capacity: usize, limit: Option<u64>) -> Self {
        OutputSink {
            shared: Some(Self::with_state(State {
                capacity,
                limit,
                memory: Some(Vec::new()),
                ..Default::default()
            })),
        }
    }

    /// What a [`OutputSink::memory`] sink holds.
    pub fn memory_contents(&self) -> Vec<u8> {
        self.shared
            .as_ref()
            .and_then(|s| lock(s).memory.clone())
            .unwrap_or_default()
    }

    /// Bytes dropped because the buffer was full or the host file failed.
    pub fn dropped(&self) -> u64 {
        self.shared.as_ref().map_or(0, |s| lock(s).dropped)
    }

    /// Bytes refused because the output's limit was reached.
    pub fn over_limit(&self) -> u64 {
        self.shared.as_ref().map_or(0, |s| lock(s).over_limit)
    }

    /// Stops accepting bytes and waits until everything buffered reached the host, or until
    /// `timeout` (a stalled reader must not hold up exit). Returns true when all was written.
    pub fn finish(&self, timeout: Duration) -> bool {
        let Some(s) = &self.shared else { return true };
        let deadline = Instant::now() + timeout;
        let mut st = lock(s);
        st.closed = true;
        s.data.notify_all();
        while (!st.buf.is_empty() || st.writing) && st.memory.is_none() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = s
                .drained
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

/// The line that ends an output whose limit was reached.
pub fn limit_line(limit: u64) -> String {
    let size = if limit.is_multiple_of(1 << 20) {
        format!("{} MiB", limit >> 20)
    } else {
        format!("{limit} bytes")
    };
    format!("[micro-vmm: output limit of {size} reached; the rest was dropped]\n")
}

impl State {
    /// The part of `data` the limit lets through, and the final line when this write reaches
    /// the limit (empty otherwise). What is cut off is counted.
    fn apply_limit<'a>(&mut self, data: &'a [u8]) -> (&'a [u8], Vec<u8>) {
        let Some(limit) = self.limit else {
            return (data, Vec::new());
        };
        let room = limit.saturating_sub(self.taken);
        if room >= data.len() as u64 {
            self.taken += data.len() as u64;
            if let Some(&b) = data.last() {
                self.last = b;
            }
            return (data, Vec::new());
        }
        let first_time = self.over_limit == 0;
        let kept = &data[..room as usize];
        self.taken += kept.len() as u64;
        self.over_limit += (data.len() - kept.len()) as u64;
        if let Some(&b) = kept.last() {
            self.last = b;
        }
        let mut line = Vec::new();
        if first_time {
            if self.taken > 0 && self.last != b'\n' {
                line.push(b'\n');
            }
            line.extend_from_slice(limit_line(limit).as_bytes());
        }
        (kept, line)
    }
}

impl Write for OutputSink {
    /// Never blocks and never fails: what does not fit is dropped and counted.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let Some(s) = &self.shared else {
            return Ok(data.len());
        };
        let mut st = lock(s);
        if st.closed {
            return Ok(data.len());
        }
        let (kept, final_line) = st.apply_limit(data);
        if let Some(mem) = st.memory.as_mut() {
            mem.extend_from_slice(kept);
            mem.extend_from_slice(&final_line);
            return Ok(data.len());
        }
        let room = st.capacity.saturating_sub(st.buf.len());
        let n = room.min(kept.len());
        st.buf.extend(&kept[..n]);
        st.dropped += (kept.len() - n) as u64;
        // The final line is written even into a full buffer (it is short and comes once).
        st.buf.extend(&final_line);
        let wake = n > 0 || !final_line.is_empty();
        drop(st);
        if wake {
            s.data.notify_one();
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A writer that blocks until told to go on, like a terminal nobody reads.
    struct Stalled {
        gate: mpsc::Receiver<()>,
        out: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stalled {
        fn write(&mut self, d: &[u8]) -> io::Result<usize> {
            let _ = self.gate.recv();
            self.out.lock().unwrap().extend_from_slice(d);
            Ok(d.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_reader_never_blocks_the_writer_and_memory_stays_bounded() {
        let (tx, rx) = mpsc::channel();
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut sink = OutputSink::spawn(
            "t",
            Stalled {
                gate: rx,
                out: out.clone(),
            },
            1000,
            None,
        )
        .unwrap();
        let start = Instant::now();
        for _ in 0..100_000 {
            sink.write_all(b"0123456789").unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(5));
        // At most the buffer plus one chunk in flight was kept; the rest was counted.
        assert!(sink.dropped() >= 1_000_000 - 1000 - CHUNK as u64);
        assert!(!sink.finish(Duration::from_millis(50)), "reader is stalled");
        drop(tx);
    }

    #[test]
    fn finish_flushes_everything() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        for _ in 0..1000 {
            tx.send(()).unwrap();
        }
        let mut sink = OutputSink::spawn(
            "t",
            Stalled {
                gate: rx,
                out: out.clone(),
            },
            DEFAULT_CAPACITY,
            None,
        )
        .unwrap();
        let mut expected = Vec::new();
        for i in 0..500u32 {
            let line = format!("line {i}\n");
            sink.write_all(line.as_bytes()).unwrap();
            expected.extend_from_slice(line.as_bytes());
        }
        assert!(sink.finish(Duration::from_secs(5)));
        assert_eq!(*out.lock().unwrap(), expected);
        assert_eq!(sink.dropped(), 0);
    }

    #[test]
    fn failing_target_counts_losses() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::BrokenPipe))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut sink = OutputSink::spawn("t", Broken, 1024, None).unwrap();
        sink.write_all(b"abc").unwrap();
        sink.finish(Duration::from_secs(5));
        assert_eq!(sink.dropped(), 3);
    }

    #[test]
    fn the_limit_ends_the_output_with_one_line_and_counts_the_rest() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        drop(tx); // an open gate: recv fails at once and the writer goes on
        let mut sink = OutputSink::spawn(
            "t",
            Stalled {
                gate: rx,
                out: out.clone(),
            },
            DEFAULT_CAPACITY,
            Some(100),
        )
        .unwrap();
        let start = Instant::now();
        for _ in 0..10_000 {
            sink.write_all(b"0123456").unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(sink.finish(Duration::from_secs(5)));
        let mut want = b"0123456".repeat(14);
        want.extend_from_slice(b"01\n");
        want.extend_from_slice(limit_line(100).as_bytes());
        assert_eq!(
            String::from_utf8_lossy(&out.lock().unwrap()),
            String::from_utf8_lossy(&want)
        );
        assert_eq!(sink.over_limit(), 70_000 - 100);
        assert_eq!(sink.dropped(), 0);
    }

    #[test]
    fn a_limit_on_a_line_boundary_adds_no_empty_line() {
        let mut sink = OutputSink::memory(1024, Some(8 << 20));
        sink.write_all(&vec![b'a'; (8 << 20) - 1]).unwrap();
        sink.write_all(b"\n").unwrap();
        sink.write_all(b"more").unwrap();
        sink.write_all(b"and more").unwrap();
        let got = sink.memory_contents();
        let tail = &got[(8 << 20) - 2..];
        assert_eq!(
            tail,
            b"a\n[micro-vmm: output limit of 8 MiB reached; the rest was dropped]\n"
        );
        assert_eq!(sink.over_limit(), 12);
    }

    #[test]
    fn without_a_limit_everything_is_kept() {
        let mut sink = OutputSink::memory(1024, None);
        for _ in 0..1000 {
            sink.write_all(b"0123456789").unwrap();
        }
        assert_eq!(sink.memory_contents().len(), 10_000);
        assert_eq!(sink.over_limit(), 0);
    }
}
