//! The structures a kernel reads at entry: Linux's zero page (`boot_params`) for the 64-bit
//! boot protocol, and `hvm_start_info` with its memory map and module list for PVH.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{ByteValued, Bytes, GuestAddress};

use super::layout::{CMDLINE_START, E820Entry, PVH_INFO_START, ZERO_PAGE_START};
use super::loader::InitrdRegion;
use super::{BootError, mem_err};
use crate::vmm::memory::GuestMemoryMmap;

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
/// "Undefined" boot loader id: not one of the registered loaders.
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x100_0000;
/// `loadflags` bit 0: the protected-mode code is loaded at 1 MiB (LOADED_HIGH).
const LOADED_HIGH: u8 = 0x01;
/// Boot protocol limit on zero-page e820 entries.
const E820_MAX_ZEROPAGE: usize = 128;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// What both boot protocols pass to the kernel.
pub struct BootInfo<'a> {
    pub cmdline_len: usize,
    pub initrd: Option<InitrdRegion>,
    pub e820: &'a [E820Entry],
    pub rsdp: u64,
}

/// Builds the zero page: the bzImage's own setup header when there is one, otherwise the
/// minimal header a vmlinux needs.
pub fn build_zero_page(
    hdr: Option<setup_header>,
    info: &BootInfo,
) -> Result<boot_params, BootError> {
    let mut params = boot_params::default();
    if let Some(h) = hdr {
        params.hdr = h;
    } else {
        params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
        params.hdr.header = KERNEL_HDR_MAGIC;
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.loadflags |= LOADED_HIGH;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.ext_cmd_line_ptr = 0;
    params.hdr.cmdline_size = info.cmdline_len as u32 + 1;
    if let Some(rd) = info.initrd {
        params.hdr.ramdisk_image = rd.addr as u32;
        params.ext_ramdisk_image = (rd.addr >> 32) as u32;
        params.hdr.ramdisk_size = rd.size as u32;
        params.ext_ramdisk_size = (rd.size >> 32) as u32;
    }
    params.acpi_rsdp_addr = info.rsdp;
    if info.e820.len() > E820_MAX_ZEROPAGE {
        return Err(BootError::GuestMemory {
            what: "e820 map",
            reason: format!("{} entries (at most {E820_MAX_ZEROPAGE})", info.e820.len()),
        });
    }
    for (slot, e) in params.e820_table.iter_mut().zip(info.e820) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.e820_entries = info.e820.len() as u8;
    Ok(params)
}

/// Writes the zero page; returns its address (for `rsi`).
pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    hdr: Option<setup_header>,
    info: &BootInfo,
) -> Result<GuestAddress, BootError> {
    let params = build_zero_page(hdr, info)?;
    let addr = GuestAddress(ZERO_PAGE_START);
    mem.write_obj(params, addr).map_err(mem_err("zero page"))?;
    Ok(addr)
}

/// Writes `hvm_start_info`, then the module list (the initrd), then the memory map; returns
/// the start-info address (for `ebx`).
pub fn write_pvh_start_info(
    mem: &GuestMemoryMmap,
    info: &BootInfo,
) -> Result<GuestAddress, BootError> {
    let start = GuestAddress(PVH_INFO_START);
    let modlist = start.0 + std::mem::size_of::<hvm_start_info>() as u64;
    let memmap = modlist + std::mem::size_of::<hvm_modlist_entry>() as u64;
    let mut si = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        rsdp_paddr: info.rsdp,
        memmap_paddr: memmap,
        memmap_entries: info.e820.len() as u32,
        ..Default::default()
    };
    if let Some(rd) = info.initrd {
        si.nr_modules = 1;
        si.modlist_paddr = modlist;
        let m = hvm_modlist_entry {
            paddr: rd.addr,
            size: rd.size,
            ..Default::default()
        };
        mem.write_obj(PvhModule(m), GuestAddress(modlist))
            .map_err(mem_err("PVH module list"))?;
    }
    for (i, e) in info.e820.iter().enumerate() {
        let entry = hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        };
        let at = memmap + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
        mem.write_obj(PvhMemmap(entry), GuestAddress(at))
            .map_err(mem_err("PVH memory map"))?;
    }
    mem.write_obj(PvhStartInfo(si), start)
        .map_err(mem_err("PVH start info"))?;
    Ok(start)
}

// linux-loader implements `ByteValued` for `hvm_start_info` only; these transparent wrappers
// give the other two PVH structures the same.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct PvhStartInfo(hvm_start_info);
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct PvhModule(hvm_modlist_entry);
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct PvhMemmap(hvm_memmap_table_entry);
// SAFETY: plain-old-data `repr(C)` structs of integers with no padding (their sizes, 56, 32 and
// 24 bytes, are asserted by linux-loader), so any byte pattern is a valid value.
unsafe impl ByteValued for PvhStartInfo {}
// SAFETY: as above.
unsafe impl ByteValued for PvhModule {}
// SAFETY: as above.
unsafe impl ByteValued for PvhMemmap {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::layout::RamLayout;

    #[test]
    fn zero_page_fields() {
        let e820 = RamLayout::new(512 << 20).e820();
        let info = BootInfo {
            cmdline_len: 12,
            initrd: Some(InitrdRegion {
                addr: 0x1f00_0000,
                size: 0x1234,
            }),
            e820: &e820,
            rsdp: 0xe0000,
        };
        let p = build_zero_page(None, &info).unwrap();
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.header }, KERNEL_HDR_MAGIC);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ p.hdr.cmdline_size }, 13);
        assert_eq!({ p.hdr.ramdisk_image }, 0x1f00_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 0x1234);
        assert_eq!({ p.acpi_rsdp_addr }, 0xe0000);
        assert_eq!(p.e820_entries as usize, e820.len());
        let first = p.e820_table[0];
        assert_eq!(
            ({ first.addr }, { first.size }, { first.r#type }),
            (0, 0x9fc00, 1)
        );
    }

    #[test]
    fn pvh_start_info_layout() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let e820 = RamLayout::new(16 << 20).e820();
        let info = BootInfo {
            cmdline_len: 3,
            initrd: Some(InitrdRegion {
                addr: 0x80_0000,
                size: 77,
            }),
            e820: &e820,
            rsdp: 0xe0000,
        };
        let at = write_pvh_start_info(&mem, &info).unwrap();
        let si: hvm_start_info = mem.read_obj(at).unwrap();
        assert_eq!(si.magic, XEN_HVM_START_MAGIC);
        assert_eq!(si.nr_modules, 1);
        assert_eq!(si.memmap_entries as usize, e820.len());
        let m: PvhModule = mem.read_obj(GuestAddress(si.modlist_paddr)).unwrap();
        assert_eq!((m.0.paddr, m.0.size), (0x80_0000, 77));
        let last = si.memmap_paddr + (e820.len() as u64 - 1) * 24;
        let e: PvhMemmap = mem.read_obj(GuestAddress(last)).unwrap();
        assert_eq!(e.0.addr, e820.last().unwrap().addr);
        // Everything stays inside the page reserved for it.
        assert!(last + 24 <= PVH_INFO_START + 0x1000);
    }
}
