//! Command-line parsing (clap) and its conversion into a validated [`VmConfig`].

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use super::config::{
    BootSource, ConfigError, DEFAULT_CMDLINE, DiskConfig, ImageFormat, InputSource, MAX_DISKS,
    OutputTarget, VmConfig, VsockConfig, validate_cmdline, validate_file, validate_mem,
    validate_output_limit, validate_vcpus,
};
use super::vmconfig;
use crate::payload::partition::{self, PartitionType};

#[derive(Debug, Parser)]
#[command(
    name = "micro-vmm",
    version,
    about = "A small KVM virtual machine monitor"
)]
#[command(args_conflicts_with_subcommands = true, subcommand_required = false)]
#[command(arg_required_else_help = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `micro-vmm --app APK IDSIG CONFIG_PATH [flags]`: run an app's payload (docs/app.md).
    #[command(flatten)]
    pub app: AppArgs,
}

/// Run an app's payload in a fresh VM, as Android's `vm run-app` does.
#[derive(Debug, Args)]
pub struct AppArgs {
    /// The APK, its idsig (created or refreshed when empty, missing or stale) and the path of
    /// the payload config JSON inside the APK.
    #[arg(long, num_args = 3, value_names = ["APK", "IDSIG", "CONFIG_PATH"])]
    pub app: Option<Vec<PathBuf>>,
    /// The instance image (created, 10 MiB, when missing) [default: a new one for this run].
    #[arg(long, value_name = "PATH", requires = "app")]
    pub instance: Option<PathBuf>,
    /// The instance id file: exactly 64 bytes, allocated and written when missing.
    #[arg(long, value_name = "PATH", requires = "app")]
    pub instance_id_file: Option<PathBuf>,
    /// The payload's persistent storage image (created when missing).
    #[arg(long, value_name = "PATH", requires = "app")]
    pub storage: Option<PathBuf>,
    /// Size of a new storage image, in bytes (K, M, G suffixes accepted) [default: 10M].
    #[arg(long, value_name = "BYTES", requires = "storage")]
    pub storage_size: Option<String>,
    /// The idsig of each extra APK named in the config, in order (created when missing).
    #[arg(long, value_name = "PATH", requires = "app")]
    pub extra_idsig: Vec<PathBuf>,
    /// Directory holding the APEXes the config names (`<dir>/<name>.apex`).
    #[arg(long, value_name = "DIR", requires = "app")]
    pub apex_dir: Option<PathBuf>,
    /// Guest RAM in MiB [default: the OS config's memory_mib].
    #[arg(long, value_name = "MIB", requires = "app")]
    pub mem: Option<u64>,
    /// Number of vCPUs [default: 1].
    #[arg(long, value_name = "N", requires = "app")]
    pub cpus: Option<u64>,
    /// The guest's vsock CID [default: 3].
    #[arg(long, value_name = "N", requires = "app")]
    pub cid: Option<u64>,
    /// Console (ttyS0) output: stdout, file:PATH or none.
    #[arg(
        long,
        value_name = "TARGET",
        default_value = "stdout",
        requires = "app"
    )]
    pub serial: String,
    /// Also copy the log port (ttyS1, where the guest writes its failure reason) to this
    /// target: stdout, file:PATH or none.
    #[arg(long, value_name = "TARGET", default_value = "none", requires = "app")]
    pub log: String,
    /// Debuggable guest: the kernel and the guest agent log their progress to the console.
    #[arg(long, requires = "app")]
    pub debug: bool,
    /// The guest OS config (vmconfig JSON) instead of the built-in one.
    #[arg(long, value_name = "PATH", requires = "app")]
    pub os_config: Option<PathBuf>,
    /// The guest-asset directory (kernel, initramfs) [default: $MICRO_VMM_GUEST_DIR, else
    /// ~/.cache/micro-vmm/guest].
    #[arg(long, value_name = "DIR", requires = "app")]
    pub guest_dir: Option<PathBuf>,
    /// Seconds the payload gets to start before the VM is stopped (HANGUP) [default: 30, or
    /// 300 when micro-vmm itself runs in a VM].
    #[arg(long, value_name = "SECS", requires = "app")]
    pub hangup_timeout: Option<u64>,
    /// Serve the control socket (docs/api.md) at this path while the VM runs.
    #[arg(long, value_name = "PATH", requires = "app")]
    pub socket: Option<PathBuf>,
    /// Most MiB of guest output each output file (--serial file:, --log file:, the log
    /// port's capture) gets; then one line says so and the rest is dropped [default: 64].
    #[arg(long, value_name = "MIB", requires = "app")]
    pub output_limit: Option<u64>,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// The sandbox (docs/security.md), on `run` and `--app`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct SandboxArgs {
    /// Seccomp filters per thread and landlock: on, or off to debug.
    #[arg(long = "sandbox", value_name = "on|off", default_value = "on",
          value_parser = ["on", "off"])]
    pub sandbox: String,
    /// Run as this uid once /dev/kvm and the files are open (with --gid).
    #[arg(long, value_name = "UID", requires = "gid")]
    pub uid: Option<u32>,
    /// Run as this gid once /dev/kvm and the files are open (with --uid).
    #[arg(long, value_name = "GID", requires = "uid")]
    pub gid: Option<u32>,
}

