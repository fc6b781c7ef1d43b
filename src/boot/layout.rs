//! The guest-physical memory map: where micro-vmm puts RAM, boot structures, ACPI tables and
//! the 32-bit MMIO hole. Pure arithmetic, no KVM.

/// First byte above the real-mode area (the "EBDA" starts here on a PC).
pub const EBDA_START: u64 = 0x9_fc00;
/// Start of high memory: where kernels are loaded.
pub const HIMEM_START: u64 = 0x10_0000;

/// Boot GDT (long-mode or PVH segments).
pub const BOOT_GDT_START: u64 = 0x500;
/// Boot IDT (empty, limit 7).
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`, followed by the module list and the memory map.
pub const PVH_INFO_START: u64 = 0x6000;
/// Linux `boot_params` ("zero page").
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Boot stack pointer handed to the kernel.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity page tables: PML4, PDPT, then four page directories (first 4 GiB, 2 MiB pages).
pub const PML4_START: u64 = 0x9000;
pub const PDPT_START: u64 = 0xa000;
pub const PD_START: u64 = 0xb000;
/// Number of page directories (one per GiB of identity mapping).
pub const PD_COUNT: u64 = 4;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x2_0000;
/// Largest command line accepted for kernels that do not state their own limit.
pub const CMDLINE_MAX_SIZE: usize = 2048;

/// ACPI tables live in the BIOS area below 1 MiB, where Linux also scans for the RSDP.
pub const ACPI_START: u64 = 0xe_0000;
/// The ACPI tables end before the real-mode reset vector.
pub const ACPI_END: u64 = RESET_VECTOR;
/// `f000:fff0`: where a real-mode jump to the BIOS reset entry lands (Linux's last-resort
/// reboot path); micro-vmm puts a small stub there (see `boot::reset_vector`).
pub const RESET_VECTOR: u64 = 0xf_fff0;

/// The 32-bit MMIO hole: no RAM from here to 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// Virtio-mmio device windows (later issues) start here.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
pub const IOAPIC_START: u64 = 0xfec0_0000;
pub const LAPIC_START: u64 = 0xfee0_0000;
/// KVM's identity-map page and TSS (needed on Intel without unrestricted guest).
pub const KVM_IDENTITY_MAP_START: u64 = 0xfeff_c000;
pub const KVM_TSS_START: u64 = 0xfeff_d000;
/// Firmware (`--bios`) occupies the top of the 4 GiB space, at most this much.
pub const FIRMWARE_MAX_SIZE: u64 = 16 << 20;
/// The part of the firmware that is also visible below 1 MiB (ending at 1 MiB).
pub const FIRMWARE_LOW_ALIAS_SIZE: u64 = 128 << 10;

/// E820 entry types (as Linux and the PVH memory map use them).
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// One entry of the guest's memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// Where guest RAM goes for a given size: below the MMIO hole, then from 4 GiB up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamLayout {
    /// Bytes of RAM below the hole, starting at 0.
    pub low: u64,
    /// Bytes of RAM from 4 GiB.
    pub high: u64,
}

impl RamLayout {
    pub fn new(mem_bytes: u64) -> Self {
        let low = mem_bytes.min(MMIO_HOLE_START);
        RamLayout {
            low,
            high: mem_bytes - low,
        }
    }

    /// `(start, size)` of each RAM range.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        let mut r = vec![(0, self.low)];
        if self.high > 0 {
            r.push((MMIO_HOLE_END, self.high));
        }
        r
    }

    /// One past the highest RAM address below 4 GiB.
    pub fn low_end(&self) -> u64 {
        self.low
    }

    /// The memory map handed to a kernel: RAM, the legacy hole below 1 MiB (where the ACPI
    /// tables are), the 32-bit MMIO hole, and RAM above 4 GiB.
    pub fn e820(&self) -> Vec<E820Entry> {
        let mut map = vec![
            E820Entry {
                addr: 0,
                size: EBDA_START,
                kind: E820_RAM,
            },
            E820Entry {
                addr: EBDA_START,
                size: HIMEM_START - EBDA_START,
                kind: E820_RESERVED,
            },
        ];
        if self.low > HIMEM_START {
            map.push(E820Entry {
                addr: HIMEM_START,
                size: self.low - HIMEM_START,
                kind: E820_RAM,
            });
        }
        map.push(E820Entry {
            addr: MMIO_HOLE_START,
            size: MMIO_HOLE_END - MMIO_HOLE_START,
            kind: E820_RESERVED,
        });
        if self.high > 0 {
            map.push(E820Entry {
                addr: MMIO_HOLE_END,
                size: self.high,
                kind: E820_RAM,
            });
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_all_low() {
        let l = RamLayout::new(256 << 20);
        assert_eq!(l.ranges(), vec![(0, 256 << 20)]);
        let map = l.e820();
        assert_eq!(map.len(), 4);
        assert_eq!(map[2].addr, HIMEM_START);
        assert_eq!(map[2].size, (256 << 20) - HIMEM_START);
        assert_eq!(map[3].addr, MMIO_HOLE_START);
        assert_eq!(map[3].kind, E820_RESERVED);
    }

    #[test]
    fn large_memory_skips_the_hole() {
        let l = RamLayout::new(5 << 30);
        assert_eq!(l.low, MMIO_HOLE_START);
        assert_eq!(l.high, (5 << 30) - MMIO_HOLE_START);
        assert_eq!(
            l.ranges(),
            vec![(0, MMIO_HOLE_START), (1 << 32, (5 << 30) - MMIO_HOLE_START)]
        );
        let map = l.e820();
        let ram: u64 = map
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        // All RAM but the legacy hole below 1 MiB is described as RAM.
        assert_eq!(ram, (5 << 30) - (HIMEM_START - EBDA_START));
        // No RAM entry touches the hole.
        for e in map.iter().filter(|e| e.kind == E820_RAM) {
            assert!(e.addr + e.size <= MMIO_HOLE_START || e.addr >= MMIO_HOLE_END);
        }
    }

    #[test]
    fn boot_structures_do_not_overlap() {
        let mut regions = [
            (BOOT_GDT_START, 0x20),
            (BOOT_IDT_START, 8),
            (PVH_INFO_START, 0x1000),
            (ZERO_PAGE_START, 0x1000),
            (0x8000, 0x1000),
            (PML4_START, 0x1000),
            (PDPT_START, 0x1000),
            (PD_START, PD_COUNT * 0x1000),
            (CMDLINE_START, CMDLINE_MAX_SIZE as u64),
            (ACPI_START, ACPI_END - ACPI_START),
            (RESET_VECTOR, HIMEM_START - RESET_VECTOR),
        ];
        regions.sort();
        for w in regions.windows(2) {
            assert!(
                w[0].0 + w[0].1 <= w[1].0,
                "{:x?} overlaps {:x?}",
                w[0],
                w[1]
            );
        }
        const { assert!(PD_START + PD_COUNT * 0x1000 <= CMDLINE_START) };
        const { assert!(KVM_TSS_START + 3 * 0x1000 <= MMIO_HOLE_END - FIRMWARE_MAX_SIZE) };
    }
}
