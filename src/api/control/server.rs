//! The control server thread: poll(2) over a wake eventfd, the listener and the clients
//! (all non-blocking). Requests that wait on the VM or the guest (`pause`, `connect-vsock`)
//! run on short-lived helper threads that post their answer back; the server thread itself
//! only ever does non-blocking work, so one slow client or a busy VM cannot stall the others.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::events::{EventHub, SubscriberQueue};
use super::fdpass::send_with_fd;
use super::protocol::{
    API_VERSION, ErrorCode, Event, MAX_LINE, Method, Request, RequestError, error_line,
    parse_request, result_line,
};
use super::vsock_connect::connect_vsock;
use super::{ControlError, MAX_CLIENTS, VmHandle};
use crate::lifecycle::StopReason;
use crate::lines::{Frame, LineFramer};
use crate::log_limit::LogLimit;
use crate::poll::{poll, pollfd};
use crate::unix_socket::{BoundSocket, own_uid, peer_uid};
use crate::vmm::exit::VmExit;
use crate::vmm::pause::PauseError;

/// How long `pause` waits for every vCPU to park.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `connect-vsock` waits for the guest to accept.
const VSOCK_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the last events get to reach the subscribers when the VM has stopped.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes read from a client at a time.
const READ_CHUNK: usize = 16 << 10;

/// The bound control socket (mode 0600), before the VM runs. Dropping it removes the file.
pub struct ControlSocket {
    sock: BoundSocket,
}

impl ControlSocket {
    /// Binds `path`: a stale socket file is replaced, a live one (or any other file) refused.
    pub fn bind(path: &Path) -> Result<ControlSocket, ControlError> {
        let sock = BoundSocket::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| ControlError::Chmod {
                path: path.to_owned(),
                source,
            },
        )?;
        Ok(ControlSocket { sock })
    }

    pub fn path(&self) -> &Path {
        self.sock.path()
    }
}

struct Shared {
    shutdown: AtomicBool,
}

