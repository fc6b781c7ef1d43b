//! The test harness: a simulated guest driver fills the rings while
//! the real device event loop runs on its own thread, against real Unix sockets in a
//! temporary directory. The driver touches the rings only while holding the device's mutex,
//! as the event loop does.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::tempdir::TempDir;

use super::packet::{HEADER_LEN, Header};
use super::*;
use crate::devices::virtio::{ActivateContext, Interrupt, VIRTIO_F_VERSION_1, VirtioDevice};
use crate::vmm::event_loop::{EventLoop, Subscriber};
use crate::vmm::memory::GuestMemoryMmap;

pub(super) const MEM_SIZE: usize = 64 << 20;
pub(super) const RXQ_BASE: u64 = 0;
pub(super) const TXQ_BASE: u64 = 0x1_0000;
pub(super) const EVQ_BASE: u64 = 0x2_0000;
pub(super) const RX_BUFS: u64 = 0x10_0000;
pub(super) const TX_BUFS: u64 = 0x180_0000;
/// Every descriptor index owns one buffer this large (64 KiB of data plus room).
pub(super) const BUF_STRIDE: u64 = 0x1_1000;
pub(super) const CID: u64 = 3;
pub(super) const F_NEXT: u16 = 1;
pub(super) const F_WRITE: u16 = 2;
pub(super) const WAIT: Duration = Duration::from_secs(5);

/// The driver's side of one split queue.
pub(super) struct Ring {
    pub(super) desc: u64,
    pub(super) avail: u64,
    pub(super) used: u64,
    pub(super) next_avail: u16,
    pub(super) used_seen: u16,
    pub(super) free: Vec<u16>,
    pub(super) chains: HashMap<u16, Vec<u16>>,
    pub(super) bufs: u64,
}

impl Ring {
    /// Descriptor table at `base`, avail ring 4 KiB later, used ring 8 KiB later.
    /// (MockSplitQueue::create would overlap the rings of a 256-entry queue: its avail ring
    /// `end()` counts entries, not bytes.)
    pub(super) fn new(mem: &GuestMemoryMmap, base: u64, bufs: u64) -> (Ring, Queue) {
        let (desc, avail, used) = (base, base + 0x1000, base + 0x2000);
        let mut q = Queue::new(QUEUE_SIZE).unwrap();
        q.set_size(QUEUE_SIZE);
        q.set_desc_table_address(Some(desc as u32), Some((desc >> 32) as u32));
        q.set_avail_ring_address(Some(avail as u32), Some((avail >> 32) as u32));
        q.set_used_ring_address(Some(used as u32), Some((used >> 32) as u32));
        q.set_ready(true);
        assert!(q.is_valid(mem));
        let ring = Ring {
            desc,
            avail,
            used,
            next_avail: 0,
            used_seen: 0,
            free: (0..QUEUE_SIZE).rev().collect(),
            chains: HashMap::new(),
            bufs,
        };
        (ring, q)
    }

    pub(super) fn buf(&self, i: u16) -> u64 {
        self.bufs + u64::from(i) * BUF_STRIDE
    }

    /// Publishes a chain of `(len, flags, contents)` descriptors, each on its own buffer.
    pub(super) fn push(
        &mut self,
        mem: &GuestMemoryMmap,
        descs: &[(u32, u16, &[u8])],
    ) -> Option<Vec<u16>> {
        if self.free.len() < descs.len() {
            return None;
        }
        let idxs: Vec<u16> = (0..descs.len()).map(|_| self.free.pop().unwrap()).collect();
        for (k, (&i, &(len, flags, contents))) in idxs.iter().zip(descs).enumerate() {
            let next = idxs.get(k + 1).copied();
            let flags = flags | if next.is_some() { F_NEXT } else { 0 };
            mem.write_slice(contents, GuestAddress(self.buf(i)))
                .unwrap();
            let mut d = [0u8; 16];
            d[0..8].copy_from_slice(&self.buf(i).to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..16].copy_from_slice(&next.unwrap_or(0).to_le_bytes());
            mem.write_slice(&d, GuestAddress(self.desc + 16 * u64::from(i)))
                .unwrap();
        }
        let slot = u64::from(self.next_avail % QUEUE_SIZE);
        mem.write_obj(idxs[0], GuestAddress(self.avail + 4 + 2 * slot))
            .unwrap();
        self.next_avail = self.next_avail.wrapping_add(1);
        mem.write_obj(self.next_avail, GuestAddress(self.avail + 2))
            .unwrap();
        self.chains.insert(idxs[0], idxs.clone());
        Some(idxs)
    }

