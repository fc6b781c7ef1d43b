//! virtio-vsock: the `CONNECT` line, one connection's state machine, and the whole device
//! (queues, muxer, host sockets) driven by a fuzzed guest driver and fuzzed host programs in
//! one thread: the harness plays both and runs the device's event-manager loop itself.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, SubscriberOps};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::tempdir::TempDir;

use super::Input;
use super::ring::{F_NEXT, F_WRITE, Ring};
use crate::devices::virtio::vsock::connection::{Connection, RxKind, State, Step};
use crate::devices::virtio::vsock::handshake::{Line, LineBuf};
use crate::devices::virtio::vsock::packet::{HEADER_LEN, Header};
use crate::devices::virtio::vsock::{
    CONN_BUF_SIZE, CONNECT_LINE_MAX, HOST_CID, HOST_PORT_FIRST, MAX_CONNECTIONS, MAX_PKT_DATA,
    TYPE_STREAM, Vsock, op,
};
use crate::devices::virtio::{ActivateContext, Interrupt, VIRTIO_F_VERSION_1, VirtioDevice};
use crate::vmm::event_loop::Subscriber;
use crate::vmm::memory::GuestMemoryMmap;

// ---- the CONNECT line ----

/// What `line` (without its newline) asks for, by the documented grammar:
/// `connect<blanks><decimal port><blanks or \r>`, the keyword in any case.
fn reference_connect(line: &[u8]) -> Option<u32> {
    if line.len() + 1 > CONNECT_LINE_MAX || line.len() < 7 {
        return None;
    }
    let (kw, rest) = line.split_at(7);
    if !kw.eq_ignore_ascii_case(b"connect") {
        return None;
    }
    let blank = |c: &u8| *c == b' ' || *c == b'\t';
    let digits_at = rest.iter().position(|c| !blank(c))?;
    if digits_at == 0 {
        return None;
    }
    let rest = &rest[digits_at..];
    let n = rest
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    if n == 0 || !rest[n..].iter().all(|c| blank(c) || *c == b'\r') {
        return None;
    }
    let mut port = 0u64;
    for &d in &rest[..n] {
        port = port * 10 + u64::from(d - b'0');
        if port > u64::from(u32::MAX) {
            return None;
        }
    }
    u32::try_from(port).ok()
}

/// The `CONNECT <port>\n` parser, a byte at a time as the muxer feeds it (a new line after
/// each verdict): a port is reported exactly when the line is valid by the grammar, with the
/// same port, and garbage is never taken as a valid beginning past the newline.
pub fn vsock_handshake(data: &[u8]) {
    let mut buf = LineBuf::default();
    let mut line = Vec::new();
    for &b in data {
        let verdict = buf.push(b);
        if b == b'\n' {
            let want = reference_connect(&line);
            match verdict {
                Line::Port(p) => assert_eq!(Some(p), want, "accepted {line:?}"),
                Line::Invalid => assert_eq!(want, None, "refused {line:?}"),
                Line::Partial => panic!("a newline left the line partial"),
            }
        } else {
            line.push(b);
            assert!(
                !matches!(verdict, Line::Port(_)),
                "a port before the newline"
            );
        }
        if verdict != Line::Partial {
            buf = LineBuf::default();
            line.clear();
        } else {
            assert!(line.len() < CONNECT_LINE_MAX);
        }
    }
}

// ---- one connection ----

/// A host socket that takes at most `room` bytes, then would block.
struct HostSink {
    room: usize,
}

impl Write for HostSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.room == 0 {
            return Err(ErrorKind::WouldBlock.into());
        }
        let n = b.len().min(self.room);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The connection state machine and credit accounting, with the muxer's calls made in any
