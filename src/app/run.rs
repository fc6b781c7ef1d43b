//! One `--app` run, start to end: payload disk, VM, lifecycle, stop reason, exit code.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::api::control::{ControlServer, ControlSocket, EventHub, VmHandle, VmInfo};
use crate::api::{BootSource, InputSource, OutputTarget, VmConfig, VsockConfig};
use crate::lifecycle::protocol::GuestEvent;
use crate::lifecycle::{ErrorCode, LIFECYCLE_PORT, StopReason};
use crate::payload::disk;
use crate::payload::partition::{
    PartitionType, check_instance_image, create_partition, read_or_allocate_instance_id,
};
use crate::vmm::builder;
use crate::vmm::exit::{ExitState, VmExit, code};

use super::config::{AppConfig, INSTANCE_SIZE};
use super::os;
use super::payload_disk::{self, PayloadInputs};
use super::service::{LifecycleService, Observer, PayloadOutcome};
use super::workdir::WorkDir;
use super::{AppError, exit_code};

/// What the run prints (stderr) and returns.
pub struct RunResult {
    pub reason: StopReason,
    pub outcome: PayloadOutcome,
    pub exit_code: i32,
}

/// Everything the VM needs, built in the work directory.
struct Prepared {
    vm: VmConfig,
    ttys1: PathBuf,
}

/// Runs the app; prints its events and the stop reason on stderr; returns the exit code
/// (docs/app.md).
pub fn run(cfg: &AppConfig) -> i32 {
    let t0 = Instant::now();
    // Stop signals are blocked from here on (a SIGTERM during the build is not lost, every
    // thread inherits the mask) and the control socket is claimed: a live one refuses the start.
    let socket = match crate::api::control::claim(cfg.socket.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let work = match WorkDir::create_in_tmp() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("micro-vmm: cannot create a private temporary directory: {e}");
            return code::ERROR;
        }
    };
    let prepared = match prepare(cfg, &work) {
        Ok(p) => p,
        Err(e) => return report_start_failure(&e),
    };
    timing(t0, "payload disk built");
    if cfg.sandbox.enabled()
        && let Err(e) = prepare_sandbox(cfg, &work, &prepared)
    {
        eprintln!("micro-vmm: cannot set up the sandbox: {e}");
        return if e.is_invalid_argument() {
            code::INVALID_ARGS
        } else {
            code::ERROR
        };
    }
    let result = run_vm(cfg, &work, prepared, socket, t0);
    timing(t0, "VM exited");
    eprintln!("micro-vmm: VM stopped: {}", result.reason.name());
    result.exit_code
    // `work` is removed here, on every path that reaches this point (signals included: the
    // VMM turns them into a clean stop).
}

fn report_start_failure(e: &AppError) -> i32 {
    match e {
        AppError::InvalidPayloadConfig(_) => {
            eprintln!(
                "micro-vmm: error {}: {e}",
                ErrorCode::PayloadInvalidConfig.name()
            );
            eprintln!(
                "micro-vmm: VM stopped: {}",
                StopReason::MicrodroidInvalidPayloadConfig.name()
            );
            exit_code::for_reason(StopReason::MicrodroidInvalidPayloadConfig)
        }
        _ => {
            eprintln!("micro-vmm: cannot start the app: {e}");
            if e.is_invalid_argument() {
                code::INVALID_ARGS
            } else {
                code::ERROR
            }
        }
    }
}

/// Validates the inputs and builds the disks and the VM configuration.
fn prepare(cfg: &AppConfig, work: &WorkDir) -> Result<Prepared, AppError> {
    let (payload_config, payload_disk) = payload_disk::build(
        &PayloadInputs {
            apk: &cfg.apk,
            idsig: &cfg.idsig,
            config_path: &cfg.config_path,
            extra_idsigs: &cfg.extra_idsigs,
            apex_dir: cfg.apex_dir.as_deref(),
        },
        work.path(),
    )?;

    // Instance image, instance id, storage.
    let instance = match &cfg.instance {
        Some(p) if p.exists() => {
            check_instance_image(p)?;
            p.clone()
        }
        Some(p) => {
            create_partition(p, INSTANCE_SIZE, PartitionType::Instance)?;
            p.clone()
        }
        None => {
            let p = work.join("instance.img");
            create_partition(&p, INSTANCE_SIZE, PartitionType::Instance)?;
            p
        }
    };
    if let Some(p) = &cfg.instance_id_file {
        read_or_allocate_instance_id(p)?;
    }
    let storage = match &cfg.storage {
        Some((p, _)) if p.exists() => Some(p.clone()),
        Some((p, size)) => {
            create_partition(p, *size, PartitionType::EncryptedStore)?;
            Some(p.clone())
        }
        None => None,
    };

    let writable_disk = disk::writable_disk(&instance, storage.as_deref())?;

    // The guest OS.
    let guest_dir = os::guest_dir(cfg.guest_dir.as_deref());
    let os = os::load(
        payload_config.os_name(),
        cfg.os_config.as_deref(),
        &guest_dir,
    )?;
    let boot = match os.boot {
        BootSource::Kernel {
            kernel,
            initrd,
            cmdline,
        } => BootSource::Kernel {
            kernel,
            initrd,
            cmdline: guest_cmdline(&cmdline, cfg.debug),
        },
        fw @ BootSource::Firmware { .. } => fw,
    };
    let ttys1 = work.join("ttyS1");
    let vm = VmConfig {
        boot,
        mem_mib: cfg
            .mem_mib
            .or(os.mem_mib)
            .unwrap_or(crate::api::cli::DEFAULT_MEM_MIB),
        vcpus: cfg.vcpus,
        serial: cfg.serial.clone(),
        log: OutputTarget::File(ttys1.clone()),
        console_in: InputSource::None,
        disks: vec![writable_disk, payload_disk],
        mmio_cmdline: false,
        vsock: Some(VsockConfig {
            cid: cfg.cid,
            uds: work.join("vsock.sock"),
        }),
        output_limit: cfg.output_limit,
    };
    Ok(Prepared { vm, ttys1 })
}

