//! Serial output that never stalls a vCPU: bytes go into a bounded buffer that a writer
//! thread drains to the host file or stdout. When the reader is slow and the buffer is full,
//! new bytes are dropped and counted.

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

    /// Output drained by a thread into `target`.
    pub fn spawn<W: Write + Send + 'static>(
        name: &str,
        mut target: W,
        capacity: usize,
    ) -> io::Result<Self> {
        let shared = Self::with_state(State {
            capacity,
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
    pub fn memory(capacity: usize) -> Self {
        OutputSink {
            shared: Some(Self::with_state(State {
                capacity,
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
        if let Some(mem) = st.memory.as_mut() {
            mem.extend_from_slice(data);
            return Ok(data.len());
        }
        let room = st.capacity - st.buf.len();
        let n = room.min(data.len());
        st.buf.extend(&data[..n]);
        st.dropped += (data.len() - n) as u64;
        drop(st);
        if n > 0 {
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
        let mut sink = OutputSink::spawn("t", Broken, 1024).unwrap();
        sink.write_all(b"abc").unwrap();
        sink.finish(Duration::from_secs(5));
        assert_eq!(sink.dropped(), 3);
    }
}
