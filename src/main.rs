//! The `micro-vmm` command.

use std::path::Path;
use std::process::ExitCode;

use micro_vmm::api::VmConfig;
use micro_vmm::api::cli::{self, Command, DiskCommand, RunArgs};
use micro_vmm::disk;
use micro_vmm::payload::idsig;
use micro_vmm::payload::partition::{self, PartitionType};
use micro_vmm::vmm::builder;
use micro_vmm::vmm::exit::code;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_target(false)
        .init();
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
        Command::Run(args) => run(*args),
        Command::Disk(cmd) => disk_tool(cmd),
        Command::CreatePartition { kind, path, size } => create_partition(kind, &path, size),
        Command::CreateIdsig { apk, out } => create_idsig(&apk, &out),
        Command::VerifyIdsig { apk, idsig } => verify_idsig(&apk, &idsig),
    };
    ExitCode::from(status as u8)
}

fn run(args: RunArgs) -> i32 {
    let config = match VmConfig::try_from(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("micro-vmm: invalid arguments: {e}");
            return code::INVALID_ARGS;
        }
    };
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
    let exit = vmm.run();
    eprintln!("micro-vmm: {}", exit.describe());
    exit.exit_code()
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
            code::ERROR
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