/// The sandbox of an app run: what the VM's configuration names, plus the private work
/// directory (the lifecycle socket, the log port's capture, removed at the end) and `--log`.
fn prepare_sandbox(
    cfg: &AppConfig,
    work: &WorkDir,
    p: &Prepared,
) -> Result<(), crate::sandbox::SandboxError> {
    let mut policy =
        crate::api::sandbox_policy::for_vm(&p.vm, cfg.socket.as_deref(), cfg.sandbox.credentials());
    policy.dirs.push(work.path().to_path_buf());
    policy.chown.push(work.path().to_path_buf());
    if let Some(parent) = work.path().parent() {
        policy.dir_parents.push(parent.to_path_buf());
    }
    if let OutputTarget::File(log) = &cfg.log {
        policy.outputs.push(("--log", log.clone()));
    }
    crate::sandbox::prepare(&policy)
}

/// The OS's kernel command line; for a debuggable VM without `quiet` and with the agent's
/// progress lines on.
fn guest_cmdline(os_params: &str, debug: bool) -> String {
    if debug {
        let mut words: Vec<&str> = os_params
            .split_whitespace()
            .filter(|w| *w != "quiet")
            .collect();
        words.push(crate::agent::DEBUG_PARAM);
        words.join(" ")
    } else {
        os_params.to_string()
    }
}

/// A milestone for `bench/app.py` (`RUST_LOG=info`): milliseconds since the run began.
fn timing(t0: Instant, what: &str) {
    log::info!("timing: {:.1} ms {what}", t0.elapsed().as_secs_f64() * 1e3);
}

fn run_vm(
    cfg: &AppConfig,
    work: &WorkDir,
    p: Prepared,
    socket: Option<ControlSocket>,
    t0: Instant,
) -> RunResult {
    let vmm = match builder::build(&p.vm) {
        Ok(v) => v,
        Err(e) => return start_failed(&e),
    };
    timing(t0, "VM built");
    let exit: Arc<ExitState> = vmm.exit_handle();
    let hub = match socket.as_ref().map(|_| EventHub::new()).transpose() {
        Ok(h) => h.map(Arc::new),
        Err(e) => return start_failed(&e),
    };
    let lifecycle_socket = work.join(&format!("vsock.sock_{LIFECYCLE_PORT}"));
    let service = match LifecycleService::start(
        &lifecycle_socket,
        Arc::clone(&exit),
        cfg.hangup_timeout,
        print_events(t0, hub.clone()),
    ) {
        Ok(s) => s,
        Err(e) => {
            return start_failed(&format!(
                "cannot serve the lifecycle socket {}: {e}",
                lifecycle_socket.display()
            ));
        }
    };
    let server = match (socket, hub) {
        (Some(socket), Some(hub)) => {
            let vm = VmHandle {
                exit: Arc::clone(&exit),
                pause: vmm.pause_handle(),
                dump: Some(vmm.dump_handle()),
                info: VmInfo {
                    cpus: p.vm.vcpus,
                    memory_mib: p.vm.mem_mib,
                    cid: Some(cfg.cid),
                    vsock_uds: p.vm.vsock.as_ref().map(|v| v.uds.clone()),
                },
                payload: Some(Arc::new(service.handle())),
            };
            match ControlServer::start(socket, vm, hub) {
                Ok(s) => Some(s),
                Err(e) => return start_failed(&e),
            }
        }
        _ => None,
    };
    eprintln!(
        "micro-vmm: created VM for {} with CID {}",
        cfg.apk.display(),
        cfg.cid
    );
    let vm_exit = vmm.run();
    let outcome = service.finish();
    let failure = crate::lifecycle::read_failure_string(&p.ttys1);
    copy_log(&p.ttys1, &cfg.log);
    log::info!("{}", vm_exit.describe());
    let reason = stop_reason(&vm_exit, &failure, &outcome);
    let exit_code = exit_code::for_run(reason, &outcome);
    if let Some(s) = server {
        s.finish(reason, exit_code);
    }
    RunResult {
        reason,
        exit_code,
        outcome,
    }
}

