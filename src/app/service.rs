//! The host end of the lifecycle connection (docs/lifecycle.md): a thread that listens on the
//! vsock bridge socket `<uds>_5000`, serves the first guest connection, tracks the payload's
//! state (forward only, as Android does), hands each accepted event to an observer, and stops
//! the VM when the payload has not started in time (Android's HANGUP).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use crate::lifecycle::protocol::{self, GuestEvent, HostRequest};
use crate::lifecycle::{ErrorCode, MAX_LINE, PROTOCOL_VERSION};
use crate::lines::{Frame, LineFramer};
use crate::log_limit::LogLimit;
use crate::poll::{poll, pollfd};
use crate::vmm::exit::{ExitState, VmExit};

/// What the payload did, as far as the host knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayloadOutcome {
    pub connected: bool,
    /// The agent said hello (accepted once, before any other event).
    pub hello: bool,
    pub started: bool,
    pub ready: bool,
    pub finished: Option<i32>,
    pub error: Option<(ErrorCode, String)>,
    /// The payload did not start within the hangup timeout and the VM was stopped.
    pub hangup: bool,
}

/// Receives every event the service accepts, in order (on the service thread).
pub type Observer = Box<dyn FnMut(&GuestEvent) + Send>;

struct Shared {
    outcome: Mutex<PayloadOutcome>,
    /// The guest connection, for host requests.
    conn: Mutex<Option<UnixStream>>,
}

/// A cloneable view of the service for other threads: the outcome so far and the shutdown
/// request (the control socket uses it).
#[derive(Clone)]
pub struct LifecycleHandle {
    shared: Arc<Shared>,
}

impl LifecycleHandle {
    /// A snapshot of what the payload has done so far.
    pub fn outcome(&self) -> PayloadOutcome {
        lock(&self.shared.outcome).clone()
    }

    /// Asks the agent to stop the payload and power off. False when no agent is connected
    /// (or the request does not fit in the connection's buffer: the agent is not reading).
    pub fn request_shutdown(&self) -> bool {
        match &mut *lock(&self.shared.conn) {
            Some(c) => c
                .write_all(&protocol::encode(&HostRequest::Shutdown))
                .is_ok(),
            None => false,
        }
    }
}

impl crate::api::control::PayloadControl for LifecycleHandle {
    fn status(&self) -> crate::api::control::PayloadStatus {
        let o = self.outcome();
        crate::api::control::PayloadStatus {
            started: o.started,
            ready: o.ready,
            finished: o.finished,
            error: o.error.map(|(code, msg)| (code.name().to_string(), msg)),
        }
    }

    fn request_shutdown(&self) -> bool {
        LifecycleHandle::request_shutdown(self)
    }
}