/// order the muxer could make them: what it owes the guest agrees with `has_rx`, the
/// guest-to-host buffer never exceeds a credit window (plus the OK line), data sent to the
/// guest never exceeds its credit, and closing steps happen only to established connections.
pub fn vsock_connection(data: &[u8]) {
    let mut inp = Input::new(data);
    let mut c = if inp.bool() {
        Connection::guest_request(inp.u32(), inp.u32(), inp.u32(), inp.u32())
    } else {
        let mut c = Connection::handshake();
        if inp.bool() {
            c.start_local_init(HOST_PORT_FIRST, inp.u32());
        }
        c
    };
    let mut steps = 0;
    while !inp.done() && steps < 1024 {
        steps += 1;
        match inp.u8() % 20 {
            0 => c.connected(),
            1 => {
                let _ = c.on_response();
            }
            2 => {
                c.kill();
                assert_eq!(c.state(), State::Killed);
                assert!(c.txbuf.is_empty());
                assert_eq!(c.interest(), (false, false));
            }
            3 => c.update_peer_credit(inp.pick_u32(&[CONN_BUF_SIZE, 0, 4096]), inp.u32()),
            4 => {
                let len = inp.pick_u32(&[0, 1, 4096, MAX_PKT_DATA, CONN_BUF_SIZE]);
                if c.guest_may_send() && c.accept_guest_data(len) {
                    c.txbuf.push(&vec![0x5a; len as usize]);
                }
            }
            5 => {
                let mut sink = HostSink {
                    room: usize::from(inp.u16()) * 8,
                };
                if let Ok(n) = c.txbuf.flush(&mut sink) {
                    c.forwarded(n);
                }
            }
            6 => c.credit_requested_by_guest(),
            7 => {
                let _ = c.stamp();
            }
            8 => c.set_host_readable(),
            9 => c.host_drained(),
            10 => c.host_eof(),
            11 => c.set_host_hup(),
            12 => c.host_write_shut(),
            13 => {
                let _ = c.on_guest_shutdown(inp.pick_u32(&[1, 2, 3, 0]));
            }
            14 if c.txbuf.is_empty() => c.txbuf.push_uncounted(b"OK 1073741824\n"),
            _ => {
                let room = inp.bool();
                let had = c.has_rx();
                let credit = c.peer_credit();
                let next = c.next_rx(room);
                assert_eq!(had, next.is_some(), "has_rx and next_rx disagree");
                if let Some(kind) = next {
                    if kind == RxKind::Data {
                        assert!(room && credit > 0, "data owed without room or credit");
                        let n = u32::from(inp.u16()).min(credit).max(1);
                        c.sent_data(n);
                    }
                    if matches!(kind, RxKind::Rst) {
                        assert_eq!(c.state(), State::Killed);
                    }
                    c.sent(kind);
                }
            }
        }
        assert!(c.txbuf.len() <= CONN_BUF_SIZE as usize + CONNECT_LINE_MAX);
        if c.step() != Step::Nothing || c.wants_close_timeout() {
            assert_eq!(c.state(), State::Established);
        }
    }
}

// ---- the device ----

const GUEST_CID: u64 = 3;
const MEM_SIZE: usize = 2 << 20;
const RXQ_AT: u64 = 0;
const TXQ_AT: u64 = 0x400;
const EVQ_AT: u64 = 0x800;
const RX_BUFS: u64 = 0x1_0000;
const TX_BUFS: u64 = 0x8_0000;
/// Each descriptor index owns this much buffer space.
const STRIDE: u64 = 0x2000;
/// Data per RX buffer the harness offers (one descriptor: header and data, Linux 6.2+).
const RX_DATA: u32 = 4096;
/// Guest ports the harness listens on (`<uds>_<port>`).
const LISTEN_PORTS: [u32; 2] = [5000, 5001];
/// Host sockets the harness keeps open at most, per kind.
const MAX_SOCKETS: usize = 12;

/// The device with its guest memory, rings, event loop and the host programs' sockets.
struct Rig {
    uds: PathBuf,
    mem: GuestMemoryMmap,
    dev: Arc<Mutex<Vsock>>,
    mgr: EventManager<Subscriber>,
    rx: Ring,
    tx: Ring,
    tx_free: Vec<u16>,
    /// The data descriptor of a split chain, by its head.
    tx_tail: [Option<u16>; Ring::SIZE as usize],
    listeners: Vec<UnixListener>,
    clients: Vec<UnixStream>,
    accepted: Vec<UnixStream>,
    /// Headers of packets the device sent the guest (the guest answers them).
    seen: Vec<Header>,
    /// Holds the sockets; removed last (fields drop in order).
    _dir: TempDir,
}