/// A host failure while setting up around the built VM: `START_FAILED`.
fn start_failed(e: &dyn std::fmt::Display) -> RunResult {
    eprintln!("micro-vmm: cannot start the VM: {e}");
    let outcome = PayloadOutcome::default();
    let reason = StopReason::StartFailed;
    RunResult {
        reason,
        exit_code: exit_code::for_run(reason, &outcome),
        outcome,
    }
}

/// The stop reason: HANGUP when the watchdog fired, KILLED for a signal or a host stop, else
/// Android's `death_reason` (failure string, then exit status).
pub fn stop_reason(vm_exit: &VmExit, failure: &str, outcome: &PayloadOutcome) -> StopReason {
    if outcome.hangup {
        return StopReason::Hangup;
    }
    match vm_exit {
        VmExit::Signal(_) | VmExit::Killed(_) => StopReason::Killed,
        other => StopReason::from_exit(failure, Some(other.exit_code())),
    }
}

/// Prints each accepted event on stderr, as it happens, and hands it to the control socket's
/// subscribers.
fn print_events(t0: Instant, hub: Option<Arc<EventHub>>) -> Observer {
    Box::new(move |event| {
        print_event(t0, event);
        if let Some(h) = &hub {
            h.publish_guest_event(event);
        }
    })
}

fn print_event(t0: Instant, event: &GuestEvent) {
    match event {
        GuestEvent::Hello { .. } => timing(t0, "guest agent connected"),
        GuestEvent::Started => {
            timing(t0, "payload started");
            eprintln!("micro-vmm: payload started")
        }
        GuestEvent::Ready => eprintln!("micro-vmm: payload ready"),
        GuestEvent::Finished { exit_code } => {
            timing(t0, "payload finished");
            eprintln!("micro-vmm: payload finished with exit code {exit_code}")
        }
        GuestEvent::Error { code, message } => eprintln!("{}", error_line(*code, message)),
    }
}

/// The line printed for a guest error event. The message is the guest's: escaped and
/// bounded, so it stays one line in vmm.log (which the manager parses) and on the terminal.
fn error_line(code: crate::lifecycle::ErrorCode, message: &str) -> String {
    format!(
        "micro-vmm: error {}: {}",
        code.name(),
        crate::guest_text::escape(message, crate::guest_text::MAX_PRINTED)
    )
}

/// Copies the log port's output to the user's `--log` target.
fn copy_log(from: &Path, to: &OutputTarget) {
    let Ok(mut data) = std::fs::File::open(from) else {
        return;
    };
    // Streamed: the guest decides how much it wrote.
    let result = match to {
        OutputTarget::None => Ok(0),
        OutputTarget::Stdout => std::io::copy(&mut data, &mut std::io::stdout().lock()),
        OutputTarget::File(p) => {
            std::fs::File::create(p).and_then(|mut f| std::io::copy(&mut data, &mut f))
        }
    };
    if let Err(e) = result {
        log::warn!("cannot write the log port's output: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::ResetCause;

    #[test]
    fn guest_error_messages_print_as_one_escaped_line() {
        let msg = format!(
            "bad\nmicro-vmm: VM stopped: SHUTDOWN\x1b[2J{}",
            "y".repeat(10_000)
        );
        let line = error_line(crate::lifecycle::ErrorCode::Unknown, &msg);
        assert!(!line.contains(['\n', '\r', '\x1b']), "{line}");
        assert!(line.starts_with(
            "micro-vmm: error UNKNOWN: bad\\nmicro-vmm: VM stopped: SHUTDOWN\\x1b[2J"
        ));
        assert!(line.len() < 600, "{}", line.len());
    }

    #[test]
    fn stop_reasons() {
        let o = PayloadOutcome::default();
        assert_eq!(stop_reason(&VmExit::PowerOff, "", &o), StopReason::Shutdown);
        assert_eq!(
            stop_reason(
                &VmExit::PowerOff,
                "MICRODROID_PAYLOAD_VERIFICATION_FAILED",
                &o
            ),
            StopReason::MicrodroidPayloadVerificationFailed
        );
        assert_eq!(
            stop_reason(&VmExit::Signal(libc::SIGTERM), "", &o),
            StopReason::Killed
        );
        assert_eq!(
            stop_reason(&VmExit::Reset(ResetCause::TripleFault), "", &o),
            StopReason::Reboot
        );
        assert_eq!(
            stop_reason(&VmExit::Crash("x".into()), "", &o),
            StopReason::Crash
        );
        assert_eq!(
            stop_reason(&VmExit::GuestPanic, "", &o),
            StopReason::Unknown
        );
        let hung = PayloadOutcome {
            hangup: true,
            ..Default::default()
        };
        assert_eq!(
            stop_reason(&VmExit::Killed("hangup".into()), "", &hung),
            StopReason::Hangup
        );
    }

    #[test]
    fn debug_drops_quiet() {
        assert_eq!(
            guest_cmdline("console=ttyS0 quiet panic=-1", true),
            "console=ttyS0 panic=-1 microvmm.debug"
        );
        assert_eq!(
            guest_cmdline("console=ttyS0 quiet", false),
            "console=ttyS0 quiet"
        );
    }
}
