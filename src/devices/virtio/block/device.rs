//! The virtio-blk device: serves requests from its one queue with a disk backend.
//!
//! Whatever the driver puts in the queue is untrusted. A request that cannot be served gets
//! an error status (and a rate-limited log line); a queue that cannot be walked any more
//! (corrupt ring indices, used ring outside guest memory) marks the device broken: it stops,
//! sets DEVICE_NEEDS_RESET and raises a configuration interrupt. Nothing here panics, and
//! host memory outside guest RAM is never touched (all guest access goes through vm-memory).

use std::io::{Read, Write};
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT, Reader, Writer};
use vmm_sys_util::eventfd::EventFd;

use super::request::{Header, ID_BYTES, RequestError, RequestKind, check_range};
use super::{QUEUE_SIZE, SECTOR_SIZE, SEG_MAX, SIZE_MAX, features, status};
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

/// Largest bounce buffer between the disk and guest memory.
const CHUNK: usize = SIZE_MAX as usize;

/// What exists only between DRIVER_OK and reset.
struct Active {
    mem: GuestMemoryMmap,
    queue: Queue,
    interrupt: Arc<Interrupt>,
}

pub struct Block {
    name: String,
    disk: Box<dyn DiskBackend>,
    read_only: bool,
    capacity: u64,
    features: u64,
    config: [u8; 24],
    queue_evts: [EventFd; 1],
    active: Option<Active>,
    broken: bool,
    bounce: Vec<u8>,
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
            name,
            disk,
            read_only,
            capacity,
            features,
            config,
            queue_evts: [EventFd::new(libc::EFD_NONBLOCK)?],
            active: None,
            broken: false,
            bounce: Vec::new(),
        })
    }

    pub fn queue_event(&self) -> &EventFd {
        &self.queue_evts[0]
    }

    /// Serves everything the driver queued; raises the interrupt if the driver wants one.
    pub fn process_queue(&mut self) {
        if self.broken {
            return;
        }
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mut used_any = false;
        let result: Result<(), virtio_queue::Error> = (|| {
            loop {
                active.queue.disable_notification(&active.mem)?;
                loop {
                    let chain = active.queue.iter(&active.mem)?.next();
                    let Some(chain) = chain else { break };
                    let head = chain.head_index();
                    let len = serve(
                        &self.name,
                        &*self.disk,
                        self.read_only,
                        self.capacity,
                        &mut self.bounce,
                        &active.mem,
                        chain,
                    );
                    active.queue.add_used(&active.mem, head, len)?;
                    used_any = true;
                }
                if !active.queue.enable_notification(&active.mem)? {
                    break;
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            log::warn!("{}: queue is broken, device needs a reset: {e}", self.name);
            self.broken = true;
            active.interrupt.trigger(INT_CONFIG);
            return;
        }
        if used_any {
            match active.queue.needs_notification(&active.mem) {
                Ok(true) => active.interrupt.trigger(INT_USED_RING),
                Ok(false) => {}
                Err(e) => {
                    log::warn!("{}: cannot read the used event index: {e}", self.name);
                    active.interrupt.trigger(INT_USED_RING);
                }
            }
        }
    }
}

/// Serves one request; returns the number of bytes written to the driver's buffers.
fn serve(
    name: &str,
    disk: &dyn DiskBackend,
    read_only: bool,
    capacity: u64,
    bounce: &mut Vec<u8>,
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
) -> u32 {
    let reader = Reader::new(mem, chain.clone());
    let writer = Writer::new(mem, chain);
    let (mut reader, mut writer) = match (reader, writer) {
        (Ok(r), Ok(w)) => (r, w),
        (Err(e), _) | (_, Err(e)) => {
            if let Some(n) = BAD_REQUEST.hit() {
                log::warn!("{name}: bad descriptor chain ({n}x): {e}");
            }
            return 0;
        }
    };
    let writable = writer.available_bytes();
    if writable == 0 {
        if let Some(n) = BAD_REQUEST.hit() {
            log::warn!("{name}: {} ({n}x)", RequestError::NoStatus);
        }
        return 0;
    }
    let Ok(mut status_writer) = writer.split_at(writable - 1) else {
        return 0;
    };
    let mut header = [0u8; 16];
    let header_len = reader.read(&mut header).unwrap_or(0);
    let (status, data_written) = match Header::parse(&header[..header_len]) {
        Err(e) => {
            if let Some(n) = BAD_REQUEST.hit() {
                log::warn!("{name}: {e} ({n}x)");
            }
            (status::IOERR, 0)
        }
        Ok(h) => execute(
            name,
            disk,
            read_only,
            capacity,
            bounce,
            h,
            &mut reader,
            &mut writer,
        ),
    };
    if status_writer.write_all(&[status]).is_err() {
        return data_written;
    }
    data_written.saturating_add(1)
}

#[allow(clippy::too_many_arguments)]
fn execute(
    name: &str,
    disk: &dyn DiskBackend,
    read_only: bool,
    capacity: u64,
    bounce: &mut Vec<u8>,
    h: Header,
    reader: &mut Reader<'_>,
    writer: &mut Writer<'_>,
) -> (u8, u32) {
    let reject = |e: RequestError| {
        if let Some(n) = BAD_REQUEST.hit() {
            log::warn!("{name}: {e} ({n}x)");
        }
        (status::IOERR, 0)
    };
    let io_error = |what: &str, e: &dyn std::fmt::Display, written: usize| {
        if let Some(n) = IO_ERROR.hit() {
            log::warn!("{name}: {what} failed ({n}x): {e}");
        }
        (status::IOERR, u32::try_from(written).unwrap_or(u32::MAX))
    };
    match h.kind {
        RequestKind::In => {
            let len = writer.available_bytes();
            let mut offset = match check_range(h.sector, len as u64, capacity) {
                Ok(o) => o,
                Err(e) => return reject(e),
            };
            let mut done = 0;
            while done < len {
                let n = (len - done).min(CHUNK);
                if bounce.len() < n {
                    bounce.resize(n, 0);
                }
                if let Err(e) = disk.read_exact_at(&mut bounce[..n], offset) {
                    return io_error("read", &e, done);
                }
                if let Err(e) = writer.write_all(&bounce[..n]) {
                    return io_error("copy to guest", &e, done);
                }
                done += n;
                offset += n as u64;
            }
            (status::OK, u32::try_from(done).unwrap_or(u32::MAX))
        }
        RequestKind::Out => {
            if read_only {
                return reject(RequestError::ReadOnly);
            }
            let len = reader.available_bytes();
            let mut offset = match check_range(h.sector, len as u64, capacity) {
                Ok(o) => o,
                Err(e) => return reject(e),
            };
            let mut done = 0;
            while done < len {
                let n = (len - done).min(CHUNK);
                if bounce.len() < n {
                    bounce.resize(n, 0);
                }
                if let Err(e) = reader.read_exact(&mut bounce[..n]) {
                    return io_error("copy from guest", &e, 0);
                }
                if let Err(e) = disk.write_all_at(&bounce[..n], offset) {
                    return io_error("write", &e, 0);
                }
                done += n;
                offset += n as u64;
            }
            (status::OK, 0)
        }
        RequestKind::Flush => match disk.flush() {
            Ok(()) => (status::OK, 0),
            Err(e) => io_error("flush", &e, 0),
        },
        RequestKind::GetId => {
            let id = disk.id();
            let n = writer.available_bytes().min(ID_BYTES);
            match writer.write_all(&id[..n]) {
                Ok(()) => (status::OK, n as u32),
                Err(e) => io_error("GET_ID", &e, 0),
            }
        }
        RequestKind::Unsupported(t) => {
            if let Some(n) = BAD_REQUEST.hit() {
                log::debug!("{name}: unsupported request type {t} ({n}x)");
            }
            (status::UNSUPP, 0)
        }
    }
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
                self.name,
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
        // Requests queued before DRIVER_OK are served now.
        self.process_queue();
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
        self.broken = false;
        self.bounce = Vec::new();
    }

    fn needs_reset(&self) -> bool {
        self.broken
    }
}

#[cfg(test)]
mod tests {
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

    /// A disk held in memory.
    struct MemDisk {
        data: Mutex<Vec<u8>>,
        writable: bool,
        flushes: Arc<AtomicUsize>,
    }

    impl DiskBackend for MemDisk {
        fn len(&self) -> u64 {
            self.data.lock().unwrap().len() as u64
        }
        fn is_writable(&self) -> bool {
            self.writable
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
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
        flushes: Arc<AtomicUsize>,
    }

    const HDR: u64 = 0x10_0000;
    const DATA: u64 = 0x10_1000;
    const STATUS: u64 = 0x20_0000;

    fn fixture(writable: bool) -> Fixture {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let flushes = Arc::new(AtomicUsize::new(0));
        let disk: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
        let dev = Block::new(
            "vdt".into(),
            Box::new(MemDisk {
                data: Mutex::new(disk),
                writable,
                flushes: flushes.clone(),
            }),
        )
        .unwrap();
        let irq = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
        Fixture {
            mem,
            dev,
            irq,
            flushes,
        }
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

    fn activate(dev: &mut Block, mem: &GuestMemoryMmap, irq: &Arc<Interrupt>, q: Queue) {
        dev.activate(ActivateContext {
            mem: mem.clone(),
            interrupt: irq.clone(),
            queues: vec![q],
            acked_features: VIRTIO_F_VERSION_1,
        })
        .unwrap();
    }

    fn header(mem: &GuestMemoryMmap, t: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&t.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&h, GuestAddress(HDR)).unwrap();
    }

    /// Queues `descs` as one or more chains, activates the device (which serves them) and
    /// returns the used-ring entries as (id, len).
    fn run(f: &mut Fixture, descs: &[RawDescriptor]) -> Vec<(u32, u32)> {
        let vq = MockSplitQueue::create(&f.mem, GuestAddress(0), 16);
        vq.add_desc_chains(descs, 0).unwrap();
        let q: Queue = vq.create_queue().unwrap();
        activate(&mut f.dev, &f.mem, &f.irq, q);
        let n = vq.used().idx().load();
        (0..n)
            .map(|i| {
                let e = vq.used().ring().ref_at(i as usize).unwrap().load();
                (e.id(), e.len())
            })
            .collect()
    }

    fn status(f: &Fixture) -> u8 {
        f.mem.read_obj(GuestAddress(STATUS)).unwrap()
    }

    fn disk_bytes(f: &Fixture, off: usize, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        f.dev.disk.read_exact_at(&mut b, off as u64).unwrap();
        b
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
        // A buffer outside guest memory.
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
        assert_eq!(used, vec![(0, 0)]);
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
        assert_eq!(vq.used().idx().load(), 1);
    }

    #[test]
    fn a_corrupt_avail_index_marks_the_device_broken() {
        let mut f = fixture(true);
        let vq = MockSplitQueue::create(&f.mem, GuestAddress(0), 16);
        vq.avail().idx().store(200); // more entries than the queue has
        let q: Queue = vq.create_queue().unwrap();
        activate(&mut f.dev, &f.mem, &f.irq, q);
        assert!(f.dev.needs_reset());
        assert_ne!(f.irq.status() & INT_CONFIG, 0);
        // Further notifications do nothing; a reset clears it.
        f.dev.process_queue();
        f.dev.reset();
        assert!(!f.dev.needs_reset());
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