impl Rig {
    fn new() -> Option<Rig> {
        // As in the VMM (the builder does this first): a host program that closed its socket
        // makes a write fail with EPIPE instead of killing the process.
        crate::vmm::signals::ignore_sigpipe().ok()?;
        let dir = TempDir::new_with_prefix("/tmp/mvmm-fuzz-vsock").ok()?;
        let uds = dir.as_path().join("v");
        let dev = Arc::new(Mutex::new(Vsock::new(GUEST_CID, &uds).ok()?));
        let mut mgr = EventManager::<Subscriber>::new().ok()?;
        mgr.add_subscriber(dev.clone());
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).ok()?;
        let mut listeners = Vec::new();
        for p in LISTEN_PORTS {
            let l = UnixListener::bind(port_path(&uds, p)).ok()?;
            l.set_nonblocking(true).ok()?;
            listeners.push(l);
        }
        Some(Rig {
            _dir: dir,
            uds,
            mem,
            dev,
            mgr,
            rx: Ring::new(RXQ_AT),
            tx: Ring::new(TXQ_AT),
            tx_free: (0..Ring::SIZE).rev().collect(),
            tx_tail: [None; Ring::SIZE as usize],
            listeners,
            clients: Vec::new(),
            accepted: Vec::new(),
            seen: Vec::new(),
        })
    }

    fn activate(&mut self, fill_rx: bool) -> bool {
        if fill_rx {
            for i in 0..Ring::SIZE {
                self.post_rx(i);
            }
        }
        let ev = Ring::new(EVQ_AT);
        let (Some(rxq), Some(txq), Some(evq)) = (
            self.rx.queue(&self.mem, false),
            self.tx.queue(&self.mem, false),
            ev.queue(&self.mem, false),
        ) else {
            return false;
        };
        let Ok(irq) = EventFd::new(libc::EFD_NONBLOCK) else {
            return false;
        };
        let ctx = ActivateContext {
            mem: self.mem.clone(),
            interrupt: Arc::new(Interrupt::new(irq)),
            queues: vec![rxq, txq, evq],
            acked_features: VIRTIO_F_VERSION_1,
        };
        assert!(self.dev.lock().unwrap().activate(ctx).is_ok());
        true
    }

    fn post_rx(&mut self, i: u16) {
        let buf = RX_BUFS + u64::from(i) * STRIDE;
        self.rx
            .set_desc(&self.mem, i, buf, HEADER_LEN as u32 + RX_DATA, F_WRITE, 0);
        self.rx.publish(&self.mem, i);
    }

    fn kick(&self, q: usize) {
        let dev = self.dev.lock().unwrap();
        let _ = dev.queue_events()[q].write(1);
    }

    /// Lets the device handle everything that is ready (a bounded number of rounds).
    fn run(&mut self) {
        for _ in 0..8 {
            match self.mgr.run_with_timeout(0) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Checks the limits the device promises.
    fn check_bounds(&self) {
        let dev = self.dev.lock().unwrap();
        let conns = dev.connections();
        assert!(conns <= MAX_CONNECTIONS);
        assert!(
            dev.buffered() <= conns * (CONN_BUF_SIZE as usize + CONNECT_LINE_MAX),
            "{} bytes buffered for {conns} connections",
            dev.buffered()
        );
        assert!(self.seen.len() <= 64);
    }

    /// Takes the RX buffers the device filled, checks what it wrote, and gives them back.
    /// `own_buffers`: the harness posted every RX descriptor (so their layout is known).
    fn drain_rx(&mut self, own_buffers: bool) {
        let used = self.rx.take_used(&self.mem).unwrap_or_default();
        for (id, len) in used {
            if !own_buffers {
                continue;
            }
            assert!(id < u32::from(Ring::SIZE), "used id {id} is no descriptor");
            let buf = RX_BUFS + u64::from(id) * STRIDE;
            let mut b = [0u8; HEADER_LEN];
            if len > 0 {
                assert!(len as usize >= HEADER_LEN && len <= HEADER_LEN as u32 + RX_DATA);
                self.mem.read_slice(&mut b, GuestAddress(buf)).unwrap();
                let h = Header::from_bytes(&b);
                assert_eq!((h.src_cid, h.dst_cid), (HOST_CID, GUEST_CID));
                assert_eq!(h.len as usize + HEADER_LEN, len as usize);
                assert!((op::REQUEST..=op::CREDIT_REQUEST).contains(&h.op));
                if self.seen.len() == 64 {
                    self.seen.remove(0);
                }
                self.seen.push(h);
            }
            self.post_rx(id as u16);
        }
        self.kick(crate::devices::virtio::vsock::RXQ);
    }

    /// A well-formed TX chain carrying `hdr` and `len` bytes of data, header and data in one
    /// descriptor or two.
    fn send(&mut self, hdr: &Header, split: bool) {
        for (id, _) in self.tx.take_used(&self.mem).unwrap_or_default() {
            let Some(tail) = self.tx_tail.get_mut(id as usize) else {
                continue;
            };
            if let Some(t) = tail.take() {
                self.tx_free.push(t);
            }
            if !self.tx_free.contains(&(id as u16)) {
                self.tx_free.push(id as u16);
            }
        }
        if self.tx_free.len() < 2 {
            return;
        }
        let (a, b) = (self.tx_free.pop().unwrap(), self.tx_free.pop().unwrap());
        let buf = TX_BUFS + u64::from(a) * STRIDE;
        let _ = self.mem.write_slice(&hdr.to_bytes(), GuestAddress(buf));
        let len = hdr.len.min(RX_DATA);
        if split {
            let data = TX_BUFS + u64::from(b) * STRIDE;
            self.tx
                .set_desc(&self.mem, a, buf, HEADER_LEN as u32, F_NEXT, b);
            self.tx.set_desc(&self.mem, b, data, len, 0, 0);
            self.tx_tail[usize::from(a)] = Some(b);
        } else {
            self.tx
                .set_desc(&self.mem, a, buf, HEADER_LEN as u32 + len, 0, 0);
            self.tx_free.push(b);
        }
        self.tx.publish(&self.mem, a);
        self.kick(crate::devices::virtio::vsock::TXQ);
    }

    /// A guest packet from fuzz input: mostly the usual addresses and ports, any operation;
    /// sometimes an answer to a packet the device sent.
    fn packet(&mut self, inp: &mut Input) -> Header {
        let answer = inp.u8().is_multiple_of(3) && !self.seen.is_empty();
        let (src_port, dst_port) = if answer {
            let h = &self.seen[usize::from(inp.u8()) % self.seen.len()];
            (h.dst_port, h.src_port)
        } else {
            (
                inp.pick_u32(&[1000, 1001, 1002]),
                inp.pick_u32(&[LISTEN_PORTS[0], LISTEN_PORTS[1], 5002, HOST_PORT_FIRST]),
            )
        };
        let odd = inp.u8();
        Header {
            src_cid: if odd & 0xf0 == 0xf0 {
                inp.u64()
            } else {
                GUEST_CID
            },
            dst_cid: if odd & 0x0f == 0x0f {
                inp.u64()
            } else {
                HOST_CID
            },
            src_port,
            dst_port,
            len: inp.pick_u32(&[0, 1, 100, RX_DATA, RX_DATA + 1]),
            type_: if odd == 0x77 { inp.u16() } else { TYPE_STREAM },
            op: inp.pick_u32(&[1, 2, 3, 4, 5, 5, 5, 6, 7]) as u16,
            flags: inp.pick_u32(&[0, 1, 2, 3]),
            buf_alloc: inp.pick_u32(&[CONN_BUF_SIZE, 0, 4096]),
            fwd_cnt: inp.pick_u32(&[0]),
        }
    }

    /// One host program step: connect, write (a CONNECT line or bytes), read, half-close or
    /// close, on the device's socket or on the listeners the guest connects to.
    fn host_step(&mut self, inp: &mut Input) {
        match inp.u8() % 8 {
            0 if self.clients.len() < MAX_SOCKETS => {
                if let Ok(s) = UnixStream::connect(&self.uds)
                    && s.set_nonblocking(true).is_ok()
                {
                    self.clients.push(s);
                }
            }
            1 | 2 => {
                let line = match inp.u8() % 4 {
                    0 => format!("CONNECT {}\n", inp.pick_u32(&[1000, 1001])).into_bytes(),
                    1 => inp.chunk().to_vec(),
                    _ => vec![0xa5; usize::from(inp.u16())],
                };
                let to_client = inp.bool();
                if let Some(s) = pick(
                    if to_client {
                        &mut self.clients
                    } else {
                        &mut self.accepted
                    },
                    inp,
                ) {
                    let _ = s.write(&line);
                }
            }
            3 => {
                let from_client = inp.bool();
                if let Some(s) = pick(
                    if from_client {
                        &mut self.clients
                    } else {
                        &mut self.accepted
                    },
                    inp,
                ) {
                    let mut b = [0u8; 8192];
                    for _ in 0..16 {
                        match s.read(&mut b) {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                }
            }
            4 => {
                let how =
                    [Shutdown::Write, Shutdown::Read, Shutdown::Both][usize::from(inp.u8()) % 3];
                if let Some(s) = pick(&mut self.clients, inp) {
                    let _ = s.shutdown(how);
                }
            }
            5 => {
                let v = if inp.bool() {
                    &mut self.clients
                } else {
                    &mut self.accepted
                };
                if !v.is_empty() {
                    let i = usize::from(inp.u8()) % v.len();
                    v.swap_remove(i);
                }
            }
            _ => {
                for l in &self.listeners {
                    while self.accepted.len() < MAX_SOCKETS {
                        match l.accept() {
                            Ok((s, _)) if s.set_nonblocking(true).is_ok() => self.accepted.push(s),
                            _ => break,
                        }
                    }
                }
            }
        }
    }
}

fn pick<'a>(v: &'a mut [UnixStream], inp: &mut Input) -> Option<&'a mut UnixStream> {
    if v.is_empty() {
        return None;
    }
    let i = usize::from(inp.u8()) % v.len();
    v.get_mut(i)
}

fn port_path(uds: &Path, port: u32) -> PathBuf {
    let mut p = uds.as_os_str().to_owned();
    p.push(format!("_{port}"));
    PathBuf::from(p)
}

/// The vsock device's queues with raw descriptors: TX and RX chains of any layout, length and
/// address, headers with any fields, corrupt ring indices, notifications in any order, and a
/// host program connecting so RX has work. Nothing panics; an RX buffer the device fills was
/// one the driver offered.
pub fn vsock_device(data: &[u8]) {
    let mut inp = Input::new(data);
    let Some(mut rig) = Rig::new() else {
        return;
    };
    let mut active = false;
    let mut steps = 0;
    while !inp.done() && steps < 256 {
        steps += 1;
        let op = inp.u8() % 10;
        let on_rx = inp.bool();
        let ring = if on_rx { &mut rig.rx } else { &mut rig.tx };
        match op {
            0 => {
                let i = u16::from(inp.u8());
                let base = if on_rx { RX_BUFS } else { TX_BUFS };
                let addr = if inp.u8() < 240 {
                    base + u64::from(inp.u32()) % 0x4_0000
                } else {
                    inp.u64()
                };
                let len =
                    inp.pick_u32(&[44, 0, 1, 43, 44 + 4096, 4096, MAX_PKT_DATA + 44, 1 << 20]);
                let flags = u16::from(inp.u8() & 7);
                let next = u16::from(inp.u8()) % (Ring::SIZE + 2);
                ring.set_desc(&rig.mem, i, addr, len, flags, next);
            }
            1 => {
                // A header somewhere in the buffer area.
                let at = TX_BUFS + u64::from(inp.u32()) % 0x4_0000;
                let mut h = rig.packet(&mut inp);
                if inp.u8() > 200 {
                    h.len = inp.u32();
                }
                let _ = rig.mem.write_slice(&h.to_bytes(), GuestAddress(at));
            }
            2 => ring.publish(&rig.mem, u16::from(inp.u8()) % Ring::SIZE),
            3 => ring.set_avail_idx(&rig.mem, inp.u16()),
            4 => {
                let h = rig.packet(&mut inp);
                let split = inp.bool();
                rig.send(&h, split);
            }
            5 if !active => {
                active = rig.activate(inp.bool());
            }
            5 => {
                rig.dev.lock().unwrap().reset();
                let _ = rig.mem.write_slice(&[0u8; 0xc00], GuestAddress(0));
                rig.rx = Ring::new(RXQ_AT);
                rig.tx = Ring::new(TXQ_AT);
                rig.tx_free = (0..Ring::SIZE).rev().collect();
                rig.tx_tail = [None; Ring::SIZE as usize];
                active = false;
            }
            6 => rig.host_step(&mut inp),
            _ => rig.kick(usize::from(on_rx)),
        }
        rig.run();
        let _ = rig.rx.take_used(&rig.mem);
        rig.check_bounds();
    }
}

/// Packet sequences between a guest and host programs through the muxer: guest requests,
/// data, shutdowns, credit updates and resets (some answering what the device sent), host
/// programs connecting with CONNECT lines, writing, reading and closing, listeners accepting
/// the guest's connections. Connection counts and buffered bytes stay within the device's
/// limits, and every packet the device gives the guest is well-formed.
pub fn vsock_muxer(data: &[u8]) {
    let mut inp = Input::new(data);
    let Some(mut rig) = Rig::new() else {
        return;
    };
    if !rig.activate(true) {
        return;
    }
    rig.run();
    let mut steps = 0;
    while !inp.done() && steps < 256 {
        steps += 1;
        if inp.bool() {
            let h = rig.packet(&mut inp);
            let split = inp.bool();
            rig.send(&h, split);
        } else {
            rig.host_step(&mut inp);
        }
        rig.run();
        rig.drain_rx(true);
        rig.run();
        rig.check_bounds();
    }
}