    /// Used chains since the last call, as (descriptor indices, used length).
    pub(super) fn take_used(&mut self, mem: &GuestMemoryMmap) -> Vec<(Vec<u16>, u32)> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used + 2)).unwrap();
        let mut out = Vec::new();
        while self.used_seen != idx {
            let slot = u64::from(self.used_seen % QUEUE_SIZE);
            let id: u32 = mem
                .read_obj(GuestAddress(self.used + 4 + 8 * slot))
                .unwrap();
            let len: u32 = mem
                .read_obj(GuestAddress(self.used + 8 + 8 * slot))
                .unwrap();
            self.used_seen = self.used_seen.wrapping_add(1);
            let chain = self.chains.remove(&(id as u16)).expect("used id is a head");
            self.free.extend(&chain);
            out.push((chain, len));
        }
        out
    }
}

#[derive(Debug, Clone)]
pub(super) struct Pkt {
    pub(super) hdr: Header,
    pub(super) data: Vec<u8>,
}

#[derive(Clone, Copy)]
pub(super) enum RxLayout {
    /// Header and data in two descriptors (Linux before 6.2).
    Two(u32),
    /// One descriptor for both (Linux 6.2 and later).
    One(u32),
}

pub(super) struct Guest {
    pub(super) dev: Arc<Mutex<Vsock>>,
    pub(super) evl: Option<EventLoop>,
    pub(super) mem: GuestMemoryMmap,
    pub(super) rx: Ring,
    pub(super) tx: Ring,
    pub(super) layout: RxLayout,
    pub(super) inbox: VecDeque<Pkt>,
    /// RX buffers the device returned empty (bad chains).
    pub(super) empty_rx: usize,
    pub(super) uds: PathBuf,
    pub(super) _dir: TempDir,
    pub(super) buf_alloc: u32,
    /// Bytes consumed per (guest port, host port), reported as fwd_cnt.
    pub(super) fwd: HashMap<(u32, u32), u32>,
    /// RW bytes sent per (guest port, host port), and the device's last (buf_alloc, fwd_cnt).
    pub(super) sent: HashMap<(u32, u32), u32>,
    pub(super) dev_credit: HashMap<(u32, u32), (u32, u32)>,
    /// Used lengths of all TX chains.
    pub(super) tx_lens: Vec<u32>,
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Some(evl) = self.evl.take() {
            evl.stop();
        }
    }
}

impl Guest {
    pub(super) fn new() -> Guest {
        Guest::with(Duration::from_millis(500), RxLayout::Two(4096), true)
    }

    pub(super) fn with(timeout: Duration, layout: RxLayout, fill: bool) -> Guest {
        let dir = TempDir::new_with_prefix("/tmp/vsock-test").unwrap();
        let uds = dir.as_path().join("v.sock");
        let mut dev = Vsock::new(CID, &uds).unwrap();
        dev.muxer.set_timeouts(timeout, Duration::from_millis(50));
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let (rx, rxq) = Ring::new(&mem, RXQ_BASE, RX_BUFS);
        let (tx, txq) = Ring::new(&mem, TXQ_BASE, TX_BUFS);
        let (_, evq) = Ring::new(&mem, EVQ_BASE, 0);
        let irq = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
        dev.activate(ActivateContext {
            mem: mem.clone(),
            interrupt: irq,
            queues: vec![rxq, txq, evq],
            acked_features: VIRTIO_F_VERSION_1,
        })
        .unwrap();
        let dev = Arc::new(Mutex::new(dev));
        let evl = EventLoop::start(vec![dev.clone() as Subscriber]).unwrap();
        let mut g = Guest {
            dev,
            evl: Some(evl),
            mem,
            rx,
            tx,
            layout,
            inbox: VecDeque::new(),
            empty_rx: 0,
            uds,
            _dir: dir,
            buf_alloc: 16 << 20,
            fwd: HashMap::new(),
            sent: HashMap::new(),
            dev_credit: HashMap::new(),
            tx_lens: Vec::new(),
        };
        if fill {
            g.refill();
        }
        g
    }

    pub(super) fn connections(&self) -> usize {
        self.dev.lock().unwrap().connections()
    }

