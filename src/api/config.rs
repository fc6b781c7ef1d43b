//! Plain, validated VM configuration. Everything here is checked before KVM is touched.

use std::path::PathBuf;

use crate::boot::layout::CMDLINE_MAX_SIZE;

/// Smallest guest RAM accepted (the kernel loads at 1 MiB and needs room above it).
pub const MIN_MEM_MIB: u64 = 16;
/// Largest guest RAM accepted by configuration (1 TiB); the host may allow less.
pub const MAX_MEM_MIB: u64 = 1 << 20;
/// Largest vCPU count: APIC ids are 8-bit and the IOAPIC takes the id after the last CPU.
pub const MAX_VCPUS: u8 = 254;
/// Most virtio-blk disks: one virtio-mmio slot and one IOAPIC pin (5..=23) each.
pub const MAX_DISKS: usize = 16;
/// The limit on each output file (console, log port) when `--output-limit` is not given.
pub const DEFAULT_OUTPUT_LIMIT_MIB: u64 = 64;
/// Largest `--output-limit` (1 TiB).
pub const MAX_OUTPUT_LIMIT_MIB: u64 = 1 << 20;
/// The command line used when `--cmdline` is not given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 panic=-1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--mem {0} MiB is out of range ({MIN_MEM_MIB}..={MAX_MEM_MIB} MiB)")]
    MemSize(u64),
    #[error("--cpus {0} is out of range (1..={MAX_VCPUS})")]
    VcpuCount(u64),
    #[error("the kernel command line is {0} bytes; at most {CMDLINE_MAX_SIZE} are allowed")]
    CmdlineTooLong(usize),
    #[error("the kernel command line contains a NUL byte")]
    CmdlineNul,
    #[error("invalid {flag} value {value:?}: expected {expected}")]
    BadTarget {
        flag: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{flag} cannot be used with --bios")]
    NotWithFirmware { flag: &'static str },
    #[error("give either --kernel or --bios")]
    NoBootSource,
    #[error("invalid --vsock {0}")]
    BadVsock(String),
    #[error("--output-limit {0} MiB is out of range (1..={MAX_OUTPUT_LIMIT_MIB} MiB)")]
    OutputLimit(u64),
    #[error("{0} disks; at most {MAX_DISKS} are supported")]
    TooManyDisks(usize),
    #[error(transparent)]
    ConfigFile(#[from] super::vmconfig::VmConfigError),
    #[error("{what} {path:?}: {reason}")]
    BadFile {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
}

/// What the vCPUs start executing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootSource {
    /// A Linux kernel (bzImage or ELF vmlinux) booted directly.
    Kernel {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: String,
    },
    /// A raw firmware image entered at the reset vector.
    Firmware { image: PathBuf },
}

/// Where a serial port's output goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OutputTarget {
    Stdout,
    File(PathBuf),
    None,
}

impl OutputTarget {
    pub fn parse(flag: &'static str, s: &str) -> Result<Self, ConfigError> {
        match s {
            "stdout" => Ok(OutputTarget::Stdout),
            "none" => Ok(OutputTarget::None),
            _ => match s.strip_prefix("file:") {
                Some(p) if !p.is_empty() => Ok(OutputTarget::File(PathBuf::from(p))),
                _ => Err(ConfigError::BadTarget {
                    flag,
                    value: s.to_string(),
                    expected: "stdout, file:PATH or none",
                }),
            },
        }
    }
}

/// Where the console's input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputSource {
    Stdin,
    None,
}

impl InputSource {
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        match s {
            "stdin" => Ok(InputSource::Stdin),
            "none" => Ok(InputSource::None),
            _ => Err(ConfigError::BadTarget {
                flag: "--console-in",
                value: s.to_string(),
                expected: "stdin or none",
            }),
        }
    }
}

/// One partition of a composite disk: a host file exposed under a GPT label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionConfig {
    pub label: String,
    pub path: PathBuf,
    pub writable: bool,
}

