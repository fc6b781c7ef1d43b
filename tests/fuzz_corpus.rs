//! The fuzz targets' seed corpora (`fuzz/corpus/<target>/`) replayed through their bodies
//! (`micro_vmm::fuzz_entry`) on stable Rust, so CI runs every seed and every crash the
//! fuzzer found and that was saved as a regression seed.
//!
//! The seeds are written by `write_seeds` below:
//! `cargo test --test fuzz_corpus -- --ignored write_seeds` (rewrites `fuzz/corpus/*/seed-*`).

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use micro_vmm::api::PartitionConfig;
use micro_vmm::disk::gpt::{self, GptEntry, LINUX_FILESYSTEM_GUID, NAME_UNITS};
use micro_vmm::fuzz_entry::TARGETS;
use micro_vmm::payload::metadata::Metadata;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn every_target_has_a_corpus_and_replays_it() {
    for (name, body) in TARGETS {
        let dir = corpus_dir(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{name}: no corpus at {}: {e}", dir.display()));
        let mut n = 0;
        for e in entries {
            let path = e.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            body(&data);
            n += 1;
        }
        assert!(n > 0, "{name}: the corpus at {} is empty", dir.display());
    }
}

#[test]
fn every_fuzz_crate_target_is_listed() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml"))
            .unwrap();
    let bins: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "micro-vmm-fuzz")
        .collect();
    let listed: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        bins, listed,
        "fuzz/Cargo.toml and fuzz_entry::TARGETS differ"
    );
}

// ---- seeds ----

fn le32(v: u32) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// A u32-length-prefixed item (the APK Signature Scheme's framing).
fn lp(b: &[u8]) -> Vec<u8> {
    let mut v = le32(b.len() as u32);
    v.extend_from_slice(b);
    v
}

fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in files {
        w.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// `zip` with an APK Signing Block holding one v2 (or v3) signer before its central
/// directory.
fn signed_zip(zip: &[u8], block_id: u32) -> Vec<u8> {
    let digest = [le32(0x0103), lp(&[0xab; 32])].concat();
    let mut signed_data = [lp(&lp(&digest)), lp(&lp(b"certificate")), lp(&[])].concat();
    let mut signer = Vec::new();
    if block_id == 0xf053_68c0 {
        signed_data = [
            lp(&lp(&digest)),
            lp(&lp(b"certificate")),
            le32(24),
            le32(u32::MAX),
            lp(&[]),
        ]
        .concat();
        signer.extend(lp(&signed_data));
        signer.extend(le32(24));
        signer.extend(le32(u32::MAX));
    } else {
        signer.extend(lp(&signed_data));
    }
    signer.extend(lp(&lp(&[le32(0x0103), lp(b"signature")].concat())));
    signer.extend(lp(b"public key"));
    let value = lp(&lp(&signer));
    let mut pair = (value.len() as u64 + 4).to_le_bytes().to_vec();
    pair.extend(le32(block_id));
    pair.extend(value);
    let size = (pair.len() + 8 + 16) as u64;
    let mut block = size.to_le_bytes().to_vec();
    block.extend(&pair);
    block.extend(size.to_le_bytes());
    block.extend(b"APK Sig Block 42");
    // The end of central directory record is the last 22 bytes (no comment).
    let eocd = zip.len() - 22;
    let cd_at = u32::from_le_bytes(zip[eocd + 16..eocd + 20].try_into().unwrap()) as usize;
    let mut out = zip[..cd_at].to_vec();
    out.extend(&block);
    out.extend(&zip[cd_at..]);
    let eocd = out.len() - 22;
    out[eocd + 16..eocd + 20].copy_from_slice(&((cd_at + block.len()) as u32).to_le_bytes());
    out
}

fn gpt_image() -> Vec<u8> {
    let mut name = [0u16; NAME_UNITS];
    for (u, c) in name.iter_mut().zip("payload".encode_utf16()) {
        *u = c;
    }
    let entry = GptEntry {
        type_guid: LINUX_FILESYSTEM_GUID,
        unique_guid: uuid::Uuid::from_u128(0x1234),
        first_lba: 40,
        last_lba: 47,
        attributes: 0,
        name,
    };
    let img = gpt::build(uuid::Uuid::from_u128(0x5678), &[entry], 24576).unwrap();
    let mut disk = img.header.clone();
    disk.resize(24576, 0x11);
    disk.extend(&img.footer);
    assert_eq!(disk.len() as u64, img.disk_size);
    disk
}

/// A crosvm composite descriptor over two partition files (which do not exist when it is
/// replayed: the paths are in a temporary directory).
fn composite_descriptor() -> Vec<u8> {
    // A fixed name, so the seed bytes do not change from run to run.
    let dir = std::env::temp_dir().join("mvmm-fuzz-seed-composite");
    std::fs::create_dir_all(&dir).unwrap();
    let mut parts = Vec::new();
    for (label, writable) in [("a", false), ("b", true)] {
        let path = dir.join(label);
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        parts.push(PartitionConfig {
            label: label.into(),
            path,
            writable,
        });
    }
    let out = dir.join("disk.img");
    micro_vmm::disk::cdisk::write_composite(&parts, &out).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    bytes
}

fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let payload_config =
        std::fs::read(root.join("resources/examples/hello/assets/vm_config.json")).unwrap();
    let apk = zip_of(&[
        ("assets/vm_config.json", &payload_config),
        ("lib/x86_64/payload", b"\x7fELF"),
    ]);
    let descriptor = composite_descriptor();
    let idsig = {
        let dir = std::env::temp_dir().join(format!("mvmm-idsig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.apk");
        std::fs::write(&p, signed_zip(&apk, 0x7109_871a)).unwrap();
        let bytes = micro_vmm::payload::idsig::build_idsig(&p)
            .unwrap()
            .to_bytes()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        bytes
    };
    let w = |b: &[u8]| b.to_vec();
    // Byte programs for the structured targets (see each target's `Input` reads).
    let u64b = |v: u64| v.to_le_bytes().to_vec();
    vec![
        (
            "apk_signing_block",
            vec![signed_zip(&apk, 0x7109_871a), signed_zip(&apk, 0xf053_68c0), apk.clone()],
        ),
        ("apk_zip", vec![apk.clone(), zip_of(&[("a", b"b")])]),
        ("cdisk", vec![descriptor.clone(), w(b"composite_disk\x1d")]),
        (
            "composite_io",
            vec![
                // Three components (file rw, memory, zeros), then reads and writes.
                w(&[2, 0, 16, 1, 3, 0, 0, 0, 8, 2, 1, 0, 4, 3, 0, 0, 0, 0, 1, 0, 0, 16, 0, 1, 0, 0, 0, 2, 0x81, 0, 0, 0, 4]),
                w(&[5, 0, 2, 9, 2, 16, 0, 0, 2, 7, 3, 0, 0, 0, 1, 1, 1, 0, 1, 0, 1, 0, 2, 0, 0, 3, 0, 0, 0, 0, 16, 1, 0, 0, 0, 16]),
            ],
        ),
        (
            "control_protocol",
            vec![w(
                b"{\"id\":1,\"method\":\"version\"}\n{\"id\":2,\"method\":\"status\"}\n\
                  {\"id\":\"s\",\"method\":\"stop\",\"params\":{\"timeout_ms\":500}}\n\
                  {\"id\":4,\"method\":\"connect_vsock\",\"params\":{\"port\":5000}}\n\
                  {\"id\":5,\"method\":\"pause\"}\n{\"id\":6,\"method\":\"subscribe\"}\nnot json\n",
            )],
        ),
        (
            "disk_open",
            vec![
                vec![0u8; 1024],
                descriptor,
                w(b"QFI\xfb\0\0\0\x03"),
                w(b"\x3a\xff\x26\xed"),
                w(b"\x28\xb5\x2f\xfd"),
            ],
        ),
        ("gpt", vec![gpt_image()]),
        ("idsig", vec![idsig]),
        (
            "lifecycle",
            vec![w(
                b"{\"event\":\"hello\",\"version\":1}\n{\"event\":\"started\"}\n{\"event\":\"ready\"}\n\
                  {\"event\":\"finished\",\"exit_code\":7}\n\
                  {\"event\":\"error\",\"code\":\"payload_verification_failed\",\"message\":\"x\"}\n\
                  {\"request\":\"shutdown\"}\nMICRODROID_PAYLOAD_HAS_CHANGED\n",
            )],
        ),
        ("metadata", vec![Metadata::default().encode_framed().unwrap()]),
        (
            "mmio_transport",
            vec![
                // Initialize (every value the usual one), queue a read request, notify.
                [vec![1, 7, 0], vec![0; 18], vec![5, 0, 2, 0, 1, 2, 2, 8, 0]].concat(),
                // Register reads, a write request, notify, reset.
                [vec![0, 6, 0, 0, 1, 6, 3, 0, 1, 7, 0], vec![0; 18], vec![5, 0, 1, 1, 3, 1, 8, 0, 9]]
                    .concat(),
            ],
        ),
        ("payload_config", vec![payload_config]),
        (
            "pio_bus",
            vec![
                // "hi" to COM1, read LSR, host input, i8042 reset, S5, ACPI reset, pvpanic.
                [vec![1, 0, 0], u64b(u64::from(b'h')), vec![1, 0, 0], u64b(u64::from(b'i'))].concat(),
                [vec![0, 0, 5, 3, 0, 0, 5], b"hello".to_vec(), vec![0, 0, 0]].concat(),
                [vec![1, 2, 4], u64b(0xfe)].concat(),
                [vec![1, 3, 0], u64b(0x34)].concat(),
                [vec![1, 4, 0], u64b(6)].concat(),
                [vec![1, 5, 0], u64b(1)].concat(),
            ],
        ),
        (
            "virtio_block",
            vec![
                w(&[1, 5, 0, 1, 1, 2, 1, 6]),          // write one sector
                w(&[0, 5, 0, 2, 0, 0, 2, 3, 6, 7]),    // read two buffers
                w(&[0, 5, 0, 1, 2, 0, 1, 6]),          // GET_ID
                w(&[1, 5, 0, 1, 0, 255, 8, 6]),        // read past the end
                w(&[1, 4, 200, 0, 6, 7, 8, 5, 0, 1, 0, 0, 1, 6]), // corrupt avail index, reset
                w(&[3, 0, 0, 0, 0, 0, 0, 0, 1, 1, 3, 0, 6]),     // a descriptor loop
            ],
        ),
        (
            "vmconfig",
            vec![
                w(br#"{"kernel":"/k","initrd":"i","params":"console=ttyS0","memory_mib":256,"cpu_topology":"one_cpu","disks":[{"image":"/d.img","writable":false},{"partitions":[{"label":"p","path":"/p.img","writable":true}],"writable":true}]}"#),
                w(br#"{"bootloader":"fw.bin","memory_mib":64,"platform_version":"~1.0"}"#),
                w(br#"{"kernel":"k","memory_mib":1}"#),
            ],
        ),
        (
            "vsock_connection",
            vec![
                // Guest request, connected, data both ways, credit, shutdown.
                [vec![1], le32(1000), le32(52), le32(262144), le32(0), vec![0, 19, 1, 4, 3, 5, 255, 255, 8, 19, 1, 0, 0, 19, 1, 13, 3, 10, 19, 1, 11, 19, 0]].concat(),
                // Host-initiated: handshake, local init, request sent, response.
                [vec![0, 1], le32(52), vec![19, 1, 1, 14, 5, 1, 0, 2, 19, 0]].concat(),
            ],
        ),
        (
            "vsock_device",
            vec![
                // Activate with RX buffers, a request, a bad chain, a host connect.
                w(&[5, 0, 1, 4, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 2, 0, 0, 0, 0, 2, 0, 3, 9, 1]),
                w(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 2, 1, 0, 5, 0, 0]),
            ],
        ),
        (
            "vsock_handshake",
            vec![w(b"CONNECT 52\nconnect\t1234\r\nGET / HTTP/1.1\nconnect 4294967296\nconnect 5 2\n")],
        ),
        (
            "vsock_muxer",
            vec![
                // Guest connects to host port 5000, the listener accepts, data both ways.
                w(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 1, 1, 0, 0, 0, 2, 4, 0, 0, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0, 0, 3, 0, 0, 0, 3, 1, 0]),
                // A host program connects and sends CONNECT; the guest answers the request.
                w(&[0, 0, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 1, 0, 0, 3, 1, 0]),
            ],
        ),
    ]
}

/// Writes the seed corpora (run by hand when targets or formats change).
#[test]
#[ignore]
fn write_seeds() {
    let seeds = seeds();
    for (name, _) in TARGETS {
        assert!(
            seeds.iter().any(|(n, _)| n == name),
            "no seeds for target {name}"
        );
    }
    for (name, list) in seeds {
        let dir = corpus_dir(name);
        std::fs::create_dir_all(&dir).unwrap();
        for old in std::fs::read_dir(&dir).unwrap() {
            let p = old.unwrap().path();
            if p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seed-")
            {
                std::fs::remove_file(p).unwrap();
            }
        }
        for (i, s) in list.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), s).unwrap();
        }
    }
}
