//! Boot-time vCPU state: the GDT, identity page tables, and the registers for the 64-bit Linux
//! entry and the 32-bit PVH entry.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use super::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PD_COUNT, PD_START, PDPT_START, PML4_START,
};
use super::{BootError, mem_err};
use crate::vmm::memory::GuestMemoryMmap;

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_NW: u64 = 0x2000_0000;
const X86_CR0_CD: u64 = 0x4000_0000;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// A GDT descriptor from flags (access byte in the low 8 bits, then the flag nibble in bits
/// 12..16), base and limit, as in the Intel SDM vol. 3 §3.4.5.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The `kvm_segment` KVM needs for a descriptor at GDT index `index`.
pub fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let base = ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base,
        limit,
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// GDT for the 64-bit entry: null, 64-bit code (0x08), data (0x10), TSS (0x18).
pub const GDT_LONG_MODE: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

/// GDT for the PVH entry: null, 32-bit flat code (0x08), flat data (0x10), 32-bit TSS (0x18).
pub const GDT_PVH: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xc09b, 0, 0xffff_ffff),
    gdt_entry(0xc093, 0, 0xffff_ffff),
    gdt_entry(0x008b, 0, 0x67),
];

fn write_gdt(mem: &GuestMemoryMmap, gdt: &[u64]) -> Result<(), BootError> {
    for (i, e) in gdt.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(BOOT_GDT_START + (i as u64) * 8))
            .map_err(mem_err("GDT"))?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(mem_err("IDT"))
}

/// Identity-maps the first 4 GiB with 2 MiB pages (enough for any kernel entry and for tiny
/// guests that touch the LAPIC).
pub fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    mem.write_obj(PDPT_START | 0x03, GuestAddress(PML4_START))
        .map_err(mem_err("PML4"))?;
    for pd in 0..PD_COUNT {
        let pd_addr = PD_START + pd * 0x1000;
        mem.write_obj(pd_addr | 0x03, GuestAddress(PDPT_START + pd * 8))
            .map_err(mem_err("PDPT"))?;
        for i in 0..512u64 {
            let phys = ((pd << 9) + i) << 21;
            mem.write_obj(phys | 0x83, GuestAddress(pd_addr + i * 8))
                .map_err(mem_err("page directory"))?;
        }
    }
    Ok(())
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> BootError {
    move |source| BootError::Kvm { what, source }
}

fn set_segments(sregs: &mut kvm_sregs, gdt: &[u64; 4]) {
    let code = segment_from_gdt(gdt[1], 1);
    let data = segment_from_gdt(gdt[2], 2);
    let tss = segment_from_gdt(gdt[3], 3);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(gdt) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
}

fn set_fpu(vcpu: &VcpuFd) -> Result<(), BootError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm_err("FPU state"))
}

/// Linux 64-bit boot protocol: long mode, identity paging, `rsi` = zero page.
pub fn setup_long_mode(
    vcpu: &VcpuFd,
    mem: &GuestMemoryMmap,
    entry: GuestAddress,
    zero_page: GuestAddress,
) -> Result<(), BootError> {
    write_gdt(mem, &GDT_LONG_MODE)?;
    write_page_tables(mem)?;
    let mut sregs = vcpu.get_sregs().map_err(kvm_err("reading sregs"))?;
    set_segments(&mut sregs, &GDT_LONG_MODE);
    sregs.cr3 = PML4_START;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.cr0 = (sregs.cr0 & !(X86_CR0_CD | X86_CR0_NW)) | X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs).map_err(kvm_err("long-mode sregs"))?;
    let regs = kvm_regs {
        rip: entry.0,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: zero_page.0,
        rflags: 0x2,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm_err("registers"))?;
    set_fpu(vcpu)
}

/// PVH boot ABI: 32-bit protected mode, paging off, `ebx` = `hvm_start_info`.
pub fn setup_pvh(
    vcpu: &VcpuFd,
    mem: &GuestMemoryMmap,
    entry: GuestAddress,
    start_info: GuestAddress,
) -> Result<(), BootError> {
    write_gdt(mem, &GDT_PVH)?;
    let mut sregs = vcpu.get_sregs().map_err(kvm_err("reading sregs"))?;
    set_segments(&mut sregs, &GDT_PVH);
    sregs.cr0 = (sregs.cr0 & !(X86_CR0_CD | X86_CR0_NW | X86_CR0_PG)) | X86_CR0_PE | X86_CR0_ET;
    sregs.cr4 = 0;
    sregs.efer = 0;
    vcpu.set_sregs(&sregs).map_err(kvm_err("PVH sregs"))?;
    let regs = kvm_regs {
        rip: entry.0,
        rbx: start_info.0,
        rflags: 0x2,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm_err("registers"))?;
    set_fpu(vcpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_segments() {
        let cs = segment_from_gdt(GDT_LONG_MODE[1], 1);
        assert_eq!(
            (cs.selector, cs.l, cs.db, cs.g, cs.present),
            (0x08, 1, 0, 1, 1)
        );
        assert_eq!(
            (cs.type_, cs.s, cs.limit, cs.base),
            (0xb, 1, 0xffff_ffff, 0)
        );
        let ds = segment_from_gdt(GDT_LONG_MODE[2], 2);
        assert_eq!((ds.selector, ds.type_, ds.db, ds.l), (0x10, 3, 1, 0));
        let tr = segment_from_gdt(GDT_LONG_MODE[3], 3);
        assert_eq!((tr.selector, tr.type_, tr.s), (0x18, 0xb, 0));
        let null = segment_from_gdt(GDT_LONG_MODE[0], 0);
        assert_eq!(null.unusable, 1);
    }

    #[test]
    fn pvh_segments_are_flat_32bit() {
        let cs = segment_from_gdt(GDT_PVH[1], 1);
        assert_eq!((cs.base, cs.limit, cs.db, cs.l), (0, 0xffff_ffff, 1, 0));
        let tr = segment_from_gdt(GDT_PVH[3], 3);
        assert_eq!((tr.limit, tr.g, tr.type_), (0x67, 0, 0xb));
    }

    #[test]
    fn gdt_entry_matches_known_values() {
        // The values Linux and Firecracker use.
        assert_eq!(gdt_entry(0xa09b, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(0xc093, 0, 0xfffff), 0x00cf_9300_0000_ffff);
    }

    #[test]
    fn page_tables_identity_map_4gib() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_page_tables(&mem).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPT_START | 3);
        let pdpt3: u64 = mem.read_obj(GuestAddress(PDPT_START + 24)).unwrap();
        assert_eq!(pdpt3, (PD_START + 0x3000) | 3);
        let last: u64 = mem
            .read_obj(GuestAddress(PD_START + 0x3000 + 511 * 8))
            .unwrap();
        assert_eq!(last, 0xffe0_0000 | 0x83);
    }
}
