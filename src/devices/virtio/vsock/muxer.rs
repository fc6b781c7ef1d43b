//! The host side of the device: the listener at `uds_path`, the `CONNECT` handshake, host
//! ports, the host sockets of all connections (a slab indexed by the epoll data tag), their
//! epoll interest and the timeouts. `guest` holds the translation between guest packets and
//! socket I/O.
//!
//! Only the event-loop thread calls in here, always with the `EventOps` of the device's
//! subscription, so every fd is removed from epoll before it is closed. Nothing blocks: host
//! sockets are non-blocking, connects to `<uds_path>_<port>` too (a full backlog is retried on
//! the timer until the connect timeout), and a host socket is read only when a guest buffer
//! and guest credit are at hand.

mod guest;

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use event_manager::{EventOps, Events};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::timerfd::TimerFd;

use super::connection::{Connection, State, Step};
use super::handshake::{Line, LineBuf};
use super::packet::Header;
use super::{
    CONN_TIMEOUT, HOST_PORT_FIRST, MAX_BUFFERED, MAX_CONNECTIONS, MAX_PENDING_RST, MIN_CONN_BUF,
    TIMER_TICK, VsockError,
};
use crate::log_limit::LogLimit;
use crate::unix_socket::{
    Connect, bind_listener, connect_nonblocking, remove_if_ours, set_nonblocking,
};

/// Epoll data tags of the device's subscription; a connection's tag is `EV_CONN_BASE + slot`.
pub const EV_RX: u32 = 0;
pub const EV_TX: u32 = 1;
pub const EV_LISTENER: u32 = 2;
pub const EV_TIMER: u32 = 3;
pub const EV_CONN_BASE: u32 = 16;

/// Host connections accepted per listener wakeup (the rest wait for the next one).
const ACCEPT_BATCH: usize = 128;

static BAD_PACKET: LogLimit = LogLimit::new();
static HOST_CONN: LogLimit = LogLimit::new();
static LIMITS: LogLimit = LogLimit::new();
static HOST_IO: LogLimit = LogLimit::new();
/// epoll and timer failures (a guest opening connections can run the host out of watches).
static HOST_EPOLL: LogLimit = LogLimit::new();

/// A connection and its host socket.
struct Slot {
    /// None once closed, or while a connect waits to be retried.
    stream: Option<UnixStream>,
    /// In the epoll set (so it must be removed before the stream is dropped).
    registered: bool,
    interest: EventSet,
    /// In the ready queue.
    queued: bool,
    /// The host port handed out for a host-initiated connection.
    host_port: Option<u32>,
    line: LineBuf,
    conn: Connection,
}

impl Slot {
    fn new(stream: Option<UnixStream>, conn: Connection) -> Slot {
        Slot {
            stream,
            registered: false,
            interest: EventSet::empty(),
            queued: false,
            host_port: None,
            line: LineBuf::default(),
            conn,
        }
    }
}

pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    /// (device, inode) of the socket file we created, so Drop removes only ours.
    listener_id: (u64, u64),
    listener_paused: bool,
    timer: TimerFd,
    timer_armed: bool,
    timeout: Duration,
    tick: Duration,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    count: usize,
    /// Most connections, and the budget the connections' windows come from
    /// ([`MAX_CONNECTIONS`], [`MAX_BUFFERED`]; smaller in tests), and how much of it is given.
    max_connections: usize,
    max_buffered: u64,
    granted: u64,
    /// Connections holding a window (handshakes hold none).
    windowed: usize,
    /// (host port, guest port) to slot.
    by_key: HashMap<(u32, u32), usize>,
    host_ports: HashSet<u32>,
    last_host_port: u32,
    /// Connections owing the guest a packet, each at most once, served round-robin.
    ready: VecDeque<usize>,
    /// RSTs for guest packets that match no connection.
    rsts: VecDeque<Header>,
    scratch: Vec<u8>,
}

