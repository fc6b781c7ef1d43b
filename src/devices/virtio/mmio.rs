//! The virtio-mmio transport, version 2 (virtio 1.2 §4.2.2): the register window a driver
//! uses to negotiate features, set up queues and drive the device status.
//!
//! Queue registers are plain values here until DRIVER_OK; then they become virtio-queue
//! `Queue`s, are validated against guest memory, and move into the device.

use std::sync::{Arc, Mutex, PoisonError};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::interrupt::INT_CONFIG;
use super::{ActivateContext, Interrupt, VIRTIO_F_VERSION_1, VirtioDevice, VirtioError, status};
use crate::boot::acpi::MmioDeviceInfo;
use crate::boot::layout::VIRTIO_MMIO_START;
use crate::devices::bus::BusDevice;
use crate::log_limit::LogLimit;
use crate::vmm::memory::GuestMemoryMmap;

/// Register offsets.
pub mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// "virt" in little-endian.
const MMIO_MAGIC: u32 = 0x7472_6976;
const MMIO_VERSION: u32 = 2;
/// Any vendor id works; this one spells "MVMM".
const VENDOR_ID: u32 = 0x4d56_4d4d;
/// Size of the register window each device decodes (the bus slot may be larger).
pub const MMIO_WINDOW: u64 = 0x1000;
/// Offset of QueueNotify, where the VMM registers an ioeventfd per queue.
pub const QUEUE_NOTIFY_OFFSET: u64 = reg::QUEUE_NOTIFY;

/// Guest-physical slot of the `index`-th virtio-mmio device: a 4 KiB window from
/// `VIRTIO_MMIO_START` and an IOAPIC pin from 5 (ISA IRQs 3 and 4 are the serial ports).
pub fn slot(index: usize) -> MmioDeviceInfo {
    MmioDeviceInfo {
        addr: VIRTIO_MMIO_START + index as u64 * MMIO_WINDOW,
        len: MMIO_WINDOW,
        irq: FIRST_IRQ + index as u32,
    }
}

/// First GSI used by virtio-mmio devices.
pub const FIRST_IRQ: u32 = 5;

static BAD_ACCESS: LogLimit = LogLimit::new();
static STATUS_CLEARED: LogLimit = LogLimit::new();
static ACTIVATE_FAILED: LogLimit = LogLimit::new();
static NOTIFY_FAILED: LogLimit = LogLimit::new();

/// A queue's registers as the driver wrote them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct QueueRegs {
    size: u16,
    ready: bool,
    desc: u64,
    driver: u64,
    device: u64,
}

fn set_low(v: &mut u64, low: u32) {
    *v = (*v & !0xffff_ffff) | u64::from(low);
}

fn set_high(v: &mut u64, high: u32) {
    *v = (*v & 0xffff_ffff) | (u64::from(high) << 32);
}

pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    device_type: u32,
    max_sizes: Vec<u16>,
    device_features: u64,
    device_features_sel: u32,
    driver_features: u64,
    driver_features_sel: u32,
    queue_sel: u32,
    queues: Vec<QueueRegs>,
    status: u32,
    config_generation: u32,
    activated: bool,
}

impl MmioTransport {
    pub fn new(
        device: Arc<Mutex<dyn VirtioDevice>>,
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
    ) -> Self {
        let (device_type, max_sizes, device_features) = {
            let d = device.lock().unwrap_or_else(PoisonError::into_inner);
            (d.device_type(), d.queue_max_sizes().to_vec(), d.features())
        };
        let queues = max_sizes
            .iter()
            .map(|&max| QueueRegs {
                size: max,
                ..Default::default()
            })
            .collect();
        MmioTransport {
            device,
            mem,
            interrupt,
            device_type,
            max_sizes,
            device_features,
            device_features_sel: 0,
            driver_features: 0,
            driver_features_sel: 0,
            queue_sel: 0,
            queues,
            status: 0,
            config_generation: 0,
            activated: false,
        }
    }

    fn selected_queue(&mut self) -> Option<&mut QueueRegs> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue registers may change only while the driver sets the device up.
    fn queue_config_allowed(&self) -> bool {
        self.status & status::FEATURES_OK != 0 && self.status & status::DRIVER_OK == 0
    }

