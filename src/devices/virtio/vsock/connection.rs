//! One vsock connection as pure logic: its state, what it owes the guest, the credit
//! accounting both ways, the half-close bookkeeping, and the buffer of guest-to-host bytes
//! the host program has not taken yet. The muxer does the socket I/O and reports back.
//!
//! Credit (virtio 1.2 §5.10.6.3): each side advertises `buf_alloc` and `fwd_cnt` (bytes it has
//! passed on) in every packet; a sender may have at most `buf_alloc - (sent - fwd_cnt)` bytes
//! in flight. Towards the guest the device never exceeds that; from the guest, a packet that
//! exceeds the credit the device last advertised is a violation and resets the connection.
//!
//! The window the device advertises (`buf_alloc`) is per connection: the muxer grants it from
//! a budget shared by all connections and only ever grows it, so credit once given is never
//! taken back and the guest-to-host bytes buffered host-side stay within the budget.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::num::Wrapping;
use std::time::Instant;

use super::{CONN_BUF_SIZE, shutdown};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A host program connected to `uds_path`; its `CONNECT` line is not complete yet.
    Handshake,
    /// A host program asked for a guest port: the REQUEST is queued or sent, the guest has not
    /// answered yet.
    LocalInit,
    /// The guest asked for a host port: connecting to `<uds_path>_<port>`.
    Connecting,
    Established,
    /// The host socket is closed and the guest is owed an RST; the connection is forgotten
    /// once it is sent.
    Killed,
}

/// The packets a connection can owe the guest, in the order they are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxKind {
    Rst,
    Request,
    Response,
    /// Bytes from the host socket (the muxer reads them into the guest's buffer).
    Data,
    Shutdown(u32),
    CreditUpdate,
    CreditRequest,
}

/// What the connection needs done after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// The guest sent everything it will send: `shutdown(Write)` the host socket.
    ShutdownHostWrite,
    /// Both directions are finished (or cannot go on): close the host socket, RST the guest.
    Kill,
}

/// Guest-to-host bytes the host socket has not accepted yet, in order. Leading "uncounted"
/// bytes (the `OK <port>\n` line) are the device's own and do not count as forwarded.
#[derive(Debug, Default)]
pub struct TxBuf {
    data: VecDeque<u8>,
    uncounted: usize,
}

/// Capacity kept after the buffer drains; anything above is given back.
const TXBUF_KEEP: usize = 64 * 1024;
/// Most the buffer ever holds: a full credit window and the OK line.
const TXBUF_MAX: usize = CONN_BUF_SIZE as usize + 32;

impl TxBuf {
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Device bytes (the OK line); only valid while nothing else is queued.
    pub fn push_uncounted(&mut self, bytes: &[u8]) {
        debug_assert_eq!(self.data.len(), self.uncounted);
        self.push(bytes);
        self.uncounted += bytes.len();
    }

    pub fn push(&mut self, bytes: &[u8]) {
        // Grow by doubling, but never past what the credit allows (plus the OK line), so a
        // full buffer costs CONN_BUF_SIZE, not the next power of two.
        let need = self.data.len() + bytes.len();
        if need > self.data.capacity() {
            let cap = (self.data.capacity() * 2).clamp(need, need.max(TXBUF_MAX));
            self.data.reserve_exact(cap - self.data.len());
        }
        self.data.extend(bytes);
    }

