//! `micro-vmm disk create | inspect | flatten`: the disk tool's operations, for the CLI.
//!
//! A disk spec (JSON) lists a composite disk's partitions:
//!
//! ```json
//! {"partitions": [{"label": "vm-instance", "path": "instance.img", "writable": true}]}
//! ```
//!
//! Relative paths are relative to the spec file's directory; `writable` defaults to false;
//! unknown fields are rejected.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::raw::RawFile;
use super::{DiskError, Image, OpenMode, cdisk, flatten as flat, open_image};
use crate::api::PartitionConfig;

/// Largest spec file read.
pub const MAX_SPEC_SIZE: u64 = 1 << 20;

/// A composite disk to create.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    pub partitions: Vec<SpecPartition>,
}

/// One partition of a [`DiskSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecPartition {
    pub label: String,
    pub path: PathBuf,
    #[serde(default)]
    pub writable: bool,
}

impl DiskSpec {
    /// Parses a spec; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<DiskSpec, DiskError> {
        let spec: DiskSpec = serde_json::from_str(text).map_err(|e| DiskError::Spec {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if spec.partitions.is_empty() {
            return Err(DiskError::Spec {
                path: path.to_path_buf(),
                reason: "no partitions".into(),
            });
        }
        Ok(spec)
    }

    /// Reads and parses a spec file (at most [`MAX_SPEC_SIZE`] bytes).
    pub fn load(path: &Path) -> Result<DiskSpec, DiskError> {
        let spec_err = |reason: String| DiskError::Spec {
            path: path.to_path_buf(),
            reason,
        };
        let file = RawFile::open(path, false, false)?;
        if file.size() > MAX_SPEC_SIZE {
            return Err(spec_err(format!(
                "{} bytes is too large (at most {MAX_SPEC_SIZE})",
                file.size()
            )));
        }
        let mut bytes = vec![0u8; file.size() as usize];
        file.read_at(&mut bytes, 0)?;
        let text = String::from_utf8(bytes).map_err(|_| spec_err("not UTF-8".into()))?;
        DiskSpec::parse(&text, path)
    }

    /// The partitions, with relative paths joined onto `base` (the spec's directory).
    pub fn partitions(&self, base: &Path) -> Vec<PartitionConfig> {
        self.partitions
            .iter()
            .map(|p| PartitionConfig {
                label: p.label.clone(),
                path: base.join(&p.path),
                writable: p.writable,
            })
            .collect()
    }
}

/// `disk create SPEC OUT`: writes a crosvm composite descriptor at `out` (plus its header,
/// footer and zero filler files next to it) for the partitions `spec_path` lists.
pub fn create(spec_path: &Path, out: &Path) -> Result<(), DiskError> {
    let spec = DiskSpec::load(spec_path)?;
    cdisk::write_composite(&spec.partitions(parent_dir(spec_path)), out).map(|_| ())
}

/// `disk inspect IMAGE`: a human-readable description of a raw image or composite descriptor:
/// its partition table and, for composites, the host files behind each partition. Takes no
/// locks, so it works on the disk of a running VM.
pub fn inspect(image: &Path) -> Result<String, DiskError> {
    let opened = open_image(
        image,
        OpenMode {
            writable: false,
            lock: false,
            allow_block_devices: false,
        },
        None,
    )?;
    Ok(flat::render(image, &opened))
}

/// `disk flatten IN OUT`: copies a raw image or composite into one sparse raw file (created or
/// replaced). Returns its size. Refuses to write over any file the input reads from, and
/// fails if another process (a VM) holds a lock on the input or the output.
pub fn flatten(input: &Path, output: &Path) -> Result<u64, DiskError> {
    let image = open_image(
        input,
        OpenMode {
            writable: false,
            lock: true,
            allow_block_devices: false,
        },
        None,
    )?;
    let inputs: Vec<&RawFile> = match &image {
        Image::Raw(d) => vec![d.file()],
        Image::Composite(c) => c.host_files(),
    };
    let out = cdisk::open_output_file(output)?;
    let meta = out.metadata().map_err(|source| DiskError::Write {
        path: output.to_path_buf(),
        source,
    })?;
    cdisk::check_not_input(output, &meta, inputs.into_iter())?;
    super::raw::lock_file(&out, output, true)?;
    out.set_len(0).map_err(|source| DiskError::Write {
        path: output.to_path_buf(),
        source,
    })?;
    flat::copy_sparse(image.backend(), &out, output)
}

/// The directory a file is in ("." for a bare file name).
fn parent_dir(p: &Path) -> &Path {
    p.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::gpt;
    use crate::disk::testutil::{TempDir, pattern};

    #[test]
    fn spec_parsing() {
        let p = Path::new("/s/spec.json");
        let s = DiskSpec::parse(
            r#"{"partitions":[{"label":"a","path":"a.img"},{"label":"b","path":"/abs/b","writable":true}]}"#,
            p,
        )
        .unwrap();
        let parts = s.partitions(parent_dir(p));
        assert_eq!(parts[0].path, Path::new("/s/a.img"));
        assert!(!parts[0].writable);
        assert_eq!(parts[1].path, Path::new("/abs/b"));
        assert!(parts[1].writable);
        assert_eq!(parent_dir(Path::new("spec.json")), Path::new("."));

        for (bad, why) in [
            (r#"{"partitions":[],"x":1}"#, "unknown field"),
            (
                r#"{"partitions":[{"label":"a","path":"a","size":3}]}"#,
                "unknown field",
            ),
            (r#"{"partitions":[{"label":"a"}]}"#, "missing field"),
            (r#"{"partitions":[]}"#, "no partitions"),
            (r#"{"partitions":"#, "EOF"),
            (
                r#"{"partitions":[{"label":"a","path":"a","writable":"yes"}]}"#,
                "invalid type",
            ),
        ] {
            let e = DiskSpec::parse(bad, p).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("spec.json"), "{bad}: {e}");
        }
    }

    #[test]
    fn create_inspect_flatten() {
        let dir = TempDir::new("tool");
        std::fs::create_dir(dir.path().join("parts")).unwrap();
        dir.file("parts/meta", &pattern(1000, 1));
        dir.file("parts/inst", &pattern(8192, 2));
        let spec = dir.file(
            "spec.json",
            br#"{"partitions":[
                {"label":"payload-metadata","path":"parts/meta"},
                {"label":"vm-instance","path":"parts/inst","writable":true}]}"#,
        );
        let out = dir.path().join("out/disk.img");
        std::fs::create_dir(dir.path().join("out")).unwrap();
        create(&spec, &out).unwrap();
        let size = 20480 + 4096 + 8192 + 20480;

        let text = inspect(&out).unwrap();
        assert!(text.contains("vm-instance"), "{text}");
        assert!(text.contains("parts/inst (rw, 8192 bytes)"), "{text}");

        let flat_path = dir.path().join("flat.img");
        assert_eq!(flatten(&out, &flat_path).unwrap(), size);
        let flat = std::fs::read(&flat_path).unwrap();
        assert_eq!(flat.len() as u64, size);
        assert_eq!(&flat[20480..21480], &pattern(1000, 1)[..]);
        assert!(flat[21480..24576].iter().all(|&b| b == 0));
        assert_eq!(&flat[24576..32768], &pattern(8192, 2)[..]);
        // The flat copy is a raw disk with the same GPT.
        let img = open_image(
            &flat_path,
            OpenMode {
                writable: false,
                lock: true,
                allow_block_devices: false,
            },
            None,
        )
        .unwrap();
        let info = gpt::read(img.backend(), "flat").unwrap();
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        assert_eq!(info.partitions.len(), 2);
        assert_eq!(img.backend().len(), size);
        drop(img);

        // Flattening onto an input file is refused and leaves it alone.
        let e = flatten(&out, &dir.path().join("parts/inst")).unwrap_err();
        assert!(matches!(e, DiskError::OutputIsInput { .. }), "{e}");
        assert_eq!(
            std::fs::read(dir.path().join("parts/inst")).unwrap(),
            pattern(8192, 2)
        );
        let e = flatten(&out, &out).unwrap_err();
        assert!(matches!(e, DiskError::OutputIsInput { .. }), "{e}");

        // A missing partition file is named.
        let bad = dir.file(
            "bad.json",
            br#"{"partitions":[{"label":"x","path":"parts/missing"}]}"#,
        );
        let e = create(&bad, &dir.path().join("x.img")).unwrap_err();
        assert!(e.to_string().contains("parts/missing"), "{e}");
    }
}