    fn device(&self) -> std::sync::MutexGuard<'_, dyn VirtioDevice + 'static> {
        self.device.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reset(&mut self) {
        if self.activated {
            self.device().reset();
        }
        self.activated = false;
        self.status = 0;
        self.driver_features = 0;
        self.driver_features_sel = 0;
        self.device_features_sel = 0;
        self.queue_sel = 0;
        for (q, &max) in self.queues.iter_mut().zip(&self.max_sizes) {
            *q = QueueRegs {
                size: max,
                ..Default::default()
            };
        }
        self.interrupt.clear();
    }

    fn build_queues(&self) -> Result<Vec<Queue>, VirtioError> {
        let mut out = Vec::with_capacity(self.queues.len());
        for (index, (regs, &max)) in self.queues.iter().zip(&self.max_sizes).enumerate() {
            if !regs.ready {
                return Err(VirtioError::QueueNotReady(index));
            }
            let mut q = Queue::new(max).map_err(|source| VirtioError::Queue { index, source })?;
            q.set_size(regs.size);
            q.set_desc_table_address(Some(regs.desc as u32), Some((regs.desc >> 32) as u32));
            q.set_avail_ring_address(Some(regs.driver as u32), Some((regs.driver >> 32) as u32));
            q.set_used_ring_address(Some(regs.device as u32), Some((regs.device >> 32) as u32));
            q.set_event_idx(self.driver_features & super::VIRTIO_RING_F_EVENT_IDX != 0);
            q.set_ready(true);
            // The setters above ignore invalid values (size not a power of two, misaligned
            // rings); is_valid also checks that the rings lie in guest memory.
            if q.size() != regs.size
                || q.desc_table() != regs.desc
                || q.avail_ring() != regs.driver
                || q.used_ring() != regs.device
                || !q.is_valid(&self.mem)
            {
                return Err(VirtioError::InvalidQueue {
                    index,
                    size: regs.size,
                });
            }
            out.push(q);
        }
        Ok(out)
    }

    fn set_status(&mut self, value: u32) {
        // The device status is one byte (virtio 1.2 §2.1); the register's upper bits are
        // reserved and never stored.
        let value = value & 0xff;
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        // Bits can only be added (virtio 1.2 §2.1.2), except by a reset.
        if value & old != old {
            if let Some(n) = STATUS_CLEARED.hit() {
                log::warn!("virtio-mmio: driver cleared status bits {old:#x} -> {value:#x} ({n}x)");
            }
            return;
        }
        let mut new = value;
        if new & status::FEATURES_OK != 0 && old & status::FEATURES_OK == 0 {
            let unknown = self.driver_features & !self.device_features;
            if unknown != 0 || self.driver_features & VIRTIO_F_VERSION_1 == 0 {
                // Refuse: the driver sees FEATURES_OK clear and gives up.
                new &= !status::FEATURES_OK;
            }
        }
        if new & status::DRIVER_OK != 0 && old & status::DRIVER_OK == 0 && !self.activated {
            if new & status::FEATURES_OK == 0 {
                new &= !status::DRIVER_OK;
            } else {
                match self.build_queues().and_then(|queues| {
                    self.device().activate(ActivateContext {
                        mem: self.mem.clone(),
                        interrupt: self.interrupt.clone(),
                        queues,
                        acked_features: self.driver_features,
                    })
                }) {
                    Ok(()) => self.activated = true,
                    Err(e) => {
                        // A driver can reset and retry this as often as it likes.
                        if let Some(n) = ACTIVATE_FAILED.hit() {
                            log::warn!("virtio-mmio: cannot activate device ({n}x): {e}");
                        }
                        new |= status::DEVICE_NEEDS_RESET;
                        self.status = new;
                        self.interrupt.trigger(INT_CONFIG);
                        return;
                    }
                }
            }
        }
        self.status = new;
    }

    fn read_reg(&mut self, offset: u64) -> u32 {
        match offset {
            reg::MAGIC => MMIO_MAGIC,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device_type,
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device_features as u32,
                1 => (self.device_features >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => self
                .max_sizes
                .get(self.queue_sel as usize)
                .map_or(0, |&m| u32::from(m)),
            reg::QUEUE_READY => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| u32::from(q.ready)),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => {
                if self.activated && self.device().needs_reset() {
                    self.status | status::DEVICE_NEEDS_RESET
                } else {
                    self.status
                }
            }
            reg::CONFIG_GENERATION => self.config_generation,
            _ => {
                if let Some(n) = BAD_ACCESS.hit() {
                    log::debug!("virtio-mmio: read of register {offset:#x} ({n}x)");
                }
                0
            }
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        let config_ok = self.queue_config_allowed();
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            reg::DRIVER_FEATURES => {
                if self.status & status::FEATURES_OK == 0 {
                    match self.driver_features_sel {
                        0 => set_low(&mut self.driver_features, v),
                        1 => set_high(&mut self.driver_features, v),
                        _ => {}
                    }
                }
            }
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NUM if config_ok => {
                if let Some(q) = self.selected_queue() {
                    // Bad sizes (0, above the maximum, not a power of two) are kept and
                    // rejected at activation.
                    q.size = u16::try_from(v).unwrap_or(0);
                }
            }
            reg::QUEUE_READY if config_ok => {
                if let Some(q) = self.selected_queue() {
                    q.ready = v == 1;
                }
            }
            reg::QUEUE_DESC_LOW if config_ok => {
                if let Some(q) = self.selected_queue() {
                    set_low(&mut q.desc, v);
                }
            }
            reg::QUEUE_DESC_HIGH if config_ok => {
                if let Some(q) = self.selected_queue() {
                    set_high(&mut q.desc, v);
                }
            }
            reg::QUEUE_DRIVER_LOW if config_ok => {
                if let Some(q) = self.selected_queue() {
                    set_low(&mut q.driver, v);
                }
            }
            reg::QUEUE_DRIVER_HIGH if config_ok => {
                if let Some(q) = self.selected_queue() {
                    set_high(&mut q.driver, v);
                }
            }
            reg::QUEUE_DEVICE_LOW if config_ok => {
                if let Some(q) = self.selected_queue() {
                    set_low(&mut q.device, v);
                }
            }
            reg::QUEUE_DEVICE_HIGH if config_ok => {
                if let Some(q) = self.selected_queue() {
                    set_high(&mut q.device, v);
                }
            }
            reg::QUEUE_NOTIFY => {
                // Normally caught by the ioeventfd in KVM; a value it does not match (or a
                // kernel without ioeventfd) lands here.
                // A full counter (EAGAIN) is still a pending notification.
                if let Some(evt) = self.device().queue_events().get(v as usize)
                    && let Err(e) = evt.write(1)
                    && e.kind() != std::io::ErrorKind::WouldBlock
                    && let Some(n) = NOTIFY_FAILED.hit()
                {
                    log::warn!("virtio-mmio: queue notify failed ({n}x): {e}");
                }
            }
            reg::INTERRUPT_ACK => self.interrupt.ack(v),
            reg::STATUS => self.set_status(v),
            _ => {
                if let Some(n) = BAD_ACCESS.hit() {
                    log::debug!(
                        "virtio-mmio: ignored write {v:#x} to register {offset:#x} in status \
                         {:#x} ({n}x)",
                        self.status
                    );
                }
            }
        }
    }
}

impl BusDevice for MmioTransport {
    fn describe(&self) -> Option<String> {
        let mut s = format!(
            "virtio-mmio type {} status {:#x} interrupt status {:#x} driver features {:#x}{}",
            self.device_type,
            self.status,
            self.interrupt.status(),
            self.driver_features,
            if self.activated { " activated" } else { "" }
        );
        for (i, q) in self.queues.iter().enumerate().filter(|(_, q)| q.ready) {
            // The rings' idx fields (offset 2 of each ring): avail != used means requests the
            // device has not completed (or a notification that never arrived).
            let idx = |ring: u64| {
                ring.checked_add(2)
                    .and_then(|a| self.mem.read_obj::<u16>(GuestAddress(a)).ok())
                    .map_or_else(|| "?".to_string(), |v| v.to_string())
            };
            s.push_str(&format!(
                "; queue {i}: size {} avail idx {} used idx {}",
                q.size,
                idx(q.driver),
                idx(q.device)
            ));
        }
        Some(s)
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.device().read_config(offset - reg::CONFIG, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            if let Some(n) = BAD_ACCESS.hit() {
                log::debug!(
                    "virtio-mmio: {}-byte read at {offset:#x} ({n}x)",
                    data.len()
                );
            }
            data.fill(0);
            return;
        }
        let v = self.read_reg(offset);
        data.copy_from_slice(&v.to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            self.device().write_config(offset - reg::CONFIG, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            if let Some(n) = BAD_ACCESS.hit() {
                log::debug!(
                    "virtio-mmio: {}-byte write at {offset:#x} ({n}x)",
                    data.len()
                );
            }
            return;
        };
        if !offset.is_multiple_of(4) {
            return;
        }
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use vm_memory::GuestAddress;
    use vmm_sys_util::eventfd::EventFd;

    struct Dummy {
        evts: Vec<EventFd>,
        activations: Arc<AtomicUsize>,
        resets: Arc<AtomicUsize>,
        queues_seen: usize,
        needs_reset: Arc<AtomicBool>,
    }

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            2
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16]
        }
        fn queue_events(&self) -> &[EventFd] {
            &self.evts
        }
        fn features(&self) -> u64 {
            VIRTIO_F_VERSION_1 | 1 << 9
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write_config(&mut self, _: u64, _: &[u8]) {}
        fn activate(&mut self, ctx: ActivateContext) -> Result<(), VirtioError> {
            self.queues_seen = ctx.queues.len();
            self.activations.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn reset(&mut self) {
            self.resets.fetch_add(1, Ordering::SeqCst);
            self.needs_reset.store(false, Ordering::SeqCst);
        }
        fn needs_reset(&self) -> bool {
            self.needs_reset.load(Ordering::SeqCst)
        }
    }

    fn transport() -> (MmioTransport, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let (t, activations, resets, _) = transport_with_flag();
        (t, activations, resets)
    }

    /// Also returns the device's needs-reset flag.
    fn transport_with_flag() -> (
        MmioTransport,
        Arc<AtomicUsize>,
        Arc<AtomicUsize>,
        Arc<AtomicBool>,
    ) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let activations = Arc::new(AtomicUsize::new(0));
        let resets = Arc::new(AtomicUsize::new(0));
        let needs_reset = Arc::new(AtomicBool::new(false));
        let dev = Arc::new(Mutex::new(Dummy {
            evts: vec![EventFd::new(libc::EFD_NONBLOCK).unwrap()],
            activations: activations.clone(),
            resets: resets.clone(),
            queues_seen: 0,
            needs_reset: needs_reset.clone(),
        }));
        let irq = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
        (
            MmioTransport::new(dev, mem, irq),
            activations,
            resets,
            needs_reset,
        )
    }

