//! One thread per vCPU: KVM_RUN, exit dispatch to the port-I/O and MMIO buses, and the exit
//! reasons that end the VM. A real-time signal plus `immediate_exit` stops a vCPU without race.

use std::cell::Cell;
use std::sync::Arc;

use kvm_bindings::{
    KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN, kvm_run,
};
use kvm_ioctls::{VcpuExit, VcpuFd};

use super::dump::{StateDump, describe_vcpu};
use super::exit::{ExitState, VmExit};
use super::pause::PauseControl;
use crate::devices::ResetCause;
use crate::devices::bus::Bus;
use crate::log_limit::LogLimit;

thread_local! {
    /// This thread's `kvm_run`, for the kick signal handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// Kick handler: makes the current (or next) KVM_RUN on this thread return at once.
pub extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: the pointer is this thread's own mmapped kvm_run, set while its VcpuFd is
        // alive and cleared before it is dropped; a byte store is async-signal-safe.
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

static UNCLAIMED_PIO: LogLimit = LogLimit::new();
static UNCLAIMED_MMIO: LogLimit = LogLimit::new();

/// Names for `KVM_INTERNAL_ERROR_*` suberrors.
fn internal_error_name(suberror: u32) -> &'static str {
    match suberror {
        1 => "emulation failure",
        2 => "simultaneous exceptions",
        3 => "event delivery failure",
        4 => "unexpected exit reason",
        _ => "unknown",
    }
}

pub struct Vcpu {
    pub id: u8,
    fd: VcpuFd,
    io_bus: Arc<Bus>,
    mmio_bus: Arc<Bus>,
    exit: Arc<ExitState>,
    pause: Arc<PauseControl>,
    dump: Arc<StateDump>,
}

/// What one KVM_RUN return means for the loop.
enum Step {
    Continue,
    Stop(VmExit),
    InternalError,
}

impl Vcpu {
    pub fn new(
        id: u8,
        fd: VcpuFd,
        io_bus: Arc<Bus>,
        mmio_bus: Arc<Bus>,
        exit: Arc<ExitState>,
        pause: Arc<PauseControl>,
        dump: Arc<StateDump>,
    ) -> Self {
        Vcpu {
            id,
            fd,
            io_bus,
            mmio_bus,
            exit,
            pause,
            dump,
        }
    }

    /// Answers a state-dump request this thread has not answered yet.
    fn answer_dump(fd: &VcpuFd, id: u8, dump: &StateDump, answered: &mut u64) {
        let generation = dump.generation();
        if generation != *answered {
            *answered = generation;
            dump.answer(usize::from(id), generation, describe_vcpu(id, fd));
        }
    }

    /// Runs until the VM stops (this vCPU's exit, another vCPU's, a device's or the host's);
    /// waits between two KVM_RUNs while the VM is paused.
    pub fn run(mut self) {
        crate::sandbox::enter(crate::sandbox::ThreadKind::Vcpu);
        let run_ptr: *mut kvm_run = self.fd.get_kvm_run();
        KVM_RUN.with(|c| c.set(run_ptr));
        self.pause.register_current_thread();
        let mut answered = 0;
        while !self.exit.is_stopping() {
            let (fd, id, dump) = (&self.fd, self.id, &self.dump);
            self.pause
                .park_if_paused(|| Self::answer_dump(fd, id, dump, &mut answered));
            if self.exit.is_stopping() {
                break;
            }
            let step = self.run_once();
            Self::answer_dump(&self.fd, self.id, &self.dump, &mut answered);
            match step {
                Step::Continue => {}
                Step::Stop(why) => self.exit.request(why),
                Step::InternalError => {
                    let why = self.describe_internal_error();
                    self.exit.request(VmExit::Crash(why));
                }
            }
        }
        self.pause.unregister_current_thread();
        KVM_RUN.with(|c| c.set(std::ptr::null_mut()));
        if log::log_enabled!(log::Level::Debug)
            && let Ok(r) = self.fd.get_regs()
        {
            log::debug!(
                "vcpu{}: stopped at rip {:#x} rsp {:#x}",
                self.id,
                r.rip,
                r.rsp
            );
        }
    }

