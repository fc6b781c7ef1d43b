//! The virtio-blk device: serves requests from its one queue with a disk backend.
//!
//! Whatever the driver puts in the queue is untrusted. Each chain is read once
//! ([`read_chain`]: no indirect tables, no loops) and checked against the advertised bounds
//! (SEG_MAX segments of SIZE_MAX bytes) and guest memory before the disk is touched; a
//! request that cannot be served gets an error status (and a rate-limited log line). A queue
//! that cannot be walked any more (corrupt ring indices, used ring outside guest memory)
//! marks the device broken: it stops, sets DEVICE_NEEDS_RESET and raises a configuration
//! interrupt. Nothing here panics, and host memory outside guest RAM is never touched (all
//! guest access goes through vm-memory).
//!
//! Requests are served only on the device thread, in passes bounded by [`Budget`]; activation
//! just kicks the queue's eventfd.
//!
//! A failed flush is sticky: the host kernel reports a writeback error once per open file,
//! so a retried `fdatasync` would succeed although data was lost. After the first failure
//! every FLUSH and every write fails with IOERR (reads still work, so the guest can salvage
//! what it has), for as long as the VMM runs, across device resets; the device also shows
//! DEVICE_NEEDS_RESET (until the driver resets it) and raises a configuration interrupt.

use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use super::pass::Budget;
use super::request::{
    HEADER_LEN, Header, ID_BYTES, Layout, RequestError, RequestKind, check_range,
};
use super::{QUEUE_SIZE, SECTOR_SIZE, SEG_MAX, SIZE_MAX, features, status};
use crate::devices::virtio::descriptors::{Segment, Stream, all_in_memory, read_chain};
use crate::devices::virtio::interrupt::{INT_CONFIG, INT_USED_RING};
use crate::devices::virtio::{
    ActivateContext, Interrupt, VIRTIO_F_VERSION_1, VIRTIO_ID_BLOCK, VIRTIO_RING_F_EVENT_IDX,
    VirtioDevice, VirtioError,
};
use crate::disk::DiskBackend;
use crate::log_limit::LogLimit;
use crate::vmm::memory::GuestMemoryMmap;

static BAD_REQUEST: LogLimit = LogLimit::new();
static IO_ERROR: LogLimit = LogLimit::new();
static BROKEN: LogLimit = LogLimit::new();
static NOTIFY: LogLimit = LogLimit::new();
static KICK: LogLimit = LogLimit::new();

/// Largest bounce buffer between the disk and guest memory.
const CHUNK: usize = 1 << 20;

/// What exists only between DRIVER_OK and reset.
struct Active {
    mem: GuestMemoryMmap,
    queue: Queue,
    interrupt: Arc<Interrupt>,
}

/// What serving a request needs besides the queue.
struct Server {
    name: String,
    disk: Box<dyn DiskBackend>,
    read_only: bool,
    capacity: u64,
    /// A flush failed once: writes and flushes fail from now on (see the module docs).
    flush_failed: bool,
    bounce: Vec<u8>,
    segs: Vec<Segment>,
}

/// The result of one request.
struct Served {
    /// Bytes written to the driver's buffers (the used-ring length).
    used: u32,
    /// Data bytes the request moved or asked for (for the pass budget).
    bytes: u64,
}

pub struct Block {
    server: Server,
    features: u64,
    config: [u8; 24],
    queue_evts: [EventFd; 1],
    active: Option<Active>,
    /// The queue is corrupt: nothing is served until a reset.
    broken: bool,
    /// A flush failed since the last reset: DEVICE_NEEDS_RESET shows.
    flush_needs_reset: bool,
}