    /// Writes as much as `w` takes without blocking; returns how many guest bytes left.
    pub fn flush<W: Write>(&mut self, w: &mut W) -> io::Result<u32> {
        let mut forwarded = 0usize;
        while !self.data.is_empty() {
            let (front, _) = self.data.as_slices();
            match w.write(front) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.data.drain(..n);
                    let own = n.min(self.uncounted);
                    self.uncounted -= own;
                    forwarded += n - own;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.data.is_empty() && self.data.capacity() > TXBUF_KEEP {
            self.data = VecDeque::new();
        }
        Ok(u32::try_from(forwarded).unwrap_or(u32::MAX))
    }

    pub fn clear(&mut self) {
        self.data = VecDeque::new();
        self.uncounted = 0;
    }
}

/// Forwarded bytes after which the guest is told its new credit without being asked: a
/// quarter of the window.
pub fn credit_update_threshold(window: u32) -> u32 {
    (window / 4).max(1)
}

#[derive(Debug)]
pub struct Connection {
    state: State,
    /// Port on the host side (CID 2) and on the guest side.
    pub local_port: u32,
    pub peer_port: u32,
    /// Whether the guest has heard of this connection (so it must get an RST when it dies).
    guest_knows: bool,
    request_pending: bool,
    response_pending: bool,
    credit_update_pending: bool,
    credit_request_pending: bool,
    /// A CREDIT_REQUEST was sent for the current stall.
    credit_requested: bool,
    // Guest to host: the window we advertise (`buf_alloc`, never shrinks), bytes received,
    // bytes handed to the host socket, and the `fwd_cnt` the guest last heard.
    buf_alloc: u32,
    rx_cnt: Wrapping<u32>,
    fwd_cnt: Wrapping<u32>,
    last_fwd_sent: Wrapping<u32>,
    // Host to guest: the guest's buffer and counter, and bytes sent.
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    tx_cnt: Wrapping<u32>,
    /// SHUTDOWN flags the guest sent (accumulated).
    peer_shut: u32,
    /// SHUTDOWN flags sent to the guest.
    shut_sent: u32,
    /// The host socket has bytes (or EOF) to read and epoll interest in it is off.
    host_readable: bool,
    /// The host program sent EOF (shutdown(SHUT_WR) or close).
    host_eof: bool,
    /// The host program is gone in both directions (EPOLLHUP).
    host_hup: bool,
    /// The host socket was shut down for writing (the guest sent SEND and the buffer drained).
    host_write_shut: bool,
    pub txbuf: TxBuf,
    /// When the current handshake, request, connect or close gives up.
    pub deadline: Option<Instant>,
}

impl Connection {
    fn new(state: State, local_port: u32, peer_port: u32) -> Connection {
        Connection {
            state,
            local_port,
            peer_port,
            guest_knows: false,
            request_pending: false,
            response_pending: false,
            credit_update_pending: false,
            credit_request_pending: false,
            credit_requested: false,
            buf_alloc: 0,
            rx_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            last_fwd_sent: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            tx_cnt: Wrapping(0),
            peer_shut: 0,
            shut_sent: 0,
            host_readable: false,
            host_eof: false,
            host_hup: false,
            host_write_shut: false,
            txbuf: TxBuf::default(),
            deadline: None,
        }
    }

    /// A host program connected; its ports are known once its `CONNECT` line is.
    pub fn handshake() -> Connection {
        Connection::new(State::Handshake, 0, 0)
    }

    /// The host program asked for guest port `peer_port`; `local_port` is its host port.
    pub fn start_local_init(&mut self, local_port: u32, peer_port: u32) {
        self.state = State::LocalInit;
        self.local_port = local_port;
        self.peer_port = peer_port;
        self.request_pending = true;
    }

