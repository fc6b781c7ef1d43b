//! Everything that prepares guest memory and vCPU state for the first instruction: kernel and
//! firmware loading, boot parameters, the GDT and page tables, CPUID and MSRs, ACPI tables.

pub mod acpi;
pub mod bootparams;
pub mod cpuid;
pub mod firmware;
pub mod layout;
pub mod loader;
pub mod msrs;
pub mod regs;
pub mod reset_vector;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot open {what} {path:?}: {source}")]
    Open {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path:?} is neither a bzImage nor an ELF kernel")]
    UnknownKernelFormat { path: PathBuf },
    #[error("cannot load kernel {path:?}: {source}")]
    Kernel {
        path: PathBuf,
        source: linux_loader::loader::Error,
    },
    #[error("kernel {path:?}: {reason}")]
    BadKernel { path: PathBuf, reason: String },
    #[error(
        "initrd {path:?} ({size} bytes) does not fit in guest memory above the kernel \
         (room: {room} bytes); give the VM more --mem"
    )]
    InitrdTooLarge { path: PathBuf, size: u64, room: u64 },
    #[error("cannot read initrd {path:?} into guest memory: {reason}")]
    InitrdRead { path: PathBuf, reason: String },
    #[error("the command line is {len} bytes but this kernel accepts at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("firmware {path:?} is {size} bytes; it must be 1 byte to {max} bytes")]
    FirmwareSize { path: PathBuf, size: u64, max: u64 },
    #[error("cannot read firmware {path:?}: {source}")]
    FirmwareRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ACPI tables do not fit below 1 MiB ({0} bytes)")]
    AcpiTooLarge(usize),
    #[error("writing {what} to guest memory failed: {reason}")]
    GuestMemory { what: &'static str, reason: String },
    #[error("KVM rejected {what}: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("setting {what} failed: only {set} of {wanted} entries were accepted")]
    PartialMsrs {
        what: &'static str,
        set: usize,
        wanted: usize,
    },
    #[error("the normalized CPUID has {entries} entries, more than KVM accepts")]
    Cpuid { entries: usize },
}

/// Shorthand for a failed guest-memory write.
pub(crate) fn mem_err(what: &'static str) -> impl FnOnce(vm_memory::GuestMemoryError) -> BootError {
    move |e| BootError::GuestMemory {
        what,
        reason: e.to_string(),
    }
}
