//! ACPI tables (RSDP, XSDT, FADT, MADT, DSDT) built with `acpi_tables` and placed in the BIOS
//! area below 1 MiB. Debian's kernels find CPUs (MADT) and devices (DSDT) only this way.

use acpi_tables::Aml;
use acpi_tables::aml;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, MADT, ProcessorLocalApic,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use vm_memory::{Bytes, GuestAddress};

use super::layout::{ACPI_END, ACPI_START, IOAPIC_START, LAPIC_START};
use super::{BootError, mem_err};
use crate::devices::acpi_power::{
    RESET_PORT, RESET_VALUE, SLEEP_CONTROL_PORT, SLEEP_STATUS_PORT, SLP_TYP_S5,
};
use crate::devices::pvpanic::PVPANIC_PORT;
use crate::devices::serial::{COM1, COM2, SerialPortInfo};
use crate::vmm::memory::GuestMemoryMmap;

const OEM_ID: [u8; 6] = *b"MVMM  ";
const OEM_REVISION: u32 = 1;
/// MADT flags bit 0: the platform also has dual 8259 PICs (KVM's irqchip does).
const MADT_PCAT_COMPAT: u8 = 1;
/// IA-PC boot architecture flags: no VGA (bit 2), no CMOS RTC (bit 5). Bit 1 (8042) is clear,
/// so Linux does not probe a keyboard controller; the 0x64 reset line still works.
const IAPC_BOOT_ARCH: u16 = (1 << 2) | (1 << 5);

/// A virtio-mmio device window, described in the DSDT as `LNRO0005`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDeviceInfo {
    pub addr: u64,
    pub len: u64,
    pub irq: u32,
}

/// What the tables describe.
pub struct AcpiConfig<'a> {
    pub vcpus: u8,
    pub virtio_mmio: &'a [MmioDeviceInfo],
}

fn table_id(sig: &[u8; 4]) -> [u8; 8] {
    let mut id = *b"MVMM    ";
    id[4..].copy_from_slice(sig);
    id
}

fn serial_device(name: &str, uid: u8, port: &SerialPortInfo) -> Vec<u8> {
    let io = aml::IO::new(port.base, port.base, 1, 8);
    let irq = aml::Interrupt::new(true, true, false, false, port.irq);
    let crs = aml::ResourceTemplate::new(vec![&io, &irq]);
    let mut out = Vec::new();
    aml::Device::new(
        name.into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501")),
            &aml::Name::new("_UID".into(), &uid),
            &aml::Name::new("_CRS".into(), &crs),
        ],
    )
    .to_aml_bytes(&mut out);
    out
}

/// The DSDT's AML: CPUs, the two serial ports, pvpanic, virtio-mmio devices, and `_S5_`.
pub fn dsdt_aml(cfg: &AcpiConfig) -> Vec<u8> {
    let mut sb = Vec::new();
    for i in 0..cfg.vcpus {
        let name = format!("C{i:03X}");
        aml::Device::new(
            name.as_str().into(),
            vec![
                &aml::Name::new("_HID".into(), &"ACPI0007"),
                &aml::Name::new("_UID".into(), &i),
            ],
        )
        .to_aml_bytes(&mut sb);
    }
    sb.extend(serial_device("COM1", 1, &COM1));
    sb.extend(serial_device("COM2", 2, &COM2));
    let pvpanic_io = aml::IO::new(PVPANIC_PORT, PVPANIC_PORT, 1, 1);
    let pvpanic_crs = aml::ResourceTemplate::new(vec![&pvpanic_io]);
    aml::Device::new(
        "PEVT".into(),
        vec![
            &aml::Name::new("_HID".into(), &"QEMU0001"),
            &aml::Name::new("_UID".into(), &0u8),
            &aml::Name::new("_CRS".into(), &pvpanic_crs),
        ],
    )
    .to_aml_bytes(&mut sb);
    for (i, dev) in cfg.virtio_mmio.iter().enumerate() {
        let window = aml::Memory32Fixed::new(true, dev.addr as u32, dev.len as u32);
        let irq = aml::Interrupt::new(true, true, false, false, dev.irq);
        let crs = aml::ResourceTemplate::new(vec![&window, &irq]);
        let name = format!("V{i:03X}");
        let uid = i as u32;
        aml::Device::new(
            name.as_str().into(),
            vec![
                &aml::Name::new("_HID".into(), &"LNRO0005"),
                &aml::Name::new("_UID".into(), &uid),
                &aml::Name::new("_CRS".into(), &crs),
            ],
        )
        .to_aml_bytes(&mut sb);
    }
    let mut out = aml::Scope::raw("\\_SB_".into(), sb);
    aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&SLP_TYP_S5, &SLP_TYP_S5, &0u8, &0u8]),
    )
    .to_aml_bytes(&mut out);
    out
}

