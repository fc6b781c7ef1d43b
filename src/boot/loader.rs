//! Kernel and initrd loading: bzImage (Linux boot protocol, 64-bit entry) and ELF vmlinux
//! (64-bit entry, or the PVH entry when the ELF carries the Xen PVH note).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::BootError;
use super::layout::{CMDLINE_MAX_SIZE, HIMEM_START};
use crate::vmm::memory::GuestMemoryMmap;

/// Offset of the 64-bit entry point from the load address of a bzImage's protected-mode part.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// "HdrS" at 0x202 marks a boot-protocol header.
const HDRS_MAGIC: u32 = 0x5372_6448;
/// Boot protocol 2.06 added `cmdline_size`.
const CMDLINE_SIZE_PROTOCOL: u16 = 0x206;
/// Boot protocol 2.12 added `xloadflags`; bit 0 says the 64-bit entry exists.
const XLF_KERNEL_64: u16 = 1;
/// Where `initrd_addr_max` is not given (protocol < 2.03) the limit is 0x37ffffff.
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;

/// How the bootstrap processor enters the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryPoint {
    /// 64-bit long mode, paging on, `rsi` = zero page (Linux 64-bit boot protocol).
    Long64(GuestAddress),
    /// 32-bit protected mode, paging off, `ebx` = `hvm_start_info` (PVH boot ABI).
    Pvh(GuestAddress),
}

/// What a loaded kernel tells the rest of the boot.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    pub entry: EntryPoint,
    /// One past the highest byte the kernel image occupies.
    pub kernel_end: u64,
    /// The bzImage setup header, to be copied into the zero page.
    pub setup_header: Option<setup_header>,
    /// Largest command line (without NUL) the kernel accepts.
    pub cmdline_max: usize,
    /// Highest address the initrd may end at (inclusive).
    pub initrd_addr_max: u64,
}

