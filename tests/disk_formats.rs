//! A guest-written composite descriptor in a writable image is served as raw bytes (issue 12):
//! `--rwdisk` never probes; only a format the user names makes it a composite.

mod common;

use common::probe;
use micro_vmm::disk::cdisk::{CDISK_MAGIC, proto};
use prost::Message;

/// A descriptor naming `target` READ_WRITE, padded inside the protobuf with an unknown
/// length-delimited field (field 15) to `size` bytes.
fn guest_written_descriptor(target: &str, size: usize) -> Vec<u8> {
    let msg = proto::CompositeDisk {
        version: 2,
        component_disks: vec![proto::ComponentDisk {
            file_path: target.into(),
            offset: 0,
            read_write_capability: proto::ReadWriteCapability::ReadWrite as i32,
            file_offset: 0,
        }],
        length: 4096,
    };
    let mut b = CDISK_MAGIC.to_vec();
    msg.encode(&mut b).unwrap();
    let pad = size - b.len() - 4;
    b.push(15 << 3 | 2);
    b.extend_from_slice(&[
        (pad & 0x7f) as u8 | 0x80,
        ((pad >> 7) & 0x7f) as u8 | 0x80,
        (pad >> 14) as u8,
    ]);
    b.resize(size, 0);
    b
}

#[test]
fn rwdisk_with_a_guest_written_descriptor_is_raw() {
    let dir = std::env::temp_dir().join(format!("mvmm-disk-formats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The descriptor names a host file that does not exist: opening it as a composite fails,
    // so a successful boot shows the image was taken as raw bytes.
    let target = dir.join("no-such-host-file.img");
    let img = dir.join("guest.img");
    std::fs::write(
        &img,
        guest_written_descriptor(target.to_str().unwrap(), 64 << 10),
    )
    .unwrap();
    let img = img.to_str().unwrap().to_string();

    let o = probe("probe-elf64.elf", "exit=poweroff", &["--rwdisk", &img]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(!target.exists());

    // The same bytes are a real descriptor: named as a composite, it reaches for the file.
    let named = format!("{img},format=composite");
    let o = probe("probe-elf64.elf", "exit=poweroff", &["--rwdisk", &named]);
    assert_eq!(o.code, Some(35), "{o:?}");
    assert!(o.stderr.contains("no-such-host-file.img"), "{o:?}");

    // A bad option is a clear argument error.
    let bad = format!("{img},format=qcow2");
    let o = probe("probe-elf64.elf", "exit=poweroff", &["--rwdisk", &bad]);
    assert_eq!(o.code, Some(35), "{o:?}");
    assert!(o.stderr.contains("not a known format"), "{o:?}");
    assert!(!o.stderr.contains("panicked"), "{o:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
