//! A reset-vector stub for directly booted kernels.
//!
//! With hardware-reduced ACPI and no EFI, Linux's default reboot path (`reboot_type` forced to
//! EFI, then BIOS) switches to real mode and jumps to `f000:fff0`, the BIOS reset entry. With
//! no firmware there the CPU would run whatever bytes it finds. On a PC the firmware resets
//! the machine from there, so micro-vmm puts 16 bytes at `0xffff0` that do just that: write
//! the reset value to the FADT reset register (port 0xcf9), then halt.

use vm_memory::{Bytes, GuestAddress};

use super::layout::RESET_VECTOR;
use super::{BootError, mem_err};
use crate::devices::acpi_power::{RESET_PORT, RESET_VALUE};
use crate::vmm::memory::GuestMemoryMmap;

/// Real-mode code: `mov dx, RESET_PORT; mov al, RESET_VALUE; out dx, al; cli; hlt; jmp hlt`.
pub fn stub() -> [u8; 16] {
    let [port_lo, port_hi] = RESET_PORT.to_le_bytes();
    let mut code = [0xf4u8; 16]; // padding: hlt
    let body = [
        0xba,
        port_lo,
        port_hi, // mov dx, RESET_PORT
        0xb0,
        RESET_VALUE, // mov al, RESET_VALUE
        0xee,        // out dx, al
        0xfa,        // cli
        0xf4,        // hlt
        0xeb,
        0xfd, // jmp back to hlt
    ];
    code[..body.len()].copy_from_slice(&body);
    code
}

pub fn write(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    mem.write_slice(&stub(), GuestAddress(RESET_VECTOR))
        .map_err(mem_err("reset vector stub"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stub_writes_the_reset_register() {
        let s = stub();
        assert_eq!(&s[..3], &[0xba, 0xf9, 0x0c]);
        assert_eq!(&s[3..5], &[0xb0, 0x06]);
        assert_eq!(s[5], 0xee);
        // The jmp at offset 8 goes back to the hlt at offset 7.
        assert_eq!(8 + 2 + (s[9] as i8) as isize, 7);
    }
}
