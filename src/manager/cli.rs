//! The `micro-vmm vm ...` subcommands (docs/manager.md).

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

use crate::vmm::exit::code;

use super::home::Home;
use super::{ManagerError, monitor, store};

/// Longest `vm stop --timeout`: what the control socket's `stop` accepts (one hour).
pub const MAX_STOP_TIMEOUT_SECS: u64 = crate::api::control::protocol::MAX_STOP_TIMEOUT_MS / 1000;

/// Manage app VMs kept in VM directories (Android's `VirtualMachine` API).
#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Create a VM from a config file (docs/manager.md); fails if NAME exists.
    Create {
        name: String,
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// List the VMs and their status.
    List,
    /// The VM's config, files, status and last stop reason (JSON).
    Info { name: String },
    /// stopped, running or deleted.
    Status { name: String },
    /// Run the VM: the console on stdout until it stops, or in the background with --detach.
    Run {
        name: String,
        #[arg(long)]
        detach: bool,
    },
    /// Stop the VM (the guest gets --timeout seconds, at most 3600, then it is killed).
    Stop {
        name: String,
        #[arg(long, value_name = "SECS", default_value_t = 10,
              value_parser = clap::value_parser!(u64).range(0..=MAX_STOP_TIMEOUT_SECS))]
        timeout: u64,
    },
    /// Print the VM's console, following it until the VM stops.
    Console { name: String },
    /// Connect stdin and stdout to a vsock port of the running VM.
    ConnectVsock { name: String, port: u32 },
    /// Replace the config of a stopped VM (only the changes Android allows).
    SetConfig { name: String, file: PathBuf },
    /// Delete a stopped VM.
    Delete { name: String },
    /// Write a stopped VM's descriptor directory OUT (must not exist).
    Export { name: String, out: PathBuf },
    /// Create VM NAME from a descriptor directory. The config's host paths (apk, os_config,
    /// guest_dir, extra_apks) must lie inside it unless --trust-paths is given.
    Import {
        name: String,
        input: PathBuf,
        /// Accept host paths outside the descriptor directory (check them first: `run` hands
        /// the files they name to the guest).
        #[arg(long)]
        trust_paths: bool,
    },
    /// (internal) the detached monitor of `run --detach`.
    #[command(hide = true)]
    Monitor {
        name: String,
        #[arg(long)]
        lock_fd: i32,
    },
}

/// Runs one command; returns the process exit code.
pub fn main(cmd: VmCommand) -> i32 {
    match dispatch(cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("micro-vmm: {e}");
            match e {
                ManagerError::BadName { .. }
                | ManagerError::Config { .. }
                | ManagerError::Incompatible { .. }
                | ManagerError::Descriptor { .. } => code::INVALID_ARGS,
                _ => code::ERROR,
            }
        }
    }
}

fn dispatch(cmd: VmCommand) -> Result<i32, ManagerError> {
    let home = Home::from_env()?;
    match cmd {
        VmCommand::Create { name, config } => {
            let vm = store::create(&home, &name, &config)?;
            eprintln!("micro-vmm: created VM {name} in {}", vm.path().display());
        }
        VmCommand::List => {
            for (name, status) in store::list(&home)? {
                println!("{name}\t{}", status.name());
            }
        }
        VmCommand::Info { name } => {
            let info = store::info(&home, &name)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&info).unwrap_or_default()
            );
        }
        VmCommand::Status { name } => println!("{}", store::status(&home, &name)?.name()),
        VmCommand::Run { name, detach } => return monitor::run(&home, &name, detach),
        VmCommand::Stop { name, timeout } => {
            let last = monitor::stop(&home, &name, Duration::from_secs(timeout))?;
            println!("{}", last.reason.name());
        }
        VmCommand::Console { name } => monitor::console(&home, &name)?,
        VmCommand::ConnectVsock { name, port } => monitor::connect_vsock(&home, &name, port)?,
        VmCommand::SetConfig { name, file } => {
            store::set_config(&home, &name, &file)?;
            eprintln!("micro-vmm: updated the config of VM {name}");
        }
        VmCommand::Delete { name } => {
            store::delete(&home, &name)?;
            eprintln!("micro-vmm: deleted VM {name}");
        }
        VmCommand::Export { name, out } => {
            store::export(&home, &name, &out)?;
            eprintln!("micro-vmm: exported VM {name} to {}", out.display());
        }
        VmCommand::Import {
            name,
            input,
            trust_paths,
        } => {
            let vm = store::import(&home, &name, &input, trust_paths)?;
            eprintln!("micro-vmm: imported VM {name} into {}", vm.path().display());
        }
        VmCommand::Monitor { name, lock_fd } => {
            return Ok(monitor::monitor_detached(&home, &name, lock_fd));
        }
    }
    Ok(0)
}
