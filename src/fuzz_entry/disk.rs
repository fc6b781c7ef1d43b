//! Disk formats: crosvm composite descriptors, format detection and opening, composite I/O
//! against a flat copy, and GPT reading.

use std::io::Write;
use std::path::Path;

use vmm_sys_util::tempdir::TempDir;
use vmm_sys_util::tempfile::TempFile;

use super::Input;
use crate::api::ImageFormat;
use crate::disk::cdisk::{self, CDISK_MAGIC, MAX_COMPONENTS};
use crate::disk::composite::{Component, CompositeDisk, Source};
use crate::disk::raw::RawFile;
use crate::disk::{self as d, DiskBackend, DiskError, Format, Image, OpenMode};

/// crosvm composite descriptors (with and without the magic the fuzzer would have to find):
/// an accepted descriptor has at most the component limit, components sorted, non-empty,
/// contiguous from 0 to its length, and (version 2, which joins relative paths onto the
/// descriptor's directory) absolute paths.
pub fn cdisk(data: &[u8]) {
    let path = Path::new("/fuzz/disk.composite");
    let mut with_magic = CDISK_MAGIC.to_vec();
    with_magic.extend_from_slice(data);
    for bytes in [data, &with_magic[..]] {
        let Ok(desc) = cdisk::parse(bytes, path) else {
            continue;
        };
        assert!(desc.components.len() <= MAX_COMPONENTS);
        let mut expect = 0u64;
        for c in &desc.components {
            assert_eq!(c.offset, expect, "components not contiguous");
            assert!(c.len > 0);
            assert!(desc.version < 2 || c.path.is_absolute());
            expect = c
                .offset
                .checked_add(c.len)
                .expect("component end overflows");
        }
        assert_eq!(expect, desc.length);
    }
}

/// A file of these bytes opened as a disk image, read-only and writable, with and without a
/// named format: a writable image or one named raw is raw, otherwise the detected format
/// decides (raw as raw, composite as composite or an error, the rest refused), a named
/// composite must be one, and a raw image reads back exactly the file's bytes (whole
/// sectors: a read-only image leaves out a partial last sector, a writable one is refused).
pub fn disk_open(data: &[u8]) {
    let Ok(tmp) = TempFile::new_with_prefix("/tmp/mvmm-fuzz-disk") else {
        return;
    };
    if tmp.as_file().write_all(data).is_err() {
        return;
    }
    let detected = Format::detect(&data[..data.len().min(d::FORMAT_MAGIC_LEN)]);
    for (writable, named) in [
        (false, None),
        (true, None),
        (false, Some(ImageFormat::Raw)),
        (false, Some(ImageFormat::Composite)),
        (true, Some(ImageFormat::Raw)),
    ] {
        let mode = OpenMode {
            writable,
            lock: false,
            allow_block_devices: false,
        };
        let format = match named {
            Some(ImageFormat::Raw) => Some(Format::Raw),
            None if writable => Some(Format::Raw),
            None => Some(detected),
            Some(ImageFormat::Composite) => (detected == Format::Composite).then_some(detected),
        };
        match (d::open_image(tmp.as_path(), mode, named), format) {
            (Ok(Image::Raw(disk)), Some(Format::Raw)) => {
                assert!(!writable || data.len().is_multiple_of(512));
                assert_eq!(disk.len(), data.len() as u64 / 512 * 512);
                let n = (disk.len() as usize).min(64 << 10);
                let mut buf = vec![0u8; n];
                disk.read_exact_at(&mut buf, 0).expect("a raw image reads");
                assert_eq!(buf, data[..n]);
                assert!(disk.read_exact_at(&mut [0u8; 1], disk.len()).is_err());
            }
            (Ok(Image::Composite(disk)), Some(Format::Composite)) => {
                let n = disk.len().min(4096) as usize;
                let _ = disk.read_exact_at(&mut vec![0u8; n], 0);
            }
            (Ok(_), f) => panic!("opened as something other than {f:?} ({writable}, {named:?})"),
            (Err(DiskError::UnsupportedFormat { .. }), Some(Format::Raw | Format::Composite)) => {
                panic!("a raw or composite image was refused as unsupported")
            }
            (Err(_), _) => {}
        }
    }
}

/// Largest component the I/O target builds.
const MAX_PIECE: u64 = 8192;

