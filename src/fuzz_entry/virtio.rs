//! virtio-blk and the virtio-mmio transport, driven by a fuzzed guest driver over real guest
//! memory and an in-memory disk.

use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::Input;
use super::ring::{F_NEXT, F_WRITE, Ring};
use crate::devices::bus::BusDevice;
use crate::devices::virtio::block::Block;
use crate::devices::virtio::block::request::{
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use crate::devices::virtio::mmio::{MmioTransport, reg};
use crate::devices::virtio::{
    ActivateContext, Interrupt, VIRTIO_F_VERSION_1, VIRTIO_ID_BLOCK, VIRTIO_RING_F_EVENT_IDX,
    VirtioDevice, status,
};
use crate::disk::{DiskBackend, DiskError};
use crate::vmm::memory::GuestMemoryMmap;

const MEM_SIZE: u64 = 1 << 20;
/// Buffers live above the rings.
const DATA: u64 = 0x1000;
const DISK_SIZE: usize = 64 << 10;

/// A disk in memory that checks what the device asks of it: every access lies inside the
/// disk (the device must check ranges before it calls), and a read-only disk is never
/// written.
struct MemDisk {
    data: Mutex<Vec<u8>>,
    writable: bool,
}

impl MemDisk {
    fn new(writable: bool) -> MemDisk {
        MemDisk {
            data: Mutex::new((0..DISK_SIZE).map(|i| (i % 251) as u8).collect()),
            writable,
        }
    }

    fn check(&self, offset: u64, len: usize) {
        let end = offset.checked_add(len as u64);
        assert!(
            end.is_some_and(|e| e <= DISK_SIZE as u64),
            "the device accessed {len} bytes at {offset}, outside the {DISK_SIZE}-byte disk"
        );
    }
}

impl DiskBackend for MemDisk {
    fn len(&self) -> u64 {
        DISK_SIZE as u64
    }

    fn is_writable(&self) -> bool {
        self.writable
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        self.check(offset, buf.len());
        let d = self.data.lock().unwrap();
        buf.copy_from_slice(&d[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        assert!(self.writable, "the device wrote to a read-only disk");
        self.check(offset, buf.len());
        let mut d = self.data.lock().unwrap();
        d[offset as usize..offset as usize + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> Result<(), DiskError> {
        Ok(())
    }

    fn id(&self) -> [u8; 20] {
        *b"fuzz-disk-0123456789"
    }
}

fn guest_memory() -> Option<GuestMemoryMmap> {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).ok()
}

fn interrupt() -> Option<Arc<Interrupt>> {
    Some(Arc::new(Interrupt::new(
        EventFd::new(libc::EFD_NONBLOCK).ok()?,
    )))
}

/// An address: mostly inside the data area, sometimes anything at all.
fn addr(inp: &mut Input) -> u64 {
    if inp.u8() < 224 {
        DATA + u64::from(inp.u32()) % (MEM_SIZE - DATA)
    } else {
        inp.u64()
    }
}

/// One step of a guest driver on `ring`: descriptors, headers, buffer bytes, whole requests,
/// avail-ring updates. Returns false for steps it does not handle.
fn driver_step(op: u8, inp: &mut Input, mem: &GuestMemoryMmap, ring: &mut Ring) -> bool {
    match op {
        0 => {
            let i = u16::from(inp.u8());
            let a = addr(inp);
            let len = inp.pick_u32(&[16, 1, 512, 1024, 4096, 0, 1 << 20, 65536]);
            let flags = u16::from(inp.u8() & 7);
            let next = u16::from(inp.u8()) % (Ring::SIZE + 2);
            ring.set_desc(mem, i, a, len, flags, next);
        }
        1 => {
            let a = addr(inp);
            let t = inp.pick_u32(&[
                VIRTIO_BLK_T_IN,
                VIRTIO_BLK_T_OUT,
                VIRTIO_BLK_T_FLUSH,
                VIRTIO_BLK_T_GET_ID,
                11,
                13,
            ]);
            let sector = u64::from(inp.pick_u32(&[0, 1, 127, 128, 129, u32::MAX]));
            let mut h = [0u8; 16];
            h[..4].copy_from_slice(&t.to_le_bytes());
            h[8..].copy_from_slice(&sector.to_le_bytes());
            let _ = mem.write_slice(&h, GuestAddress(a));
        }
        2 => {
            let a = addr(inp);
            let _ = mem.write_slice(inp.chunk(), GuestAddress(a));
        }
        3 => ring.publish(mem, u16::from(inp.u8()) % Ring::SIZE),
        4 => ring.set_avail_idx(mem, inp.u16()),
        5 => {
            // A whole request: header, `n` data buffers, status, from descriptor `first`.
            let first = u16::from(inp.u8()) % Ring::SIZE;
            let n = u16::from(inp.u8() % 4);
            let t = inp.pick_u32(&[VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_GET_ID]);
            let sector = u64::from(inp.u8());
            let hdr = DATA + u64::from(first) * 0x100;
            let mut h = [0u8; 16];
            h[..4].copy_from_slice(&t.to_le_bytes());
            h[8..].copy_from_slice(&sector.to_le_bytes());
            let _ = mem.write_slice(&h, GuestAddress(hdr));
            let idx = |k: u16| (first + k) % Ring::SIZE;
            ring.set_desc(mem, idx(0), hdr, 16, F_NEXT, idx(1));
            let dir = if t == VIRTIO_BLK_T_OUT { 0 } else { F_WRITE };
            for k in 1..=n {
                let len = 512 * u32::from(inp.u8() % 9);
                let buf = 0x2_0000 + u64::from(idx(k)) * 0x1_0000;
                ring.set_desc(mem, idx(k), buf, len, F_NEXT | dir, idx(k + 1));
            }
            ring.set_desc(mem, idx(n + 1), hdr + 0xff, 1, F_WRITE, 0);
            ring.publish(mem, first);
        }
        _ => return false,
    }
    true
}

fn activate(dev: &mut Block, mem: &GuestMemoryMmap, irq: &Arc<Interrupt>, q: virtio_queue::Queue) {
    let ctx = ActivateContext {
        mem: mem.clone(),
        interrupt: irq.clone(),
        queues: vec![q],
        acked_features: VIRTIO_F_VERSION_1,
    };
    assert!(
        dev.activate(ctx).is_ok(),
        "activation with one queue failed"
    );
}

/// virtio-blk with its queue and guest memory written by the input: requests of every kind,
/// malformed chains, descriptor loops, corrupt ring indices, resets. The disk checks that
/// every access is in range and that a read-only disk is never written; the used ring never
/// runs ahead of the avail ring.
pub fn virtio_block(data: &[u8]) {
    let mut inp = Input::new(data);
    let flags = inp.u8();
    let writable = flags & 1 != 0;
    let event_idx = flags & 2 != 0;
    let (Some(mem), Some(irq)) = (guest_memory(), interrupt()) else {
        return;
    };
    let Ok(mut dev) = Block::new("vfuzz".into(), Box::new(MemDisk::new(writable))) else {
        return;
    };
    let mut ring = Ring::new(0);
    let mut active = false;
    let mut steps = 0;
    while !inp.done() && steps < 512 {
        steps += 1;
        let op = inp.u8() % 9;
        if driver_step(op, &mut inp, &mem, &mut ring) {
            continue;
        }
        match op {
            6 if !active => {
                if let Some(q) = ring.queue(&mem, event_idx) {
                    activate(&mut dev, &mem, &irq, q);
                    active = true;
                }
            }
            6 | 7 => dev.process_queue(),
            _ => {
                // The driver resets the device and sets the rings up again.
                dev.reset();
                assert!(!dev.needs_reset());
                let _ = mem.write_slice(&[0u8; Ring::BYTES as usize], GuestAddress(0));
                ring = Ring::new(0);
                active = false;
            }
        }
        let _ = ring.take_used(&mem);
    }
    if !active && let Some(q) = ring.queue(&mem, event_idx) {
        activate(&mut dev, &mem, &irq, q);
    }
    dev.process_queue();
}

/// Register offsets the driver uses, for the register-access steps.
const REGS: &[u32] = &[
    reg::MAGIC as u32,
    reg::VERSION as u32,
    reg::DEVICE_ID as u32,
    reg::DEVICE_FEATURES as u32,
    reg::DEVICE_FEATURES_SEL as u32,
    reg::DRIVER_FEATURES as u32,
    reg::DRIVER_FEATURES_SEL as u32,
    reg::QUEUE_SEL as u32,
    reg::QUEUE_NUM_MAX as u32,
    reg::QUEUE_NUM as u32,
    reg::QUEUE_READY as u32,
    reg::QUEUE_NOTIFY as u32,
    reg::INTERRUPT_STATUS as u32,
    reg::INTERRUPT_ACK as u32,
    reg::STATUS as u32,
    reg::QUEUE_DESC_LOW as u32,
    reg::QUEUE_DESC_HIGH as u32,
    reg::QUEUE_DRIVER_LOW as u32,
    reg::QUEUE_DRIVER_HIGH as u32,
    reg::QUEUE_DEVICE_LOW as u32,
    reg::QUEUE_DEVICE_HIGH as u32,
    reg::CONFIG_GENERATION as u32,
    reg::CONFIG as u32,
    reg::CONFIG as u32 + 8,
];

fn read32(t: &mut MmioTransport, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(offset, &mut b);
    u32::from_le_bytes(b)
}

fn write32(t: &mut MmioTransport, offset: u64, v: u32) {
    t.write(offset, &v.to_le_bytes());
}

/// The virtio-mmio transport in front of a virtio-blk device: register reads and writes of
/// any size and offset, the driver's initialization sequence with fuzzed values, queue
/// notifications served by the device, and guest memory as in [`virtio_block`]. The identity
/// registers never change, interrupt status holds only the two defined bits, and writing
/// status 0 resets the device.
pub fn mmio_transport(data: &[u8]) {
    let mut inp = Input::new(data);
    let writable = inp.bool();
    let (Some(mem), Some(irq)) = (guest_memory(), interrupt()) else {
        return;
    };
    let Ok(block) = Block::new("vfuzz".into(), Box::new(MemDisk::new(writable))) else {
        return;
    };
    let block = Arc::new(Mutex::new(block));
    let dev: Arc<Mutex<dyn VirtioDevice>> = block.clone();
    let mut t = MmioTransport::new(dev, mem.clone(), irq.clone());
    let mut ring = Ring::new(0);
    let mut steps = 0;
    while !inp.done() && steps < 512 {
        steps += 1;
        let op = inp.u8() % 10;
        if driver_step(op, &mut inp, &mem, &mut ring) {
            continue;
        }
        match op {
            6 => {
                let offset = u64::from(inp.pick_u32(REGS)) % 0x200;
                let size = [4usize, 1, 2, 8, 3][usize::from(inp.u8()) % 5];
                let mut buf = [0u8; 8];
                if inp.bool() {
                    t.read(offset, &mut buf[..size]);
                } else {
                    buf.copy_from_slice(&inp.u64().to_le_bytes());
                    t.write(offset, &buf[..size]);
                }
            }
            7 => {
                // The driver's initialization, each value fuzzed or the usual one.
                let v =
                    |usual: u32, inp: &mut Input| if inp.u8() < 200 { usual } else { inp.u32() };
                let features = (VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX)
                    >> (32 * u64::from(inp.u8() & 1));
                for (r, usual) in [
                    (reg::STATUS, 0),
                    (reg::STATUS, status::ACKNOWLEDGE),
                    (reg::STATUS, status::ACKNOWLEDGE | status::DRIVER),
                    (reg::DRIVER_FEATURES_SEL, 1),
                    (reg::DRIVER_FEATURES, (VIRTIO_F_VERSION_1 >> 32) as u32),
                    (reg::DRIVER_FEATURES_SEL, 0),
                    (reg::DRIVER_FEATURES, features as u32),
                    (
                        reg::STATUS,
                        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
                    ),
                    (reg::QUEUE_SEL, 0),
                    (reg::QUEUE_NUM, u32::from(Ring::SIZE)),
                    (reg::QUEUE_DESC_LOW, ring.desc as u32),
                    (reg::QUEUE_DESC_HIGH, 0),
                    (reg::QUEUE_DRIVER_LOW, ring.avail as u32),
                    (reg::QUEUE_DRIVER_HIGH, 0),
                    (reg::QUEUE_DEVICE_LOW, ring.used as u32),
                    (reg::QUEUE_DEVICE_HIGH, 0),
                    (reg::QUEUE_READY, 1),
                    (
                        reg::STATUS,
                        status::ACKNOWLEDGE
                            | status::DRIVER
                            | status::FEATURES_OK
                            | status::DRIVER_OK,
                    ),
                ] {
                    let value = v(usual, &mut inp);
                    write32(&mut t, r, value);
                }
            }
            8 => {
                write32(&mut t, reg::QUEUE_NOTIFY, u32::from(inp.u8() % 2));
                block.lock().unwrap().process_queue();
            }
            _ => {
                write32(&mut t, reg::STATUS, 0);
                assert_eq!(read32(&mut t, reg::STATUS), 0, "status 0 did not reset");
                assert_eq!(read32(&mut t, reg::INTERRUPT_STATUS), 0);
                let _ = mem.write_slice(&[0u8; Ring::BYTES as usize], GuestAddress(0));
                ring = Ring::new(0);
            }
        }
        assert_eq!(read32(&mut t, reg::MAGIC), 0x7472_6976);
        assert_eq!(read32(&mut t, reg::VERSION), 2);
        assert_eq!(read32(&mut t, reg::DEVICE_ID), VIRTIO_ID_BLOCK);
        assert_eq!(read32(&mut t, reg::INTERRUPT_STATUS) & !3, 0);
        let _ = ring.take_used(&mem);
    }
}
