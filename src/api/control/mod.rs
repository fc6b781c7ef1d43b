//! The control socket (docs/api.md): `--socket PATH` on `micro-vmm run` and `micro-vmm --app`.
//!
//! [`ControlSocket::bind`] claims the path early (a live socket there refuses the start);
//! [`ControlServer::start`] serves it on its own thread once the VM is built;
//! [`ControlServer::finish`] tells the subscribers how the VM ended and removes the socket.
//! `protocol` is the wire format, `events` the subscriber fan-out, `server` the thread,
//! `vsock_connect` and `fdpass` the `connect-vsock` method, `client` `micro-vmm ctl`.
//!
//! Everything a client sends is untrusted: lines are capped, buffers and queues are bounded
//! per client, the number of clients is bounded, and nothing a client does (or fails to do)
//! blocks the server thread or the VM.

pub mod client;
pub mod events;
pub mod fdpass;
pub mod protocol;
pub mod server;
pub mod vsock_connect;

use std::path::PathBuf;
use std::sync::Arc;

pub use events::EventHub;
pub use server::{ControlServer, ControlSocket};

/// What `run` and `--app` do before anything else: block the stop signals (the VMM reads them
/// through a signalfd, so a stop signal always ends in a clean exit that removes the socket)
/// and claim the control socket at `path`, if any. On failure it prints the error and returns
/// the exit code (35 for a live or foreign socket file, 1 otherwise).
pub fn claim(path: Option<&std::path::Path>) -> Result<Option<ControlSocket>, i32> {
    use crate::vmm::exit::code;
    if let Err(e) = crate::vmm::signals::block_stop_signals() {
        eprintln!("micro-vmm: cannot set the signal mask: {e}");
        return Err(code::ERROR);
    }
    path.map(ControlSocket::bind).transpose().map_err(|e| {
        eprintln!("micro-vmm: {e}");
        if e.is_invalid_argument() {
            code::INVALID_ARGS
        } else {
            code::ERROR
        }
    })
}

use crate::unix_socket::SocketError;
use crate::vmm::exit::ExitState;
use crate::vmm::pause::PauseControl;

/// Clients served at once; more are told so and closed.
pub const MAX_CLIENTS: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {0}")]
    Socket(#[from] SocketError),
    #[error("control socket {path}: cannot set its mode to 0600: {source}")]
    Chmod {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket: cannot start its thread: {0}")]
    Thread(std::io::Error),
    #[error("control socket: cannot create its eventfd: {0}")]
    Eventfd(std::io::Error),
}

impl ControlError {
    /// Errors in what the user passed (exit 35): the path is taken or unusable.
    pub fn is_invalid_argument(&self) -> bool {
        matches!(self, ControlError::Socket(_) | ControlError::Chmod { .. })
    }
}

/// What `status` reports about the VM's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmInfo {
    pub cpus: u8,
    pub memory_mib: u64,
    /// The guest CID, with vsock.
    pub cid: Option<u64>,
    /// The hybrid-vsock socket, for `connect-vsock`.
    pub vsock_uds: Option<PathBuf>,
}

/// What the host knows about an app's payload (`status`'s `payload`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayloadStatus {
    pub started: bool,
    pub ready: bool,
    pub finished: Option<i32>,
    /// The guest's error: its `ErrorCode` name and message.
    pub error: Option<(String, String)>,
}

/// The payload side of an `--app` VM (its guest agent).
pub trait PayloadControl: Send + Sync {
    fn status(&self) -> PayloadStatus;
    /// Asks the agent to stop the payload and power off; false when no agent is connected.
    fn request_shutdown(&self) -> bool;
}

/// Everything the server drives.
pub struct VmHandle {
    pub exit: Arc<ExitState>,
    pub pause: Arc<PauseControl>,
    /// `None` where the VM has no state to dump (the server's unit tests).
    pub dump: Option<Arc<crate::vmm::dump::StateDump>>,
    pub info: VmInfo,
    /// `None` for a `run` VM.
    pub payload: Option<Arc<dyn PayloadControl>>,
}