impl Block {
    pub fn new(name: String, disk: Box<dyn DiskBackend>) -> std::io::Result<Self> {
        let read_only = !disk.is_writable();
        let capacity = disk.len() / SECTOR_SIZE;
        let mut features = VIRTIO_F_VERSION_1
            | VIRTIO_RING_F_EVENT_IDX
            | features::SIZE_MAX
            | features::SEG_MAX
            | features::BLK_SIZE
            | features::FLUSH;
        if read_only {
            features |= features::RO;
        }
        let mut config = [0u8; 24];
        config[0..8].copy_from_slice(&capacity.to_le_bytes());
        config[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        config[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        Ok(Block {
            server: Server {
                name,
                disk,
                read_only,
                capacity,
                flush_failed: false,
                bounce: Vec::new(),
                segs: Vec::with_capacity(usize::from(QUEUE_SIZE)),
            },
            features,
            config,
            queue_evts: [EventFd::new(libc::EFD_NONBLOCK)?],
            active: None,
            broken: false,
            flush_needs_reset: false,
        })
    }

    pub fn queue_event(&self) -> &EventFd {
        &self.queue_evts[0]
    }

    /// Makes the device thread run a pass (the eventfd is level-triggered in its loop). A
    /// write that fails because the counter is full leaves it readable, which is all a kick
    /// needs.
    fn kick(&self) {
        if let Err(e) = self.queue_evts[0].write(1)
            && e.kind() != std::io::ErrorKind::WouldBlock
            && let Some(n) = KICK.hit()
        {
            log::warn!(
                "{}: cannot kick the device thread ({n}x): {e}",
                self.server.name
            );
        }
    }

    /// Serves what the driver queued, up to one pass's [`Budget`]; raises the interrupt if
    /// the driver wants one; re-arms the queue eventfd when requests are left.
    pub fn process_queue(&mut self) {
        if self.broken {
            return;
        }
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let flush_failed_before = self.server.flush_failed;
        let mut budget = Budget::new();
        let result = run_pass(active, &mut self.server, &mut budget);
        if !flush_failed_before && self.server.flush_failed {
            self.flush_needs_reset = true;
            active.interrupt.trigger(INT_CONFIG);
        }
        let (used_any, more) = match result {
            Ok(r) => r,
            Err(e) => {
                if let Some(n) = BROKEN.hit() {
                    log::warn!(
                        "{}: queue is broken, device needs a reset ({n}x): {e}",
                        self.server.name
                    );
                }
                self.broken = true;
                active.interrupt.trigger(INT_CONFIG);
                return;
            }
        };
        if used_any {
            match active.queue.needs_notification(&active.mem) {
                Ok(true) => active.interrupt.trigger(INT_USED_RING),
                Ok(false) => {}
                Err(e) => {
                    if let Some(n) = NOTIFY.hit() {
                        log::warn!(
                            "{}: cannot read the used event index ({n}x): {e}",
                            self.server.name
                        );
                    }
                    active.interrupt.trigger(INT_USED_RING);
                }
            }
        }
        if more {
            self.kick();
        }
    }
}

/// One pass: serves chains until the queue is empty (with notifications re-enabled) or the
/// budget is spent. Returns (whether buffers were used, whether requests may be left).
fn run_pass(
    a: &mut Active,
    server: &mut Server,
    budget: &mut Budget,
) -> Result<(bool, bool), virtio_queue::Error> {
    let mut used_any = false;
    loop {
        a.queue.disable_notification(&a.mem)?;
        loop {
            if budget.exhausted() {
                // Notifications stay off: the re-armed eventfd brings the next pass.
                return Ok((used_any, true));
            }
            let Some(head) = a.queue.iter(&a.mem)?.next().map(|c| c.head_index()) else {
                break;
            };
            let served = server.serve(&a.mem, a.queue.desc_table(), a.queue.size(), head);
            budget.spend(served.bytes);
            a.queue.add_used(&a.mem, head, served.used)?;
            used_any = true;
        }
        if !a.queue.enable_notification(&a.mem)? {
            return Ok((used_any, false));
        }
    }
}

impl Server {
    fn bad_request(&self, e: &RequestError) {
        if let Some(n) = BAD_REQUEST.hit() {
            log::warn!("{}: {e} ({n}x)", self.name);
        }
    }

    fn io_error(&self, what: &str, e: &dyn std::fmt::Display) {
        if let Some(n) = IO_ERROR.hit() {
            log::warn!("{}: {what} failed ({n}x): {e}", self.name);
        }
    }

    /// Serves the chain whose head is `head`.
    fn serve(&mut self, mem: &GuestMemoryMmap, table: u64, size: u16, head: u16) -> Served {
        let mut segs = std::mem::take(&mut self.segs);
        let served = match read_chain(mem, GuestAddress(table), size, head, &mut segs) {
            Ok(()) => self.serve_chain(mem, &segs),
            Err(e) => {
                // No trustworthy status byte to write to.
                self.bad_request(&e.into());
                Served { used: 0, bytes: 0 }
            }
        };
        self.segs = segs;
        served
    }

    fn serve_chain(&mut self, mem: &GuestMemoryMmap, segs: &[Segment]) -> Served {
        let writer = Stream::writable(segs);
        let layout = match Layout::check(segs) {
            Ok(l) => l,
            Err(e) => {
                self.bad_request(&e);
                if e == RequestError::NoStatus {
                    return Served { used: 0, bytes: 0 };
                }
                // Not NoStatus, so there is at least one writable byte.
                let at = writer.bytes().saturating_sub(1);
                return finish(mem, writer, at, status::IOERR, 0, 0);
            }
        };
        let bytes = (layout.readable - HEADER_LEN as u64) + layout.data_writable;
        if let Err(e) = all_in_memory(mem, segs) {
            self.bad_request(&e.into());
            return finish(mem, writer, layout.data_writable, status::IOERR, 0, 0);
        }
        let mut header = [0u8; HEADER_LEN];
        let (status, data_written) = match Stream::readable(segs)
            .read_at(mem, 0, &mut header)
            .map_err(RequestError::from)
            .and_then(|()| Header::parse(&header))
        {
            Err(e) => {
                self.bad_request(&e);
                (status::IOERR, 0)
            }
            Ok(h) => self.execute(mem, segs, layout, h),
        };
        finish(
            mem,
            writer,
            layout.data_writable,
            status,
            data_written,
            bytes,
        )
    }

    /// Runs a well-formed request; returns its status and the data bytes written to the
    /// driver's buffers.
    fn execute(
        &mut self,
        mem: &GuestMemoryMmap,
        segs: &[Segment],
        layout: Layout,
        h: Header,
    ) -> (u8, u64) {
        let reader = Stream::readable(segs);
        let writer = Stream::writable(segs);
        let reject = |s: &Self, e: RequestError| {
            s.bad_request(&e);
            (status::IOERR, 0)
        };
        match h.kind {
            RequestKind::In => {
                let len = layout.data_writable;
                let mut offset = match check_range(h.sector, len, self.capacity) {
                    Ok(o) => o,
                    Err(e) => return reject(self, e),
                };
                let mut done = 0u64;
                while done < len {
                    let n = (len - done).min(CHUNK as u64) as usize;
                    if self.bounce.len() < n {
                        self.bounce.resize(n, 0);
                    }
                    if let Err(e) = self.disk.read_exact_at(&mut self.bounce[..n], offset) {
                        self.io_error("read", &e);
                        return (status::IOERR, done);
                    }
                    if let Err(e) = writer.write_at(mem, done, &self.bounce[..n]) {
                        self.io_error("copy to guest", &e);
                        return (status::IOERR, done);
                    }
                    done += n as u64;
                    offset += n as u64;
                }
                (status::OK, done)
            }
            RequestKind::Out => {
                if self.read_only {
                    return reject(self, RequestError::ReadOnly);
                }
                if self.flush_failed {
                    return reject(self, RequestError::AfterFlushError);
                }
                let len = layout.readable - HEADER_LEN as u64;
                let mut offset = match check_range(h.sector, len, self.capacity) {
                    Ok(o) => o,
                    Err(e) => return reject(self, e),
                };
                let mut done = 0u64;
                while done < len {
                    let n = (len - done).min(CHUNK as u64) as usize;
                    if self.bounce.len() < n {
                        self.bounce.resize(n, 0);
                    }
                    let from = HEADER_LEN as u64 + done;
                    if let Err(e) = reader.read_at(mem, from, &mut self.bounce[..n]) {
                        self.io_error("copy from guest", &e);
                        return (status::IOERR, 0);
                    }
                    if let Err(e) = self.disk.write_all_at(&self.bounce[..n], offset) {
                        self.io_error("write", &e);
                        return (status::IOERR, 0);
                    }
                    done += n as u64;
                    offset += n as u64;
                }
                (status::OK, 0)
            }
            RequestKind::Flush => {
                if self.flush_failed {
                    return reject(self, RequestError::AfterFlushError);
                }
                match self.disk.flush() {
                    Ok(()) => (status::OK, 0),
                    Err(e) => {
                        self.flush_failed = true;
                        self.io_error("flush (writes and flushes fail from now on)", &e);
                        (status::IOERR, 0)
                    }
                }
            }
            RequestKind::GetId => {
                let id = self.disk.id();
                let n = layout.data_writable.min(ID_BYTES as u64) as usize;
                match writer.write_at(mem, 0, &id[..n]) {
                    Ok(()) => (status::OK, n as u64),
                    Err(e) => {
                        self.io_error("GET_ID", &e);
                        (status::IOERR, 0)
                    }
                }
            }
            RequestKind::Unsupported(t) => {
                if let Some(n) = BAD_REQUEST.hit() {
                    log::debug!("{}: unsupported request type {t} ({n}x)", self.name);
                }
                (status::UNSUPP, 0)
            }
        }
    }
}

/// Writes the status byte at `at` in the writable buffers; returns what the used ring gets.
fn finish(
    mem: &GuestMemoryMmap,
    writer: Stream<'_>,
    at: u64,
    status: u8,
    data_written: u64,
    bytes: u64,
) -> Served {
    // Data written is at most MAX_REQUEST_BYTES (or ID_BYTES).
    let data = u32::try_from(data_written).unwrap_or(u32::MAX);
    let used = match writer.write_at(mem, at, &[status]) {
        Ok(()) => data.saturating_add(1),
        Err(_) => data,
    };
    Served { used, bytes }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::devices::virtio::read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // All of virtio-blk's config space is read-only for the driver here (no writeback
        // cache toggle is offered).
        if let Some(n) = BAD_REQUEST.hit() {
            log::debug!(
                "{}: ignored config write at {offset:#x}, {} bytes ({n}x)",
                self.server.name,
                data.len()
            );
        }
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), VirtioError> {
        let mut queues = ctx.queues;
        let queue = queues.pop().ok_or(VirtioError::QueueNotReady(0))?;
        self.active = Some(Active {
            mem: ctx.mem,
            queue,
            interrupt: ctx.interrupt,
        });
        self.broken = false;
        // Requests queued before DRIVER_OK are served by the device thread, not here on the
        // vCPU thread.
        self.kick();
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
        self.broken = false;
        self.flush_needs_reset = false;
        self.server.bounce = Vec::new();
    }

    fn needs_reset(&self) -> bool {
        self.broken || self.flush_needs_reset
    }
}

#[cfg(test)]
mod tests {
    use super::super::pass::PASS_REQUESTS;
    use super::super::request::{
        VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
    };
    use super::*;
    use crate::disk::DiskError;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    const F_NEXT: u16 = 1;
    const F_WRITE: u16 = 2;
    const F_INDIRECT: u16 = 4;

