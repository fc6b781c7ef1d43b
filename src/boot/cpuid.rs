//! Per-vCPU CPUID: KVM's supported set, normalized so that the topology the guest reads from
//! CPUID matches the MADT (one package of `count` single-thread cores, APIC id = vCPU index)
//! on Intel and AMD alike, with the hypervisor bit and the TSC-deadline timer KVM emulates.
//! (Without CPUID set, Linux triple-faults in startup_64.)
//!
//! The leaves and bits follow what Firecracker's CPUID normalization sets for the same
//! purpose; KVM_GET_SUPPORTED_CPUID leaves topology to the VMM (its leaf 0xB has no levels,
//! its AMD leaves 0x8000_0008/0x8000_001E describe no core count), so a guest that believed it
//! would place both vCPUs of a 2-vCPU VM on one core.

use kvm_bindings::{CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, kvm_cpuid_entry2};
use kvm_ioctls::VcpuFd;

use super::BootError;

const LEAF_VENDOR: u32 = 0x0;
const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_EXT_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_EXT_FEATURES: u32 = 0x8000_0001;
const LEAF_AMD_SIZES: u32 = 0x8000_0008;
const LEAF_AMD_CACHE_TOPOLOGY: u32 = 0x8000_001d;
const LEAF_AMD_EXT_APIC_ID: u32 = 0x8000_001e;

/// Leaf 1 ECX bit 15: PDCM (IA32_PERF_CAPABILITIES), which KVM does not give the guest.
const ECX_PDCM: u32 = 1 << 15;
/// Leaf 1 ECX bit 24: the LAPIC timer has TSC-deadline mode (KVM emulates it, but reports it
/// through KVM_CAP_TSC_DEADLINE_TIMER rather than in the supported CPUID).
const ECX_TSC_DEADLINE: u32 = 1 << 24;
/// Leaf 1 ECX bit 31: running under a hypervisor.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX bit 28: more than one logical processor (EBX[23:16] is valid).
const EDX_HTT: u32 = 1 << 28;
/// Leaf 0x8000_0001 ECX bit 22: AMD topology extensions (leaves 0x8000_001D/1E).
const ECX_TOPOEXT: u32 = 1 << 22;
/// Leaf 0xB level types.
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

const AMD_VENDOR: [u32; 3] = [
    u32::from_le_bytes(*b"Auth"),
    u32::from_le_bytes(*b"enti"),
    u32::from_le_bytes(*b"cAMD"),
];

/// How the vCPUs are laid out: `count` cores of one thread each in one package.
#[derive(Debug, Clone, Copy)]
pub struct Topology {
    pub count: u8,
    /// KVM emulates the TSC-deadline timer (KVM_CAP_TSC_DEADLINE_TIMER).
    pub tsc_deadline: bool,
}

impl Topology {
    /// Bits of the APIC id that number the cores of the package (`count` rounded up to a
    /// power of two).
    fn core_bits(self) -> u32 {
        u32::from(self.count.max(1))
            .next_power_of_two()
            .trailing_zeros()
    }
}

fn is_amd(base: &[kvm_cpuid_entry2]) -> bool {
    base.iter()
        .find(|e| e.function == LEAF_VENDOR)
        .is_some_and(|e| [e.ebx, e.edx, e.ecx] == AMD_VENDOR)
}

