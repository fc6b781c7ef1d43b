//! virtio-blk: `request` parses what the driver put in the queue, `device` serves it from a
//! [`crate::disk::DiskBackend`], `event_handler` is the event-loop glue.

pub mod device;
pub mod event_handler;
pub mod pass;
pub mod request;

pub use device::Block;

/// Sector size of the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;
/// The one request queue's size.
pub const QUEUE_SIZE: u16 = 256;
/// Largest data segment the driver may use (VIRTIO_BLK_F_SIZE_MAX). Enforced: a request with
/// a larger one fails with IOERR.
pub const SIZE_MAX: u32 = 256 << 10;
/// Most data segments per request (VIRTIO_BLK_F_SEG_MAX). Enforced; less than the queue
/// holds, so that together with SIZE_MAX it bounds a request (Linux splits its requests to
/// fit both).
pub const SEG_MAX: u32 = 128;
/// Most data bytes in one request: what SEG_MAX segments of SIZE_MAX allow. A request over it
/// (possible only when the header or status shares a descriptor with data) fails with IOERR.
pub const MAX_REQUEST_BYTES: u64 = SEG_MAX as u64 * SIZE_MAX as u64;

/// Feature bits (virtio 1.2 §5.2.3).
pub mod features {
    pub const SIZE_MAX: u64 = 1 << 1;
    pub const SEG_MAX: u64 = 1 << 2;
    pub const RO: u64 = 1 << 5;
    pub const BLK_SIZE: u64 = 1 << 6;
    pub const FLUSH: u64 = 1 << 9;
}

/// Request status codes.
pub mod status {
    pub const OK: u8 = 0;
    pub const IOERR: u8 = 1;
    pub const UNSUPP: u8 = 2;
}
