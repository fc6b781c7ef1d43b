//! Per-vCPU CPUID: KVM's supported set with the APIC ids, the CPU count and the hypervisor
//! bit filled in. (Without CPUID set, Linux triple-faults in startup_64.)

use kvm_bindings::{CpuId, kvm_cpuid_entry2};
use kvm_ioctls::VcpuFd;

use super::BootError;

const LEAF_FEATURES: u32 = 0x1;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_EXT_TOPOLOGY_V2: u32 = 0x1f;
/// Leaf 1 ECX bit 31: running under a hypervisor.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX bit 28: more than one logical processor (EBX[23:16] is valid).
const EDX_HTT: u32 = 1 << 28;

/// Patches one CPUID entry for vCPU `id` of `count`.
pub fn patch_entry(entry: &mut kvm_cpuid_entry2, id: u8, count: u8) {
    match entry.function {
        LEAF_FEATURES => {
            entry.ebx =
                (entry.ebx & 0x0000_ffff) | (u32::from(id) << 24) | (u32::from(count) << 16);
            entry.ecx |= ECX_HYPERVISOR;
            if count > 1 {
                entry.edx |= EDX_HTT;
            }
        }
        LEAF_EXT_TOPOLOGY | LEAF_EXT_TOPOLOGY_V2 => entry.edx = u32::from(id),
        _ => {}
    }
}

/// Applies the patched copy of `base` to `vcpu`.
pub fn set_cpuid(vcpu: &VcpuFd, base: &CpuId, id: u8, count: u8) -> Result<(), BootError> {
    let mut cpuid = base.clone();
    for entry in cpuid.as_mut_slice() {
        patch_entry(entry, id, count);
    }
    vcpu.set_cpuid2(&cpuid).map_err(|source| BootError::Kvm {
        what: "CPUID",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf1_gets_apic_id_count_and_hypervisor_bit() {
        let mut e = kvm_cpuid_entry2 {
            function: 1,
            ebx: 0xff00_0800,
            ..Default::default()
        };
        patch_entry(&mut e, 3, 4);
        assert_eq!(e.ebx >> 24, 3);
        assert_eq!((e.ebx >> 16) & 0xff, 4);
        assert_eq!(e.ebx & 0xffff, 0x0800);
        assert_ne!(e.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e.edx & EDX_HTT, 0);
    }

    #[test]
    fn topology_leaves_get_x2apic_id() {
        for function in [0xb, 0x1f] {
            let mut e = kvm_cpuid_entry2 {
                function,
                edx: 99,
                ..Default::default()
            };
            patch_entry(&mut e, 7, 8);
            assert_eq!(e.edx, 7);
        }
        let mut other = kvm_cpuid_entry2 {
            function: 0x8000_0008,
            eax: 0x3030,
            ..Default::default()
        };
        patch_entry(&mut other, 7, 8);
        assert_eq!(other.eax, 0x3030);
    }
}