/// Patches one CPUID entry for vCPU `id`.
pub fn patch_entry(entry: &mut kvm_cpuid_entry2, id: u8, topo: Topology, amd: bool) {
    let count = u32::from(topo.count.max(1));
    let id32 = u32::from(id);
    match entry.function {
        LEAF_FEATURES => {
            // EBX: CLFLUSH line size (8 x 8 bytes), addressable logical processors (a power of
            // two), initial APIC id.
            entry.ebx =
                (entry.ebx & 0xff) | (8 << 8) | ((1 << topo.core_bits()) << 16) | (id32 << 24);
            entry.ecx &= !ECX_PDCM;
            entry.ecx |= ECX_HYPERVISOR;
            if topo.tsc_deadline {
                entry.ecx |= ECX_TSC_DEADLINE;
            }
            if count > 1 {
                entry.edx |= EDX_HTT;
            } else {
                entry.edx &= !EDX_HTT;
            }
        }
        LEAF_CACHE_PARAMS if !amd => {
            // EAX[31:26]: cores per package - 1; EAX[25:14]: logical processors sharing this
            // cache - 1 (one thread per core: private L1/L2, the whole package shares L3).
            let level = (entry.eax >> 5) & 7;
            let sharing = if level >= 3 { count - 1 } else { 0 };
            entry.eax = (entry.eax & 0x3fff) | (sharing << 14) | ((count - 1) << 26);
        }
        LEAF_EXT_TOPOLOGY | LEAF_EXT_TOPOLOGY_V2 => {
            // Subleaf 0: the SMT level (one thread per core); subleaf 1: the core level (the
            // whole package); higher subleaves: invalid.
            let (eax, ebx, level) = match entry.index {
                0 => (0, 1, LEVEL_SMT),
                1 => (topo.core_bits(), count, LEVEL_CORE),
                _ => (0, 0, 0),
            };
            entry.eax = eax;
            entry.ebx = ebx;
            entry.ecx = (level << 8) | (entry.index & 0xff);
            entry.edx = id32;
        }
        // AMD: the legacy core count (NC and the APIC id bits that number cores), without
        // the topology extensions whose leaves KVM leaves empty.
        LEAF_EXT_FEATURES if amd => entry.ecx &= !ECX_TOPOEXT,
        LEAF_AMD_SIZES if amd => {
            entry.ecx = (entry.ecx & !0xf0ff) | (topo.core_bits() << 12) | (count - 1);
        }
        _ => {}
    }
}

/// The CPUID for vCPU `id`: `base` patched, with leaf 0xB's core level added where KVM left
/// it out and AMD's topology-extension leaves removed.
pub fn for_vcpu(base: &CpuId, id: u8, topo: Topology) -> Result<CpuId, BootError> {
    let amd = is_amd(base.as_slice());
    let mut entries: Vec<kvm_cpuid_entry2> = base
        .as_slice()
        .iter()
        .filter(|e| !(amd && matches!(e.function, LEAF_AMD_CACHE_TOPOLOGY | LEAF_AMD_EXT_APIC_ID)))
        .copied()
        .collect();
    for leaf in [LEAF_EXT_TOPOLOGY, LEAF_EXT_TOPOLOGY_V2] {
        let has_leaf = entries.iter().any(|e| e.function == leaf);
        let has_core_level = entries.iter().any(|e| e.function == leaf && e.index == 1);
        if has_leaf && !has_core_level {
            entries.push(kvm_cpuid_entry2 {
                function: leaf,
                index: 1,
                flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                ..Default::default()
            });
        }
    }
    for e in &mut entries {
        patch_entry(e, id, topo, amd);
    }
    CpuId::from_entries(&entries).map_err(|_| BootError::Cpuid {
        entries: entries.len(),
    })
}