impl SandboxArgs {
    /// The sandbox is on (the default).
    pub fn enabled(&self) -> bool {
        self.sandbox != "off"
    }

    /// The user to drop to, if any.
    pub fn credentials(&self) -> Option<crate::sandbox::Credentials> {
        match (self.uid, self.gid) {
            (Some(uid), Some(gid)) => Some(crate::sandbox::Credentials { uid, gid }),
            _ => None,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a kernel or a firmware image in a new VM.
    Run(Box<RunArgs>),
    /// Create, inspect or flatten disk images.
    #[command(subcommand)]
    Disk(DiskCommand),
    /// Create a writable partition image, as Android's `vm create-partition`: a sparse file
    /// of SIZE rounded up to 4096 bytes, with the type's header (an existing file is replaced).
    CreatePartition {
        /// raw (zeros), instance (vm-instance header) or encryptedstore (unformatted storage).
        #[arg(long = "type", short = 't', value_name = "TYPE", default_value = "raw",
              value_parser = PartitionType::from_str)]
        kind: PartitionType,
        path: PathBuf,
        /// Bytes, or a number with a K, M, G or T suffix (binary: 10M = 10 MiB).
        #[arg(value_parser = partition::parse_size)]
        size: u64,
    },
    /// Write the APK Signature Scheme v4 .idsig of an APK (Merkle tree and signer digest).
    CreateIdsig { apk: PathBuf, out: PathBuf },
    /// Check an APK against an .idsig (ours or apksigner's).
    VerifyIdsig { apk: PathBuf, idsig: PathBuf },
    /// Build an app's payload disk into OUT_DIR, as `--app` does: `metadata` and
    /// `payload.img` (a crosvm composite disk over the APK, idsig, ... nothing copied).
    PayloadDisk {
        apk: PathBuf,
        /// Created or refreshed when empty, missing or stale.
        idsig: PathBuf,
        /// The payload config's path inside the APK.
        config_path: String,
        out_dir: PathBuf,
        /// The idsig of each extra APK the config names, in order.
        #[arg(long, value_name = "PATH")]
        extra_idsig: Vec<PathBuf>,
        /// Directory holding the APEXes the config names (`<dir>/<name>.apex`).
        #[arg(long, value_name = "DIR")]
        apex_dir: Option<PathBuf>,
    },
    /// Manage app VMs kept in VM directories (docs/manager.md).
    #[command(subcommand)]
    Vm(crate::manager::cli::VmCommand),
    /// Send one request to a VM's control socket and print the response (docs/api.md):
    /// version, status, stop [TIMEOUT_MS], kill, pause, resume, subscribe (prints events until
    /// the VM stops), connect-vsock PORT (bridges stdin/stdout to the guest's port).
    Ctl {
        /// The VM's control socket (`--socket PATH`).
        socket: PathBuf,
        method: String,
        #[arg(allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DiskCommand {
    /// Write a composite disk (crosvm's format) from a JSON spec of partitions.
    Create {
        /// `{"partitions": [{"label": ..., "path": ..., "writable": false}, ...]}`
        spec: PathBuf,
        /// The composite descriptor to write (its header, footer and filler go beside it).
        out: PathBuf,
    },
    /// Print a disk image's partition table (raw GPT images and composite disks).
    Inspect { image: PathBuf },
    /// Copy a disk image (composite or raw) into one raw image.
    Flatten { input: PathBuf, output: PathBuf },
}

/// Default guest RAM when neither the flag nor a config file sets it.
pub const DEFAULT_MEM_MIB: u64 = 256;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Android vmconfig JSON (kernel, initrd, params, bootloader, disks, memory_mib, ...);
    /// flags given on the command line override it.
    #[arg(long, value_name = "VM.json")]
    pub config: Option<PathBuf>,
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
    /// Guest RAM in MiB [default: 256].
    #[arg(long, value_name = "MIB")]
    pub mem: Option<u64>,
    /// Number of vCPUs [default: 1].
    #[arg(long, value_name = "N")]
    pub cpus: Option<u64>,
    /// Read-only disk image (raw, or a crosvm composite descriptor, recognised by its first
    /// bytes unless `,format=raw|composite` is given); repeatable. Disks appear as /dev/vda,
    /// /dev/vdb, ...: the config file's first, then these flags in order. A composite may
    /// name block devices only with `,allow-block-devices=true`.
    #[arg(long, value_name = "PATH[,format=F][,allow-block-devices=B]")]
    pub disk: Vec<PathBuf>,
    /// Writable disk image; repeatable (ordered with --disk as given). Always raw unless
    /// `,format=composite` is given: its format is never guessed from bytes the guest wrote.
    #[arg(long, value_name = "PATH[,format=F][,allow-block-devices=B]")]
    pub rwdisk: Vec<PathBuf>,
    /// virtio-vsock: `cid=N,uds=PATH` (guest CID >= 3; host programs connect to PATH and send
    /// `CONNECT <port>`; guest connections to host port P reach `PATH_P`).
    #[arg(long, value_name = "cid=N,uds=PATH")]
    pub vsock: Option<String>,
    /// Also describe the virtio-mmio devices on the kernel command line
    /// (`virtio_mmio.device=`), for kernels without ACPI built with that option. The DSDT
    /// always describes them.
    #[arg(long)]
    pub mmio_cmdline: bool,
    /// Console (COM1, ttyS0) output: stdout, file:PATH or none.
    #[arg(long, value_name = "TARGET", default_value = "stdout")]
    pub serial: String,
    /// Log port (COM2, ttyS1) output: stdout, file:PATH or none.
    #[arg(long, value_name = "TARGET", default_value = "none")]
    pub log: String,
    /// Console input: stdin or none.
    #[arg(long, value_name = "SOURCE", default_value = "stdin")]
    pub console_in: String,
    /// Most MiB of guest output each output file (--serial file:, --log file:) gets; then one
    /// line says so and the rest is dropped [default: 64].
    #[arg(long, value_name = "MIB")]
    pub output_limit: Option<u64>,
    /// Serve the control socket (docs/api.md) at this path while the VM runs.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// --disk and --rwdisk in command-line order (filled from the parsed matches).
    #[arg(skip)]
    pub ordered_disks: Vec<DiskConfig>,
}

