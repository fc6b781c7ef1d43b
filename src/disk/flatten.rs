//! Copying a disk into one sparse raw file, and rendering a disk's partition table for people.

use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::composite::{CompositeDisk, Origin, Source};
use super::gpt;
use super::{DiskBackend, DiskError, Image, SECTOR_SIZE};

/// Copy granularity; all-zero blocks of this size are skipped (left as holes).
pub const FLATTEN_BLOCK: usize = 64 << 10;

/// Copies all of `disk` into `out` at the same offsets, skipping all-zero blocks, then sets
/// the file's length to the disk's and syncs it. `out` must read as zeros where nothing is
/// written (an empty file). Returns the number of bytes (the disk's length).
pub fn copy_sparse(disk: &dyn DiskBackend, out: &File, out_path: &Path) -> Result<u64, DiskError> {
    let write_err = |source| DiskError::Write {
        path: out_path.to_path_buf(),
        source,
    };
    let len = disk.len();
    let mut buf = vec![0u8; FLATTEN_BLOCK];
    let mut offset = 0u64;
    while offset < len {
        let n = (len - offset).min(FLATTEN_BLOCK as u64) as usize;
        let chunk = &mut buf[..n];
        disk.read_exact_at(chunk, offset)?;
        if chunk.iter().any(|&b| b != 0) {
            out.write_all_at(chunk, offset).map_err(write_err)?;
        }
        offset += n as u64;
    }
    out.set_len(len).map_err(write_err)?;
    out.sync_data().map_err(write_err)?;
    Ok(len)
}

/// A human-readable description of `image` (opened from `path`): what it is, its GPT (or why
/// there is none), which host files back each partition, and for composites every component.
pub fn render(path: &Path, image: &Image) -> String {
    let disk = image.backend();
    let mut s = String::new();
    let len = disk.len();
    let what = match image {
        Image::Raw(_) => "raw image".to_string(),
        Image::Composite(c) => match c.origin() {
            Some(Origin::Descriptor { version, .. }) => format!(
                "crosvm composite disk (descriptor version {version}, {} components)",
                c.components().len()
            ),
            _ => format!("composite disk ({} components)", c.components().len()),
        },
    };
    let _ = writeln!(
        s,
        "{}: {what}, {len} bytes ({}, {} sectors)",
        path.display(),
        human(len),
        len / SECTOR_SIZE
    );

    let composite = match image {
        Image::Composite(c) => Some(c),
        Image::Raw(_) => None,
    };
    match gpt::read(disk, &path.display().to_string()) {
        Err(e) => {
            let _ = writeln!(s, "no GPT: {e}");
        }
        Ok(info) => render_gpt(&mut s, &info, composite),
    }
    if let Some(c) = composite {
        render_components(&mut s, c);
    }
    s
}

fn render_gpt(s: &mut String, info: &gpt::GptInfo, composite: Option<&CompositeDisk>) {
    let p = &info.primary;
    let backup = match &info.backup {
        Ok(b) => format!("LBA {}", b.current_lba),
        Err(e) => format!("unreadable ({e})"),
    };
    let _ = writeln!(
        s,
        "GPT: disk GUID {}, usable LBAs {}..={}, entries at LBA {} ({} x {} bytes), backup header {backup}",
        hyphenated(p.disk_guid),
        p.first_usable_lba,
        p.last_usable_lba,
        p.entries_lba,
        p.num_entries,
        p.entry_size
    );
    let _ = writeln!(s, "{} partitions:", info.partitions.len());
    let mut rows = vec![vec![
        "#".to_string(),
        "label".into(),
        "first LBA".into(),
        "last LBA".into(),
        "size".into(),
        "type".into(),
        "unique GUID".into(),
    ]];
    if composite.is_some() {
        rows[0].push("backed by".into());
    }
    for (n, e) in &info.partitions {
        let ty = gpt::type_name(e.type_guid)
            .map(str::to_string)
            .unwrap_or_else(|| hyphenated(e.type_guid));
        let mut row = vec![
            n.to_string(),
            e.name_string(),
            e.first_lba.to_string(),
            e.last_lba.to_string(),
            human(e.size()),
            ty,
            hyphenated(e.unique_guid),
        ];
        if let Some(c) = composite {
            let start = e.first_lba.saturating_mul(SECTOR_SIZE);
            let end = e.last_lba.saturating_add(1).saturating_mul(SECTOR_SIZE);
            row.push(backing(c, start, end));
        }
        rows.push(row);
    }
    table(s, &rows);
    for w in &info.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
}

/// What backs disk bytes `start..end`: the components overlapping them.
fn backing(c: &CompositeDisk, start: u64, end: u64) -> String {
    let parts: Vec<String> = c
        .components()
        .iter()
        .filter(|comp| comp.offset() < end && start < comp.end())
        .map(|comp| match comp.source() {
            Source::File { file, .. } => format!(
                "{} ({}, {} bytes)",
                file.path().display(),
                if comp.is_read_write() { "rw" } else { "ro" },
                comp.len()
            ),
            Source::Zeros => format!("zeros ({} bytes)", comp.len()),
            Source::Memory(_) => format!("{} ({} bytes)", comp.desc(), comp.len()),
            Source::Nested(d) => format!("{} ({} bytes)", d.name(), comp.len()),
        })
        .collect();
    if parts.is_empty() {
        "nothing (outside the disk)".into()
    } else {
        parts.join(" + ")
    }
}

