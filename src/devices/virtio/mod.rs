//! Virtio devices (virtio 1.x, modern only) behind the virtio-mmio transport.
//!
//! `mmio` is the transport (registers, feature and status negotiation, queue setup);
//! `interrupt` the interrupt status shared by a device and its transport; each device lives
//! in its own folder (`block/`) with its protocol, its device logic and its event-loop glue.

pub mod block;
pub mod descriptors;
pub mod interrupt;
pub mod mmio;
pub mod vsock;

use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

pub use interrupt::Interrupt;

use crate::vmm::memory::GuestMemoryMmap;

/// Feature bit 32: virtio 1.x (modern) device.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Feature bit 29: the driver and device use used/avail event indices.
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;

/// Device status bits (virtio 1.2 §2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    pub const FAILED: u32 = 0x80;
}

/// Device ids (virtio 1.2 §5).
pub const VIRTIO_ID_BLOCK: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    #[error("queue {index} is not valid (size {size}, rings outside guest memory or misaligned)")]
    InvalidQueue { index: usize, size: u16 },
    #[error("queue {index}: {source}")]
    Queue {
        index: usize,
        source: virtio_queue::Error,
    },
    #[error("the driver activated the device without enabling queue {0}")]
    QueueNotReady(usize),
}

/// Copies config-space bytes at `offset` into `data`; bytes past the end read as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| config.get(o))
            .copied()
            .unwrap_or(0);
    }
}

/// What a virtio device gets when the driver sets DRIVER_OK.
pub struct ActivateContext {
    pub mem: GuestMemoryMmap,
    pub interrupt: Arc<Interrupt>,
    pub queues: Vec<Queue>,
    /// Features the driver acknowledged (a subset of the device's).
    pub acked_features: u64,
}

/// A device model plugged into a virtio-mmio transport.
pub trait VirtioDevice: Send {
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// The eventfds the guest's queue notifications arrive on, one per queue.
    fn queue_events(&self) -> &[EventFd];
    /// Features offered (must include `VIRTIO_F_VERSION_1`).
    fn features(&self) -> u64;
    /// Reads device config space at `offset` (bytes past the end read as zero).
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes device config space (most devices ignore this).
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// The driver set DRIVER_OK: start serving the queues.
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), VirtioError>;
    /// The driver reset the device: stop using the queues and guest memory.
    fn reset(&mut self);
    /// The device hit something it cannot go on from (a corrupt queue): the transport shows
    /// DEVICE_NEEDS_RESET until the driver resets it.
    fn needs_reset(&self) -> bool {
        false
    }
}