    fn r(t: &mut MmioTransport, off: u64) -> u32 {
        let mut d = [0u8; 4];
        t.read(off, &mut d);
        u32::from_le_bytes(d)
    }

    fn w(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    fn negotiate(t: &mut MmioTransport, features_hi: u32) {
        w(t, reg::STATUS, status::ACKNOWLEDGE);
        w(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(t, reg::DRIVER_FEATURES_SEL, 1);
        w(t, reg::DRIVER_FEATURES, features_hi);
        w(
            t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
    }

    fn setup_queue(t: &mut MmioTransport) {
        w(t, reg::QUEUE_SEL, 0);
        w(t, reg::QUEUE_NUM, 16);
        w(t, reg::QUEUE_DESC_LOW, 0x1000);
        w(t, reg::QUEUE_DRIVER_LOW, 0x2000);
        w(t, reg::QUEUE_DEVICE_LOW, 0x3000);
        w(t, reg::QUEUE_READY, 1);
    }

    const ALL_OK: u32 =
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;

    #[test]
    fn identification_registers() {
        let (mut t, _, _) = transport();
        assert_eq!(r(&mut t, reg::MAGIC), MMIO_MAGIC);
        assert_eq!(r(&mut t, reg::VERSION), 2);
        assert_eq!(r(&mut t, reg::DEVICE_ID), 2);
        w(&mut t, reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(r(&mut t, reg::DEVICE_FEATURES), 1);
        w(&mut t, reg::DEVICE_FEATURES_SEL, 0);
        assert_eq!(r(&mut t, reg::DEVICE_FEATURES), 1 << 9);
        assert_eq!(r(&mut t, reg::QUEUE_NUM_MAX), 16);
        w(&mut t, reg::QUEUE_SEL, 7);
        assert_eq!(r(&mut t, reg::QUEUE_NUM_MAX), 0);
        let mut cfg = [0u8; 2];
        t.read(reg::CONFIG + 3, &mut cfg);
        assert_eq!(cfg, [3, 3]);
    }

    #[test]
    fn status_keeps_only_its_byte() {
        let (mut t, _, _) = transport();
        w(&mut t, reg::STATUS, 0x8080_bb00 | status::ACKNOWLEDGE);
        assert_eq!(r(&mut t, reg::STATUS), status::ACKNOWLEDGE);
        w(
            &mut t,
            reg::STATUS,
            0xffff_ff00 | status::ACKNOWLEDGE | status::DRIVER,
        );
        assert_eq!(r(&mut t, reg::STATUS), status::ACKNOWLEDGE | status::DRIVER);
    }

    #[test]
    fn full_negotiation_activates_once() {
        let (mut t, act, resets) = transport();
        negotiate(&mut t, 1);
        assert_ne!(r(&mut t, reg::STATUS) & status::FEATURES_OK, 0);
        setup_queue(&mut t);
        w(&mut t, reg::STATUS, ALL_OK);
        assert_eq!(r(&mut t, reg::STATUS), ALL_OK);
        assert_eq!(act.load(Ordering::SeqCst), 1);
        // Queue registers are frozen after DRIVER_OK.
        w(&mut t, reg::QUEUE_DESC_LOW, 0x5000);
        assert_eq!(t.queues[0].desc, 0x1000);
        w(&mut t, reg::STATUS, 0);
        assert_eq!(resets.load(Ordering::SeqCst), 1);
        assert_eq!(r(&mut t, reg::STATUS), 0);
        assert!(!t.queues[0].ready);
    }

    #[test]
    fn a_device_that_needs_a_reset_shows_it_until_the_driver_resets() {
        let (mut t, _, _, flag) = transport_with_flag();
        negotiate(&mut t, 1);
        setup_queue(&mut t);
        w(&mut t, reg::STATUS, ALL_OK);
        assert_eq!(r(&mut t, reg::STATUS), ALL_OK);
        flag.store(true, Ordering::SeqCst); // e.g. a failed flush
        assert_eq!(r(&mut t, reg::STATUS), ALL_OK | status::DEVICE_NEEDS_RESET);
        w(&mut t, reg::STATUS, 0);
        assert_eq!(r(&mut t, reg::STATUS), 0);
        assert!(!flag.load(Ordering::SeqCst));
    }

    #[test]
    fn unknown_features_or_legacy_drivers_are_refused() {
        let (mut t, _, _) = transport();
        w(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(&mut t, reg::DRIVER_FEATURES_SEL, 0);
        w(&mut t, reg::DRIVER_FEATURES, 1 << 3); // not offered
        w(&mut t, reg::DRIVER_FEATURES_SEL, 1);
        w(&mut t, reg::DRIVER_FEATURES, 1);
        w(
            &mut t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_eq!(r(&mut t, reg::STATUS) & status::FEATURES_OK, 0);
        let (mut t, _, _) = transport();
        negotiate(&mut t, 0); // no VERSION_1
        assert_eq!(r(&mut t, reg::STATUS) & status::FEATURES_OK, 0);
    }

    #[test]
    fn bad_queues_do_not_activate() {
        for bad in [
            |t: &mut MmioTransport| w(t, reg::QUEUE_NUM, 12), // not a power of two
            |t: &mut MmioTransport| w(t, reg::QUEUE_NUM, 64), // above max
            |t: &mut MmioTransport| w(t, reg::QUEUE_DESC_LOW, 0x1001), // misaligned
            |t: &mut MmioTransport| w(t, reg::QUEUE_DEVICE_HIGH, 0x10), // outside memory
            |t: &mut MmioTransport| w(t, reg::QUEUE_READY, 0),
        ] {
            let (mut t, act, _) = transport();
            negotiate(&mut t, 1);
            setup_queue(&mut t);
            bad(&mut t);
            w(&mut t, reg::STATUS, ALL_OK);
            assert_eq!(act.load(Ordering::SeqCst), 0);
            let st = r(&mut t, reg::STATUS);
            assert_ne!(st & status::DEVICE_NEEDS_RESET, 0, "{st:#x}");
            assert_ne!(t.interrupt.status() & INT_CONFIG, 0);
        }
    }

    #[test]
    fn driver_ok_without_features_ok_is_ignored() {
        let (mut t, act, _) = transport();
        w(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        setup_queue(&mut t);
        w(
            &mut t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK,
        );
        assert_eq!(act.load(Ordering::SeqCst), 0);
        assert_eq!(r(&mut t, reg::STATUS) & status::DRIVER_OK, 0);
    }

    #[test]
    fn odd_accesses_are_harmless() {
        let (mut t, _, _) = transport();
        let mut d = [0xaau8; 2];
        t.read(reg::MAGIC, &mut d);
        assert_eq!(d, [0, 0]);
        t.write(reg::STATUS, &[1, 2]);
        t.write(reg::STATUS + 1, &[1, 0, 0, 0]);
        assert_eq!(r(&mut t, reg::STATUS), 0);
        w(&mut t, 0xfff0, 1);
        w(&mut t, reg::QUEUE_NOTIFY, 99);
        w(&mut t, reg::QUEUE_NOTIFY, 0);
        assert_eq!(r(&mut t, 0x0f0), 0);
    }
}