/// The running service; [`LifecycleService::finish`] stops it and returns the outcome.
pub struct LifecycleService {
    shared: Arc<Shared>,
    stop: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

impl LifecycleService {
    /// Binds `socket` (which must not exist) and starts the service thread. `hangup` is how
    /// long the payload gets to start before the VM is stopped through `exit`.
    pub fn start(
        socket: &Path,
        exit: Arc<ExitState>,
        hangup: Duration,
        observer: Observer,
    ) -> io::Result<LifecycleService> {
        let listener = UnixListener::bind(socket)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(EventFd::new(libc::EFD_NONBLOCK)?);
        let shared = Arc::new(Shared {
            outcome: Mutex::new(PayloadOutcome::default()),
            conn: Mutex::new(None),
        });
        let mut worker = Worker {
            listener,
            conn: None,
            input: LineFramer::new(MAX_LINE),
            shared: Arc::clone(&shared),
            stop: Arc::clone(&stop),
            exit,
            // A hangup timeout too large for an Instant means no deadline (the CLI bounds it).
            deadline: Instant::now().checked_add(hangup),
            hangup,
            observer,
        };
        let thread = std::thread::Builder::new()
            .name("lifecycle".into())
            .spawn(move || {
                crate::sandbox::enter(crate::sandbox::ThreadKind::Lifecycle);
                worker.run()
            })?;
        Ok(LifecycleService {
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// A handle for other threads.
    pub fn handle(&self) -> LifecycleHandle {
        LifecycleHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// A snapshot of what the payload has done so far.
    pub fn outcome(&self) -> PayloadOutcome {
        self.handle().outcome()
    }

    /// Asks the agent to stop the payload and power off. False when no agent is connected.
    pub fn request_shutdown(&self) -> bool {
        self.handle().request_shutdown()
    }

    /// Stops the thread (after it has read what the guest already sent) and returns the
    /// outcome.
    pub fn finish(mut self) -> PayloadOutcome {
        self.join();
        self.outcome()
    }

    fn join(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LifecycleService {
    fn drop(&mut self) {
        self.join();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Worker {
    listener: UnixListener,
    conn: Option<UnixStream>,
    /// The guest's lines, over-long ones dropped without being buffered.
    input: LineFramer,
    shared: Arc<Shared>,
    stop: Arc<EventFd>,
    exit: Arc<ExitState>,
    /// When the payload must have started by; `None` once it has (or the VM was stopped).
    deadline: Option<Instant>,
    hangup: Duration,
    observer: Observer,
}

impl Worker {
    fn run(&mut self) {
        loop {
            let timeout = self
                .deadline
                .map(|d| d.saturating_duration_since(Instant::now()));
            let mut fds = vec![
                pollfd(self.stop.as_raw_fd(), libc::POLLIN),
                pollfd(self.listener.as_raw_fd(), libc::POLLIN),
            ];
            if let Some(c) = &self.conn {
                fds.push(pollfd(c.as_raw_fd(), libc::POLLIN));
            }
            let ready = match poll(&mut fds, timeout) {
                Ok(n) => n,
                Err(e) => {
                    log::warn!("lifecycle service: poll: {e}");
                    return;
                }
            };
            if fds[0].revents != 0 {
                // Stopping: take what the guest already sent, then leave.
                self.read_conn();
                return;
            }
            if ready == 0 {
                self.check_hangup();
                continue;
            }
            if fds[1].revents != 0 {
                self.accept();
            }
            if fds.get(2).is_some_and(|f| f.revents != 0) {
                self.read_conn();
            }
        }
    }

    fn check_hangup(&mut self) {
        if let Some(d) = self.deadline
            && Instant::now() >= d
        {
            self.deadline = None;
            lock(&self.shared.outcome).hangup = true;
            self.exit.request(VmExit::Killed(format!(
                "the payload did not start within {} s (HANGUP)",
                self.hangup.as_secs()
            )));
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.conn.is_some() || lock(&self.shared.outcome).connected {
                        // The guest can connect again and again: rate limited.
                        warn_limited(&SECOND_CONNECTION, "a second guest connection refused");
                        continue; // dropped: closed at once
                    }
                    // The writer shares the file description, so it is non-blocking too: a
                    // request that does not fit in the socket buffer fails instead of
                    // blocking on a guest that does not read.
                    let setup = stream
                        .set_nonblocking(true)
                        .and_then(|()| stream.try_clone());
                    match setup {
                        Ok(writer) => {
                            *lock(&self.shared.conn) = Some(writer);
                            lock(&self.shared.outcome).connected = true;
                            self.conn = Some(stream);
                        }
                        Err(e) => log::warn!("lifecycle service: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("lifecycle service: accept: {e}");
                    return;
                }
            }
        }
    }

    /// Reads everything available; closes the connection at EOF or on an error.
    fn read_conn(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let mut chunk = [0u8; 4096];
        // Each chunk's lines are handled before the next read: a guest that keeps the socket
        // full cannot make us queue its lines.
        let closed = loop {
            match conn.read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => {
                    self.input.push(&chunk[..n]);
                    while let Some(frame) = self.input.next_frame() {
                        match frame {
                            Frame::Line(line) => self.handle_line(&line),
                            Frame::TooLong => warn_limited(
                                &BAD_LINE,
                                &format!("a line over {MAX_LINE} bytes dropped"),
                            ),
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("lifecycle service: read: {e}");
                    break true;
                }
            }
        };
        if closed {
            // Closing tells the agent its events arrived (docs/lifecycle.md, Delivery).
            *lock(&self.shared.conn) = None;
        } else {
            self.conn = Some(conn);
        }
    }

    fn handle_line(&mut self, line: &[u8]) {
        let event = match protocol::decode_event(line) {
            Ok(e) => e,
            Err(e) => {
                warn_limited(&BAD_LINE, &format!("{e}"));
                return;
            }
        };
        if apply(&mut lock(&self.shared.outcome), &event) {
            if matches!(event, GuestEvent::Started | GuestEvent::Error { .. }) {
                self.deadline = None;
            }
            (self.observer)(&event);
        } else if matches!(event, GuestEvent::Hello { .. }) {
            warn_limited(&REPEATED_HELLO, "ignoring a hello after the first event");
        } else {
            warn_limited(&OUT_OF_ORDER, &format!("ignoring {event:?} out of order"));
        }
    }
}

/// Applies an event to the outcome; false when it is out of order or repeated (ignored).
/// One hello is accepted, and only before any other event.
pub fn apply(o: &mut PayloadOutcome, event: &GuestEvent) -> bool {
    match event {
        GuestEvent::Hello { version } if !o.hello && !o.started && o.error.is_none() => {
            o.hello = true;
            if *version != PROTOCOL_VERSION {
                log::warn!(
                    "guest agent speaks lifecycle protocol {version}, host {PROTOCOL_VERSION}"
                );
            }
            true
        }
        GuestEvent::Started if !o.started && o.error.is_none() => {
            o.started = true;
            true
        }
        GuestEvent::Ready if o.started && !o.ready && o.finished.is_none() => {
            o.ready = true;
            true
        }
        GuestEvent::Finished { exit_code } if o.started && o.finished.is_none() => {
            o.finished = Some(*exit_code);
            true
        }
        GuestEvent::Error { code, message } if o.error.is_none() && o.finished.is_none() => {
            o.error = Some((*code, message.clone()));
            true
        }
        _ => false,
    }
}

/// One limiter per kind of complaint, so a flood of one kind does not hide the others.
static BAD_LINE: LogLimit = LogLimit::new();
static OUT_OF_ORDER: LogLimit = LogLimit::new();
static REPEATED_HELLO: LogLimit = LogLimit::new();
static SECOND_CONNECTION: LogLimit = LogLimit::new();

/// Logs a complaint about what the guest did, rate limited (the guest controls the rate).
fn warn_limited(limit: &LogLimit, what: &str) {
    if let Some(n) = limit.hit() {
        log::warn!("lifecycle service: {what} (#{n} of its kind)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::testutil::TempDir;
    use std::sync::mpsc;

    fn service(
        dir: &TempDir,
        hangup: Duration,
    ) -> (LifecycleService, Arc<ExitState>, mpsc::Receiver<GuestEvent>) {
        let exit = Arc::new(ExitState::new().unwrap());
        let (tx, rx) = mpsc::channel();
        let svc = LifecycleService::start(
            &dir.path().join("v.sock_5000"),
            Arc::clone(&exit),
            hangup,
            Box::new(move |e| {
                let _ = tx.send(e.clone());
            }),
        )
        .unwrap();
        (svc, exit, rx)
    }

    fn recv(rx: &mpsc::Receiver<GuestEvent>) -> GuestEvent {
        rx.recv_timeout(Duration::from_secs(5)).expect("event")
    }

    #[test]
    fn a_whole_run_in_order_and_the_host_closes_after_eof() {
        let dir = TempDir::new("svc-run");
        let (svc, exit, rx) = service(&dir, Duration::from_secs(30));
        let mut g = UnixStream::connect(dir.path().join("v.sock_5000")).unwrap();
        // Split across writes, with a garbage line and an out-of-order event in between.
        g.write_all(b"{\"event\":\"hello\",\"version\":1}\n{\"event\":\"rea")
            .unwrap();
        g.write_all(b"dy\"}\ngarbage\n{\"event\":\"started\"}\n")
            .unwrap();
        assert_eq!(recv(&rx), GuestEvent::Hello { version: 1 });
        assert_eq!(recv(&rx), GuestEvent::Started);
        assert!(svc.request_shutdown());
        let mut r = std::io::BufReader::new(g.try_clone().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut r, &mut line).unwrap();
        assert_eq!(line, "{\"request\":\"shutdown\"}\n");
        g.write_all(b"{\"event\":\"ready\"}\n{\"event\":\"finished\",\"exit_code\":7}\n")
            .unwrap();
        g.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(recv(&rx), GuestEvent::Ready);
        assert_eq!(recv(&rx), GuestEvent::Finished { exit_code: 7 });
        // The host closes once it has read EOF: the agent's delivery wait ends.
        g.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        assert_eq!(g.read_to_end(&mut rest).unwrap(), 0);
        // A second connection is refused (closed at once).
        let mut g2 = UnixStream::connect(dir.path().join("v.sock_5000")).unwrap();
        g2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(g2.read(&mut [0u8; 8]).unwrap(), 0);
        let o = svc.finish();
        assert!(o.connected && o.started && o.ready && !o.hangup);
        assert_eq!(o.finished, Some(7));
        assert!(!exit.is_stopping());
    }

    #[test]
    fn no_start_in_time_is_a_hangup_that_stops_the_vm() {
        let dir = TempDir::new("svc-hang");
        let (svc, exit, _rx) = service(&dir, Duration::from_millis(200));
        let t0 = Instant::now();
        while !exit.is_stopping() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(matches!(exit.reason(), Some(VmExit::Killed(m)) if m.contains("HANGUP")));
        let o = svc.finish();
        assert!(o.hangup && !o.connected && !o.started);
    }

    #[test]
    fn over_long_lines_are_dropped_and_the_stream_goes_on() {
        let dir = TempDir::new("svc-long");
        let (svc, _exit, rx) = service(&dir, Duration::from_secs(30));
        let mut g = UnixStream::connect(dir.path().join("v.sock_5000")).unwrap();
        let long = vec![b'x'; 3 * MAX_LINE];
        g.write_all(&long).unwrap();
        g.write_all(b"\n{\"event\":\"started\"}\n").unwrap();
        assert_eq!(recv(&rx), GuestEvent::Started);
        drop(g);
        assert!(svc.finish().started);
    }

    #[test]
    fn one_hello_is_accepted_and_floods_of_hellos_and_connections_are_ignored() {
        let dir = TempDir::new("svc-hello");
        let (svc, _exit, rx) = service(&dir, Duration::from_secs(30));
        let sock = dir.path().join("v.sock_5000");
        let mut g = UnixStream::connect(&sock).unwrap();
        let hello = b"{\"event\":\"hello\",\"version\":1}\n";
        g.write_all(&hello.repeat(1000)).unwrap();
        // Refused connections while the first one is served.
        for _ in 0..200 {
            let mut extra = UnixStream::connect(&sock).unwrap();
            extra
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            assert_eq!(extra.read(&mut [0u8; 8]).unwrap(), 0, "refused: closed");
        }
        g.write_all(b"{\"event\":\"started\"}\n").unwrap();
        g.write_all(&hello.repeat(10)).unwrap();
        assert_eq!(recv(&rx), GuestEvent::Hello { version: 1 });
        assert_eq!(recv(&rx), GuestEvent::Started);
        drop(g);
        let o = svc.finish();
        assert!(o.hello && o.started);
        assert!(rx.try_recv().is_err(), "no second hello was passed on");
    }

    #[test]
    fn a_hello_counts_once_and_only_first() {
        let hello = GuestEvent::Hello { version: 1 };
        let mut o = PayloadOutcome::default();
        assert!(apply(&mut o, &hello));
        assert!(!apply(&mut o, &hello));
        let mut late = PayloadOutcome::default();
        assert!(apply(&mut late, &GuestEvent::Started));
        assert!(
            !apply(&mut late, &hello),
            "a hello after started is ignored"
        );
    }

    #[test]
    fn events_only_move_forward() {
        let mut o = PayloadOutcome::default();
        assert!(!apply(&mut o, &GuestEvent::Ready));
        assert!(!apply(&mut o, &GuestEvent::Finished { exit_code: 0 }));
        assert!(apply(&mut o, &GuestEvent::Started));
        assert!(!apply(&mut o, &GuestEvent::Started));
        assert!(apply(&mut o, &GuestEvent::Finished { exit_code: 3 }));
        assert!(!apply(&mut o, &GuestEvent::Ready));
        assert!(!apply(&mut o, &GuestEvent::Finished { exit_code: 4 }));
        let err = GuestEvent::Error {
            code: ErrorCode::Unknown,
            message: "x".into(),
        };
        assert!(!apply(&mut o, &err));
        let mut o = PayloadOutcome::default();
        assert!(apply(&mut o, &err));
        assert!(!apply(&mut o, &GuestEvent::Started));
        assert_eq!(o.finished, None);
    }
}