/// Parses the command line, keeping --disk/--rwdisk in the order they were given.
pub fn parse() -> Result<Cli, clap::Error> {
    parse_from(std::env::args_os())
}

pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = Cli::command().try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if cli.command.is_none() && cli.app.app.is_none() {
        return Err(Cli::command().error(
            clap::error::ErrorKind::MissingRequiredArgument,
            "give a subcommand or --app APK IDSIG CONFIG_PATH",
        ));
    }
    if let (Some(Command::Run(run)), Some(("run", m))) = (&mut cli.command, matches.subcommand()) {
        let mut disks: Vec<(usize, DiskConfig)> = Vec::new();
        for (id, writable) in [("disk", false), ("rwdisk", true)] {
            if let (Some(paths), Some(idx)) = (m.get_many::<PathBuf>(id), m.indices_of(id)) {
                for (path, i) in paths.zip(idx) {
                    let disk = parse_disk_arg(path.as_os_str(), writable).map_err(|e| {
                        Cli::command().error(
                            clap::error::ErrorKind::ValueValidation,
                            format!("--{id} {path:?}: {e}"),
                        )
                    })?;
                    disks.push((i, disk));
                }
            }
        }
        disks.sort_by_key(|(i, _)| *i);
        run.ordered_disks = disks.into_iter().map(|(_, d)| d).collect();
    }
    Ok(cli)
}

/// Options that may follow a `--disk`/`--rwdisk` path after commas.
const DISK_OPTIONS: &[&str] = &["format", "allow-block-devices"];