impl Muxer {
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Muxer, VsockError> {
        let (listener, listener_id) = bind_listener(uds_path)?;
        let host = |what| move |source| VsockError::Host { what, source };
        let timer = TimerFd::new().map_err(|e| host("timer")(io::Error::from(e)))?;
        // The timer is read when epoll says so, but a re-arm in between resets its count:
        // a blocking read could then hang the loop.
        set_nonblocking(&timer).map_err(host("timer"))?;
        Ok(Muxer {
            guest_cid,
            uds_path: uds_path.to_owned(),
            listener,
            listener_id,
            listener_paused: false,
            timer,
            timer_armed: false,
            timeout: CONN_TIMEOUT,
            tick: TIMER_TICK,
            slots: Vec::new(),
            free: Vec::new(),
            count: 0,
            max_connections: MAX_CONNECTIONS,
            max_buffered: MAX_BUFFERED,
            granted: 0,
            windowed: 0,
            by_key: HashMap::new(),
            host_ports: HashSet::new(),
            last_host_port: HOST_PORT_FIRST - 1,
            ready: VecDeque::new(),
            rsts: VecDeque::new(),
            scratch: Vec::new(),
        })
    }

    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    /// Shorter timeouts for tests.
    #[cfg(test)]
    pub fn set_timeouts(&mut self, timeout: Duration, tick: Duration) {
        self.timeout = timeout;
        self.tick = tick;
    }

    /// Smaller limits for tests.
    #[cfg(test)]
    pub fn set_limits(&mut self, max_connections: usize, max_buffered: u64) {
        self.max_connections = max_connections;
        self.max_buffered = max_buffered;
    }

    /// Connections of all kinds.
    pub fn connections(&self) -> usize {
        self.count
    }

    /// The windows given to connections, together (at most the budget).
    #[cfg(test)]
    pub fn granted(&self) -> u64 {
        self.granted
    }

    /// Guest bytes waiting for host sockets, over all connections.
    pub fn buffered(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .map(|s| s.conn.txbuf.len())
            .sum()
    }