    /// A disk held in memory; counts reads and flushes, fails the first `fail_flushes`
    /// flushes.
    struct MemDisk {
        data: Mutex<Vec<u8>>,
        writable: bool,
        reads: Arc<AtomicUsize>,
        flushes: Arc<AtomicUsize>,
        fail_flushes: Arc<AtomicUsize>,
    }

    impl DiskBackend for MemDisk {
        fn len(&self) -> u64 {
            self.data.lock().unwrap().len() as u64
        }
        fn is_writable(&self) -> bool {
            self.writable
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let d = self.data.lock().unwrap();
            buf.copy_from_slice(&d[offset as usize..offset as usize + buf.len()]);
            Ok(())
        }
        fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
            let mut d = self.data.lock().unwrap();
            d[offset as usize..offset as usize + buf.len()].copy_from_slice(buf);
            Ok(())
        }
        fn flush(&self) -> Result<(), DiskError> {
            self.flushes.fetch_add(1, Ordering::SeqCst);
            let failing = self
                .fail_flushes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                return Err(DiskError::Io {
                    op: "fdatasync",
                    path: "mem".into(),
                    offset: 0,
                    source: std::io::Error::from_raw_os_error(libc::EIO),
                });
            }
            Ok(())
        }
        fn id(&self) -> [u8; 20] {
            *b"mem-disk-0123456789x"
        }
    }

    struct Fixture {
        mem: GuestMemoryMmap,
        dev: Block,
        irq: Arc<Interrupt>,
        reads: Arc<AtomicUsize>,
        flushes: Arc<AtomicUsize>,
        fail_flushes: Arc<AtomicUsize>,
    }

    const HDR: u64 = 0x10_0000;
    const DATA: u64 = 0x10_1000;
    const STATUS: u64 = 0x20_0000;

    fn fixture_on(mem: GuestMemoryMmap, writable: bool) -> Fixture {
        let reads = Arc::new(AtomicUsize::new(0));
        let flushes = Arc::new(AtomicUsize::new(0));
        let fail_flushes = Arc::new(AtomicUsize::new(0));
        let disk: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
        let dev = Block::new(
            "vdt".into(),
            Box::new(MemDisk {
                data: Mutex::new(disk),
                writable,
                reads: reads.clone(),
                flushes: flushes.clone(),
                fail_flushes: fail_flushes.clone(),
            }),
        )
        .unwrap();
        let irq = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
        Fixture {
            mem,
            dev,
            irq,
            reads,
            flushes,
            fail_flushes,
        }
    }

    fn fixture(writable: bool) -> Fixture {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        fixture_on(mem, writable)
    }

    fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
    }

    /// Header, one data buffer of `len` bytes (device-writable when `data_flags` says so),
    /// status: the usual request.
    fn request(len: u32, data_flags: u16) -> [RawDescriptor; 3] {
        [
            desc(HDR, 16, F_NEXT, 1),
            desc(DATA, len, F_NEXT | data_flags, 2),
            desc(STATUS, 1, F_WRITE, 0),
        ]
    }

    /// `n` usual requests, each in its own three descriptors (next indices absolute).
    fn requests(n: u16, len: u32, data_flags: u16) -> Vec<RawDescriptor> {
        (0..n)
            .flat_map(|i| {
                let b = i * 3;
                [
                    desc(HDR, 16, F_NEXT, b + 1),
                    desc(DATA, len, F_NEXT | data_flags, b + 2),
                    desc(STATUS, 1, F_WRITE, 0),
                ]
            })
            .collect()
    }

    fn activate(dev: &mut Block, mem: &GuestMemoryMmap, irq: &Arc<Interrupt>, q: Queue) {
        dev.activate(ActivateContext {
            mem: mem.clone(),
            interrupt: irq.clone(),
            queues: vec![q],
            acked_features: VIRTIO_F_VERSION_1,
        })
        .unwrap();
    }

    /// What the device thread does: one pass per kick, until no kick is left. Returns the
    /// number of passes.
    fn serve_all(dev: &mut Block) -> usize {
        let mut passes = 0;
        while dev.queue_event().read().is_ok() {
            dev.process_queue();
            passes += 1;
            assert!(passes < 1000, "the device keeps re-arming");
        }
        passes
    }

    fn header(mem: &GuestMemoryMmap, t: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&t.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&h, GuestAddress(HDR)).unwrap();
    }

    fn used_entries(vq: &MockSplitQueue<'_, GuestMemoryMmap>) -> Vec<(u32, u32)> {
        let n = vq.used().idx().load();
        (0..n)
            .map(|i| {
                let e = vq.used().ring().ref_at(i as usize).unwrap().load();
                (e.id(), e.len())
            })
            .collect()
    }

    /// Queues `descs` as one or more chains, activates the device, serves them as the device
    /// thread would and returns the used-ring entries as (id, len).
    fn run(f: &mut Fixture, descs: &[RawDescriptor]) -> Vec<(u32, u32)> {
        let vq = MockSplitQueue::create(&f.mem, GuestAddress(0), 16);
        vq.add_desc_chains(descs, 0).unwrap();
        let q: Queue = vq.create_queue().unwrap();
        f.dev.reset();
        activate(&mut f.dev, &f.mem, &f.irq, q);
        serve_all(&mut f.dev);
        used_entries(&vq)
    }

    fn status(f: &Fixture) -> u8 {
        f.mem.read_obj(GuestAddress(STATUS)).unwrap()
    }

    fn disk_bytes(f: &Fixture, off: usize, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        f.dev.server.disk.read_exact_at(&mut b, off as u64).unwrap();
        b
    }

    #[test]
    fn activation_only_kicks_the_device_thread() {
        let mut f = fixture(false);
        header(&f.mem, VIRTIO_BLK_T_IN, 0);
        let vq = MockSplitQueue::create(&f.mem, GuestAddress(0), 16);
        vq.add_desc_chains(&request(512, F_WRITE), 0).unwrap();
        activate(&mut f.dev, &f.mem, &f.irq, vq.create_queue().unwrap());
        // Nothing served on the activating (vCPU) thread...
        assert_eq!(vq.used().idx().load(), 0);
        assert_eq!(f.reads.load(Ordering::SeqCst), 0);
        // ... but the device thread is woken and serves it.
        assert_eq!(serve_all(&mut f.dev), 1);
        assert_eq!(used_entries(&vq), vec![(0, 513)]);
    }

    #[test]
    fn a_pass_is_bounded_and_re_arms() {
        let mut f = fixture(false);
        header(&f.mem, VIRTIO_BLK_T_IN, 0);
        let n = 85; // 255 descriptors: as many three-descriptor requests as the ring holds
        let vq = MockSplitQueue::create(&f.mem, GuestAddress(0), 256);
        vq.add_desc_chains(&requests(n, 512, F_WRITE), 0).unwrap();
        activate(&mut f.dev, &f.mem, &f.irq, vq.create_queue().unwrap());
        assert_eq!(f.dev.queue_event().read().unwrap(), 1);
        f.dev.process_queue();
        assert_eq!(vq.used().idx().load(), PASS_REQUESTS as u16);
        // The interrupt for the first batch is raised now, not after the last request.
        assert_ne!(f.irq.status() & INT_USED_RING, 0);
        // The device re-armed its own eventfd, and the next pass finishes the queue.
        assert_eq!(serve_all(&mut f.dev), 1);
        assert_eq!(vq.used().idx().load(), n);
        assert!(used_entries(&vq).iter().all(|&(_, len)| len == 513));
    }

    #[test]
    fn read_request() {
        let mut f = fixture(false);
        header(&f.mem, VIRTIO_BLK_T_IN, 1);
        let used = run(&mut f, &request(1024, F_WRITE));
        assert_eq!(used, vec![(0, 1025)]);
        assert_eq!(status(&f), status::OK);
        let mut got = vec![0u8; 1024];
        f.mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(got, disk_bytes(&f, 512, 1024));
        assert_ne!(f.irq.status() & INT_USED_RING, 0);
    }

    #[test]
    fn write_and_flush() {
        let mut f = fixture(true);
        header(&f.mem, VIRTIO_BLK_T_OUT, 2);
        f.mem.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
        let used = run(&mut f, &request(512, 0));
        assert_eq!(used, vec![(0, 1)]);
        assert_eq!(status(&f), status::OK);
        assert_eq!(disk_bytes(&f, 1024, 512), vec![0xab; 512]);
        header(&f.mem, VIRTIO_BLK_T_FLUSH, 0);
        run(
            &mut f,
            &[desc(HDR, 16, F_NEXT, 1), desc(STATUS, 1, F_WRITE, 0)],
        );
        assert_eq!(status(&f), status::OK);
        assert_eq!(f.flushes.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn read_only_disks_refuse_writes() {
        let mut f = fixture(false);
        assert_ne!(f.dev.features() & features::RO, 0);
        let before = disk_bytes(&f, 0, 512);
        header(&f.mem, VIRTIO_BLK_T_OUT, 0);
        f.mem.write_slice(&[0xcd; 512], GuestAddress(DATA)).unwrap();
        run(&mut f, &request(512, 0));
        assert_eq!(status(&f), status::IOERR);
        assert_eq!(disk_bytes(&f, 0, 512), before);
    }

    #[test]
    fn bad_ranges_lengths_and_types() {
        for (t, sector, len, want) in [
            (VIRTIO_BLK_T_IN, 127, 1024, status::IOERR), // past the 128-sector end
            (VIRTIO_BLK_T_IN, u64::MAX, 512, status::IOERR),
            (VIRTIO_BLK_T_IN, 0, 100, status::IOERR), // not a sector multiple
            (VIRTIO_BLK_T_OUT, 128, 512, status::IOERR),
            (77, 0, 512, status::UNSUPP),
        ] {
            let mut f = fixture(true);
            header(&f.mem, t, sector);
            let flags = if t == VIRTIO_BLK_T_IN { F_WRITE } else { 0 };
            run(&mut f, &request(len, flags));
            assert_eq!(status(&f), want, "type {t} sector {sector} len {len}");
        }
    }

    #[test]
    fn get_id() {
        let mut f = fixture(false);
        header(&f.mem, VIRTIO_BLK_T_GET_ID, 0);
        let used = run(&mut f, &request(20, F_WRITE));
        assert_eq!(used, vec![(0, 21)]);
        let mut id = [0u8; 20];
        f.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(&id, b"mem-disk-0123456789x");
    }

    #[test]
    fn malformed_chains_are_answered_not_fatal() {
        // No writable byte for the status.
        let mut f = fixture(true);
        header(&f.mem, VIRTIO_BLK_T_IN, 0);
        assert_eq!(run(&mut f, &[desc(HDR, 16, 0, 0)]), vec![(0, 0)]);
        // Header too short.
        let mut f = fixture(true);
        run(
            &mut f,
            &[desc(HDR, 8, F_NEXT, 1), desc(STATUS, 1, F_WRITE, 0)],
        );
        assert_eq!(status(&f), status::IOERR);
        // A buffer outside guest memory: IOERR, nothing read from the disk.
        let mut f = fixture(true);
        header(&f.mem, VIRTIO_BLK_T_IN, 0);
        let used = run(
            &mut f,
            &[
                desc(HDR, 16, F_NEXT, 1),
                desc(0xffff_0000_0000, 512, F_NEXT | F_WRITE, 2),
                desc(STATUS, 1, F_WRITE, 0),
            ],
        );
        assert_eq!(used, vec![(0, 1)]);
        assert_eq!(status(&f), status::IOERR);
        assert_eq!(f.reads.load(Ordering::SeqCst), 0);
        // The status in a device-readable buffer (wrong direction): nothing to write it to.
        let mut f = fixture(true);
        header(&f.mem, VIRTIO_BLK_T_FLUSH, 0);
        assert_eq!(
            run(&mut f, &[desc(HDR, 16, F_NEXT, 1), desc(STATUS, 1, 0, 0)]),
            vec![(0, 0)]
        );
        assert!(!f.dev.needs_reset());
    }

    #[test]
    fn a_descriptor_loop_ends() {
        let mut f = fixture(true);
        header(&f.mem, VIRTIO_BLK_T_IN, 0);
        let vq = MockSplitQueue::create(&f.mem, GuestAddress(0), 16);
        // 0 -> 1 -> 0 -> ...
        vq.desc_table().store(0, desc(HDR, 16, F_NEXT, 1)).unwrap();
        vq.desc_table()
            .store(1, desc(DATA, 512, F_NEXT | F_WRITE, 0))
            .unwrap();
        vq.avail().ring().ref_at(0).unwrap().store(0);
        vq.avail().idx().store(1);
        let q: Queue = vq.create_queue().unwrap();
        activate(&mut f.dev, &f.mem, &f.irq, q);
        serve_all(&mut f.dev);
        assert_eq!(vq.used().idx().load(), 1);
        let e = vq.used().ring().ref_at(0).unwrap().load();
        assert_eq!((e.id(), e.len()), (0, 0));
    }

    #[test]
    fn a_corrupt_avail_index_marks_the_device_broken() {
        let mut f = fixture(true);
        let vq = MockSplitQueue::create(&f.mem, GuestAddress(0), 16);
        vq.avail().idx().store(200); // more entries than the queue has
        let q: Queue = vq.create_queue().unwrap();
        activate(&mut f.dev, &f.mem, &f.irq, q);
        serve_all(&mut f.dev);
        assert!(f.dev.needs_reset());
        assert_ne!(f.irq.status() & INT_CONFIG, 0);
        // Further notifications do nothing; a reset clears it.
        f.dev.process_queue();
        f.dev.reset();
        assert!(!f.dev.needs_reset());
    }

    #[test]
    fn requests_over_seg_max_or_size_max_fail_without_touching_the_disk() {
        // SEG_MAX + 1 data segments of 512 bytes (the queue holds them; SEG_MAX allows fewer).
        let mut f = fixture(true);
        header(&f.mem, VIRTIO_BLK_T_IN, 0);
        let segs = SEG_MAX as u16 + 1;
        let mut descs = vec![desc(HDR, 16, F_NEXT, 1)];
        descs.extend((0..segs).map(|i| desc(DATA, 512, F_NEXT | F_WRITE, i + 2)));
        descs.push(desc(STATUS, 1, F_WRITE, 0));
        let vq = MockSplitQueue::create(&f.mem, GuestAddress(0), 256);
        vq.add_desc_chains(&descs, 0).unwrap();
        activate(&mut f.dev, &f.mem, &f.irq, vq.create_queue().unwrap());
        serve_all(&mut f.dev);
        assert_eq!(used_entries(&vq), vec![(0, 1)]);
        assert_eq!(status(&f), status::IOERR);
        // Exactly SEG_MAX segments are served.
        let mut descs = vec![desc(HDR, 16, F_NEXT, 1)];
        descs.extend((0..segs - 1).map(|i| desc(DATA, 512, F_NEXT | F_WRITE, i + 2)));
        descs.push(desc(STATUS, 1, F_WRITE, 0));
        let vq = MockSplitQueue::create(&f.mem, GuestAddress(0), 256);
        vq.add_desc_chains(&descs, 0).unwrap();
        f.dev.reset();
        activate(&mut f.dev, &f.mem, &f.irq, vq.create_queue().unwrap());
        serve_all(&mut f.dev);
        assert_eq!(status(&f), status::OK);
        assert_eq!(used_entries(&vq), vec![(0, SEG_MAX * 512 + 1)]);
        let reads_before = f.reads.load(Ordering::SeqCst);

        // One segment over SIZE_MAX, a 1 GiB segment (more than guest memory), both ways.
        for (t, len, flags) in [
            (VIRTIO_BLK_T_IN, SIZE_MAX + 512, F_WRITE),
            (VIRTIO_BLK_T_IN, 1 << 30, F_WRITE),
            (VIRTIO_BLK_T_OUT, SIZE_MAX + 512, 0),
            (VIRTIO_BLK_T_OUT, 1 << 30, 0),
        ] {
            let before = disk_bytes(&f, 0, 64 * 1024);
            header(&f.mem, t, 0);
            f.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
            assert_eq!(run(&mut f, &request(len, flags)), vec![(0, 1)]);
            assert_eq!(status(&f), status::IOERR, "type {t} len {len}");
            assert_eq!(disk_bytes(&f, 0, 64 * 1024), before);
        }
        // disk_bytes reads through the disk too: 4 of them, none by the device.
        assert_eq!(f.reads.load(Ordering::SeqCst), reads_before + 8);
    }

    #[test]
    fn indirect_descriptors_are_not_followed() {
        // Not offered, so never negotiated: a chain that points to an indirect table is an
        // error for that request (no status: it may be in the table), and the queue goes on.
        let mut f = fixture(true);
        assert_eq!(f.dev.features() & (1 << 28), 0);
        header(&f.mem, VIRTIO_BLK_T_IN, 0);
        // An indirect table at DATA holding a well-formed read request.
        let table = [
            desc(HDR, 16, F_NEXT, 1),
            desc(DATA + 0x1000, 512, F_NEXT | F_WRITE, 2),
            desc(STATUS, 1, F_WRITE, 0),
        ];
        for (i, d) in table.iter().enumerate() {
            f.mem
                .write_obj(*d, GuestAddress(DATA + i as u64 * 16))
                .unwrap();
        }
        f.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        let mut descs = vec![desc(DATA, 48, F_INDIRECT, 0)];
        descs.extend(requests(2, 512, F_WRITE).into_iter().skip(3).map(|d| {
            let d = SplitDescriptor::from(d);
            desc(d.addr().0, d.len(), d.flags(), d.next().saturating_sub(2))
        }));
        let used = run(&mut f, &descs);
        assert_eq!(used, vec![(0, 0), (1, 513)]);
        assert_eq!(f.reads.load(Ordering::SeqCst), 1); // only the second request
        let mut untouched = [0u8; 512];
        f.mem
            .read_slice(&mut untouched, GuestAddress(DATA + 0x1000))
            .unwrap();
        assert_eq!(untouched, [0; 512]);
        assert!(!f.dev.needs_reset());
    }

    #[test]
    fn a_failed_flush_is_sticky() {
        let mut f = fixture(true);
        let flush = [desc(HDR, 16, F_NEXT, 1), desc(STATUS, 1, F_WRITE, 0)];
        f.fail_flushes.store(1, Ordering::SeqCst);
        header(&f.mem, VIRTIO_BLK_T_FLUSH, 0);
        run(&mut f, &flush);
        assert_eq!(status(&f), status::IOERR);
        assert_eq!(f.flushes.load(Ordering::SeqCst), 1);
        // DEVICE_NEEDS_RESET and a configuration interrupt.
        assert!(f.dev.needs_reset());
        assert_ne!(f.irq.status() & INT_CONFIG, 0);

        // The host would now report success: the device does not ask it again.
        for _ in 0..2 {
            f.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
            run(&mut f, &flush);
            assert_eq!(status(&f), status::IOERR);
        }
        assert_eq!(f.flushes.load(Ordering::SeqCst), 1);
        // Writes fail too and leave the disk alone; reads still work.
        let before = disk_bytes(&f, 0, 512);
        header(&f.mem, VIRTIO_BLK_T_OUT, 0);
        f.mem.write_slice(&[0xee; 512], GuestAddress(DATA)).unwrap();
        run(&mut f, &request(512, 0));
        assert_eq!(status(&f), status::IOERR);
        assert_eq!(disk_bytes(&f, 0, 512), before);
        header(&f.mem, VIRTIO_BLK_T_IN, 0);
        run(&mut f, &request(512, F_WRITE));
        assert_eq!(status(&f), status::OK);
        // A reset clears DEVICE_NEEDS_RESET, not the lost data.
        f.dev.reset();
        assert!(!f.dev.needs_reset());
        header(&f.mem, VIRTIO_BLK_T_FLUSH, 0);
        run(&mut f, &flush);
        assert_eq!(status(&f), status::IOERR);
        assert_eq!(f.flushes.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_firmware_rom_is_out_of_reach() {
        // RAM plus a ROM window, as with --bios; the device gets the device view.
        let rom: u64 = 0xffff_0000;
        let full = crate::vmm::memory::create(&[(0, 4 << 20), (rom, 0x1_0000)]).unwrap();
        let image: Vec<u8> = (0..0x1_0000u32).map(|i| (i * 7) as u8).collect();
        full.write_slice(&image, GuestAddress(rom)).unwrap();
        let view = crate::vmm::memory::device_view(&full, Some(rom)).unwrap();
        let mut f = fixture_on(view, true);
        header(&f.mem, VIRTIO_BLK_T_IN, 0);
        // Read data into the ROM: IOERR, nothing read from the disk.
        let used = run(
            &mut f,
            &[
                desc(HDR, 16, F_NEXT, 1),
                desc(rom, 512, F_NEXT | F_WRITE, 2),
                desc(STATUS, 1, F_WRITE, 0),
            ],
        );
        assert_eq!(used, vec![(0, 1)]);
        assert_eq!(status(&f), status::IOERR);
        assert_eq!(f.reads.load(Ordering::SeqCst), 0);
        // The status byte and GET_ID's answer aimed at the ROM: nothing written.
        let used = run(
            &mut f,
            &[desc(HDR, 16, F_NEXT, 1), desc(rom + 0x100, 1, F_WRITE, 0)],
        );
        assert_eq!(used, vec![(0, 0)]);
        header(&f.mem, VIRTIO_BLK_T_GET_ID, 0);
        let used = run(
            &mut f,
            &[
                desc(HDR, 16, F_NEXT, 1),
                desc(rom + 0x200, 20, F_NEXT | F_WRITE, 2),
                desc(STATUS, 1, F_WRITE, 0),
            ],
        );
        assert_eq!(used, vec![(0, 1)]);
        assert_eq!(status(&f), status::IOERR);
        let mut now = vec![0u8; image.len()];
        full.read_slice(&mut now, GuestAddress(rom)).unwrap();
        assert!(now == image, "the ROM changed");
    }

    #[test]
    fn config_space() {
        let f = fixture(false);
        let mut cap = [0u8; 8];
        f.dev.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 128);
        let mut seg = [0u8; 4];
        f.dev.read_config(12, &mut seg);
        assert_eq!(u32::from_le_bytes(seg), SEG_MAX);
        let mut past = [0xffu8; 4];
        f.dev.read_config(u64::MAX - 1, &mut past);
        assert_eq!(past, [0; 4]);
    }
}
