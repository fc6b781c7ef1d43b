//! Guest memory: anonymous mappings (vm-memory) registered with KVM as memory slots, and the
//! view of it that devices get (without the firmware ROM).

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

/// The guest memory devices may reach (DMA): every region except those starting at or above
/// `readonly_from` (the firmware ROM, read-only to the guest through KVM but writable through
/// the host mapping, so it must not be reachable by a descriptor). The regions are shared with
/// `mem`, not copied.
pub fn device_view(
    mem: &GuestMemoryMmap,
    readonly_from: Option<u64>,
) -> Result<GuestMemoryMmap, VmmError> {
    let Some(rom) = readonly_from else {
        return Ok(mem.clone());
    };
    let mut view = mem.clone();
    let roms: Vec<(GuestAddress, u64)> = mem
        .iter()
        .filter(|r| r.start_addr().raw_value() >= rom)
        .map(|r| (r.start_addr(), r.len()))
        .collect();
    for (start, len) in roms {
        view = view
            .remove_region(start, len)
            .map_err(|e| VmmError::Memory(format!("device view without {start:#x?}: {e}")))?
            .0;
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn the_device_view_leaves_out_the_rom_and_shares_the_ram() {
        let rom = 0xffff_0000;
        let mem = create(&[(rom, 0x1_0000), (0, 1 << 20)]).unwrap();
        mem.write_slice(&[0x90; 16], GuestAddress(rom)).unwrap();
        let view = device_view(&mem, Some(rom)).unwrap();
        assert_eq!(view.num_regions(), 1);
        assert!(view.write_slice(&[0; 16], GuestAddress(rom)).is_err());
        assert!(view.find_region(GuestAddress(rom + 0xfff0)).is_none());
        let mut b = [0u8; 16];
        mem.read_slice(&mut b, GuestAddress(rom)).unwrap();
        assert_eq!(b, [0x90; 16]);
        // RAM is the same mapping: what a device writes, the guest sees.
        view.write_slice(&[7; 4], GuestAddress(0x1000)).unwrap();
        let mut r = [0u8; 4];
        mem.read_slice(&mut r, GuestAddress(0x1000)).unwrap();
        assert_eq!(r, [7; 4]);
        // Without firmware the view is all of memory.
        assert_eq!(device_view(&mem, None).unwrap().num_regions(), 2);
    }
}