    /// Posts RX buffers while descriptors last.
    pub(super) fn refill(&mut self) {
        let dev = self.dev.clone();
        let d = dev.lock().unwrap();
        let zeros = [0u8; 0];
        loop {
            let pushed = match self.layout {
                RxLayout::Two(n) => self.rx.push(
                    &self.mem,
                    &[(HEADER_LEN as u32, F_WRITE, &zeros), (n, F_WRITE, &zeros)],
                ),
                RxLayout::One(n) => self
                    .rx
                    .push(&self.mem, &[(HEADER_LEN as u32 + n, F_WRITE, &zeros)]),
            };
            if pushed.is_none() {
                break;
            }
        }
        d.queue_event(RXQ).write(1).unwrap();
    }

    /// Collects what the device put in RX buffers and gives the buffers back.
    pub(super) fn poll(&mut self) {
        let used = {
            let dev = self.dev.clone();
            let _d = dev.lock().unwrap();
            self.reclaim_tx();
            self.rx.take_used(&self.mem)
        };
        if used.is_empty() {
            return;
        }
        for (chain, len) in used {
            if len == 0 {
                self.empty_rx += 1;
                continue;
            }
            let mut raw = [0u8; HEADER_LEN];
            let base = self.rx.buf(chain[0]);
            self.mem.read_slice(&mut raw, GuestAddress(base)).unwrap();
            let hdr = Header::from_bytes(&raw);
            assert_eq!(len, HEADER_LEN as u32 + hdr.len, "used length of {hdr:?}");
            let data_at = match chain.get(1) {
                Some(&d) => self.rx.buf(d),
                None => base + HEADER_LEN as u64,
            };
            let mut data = vec![0u8; hdr.len as usize];
            self.mem
                .read_slice(&mut data, GuestAddress(data_at))
                .unwrap();
            assert_eq!(
                (hdr.src_cid, hdr.dst_cid, hdr.type_),
                (HOST_CID, CID, TYPE_STREAM)
            );
            let key = (hdr.dst_port, hdr.src_port);
            if hdr.op == op::RW {
                *self.fwd.entry(key).or_default() += hdr.len;
            }
            self.dev_credit.insert(key, (hdr.buf_alloc, hdr.fwd_cnt));
            self.inbox.push_back(Pkt { hdr, data });
        }
        self.refill();
    }