/// A composite disk of host files (writable or not, at an offset inside the file), zero
/// fillers and in-memory bytes, built from the input, next to a flat copy of the same
/// bytes: every read returns the flat copy's bytes, a write succeeds exactly when it is in
/// range and every byte it touches is writable, and a refused write changes nothing.
pub fn composite_io(data: &[u8]) {
    let mut inp = Input::new(data);
    let Ok(dir) = TempDir::new_with_prefix("/tmp/mvmm-fuzz-composite") else {
        return;
    };
    let mut flat = Vec::new();
    let mut writable = Vec::new();
    let mut components = Vec::new();
    for i in 0..1 + inp.u8() % 6 {
        let len = 1 + u64::from(inp.u16()) % MAX_PIECE;
        let offset = flat.len() as u64;
        let fill = inp.u8();
        let bytes: Vec<u8> = (0..len).map(|k| fill.wrapping_add(k as u8)).collect();
        let (source, w) = match inp.u8() % 4 {
            0 => (Source::Zeros, false),
            1 => {
                flat.extend_from_slice(&bytes);
                (Source::Memory(bytes), false)
            }
            kind => {
                let file_offset = u64::from(inp.u16() % 4096);
                let path = dir.as_path().join(format!("c{i}"));
                let mut contents = vec![0xeeu8; file_offset as usize];
                contents.extend_from_slice(&bytes);
                if std::fs::write(&path, &contents).is_err() {
                    return;
                }
                let w = kind == 3;
                let Ok(file) = RawFile::open(&path, w, false) else {
                    return;
                };
                flat.extend_from_slice(&bytes);
                (Source::File { file, file_offset }, w)
            }
        };
        if matches!(source, Source::Zeros) {
            flat.resize(flat.len() + len as usize, 0);
        }
        writable.resize(flat.len(), w);
        components.push(Component::new(offset, len, source).read_write(w));
    }
    let disk = CompositeDisk::new(components, "fuzz".into()).expect("a contiguous layout");
    assert_eq!(disk.len(), flat.len() as u64);
    assert_eq!(disk.is_writable(), writable.contains(&true));
    let mut steps = 0;
    while !inp.done() && steps < 64 {
        steps += 1;
        let op = inp.u8();
        let offset = u64::from(inp.u16()) % (disk.len() + 64);
        let len = usize::from(inp.u16()) % (2 * MAX_PIECE as usize);
        let end = offset as usize + len;
        let in_range = end <= flat.len();
        if op & 1 == 0 {
            let mut buf = vec![0u8; len];
            match disk.read_exact_at(&mut buf, offset) {
                Ok(()) => {
                    assert!(in_range);
                    assert_eq!(
                        buf,
                        flat[offset as usize..end],
                        "read differs at {offset}+{len}"
                    );
                }
                Err(_) => assert!(!in_range, "an in-range read failed"),
            }
        } else {
            let buf: Vec<u8> = (0..len).map(|k| op.wrapping_mul(k as u8)).collect();
            let allowed = in_range && writable[offset as usize..end].iter().all(|&w| w);
            match disk.write_all_at(&buf, offset) {
                Ok(()) => {
                    assert!(allowed, "a write to read-only or missing bytes succeeded");
                    flat[offset as usize..end].copy_from_slice(&buf);
                }
                Err(_) => assert!(!allowed, "an allowed write failed"),
            }
        }
        if op & 0x80 != 0 {
            assert!(disk.flush().is_ok());
        }
    }
    let mut all = vec![0u8; flat.len()];
    disk.read_exact_at(&mut all, 0)
        .expect("the whole disk reads");
    assert_eq!(all, flat);
}

/// Bytes as a read-only disk.
struct Bytes<'a>(&'a [u8]);

impl DiskBackend for Bytes<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn is_writable(&self) -> bool {
        false
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        let range = usize::try_from(offset)
            .ok()
            .and_then(|o| Some(o..o.checked_add(buf.len())?))
            .filter(|r| r.end <= self.0.len());
        let Some(r) = range else {
            return Err(DiskError::OutOfRange {
                offset,
                len: buf.len() as u64,
                disk_len: self.len(),
            });
        };
        buf.copy_from_slice(&self.0[r]);
        Ok(())
    }

    fn write_all_at(&self, _: &[u8], offset: u64) -> Result<(), DiskError> {
        Err(DiskError::ReadOnly {
            offset,
            what: "the fuzz input".into(),
        })
    }

    fn flush(&self) -> Result<(), DiskError> {
        Ok(())
    }

    fn id(&self) -> [u8; 20] {
        [0; 20]
    }
}

/// The GPT reader on a disk holding the input: an accepted table has at most as many
/// entries as the table could hold, and a bounded list of warnings.
pub fn gpt(data: &[u8]) {
    let disk = Bytes(data);
    let Ok(info) = d::gpt::read(&disk, "fuzz") else {
        return;
    };
    assert_eq!(info.disk_size, data.len() as u64);
    let table_entries = info.primary.num_entries as usize;
    assert!(info.partitions.len() <= table_entries);
    assert!(
        info.partitions
            .iter()
            .all(|(n, _)| (1..=table_entries).contains(n))
    );
    assert!(
        info.warnings.len() <= d::gpt::MAX_WARNINGS + 1,
        "{} warnings for one table",
        info.warnings.len()
    );
}
