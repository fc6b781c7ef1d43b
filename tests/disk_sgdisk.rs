//! The composite GPT disks micro-vmm builds pass `sgdisk -v` (gdisk's own consistency check):
//! built in memory from partitions, and written as a crosvm descriptor by `disk create`, each
//! flattened into one raw file first. Needs `sgdisk` (Debian package `gdisk`); fails if absent.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use micro_vmm::api::{DiskConfig, PartitionConfig};
use micro_vmm::disk::{self, tool};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "mvmm-sgdisk-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn file(&self, name: &str, len: usize, seed: u8) -> PathBuf {
        let p = self.0.join(name);
        let data: Vec<u8> = (0..len).map(|i| (i * 13 + seed as usize) as u8).collect();
        fs::write(&p, data).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn sgdisk(args: &[&str], image: &Path) -> String {
    let out = Command::new("sgdisk")
        .args(args)
        .arg(image)
        .output()
        .expect("sgdisk is not installed (apt-get install gdisk)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "sgdisk {args:?} failed:\n{text}");
    text
}

/// Partitions with odd sizes, an empty file, a writable one, a multi-block one.
fn partitions(dir: &TempDir) -> Vec<PartitionConfig> {
    let p = |label: &str, path: PathBuf, writable: bool| PartitionConfig {
        label: label.into(),
        path,
        writable,
    };
    vec![
        p("payload-metadata", dir.file("metadata", 1000, 1), false),
        p("microdroid-apex-0", dir.file("apex0", 123_457, 2), false),
        p("empty", dir.file("empty", 0, 0), false),
        p("vm-instance", dir.file("instance.img", 10 << 20, 3), true),
        p("microdroid-apk", dir.file("apk", 4096, 4), false),
        p("microdroid-apk-idsig", dir.file("idsig", 1, 5), false),
    ]
}

fn check(flat: &Path, labels: &[&str]) {
    let verify = sgdisk(&["-v"], flat);
    assert!(
        verify.contains("No problems found"),
        "sgdisk -v on {flat:?}:\n{verify}"
    );
    assert!(
        !verify.contains("Problem"),
        "sgdisk -v on {flat:?}:\n{verify}"
    );
    // The one expected warning: crosvm's layout starts partitions at LBA 40 (4 KiB aligned),
    // leaving sectors 34..40 unused after the entry array.
    for w in verify.lines().filter(|l| l.contains("Warning")) {
        assert!(
            w.contains("gap between the main partition table"),
            "sgdisk -v on {flat:?}:\n{verify}"
        );
    }
    let print = sgdisk(&["-p"], flat);
    for (i, label) in labels.iter().enumerate() {
        let line = print
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&(i + 1).to_string()))
            .unwrap_or_else(|| panic!("no partition {} in:\n{print}", i + 1));
        assert!(
            line.ends_with(label),
            "partition {}: {line}\n{print}",
            i + 1
        );
        assert!(line.contains("8300"), "not a Linux filesystem: {line}");
    }
}

#[test]
fn built_composite_passes_sgdisk() {
    let dir = TempDir::new("built");
    let parts = partitions(&dir);
    let disk = disk::open(&DiskConfig::Composite {
        partitions: parts.clone(),
        writable: true,
    })
    .unwrap();
    // Copy it out through the DiskBackend, 64 KiB at a time.
    let flat = dir.0.join("flat.img");
    let mut bytes = vec![0u8; disk.len() as usize];
    for (i, chunk) in bytes.chunks_mut(64 << 10).enumerate() {
        disk.read_exact_at(chunk, i as u64 * (64 << 10)).unwrap();
    }
    fs::write(&flat, &bytes).unwrap();
    let labels: Vec<&str> = parts.iter().map(|p| p.label.as_str()).collect();
    check(&flat, &labels);
}

#[test]
fn created_descriptor_passes_sgdisk() {
    let dir = TempDir::new("created");
    let parts = partitions(&dir);
    let entries: Vec<String> = parts
        .iter()
        .map(|p| {
            format!(
                r#"{{"label":"{}","path":"{}","writable":{}}}"#,
                p.label,
                p.path.file_name().unwrap().to_str().unwrap(),
                p.writable
            )
        })
        .collect();
    let spec = dir.0.join("spec.json");
    fs::write(
        &spec,
        format!(r#"{{"partitions":[{}]}}"#, entries.join(",")),
    )
    .unwrap();
    let out = dir.0.join("composite.img");
    tool::create(&spec, &out).unwrap();
    let size = disk::open(&DiskConfig::image(out.clone(), false))
        .unwrap()
        .len();
    let flat = dir.0.join("flat.img");
    assert_eq!(tool::flatten(&out, &flat).unwrap(), size);
    assert_eq!(fs::metadata(&flat).unwrap().len(), size);
    let labels: Vec<&str> = parts.iter().map(|p| p.label.as_str()).collect();
    check(&flat, &labels);

    // inspect agrees with sgdisk on where the partitions are.
    let text = tool::inspect(&out).unwrap();
    println!("{text}");
    let print = sgdisk(&["-p"], &flat);
    for n in 1..=parts.len() {
        let sg: Vec<&str> = print
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&n.to_string()))
            .unwrap()
            .split_whitespace()
            .collect();
        let ours: Vec<&str> = text
            .lines()
            .find(|l| {
                let mut w = l.split_whitespace();
                w.next() == Some(&n.to_string()) && w.next() == Some(&parts[n - 1].label)
            })
            .unwrap()
            .split_whitespace()
            .collect();
        // "#  label  first  last ..." vs sgdisk's "#  first  last ..."
        assert_eq!((ours[2], ours[3]), (sg[1], sg[2]), "{text}\n{print}");
    }
}

#[test]
fn single_empty_partition_passes_sgdisk() {
    let dir = TempDir::new("empty");
    let disk = disk::open(&DiskConfig::Composite {
        partitions: vec![PartitionConfig {
            label: "only".into(),
            path: dir.file("e", 0, 0),
            writable: false,
        }],
        writable: false,
    })
    .unwrap();
    let mut bytes = vec![0u8; disk.len() as usize];
    disk.read_exact_at(&mut bytes, 0).unwrap();
    let flat = dir.0.join("flat.img");
    fs::write(&flat, &bytes).unwrap();
    check(&flat, &["only"]);
}