    pub(super) fn recv_within(&mut self, within: Duration) -> Option<Pkt> {
        let end = Instant::now() + within;
        loop {
            self.poll();
            if let Some(p) = self.inbox.pop_front() {
                return Some(p);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The next packet that is not a credit update or request.
    pub(super) fn recv(&mut self) -> Pkt {
        loop {
            let p = self.recv_within(WAIT).expect("a packet from the device");
            if p.hdr.op != op::CREDIT_UPDATE && p.hdr.op != op::CREDIT_REQUEST {
                return p;
            }
        }
    }

    pub(super) fn expect(&mut self, op: u16) -> Pkt {
        let p = self.recv();
        assert_eq!(p.hdr.op, op, "{p:?}");
        p
    }

    /// Asserts that nothing but credit packets arrives for `ms`.
    pub(super) fn quiet(&mut self, ms: u64) {
        let end = Instant::now() + Duration::from_millis(ms);
        while let Some(p) = self.recv_within(end.saturating_duration_since(Instant::now())) {
            assert!(
                p.hdr.op == op::CREDIT_UPDATE || p.hdr.op == op::CREDIT_REQUEST,
                "unexpected {p:?}"
            );
        }
    }

    pub(super) fn hdr(&self, op: u16, guest_port: u32, host_port: u32, len: usize) -> Header {
        Header {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port: guest_port,
            dst_port: host_port,
            len: len as u32,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: self.buf_alloc,
            fwd_cnt: self.fwd.get(&(guest_port, host_port)).copied().unwrap_or(0),
        }
    }

    /// Queues raw TX chains (waiting for descriptors if needed), then notifies once.
    pub(super) fn send_chains(&mut self, chains: &[Vec<(u32, u16, Vec<u8>)>]) {
        for chain in chains {
            let descs: Vec<(u32, u16, &[u8])> = chain
                .iter()
                .map(|(l, f, c)| (*l, *f, c.as_slice()))
                .collect();
            let end = Instant::now() + WAIT;
            loop {
                let pushed = {
                    let dev = self.dev.clone();
                    let _d = dev.lock().unwrap();
                    self.reclaim_tx();
                    self.tx.push(&self.mem, &descs).is_some()
                };
                if pushed {
                    break;
                }
                assert!(Instant::now() < end, "TX queue never drained");
                self.dev.lock().unwrap().queue_event(TXQ).write(1).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.dev.lock().unwrap().queue_event(TXQ).write(1).unwrap();
    }

    pub(super) fn chain(h: &Header, data: &[u8]) -> Vec<(u32, u16, Vec<u8>)> {
        let mut c = vec![(HEADER_LEN as u32, 0, h.to_bytes().to_vec())];
        if !data.is_empty() {
            c.push((data.len() as u32, 0, data.to_vec()));
        }
        c
    }

    /// Collects used TX chains (with the device's lock held).
    pub(super) fn reclaim_tx(&mut self) {
        let used = self.tx.take_used(&self.mem);
        self.tx_lens.extend(used.iter().map(|(_, len)| *len));
    }

    pub(super) fn send(&mut self, op: u16, guest_port: u32, host_port: u32, data: &[u8]) {
        let h = self.hdr(op, guest_port, host_port, data.len());
        if op == op::RW {
            *self.sent.entry((guest_port, host_port)).or_default() += data.len() as u32;
        }
        self.send_chains(&[Guest::chain(&h, data)]);
    }

    /// Sends `data` as RW packets within the credit the device advertised, waiting for its
    /// credit updates.
    pub(super) fn write_data(&mut self, gport: u32, hport: u32, data: &[u8]) {
        let end = Instant::now() + 2 * WAIT;
        let mut off = 0;
        while off < data.len() {
            let key = (gport, hport);
            let (buf_alloc, fwd_cnt) = self.dev_credit.get(&key).copied().unwrap_or((0, 0));
            let sent = self.sent.get(&key).copied().unwrap_or(0);
            let credit = buf_alloc.saturating_sub(sent.wrapping_sub(fwd_cnt)) as usize;
            if credit == 0 {
                assert!(Instant::now() < end, "no credit from the device");
                self.poll();
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let n = credit.min(MAX_PKT_DATA as usize).min(data.len() - off);
            self.send(op::RW, gport, hport, &data[off..off + n]);
            off += n;
        }
    }

    pub(super) fn send_hdr(&mut self, h: Header) {
        self.send_chains(&[Guest::chain(&h, &[])]);
    }

    /// Used lengths of every TX chain so far are all zero and the device is healthy.
    pub(super) fn healthy(&self) -> bool {
        !self.dev.lock().unwrap().needs_reset()
    }

    pub(super) fn host(&self) -> UnixStream {
        let s = UnixStream::connect(&self.uds).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s
    }

    /// A host-initiated connection to guest port `port`, accepted by the guest; returns the
    /// host socket and the host port.
    pub(super) fn host_connect(&mut self, port: u32) -> (UnixStream, u32) {
        let mut s = self.host();
        writeln!(s, "CONNECT {port}").unwrap();
        let req = self.expect(op::REQUEST);
        assert_eq!(req.hdr.dst_port, port);
        self.send(op::RESPONSE, port, req.hdr.src_port, &[]);
        assert_eq!(read_line(&mut s), format!("OK {}\n", req.hdr.src_port));
        (s, req.hdr.src_port)
    }

    /// A guest-initiated connection from guest port `gport` to host port `hport`, served by
    /// a listener at `<uds>_<hport>`.
    pub(super) fn guest_connect(&mut self, gport: u32, hport: u32) -> (UnixListener, UnixStream) {
        let l = UnixListener::bind(format!("{}_{hport}", self.uds.display())).unwrap();
        self.send(op::REQUEST, gport, hport, &[]);
        let r = self.expect(op::RESPONSE);
        assert_eq!((r.hdr.src_port, r.hdr.dst_port), (hport, gport));
        assert_eq!(r.hdr.buf_alloc, CONN_BUF_SIZE);
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        (l, s)
    }

    /// Receives RW data for `gport` until `n` bytes arrived.
    pub(super) fn recv_data(&mut self, gport: u32, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < n {
            let p = self.expect(op::RW);
            assert_eq!(p.hdr.dst_port, gport);
            out.extend(p.data);
        }
        assert_eq!(out.len(), n);
        out
    }
}

pub(super) fn read_line(s: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap() == 1 {
        line.push(b[0]);
        if b[0] == b'\n' {
            break;
        }
    }
    String::from_utf8(line).unwrap()
}

pub(super) fn read_n(s: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    s.read_exact(&mut v).unwrap();
    v
}

/// The device closed `s` without writing anything; returns how long it took.
pub(super) fn expect_closed(s: &mut UnixStream) -> Duration {
    let t = Instant::now();
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "got {rest:?}"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
    }
    t.elapsed()
}
