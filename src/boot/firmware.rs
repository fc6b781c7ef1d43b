//! `--bios`: a raw firmware image at the top of the 32-bit address space, as on a PC, with
//! its last 128 KiB also visible just below 1 MiB (the legacy BIOS window).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use vm_memory::{Bytes, GuestAddress};

use super::layout::{FIRMWARE_LOW_ALIAS_SIZE, FIRMWARE_MAX_SIZE, HIMEM_START, MMIO_HOLE_END};
use super::{BootError, mem_err};
use crate::vmm::memory::GuestMemoryMmap;

/// Reads a firmware image, checking its size first.
pub fn read_firmware(path: &Path) -> Result<Vec<u8>, BootError> {
    let read_err = |source| BootError::FirmwareRead {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    if size == 0 || size > FIRMWARE_MAX_SIZE {
        return Err(BootError::FirmwareSize {
            path: path.to_path_buf(),
            size,
            max: FIRMWARE_MAX_SIZE,
        });
    }
    let mut image = Vec::with_capacity(size as usize);
    file.take(FIRMWARE_MAX_SIZE)
        .read_to_end(&mut image)
        .map_err(read_err)?;
    Ok(image)
}

/// Guest address where an image of `len` bytes starts so that it ends at 4 GiB.
pub fn firmware_base(len: u64) -> u64 {
    MMIO_HOLE_END - len
}

/// Copies the image to its high window (which must already be in `mem`) and its tail to the
/// low alias below 1 MiB.
pub fn load_firmware(mem: &GuestMemoryMmap, image: &[u8]) -> Result<(), BootError> {
    let len = image.len() as u64;
    mem.write_slice(image, GuestAddress(firmware_base(len)))
        .map_err(mem_err("firmware"))?;
    let alias = len.min(FIRMWARE_LOW_ALIAS_SIZE) as usize;
    let tail = &image[image.len() - alias..];
    mem.write_slice(tail, GuestAddress(HIMEM_START - alias as u64))
        .map_err(mem_err("firmware low alias"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked() {
        let p = std::env::temp_dir().join(format!("mvmm-fw-{}", std::process::id()));
        std::fs::write(&p, b"").unwrap();
        assert!(matches!(
            read_firmware(&p),
            Err(BootError::FirmwareSize { size: 0, .. })
        ));
        std::fs::write(&p, [0xf4u8; 4096]).unwrap();
        assert_eq!(read_firmware(&p).unwrap().len(), 4096);
        std::fs::remove_file(&p).unwrap();
        assert!(read_firmware(Path::new("/nonexistent")).is_err());
    }

    #[test]
    fn image_is_mapped_high_and_low() {
        let image: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
        let base = firmware_base(image.len() as u64);
        let mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 2 << 20),
            (GuestAddress(base), image.len()),
        ])
        .unwrap();
        load_firmware(&mem, &image).unwrap();
        let reset_vector: u8 = mem.read_obj(GuestAddress(0xffff_fff0)).unwrap();
        assert_eq!(reset_vector, image[image.len() - 16]);
        let low: u8 = mem.read_obj(GuestAddress(0xffff0)).unwrap();
        assert_eq!(low, image[image.len() - 16]);
        // Only the last 128 KiB are aliased below 1 MiB.
        let below: u8 = mem.read_obj(GuestAddress(0xe0000)).unwrap();
        assert_eq!(below, image[image.len() - 128 * 1024]);
        let untouched: u8 = mem.read_obj(GuestAddress(0xdffff)).unwrap();
        assert_eq!(untouched, 0);
    }
}