/// The running server. [`ControlServer::finish`] (or dropping it) ends it and removes the
/// socket file.
pub struct ControlServer {
    hub: Arc<EventHub>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Starts serving `socket` for the VM `vm`; events published into `hub` reach the
    /// subscribers.
    pub fn start(
        socket: ControlSocket,
        vm: VmHandle,
        hub: Arc<EventHub>,
    ) -> Result<ControlServer, ControlError> {
        let shared = Arc::new(Shared {
            shutdown: AtomicBool::new(false),
        });
        let (done_tx, done_rx) = mpsc::channel();
        let mut worker = Worker {
            sock: socket.sock,
            vm,
            hub: Arc::clone(&hub),
            shared: Arc::clone(&shared),
            clients: Vec::new(),
            next_token: 0,
            started: Instant::now(),
            done_tx,
            done_rx,
            stop_deadline: None,
            // The user micro-vmm was started as, and the one it drops to (--uid).
            uids: std::iter::once(own_uid())
                .chain(crate::sandbox::drop_uid())
                .collect(),
            pause_owner: Arc::new(Mutex::new(())),
        };
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                crate::sandbox::enter(crate::sandbox::ThreadKind::Control);
                worker.run()
            })
            .map_err(ControlError::Thread)?;
        Ok(ControlServer {
            hub,
            shared,
            thread: Some(thread),
        })
    }

    /// The VM has stopped: tells the subscribers (`state DEAD`, then `stopped` with the
    /// reason and exit code), gives them a moment to read it, closes every connection and
    /// removes the socket file.
    pub fn finish(mut self, reason: StopReason, exit_code: i32) {
        self.hub.publish(Event::State { state: "DEAD" });
        self.hub.publish(Event::Stopped {
            reason: reason.name(),
            exit_code,
        });
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.hub.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The answer of a helper thread.
struct Completion {
    token: u64,
    line: Vec<u8>,
    fd: Option<OwnedFd>,
    /// Published when the request succeeded.
    event: Option<Event>,
}

/// One queued output line, with the fd that travels with it.
struct Out {
    bytes: Arc<[u8]>,
    fd: Option<OwnedFd>,
}

struct Client {
    stream: UnixStream,
    token: u64,
    input: LineFramer,
    /// The peer shut down its writing side.
    eof: bool,
    /// The peer is gone (hang-up after EOF): nothing more to poll for.
    gone: bool,
    /// A request is on a helper thread; later requests wait (responses stay in order).
    busy: bool,
    /// Response lines not yet started.
    out: VecDeque<Out>,
    out_bytes: usize,
    /// The line being written and how much of it went.
    cur: Option<Out>,
    cur_off: usize,
    /// Set once subscribed.
    events: Option<SubscriberQueue>,
    dead: bool,
}

impl Client {
    fn new(stream: UnixStream, token: u64) -> Client {
        Client {
            stream,
            token,
            input: LineFramer::new(MAX_LINE),
            eof: false,
            gone: false,
            busy: false,
            out: VecDeque::new(),
            out_bytes: 0,
            cur: None,
            cur_off: 0,
            events: None,
            dead: false,
        }
    }

    fn queue(&mut self, line: Vec<u8>, fd: Option<OwnedFd>) {
        self.out_bytes += line.len();
        self.out.push_back(Out {
            bytes: Arc::from(line),
            fd,
        });
    }

    fn has_output(&self) -> bool {
        self.cur.is_some()
            || !self.out.is_empty()
            || self.events.as_ref().is_some_and(|q| !q.is_empty())
    }

    fn wants_input(&self) -> bool {
        !self.eof && !self.dead && self.input.wants_input()
    }

    /// Reads what is available (bounded by the line buffer).
    fn read(&mut self) {
        let mut chunk = [0u8; READ_CHUNK];
        while self.wants_input() {
            match (&self.stream).read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.input.push(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.dead = true,
            }
        }
    }

    /// Writes queued lines until the socket is full. Responses go before events, but a line
    /// once started is always finished first.
    fn flush(&mut self) {
        while !self.dead {
            if self.cur.is_none() {
                if let Some(o) = self.out.pop_front() {
                    self.out_bytes -= o.bytes.len();
                    self.cur = Some(o);
                } else if let Some(l) = self.events.as_mut().and_then(SubscriberQueue::pop) {
                    self.cur = Some(Out { bytes: l, fd: None });
                } else {
                    return;
                }
                self.cur_off = 0;
            }
            let Some(cur) = self.cur.as_mut() else {
                return;
            };
            let data = cur.bytes.get(self.cur_off..).unwrap_or_default();
            let sent = match cur.fd.take() {
                // The kernel holds its own reference once sent; ours closes when `fd` drops.
                Some(fd) => send_with_fd(&self.stream, data, fd.as_raw_fd()).inspect_err(|_| {
                    cur.fd = Some(fd);
                }),
                None => send_nosignal(&self.stream, data),
            };
            match sent {
                Ok(n) => {
                    self.cur_off += n;
                    if self.cur_off >= cur.bytes.len() {
                        self.cur = None;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.dead = true,
            }
        }
    }

    /// Done with: dead, gone, or at EOF with nothing left to do (subscribers stay until they
    /// close: they only read).
    fn finished(&self) -> bool {
        self.dead
            || (self.gone && !self.busy)
            || (self.eof
                && !self.busy
                && self.events.is_none()
                && !self.has_output()
                && self.input.is_empty())
    }
}

/// send(2) without SIGPIPE, non-blocking.
fn send_nosignal(sock: &UnixStream, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is a valid slice for the whole call; the result is checked.
    let n = unsafe {
        libc::send(
            sock.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// What the server does with a request right away.
enum Dispatch {
    Reply(Vec<u8>),
    /// A helper thread answers later.
    Later,
    Subscribe(Vec<u8>),
}

struct Worker {
    sock: BoundSocket,
    vm: VmHandle,
    hub: Arc<EventHub>,
    shared: Arc<Shared>,
    clients: Vec<Client>,
    next_token: u64,
    started: Instant,
    done_tx: Sender<Completion>,
    done_rx: Receiver<Completion>,
    /// A graceful stop's deadline and its length (for the message).
    stop_deadline: Option<(Instant, u64)>,
    uids: Vec<u32>,
    /// Serializes pause helper threads with each other.
    pause_owner: Arc<Mutex<()>>,
}

fn warn_limited(what: &str) {
    static LIMIT: LogLimit = LogLimit::new();
    if let Some(n) = LIMIT.hit() {
        log::warn!("control socket: {what} (#{n})");
    }
}

impl Worker {
    fn run(&mut self) {
        loop {
            let mut fds = vec![
                pollfd(self.hub.wake_fd().as_raw_fd(), libc::POLLIN),
                pollfd(self.sock.listener.as_raw_fd(), libc::POLLIN),
            ];
            let mut polled = Vec::with_capacity(self.clients.len());
            for (i, c) in self.clients.iter().enumerate() {
                if c.gone {
                    continue;
                }
                let mut ev = 0;
                if c.wants_input() {
                    ev |= libc::POLLIN;
                }
                if c.has_output() {
                    ev |= libc::POLLOUT;
                }
                fds.push(pollfd(c.stream.as_raw_fd(), ev));
                polled.push(i);
            }
            let timeout = self
                .stop_deadline
                .map(|(d, _)| d.saturating_duration_since(Instant::now()));
            if let Err(e) = poll(&mut fds, timeout) {
                log::error!("control socket: poll: {e}; the server stops");
                return;
            }
            if fds[0].revents != 0 {
                let _ = self.hub.wake_fd().read();
                self.take_completions();
                self.fan_out();
                if self.shared.shutdown.load(Ordering::SeqCst) {
                    // `finish` publishes before it sets the flag: events published after the
                    // drain above (the `stopped` event) are fanned out here, not lost.
                    self.fan_out();
                    self.final_flush();
                    return;
                }
            }
            if fds[1].revents != 0 {
                self.accept();
            }
            for (pfd, &i) in fds[2..].iter().zip(&polled) {
                if pfd.revents == 0 {
                    continue;
                }
                let c = &mut self.clients[i];
                if pfd.revents & libc::POLLERR != 0 {
                    c.dead = true;
                    continue;
                }
                if pfd.revents & (libc::POLLIN | libc::POLLHUP) != 0 {
                    c.read();
                }
                if pfd.revents & libc::POLLHUP != 0 && c.eof {
                    c.gone = true;
                }
                self.serve(i);
            }
            self.check_stop_deadline();
            self.clients.retain(|c| !c.finished());
        }
    }

    fn accept(&mut self) {
        loop {
            let stream = match self.sock.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: the connection waits in the backlog; try later.
                    warn_limited(&format!("accept: {e}"));
                    return;
                }
            };
            match peer_uid(&stream) {
                Ok(uid) if self.uids.contains(&uid) => {}
                Ok(uid) => {
                    warn_limited(&format!("refused a client with uid {uid}"));
                    continue;
                }
                Err(e) => {
                    warn_limited(&format!("cannot read a client's credentials: {e}"));
                    continue;
                }
            }
            if self.clients.len() >= MAX_CLIENTS {
                let line = error_line(
                    &Value::Null,
                    ErrorCode::Failed,
                    &format!("too many clients (at most {MAX_CLIENTS})"),
                );
                let _ = send_nosignal(&stream, &line);
                warn_limited("a client over the limit was refused");
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                warn_limited(&format!("a client: {e}"));
                continue;
            }
            self.next_token += 1;
            self.clients.push(Client::new(stream, self.next_token));
        }
    }

    /// Serves client `i`: requests (in order, one at a time while one waits on a helper),
    /// then output, until neither makes progress.
    fn serve(&mut self, i: usize) {
        loop {
            let mut progress = false;
            while let Some(c) = self.clients.get_mut(i)
                && !c.busy
                && !c.dead
                && c.out_bytes <= MAX_LINE
            {
                let Some(frame) = c.input.next_frame() else {
                    break;
                };
                progress = true;
                let token = c.token;
                let reply = match frame {
                    Frame::TooLong => Dispatch::Reply(error_line(
                        &Value::Null,
                        ErrorCode::LineTooLong,
                        &format!("a line over {MAX_LINE} bytes was skipped"),
                    )),
                    Frame::Line(l) => match parse_request(&l) {
                        Ok(req) => self.dispatch(token, req),
                        Err(e) => Dispatch::Reply(e.to_line()),
                    },
                };
                let c = &mut self.clients[i];
                match reply {
                    Dispatch::Reply(line) => c.queue(line, None),
                    Dispatch::Subscribe(line) => {
                        c.queue(line, None);
                        if c.events.is_none() {
                            c.events = Some(SubscriberQueue::default());
                        }
                    }
                    Dispatch::Later => c.busy = true,
                }
            }
            let Some(c) = self.clients.get_mut(i) else {
                return;
            };
            let before = (c.out.len(), c.cur_off, c.cur.is_some());
            c.flush();
            if (c.out.len(), c.cur_off, c.cur.is_some()) != before {
                progress = true;
            }
            if !progress || c.dead {
                return;
            }
        }
    }

    fn dispatch(&mut self, token: u64, req: Request) -> Dispatch {
        let id = req.id;
        let stopping = self.vm.exit.is_stopping();
        let stopped_err =
            || Dispatch::Reply(error_line(&id, ErrorCode::Stopped, "the VM is stopping"));
        match req.method {
            Method::Version => Dispatch::Reply(result_line(
                &id,
                json!({ "api_version": API_VERSION, "micro_vmm": env!("CARGO_PKG_VERSION") }),
            )),
            Method::Status => Dispatch::Reply(result_line(&id, self.status())),
            Method::Kill => {
                self.vm
                    .exit
                    .request(VmExit::Killed("killed through the control socket".into()));
                Dispatch::Reply(result_line(&id, json!({})))
            }
            Method::Subscribe => Dispatch::Subscribe(result_line(&id, json!({}))),
            _ if stopping => stopped_err(),
            Method::Stop { timeout_ms } => Dispatch::Reply(self.stop(&id, timeout_ms)),
            Method::Resume => {
                self.resume();
                Dispatch::Reply(result_line(&id, json!({})))
            }
            Method::Pause => self.spawn_pause(token, id),
            Method::Dump => self.spawn_dump(token, id),
            Method::ConnectVsock { port } => self.spawn_connect(token, id, port),
        }
    }

    fn status(&self) -> Value {
        let payload = self.vm.payload.as_ref().map(|p| p.status());
        let state = if self.vm.exit.is_stopping() {
            "DEAD"
        } else {
            match &payload {
                None => "STARTED",
                Some(p) if p.finished.is_some() => "FINISHED",
                Some(p) if p.ready => "READY",
                Some(p) if p.started => "STARTED",
                Some(_) => "STARTING",
            }
        };
        let info = &self.vm.info;
        json!({
            "state": state,
            "paused": self.vm.pause.is_paused(),
            "uptime_ms": self.started.elapsed().as_millis() as u64,
            "cpus": info.cpus,
            "memory_mib": info.memory_mib,
            "cid": info.cid,
            "payload": payload.map(|p| json!({
                "started": p.started,
                "ready": p.ready,
                "finished": p.finished,
                "error": p.error.map(|(code, message)| json!({"code": code, "message": message})),
            })),
        })
    }

    fn resume(&self) {
        if self.vm.pause.is_paused() {
            self.vm.pause.resume();
            self.hub.publish(Event::Resumed);
        }
    }

    /// Asks the agent, when there is one, and arms the deadline; otherwise kills at once.
    fn stop(&mut self, id: &Value, timeout_ms: u64) -> Vec<u8> {
        let graceful = match &self.vm.payload {
            Some(p) => {
                // The guest must run to stop itself.
                self.resume();
                p.request_shutdown()
            }
            None => false,
        };
        if graceful {
            let deadline = Instant::now() + Duration::from_millis(timeout_ms);
            match self.stop_deadline {
                Some((d, _)) if d <= deadline => {}
                _ => self.stop_deadline = Some((deadline, timeout_ms)),
            }
        } else {
            self.vm.exit.request(VmExit::Killed(
                "stopped through the control socket (no guest agent to ask)".into(),
            ));
        }
        result_line(id, json!({ "graceful": graceful }))
    }

    fn check_stop_deadline(&mut self) {
        if let Some((d, ms)) = self.stop_deadline
            && Instant::now() >= d
        {
            self.stop_deadline = None;
            self.vm.exit.request(VmExit::Killed(format!(
                "the guest did not stop within {ms} ms of a stop request"
            )));
        }
    }

    fn spawn_pause(&mut self, token: u64, id: Value) -> Dispatch {
        let pause = Arc::clone(&self.vm.pause);
        let owner = Arc::clone(&self.pause_owner);
        let transition = !pause.is_paused();
        self.spawn_helper("control-pause", token, id, move |id| {
            let _one_at_a_time = owner.lock().unwrap_or_else(PoisonError::into_inner);
            let (line, event) = match pause.pause(PAUSE_TIMEOUT) {
                Ok(()) => (
                    result_line(id, json!({})),
                    transition.then_some(Event::Paused),
                ),
                Err(PauseError::Stopping) => (
                    error_line(id, ErrorCode::Stopped, "the VM is stopping"),
                    None,
                ),
                Err(e) => (error_line(id, ErrorCode::Failed, &e.to_string()), None),
            };
            (line, None, event)
        })
    }

    fn spawn_dump(&mut self, token: u64, id: Value) -> Dispatch {
        let Some(dump) = self.vm.dump.clone() else {
            return Dispatch::Reply(
                RequestError::new(id, ErrorCode::Unsupported, "this VM has no state dump")
                    .to_line(),
            );
        };
        self.spawn_helper("control-dump", token, id, move |id| {
            let mut text = dump.collect(crate::vmm::dump::DUMP_TIMEOUT);
            // One response line must stay under the protocol's line limit (many vCPUs).
            let room = MAX_LINE / 2;
            if text.len() > room {
                let cut = (0..=room)
                    .rev()
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(0);
                text.truncate(cut);
                text.push_str("\n[truncated: SIGUSR1 prints the whole dump on stderr]\n");
            }
            (result_line(id, json!({ "dump": text })), None, None)
        })
    }

    fn spawn_connect(&mut self, token: u64, id: Value, port: u32) -> Dispatch {
        let Some(uds) = self.vm.info.vsock_uds.clone() else {
            return Dispatch::Reply(
                RequestError::new(id, ErrorCode::Unsupported, "this VM has no vsock device")
                    .to_line(),
            );
        };
        self.spawn_helper("control-vsock", token, id, move |id| {
            match connect_vsock(&uds, port, VSOCK_CONNECT_TIMEOUT) {
                Ok(s) => (
                    result_line(id, json!({ "port": port })),
                    Some(OwnedFd::from(s)),
                    None,
                ),
                Err(e) => (
                    error_line(id, ErrorCode::Failed, &e.to_string()),
                    None,
                    None,
                ),
            }
        })
    }

    /// Runs `work` (a request that may block) on a short-lived thread; its answer line, fd
    /// and event come back through the completion channel and a hub wake-up.
    fn spawn_helper(
        &mut self,
        name: &str,
        token: u64,
        id: Value,
        work: impl FnOnce(&Value) -> (Vec<u8>, Option<OwnedFd>, Option<Event>) + Send + 'static,
    ) -> Dispatch {
        let tx = self.done_tx.clone();
        let hub = Arc::clone(&self.hub);
        let fail_id = id.clone();
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .stack_size(64 << 10)
            .spawn(move || {
                crate::sandbox::enter(crate::sandbox::ThreadKind::ControlHelper);
                let (line, fd, event) = work(&id);
                let _ = tx.send(Completion {
                    token,
                    line,
                    fd,
                    event,
                });
                hub.wake();
            });
        match spawned {
            Ok(_) => Dispatch::Later,
            Err(e) => Dispatch::Reply(error_line(
                &fail_id,
                ErrorCode::Failed,
                &format!("cannot start a thread: {e}"),
            )),
        }
    }

    /// Hands helper-thread answers to their clients (a client that left loses its own answer
    /// only; a passed fd is then closed).
    fn take_completions(&mut self) {
        while let Ok(done) = self.done_rx.try_recv() {
            if let Some(e) = done.event {
                self.hub.publish(e);
            }
            let Some(i) = self.clients.iter().position(|c| c.token == done.token) else {
                continue;
            };
            let c = &mut self.clients[i];
            c.busy = false;
            c.queue(done.line, done.fd);
            self.serve(i);
        }
    }

    /// Copies published events into every subscriber's queue; drops subscribers that let
    /// too many pile up.
    fn fan_out(&mut self) {
        let events = self.hub.drain();
        if events.is_empty() {
            return;
        }
        for e in events {
            let line: Arc<[u8]> = Arc::from(e.to_line());
            for c in &mut self.clients {
                if let Some(q) = c.events.as_mut()
                    && q.push(Arc::clone(&line)).is_err()
                {
                    warn_limited("a subscriber that does not read was dropped");
                    c.dead = true;
                }
            }
        }
        for i in 0..self.clients.len() {
            if self.clients[i].events.is_some() {
                self.clients[i].flush();
            }
        }
    }

    /// Gives every client a bounded moment to take what is queued for it (the `stopped`
    /// event above all), then returns: the connections close and the socket file goes.
    fn final_flush(&mut self) {
        let deadline = Instant::now() + FINAL_FLUSH_TIMEOUT;
        loop {
            for c in &mut self.clients {
                c.flush();
            }
            self.clients.retain(|c| !c.dead && c.has_output());
            let left = deadline.saturating_duration_since(Instant::now());
            if self.clients.is_empty() || left.is_zero() {
                return;
            }
            let mut fds: Vec<libc::pollfd> = self
                .clients
                .iter()
                .map(|c| pollfd(c.stream.as_raw_fd(), libc::POLLOUT))
                .collect();
            if poll(&mut fds, Some(left)).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::control::fdpass::recv_with_fd;
    use crate::api::control::{PayloadControl, PayloadStatus, VmInfo};
    use crate::disk::testutil::TempDir;
    use crate::vmm::exit::ExitState;
    use crate::vmm::pause::PauseControl;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    struct FakeAgent {
        asked: AtomicBool,
        connected: bool,
    }

    impl PayloadControl for FakeAgent {
        fn status(&self) -> PayloadStatus {
            PayloadStatus {
                started: true,
                ready: false,
                finished: None,
                error: Some(("UNKNOWN".into(), "m".into())),
            }
        }
        fn request_shutdown(&self) -> bool {
            self.asked.store(true, Ordering::SeqCst);
            self.connected
        }
    }

    struct Fixture {
        _dir: TempDir,
        path: std::path::PathBuf,
        exit: Arc<ExitState>,
        server: Option<ControlServer>,
    }

    fn start(
        vsock_uds: Option<std::path::PathBuf>,
        payload: Option<Arc<dyn PayloadControl>>,
    ) -> Fixture {
        let dir = TempDir::new("control");
        let path = dir.path().join("c.sock");
        let exit = Arc::new(ExitState::new().unwrap());
        let vm = VmHandle {
            exit: Arc::clone(&exit),
            pause: Arc::new(PauseControl::new()),
            dump: None,
            info: VmInfo {
                cpus: 2,
                memory_mib: 64,
                cid: vsock_uds.as_ref().map(|_| 7),
                vsock_uds,
            },
            payload,
        };
        let hub = Arc::new(EventHub::new().unwrap());
        let server = ControlServer::start(ControlSocket::bind(&path).unwrap(), vm, hub).unwrap();
        Fixture {
            _dir: dir,
            path,
            exit,
            server: Some(server),
        }
    }

    fn ask(s: &UnixStream, line: &str) -> Value {
        (&*s).write_all(line.as_bytes()).unwrap();
        (&*s).write_all(b"\n").unwrap();
        let mut r = BufReader::new(s);
        let mut resp = String::new();
        r.read_line(&mut resp).unwrap();
        serde_json::from_str(&resp).unwrap()
    }

    fn connect(f: &Fixture) -> UnixStream {
        let s = UnixStream::connect(&f.path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    #[test]
    fn connect_vsock_passes_a_connected_fd() {
        let dir = TempDir::new("control-vsock");
        let uds = dir.path().join("v.sock");
        let l = UnixListener::bind(&uds).unwrap();
        let fake = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            assert_eq!(line, "CONNECT 5555\n");
            s.write_all(b"OK 1073741824\n").unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).unwrap();
            s.write_all(&b).unwrap();
        });
        let f = start(Some(uds), None);
        let c = connect(&f);
        (&c).write_all(b"{\"id\":9,\"method\":\"connect-vsock\",\"params\":{\"port\":5555}}\n")
            .unwrap();
        let mut buf = [0u8; 256];
        let (n, fd) = recv_with_fd(&c, &mut buf).unwrap();
        let v: Value = serde_json::from_slice(&buf[..n]).unwrap();
        assert_eq!(v, json!({"id": 9, "result": {"port": 5555}}));
        let mut g = UnixStream::from(fd.expect("the connection"));
        g.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        g.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping");
        fake.join().unwrap();
        // Nobody answers any more: `failed`, and the connection goes on.
        let v = ask(
            &c,
            r#"{"id":10,"method":"connect-vsock","params":{"port":5556}}"#,
        );
        assert_eq!(v["error"]["code"], "failed", "{v}");
        assert_eq!(ask(&c, r#"{"id":11,"method":"version"}"#)["id"], 11);
    }

    #[test]
    fn over_the_client_limit_is_told_and_closed() {
        let f = start(None, None);
        let clients: Vec<UnixStream> = (0..MAX_CLIENTS).map(|_| connect(&f)).collect();
        // Every one of them is served...
        for (i, c) in clients.iter().enumerate().step_by(16) {
            assert_eq!(
                ask(c, &format!(r#"{{"id":{i},"method":"status"}}"#))["id"],
                i
            );
        }
        // ...and one more is refused.
        let extra = connect(&f);
        let mut all = String::new();
        (&extra).read_to_string(&mut all).unwrap();
        let v: Value = serde_json::from_str(all.trim()).unwrap();
        assert_eq!(v["error"]["code"], "failed");
        assert!(v["id"].is_null());
        drop(clients);
        // Room again once they left.
        let mut ok = false;
        for _ in 0..100 {
            let c = connect(&f);
            (&c).write_all(b"{\"id\":1,\"method\":\"version\"}\n")
                .unwrap();
            let mut line = String::new();
            BufReader::new(&c).read_line(&mut line).unwrap();
            if line.contains("result") {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(ok);
    }

    #[test]
    fn app_status_stop_deadline_and_finish() {
        let agent = Arc::new(FakeAgent {
            asked: AtomicBool::new(false),
            connected: true,
        });
        let mut f = start(None, Some(agent.clone()));
        let c = connect(&f);
        let v = ask(&c, r#"{"id":"s","method":"status"}"#);
        assert_eq!(v["result"]["state"], "STARTED");
        assert_eq!(v["result"]["cid"], Value::Null);
        assert_eq!(
            v["result"]["payload"],
            json!({"started": true, "ready": false, "finished": null,
                   "error": {"code": "UNKNOWN", "message": "m"}})
        );
        let sub = connect(&f);
        assert_eq!(
            ask(&sub, r#"{"id":1,"method":"subscribe"}"#)["result"],
            json!({})
        );
        let v = ask(
            &c,
            r#"{"id":2,"method":"stop","params":{"timeout_ms":100}}"#,
        );
        assert_eq!(v["result"], json!({"graceful": true}));
        assert!(agent.asked.load(Ordering::SeqCst));
        // The agent does nothing: the deadline kills.
        let t0 = Instant::now();
        while !f.exit.is_stopping() {
            assert!(t0.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(matches!(f.exit.reason(), Some(VmExit::Killed(m)) if m.contains("100 ms")));
        assert_eq!(
            ask(&c, r#"{"id":3,"method":"status"}"#)["result"]["state"],
            "DEAD"
        );
        assert_eq!(
            ask(&c, r#"{"id":4,"method":"pause"}"#)["error"]["code"],
            "stopped"
        );
        f.server.take().unwrap().finish(StopReason::Killed, 137);
        let mut rest = String::new();
        (&sub).read_to_string(&mut rest).unwrap();
        assert_eq!(
            rest,
            "{\"event\":{\"state\":\"DEAD\",\"type\":\"state\"}}\n\
             {\"event\":{\"exit_code\":137,\"reason\":\"KILLED\",\"type\":\"stopped\"}}\n"
        );
        assert!(!f.path.exists(), "the socket file is removed");
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let f = start(None, None);
        let c = connect(&f);
        let mut batch = String::new();
        for i in 0..200 {
            let m = ["status", "pause", "version", "resume"][i % 4];
            batch.push_str(&format!("{{\"id\":{i},\"method\":\"{m}\"}}\n"));
        }
        (&c).write_all(batch.as_bytes()).unwrap();
        let mut r = BufReader::new(&c);
        for i in 0..200 {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["id"], i, "{line}");
            assert!(v.get("result").is_some(), "{line}");
        }
    }
}