fn dsdt(cfg: &AcpiConfig) -> Vec<u8> {
    let mut sdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, table_id(b"DSDT"), OEM_REVISION);
    // Serialized first, appended once: `Sdt` as an `AmlSink` re-checksums on every byte.
    sdt.append_slice(&dsdt_aml(cfg));
    sdt.as_slice().to_vec()
}

fn io_gas(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(port),
    )
}

fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut b = FADTBuilder::new(OEM_ID, table_id(b"FACP"), OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    b.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    b.reset_reg = io_gas(RESET_PORT);
    b.reset_value = RESET_VALUE;
    b.sleep_control_reg = io_gas(SLEEP_CONTROL_PORT);
    b.sleep_status_reg = io_gas(SLEEP_STATUS_PORT);
    let mut out = Vec::new();
    b.finalize().to_aml_bytes(&mut out);
    out
}

fn madt(vcpus: u8) -> Vec<u8> {
    let mut madt = MADT::new(
        OEM_ID,
        table_id(b"APIC"),
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_START as u32),
    );
    for i in 0..vcpus {
        madt.add_structure(ProcessorLocalApic::new(i, i, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(vcpus, IOAPIC_START as u32, 0));
    let mut out = Vec::new();
    madt.to_aml_bytes(&mut out);
    // acpi_tables has no setter for the MADT flags (offset 40); set PCAT_COMPAT and fix the
    // checksum (offset 9).
    out[40] |= MADT_PCAT_COMPAT;
    fix_checksum(&mut out);
    out
}

fn fix_checksum(table: &mut [u8]) {
    table[9] = 0;
    let sum = table.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    table[9] = 0u8.wrapping_sub(sum);
}

fn xsdt(entries: &[u64]) -> Vec<u8> {
    let mut x = XSDT::new(OEM_ID, table_id(b"XSDT"), OEM_REVISION);
    for e in entries {
        x.add_entry(*e);
    }
    let mut out = Vec::new();
    x.to_aml_bytes(&mut out);
    out
}

/// All tables with their guest addresses, RSDP first.
pub struct AcpiTables {
    pub rsdp_addr: u64,
    pub tables: Vec<(u64, Vec<u8>)>,
}

fn align16(v: u64) -> u64 {
    (v + 15) & !15
}

/// Lays the tables out from `ACPI_START`: RSDP, DSDT, FADT, MADT, XSDT.
pub fn build(cfg: &AcpiConfig) -> Result<AcpiTables, BootError> {
    let rsdp_addr = ACPI_START;
    let dsdt_addr = align16(rsdp_addr + Rsdp::len() as u64);
    let dsdt = dsdt(cfg);
    let fadt_addr = align16(dsdt_addr + dsdt.len() as u64);
    let fadt = fadt(dsdt_addr);
    let madt_addr = align16(fadt_addr + fadt.len() as u64);
    let madt = madt(cfg.vcpus);
    let xsdt_addr = align16(madt_addr + madt.len() as u64);
    let xsdt = xsdt(&[fadt_addr, madt_addr]);
    let end = xsdt_addr + xsdt.len() as u64;
    if end > ACPI_END {
        return Err(BootError::AcpiTooLarge((end - ACPI_START) as usize));
    }
    let mut rsdp = Vec::new();
    Rsdp::new(OEM_ID, xsdt_addr).to_aml_bytes(&mut rsdp);
    Ok(AcpiTables {
        rsdp_addr,
        tables: vec![
            (rsdp_addr, rsdp),
            (dsdt_addr, dsdt),
            (fadt_addr, fadt),
            (madt_addr, madt),
            (xsdt_addr, xsdt),
        ],
    })
}

/// Builds the tables and writes them to guest memory; returns the RSDP address.
pub fn write(mem: &GuestMemoryMmap, cfg: &AcpiConfig) -> Result<u64, BootError> {
    let t = build(cfg)?;
    for (addr, bytes) in &t.tables {
        mem.write_slice(bytes, GuestAddress(*addr))
            .map_err(mem_err("ACPI tables"))?;
    }
    Ok(t.rsdp_addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    fn tables(vcpus: u8, mmio: &[MmioDeviceInfo]) -> AcpiTables {
        build(&AcpiConfig {
            vcpus,
            virtio_mmio: mmio,
        })
        .unwrap()
    }

    #[test]
    fn checksums_and_lengths() {
        let t = tables(4, &[]);
        let (_, rsdp) = &t.tables[0];
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[..20]), 0);
        assert_eq!(sum(rsdp), 0);
        for (_, tbl) in &t.tables[1..] {
            let len = u32::from_le_bytes(tbl[4..8].try_into().unwrap()) as usize;
            assert_eq!(len, tbl.len(), "{:?}", std::str::from_utf8(&tbl[..4]));
            assert_eq!(sum(tbl), 0, "{:?}", std::str::from_utf8(&tbl[..4]));
        }
    }

    #[test]
    fn xsdt_points_to_fadt_and_madt_and_fadt_to_dsdt() {
        let t = tables(2, &[]);
        let find = |sig: &[u8]| t.tables.iter().find(|(_, b)| &b[..4] == sig).unwrap();
        let (xsdt_addr, xsdt) = find(b"XSDT");
        let rsdp = &t.tables[0].1;
        assert_eq!(
            u64::from_le_bytes(rsdp[24..32].try_into().unwrap()),
            *xsdt_addr
        );
        let entries: Vec<u64> = xsdt[36..]
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(entries, vec![find(b"FACP").0, find(b"APIC").0]);
        let fadt = &find(b"FACP").1;
        assert_eq!(
            u64::from_le_bytes(fadt[140..148].try_into().unwrap()),
            find(b"DSDT").0
        );
        // Sleep control register: SystemIO at the power device's port.
        assert_eq!(fadt[244], 1);
        assert_eq!(
            u64::from_le_bytes(fadt[248..256].try_into().unwrap()),
            u64::from(SLEEP_CONTROL_PORT)
        );
        assert_eq!(fadt[116], 1);
        assert_eq!(
            u64::from_le_bytes(fadt[120..128].try_into().unwrap()),
            u64::from(RESET_PORT)
        );
        assert_eq!(fadt[128], RESET_VALUE);
        let flags = u32::from_le_bytes(fadt[112..116].try_into().unwrap());
        assert_ne!(flags & (1 << 20), 0, "HW-reduced");
        assert_ne!(flags & (1 << 10), 0, "reset register supported");
    }

    #[test]
    fn madt_lists_every_cpu_and_the_ioapic() {
        for n in [1u8, 2, 7, 254] {
            let t = tables(n, &[]);
            let madt = &t.tables.iter().find(|(_, b)| &b[..4] == b"APIC").unwrap().1;
            assert_eq!(madt[40] & 1, 1);
            let mut lapics = 0;
            let mut ioapic_id = None;
            let mut off = 44;
            while off < madt.len() {
                match madt[off] {
                    0 => {
                        assert_eq!(madt[off + 3], lapics, "apic id");
                        lapics += 1;
                    }
                    1 => ioapic_id = Some(madt[off + 2]),
                    t => panic!("unexpected MADT entry {t}"),
                }
                off += madt[off + 1] as usize;
            }
            assert_eq!(lapics, n);
            assert_eq!(ioapic_id, Some(n));
        }
    }

    #[test]
    fn dsdt_describes_the_devices() {
        let mmio = [MmioDeviceInfo {
            addr: 0xd000_0000,
            len: 0x1000,
            irq: 5,
        }];
        let aml = dsdt_aml(&AcpiConfig {
            vcpus: 3,
            virtio_mmio: &mmio,
        });
        let has = |s: &[u8]| aml.windows(s.len()).any(|w| w == s);
        assert!(has(b"ACPI0007"));
        assert!(has(b"QEMU0001"));
        assert!(has(b"LNRO0005"));
        assert!(has(b"_S5_"));
        assert!(has(b"COM1") && has(b"COM2"));
        assert!(has(b"C002") && !has(b"C003"));
        // PNP0501 as an EISA id.
        assert!(has(&[0x41, 0xd0, 0x05, 0x01]));
    }

    #[test]
    fn the_largest_vm_still_fits_below_1mib() {
        let mmio: Vec<_> = (0..64)
            .map(|i| MmioDeviceInfo {
                addr: 0xd000_0000 + i * 0x1000,
                len: 0x1000,
                irq: 5 + i as u32,
            })
            .collect();
        assert!(
            build(&AcpiConfig {
                vcpus: 254,
                virtio_mmio: &mmio
            })
            .is_ok()
        );
    }
}