    /// The guest asked for host port `local_port` from `peer_port`.
    pub fn guest_request(local_port: u32, peer_port: u32, buf_alloc: u32, fwd_cnt: u32) -> Self {
        let mut c = Connection::new(State::Connecting, local_port, peer_port);
        c.guest_knows = true;
        c.update_peer_credit(buf_alloc, fwd_cnt);
        c
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn guest_knows(&self) -> bool {
        self.guest_knows
    }

    /// The host socket of a guest-initiated connection is connected: answer RESPONSE.
    pub fn connected(&mut self) {
        if self.state == State::Connecting {
            self.state = State::Established;
            self.response_pending = true;
        }
    }

    /// The guest accepted our REQUEST; false if it could not have (a protocol error).
    pub fn on_response(&mut self) -> bool {
        if self.state == State::LocalInit && self.guest_knows && !self.request_pending {
            self.state = State::Established;
            true
        } else {
            false
        }
    }

    /// The host socket is gone; the guest is owed an RST if it knows the connection.
    pub fn kill(&mut self) {
        self.state = State::Killed;
        self.request_pending = false;
        self.response_pending = false;
        self.credit_update_pending = false;
        self.credit_request_pending = false;
        self.host_readable = false;
        self.txbuf.clear();
        self.deadline = None;
    }

    // ---- credit ----

    /// The window advertised to the guest (`buf_alloc`).
    pub fn window(&self) -> u32 {
        self.buf_alloc
    }

    /// How much the window may still grow (up to [`CONN_BUF_SIZE`]).
    pub fn window_wanted(&self) -> u32 {
        CONN_BUF_SIZE.saturating_sub(self.buf_alloc)
    }

    /// Widens the window by `extra` bytes (the muxer took them from its budget). It never
    /// shrinks: the guest may use any credit it was once given.
    pub fn grow_window(&mut self, extra: u32) {
        let extra = extra.min(self.window_wanted());
        // The guest hears of it with the next packet (every packet carries the window).
        self.buf_alloc += extra;
    }

    pub fn update_peer_credit(&mut self, buf_alloc: u32, fwd_cnt: u32) {
        self.peer_buf_alloc = buf_alloc;
        self.peer_fwd_cnt = Wrapping(fwd_cnt);
        if self.peer_credit() > 0 {
            self.credit_requested = false;
        }
    }

    /// Bytes the guest can take now. A guest claiming to have forwarded more than it got
    /// has no credit.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.tx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// `n` host bytes went to the guest.
    pub fn sent_data(&mut self, n: u32) {
        self.tx_cnt += n;
    }

    /// The guest sends `len` bytes: false if that exceeds the credit we advertised.
    pub fn accept_guest_data(&mut self, len: u32) -> bool {
        let in_flight = u64::from((self.rx_cnt - self.last_fwd_sent).0) + u64::from(len);
        if in_flight > u64::from(self.buf_alloc) {
            return false;
        }
        self.rx_cnt += len;
        true
    }

    /// `n` guest bytes were written to the host socket. The guest hears of it after a
    /// threshold, or at once when the credit it knows of is nearly used up (it may be waiting).
    pub fn forwarded(&mut self, n: u32) {
        self.fwd_cnt += n;
        let unannounced = (self.fwd_cnt - self.last_fwd_sent).0;
        let seen_free = self
            .buf_alloc
            .saturating_sub((self.rx_cnt - self.last_fwd_sent).0);
        let threshold = credit_update_threshold(self.buf_alloc);
        if unannounced >= threshold || (unannounced > 0 && seen_free < threshold) {
            self.credit_update_pending = true;
        }
    }

    /// The guest asked for our credit.
    pub fn credit_requested_by_guest(&mut self) {
        self.credit_update_pending = true;
    }

    /// `buf_alloc` and `fwd_cnt` for a packet going to the guest now (every packet tells the
    /// guest its credit, so no separate update is owed afterwards).
    pub fn stamp(&mut self) -> (u32, u32) {
        self.last_fwd_sent = self.fwd_cnt;
        self.credit_update_pending = false;
        (self.buf_alloc, self.fwd_cnt.0)
    }

    // ---- host socket readiness ----

    /// The host socket has something to read (or EOF).
    pub fn set_host_readable(&mut self) {
        if self.wants_host_data() {
            self.host_readable = true;
        }
    }

    /// A read would block: wait for epoll again.
    pub fn host_drained(&mut self) {
        self.host_readable = false;
    }

    pub fn host_eof(&mut self) {
        self.host_eof = true;
        self.host_readable = false;
    }

    pub fn set_host_hup(&mut self) {
        self.host_hup = true;
    }

    pub fn host_hup(&self) -> bool {
        self.host_hup
    }

    pub fn host_write_shut(&mut self) {
        self.host_write_shut = true;
    }

    /// Whether bytes from the host are still wanted by the guest.
    fn wants_host_data(&self) -> bool {
        self.state == State::Established && !self.host_eof && self.peer_shut & shutdown::RCV == 0
    }

    /// Epoll interest: (readable, writable).
    pub fn interest(&self) -> (bool, bool) {
        match self.state {
            State::Handshake => (true, false),
            State::Connecting => (false, true),
            State::LocalInit | State::Killed => (false, false),
            State::Established => (
                self.wants_host_data() && !self.host_readable && self.peer_credit() > 0,
                !self.txbuf.is_empty(),
            ),
        }
    }

    // ---- guest SHUTDOWN ----

    /// Guest SHUTDOWN flags (they accumulate); false if the guest may not send any now.
    pub fn on_guest_shutdown(&mut self, flags: u32) -> bool {
        if self.state != State::Established {
            return false;
        }
        self.peer_shut |= flags & shutdown::BOTH;
        if self.peer_shut & shutdown::RCV != 0 {
            self.host_readable = false;
        }
        true
    }

    /// Whether guest data may still arrive (RW after SHUTDOWN(SEND) is a protocol error).
    pub fn guest_may_send(&self) -> bool {
        self.state == State::Established && self.peer_shut & shutdown::SEND == 0
    }

    /// SHUTDOWN flags owed to the guest: SEND once the host's EOF is delivered, RCV too when
    /// the host program is gone altogether.
    fn pending_shutdown(&self) -> Option<u32> {
        if self.state != State::Established || !self.host_eof {
            return None;
        }
        let mut wanted = shutdown::SEND;
        if self.host_hup {
            wanted |= shutdown::RCV;
        }
        (wanted & !self.shut_sent != 0).then_some(wanted | self.shut_sent)
    }

    /// What to do next about closing.
    pub fn step(&self) -> Step {
        if self.state != State::Established {
            return Step::Nothing;
        }
        let guest_done = self.peer_shut & shutdown::SEND != 0 && self.txbuf.is_empty();
        if guest_done && !self.host_write_shut {
            return Step::ShutdownHostWrite;
        }
        if guest_done && self.peer_shut & shutdown::RCV != 0 {
            return Step::Kill; // the guest closed both ways and everything reached the host
        }
        if guest_done && self.host_eof && self.pending_shutdown().is_none() {
            return Step::Kill; // both directions finished
        }
        if self.host_hup && (self.peer_shut & shutdown::RCV != 0) {
            return Step::Kill; // nobody left to send to or to receive from
        }
        Step::Nothing
    }

    /// Whether the close needs a timeout: the guest closed both ways but the host has not
    /// taken everything yet, or the guest was told the host is gone and has not answered.
    pub fn wants_close_timeout(&self) -> bool {
        self.state == State::Established
            && ((self.peer_shut == shutdown::BOTH && !self.txbuf.is_empty())
                || self.shut_sent & shutdown::RCV != 0)
    }

    // ---- packets to the guest ----

    /// The next packet owed to the guest, if any. `data_room` says whether the guest buffer
    /// at hand can carry data; when it cannot, a credit update stands in for the data.
    pub fn next_rx(&mut self, data_room: bool) -> Option<RxKind> {
        if self.state == State::Killed {
            return self.guest_knows.then_some(RxKind::Rst);
        }
        if self.request_pending {
            return Some(RxKind::Request);
        }
        if self.response_pending {
            return Some(RxKind::Response);
        }
        if self.host_readable && self.wants_host_data() {
            if self.peer_credit() > 0 {
                return Some(if data_room {
                    RxKind::Data
                } else {
                    RxKind::CreditUpdate
                });
            }
            if !self.credit_requested {
                self.credit_request_pending = true;
            }
        }
        if let Some(flags) = self.pending_shutdown() {
            return Some(RxKind::Shutdown(flags));
        }
        if self.credit_update_pending {
            return Some(RxKind::CreditUpdate);
        }
        if self.credit_request_pending {
            return Some(RxKind::CreditRequest);
        }
        None
    }

    /// Whether `next_rx` would return something (without side effects).
    pub fn has_rx(&self) -> bool {
        match self.state {
            State::Killed => self.guest_knows,
            _ => {
                self.request_pending
                    || self.response_pending
                    || (self.host_readable
                        && self.wants_host_data()
                        && (self.peer_credit() > 0 || !self.credit_requested))
                    || self.pending_shutdown().is_some()
                    || self.credit_update_pending
                    || self.credit_request_pending
            }
        }
    }

    /// `kind` was put in a guest buffer.
    pub fn sent(&mut self, kind: RxKind) {
        match kind {
            RxKind::Rst => self.guest_knows = false,
            RxKind::Request => {
                self.request_pending = false;
                self.guest_knows = true;
            }
            RxKind::Response => self.response_pending = false,
            RxKind::Shutdown(flags) => self.shut_sent |= flags,
            RxKind::CreditRequest => {
                self.credit_request_pending = false;
                self.credit_requested = true;
            }
            RxKind::Data | RxKind::CreditUpdate => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn established() -> Connection {
        let mut c = Connection::guest_request(52, 1000, 8192, 0);
        c.grow_window(CONN_BUF_SIZE);
        c.connected();
        assert_eq!(c.next_rx(true), Some(RxKind::Response));
        c.stamp();
        c.sent(RxKind::Response);
        c
    }

    /// A writer that takes at most `room` bytes, then would block.
    struct Sink {
        got: Vec<u8>,
        room: usize,
    }

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn credit_towards_the_guest_is_never_exceeded() {
        let mut c = established();
        assert_eq!(c.peer_credit(), 8192);
        c.set_host_readable();
        assert_eq!(c.next_rx(true), Some(RxKind::Data));
        c.sent_data(8000);
        assert_eq!(c.peer_credit(), 192);
        c.sent_data(192);
        assert_eq!(c.peer_credit(), 0);
        // No credit: no data, no read interest, one CREDIT_REQUEST.
        assert_eq!(c.interest(), (false, false));
        assert_eq!(c.next_rx(true), Some(RxKind::CreditRequest));
        c.sent(RxKind::CreditRequest);
        assert_eq!(c.next_rx(true), None);
        assert!(!c.has_rx());
        // The guest read 4096 bytes.
        c.update_peer_credit(8192, 4096);
        assert_eq!(c.peer_credit(), 4096);
        assert_eq!(c.next_rx(true), Some(RxKind::Data));
        // A guest claiming more than it got has no credit.
        c.update_peer_credit(8192, 9000);
        assert_eq!(c.peer_credit(), 0);
        // Counters wrap.
        let mut w = established();
        w.tx_cnt = Wrapping(u32::MAX - 10);
        w.update_peer_credit(100, u32::MAX - 20);
        assert_eq!(w.peer_credit(), 90);
        w.sent_data(20);
        assert_eq!(w.peer_credit(), 70);
    }

    #[test]
    fn guest_data_beyond_our_credit_is_a_violation() {
        let mut c = established();
        assert!(c.accept_guest_data(CONN_BUF_SIZE - 1));
        assert!(c.accept_guest_data(1));
        assert!(!c.accept_guest_data(1));
        // Forwarding alone does not give credit until the guest is told.
        c.forwarded(CONN_BUF_SIZE);
        assert!(!c.accept_guest_data(1));
        assert_eq!(c.next_rx(true), Some(RxKind::CreditUpdate));
        assert_eq!(c.stamp(), (CONN_BUF_SIZE, CONN_BUF_SIZE));
        assert!(c.accept_guest_data(CONN_BUF_SIZE));
        assert!(!c.has_rx());
    }

    #[test]
    fn credit_updates_after_a_threshold_or_when_asked() {
        let mut c = established();
        assert!(c.accept_guest_data(credit_update_threshold(CONN_BUF_SIZE)));
        c.forwarded(credit_update_threshold(CONN_BUF_SIZE) - 1);
        assert!(!c.has_rx());
        c.forwarded(1);
        assert_eq!(c.next_rx(true), Some(RxKind::CreditUpdate));
        c.stamp();
        assert!(!c.has_rx());
        c.credit_requested_by_guest();
        assert_eq!(c.next_rx(false), Some(RxKind::CreditUpdate));
        c.stamp();
        // With the window (nearly) full, any progress is announced: the guest may be waiting.
        assert!(c.accept_guest_data(CONN_BUF_SIZE - credit_update_threshold(CONN_BUF_SIZE) + 1));
        c.forwarded(1);
        assert_eq!(c.next_rx(true), Some(RxKind::CreditUpdate));
    }

    #[test]
    fn host_half_close_reaches_the_guest_as_send_only() {
        let mut c = established();
        c.set_host_readable();
        c.host_eof();
        assert_eq!(c.next_rx(true), Some(RxKind::Shutdown(shutdown::SEND)));
        c.sent(RxKind::Shutdown(shutdown::SEND));
        assert_eq!(c.step(), Step::Nothing);
        assert!(c.guest_may_send());
        // The guest replies, then shuts down its side: the host socket is shut, then closed.
        assert!(c.on_guest_shutdown(shutdown::SEND));
        assert_eq!(c.step(), Step::ShutdownHostWrite);
        c.host_write_shut();
        assert_eq!(c.step(), Step::Kill);
    }

    #[test]
    fn host_gone_tells_the_guest_both_and_times_out() {
        let mut c = established();
        c.set_host_hup();
        c.set_host_readable();
        c.host_eof();
        assert_eq!(c.next_rx(true), Some(RxKind::Shutdown(shutdown::BOTH)));
        c.sent(RxKind::Shutdown(shutdown::BOTH));
        assert!(c.wants_close_timeout());
        // A half-close first, the full close later: RCV follows.
        let mut c = established();
        c.host_eof();
        let k = c.next_rx(true).unwrap();
        c.sent(k);
        c.set_host_hup();
        assert_eq!(c.next_rx(true), Some(RxKind::Shutdown(shutdown::BOTH)));
        // Guest not reading and host gone: nothing left to do.
        let mut c = established();
        c.on_guest_shutdown(shutdown::RCV);
        c.set_host_hup();
        assert_eq!(c.step(), Step::Kill);
    }

    #[test]
    fn guest_close_drains_before_the_host_socket_closes() {
        let mut c = established();
        c.txbuf.push(b"tail");
        assert!(c.on_guest_shutdown(shutdown::BOTH));
        assert!(!c.guest_may_send());
        assert_eq!(c.step(), Step::Nothing);
        assert!(c.wants_close_timeout());
        assert_eq!(c.interest(), (false, true));
        let mut sink = Sink {
            got: Vec::new(),
            room: 100,
        };
        assert_eq!(c.txbuf.flush(&mut sink).unwrap(), 4);
        assert_eq!(c.step(), Step::ShutdownHostWrite);
        c.host_write_shut();
        assert_eq!(c.step(), Step::Kill);
    }

    #[test]
    fn the_ok_line_is_not_counted_as_forwarded() {
        let mut b = TxBuf::default();
        b.push_uncounted(b"OK 1073741824\n");
        b.push(b"hello");
        let mut sink = Sink {
            got: Vec::new(),
            room: 10,
        };
        assert_eq!(b.flush(&mut sink).unwrap(), 0);
        sink.room = 6;
        assert_eq!(b.flush(&mut sink).unwrap(), 2);
        sink.room = 100;
        assert_eq!(b.flush(&mut sink).unwrap(), 3);
        assert_eq!(sink.got, b"OK 1073741824\nhello");
        assert!(b.is_empty());
        // A full window does not round the allocation up to the next power of two.
        let mut b = TxBuf::default();
        b.push_uncounted(b"OK 1\n");
        for _ in 0..64 {
            b.push(&[0u8; 4096]);
        }
        assert_eq!(b.len(), CONN_BUF_SIZE as usize + 5);
        assert!(b.data.capacity() <= TXBUF_MAX + 64, "{}", b.data.capacity());
    }

    #[test]
    fn state_machine_guards() {
        // A RESPONSE before the REQUEST was delivered is a protocol error.
        let mut c = Connection::handshake();
        assert_eq!(c.interest(), (true, false));
        c.start_local_init(1 << 30, 52);
        assert!(!c.on_response());
        assert_eq!(c.next_rx(true), Some(RxKind::Request));
        c.sent(RxKind::Request);
        assert!(c.guest_knows());
        assert!(c.on_response());
        assert_eq!(c.state(), State::Established);
        assert!(!c.on_response());
        // Killed: one RST if the guest knows, nothing otherwise.
        c.kill();
        assert_eq!(c.next_rx(true), Some(RxKind::Rst));
        c.sent(RxKind::Rst);
        assert!(!c.has_rx());
        let mut h = Connection::handshake();
        h.kill();
        assert!(!h.has_rx());
        // SHUTDOWN before the connection exists is refused.
        let mut g = Connection::guest_request(52, 7, 0, 0);
        assert!(!g.on_guest_shutdown(shutdown::SEND));
        assert_eq!(g.interest(), (false, true));
    }
}