fn render_components(s: &mut String, c: &CompositeDisk) {
    let _ = writeln!(s, "components:");
    let mut rows = vec![vec![
        "offset".to_string(),
        "length".into(),
        "access".into(),
        "source".into(),
    ]];
    for comp in c.components() {
        let source = match comp.source() {
            Source::File { file, file_offset } if *file_offset != 0 => {
                format!("{} from byte {file_offset}", file.path().display())
            }
            Source::File { file, .. } => file.path().display().to_string(),
            Source::Zeros => "zeros".into(),
            Source::Memory(_) => comp.desc().to_string(),
            Source::Nested(d) => d.name().to_string(),
        };
        rows.push(vec![
            comp.offset().to_string(),
            comp.len().to_string(),
            if comp.is_read_write() { "rw" } else { "ro" }.into(),
            source,
        ]);
    }
    table(s, &rows);
}

/// Left-aligned columns separated by two spaces, indented by two.
fn table(s: &mut String, rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::from(" ");
        for (c, w) in r.iter().zip(&widths) {
            let _ = write!(line, " {c:<w$} ");
        }
        let _ = writeln!(s, "{}", line.trim_end());
    }
}

fn hyphenated(g: uuid::Uuid) -> String {
    g.hyphenated().to_string().to_uppercase()
}

/// Bytes in binary units with one decimal ("4.0 KiB"); plain bytes below 1 KiB.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PartitionConfig;
    use crate::disk::composite::Component;
    use crate::disk::testutil::{TempDir, pattern};
    use crate::disk::{OpenMode, cdisk, open_image};

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(4096), "4.0 KiB");
        assert_eq!(human(1536 << 10), "1.5 MiB");
        assert_eq!(human(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn copies_sparsely() {
        let dir = TempDir::new("flatten-copy");
        // 64 KiB of data, 256 KiB of zeros, 100 bytes of data.
        let mut data = pattern(FLATTEN_BLOCK, 1);
        data.extend(vec![0u8; 4 * FLATTEN_BLOCK]);
        data.extend(pattern(100, 2));
        let len = data.len() as u64;
        let disk = CompositeDisk::new(
            vec![Component::new(0, len, Source::Memory(data.clone()))],
            "t".into(),
        )
        .unwrap();
        let out_path = dir.path().join("out.img");
        let out = File::create(&out_path).unwrap();
        assert_eq!(copy_sparse(&disk, &out, &out_path).unwrap(), len);
        assert_eq!(std::fs::read(&out_path).unwrap(), data);
        // The zero blocks were not written (on file systems with holes).
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(&out_path).unwrap().blocks() * 512;
        assert!(blocks < len, "{blocks} bytes allocated for {len}");
    }

    #[test]
    fn renders_a_composite() {
        let dir = TempDir::new("flatten-render");
        let parts = vec![
            PartitionConfig {
                label: "payload-metadata".into(),
                path: dir.file("meta", &pattern(1000, 1)),
                writable: false,
            },
            PartitionConfig {
                label: "vm-instance".into(),
                path: dir.file("inst", &[0u8; 8192]),
                writable: true,
            },
        ];
        let out = dir.path().join("c.img");
        cdisk::write_composite(&parts, &out).unwrap();
        let image = open_image(
            &out,
            OpenMode {
                writable: false,
                lock: false,
                allow_block_devices: false,
            },
            None,
        )
        .unwrap();
        let text = render(&out, &image);
        assert!(
            text.contains("crosvm composite disk (descriptor version 2"),
            "{text}"
        );
        assert!(text.contains("2 partitions:"), "{text}");
        let meta_line = text
            .lines()
            .find(|l| l.contains("payload-metadata"))
            .unwrap();
        assert!(meta_line.contains(" 40 "), "{meta_line}");
        assert!(meta_line.contains(" 47 "), "{meta_line}");
        assert!(meta_line.contains("Linux filesystem"), "{meta_line}");
        assert!(
            meta_line.contains("meta (ro, 1000 bytes) + "),
            "{meta_line}"
        );
        assert!(
            meta_line.contains("c-zero.img (ro, 3096 bytes)"),
            "{meta_line}"
        );
        let inst_line = text.lines().find(|l| l.contains("vm-instance")).unwrap();
        assert!(inst_line.contains("inst (rw, 8192 bytes)"), "{inst_line}");
        assert!(text.contains("components:"), "{text}");
        assert!(!text.contains("warning"), "{text}");
    }

    #[test]
    fn renders_a_raw_image_without_gpt() {
        let dir = TempDir::new("flatten-raw");
        let p = dir.file("fs.img", &[0u8; 4096]);
        let image = open_image(
            &p,
            OpenMode {
                writable: false,
                lock: false,
                allow_block_devices: false,
            },
            None,
        )
        .unwrap();
        let text = render(&p, &image);
        assert!(
            text.contains("raw image, 4096 bytes (4.0 KiB, 8 sectors)"),
            "{text}"
        );
        assert!(text.contains("no GPT"), "{text}");
    }
}
