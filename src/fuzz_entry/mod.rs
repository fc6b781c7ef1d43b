//! The bodies of the cargo-fuzz targets in `fuzz/`, one `pub fn <target>(data: &[u8])` each,
//! so the fuzz crate's targets are one-liners and `tests/fuzz_corpus.rs` replays every seed
//! corpus on stable Rust.
//!
//! Compiled always (not behind a cfg or feature): integration tests cannot turn on a feature
//! of the crate they test without `--features`, which plain `cargo test` would not pass, and
//! code that is always compiled is always type-checked and linted against today's APIs. The
//! binaries do not call into it, so it costs them nothing.
//!
//! Every function takes arbitrary bytes and must return without panicking, hanging or growing
//! without bound; the `assert!`s are the properties the fuzzer checks beyond that. A function
//! that needs host resources (guest memory, temporary files, sockets) creates and drops them
//! per input, so inputs do not influence one another.
//!
//! Inputs are read with [`Input`]: a cursor that yields zeros once the bytes run out, so
//! every prefix of an input is a valid input too.

mod devices;
mod disk;
mod parsers;
mod ring;
mod virtio;
mod vsock;

pub use devices::pio_bus;
pub use disk::{cdisk, composite_io, disk_open, gpt};
pub use parsers::{
    apk_signing_block, apk_zip, control_protocol, idsig, lifecycle, metadata, payload_config,
    vmconfig,
};
pub use virtio::{mmio_transport, virtio_block};
pub use vsock::{vsock_connection, vsock_device, vsock_handshake, vsock_muxer};

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target: its name (the cargo-fuzz binary and the corpus directory) and its body.
pub const TARGETS: &[(&str, Target)] = &[
    ("apk_signing_block", apk_signing_block),
    ("apk_zip", apk_zip),
    ("cdisk", cdisk),
    ("composite_io", composite_io),
    ("control_protocol", control_protocol),
    ("disk_open", disk_open),
    ("gpt", gpt),
    ("idsig", idsig),
    ("lifecycle", lifecycle),
    ("metadata", metadata),
    ("mmio_transport", mmio_transport),
    ("payload_config", payload_config),
    ("pio_bus", pio_bus),
    ("virtio_block", virtio_block),
    ("vmconfig", vmconfig),
    ("vsock_connection", vsock_connection),
    ("vsock_device", vsock_device),
    ("vsock_handshake", vsock_handshake),
    ("vsock_muxer", vsock_muxer),
];

/// A cursor over fuzz input; reads past the end yield zeros (and `done` turns true).
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data, pos: 0 }
    }

    pub fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        b
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = self.pos.saturating_add(n);
        &self.data[start..end]
    }

    /// A length byte, then that many bytes.
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8());
        self.bytes(n)
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        self.pos = self.data.len();
        &self.data[start..]
    }

    /// One of `values`, or (for the selector byte's top value range) the next raw u32.
    pub fn pick_u32(&mut self, values: &[u32]) -> u32 {
        let i = usize::from(self.u8());
        match values.get(i % (values.len() + 1)) {
            Some(&v) => v,
            None => self.u32(),
        }
    }
}
