//! Serial output that never stalls a vCPU. The writing vCPU hands its bytes straight to the
//! host file when it can do so without waiting: a regular file, or a pipe or terminal through
//! a non-blocking file description of its own (as Firecracker writes its console from the vCPU
//! thread). What cannot be written at once goes into a bounded buffer that a writer thread
//! drains (and every byte after it, so order is kept). When the reader is slow and the buffer
//! is full, new bytes are dropped and counted.
//!
//! Writing directly matters beyond saving a copy: waking the writer thread for every byte a
//! verbose guest prints costs a cross-CPU wakeup per byte, which preempts the other vCPUs. An output may also have a total limit (a file the guest
//! fills): once that many bytes were taken, one final line says so and later bytes are
//! dropped and counted.

use std::collections::VecDeque;
use std::fs::File;
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
    /// Where a writer may put bytes itself without waiting (see [`direct_handle`]); used
    /// only while nothing is buffered.
    direct: Option<File>,
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

    /// Output to `target`: written directly through `direct` (the same host file, see
    /// [`direct_handle`]) while that never waits, else drained by a thread; at most `limit`
    /// bytes of the guest's output (then the final line) reach it.
    pub fn spawn<W: Write + Send + 'static>(
        name: &str,
        mut target: W,
        direct: Option<File>,
        capacity: usize,
        limit: Option<u64>,
    ) -> io::Result<Self> {
        let shared = Self::with_state(State {
            capacity,
            limit,
            direct,
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

/// Writes as much of `data` as the host takes without waiting; returns what is left to queue
/// and the bytes lost to an error (a closed pipe, a full disk: counted as dropped, like the
/// writer thread's failures).
fn write_now<'a>(f: &mut File, mut data: &'a [u8]) -> (&'a [u8], u64) {
    while !data.is_empty() {
        match f.write(data) {
            Ok(0) => break,
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => return (&[], data.len() as u64),
        }
    }
    (data, 0)
}

/// A handle through which a vCPU may write to `f` without ever waiting for a reader: `f`
/// itself (a duplicate) when it is a regular file; for a pipe, FIFO, terminal or other
/// character device, a new file description of the same object opened non-blocking (so the
/// flag does not leak to whoever else shares `f`'s description, such as the user's shell).
/// `None` where neither works (a socket): the writer thread then does all the writing.
pub fn direct_handle(f: &impl std::os::fd::AsFd) -> Option<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let dup = File::from(f.as_fd().try_clone_to_owned().ok()?);
    let kind = dup.metadata().ok()?.file_type();
    if kind.is_file() {
        return Some(dup);
    }
    if !(kind.is_fifo() || kind.is_char_device()) {
        return None;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{}", dup.as_raw_fd()))
        .ok()
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
        // Nothing queued and the writer idle: write in place, as far as it goes without
        // waiting; only the rest is queued.
        let (kept, final_line) = if st.buf.is_empty() && !st.writing {
            match st.direct.as_mut() {
                Some(f) => {
                    let (k, lost_k) = write_now(f, kept);
                    let (l, lost_l) = if k.is_empty() {
                        write_now(f, &final_line)
                    } else {
                        (&final_line[..], 0)
                    };
                    st.dropped += lost_k + lost_l;
                    (k, l.to_vec())
                }
                None => (kept, final_line),
            }
        } else {
            (kept, final_line)
        };
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
            None,
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
            None,
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
        let mut sink = OutputSink::spawn("t", Broken, None, 1024, None).unwrap();
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
            None,
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

#[cfg(test)]
mod direct_tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};

    fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 returns.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both descriptors were just created and are owned by nobody else.
        unsafe {
            (
                File::from(OwnedFd::from_raw_fd(fds[0])),
                File::from(OwnedFd::from_raw_fd(fds[1])),
            )
        }
    }

    #[test]
    fn a_pipe_nobody_reads_never_blocks_and_order_is_kept_when_it_drains() {
        let (mut rd, wr) = pipe();
        let direct = direct_handle(&wr).expect("a pipe gets a direct handle");
        let flags = |f: &File| {
            use std::os::fd::AsRawFd;
            // SAFETY: F_GETFL on an open descriptor.
            unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) }
        };
        assert_ne!(flags(&direct) & libc::O_NONBLOCK, 0);
        assert_eq!(
            flags(&wr) & libc::O_NONBLOCK,
            0,
            "the shared description stays blocking"
        );
        let mut sink = OutputSink::spawn("t", wr, Some(direct), 1 << 20, None).unwrap();
        // 256 KiB into a 64 KiB pipe nobody reads yet: the rest is queued, nothing waits.
        let mut want = Vec::new();
        let start = Instant::now();
        for i in 0..(256 << 10) / 8 {
            let chunk = format!("{:07}\n", i % 10_000_000);
            sink.write_all(chunk.as_bytes()).unwrap();
            want.extend_from_slice(chunk.as_bytes());
        }
        assert!(start.elapsed() < Duration::from_secs(5));
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            rd.read_to_end(&mut got).unwrap();
            got
        });
        assert!(sink.finish(Duration::from_secs(10)));
        assert_eq!(sink.dropped(), 0);
        drop(sink);
        let got = reader.join().unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes reordered or lost");
    }

    #[test]
    fn a_regular_file_is_written_in_place() {
        let path = std::env::temp_dir().join(format!("mvmm-direct-{}", std::process::id()));
        let f = File::create(&path).unwrap();
        let direct = direct_handle(&f).expect("a file gets a direct handle");
        let mut sink = OutputSink::spawn("t", f, Some(direct), 1 << 20, Some(20)).unwrap();
        sink.write_all(b"0123456789").unwrap();
        // Written before any thread could: the file has it at once.
        assert_eq!(std::fs::read(&path).unwrap(), b"0123456789");
        sink.write_all(b"0123456789abc").unwrap();
        assert!(sink.finish(Duration::from_secs(5)));
        let mut want = b"01234567890123456789\n".to_vec();
        want.extend_from_slice(limit_line(20).as_bytes());
        assert_eq!(std::fs::read(&path).unwrap(), want);
        assert_eq!(sink.over_limit(), 3);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_socket_has_no_direct_handle() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(direct_handle(&a).is_none());
    }
}