/// Parses `PATH[,format=raw|composite][,allow-block-devices=true|false]`. Options are taken
/// from the end while the last comma-separated part is `KEY=VALUE` with a known KEY, so a
/// path that merely contains a comma still works.
pub fn parse_disk_arg(arg: &std::ffi::OsStr, writable: bool) -> Result<DiskConfig, String> {
    use std::os::unix::ffi::OsStrExt;
    let mut rest = arg.as_bytes();
    let mut format = None;
    let mut allow_block_devices = None;
    while let Some(comma) = rest.iter().rposition(|&b| b == b',') {
        let opt = &rest[comma + 1..];
        let Some((key, value)) = std::str::from_utf8(opt)
            .ok()
            .and_then(|o| o.split_once('='))
        else {
            break;
        };
        if !DISK_OPTIONS.contains(&key) {
            break;
        }
        match key {
            "format" => {
                if format.is_some() {
                    return Err("format= is given twice".into());
                }
                format = Some(ImageFormat::parse(value).ok_or_else(|| {
                    format!("format={value:?} is not a known format (raw or composite)")
                })?);
            }
            _ => {
                if allow_block_devices.is_some() {
                    return Err("allow-block-devices= is given twice".into());
                }
                allow_block_devices = Some(match value {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(format!(
                            "allow-block-devices={value:?}: expected true or false"
                        ));
                    }
                });
            }
        }
        rest = &rest[..comma];
    }
    if rest.is_empty() {
        return Err("no path before the options".into());
    }
    Ok(DiskConfig::Image {
        path: PathBuf::from(std::ffi::OsStr::from_bytes(rest)),
        writable,
        format,
        allow_block_devices: allow_block_devices.unwrap_or(false),
    })
}

impl TryFrom<RunArgs> for VmConfig {
    type Error = ConfigError;