fn open(what: &'static str, path: &Path) -> Result<File, BootError> {
    File::open(path).map_err(|source| BootError::Open {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Loads a kernel, telling the format by its magic bytes.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, BootError> {
    let mut file = open("kernel", path)?;
    let mut magic = [0u8; 4];
    let mut hdrs = [0u8; 4];
    let is_elf = file.read_exact(&mut magic).is_ok() && magic == *b"\x7fELF";
    let is_bzimage = !is_elf
        && file.seek(SeekFrom::Start(0x202)).is_ok()
        && file.read_exact(&mut hdrs).is_ok()
        && u32::from_le_bytes(hdrs) == HDRS_MAGIC;
    let kernel_err = |source| BootError::Kernel {
        path: path.to_path_buf(),
        source,
    };
    let highmem = Some(GuestAddress(HIMEM_START));
    if is_elf {
        let res = Elf::load(mem, None, &mut file, highmem).map_err(kernel_err)?;
        let entry = match res.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(addr) => EntryPoint::Pvh(addr),
            _ => EntryPoint::Long64(res.kernel_load),
        };
        Ok(LoadedKernel {
            entry,
            kernel_end: res.kernel_end,
            setup_header: None,
            cmdline_max: CMDLINE_MAX_SIZE - 1,
            initrd_addr_max: u64::from(u32::MAX),
        })
    } else if is_bzimage {
        let res = BzImage::load(mem, Some(GuestAddress(HIMEM_START)), &mut file, highmem)
            .map_err(kernel_err)?;
        let hdr = res.setup_header.ok_or_else(|| BootError::BadKernel {
            path: path.to_path_buf(),
            reason: "no setup header".into(),
        })?;
        let version = { hdr.version };
        let xloadflags = { hdr.xloadflags };
        if version < 0x20c || xloadflags & XLF_KERNEL_64 == 0 {
            return Err(BootError::BadKernel {
                path: path.to_path_buf(),
                reason: format!(
                    "boot protocol {}.{:02} without a 64-bit entry point (needs 2.12 and \
                     XLF_KERNEL_64)",
                    version >> 8,
                    version & 0xff
                ),
            });
        }
        let cmdline_max = if version >= CMDLINE_SIZE_PROTOCOL {
            ({ hdr.cmdline_size } as usize).min(CMDLINE_MAX_SIZE - 1)
        } else {
            255
        };
        let initrd_addr_max = hdr.initrd_addr_max;
        let initrd_addr_max = match initrd_addr_max {
            0 => DEFAULT_INITRD_ADDR_MAX,
            v => u64::from(v),
        };
        Ok(LoadedKernel {
            entry: EntryPoint::Long64(GuestAddress(res.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET)),
            kernel_end: res.kernel_end,
            setup_header: Some(hdr),
            cmdline_max,
            initrd_addr_max,
        })
    } else {
        Err(BootError::UnknownKernelFormat {
            path: path.to_path_buf(),
        })
    }
}

/// Where an initrd went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitrdRegion {
    pub addr: u64,
    pub size: u64,
}

/// Picks the initrd's place: page aligned, as high as possible below both the end of low RAM
/// and the kernel's limit, and above the kernel.
pub fn place_initrd(
    size: u64,
    kernel_end: u64,
    low_ram_end: u64,
    initrd_addr_max: u64,
) -> Option<u64> {
    const PAGE: u64 = 4096;
    let top = low_ram_end.min(initrd_addr_max.saturating_add(1));
    let start = top.checked_sub(size)? & !(PAGE - 1);
    let floor = kernel_end.max(HIMEM_START).checked_add(PAGE - 1)? & !(PAGE - 1);
    (start >= floor).then_some(start)
}

/// Loads the initrd at the place [`place_initrd`] picks.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel: &LoadedKernel,
    low_ram_end: u64,
) -> Result<InitrdRegion, BootError> {
    let mut file = open("initrd", path)?;
    let size = file
        .metadata()
        .map_err(|source| BootError::Open {
            what: "initrd",
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let too_large = || BootError::InitrdTooLarge {
        path: path.to_path_buf(),
        size,
        room: low_ram_end
            .min(kernel.initrd_addr_max.saturating_add(1))
            .saturating_sub(kernel.kernel_end.max(HIMEM_START)),
    };
    let addr = place_initrd(size, kernel.kernel_end, low_ram_end, kernel.initrd_addr_max)
        .ok_or_else(too_large)?;
    let len = usize::try_from(size).map_err(|_| too_large())?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, len)
        .map_err(|e| BootError::InitrdRead {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok(InitrdRegion { addr, size })
}

/// Writes the NUL-terminated command line at `addr`.
pub fn load_cmdline(
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    cmdline: &str,
    max: usize,
) -> Result<(), BootError> {
    if cmdline.len() > max {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    let mut bytes = Vec::with_capacity(cmdline.len() + 1);
    bytes.extend_from_slice(cmdline.as_bytes());
    bytes.push(0);
    if addr.0 + bytes.len() as u64 > mem.last_addr().0 {
        return Err(BootError::GuestMemory {
            what: "command line",
            reason: "past the end of memory".into(),
        });
    }
    mem.write_slice(&bytes, addr)
        .map_err(super::mem_err("command line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initrd_goes_high_and_aligned() {
        let a = place_initrd(10_000, 0x20_0000, 0x1000_0000, u64::MAX).unwrap();
        assert_eq!(a % 4096, 0);
        assert!(a + 10_000 <= 0x1000_0000);
        assert!(0x1000_0000 - (a + 10_000) < 4096);
    }

    #[test]
    fn initrd_respects_kernel_limit() {
        let a = place_initrd(0x1000, 0x20_0000, 0x1000_0000, 0x7ff_ffff).unwrap();
        assert!(a + 0x1000 <= 0x800_0000);
    }

    #[test]
    fn initrd_too_large() {
        assert_eq!(
            place_initrd(0x1000_0000, 0x20_0000, 0x1000_0000, u64::MAX),
            None
        );
        assert_eq!(
            place_initrd(u64::MAX, 0x20_0000, 0x1000_0000, u64::MAX),
            None
        );
        // Exactly the room above the kernel fits.
        assert_eq!(
            place_initrd(0x1000, 0x20_0000, 0x20_1000, u64::MAX),
            Some(0x20_0000)
        );
        assert_eq!(place_initrd(0x1001, 0x20_0000, 0x20_1000, u64::MAX), None);
    }

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 32 << 20)]).unwrap()
    }

    fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("mvmm-loader-{}-{name}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn garbage_kernels_are_rejected() {
        let m = mem();
        let empty = temp_file("empty", b"");
        assert!(matches!(
            load_kernel(&m, &empty),
            Err(BootError::UnknownKernelFormat { .. })
        ));
        let junk = temp_file("junk", &[0x5a; 4096]);
        assert!(matches!(
            load_kernel(&m, &junk),
            Err(BootError::UnknownKernelFormat { .. })
        ));
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        let bad_elf = temp_file("badelf", &elf);
        assert!(matches!(
            load_kernel(&m, &bad_elf),
            Err(BootError::Kernel { .. })
        ));
        let mut bz = vec![0u8; 1024];
        bz[0x202..0x206].copy_from_slice(&HDRS_MAGIC.to_le_bytes());
        let bad_bz = temp_file("badbz", &bz);
        assert!(load_kernel(&m, &bad_bz).is_err());
        assert!(matches!(
            load_kernel(&m, Path::new("/nonexistent/kernel")),
            Err(BootError::Open { .. })
        ));
        for p in [empty, junk, bad_elf, bad_bz] {
            std::fs::remove_file(p).unwrap();
        }
    }

    #[test]
    fn cmdline_limits() {
        let m = mem();
        assert!(load_cmdline(&m, GuestAddress(0x20000), "abc", 3).is_ok());
        let mut buf = [0u8; 4];
        m.read_slice(&mut buf, GuestAddress(0x20000)).unwrap();
        assert_eq!(&buf, b"abc\0");
        assert!(matches!(
            load_cmdline(&m, GuestAddress(0x20000), "abcd", 3),
            Err(BootError::CmdlineTooLong { len: 4, max: 3 })
        ));
    }
}