    fn run_once(&mut self) -> Step {
        let id = self.id;
        match self.fd.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                if !self.io_bus.read(u64::from(port), data) {
                    data.fill(0xff);
                    if let Some(n) = UNCLAIMED_PIO.hit() {
                        log::debug!("vcpu{id}: read of unclaimed port {port:#x} ({n}x)");
                    }
                }
                Step::Continue
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                if !self.io_bus.write(u64::from(port), data)
                    && let Some(n) = UNCLAIMED_PIO.hit()
                {
                    log::debug!("vcpu{id}: write to unclaimed port {port:#x} ({n}x)");
                }
                Step::Continue
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !self.mmio_bus.read(addr, data) {
                    data.fill(0xff);
                    if let Some(n) = UNCLAIMED_MMIO.hit() {
                        log::debug!("vcpu{id}: read of unclaimed MMIO {addr:#x} ({n}x)");
                    }
                }
                Step::Continue
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if !self.mmio_bus.write(addr, data)
                    && let Some(n) = UNCLAIMED_MMIO.hit()
                {
                    log::debug!("vcpu{id}: write to unclaimed MMIO {addr:#x} ({n}x)");
                }
                Step::Continue
            }
            Ok(VcpuExit::Shutdown) => {
                // Once per VM (it ends the VM): the faulting vCPU's state is the whole story.
                log::warn!(
                    "vcpu{id}: triple fault; its state:\n{}",
                    describe_vcpu(id, &self.fd).trim_end()
                );
                Step::Stop(VmExit::Reset(ResetCause::TripleFault))
            }
            Ok(VcpuExit::InternalError) => Step::InternalError,
            Ok(VcpuExit::FailEntry(reason, cpu)) => Step::Stop(VmExit::Crash(format!(
                "vcpu{id}: KVM entry failed (hardware reason {reason:#x}, host cpu {cpu})"
            ))),
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                KVM_SYSTEM_EVENT_SHUTDOWN => Step::Stop(VmExit::PowerOff),
                KVM_SYSTEM_EVENT_RESET => Step::Stop(VmExit::Reset(ResetCause::AcpiResetRegister)),
                KVM_SYSTEM_EVENT_CRASH => Step::Stop(VmExit::GuestPanic),
                other => Step::Stop(VmExit::Crash(format!(
                    "vcpu{id}: unexpected KVM system event {other}"
                ))),
            },
            // With the in-kernel irqchip HLT is handled by KVM; these need nothing from us.
            Ok(VcpuExit::Hlt | VcpuExit::Intr | VcpuExit::IrqWindowOpen) => Step::Continue,
            Ok(other) => Step::Stop(VmExit::Crash(format!(
                "vcpu{id}: unexpected KVM exit {other:?}"
            ))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.fd.set_kvm_immediate_exit(0);
                Step::Continue
            }
            Err(e) => Step::Stop(VmExit::Crash(format!("vcpu{id}: KVM_RUN failed: {e}"))),
        }
    }

    /// "KVM internal error: suberror 1 (emulation failure), rip 0x..., data [...]".
    fn describe_internal_error(&mut self) -> String {
        let run = self.fd.get_kvm_run();
        // SAFETY: KVM_RUN returned KVM_EXIT_INTERNAL_ERROR, so `internal` is the active member
        // of the exit union.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let ndata = (internal.ndata as usize).min(internal.data.len());
        let data: Vec<String> = internal.data[..ndata]
            .iter()
            .map(|d| format!("{d:#x}"))
            .collect();
        let rip = self
            .fd
            .get_regs()
            .map_or_else(|e| format!("unknown ({e})"), |r| format!("{:#x}", r.rip));
        format!(
            "vcpu{}: KVM internal error: suberror {} ({}), rip {rip}, data [{}]",
            self.id,
            internal.suberror,
            internal_error_name(internal.suberror),
            data.join(", ")
        )
    }
}