    fn try_from(a: RunArgs) -> Result<Self, ConfigError> {
        let file = match &a.config {
            Some(path) => Some(vmconfig::load(path)?),
            None => None,
        };
        let (file_boot, file_mem, file_vcpus, file_disks) = match file {
            Some(f) => (f.boot, f.mem_mib, f.vcpus, f.disks),
            None => (None, None, None, Vec::new()),
        };
        let boot = match (a.kernel, a.bios, file_boot) {
            (Some(kernel), None, file) => {
                // The file's initrd and params still apply unless overridden.
                let (f_initrd, f_cmdline) = match file {
                    Some(BootSource::Kernel {
                        initrd, cmdline, ..
                    }) => (initrd, Some(cmdline).filter(|c| !c.is_empty())),
                    _ => (None, None),
                };
                BootSource::Kernel {
                    kernel: validate_file("kernel", kernel)?,
                    initrd: a
                        .initrd
                        .or(f_initrd)
                        .map(|p| validate_file("initrd", p))
                        .transpose()?,
                    cmdline: validate_cmdline(
                        a.cmdline
                            .as_deref()
                            .or(f_cmdline.as_deref())
                            .unwrap_or(DEFAULT_CMDLINE),
                    )?,
                }
            }
            (None, Some(image), _) => {
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
            (
                None,
                None,
                Some(BootSource::Kernel {
                    kernel,
                    initrd,
                    cmdline,
                }),
            ) => BootSource::Kernel {
                kernel: validate_file("kernel", kernel)?,
                initrd: a
                    .initrd
                    .or(initrd)
                    .map(|p| validate_file("initrd", p))
                    .transpose()?,
                // A config without "params" (like Android's microdroid.json) gets the default.
                cmdline: validate_cmdline(a.cmdline.as_deref().unwrap_or(if cmdline.is_empty() {
                    DEFAULT_CMDLINE
                } else {
                    &cmdline
                }))?,
            },
            (None, None, Some(BootSource::Firmware { image })) => {
                if a.initrd.is_some() || a.cmdline.is_some() {
                    return Err(ConfigError::NotWithFirmware {
                        flag: "--initrd/--cmdline",
                    });
                }
                BootSource::Firmware {
                    image: validate_file("bootloader", image)?,
                }
            }
            _ => return Err(ConfigError::NoBootSource),
        };
        let mut disks = file_disks;
        disks.extend(a.ordered_disks);
        if disks.len() > MAX_DISKS {
            return Err(ConfigError::TooManyDisks(disks.len()));
        }
        Ok(VmConfig {
            boot,
            mem_mib: validate_mem(a.mem.or(file_mem).unwrap_or(DEFAULT_MEM_MIB))?,
            vcpus: validate_vcpus(a.cpus.or(file_vcpus.map(u64::from)).unwrap_or(1))?,
            serial: OutputTarget::parse("--serial", &a.serial)?,
            log: OutputTarget::parse("--log", &a.log)?,
            console_in: InputSource::parse(&a.console_in)?,
            disks,
            mmio_cmdline: a.mmio_cmdline,
            vsock: a.vsock.as_deref().map(VsockConfig::parse).transpose()?,
            output_limit: validate_output_limit(a.output_limit)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<VmConfig, String> {
        let cli = parse_from(args).map_err(|e| e.to_string())?;
        let Some(Command::Run(run)) = cli.command else {
            return Err("not run".into());
        };
        VmConfig::try_from(*run).map_err(|e| e.to_string())
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
        assert_eq!(c.output_limit, 64 << 20);
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
        for bad in ["0", "-1", "1048577", "x"] {
            assert!(
                parse(&["micro-vmm", "run", "--kernel", exe, "--output-limit", bad]).is_err(),
                "--output-limit {bad}"
            );
        }
        let c = parse(&["micro-vmm", "run", "--kernel", exe, "--output-limit", "2"]).unwrap();
        assert_eq!(c.output_limit, 2 << 20);
    }

    #[test]
    fn create_partition_arguments() {
        let cli = parse_from([
            "micro-vmm",
            "create-partition",
            "--type",
            "instance",
            "/i",
            "10M",
        ])
        .unwrap();
        let Some(Command::CreatePartition { kind, path, size }) = cli.command else {
            panic!("not create-partition");
        };
        assert_eq!(
            (kind, path, size),
            (PartitionType::Instance, "/i".into(), 10 << 20)
        );
        let cli = parse_from(["micro-vmm", "create-partition", "/r", "4096"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::CreatePartition {
                kind: PartitionType::Raw,
                size: 4096,
                ..
            })
        ));
        assert!(parse_from(["micro-vmm", "create-partition", "-t", "qcow2", "/r", "1"]).is_err());
        assert!(parse_from(["micro-vmm", "create-partition", "/r", "10X"]).is_err());
        assert!(parse_from(["micro-vmm", "create-partition", "/r"]).is_err());
    }

    #[test]
    fn disk_options() {
        let p = |s: &str| parse_disk_arg(std::ffi::OsStr::new(s), true);
        assert_eq!(p("/x").unwrap(), DiskConfig::image("/x", true));
        // An unknown key stays part of the path (a path may contain commas).
        assert_eq!(
            p("/x,size=3").unwrap(),
            DiskConfig::image("/x,size=3", true)
        );
        for (bad, why) in [
            ("/x,format=qcow2", "not a known format"),
            ("/x,format=raw,format=raw", "twice"),
            ("/x,allow-block-devices=yes", "expected true or false"),
            (",format=raw", "no path"),
        ] {
            let e = p(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn disks_keep_command_line_order() {
        let exe = std::env::current_exe().unwrap();
        let exe = exe.to_str().unwrap();
        let c = parse(&[
            "micro-vmm",
            "run",
            "--kernel",
            exe,
            "--rwdisk",
            "/a",
            "--disk",
            "/b",
            "--rwdisk",
            "/c",
        ])
        .unwrap();
        let img = |p: &str, writable| DiskConfig::image(p, writable);
        assert_eq!(
            c.disks,
            vec![img("/a", true), img("/b", false), img("/c", true)]
        );
        let c = parse(&[
            "micro-vmm",
            "run",
            "--kernel",
            exe,
            "--rwdisk",
            "/a,format=composite,allow-block-devices=true",
            "--disk",
            "/b,c,format=raw",
        ])
        .unwrap();
        assert_eq!(
            c.disks,
            vec![
                DiskConfig::Image {
                    path: "/a".into(),
                    writable: true,
                    format: Some(ImageFormat::Composite),
                    allow_block_devices: true,
                },
                DiskConfig::Image {
                    path: "/b,c".into(),
                    writable: false,
                    format: Some(ImageFormat::Raw),
                    allow_block_devices: false,
                },
            ]
        );
        let too_many: Vec<String> = (0..=MAX_DISKS).map(|i| format!("--disk=/d{i}")).collect();
        let mut args = vec!["micro-vmm", "run", "--kernel", exe];
        args.extend(too_many.iter().map(String::as_str));
        assert!(parse(&args).is_err());
    }
}
