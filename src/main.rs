//! The `micro-vmm` command.

use std::path::Path;
use std::process::ExitCode;

use std::sync::Arc;

use micro_vmm::api::cli::{self, AppArgs, Command, DiskCommand, RunArgs};
use micro_vmm::api::control::{self, ControlServer, EventHub, VmHandle, VmInfo};
use micro_vmm::api::{DiskConfig, VmConfig, sandbox_policy};
use micro_vmm::app::AppConfig;
use micro_vmm::app::payload_disk::{self as app_payload, PayloadInputs};
use micro_vmm::app::service::PayloadOutcome;
use micro_vmm::disk;
use micro_vmm::log_limit::{GUEST_TRIGGERED_TARGETS, LimitedTargets};
use micro_vmm::payload::idsig;
use micro_vmm::payload::partition::{self, PartitionType};
use micro_vmm::vmm::builder;
use micro_vmm::vmm::exit::code;

/// env_logger (RUST_LOG, default `warn`), with other crates' guest-triggerable messages
/// (virtio-queue's) rate limited.
fn init_logger() {
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
            .format_target(false)
            .build();
    let max = logger.filter();
    let limited = LimitedTargets::new(logger, GUEST_TRIGGERED_TARGETS);
    if log::set_logger(Box::leak(Box::new(limited))).is_ok() {
        log::set_max_level(max);
    }
}

fn main() -> ExitCode {
    init_logger();
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print and succeed; anything else is an argument error.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                code::INVALID_ARGS as u8
            } else {
                0
            });
        }
    };
    let status = match cli.command {
        Some(Command::Run(args)) => run(*args),
        Some(Command::Disk(cmd)) => disk_tool(cmd),
        None => app(cli.app),
        Some(Command::CreatePartition { kind, path, size }) => create_partition(kind, &path, size),
        Some(Command::CreateIdsig { apk, out }) => create_idsig(&apk, &out),
        Some(Command::VerifyIdsig { apk, idsig }) => verify_idsig(&apk, &idsig),
        Some(Command::PayloadDisk {
            apk,
            idsig,
            config_path,
            out_dir,
            extra_idsig,
            apex_dir,
        }) => payload_disk(
            &PayloadInputs {
                apk: &apk,
                idsig: &idsig,
                config_path: &config_path,
                extra_idsigs: &extra_idsig,
                apex_dir: apex_dir.as_deref(),
            },
            &out_dir,
        ),
        Some(Command::Vm(cmd)) => micro_vmm::manager::cli::main(cmd),
        Some(Command::Ctl {
            socket,
            method,
            args,
        }) => control::client::run(&socket, &method, &args),
    };
    ExitCode::from(status as u8)
}

fn run(mut args: RunArgs) -> i32 {
    let socket_path = args.socket.take();
    let sandbox = args.sandbox.clone();
    let config = match VmConfig::try_from(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("micro-vmm: invalid arguments: {e}");
            return code::INVALID_ARGS;
        }
    };
    let socket = match control::claim(socket_path.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if sandbox.enabled() {
        let policy = sandbox_policy::for_vm(&config, socket_path.as_deref(), sandbox.credentials());
        if let Err(e) = micro_vmm::sandbox::prepare(&policy) {
            eprintln!("micro-vmm: cannot set up the sandbox: {e}");
            return if e.is_invalid_argument() {
                code::INVALID_ARGS
            } else {
                code::ERROR
            };
        }
    }
    let vmm = match builder::build(&config) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("micro-vmm: cannot start the VM: {e}");
            return if e.is_invalid_argument() {
                code::INVALID_ARGS
            } else {
                code::ERROR
            };
        }
    };
    let server = match socket {
        Some(socket) => {
            let started = EventHub::new().and_then(|hub| {
                let vm = VmHandle {
                    exit: vmm.exit_handle(),
                    pause: vmm.pause_handle(),
                    dump: Some(vmm.dump_handle()),
                    info: VmInfo {
                        cpus: config.vcpus,
                        memory_mib: config.mem_mib,
                        cid: config.vsock.as_ref().map(|v| v.cid),
                        vsock_uds: config.vsock.as_ref().map(|v| v.uds.clone()),
                    },
                    payload: None,
                };
                ControlServer::start(socket, vm, Arc::new(hub))
            });
            match started {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("micro-vmm: cannot start the VM: {e}");
                    return code::ERROR;
                }
            }
        }
        None => None,
    };
    let exit = vmm.run();
    eprintln!("micro-vmm: {}", exit.describe());
    if let Some(s) = server {
        let reason = micro_vmm::app::run::stop_reason(&exit, "", &PayloadOutcome::default());
        s.finish(reason, exit.exit_code());
    }
    exit.exit_code()
}

