//! The `micro-vmm` command.

use std::process::ExitCode;

use clap::Parser;
use micro_vmm::api::VmConfig;
use micro_vmm::api::cli::{Cli, Command, RunArgs};
use micro_vmm::vmm::builder;
use micro_vmm::vmm::exit::code;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_target(false)
        .init();
    let cli = match Cli::try_parse() {
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
        Command::Run(args) => run(args),
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