/// Applies [`for_vcpu`] to `vcpu`.
pub fn set_cpuid(vcpu: &VcpuFd, base: &CpuId, id: u8, topo: Topology) -> Result<(), BootError> {
    let cpuid = for_vcpu(base, id, topo)?;
    vcpu.set_cpuid2(&cpuid).map_err(|source| BootError::Kvm {
        what: "CPUID",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: Topology = Topology {
        count: 2,
        tsc_deadline: true,
    };

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    fn vendor(amd: bool) -> kvm_cpuid_entry2 {
        let regs: [u32; 3] = if amd {
            AMD_VENDOR
        } else {
            [
                u32::from_le_bytes(*b"Genu"),
                u32::from_le_bytes(*b"ineI"),
                u32::from_le_bytes(*b"ntel"),
            ]
        };
        kvm_cpuid_entry2 {
            ebx: regs[0],
            edx: regs[1],
            ecx: regs[2],
            ..Default::default()
        }
    }

    fn find(c: &CpuId, function: u32, index: u32) -> Option<kvm_cpuid_entry2> {
        c.as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .copied()
    }

    #[test]
    fn leaf1_gets_apic_id_count_tsc_deadline_and_hypervisor_bit() {
        let mut e = kvm_cpuid_entry2 {
            function: 1,
            ebx: 0xff00_0820,
            ecx: ECX_PDCM,
            ..Default::default()
        };
        patch_entry(
            &mut e,
            3,
            Topology {
                count: 3,
                tsc_deadline: true,
            },
            false,
        );
        assert_eq!(e.ebx >> 24, 3, "APIC id");
        assert_eq!((e.ebx >> 16) & 0xff, 4, "3 vCPUs: 4 addressable ids");
        assert_eq!((e.ebx >> 8) & 0xff, 8, "CLFLUSH size");
        assert_eq!(e.ebx & 0xff, 0x20, "brand index kept");
        assert_ne!(e.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e.ecx & ECX_TSC_DEADLINE, 0);
        assert_eq!(e.ecx & ECX_PDCM, 0);
        assert_ne!(e.edx & EDX_HTT, 0);
        // One vCPU: no HTT; no TSC deadline where KVM lacks it.
        let mut one = kvm_cpuid_entry2 {
            function: 1,
            edx: EDX_HTT,
            ..Default::default()
        };
        patch_entry(
            &mut one,
            0,
            Topology {
                count: 1,
                tsc_deadline: false,
            },
            false,
        );
        assert_eq!(one.edx & EDX_HTT, 0);
        assert_eq!(one.ecx & ECX_TSC_DEADLINE, 0);
        assert_eq!((one.ebx >> 16) & 0xff, 1);
    }

    #[test]
    fn leaf_b_describes_one_thread_per_core_and_the_package() {
        // KVM's leaf 0xB: subleaf 0 only, all zero.
        let base = CpuId::from_entries(&[vendor(false), leaf(0xb, 0)]).unwrap();
        for id in 0..2 {
            let c = for_vcpu(&base, id, TWO).unwrap();
            let smt = find(&c, 0xb, 0).unwrap();
            let core = find(&c, 0xb, 1).expect("core level added");
            assert_eq!(
                (smt.eax, smt.ebx, smt.ecx >> 8, smt.edx),
                (0, 1, 1, u32::from(id))
            );
            assert_eq!(
                (core.eax, core.ebx, core.ecx, core.edx),
                (1, 2, (2 << 8) | 1, u32::from(id))
            );
            assert_ne!(core.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0);
        }
    }

    #[test]
    fn intel_leaf4_counts_cores_and_sharing() {
        let l1d = kvm_cpuid_entry2 {
            function: 4,
            eax: (1 << 5) | 1 | (7 << 26) | (1 << 14),
            ..Default::default()
        };
        let l3 = kvm_cpuid_entry2 {
            function: 4,
            index: 3,
            eax: (3 << 5) | 3,
            ..Default::default()
        };
        let base = CpuId::from_entries(&[vendor(false), l1d, l3]).unwrap();
        let c = for_vcpu(&base, 1, TWO).unwrap();
        let l1d = find(&c, 4, 0).unwrap();
        let l3 = find(&c, 4, 3).unwrap();
        assert_eq!(l1d.eax >> 26, 1, "2 cores per package");
        assert_eq!((l1d.eax >> 14) & 0xfff, 0, "L1 private");
        assert_eq!((l3.eax >> 14) & 0xfff, 1, "L3 shared by both");
        assert_eq!(l1d.eax & 0x3fff, (1 << 5) | 1, "cache type and level kept");
    }

    #[test]
    fn amd_gets_the_legacy_core_count_without_topology_extensions() {
        let ext = kvm_cpuid_entry2 {
            function: LEAF_EXT_FEATURES,
            ecx: ECX_TOPOEXT | 1,
            ..Default::default()
        };
        let sizes = kvm_cpuid_entry2 {
            function: LEAF_AMD_SIZES,
            ecx: 0x1_0000 | 0x7003,
            ..Default::default()
        };
        let base = CpuId::from_entries(&[
            vendor(true),
            ext,
            sizes,
            leaf(LEAF_AMD_CACHE_TOPOLOGY, 0),
            leaf(LEAF_AMD_EXT_APIC_ID, 0),
        ])
        .unwrap();
        let c = for_vcpu(
            &base,
            2,
            Topology {
                count: 4,
                tsc_deadline: true,
            },
        )
        .unwrap();
        assert_eq!(find(&c, LEAF_EXT_FEATURES, 0).unwrap().ecx, 1);
        let s = find(&c, LEAF_AMD_SIZES, 0).unwrap().ecx;
        assert_eq!(s & 0xff, 3, "NC = 4 cores - 1");
        assert_eq!((s >> 12) & 0xf, 2, "2 APIC id bits number the cores");
        assert_eq!(s >> 16, 1, "other bits kept");
        assert!(find(&c, LEAF_AMD_CACHE_TOPOLOGY, 0).is_none());
        assert!(find(&c, LEAF_AMD_EXT_APIC_ID, 0).is_none());
    }

    #[test]
    fn other_leaves_are_left_alone() {
        let mut other = kvm_cpuid_entry2 {
            function: 0x8000_0008,
            eax: 0x3030,
            ecx: 0x1234,
            ..Default::default()
        };
        patch_entry(&mut other, 7, TWO, false);
        assert_eq!((other.eax, other.ecx), (0x3030, 0x1234), "Intel: untouched");
    }
}