/// A disk the guest sees as a virtio-blk device (`/dev/vda`, `/dev/vdb`, ... in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskConfig {
    /// A whole-disk image: raw, or a crosvm composite descriptor. `format` is what the user
    /// named; without it a read-only image is recognised by its magic and a writable one is
    /// always raw (its bytes are the guest's, docs/disk.md). `allow_block_devices` lets a
    /// composite descriptor name block devices as components.
    Image {
        path: PathBuf,
        writable: bool,
        format: Option<ImageFormat>,
        allow_block_devices: bool,
    },
    /// A composite GPT disk assembled from host files, without copying them.
    Composite {
        partitions: Vec<PartitionConfig>,
        writable: bool,
    },
}

impl DiskConfig {
    /// An image with no format named and no block-device components allowed.
    pub fn image(path: impl Into<PathBuf>, writable: bool) -> DiskConfig {
        DiskConfig::Image {
            path: path.into(),
            writable,
            format: None,
            allow_block_devices: false,
        }
    }
}

/// An image format a user can name (`--rwdisk PATH,format=composite`, vmconfig `"format"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Raw,
    Composite,
}

impl ImageFormat {
    pub fn parse(s: &str) -> Option<ImageFormat> {
        match s {
            "raw" => Some(ImageFormat::Raw),
            "composite" => Some(ImageFormat::Composite),
            _ => None,
        }
    }
}

/// The vsock device: the guest's CID and the host Unix socket it is bridged to
/// (Firecracker's hybrid vsock: host programs connect to `uds`, guest connections to host
/// port P go to `<uds>_<P>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    pub cid: u64,
    pub uds: PathBuf,
}

impl VsockConfig {
    /// Parses `cid=N,uds=PATH`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::BadVsock(format!("{s:?}: {why}"));
        let (mut cid, mut uds) = (None, None);
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("cid", v)) if cid.is_none() => {
                    cid = Some(v.parse::<u64>().map_err(|_| bad("cid is not a number"))?)
                }
                Some(("uds", v)) if uds.is_none() && !v.is_empty() => uds = Some(PathBuf::from(v)),
                _ => return Err(bad("expected cid=N,uds=PATH")),
            }
        }
        let cid = cid.ok_or_else(|| bad("cid= missing"))?;
        let uds = uds.ok_or_else(|| bad("uds= missing"))?;
        // 0, 1 and 2 are the hypervisor, local and host CIDs; u32::MAX is VMADDR_CID_ANY.
        if !(3..u64::from(u32::MAX)).contains(&cid) {
            return Err(bad("cid must be from 3 to 4294967294"));
        }
        let dir = match uds.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(bad("the socket's directory does not exist"));
        }
        Ok(VsockConfig { cid, uds })
    }
}

/// A complete, validated description of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    pub boot: BootSource,
    pub mem_mib: u64,
    pub vcpus: u8,
    /// COM1 (ttyS0): the console.
    pub serial: OutputTarget,
    /// COM2 (ttyS1): the log port.
    pub log: OutputTarget,
    pub console_in: InputSource,
    /// virtio-blk disks, in guest order.
    pub disks: Vec<DiskConfig>,
    /// Also list the virtio-mmio devices on the kernel command line (`virtio_mmio.device=`),
    /// for kernels built with CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES and without ACPI.
    pub mmio_cmdline: bool,
    /// The virtio-vsock device, if any.
    pub vsock: Option<VsockConfig>,
    /// Most bytes of guest output each output file (`file:PATH`) gets (`--output-limit`).
    pub output_limit: u64,
}

impl VmConfig {
    pub fn mem_bytes(&self) -> u64 {
        self.mem_mib << 20
    }
}

pub fn validate_mem(mib: u64) -> Result<u64, ConfigError> {
    if (MIN_MEM_MIB..=MAX_MEM_MIB).contains(&mib) {
        Ok(mib)
    } else {
        Err(ConfigError::MemSize(mib))
    }
}

/// `--output-limit MIB` (default [`DEFAULT_OUTPUT_LIMIT_MIB`]) in bytes.
pub fn validate_output_limit(mib: Option<u64>) -> Result<u64, ConfigError> {
    match mib.unwrap_or(DEFAULT_OUTPUT_LIMIT_MIB) {
        m @ 1..=MAX_OUTPUT_LIMIT_MIB => Ok(m << 20),
        m => Err(ConfigError::OutputLimit(m)),
    }
}