    pub fn register(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(&self.listener, EV_LISTENER, EventSet::IN)) {
            log::error!("vsock: cannot watch the listener: {e:?}");
        }
        if let Err(e) = ops.add(Events::with_data(&self.timer, EV_TIMER, EventSet::IN)) {
            log::error!("vsock: cannot watch the timer: {e:?}");
        }
    }

    pub fn has_rx_work(&self) -> bool {
        !self.rsts.is_empty() || !self.ready.is_empty()
    }

    /// The TX queue must wait: another packet could need an RST there is no room for.
    pub fn tx_blocked(&self) -> bool {
        self.rsts.len() >= MAX_PENDING_RST
    }

    // ---- limits ----

    /// Whether one more connection may start: under the connection cap, with at least the
    /// smallest window left in the budget.
    fn room_for_one_more(&self) -> Result<(), &'static str> {
        if self.count >= self.max_connections {
            Err("the connection limit")
        } else if self.max_buffered.saturating_sub(self.granted) < u64::from(MIN_CONN_BUF) {
            Err("the buffer budget")
        } else {
            Ok(())
        }
    }

    /// Gives a connection its window, or widens it towards [`CONN_BUF_SIZE`]: first
    /// [`MIN_CONN_BUF`] (when [`Muxer::room_for_one_more`] said so), then whatever the budget
    /// has beyond the [`MIN_CONN_BUF`] kept for each connection that may still come.
    fn grow_window(&mut self, idx: usize) {
        let min = u64::from(MIN_CONN_BUF);
        let left = self.max_buffered.saturating_sub(self.granted);
        let (max, windowed) = (self.max_connections, self.windowed);
        let Some(s) = self.slots.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let wanted = u64::from(s.conn.window_wanted());
        if wanted == 0 {
            return;
        }
        let first = s.conn.window() == 0;
        let still_to_come = max.saturating_sub(windowed + usize::from(first)) as u64;
        let base = if first { min.min(left) } else { 0 };
        let pool = (left - base).saturating_sub(still_to_come * min);
        let extra = (base + pool).min(wanted) as u32;
        if extra > 0 {
            s.conn.grow_window(extra);
            self.granted += u64::from(extra);
            if first {
                self.windowed += 1;
            }
        }
    }

    // ---- slots ----

    fn slot(&mut self, idx: usize) -> Option<&mut Slot> {
        self.slots.get_mut(idx).and_then(Option::as_mut)
    }

    fn alloc(&mut self, slot: Slot) -> usize {
        self.count += 1;
        match self.free.pop() {
            Some(idx) => {
                self.slots[idx] = Some(slot);
                idx
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        }
    }

    /// Closes the host socket (after taking it out of epoll).
    fn close_host(&mut self, idx: usize, ops: &mut EventOps) {
        let Some(s) = self.slot(idx) else { return };
        if let Some(stream) = s.stream.take()
            && s.registered
            && let Err(e) = ops.remove(Events::empty(&stream))
            && let Some(n) = HOST_EPOLL.hit()
        {
            log::warn!("vsock: cannot stop watching a host socket ({n}x): {e:?}");
        }
        s.registered = false;
        s.interest = EventSet::empty();
    }

    /// Forgets a connection entirely (no RST).
    fn free_slot(&mut self, idx: usize, ops: &mut EventOps) {
        self.close_host(idx, ops);
        let Some(s) = self.slots.get_mut(idx).and_then(Option::take) else {
            return;
        };
        let key = (s.conn.local_port, s.conn.peer_port);
        if self.by_key.get(&key) == Some(&idx) {
            self.by_key.remove(&key);
        }
        if let Some(p) = s.host_port {
            self.host_ports.remove(&p);
        }
        if s.queued {
            self.ready.retain(|&i| i != idx);
        }
        if s.conn.window() > 0 {
            self.granted -= u64::from(s.conn.window());
            self.windowed -= 1;
        }
        self.count -= 1;
        self.free.push(idx);
    }

    /// Closes the host socket; the guest gets an RST if it knows the connection.
    fn kill(&mut self, idx: usize, ops: &mut EventOps) {
        self.close_host(idx, ops);
        let Some(s) = self.slot(idx) else { return };
        s.conn.kill();
        if s.conn.guest_knows() {
            self.mark_ready(idx);
        } else {
            self.free_slot(idx, ops);
        }
    }

    fn mark_ready(&mut self, idx: usize) {
        if let Some(s) = self.slots.get_mut(idx).and_then(Option::as_mut)
            && !s.queued
            && s.conn.has_rx()
        {
            s.queued = true;
            self.ready.push_back(idx);
        }
    }

    fn register_stream(&mut self, idx: usize, ops: &mut EventOps) -> bool {
        let Some(s) = self.slot(idx) else {
            return false;
        };
        let Some(stream) = s.stream.as_ref() else {
            return false;
        };
        let interest = interest_set(&s.conn);
        let data = EV_CONN_BASE + idx as u32;
        match ops.add(Events::with_data(stream, data, interest)) {
            Ok(()) => {
                s.registered = true;
                s.interest = interest;
                true
            }
            Err(e) => {
                if let Some(n) = HOST_EPOLL.hit() {
                    log::warn!("vsock: cannot watch a host socket ({n}x): {e:?}");
                }
                false
            }
        }
    }

    fn sync_interest(&mut self, idx: usize, ops: &mut EventOps) {
        let Some(s) = self.slot(idx) else { return };
        let (true, Some(stream)) = (s.registered, s.stream.as_ref()) else {
            return;
        };
        let want = interest_set(&s.conn);
        if want != s.interest {
            let data = EV_CONN_BASE + idx as u32;
            match ops.modify(Events::with_data(stream, data, want)) {
                Ok(()) => s.interest = want,
                Err(e) => {
                    if let Some(n) = HOST_EPOLL.hit() {
                        log::warn!("vsock: cannot change a host socket's events ({n}x): {e:?}");
                    }
                }
            }
        }
    }

    fn set_deadline(&mut self, idx: usize) {
        let timeout = self.timeout;
        if let Some(s) = self.slot(idx) {
            s.conn.deadline = Some(Instant::now() + timeout);
            self.arm_timer();
        }
    }

    fn arm_timer(&mut self) {
        if !self.timer_armed {
            match self.timer.reset(self.tick, Some(self.tick)) {
                Ok(()) => self.timer_armed = true,
                Err(e) => {
                    if let Some(n) = HOST_EPOLL.hit() {
                        log::error!("vsock: cannot arm the timer ({n}x): {e}");
                    }
                }
            }
        }
    }

    /// Settles a connection after a change: half-closes, closes, close timeout, epoll
    /// interest, ready queue.
    fn after_change(&mut self, idx: usize, ops: &mut EventOps) {
        loop {
            let Some(s) = self.slot(idx) else { return };
            match s.conn.step() {
                Step::Nothing => break,
                Step::ShutdownHostWrite => {
                    if let Some(stream) = s.stream.as_ref() {
                        // The host may be gone already; then there is nothing to tell it.
                        let _ = stream.shutdown(Shutdown::Write);
                    }
                    s.conn.host_write_shut();
                }
                Step::Kill => return self.kill(idx, ops),
            }
        }
        if let Some(s) = self.slot(idx)
            && s.conn.wants_close_timeout()
            && s.conn.deadline.is_none()
        {
            self.set_deadline(idx);
        }
        self.sync_interest(idx, ops);
        self.mark_ready(idx);
    }

    /// Writes buffered guest bytes to the host socket.
    fn flush(&mut self, idx: usize) -> io::Result<()> {
        let Some(s) = self.slot(idx) else {
            return Ok(());
        };
        let Some(stream) = s.stream.as_mut() else {
            return Ok(());
        };
        let n = s.conn.txbuf.flush(stream)?;
        s.conn.forwarded(n);
        Ok(())
    }

    // ---- host side events ----

    pub fn handle_listener(&mut self, ops: &mut EventOps) {
        for _ in 0..ACCEPT_BATCH {
            match self.listener.accept() {
                Ok((stream, _)) => self.host_connected(stream, ops),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if let Some(n) = LIMITS.hit() {
                        log::warn!("vsock: accept failed ({n}x): {e}; pausing the listener");
                    }
                    // Out of fds or memory: the listener stays readable, so stop watching it
                    // until the next tick instead of spinning.
                    let paused = Events::with_data(&self.listener, EV_LISTENER, EventSet::empty());
                    if ops.modify(paused).is_ok() {
                        self.listener_paused = true;
                        self.arm_timer();
                    }
                    return;
                }
            }
        }
    }

    fn host_connected(&mut self, stream: UnixStream, ops: &mut EventOps) {
        if self.count >= self.max_connections {
            if let Some(n) = LIMITS.hit() {
                log::warn!(
                    "vsock: {} connections, refusing a host one ({n}x)",
                    self.max_connections
                );
            }
            return;
        }
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let idx = self.alloc(Slot::new(Some(stream), Connection::handshake()));
        self.set_deadline(idx);
        if !self.register_stream(idx, ops) {
            self.free_slot(idx, ops);
        }
    }

    pub fn handle_conn_event(&mut self, idx: usize, fd: RawFd, set: EventSet, ops: &mut EventOps) {
        let Some(s) = self.slot(idx) else { return };
        if !s.registered || s.stream.as_ref().map(AsRawFd::as_raw_fd) != Some(fd) {
            return;
        }
        let hup = set.intersects(EventSet::HANG_UP | EventSet::READ_HANG_UP);
        match s.conn.state() {
            State::Handshake => self.read_handshake(idx, ops),
            State::Connecting => self.finish_connect(idx, ops),
            State::LocalInit => {
                if set.intersects(EventSet::HANG_UP | EventSet::ERROR) {
                    self.kill(idx, ops);
                }
            }
            State::Established => {
                if set.contains(EventSet::ERROR) {
                    return self.kill(idx, ops);
                }
                if set.contains(EventSet::HANG_UP) {
                    // Gone both ways. HUP is reported whatever the interest, so leave epoll:
                    // what is left to read is there already (a read cannot block any more).
                    s.conn.set_host_hup();
                    if let Some(stream) = s.stream.as_ref() {
                        let _ = ops.remove(Events::empty(stream));
                    }
                    s.registered = false;
                    s.interest = EventSet::empty();
                }
                if set.contains(EventSet::IN) || hup {
                    s.conn.set_host_readable();
                }
                if (set.contains(EventSet::OUT) || hup)
                    && !s.conn.txbuf.is_empty()
                    && let Err(e) = self.flush(idx)
                {
                    if let Some(n) = HOST_IO.hit() {
                        log::debug!("vsock: write to a host socket failed ({n}x): {e}");
                    }
                    return self.kill(idx, ops);
                }
                self.after_change(idx, ops);
            }
            State::Killed => {}
        }
    }

    fn read_handshake(&mut self, idx: usize, ops: &mut EventOps) {
        let Some(s) = self.slot(idx) else { return };
        let Some(stream) = s.stream.as_mut() else {
            return;
        };
        // One byte at a time, so nothing after the newline is consumed; LineBuf ends the
        // loop after CONNECT_LINE_MAX bytes.
        let result = loop {
            let mut b = [0u8; 1];
            match stream.read(&mut b) {
                Ok(0) => break Err("closed before the end of its CONNECT line"),
                Ok(_) => match s.line.push(b[0]) {
                    Line::Partial => {}
                    Line::Invalid => break Err("sent a bad CONNECT line"),
                    Line::Port(port) => break Ok(Some(port)),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break Err("failed during its CONNECT line"),
            }
        };
        match result {
            Ok(None) => {}
            Ok(Some(port)) => self.start_host_connect(idx, port, ops),
            Err(why) => {
                if let Some(n) = HOST_CONN.hit() {
                    log::debug!("vsock: a host connection {why}; closed ({n}x)");
                }
                self.free_slot(idx, ops);
            }
        }
    }

    fn alloc_host_port(&mut self, guest_port: u32) -> Option<u32> {
        for _ in 0..=MAX_CONNECTIONS {
            let p = (self.last_host_port.wrapping_add(1) & !(1 << 31)) | HOST_PORT_FIRST;
            self.last_host_port = p;
            if !self.host_ports.contains(&p) && !self.by_key.contains_key(&(p, guest_port)) {
                return Some(p);
            }
        }
        None
    }

    /// A complete `CONNECT <port>` line: ask the guest (if the budget has room for its
    /// window; the host socket is closed otherwise).
    fn start_host_connect(&mut self, idx: usize, guest_port: u32, ops: &mut EventOps) {
        // This connection is counted already; only the budget can refuse it here.
        if self.max_buffered.saturating_sub(self.granted) < u64::from(MIN_CONN_BUF) {
            if let Some(n) = LIMITS.hit() {
                log::warn!("vsock: buffer budget used up, refusing a host connection ({n}x)");
            }
            return self.free_slot(idx, ops);
        }
        let Some(host_port) = self.alloc_host_port(guest_port) else {
            return self.free_slot(idx, ops);
        };
        self.grow_window(idx);
        self.host_ports.insert(host_port);
        self.by_key.insert((host_port, guest_port), idx);
        if let Some(s) = self.slot(idx) {
            s.host_port = Some(host_port);
            s.conn.start_local_init(host_port, guest_port);
        }
        self.set_deadline(idx);
        self.sync_interest(idx, ops);
        self.mark_ready(idx);
    }

    /// The guest accepted a host program's connection: `OK <host port>\n`.
    fn host_connect_accepted(&mut self, idx: usize, ops: &mut EventOps) {
        let Some(s) = self.slot(idx) else { return };
        s.conn.deadline = None;
        let line = format!("OK {}\n", s.conn.local_port);
        s.conn.txbuf.push_uncounted(line.as_bytes());
        if let Err(e) = self.flush(idx) {
            // The host program left early (CH #3485): nothing to report to anybody but it.
            if let Some(n) = HOST_IO.hit() {
                log::debug!("vsock: cannot write OK to a host socket ({n}x): {e}");
            }
            self.kill(idx, ops);
        }
    }

    fn finish_connect(&mut self, idx: usize, ops: &mut EventOps) {
        let Some(s) = self.slot(idx) else { return };
        let Some(stream) = s.stream.as_ref() else {
            return;
        };
        match stream.take_error() {
            Ok(None) => {
                s.conn.connected();
                s.conn.deadline = None;
                self.after_change(idx, ops);
            }
            Ok(Some(_)) | Err(_) => self.kill(idx, ops),
        }
    }

    /// The host path for guest connections to host port `port`.
    fn port_path(&self, port: u32) -> PathBuf {
        let mut p = OsString::from(self.uds_path.as_os_str());
        p.push(format!("_{port}"));
        PathBuf::from(p)
    }

    /// Tries the connect of a guest-initiated connection (again).
    fn try_connect(&mut self, idx: usize, ops: &mut EventOps) {
        let Some(port) = self.slot(idx).map(|s| s.conn.local_port) else {
            return;
        };
        let path = self.port_path(port);
        let result = connect_nonblocking(&path);
        let Some(s) = self.slot(idx) else { return };
        match result {
            Ok(Connect::Done(stream)) => {
                s.stream = Some(stream);
                s.conn.connected();
                s.conn.deadline = None;
                if !self.register_stream(idx, ops) {
                    return self.kill(idx, ops);
                }
                self.after_change(idx, ops);
            }
            Ok(Connect::InProgress(stream)) => {
                s.stream = Some(stream);
                if !self.register_stream(idx, ops) {
                    self.kill(idx, ops);
                }
            }
            // Backlog full: try again on the next tick until the deadline.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                if let Some(n) = HOST_CONN.hit() {
                    log::debug!(
                        "vsock: guest connection to {} refused ({n}x): {e}",
                        path.display()
                    );
                }
                self.kill(idx, ops);
            }
        }
    }

    pub fn handle_timer(&mut self, ops: &mut EventOps) {
        // Non-blocking: a re-arm since the wakeup may have cleared the count.
        let _ = self.timer.wait();
        if self.listener_paused {
            let events = Events::with_data(&self.listener, EV_LISTENER, EventSet::IN);
            if ops.modify(events).is_ok() {
                self.listener_paused = false;
            }
        }
        let now = Instant::now();
        let mut pending = self.listener_paused;
        for idx in 0..self.slots.len() {
            let Some(s) = self.slot(idx) else { continue };
            let Some(deadline) = s.conn.deadline else {
                continue;
            };
            if deadline <= now {
                let state = s.conn.state();
                if let Some(n) = HOST_CONN.hit() {
                    log::debug!("vsock: connection timed out in state {state:?} ({n}x)");
                }
                match state {
                    State::Handshake => self.free_slot(idx, ops),
                    // A host program's request the guest did not answer: closed without OK.
                    _ => self.kill(idx, ops),
                }
                continue;
            }
            if s.conn.state() == State::Connecting && s.stream.is_none() {
                self.try_connect(idx, ops);
            }
            pending |= self.slot(idx).is_some_and(|s| s.conn.deadline.is_some());
        }
        if !pending && self.timer_armed {
            match self.timer.clear() {
                Ok(()) => self.timer_armed = false,
                Err(e) => {
                    if let Some(n) = HOST_EPOLL.hit() {
                        log::warn!("vsock: cannot stop the timer ({n}x): {e}");
                    }
                }
            }
        }
    }

    /// The driver reset the device: every connection the guest knew is gone (host programs
    /// still in their handshake stay).
    pub fn reset(&mut self, ops: &mut EventOps) {
        for idx in 0..self.slots.len() {
            if self
                .slot(idx)
                .is_some_and(|s| s.conn.state() != State::Handshake)
            {
                self.free_slot(idx, ops);
            }
        }
        self.rsts.clear();
    }
}

fn interest_set(conn: &Connection) -> EventSet {
    let (r, w) = conn.interest();
    let mut set = EventSet::empty();
    if r {
        set |= EventSet::IN;
    }
    if w {
        set |= EventSet::OUT;
    }
    set
}

impl Drop for Muxer {
    fn drop(&mut self) {
        // Remove the socket file only if it is still the one we bound.
        remove_if_ours(&self.uds_path, self.listener_id);
    }
}