fn app(args: AppArgs) -> i32 {
    match AppConfig::try_from(args) {
        Ok(config) => micro_vmm::app::run(&config),
        Err(e) => {
            eprintln!("micro-vmm: invalid arguments: {e}");
            code::INVALID_ARGS
        }
    }
}

fn disk_tool(cmd: DiskCommand) -> i32 {
    let result = match cmd {
        DiskCommand::Create { spec, out } => disk::tool::create(&spec, &out).map(|()| {
            eprintln!("micro-vmm: wrote composite disk {}", out.display());
        }),
        DiskCommand::Inspect { image } => disk::tool::inspect(&image).map(|text| print!("{text}")),
        DiskCommand::Flatten { input, output } => {
            disk::tool::flatten(&input, &output).map(|bytes| {
                eprintln!("micro-vmm: wrote {bytes} bytes to {}", output.display());
            })
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("micro-vmm: {e}");
            code::INVALID_ARGS
        }
    }
}

fn create_partition(kind: PartitionType, path: &std::path::Path, size: u64) -> i32 {
    match partition::create_partition(path, size, kind) {
        Ok(len) => {
            eprintln!(
                "micro-vmm: created {kind} partition {} ({len} bytes)",
                path.display()
            );
            0
        }
        Err(e) => {
            eprintln!("micro-vmm: {e}");
            code::INVALID_ARGS
        }
    }
}

fn create_idsig(apk: &Path, out: &Path) -> i32 {
    match idsig::create_idsig(apk, out) {
        Ok(sig) => {
            eprintln!(
                "micro-vmm: wrote {} (root hash {})",
                out.display(),
                idsig::hex(&sig.hashing_info.raw_root_hash)
            );
            code::STOP
        }
        Err(e) => {
            eprintln!("micro-vmm: {e}");
            if e.is_bad_input() {
                code::INVALID_ARGS
            } else {
                code::ERROR
            }
        }
    }
}

fn verify_idsig(apk: &Path, sig: &Path) -> i32 {
    match idsig::verify(apk, sig) {
        Ok(report) => {
            println!("ok: root hash {}", idsig::hex(&report.root_hash));
            code::STOP
        }
        Err(e) => {
            eprintln!("micro-vmm: {e}");
            code::ERROR
        }
    }
}

fn payload_disk(inputs: &PayloadInputs, out_dir: &Path) -> i32 {
    let t0 = std::time::Instant::now();
    let built = app_payload::build(inputs, out_dir).map_err(|e| e.to_string());
    let result = built.and_then(|(_, disk)| {
        let DiskConfig::Composite { partitions, .. } = disk else {
            return Err("the payload disk is not a composite".to_string());
        };
        let out = out_dir.join("payload.img");
        disk::cdisk::write_composite(&partitions, &out)
            .map(|size| (out, size))
            .map_err(|e| e.to_string())
    });
    match result {
        Ok((out, size)) => {
            eprintln!(
                "micro-vmm: wrote {} ({size} bytes, {:.1} ms)",
                out.display(),
                t0.elapsed().as_secs_f64() * 1e3
            );
            0
        }
        Err(e) => {
            eprintln!("micro-vmm: {e}");
            code::INVALID_ARGS
        }
    }
}