pub fn validate_vcpus(n: u64) -> Result<u8, ConfigError> {
    match u8::try_from(n) {
        Ok(v) if (1..=MAX_VCPUS).contains(&v) => Ok(v),
        _ => Err(ConfigError::VcpuCount(n)),
    }
}

pub fn validate_cmdline(s: &str) -> Result<String, ConfigError> {
    if s.contains('\0') {
        return Err(ConfigError::CmdlineNul);
    }
    // One byte is kept for the terminating NUL.
    if s.len() >= CMDLINE_MAX_SIZE {
        return Err(ConfigError::CmdlineTooLong(s.len()));
    }
    Ok(s.to_string())
}

/// A path the user named must be a readable regular file (checked early so that the error
/// names the flag, not a KVM step).
pub fn validate_file(what: &'static str, path: PathBuf) -> Result<PathBuf, ConfigError> {
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => Ok(path),
        Ok(_) => Err(ConfigError::BadFile {
            what,
            path,
            reason: "not a regular file".into(),
        }),
        Err(e) => Err(ConfigError::BadFile {
            what,
            path,
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_targets() {
        assert_eq!(
            OutputTarget::parse("--serial", "stdout"),
            Ok(OutputTarget::Stdout)
        );
        assert_eq!(
            OutputTarget::parse("--serial", "none"),
            Ok(OutputTarget::None)
        );
        assert_eq!(
            OutputTarget::parse("--log", "file:/tmp/x"),
            Ok(OutputTarget::File("/tmp/x".into()))
        );
        for bad in ["", "file:", "stderr", "File:/x", "tcp:1"] {
            assert!(OutputTarget::parse("--log", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn input_sources() {
        assert_eq!(InputSource::parse("stdin"), Ok(InputSource::Stdin));
        assert_eq!(InputSource::parse("none"), Ok(InputSource::None));
        assert!(InputSource::parse("tty").is_err());
    }

    #[test]
    fn limits() {
        assert_eq!(validate_mem(0), Err(ConfigError::MemSize(0)));
        assert_eq!(validate_mem(15), Err(ConfigError::MemSize(15)));
        assert_eq!(validate_mem(16), Ok(16));
        assert!(validate_mem(MAX_MEM_MIB + 1).is_err());
        assert_eq!(validate_vcpus(0), Err(ConfigError::VcpuCount(0)));
        assert_eq!(validate_vcpus(1), Ok(1));
        assert_eq!(validate_vcpus(254), Ok(254));
        assert!(validate_vcpus(255).is_err());
        assert!(validate_vcpus(u64::MAX).is_err());
        assert!(validate_cmdline(&"a".repeat(CMDLINE_MAX_SIZE)).is_err());
        assert!(validate_cmdline("a\0b").is_err());
        assert!(validate_cmdline("console=ttyS0").is_ok());
    }

    #[test]
    fn vsock_specs() {
        let ok = VsockConfig::parse("cid=3,uds=/tmp/v.sock").unwrap();
        assert_eq!((ok.cid, ok.uds), (3, PathBuf::from("/tmp/v.sock")));
        assert_eq!(VsockConfig::parse("uds=v.sock,cid=42").unwrap().cid, 42);
        for bad in [
            "",
            "cid=2,uds=/tmp/v",
            "cid=4294967295,uds=/tmp/v",
            "cid=x,uds=/tmp/v",
            "cid=3",
            "uds=/tmp/v",
            "cid=3,uds=",
            "cid=3,uds=/nonexistent/dir/v",
            "cid=3,uds=/tmp/v,extra=1",
            "cid=3,cid=4,uds=/tmp/v",
        ] {
            assert!(VsockConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn files() {
        assert!(validate_file("kernel", "/nonexistent/x".into()).is_err());
        assert!(validate_file("kernel", "/".into()).is_err());
        let f = std::env::current_exe().unwrap();
        assert_eq!(validate_file("kernel", f.clone()), Ok(f));
    }
}
