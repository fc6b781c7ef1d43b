//! The payload half of an app run, also available alone as `micro-vmm payload-disk`: the
//! payload config read from the APK, the idsigs created or refreshed, the APEXes found, the
//! metadata written and the payload disk assembled (docs/payload.md).

use std::path::{Path, PathBuf};

use crate::api::DiskConfig;
use crate::payload::apk::ApkError;
use crate::payload::config::{ConfigError as PayloadConfigError, VmPayloadConfig};
use crate::payload::disk::{self, PayloadDiskSpec};
use crate::payload::idsig::{IdsigUpdate, create_or_update_idsig};
use crate::payload::metadata::{ApexPayload, Metadata};

use super::AppError;

/// What the payload disk is built from.
#[derive(Debug, Clone, Copy)]
pub struct PayloadInputs<'a> {
    pub apk: &'a Path,
    pub idsig: &'a Path,
    /// The payload config's path inside the APK.
    pub config_path: &'a str,
    /// One per `extra_apks` entry of the config, in order.
    pub extra_idsigs: &'a [PathBuf],
    /// Where `<name>.apex` files are looked up.
    pub apex_dir: Option<&'a Path>,
}

/// Reads and checks the payload config, refreshes the idsigs, writes the metadata into `dir`
/// and returns the config and the (read-only, composite) payload disk.
pub fn build(
    inputs: &PayloadInputs,
    dir: &Path,
) -> Result<(VmPayloadConfig, DiskConfig), AppError> {
    // The payload config, read from the APK as Android's host does (for apexes, extra APKs).
    // An APK that cannot be read at all is a bad argument; a config that is missing or wrong
    // inside a readable APK is Android's invalid payload config.
    let payload_config =
        VmPayloadConfig::from_apk(inputs.apk, inputs.config_path).map_err(|e| match e {
            PayloadConfigError::Apk(
                a @ (ApkError::Open { .. }
                | ApkError::NotAFile { .. }
                | ApkError::Empty { .. }
                | ApkError::NotAZip { .. }
                | ApkError::Io { .. }),
            ) => AppError::Apk(a),
            other => AppError::InvalidPayloadConfig(other),
        })?;

    // idsigs: created or refreshed (Android's createOrUpdateIdsigFile).
    refresh_idsig(inputs.apk, inputs.idsig)?;
    let extra_apks: Vec<PathBuf> = payload_config
        .extra_apks
        .iter()
        .map(|e| PathBuf::from(&e.path))
        .collect();
    if extra_apks.len() != inputs.extra_idsigs.len() {
        return Err(AppError::ExtraIdsigCount {
            apks: extra_apks.len(),
            idsigs: inputs.extra_idsigs.len(),
        });
    }
    for (apk, idsig) in extra_apks.iter().zip(inputs.extra_idsigs) {
        refresh_idsig(apk, idsig)?;
    }

    // APEXes, sorted by name as Android sorts them.
    let mut apex_names: Vec<&str> = payload_config
        .apexes
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    apex_names.sort_unstable();
    apex_names.dedup();
    let mut apex_files = Vec::new();
    let mut apex_meta = Vec::new();
    for (i, name) in apex_names.iter().enumerate() {
        let path = find_apex(inputs.apex_dir, name)?;
        let mtime = std::fs::metadata(&path)
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        apex_meta.push(ApexPayload {
            name: name.to_string(),
            partition_name: disk::apex_label(i),
            last_update_seconds: mtime,
            is_factory: true,
            ..Default::default()
        });
        apex_files.push(path);
    }

    let spec = PayloadDiskSpec {
        metadata: Metadata::for_app(inputs.config_path, &apex_meta).encode_framed()?,
        apexes: apex_files,
        apk: inputs.apk.to_path_buf(),
        idsig: inputs.idsig.to_path_buf(),
        extra_apks: extra_apks
            .into_iter()
            .zip(inputs.extra_idsigs.iter().cloned())
            .collect(),
    };
    let payload_disk = disk::build(&spec, dir)?;
    Ok((payload_config, payload_disk))
}

fn refresh_idsig(apk: &Path, idsig: &Path) -> Result<(), AppError> {
    match create_or_update_idsig(apk, idsig)? {
        IdsigUpdate::Unchanged => {}
        update => log::info!("{}: {update:?}", idsig.display()),
    }
    Ok(())
}

/// `<apex_dir>/<name>.apex`; a missing one is a config error naming the APEX.
fn find_apex(dir: Option<&Path>, name: &str) -> Result<PathBuf, AppError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.starts_with('{')
    {
        return Err(AppError::BadApex {
            name: name.to_string(),
            reason: "not an APEX module name (micro-vmm has no {CLASSPATH} expansion)".into(),
        });
    }
    let Some(dir) = dir else {
        return Err(AppError::BadApex {
            name: name.to_string(),
            reason: "the config names an APEX; pass --apex-dir DIR holding <name>.apex".into(),
        });
    };
    let path = dir.join(format!("{name}.apex"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(AppError::BadApex {
            name: name.to_string(),
            reason: format!("{} does not exist", path.display()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apex_lookup() {
        let t = crate::disk::testutil::TempDir::new("apex");
        t.file("com.android.foo.apex", b"x");
        assert!(find_apex(Some(t.path()), "com.android.foo").is_ok());
        for bad in ["com.android.bar", "../x", "{CLASSPATH}", ""] {
            let e = find_apex(Some(t.path()), bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        assert!(
            find_apex(None, "com.android.foo")
                .unwrap_err()
                .to_string()
                .contains("--apex-dir")
        );
    }
}
