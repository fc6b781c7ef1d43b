//! The payload disk (Android's `make_payload_disk`): a read-only composite GPT disk over the
//! host files, in AVF's partition order, plus the writable disk holding the instance image and
//! the storage image. Nothing is copied: building it costs the same for a 1 GiB APK as for a
//! 1 MiB one (the metadata file is the only thing written).

use std::path::{Path, PathBuf};

use crate::api::{DiskConfig, PartitionConfig};

use super::PayloadError;

/// GPT labels (avf-facts §4.3, §4.6).
pub const METADATA_LABEL: &str = "payload-metadata";
pub const APK_LABEL: &str = "microdroid-apk";
pub const APK_IDSIG_LABEL: &str = "microdroid-apk-idsig";
pub const INSTANCE_LABEL: &str = "vm-instance";
pub const STORAGE_LABEL: &str = "encryptedstore";

/// The label of APEX `i` (in metadata order).
pub fn apex_label(i: usize) -> String {
    format!("microdroid-apex-{i}")
}

/// The labels of extra APK `i` and its idsig.
pub fn extra_labels(i: usize) -> (String, String) {
    (format!("extra-apk-{i}"), format!("extra-idsig-{i}"))
}

/// What goes on the payload disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadDiskSpec {
    /// The framed metadata (4-byte big-endian length + protobuf).
    pub metadata: Vec<u8>,
    /// APEX files, in metadata order.
    pub apexes: Vec<PathBuf>,
    pub apk: PathBuf,
    pub idsig: PathBuf,
    /// (extra APK, its idsig), in order.
    pub extra_apks: Vec<(PathBuf, PathBuf)>,
}

/// Writes the metadata file to `dir/metadata` and returns the payload disk: read-only
/// partitions `payload-metadata`, `microdroid-apex-<i>`..., `microdroid-apk`,
/// `microdroid-apk-idsig`, then `extra-apk-<i>`/`extra-idsig-<i>` pairs.
pub fn build(spec: &PayloadDiskSpec, dir: &Path) -> Result<DiskConfig, PayloadError> {
    let metadata_path = dir.join("metadata");
    std::fs::write(&metadata_path, &spec.metadata).map_err(|source| PayloadError::Write {
        path: metadata_path.clone(),
        source,
    })?;
    let mut parts = vec![part(METADATA_LABEL, &metadata_path, false)];
    for (i, apex) in spec.apexes.iter().enumerate() {
        parts.push(part(&apex_label(i), apex, false));
    }
    parts.push(part(APK_LABEL, &spec.apk, false));
    parts.push(part(APK_IDSIG_LABEL, &spec.idsig, false));
    for (i, (apk, idsig)) in spec.extra_apks.iter().enumerate() {
        let (apk_label, idsig_label) = extra_labels(i);
        parts.push(part(&apk_label, apk, false));
        parts.push(part(&idsig_label, idsig, false));
    }
    for p in &parts {
        check_input(&p.path)?;
    }
    Ok(DiskConfig::Composite {
        partitions: parts,
        writable: false,
    })
}

/// The writable disk: `vm-instance`, and `encryptedstore` when storage is given. Both files
/// must be 4 KiB multiples (images made by `create-partition` are).
pub fn writable_disk(instance: &Path, storage: Option<&Path>) -> Result<DiskConfig, PayloadError> {
    let mut parts = vec![part(INSTANCE_LABEL, instance, true)];
    if let Some(s) = storage {
        parts.push(part(STORAGE_LABEL, s, true));
    }
    for p in &parts {
        check_input(&p.path)?;
    }
    Ok(DiskConfig::Composite {
        partitions: parts,
        writable: true,
    })
}

fn part(label: &str, path: &Path, writable: bool) -> PartitionConfig {
    PartitionConfig {
        label: label.to_string(),
        path: path.to_path_buf(),
        writable,
    }
}

/// A partition source must be a regular file (the disk layer opens it later; this catches a
/// directory or a missing file with the partition's path in the message, before any VM).
fn check_input(path: &Path) -> Result<(), PayloadError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(PayloadError::NotAFile(path.to_path_buf())),
        Err(source) => Err(PayloadError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::testutil::TempDir;

    fn labels(d: &DiskConfig) -> Vec<(String, bool)> {
        let DiskConfig::Composite { partitions, .. } = d else {
            panic!("not a composite")
        };
        partitions
            .iter()
            .map(|p| (p.label.clone(), p.writable))
            .collect()
    }

    #[test]
    fn partitions_in_avf_order() {
        let t = TempDir::new("payload-disk");
        let spec = PayloadDiskSpec {
            metadata: vec![0, 0, 0, 2, 8, 1],
            apexes: vec![t.file("a.apex", b"a"), t.file("b.apex", b"b")],
            apk: t.file("app.apk", b"apk"),
            idsig: t.file("app.apk.idsig", b"sig"),
            extra_apks: vec![(t.file("x.apk", b"x"), t.file("x.idsig", b"xs"))],
        };
        let disk = build(&spec, t.path()).unwrap();
        let want = [
            "payload-metadata",
            "microdroid-apex-0",
            "microdroid-apex-1",
            "microdroid-apk",
            "microdroid-apk-idsig",
            "extra-apk-0",
            "extra-idsig-0",
        ];
        assert_eq!(
            labels(&disk),
            want.iter()
                .map(|l| (l.to_string(), false))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            std::fs::read(t.path().join("metadata")).unwrap(),
            spec.metadata
        );
        assert!(matches!(
            disk,
            DiskConfig::Composite {
                writable: false,
                ..
            }
        ));

        let w = writable_disk(
            &t.file("i.img", &[0; 4096]),
            Some(&t.file("s.img", &[0; 4096])),
        )
        .unwrap();
        assert_eq!(
            labels(&w),
            vec![
                ("vm-instance".into(), true),
                ("encryptedstore".into(), true)
            ]
        );
    }

    #[test]
    fn missing_or_directory_inputs_name_the_path() {
        let t = TempDir::new("payload-disk-bad");
        let mut spec = PayloadDiskSpec {
            metadata: vec![0; 4],
            apexes: vec![],
            apk: t.path().join("missing.apk"),
            idsig: t.file("i", b""),
            extra_apks: vec![],
        };
        let e = build(&spec, t.path()).unwrap_err().to_string();
        assert!(e.contains("missing.apk"), "{e}");
        spec.apk = t.path().to_path_buf();
        let e = build(&spec, t.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
