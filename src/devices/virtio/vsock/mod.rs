//! virtio-vsock with Firecracker-style hybrid vsock: guest AF_VSOCK stream sockets are relayed
//! to host AF_UNIX stream sockets.
//!
//! - Host to guest: a host program connects to `uds_path` and writes `CONNECT <port>\n`; the
//!   device asks the guest for `port` and answers `OK <host_port>\n` once the guest accepts
//!   (no answer, a refusal or 2 s of silence close the host socket with nothing written).
//! - Guest to host: a guest connection to CID 2 port `P` connects to `<uds_path>_<P>`.
//!
//! `packet` is the 44-byte header over virtio-vsock's `VsockPacket`; `connection` the
//! per-connection state machine and credit accounting (no sockets); `handshake` the `CONNECT`
//! line parser; `muxer` the host side (listener, ports, sockets, epoll interest, timers, and
//! in `muxer/guest.rs` the guest packets); `device` the queues and the `VirtioDevice`
//! implementation; `event_handler` the event-loop glue. The socket helpers (stale socket replacement,
//! non-blocking connect) are in [`crate::unix_socket`].
//!
//! Everything the guest and the host programs send is untrusted: bad packets are dropped or
//! answered with RST, bad handshakes close the host socket, memory is bounded per connection
//! and in total, and nothing ever blocks the event-loop thread.

pub mod connection;
pub mod device;
pub mod event_handler;
pub mod handshake;
pub mod muxer;
pub mod packet;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

pub use device::Vsock;

/// virtio device id of vsock (virtio 1.2 §5).
pub const VIRTIO_ID_VSOCK: u32 = 19;
/// Size of each of the three queues.
pub const QUEUE_SIZE: u16 = 256;
/// Queue indices.
pub const RXQ: usize = 0;
pub const TXQ: usize = 1;
pub const EVQ: usize = 2;
pub const NUM_QUEUES: usize = 3;

/// The host's CID, the only destination a guest packet may have.
pub const HOST_CID: u64 = 2;
/// Largest packet payload, both ways (a larger header `len` is an error).
pub const MAX_PKT_DATA: u32 = 64 * 1024;
/// The largest `buf_alloc` a connection advertises: guest-to-host bytes it holds at most when
/// the host program reads slower than the guest writes.
pub const CONN_BUF_SIZE: u32 = 256 * 1024;
/// Connections of all kinds (handshakes and closing ones included); beyond it new host
/// connections are accepted and closed and guest requests get RST.
pub const MAX_CONNECTIONS: usize = 2048;
/// Guest-to-host bytes all connections together may hold host-side: the sum of the windows
/// advertised. A connection's window starts at [`MIN_CONN_BUF`] and grows towards
/// [`CONN_BUF_SIZE`] while this budget lasts; a new connection that cannot get
/// [`MIN_CONN_BUF`] is refused (RST to the guest, the host socket closed).
pub const MAX_BUFFERED: u64 = 64 << 20;
/// The smallest window a connection starts with.
pub const MIN_CONN_BUF: u32 = 16 * 1024;
/// RSTs for packets that match no connection, waiting for guest RX buffers; while it is full
/// the TX queue is not read.
pub const MAX_PENDING_RST: usize = 256;
/// Handshake, connection request, connect and close timeout.
pub const CONN_TIMEOUT: Duration = Duration::from_secs(2);
/// Period of the timer that enforces the timeouts (it runs only while one is pending).
pub const TIMER_TICK: Duration = Duration::from_millis(250);
/// First host-side port handed out for host-initiated connections (Firecracker's).
pub const HOST_PORT_FIRST: u32 = 1 << 30;
/// Longest `CONNECT <port>\n` line accepted, newline included.
pub const CONNECT_LINE_MAX: usize = 32;

/// Packet operations (virtio 1.2 §5.10.6).
pub mod op {
    pub const REQUEST: u16 = 1;
    pub const RESPONSE: u16 = 2;
    pub const RST: u16 = 3;
    pub const SHUTDOWN: u16 = 4;
    pub const RW: u16 = 5;
    pub const CREDIT_UPDATE: u16 = 6;
    pub const CREDIT_REQUEST: u16 = 7;
}

/// The only socket type supported.
pub const TYPE_STREAM: u16 = 1;

/// SHUTDOWN flags: the sender will receive (RCV) or send (SEND) no more data.
pub mod shutdown {
    pub const RCV: u32 = 1;
    pub const SEND: u32 = 2;
    pub const BOTH: u32 = RCV | SEND;
}

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("guest CID {0} is not usable (it must be 3 to 4294967294)")]
    InvalidCid(u64),
    #[error("vsock socket {}: already in use by a running listener", .0.display())]
    InUse(PathBuf),
    #[error("vsock socket {}: the path exists and is not a socket", .0.display())]
    NotASocket(PathBuf),
    #[error("vsock socket {}: {source}", path.display())]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("vsock: cannot create the {what}: {source}")]
    Host {
        what: &'static str,
        source: std::io::Error,
    },
}

impl From<crate::unix_socket::SocketError> for VsockError {
    fn from(e: crate::unix_socket::SocketError) -> Self {
        use crate::unix_socket::SocketError;
        match e {
            SocketError::InUse(p) => VsockError::InUse(p),
            SocketError::NotASocket(p) => VsockError::NotASocket(p),
            SocketError::Bind { path, source } => VsockError::Bind { path, source },
        }
    }
}
