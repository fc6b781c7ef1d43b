//! Guest memory: anonymous mappings (vm-memory) registered with KVM as memory slots.

use kvm_bindings::{KVM_MEM_READONLY, kvm_userspace_memory_region};
use kvm_ioctls::VmFd;
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::VmmError;

pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// Maps `ranges` (`(start, size)`) of guest memory.
pub fn create(ranges: &[(u64, u64)]) -> Result<GuestMemoryMmap, VmmError> {
    let mut r = Vec::with_capacity(ranges.len());
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    for (start, size) in sorted {
        let size = usize::try_from(size).map_err(|_| VmmError::Memory(format!("{size} bytes")))?;
        r.push((GuestAddress(start), size));
    }
    GuestMemoryMmap::from_ranges(&r).map_err(|e| VmmError::Memory(e.to_string()))
}

/// Registers every region with KVM, one slot each; regions starting at or above
/// `readonly_from` are read-only to the guest (firmware ROM).
pub fn register(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    readonly_from: Option<u64>,
) -> Result<(), VmmError> {
    for (slot, region) in mem.iter().enumerate() {
        let start = region.start_addr().raw_value();
        let readonly = readonly_from.is_some_and(|r| start >= r);
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|e| VmmError::Memory(e.to_string()))?;
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: if readonly { KVM_MEM_READONLY } else { 0 },
            guest_phys_addr: start,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the host range [host, host + len) is a live mapping owned by `mem`, which
        // the VMM keeps alive (and never unmaps) for as long as the VM exists.
        unsafe { vm.set_user_memory_region(r) }.map_err(VmmError::RegisterMemory)?;
    }
    Ok(())
}
