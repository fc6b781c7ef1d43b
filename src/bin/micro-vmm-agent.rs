//! `micro-vmm-agent`: the init of micro-vmm's app guest (docs/lifecycle.md). Multi-call:
//!
//! - as `/init` (PID 1): the agent; it never exits, it powers the VM off;
//! - as `vm_payload ready`: tells the agent the payload is ready and waits for its answer.

use std::path::Path;
use std::time::Duration;

use micro_vmm::agent::system::{self, FAILURE_TTY, LinuxSystem};
use micro_vmm::agent::{self, AgentConfig, host, modules, run};
use micro_vmm::lifecycle::{ErrorCode, PAYLOAD_SERVICE_SOCKET, StopReason};
use micro_vmm::{agent_debug, agent_log};

/// How long the agent tries to reach the host.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Where the kernel modules and their load order are.
const MODULES_DIR: &str = "/lib/modules";

fn main() {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let name = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name == "vm_payload" {
        let rest: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
        std::process::exit(vm_payload(&rest));
    }
    // SAFETY: getpid takes no arguments and cannot fail.
    if unsafe { libc::getpid() } != 1 {
        eprintln!(
            "micro-vmm-agent: this is the init of micro-vmm's app guest and runs only as PID 1 \
             (it mounts file systems and powers the machine off); as `vm_payload ready` it \
             signals a payload's readiness"
        );
        std::process::exit(2);
    }
    agent()
}

/// `vm_payload ready`.
fn vm_payload(args: &[String]) -> i32 {
    if args != ["ready"] {
        eprintln!("usage: vm_payload ready");
        return 2;
    }
    match micro_vmm::agent::ready::notify_ready(Path::new(PAYLOAD_SERVICE_SOCKET)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vm_payload: {e}");
            1
        }
    }
}

/// PID 1. Every path ends in [`system::power_off`]; a panic anywhere (any thread) is
/// reported and powers off too, instead of killing init (which panics the kernel).
fn agent() -> ! {
    std::panic::set_hook(Box::new(|info| {
        agent_log!("internal error: {info}");
        system::write_failure(
            Path::new(FAILURE_TTY),
            &system::failure_string(ErrorCode::Unknown, &format!("agent panic: {info}")),
        );
        system::power_off();
    }));

    // Best effort: what is missing shows up as a clear error in a later step.
    if let Err(e) = system::mount_basics() {
        agent_log!("{e}");
    }
    if let Err(e) = system::attach_console(Path::new("/dev/console")) {
        agent_log!("{e}");
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    agent::set_verbose(agent::debug_requested(&cmdline));
    agent_debug!("started");
    match modules::load_all(Path::new(MODULES_DIR)) {
        Ok(n) => agent_debug!("{n} kernel modules loaded"),
        Err(e) => agent_log!("{e}"),
    }

    let link = match host::connect_host(CONNECT_TIMEOUT) {
        Ok(link) => link,
        Err(e) => {
            agent_log!("{e}");
            system::write_failure(
                Path::new(FAILURE_TTY),
                StopReason::MicrodroidFailedToConnectToVirtualizationService.name(),
            );
            system::power_off();
        }
    };
    agent_debug!("connected to the host");
    let outcome = run::run(&AgentConfig::guest(), &LinuxSystem, link);
    if let Some(reason) = outcome.failure_string() {
        system::write_failure(Path::new(FAILURE_TTY), &reason);
    }
    system::power_off()
}
