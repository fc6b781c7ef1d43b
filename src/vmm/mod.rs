//! The VM: KVM objects, guest memory, devices and vCPU threads. [`builder`] creates it in one
//! fixed order from a validated [`crate::api::VmConfig`]; [`Vmm::run`] runs it to its end.

pub mod builder;
pub mod dump;
pub mod event_loop;
pub mod exit;
pub mod memory;
pub mod pause;
pub mod signals;
pub mod terminal;
pub mod vcpu;

use std::os::fd::AsRawFd;
use std::os::unix::thread::JoinHandleExt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_ioctls::{Kvm, VmFd};

use crate::api::InputSource;
use crate::boot::BootError;
use crate::devices::bus::BusError;
use crate::devices::serial::SerialDevice;
use crate::devices::serial::device::InputWaker;
use crate::devices::serial::input::spawn_input_thread;
use crate::devices::serial::output::OutputSink;
use exit::{ExitState, VmExit};
use memory::GuestMemoryMmap;
use pause::PauseControl;
use vcpu::Vcpu;

/// How long the outputs get to drain at exit before a stalled reader is given up on.
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long vCPU threads get to leave KVM_RUN once kicked.
const VCPU_STOP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("cannot open /dev/kvm: {0} (is KVM available, and may this user open it?)")]
    OpenKvm(kvm_ioctls::Error),
    #[error("KVM API version {0} is not supported (need 12)")]
    KvmApiVersion(i32),
    #[error("{wanted} vCPUs requested, but this host's KVM allows at most {max}")]
    TooManyVcpus { wanted: u8, max: usize },
    #[error("KVM failed to {what}: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("cannot allocate guest memory: {0}")]
    Memory(String),
    #[error("cannot register guest memory with KVM: {0}")]
    RegisterMemory(kvm_ioctls::Error),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error("device bus: {0}")]
    Bus(#[from] BusError),
    #[error("disk {index}: {source}")]
    Disk {
        index: usize,
        source: crate::disk::DiskError,
    },
    #[error("vsock: {0}")]
    Vsock(crate::devices::virtio::vsock::VsockError),
    #[error("cannot open {flag} output {path:?}: {source}")]
    Output {
        flag: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set up {what}: {source}")]
    Host {
        what: &'static str,
        source: std::io::Error,
    },
}

impl VmmError {
    /// Errors caused by what the user passed (exit 35), as opposed to host failures (exit 1).
    pub fn is_invalid_argument(&self) -> bool {
        match self {
            VmmError::TooManyVcpus { .. } | VmmError::Output { .. } | VmmError::Disk { .. } => true,
            VmmError::Boot(b) => matches!(
                b,
                BootError::Open { .. }
                    | BootError::UnknownKernelFormat { .. }
                    | BootError::Kernel { .. }
                    | BootError::BadKernel { .. }
                    | BootError::InitrdTooLarge { .. }
                    | BootError::CmdlineTooLong { .. }
                    | BootError::FirmwareSize { .. }
                    | BootError::FirmwareRead { .. }
            ),
            _ => false,
        }
    }
}

/// A built VM, ready to run.
pub struct Vmm {
    // Field order is drop order: vCPUs go before the VM and memory they use.
    vcpus: Vec<Vcpu>,
    /// Virtio devices, served by the device thread.
    devices: Vec<event_loop::Subscriber>,
    console: Arc<std::sync::Mutex<SerialDevice>>,
    console_waker: InputWaker,
    console_in: InputSource,
    outputs: Vec<OutputSink>,
    exit: Arc<ExitState>,
    pause: Arc<PauseControl>,
    dump: Arc<dump::StateDump>,
    _vm: Arc<VmFd>,
    _kvm: Kvm,
    _mem: GuestMemoryMmap,
}

impl Vmm {
    /// A handle other threads use to stop the VM ([`ExitState::request`]) once it runs.
    pub fn exit_handle(&self) -> Arc<ExitState> {
        Arc::clone(&self.exit)
    }

    /// A handle that pauses and resumes the vCPUs (the devices keep running).
    pub fn pause_handle(&self) -> Arc<PauseControl> {
        Arc::clone(&self.pause)
    }

    /// A handle that collects the state dump (the control socket's `dump`).
    pub fn dump_handle(&self) -> Arc<dump::StateDump> {
        Arc::clone(&self.dump)
    }

    /// Runs the VM until it ends; never panics, restores the terminal, drains the outputs.
    pub fn run(self) -> VmExit {
        let Vmm {
            vcpus,
            devices,
            console,
            console_waker,
            console_in,
            outputs,
            exit,
            pause,
            dump,
            _vm,
            _kvm,
            _mem,
        } = self;
        let sigfd = match signals::stop_signalfd() {
            Ok(fd) => fd,
            Err(e) => return VmExit::HostError(format!("signalfd: {e}")),
        };
        if let Err(e) = vmm_sys_util::signal::register_signal_handler(
            signals::kick_signal(),
            vcpu::kick_handler,
        ) {
            return VmExit::HostError(format!("vCPU kick signal: {e}"));
        }
        let _raw = match console_in {
            InputSource::Stdin => {
                let guard = terminal::RawModeGuard::enter(libc::STDIN_FILENO);
                if let Err(e) = spawn_input_thread(libc::STDIN_FILENO, console, console_waker) {
                    log::warn!("console input disabled: {e}");
                }
                guard
            }
            InputSource::None => None,
        };

        let event_loop = if devices.is_empty() {
            None
        } else {
            match event_loop::EventLoop::start(devices) {
                Ok(l) => Some(l),
                Err(e) => return VmExit::HostError(format!("device thread: {e}")),
            }
        };

        let mut threads: Vec<JoinHandle<()>> = Vec::with_capacity(vcpus.len());
        for v in vcpus {
            let name = format!("vcpu{}", v.id);
            match std::thread::Builder::new()
                .name(name)
                .stack_size(256 << 10)
                .spawn(move || v.run())
            {
                Ok(t) => threads.push(t),
                Err(e) => {
                    exit.request(VmExit::HostError(format!("cannot start vCPU thread: {e}")));
                    break;
                }
            }
        }

        // Every other thread runs (and sandboxed itself): now this one.
        crate::sandbox::enter(crate::sandbox::ThreadKind::Main);
        wait_for_exit(&exit, &sigfd, &dump);
        let why = exit
            .reason()
            .unwrap_or_else(|| VmExit::HostError("stopped without a reason".into()));
        // Parked (paused) vCPUs must be able to see the stop.
        pause.release();
        stop_vcpus(&exit, threads);
        if let Some(l) = event_loop {
            l.stop();
        }
        for out in &outputs {
            if !out.finish(OUTPUT_DRAIN_TIMEOUT) {
                log::warn!("output reader stalled; unwritten output dropped");
            }
            if out.dropped() > 0 {
                log::warn!(
                    "{} output bytes were dropped (reader too slow)",
                    out.dropped()
                );
            }
            if out.over_limit() > 0 {
                log::warn!(
                    "{} output bytes were dropped (--output-limit reached)",
                    out.over_limit()
                );
            }
        }
        why
    }
}

/// Blocks until the exit eventfd fires or a stop signal arrives; prints the state dump on
/// stderr for each SIGUSR1.
fn wait_for_exit(exit: &ExitState, sigfd: &std::os::fd::OwnedFd, dump: &dump::StateDump) {
    let mut fds = [
        libc::pollfd {
            fd: exit.evt.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: sigfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    while !exit.is_stopping() {
        // SAFETY: `fds` is a valid array of two pollfd structs for the whole call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                exit.request(VmExit::HostError(format!("poll: {e}")));
            }
            continue;
        }
        if fds[1].revents & libc::POLLIN != 0 {
            match signals::read_signal(sigfd) {
                Some(signals::DUMP_SIGNAL) => {
                    let text = dump.collect(dump::DUMP_TIMEOUT);
                    // Straight to stderr: the user asked for it, whatever the log level.
                    eprint!("{text}");
                }
                Some(sig) => exit.request(VmExit::Signal(sig)),
                None => {}
            }
        }
    }
}

/// Kicks every vCPU thread out of KVM_RUN until all have returned (bounded).
fn stop_vcpus(exit: &ExitState, threads: Vec<JoinHandle<()>>) {
    debug_assert!(exit.is_stopping());
    let deadline = Instant::now() + VCPU_STOP_TIMEOUT;
    let mut pending = threads;
    while !pending.is_empty() && Instant::now() < deadline {
        for t in &pending {
            if !t.is_finished() {
                // SAFETY: the thread has not been joined, so its pthread_t is still valid.
                unsafe { libc::pthread_kill(t.as_pthread_t(), signals::kick_signal()) };
            }
        }
        std::thread::sleep(Duration::from_micros(200));
        let (done, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|t| t.is_finished());
        for t in done {
            let _ = t.join();
        }
        pending = rest;
    }
    if !pending.is_empty() {
        log::warn!("{} vCPU thread(s) did not stop in time", pending.len());
    }
}
