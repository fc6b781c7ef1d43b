//! Command-line parsing (clap) and its conversion into a validated [`VmConfig`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::config::{
    BootSource, ConfigError, DEFAULT_CMDLINE, InputSource, OutputTarget, VmConfig,
    validate_cmdline, validate_file, validate_mem, validate_vcpus,
};

#[derive(Debug, Parser)]
#[command(
    name = "micro-vmm",
    version,
    about = "A small KVM virtual machine monitor"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a kernel or a firmware image in a new VM.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Linux kernel: bzImage or ELF vmlinux (PVH entry used when present).
    #[arg(long, value_name = "PATH", conflicts_with = "bios")]
    pub kernel: Option<PathBuf>,
    /// Raw firmware image, mapped below 4 GiB; the vCPU starts at the reset vector.
    #[arg(long, value_name = "PATH")]
    pub bios: Option<PathBuf>,
    /// Initial ramdisk for the kernel.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line [default: "console=ttyS0 panic=-1"].
    #[arg(long, value_name = "STR")]
    pub cmdline: Option<String>,
    /// Guest RAM in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    pub mem: u64,
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus: u64,
    /// Console (COM1, ttyS0) output: stdout, file:PATH or none.
    #[arg(long, value_name = "TARGET", default_value = "stdout")]
    pub serial: String,
    /// Log port (COM2, ttyS1) output: stdout, file:PATH or none.
    #[arg(long, value_name = "TARGET", default_value = "none")]
    pub log: String,
    /// Console input: stdin or none.
    #[arg(long, value_name = "SOURCE", default_value = "stdin")]
    pub console_in: String,
}

impl TryFrom<RunArgs> for VmConfig {
    type Error = ConfigError;

    fn try_from(a: RunArgs) -> Result<Self, ConfigError> {
        let boot = match (a.kernel, a.bios) {
            (Some(kernel), None) => BootSource::Kernel {
                kernel: validate_file("kernel", kernel)?,
                initrd: a.initrd.map(|p| validate_file("initrd", p)).transpose()?,
                cmdline: validate_cmdline(a.cmdline.as_deref().unwrap_or(DEFAULT_CMDLINE))?,
            },
            (None, Some(image)) => {
                if a.initrd.is_some() {
                    return Err(ConfigError::NotWithFirmware { flag: "--initrd" });
                }
                if a.cmdline.is_some() {
                    return Err(ConfigError::NotWithFirmware { flag: "--cmdline" });
                }
                BootSource::Firmware {
                    image: validate_file("firmware", image)?,
                }
            }
            _ => return Err(ConfigError::NoBootSource),
        };
        Ok(VmConfig {
            boot,
            mem_mib: validate_mem(a.mem)?,
            vcpus: validate_vcpus(a.cpus)?,
            serial: OutputTarget::parse("--serial", &a.serial)?,
            log: OutputTarget::parse("--log", &a.log)?,
            console_in: InputSource::parse(&a.console_in)?,
            disks: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<VmConfig, String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        let Command::Run(run) = cli.command;
        VmConfig::try_from(run).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let exe = std::env::current_exe().unwrap();
        let exe = exe.to_str().unwrap();
        let c = parse(&["micro-vmm", "run", "--kernel", exe]).unwrap();
        assert_eq!(c.mem_mib, 256);
        assert_eq!(c.vcpus, 1);
        assert_eq!(c.serial, OutputTarget::Stdout);
        assert_eq!(c.log, OutputTarget::None);
        assert_eq!(c.console_in, InputSource::Stdin);
        assert_eq!(
            c.boot,
            BootSource::Kernel {
                kernel: exe.into(),
                initrd: None,
                cmdline: DEFAULT_CMDLINE.into()
            }
        );
    }

    #[test]
    fn bad_arguments() {
        let exe = std::env::current_exe().unwrap();
        let exe = exe.to_str().unwrap();
        assert!(parse(&["micro-vmm", "run"]).is_err());
        assert!(parse(&["micro-vmm", "run", "--kernel", exe, "--bios", exe]).is_err());
        assert!(parse(&["micro-vmm", "run", "--bios", exe, "--initrd", exe]).is_err());
        assert!(parse(&["micro-vmm", "run", "--kernel", exe, "--cpus", "0"]).is_err());
        assert!(parse(&["micro-vmm", "run", "--kernel", exe, "--mem", "-1"]).is_err());
        assert!(parse(&["micro-vmm", "run", "--kernel", exe, "--serial", "x"]).is_err());
        assert!(parse(&["micro-vmm", "run", "--kernel", "/nonexistent"]).is_err());
        assert!(parse(&["micro-vmm", "run", "--kernel", exe, "--bogus"]).is_err());
    }
}
