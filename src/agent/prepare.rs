//! Steps 3 to 8 of docs/lifecycle.md: from the partitions to a task ready to spawn. Finds the
//! partitions, reads the metadata, verifies the APK and the extra APKs against their idsigs,
//! extracts them, reads the config and prepares the storage. Every error carries the
//! `ErrorCode` the host is told ([`AgentError::error_code`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use super::partitions::{self, ExtraApk, PartitionMap};
use super::system::System;
use super::task::{TaskSpec, check_executable};
use super::{AgentConfig, AgentError};
use crate::payload::apk::{Apk, ApkError, ExtractLimits};
use crate::payload::config::{MAX_CONFIG_SIZE, TaskType, VmPayloadConfig};
use crate::payload::idsig::format::MAX_IDSIG_SIZE;
use crate::payload::idsig::{HashTree, Idsig, IdsigError, hex};
use crate::payload::metadata::{APK_MOUNT_POINT, Metadata, PayloadSource};
use crate::payload::partition::ENCRYPTEDSTORE_MAGIC;

/// Most zero bytes accepted after an idsig on its partition (padding to 4 KiB).
const MAX_IDSIG_PADDING: u64 = 4095;

/// Everything up to the task: returns what to spawn.
pub fn prepare(cfg: &AgentConfig, sys: &dyn System) -> Result<TaskSpec, AgentError> {
    let parts = partitions::wait_for(
        &cfg.sysfs_block,
        &cfg.dev_dir,
        &partitions::REQUIRED,
        cfg.partition_wait,
    )?;
    crate::agent_debug!(
        "partitions: {}",
        parts.labels().collect::<Vec<_>>().join(", ")
    );
    let metadata_dev = parts.require(partitions::METADATA)?;
    let metadata = read_metadata(metadata_dev)?;
    let extras = parts.extra_apks()?;

    verify_apk(
        partitions::APK,
        parts.require(partitions::APK)?,
        parts.require(partitions::APK_IDSIG)?,
    )?;
    for (i, extra) in extras.iter().enumerate() {
        verify_apk(
            &format!("{}{i}", partitions::EXTRA_APK_PREFIX),
            &extra.apk,
            &extra.idsig,
        )?;
    }

    sys.mount_tmpfs(&cfg.apk_dir)?;
    extract(
        partitions::APK,
        parts.require(partitions::APK)?,
        &cfg.apk_dir,
    )?;
    sys.remount_read_only(&cfg.apk_dir)?;
    extract_extras(cfg, sys, &extras)?;

    let config = read_config(&metadata, &cfg.apk_dir)?;
    if config.extra_apks.len() != extras.len() {
        return Err(AgentError::ExtraApks(format!(
            "the config lists {} extra APKs (extra_apks) but the disk has {}",
            config.extra_apks.len(),
            extras.len()
        )));
    }
    let command = task_command(&config)?;

    prepare_storage(&parts, &cfg.encryptedstore_dir, sys)?;
    Ok(TaskSpec {
        command,
        cwd: cfg.apk_dir.clone(),
        output: cfg.console.clone(),
    })
}

/// Step 4: the framed `Metadata` at the start of the partition.
pub fn read_metadata(dev: &Path) -> Result<Metadata, AgentError> {
    let err = |reason: String| AgentError::Metadata {
        path: dev.to_path_buf(),
        reason,
    };
    let mut file = File::open(dev).map_err(|e| err(e.to_string()))?;
    let metadata = Metadata::read_framed(&mut file).map_err(|e| err(e.to_string()))?;
    if metadata.version != 1 {
        crate::agent_log!("metadata version {} (expected 1)", metadata.version);
    }
    Ok(metadata)
}

/// Size of a file or block device.
fn device_len(file: &File, path: &Path) -> Result<u64, AgentError> {
    let mut f = file;
    f.seek(SeekFrom::End(0)).map_err(|source| AgentError::Io {
        op: "find the size of",
        path: path.to_path_buf(),
        source,
    })
}

/// The length of the idsig at the start of `bytes`: version, then three u32-length-prefixed
/// blocks (hashing info, signing info, Merkle tree). `None` if the lengths run past the end.
/// Only the framing is read here; [`Idsig::parse`] checks the content.
fn idsig_len(bytes: &[u8]) -> Option<usize> {
    let mut pos: usize = 4;
    for _ in 0..3 {
        let len: [u8; 4] = bytes.get(pos..pos.checked_add(4)?)?.try_into().ok()?;
        pos = pos
            .checked_add(4)?
            .checked_add(usize::try_from(u32::from_le_bytes(len)).ok()?)?;
    }
    (pos <= bytes.len()).then_some(pos)
}

/// Reads the idsig on a partition: the file followed by up to 4095 zero bytes.
pub fn read_idsig_partition(dev: &Path, label: &str) -> Result<Idsig, AgentError> {
    let verify_err = |reason: String| AgentError::Verification {
        label: label.to_string(),
        reason,
    };
    let file = File::open(dev).map_err(|source| AgentError::Io {
        op: "open",
        path: dev.to_path_buf(),
        source,
    })?;
    let max = MAX_IDSIG_SIZE + MAX_IDSIG_PADDING;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| AgentError::Io {
            op: "read",
            path: dev.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > max {
        return Err(verify_err(format!(
            "idsig partition {dev:?} is larger than the {max} bytes accepted"
        )));
    }
    let len = idsig_len(&bytes).unwrap_or(bytes.len());
    let (idsig, padding) = bytes.split_at(len);
    if padding.len() as u64 > MAX_IDSIG_PADDING || padding.iter().any(|&b| b != 0) {
        return Err(verify_err(format!(
            "idsig partition {dev:?}: {} bytes after the idsig ({len} bytes) are not zero padding",
            padding.len()
        )));
    }
    Idsig::parse(idsig, &dev.display().to_string()).map_err(|e| verify_err(e.to_string()))
}

/// Step 5: the root hash of the Merkle tree over the whole partition `apk` must be the
/// idsig's `raw_root_hash`.
pub fn verify_apk(label: &str, apk: &Path, idsig: &Path) -> Result<(), AgentError> {
    let idsig = read_idsig_partition(idsig, &format!("{label} (idsig {idsig:?})"))?;
    let file = File::open(apk).map_err(|source| AgentError::Io {
        op: "open",
        path: apk.to_path_buf(),
        source,
    })?;
    let len = device_len(&file, apk)?;
    let tree = HashTree::from_file(&file, apk, len, &idsig.hashing_info.salt).map_err(|e| {
        match e {
            // The partition cannot be hashed (too large for a tree): not this payload.
            IdsigError::TooLarge { .. } => AgentError::Verification {
                label: label.to_string(),
                reason: e.to_string(),
            },
            e => AgentError::Io {
                op: "hash",
                path: apk.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            },
        }
    })?;
    if tree.root_hash != idsig.hashing_info.raw_root_hash {
        return Err(AgentError::Verification {
            label: label.to_string(),
            reason: format!(
                "the root hash of {apk:?} ({len} bytes) is {}, the idsig says {}",
                hex(&tree.root_hash),
                hex(&idsig.hashing_info.raw_root_hash)
            ),
        });
    }
    crate::agent_debug!("{label} verified ({len} bytes)");
    Ok(())
}

/// Step 6: extracts the APK on `dev` into the empty directory `dest`. A zip the reader
/// refuses is a verification failure (Android's apkverify refuses what it cannot parse);
/// failing to read the device or write the files is not.
pub fn extract(label: &str, dev: &Path, dest: &Path) -> Result<(), AgentError> {
    let result =
        Apk::open(dev).and_then(|mut apk| apk.extract_all(dest, &ExtractLimits::default()));
    match result {
        Ok(summary) => {
            crate::agent_debug!(
                "{label}: {} files, {} directories, {} bytes in {dest:?}",
                summary.files,
                summary.dirs,
                summary.bytes
            );
            Ok(())
        }
        Err(
            e @ (ApkError::Open { .. }
            | ApkError::Io { .. }
            | ApkError::Write { .. }
            | ApkError::Destination { .. }),
        ) => Err(AgentError::Extract {
            label: label.to_string(),
            dest: dest.to_path_buf(),
            reason: e.to_string(),
        }),
        Err(e) => Err(AgentError::Verification {
            label: label.to_string(),
            reason: e.to_string(),
        }),
    }
}

/// Extra APK `i` goes to `<extra_apk_dir>/<i>`, on one tmpfs made read-only afterwards.
fn extract_extras(
    cfg: &AgentConfig,
    sys: &dyn System,
    extras: &[ExtraApk],
) -> Result<(), AgentError> {
    if extras.is_empty() {
        return Ok(());
    }
    sys.mount_tmpfs(&cfg.extra_apk_dir)?;
    for (i, extra) in extras.iter().enumerate() {
        let dest = cfg.extra_apk_dir.join(i.to_string());
        super::system::mkdir(&dest)?;
        extract(
            &format!("{}{i}", partitions::EXTRA_APK_PREFIX),
            &extra.apk,
            &dest,
        )?;
    }
    sys.remount_read_only(&cfg.extra_apk_dir)
}

/// The config's path relative to the APK root, from the metadata's `config_path`
/// (`/mnt/apk/<path>`): a plain relative path (no `..`, no root).
pub fn config_relative_path(metadata: &Metadata) -> Result<PathBuf, AgentError> {
    let invalid = |reason: String| Err(AgentError::InvalidConfig(reason));
    let path = match &metadata.payload {
        Some(PayloadSource::ConfigPath(p)) => p,
        Some(PayloadSource::Config(c)) => {
            return invalid(format!(
                "the metadata names a payload binary ({:?}) instead of a config: that is a \
                 microdroid_launcher task, and this guest has no microdroid_launcher",
                c.payload_binary_name
            ));
        }
        None => return invalid("the metadata has no config_path".into()),
    };
    let Some(rel) = path.strip_prefix(APK_MOUNT_POINT) else {
        return invalid(format!(
            "metadata config_path {path:?} is not under {APK_MOUNT_POINT}"
        ));
    };
    let rel = PathBuf::from(rel);
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return invalid(format!(
            "metadata config_path {path:?} is not a plain path inside the APK"
        ));
    }
    Ok(rel)
}

/// Step 7: reads and parses the config the metadata names, from the extracted APK.
pub fn read_config(metadata: &Metadata, apk_dir: &Path) -> Result<VmPayloadConfig, AgentError> {
    let rel = config_relative_path(metadata)?;
    let shown = format!("{APK_MOUNT_POINT}{}", rel.display());
    let invalid = |reason: String| AgentError::InvalidConfig(format!("{shown}: {reason}"));
    let file = File::open(apk_dir.join(&rel)).map_err(|e| invalid(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| invalid(e.to_string()))?;
    if bytes.len() as u64 > MAX_CONFIG_SIZE {
        return Err(invalid(format!(
            "larger than the {MAX_CONFIG_SIZE} bytes accepted"
        )));
    }
    VmPayloadConfig::from_json(&bytes, &shown).map_err(|e| AgentError::InvalidConfig(e.to_string()))
}

/// The executable to run for the config's task.
pub fn task_command(config: &VmPayloadConfig) -> Result<PathBuf, AgentError> {
    let Some(task) = &config.task else {
        return Err(AgentError::InvalidConfig("the config has no task".into()));
    };
    match task.kind {
        TaskType::MicrodroidLauncher => Err(AgentError::InvalidConfig(format!(
            "task.type is microdroid_launcher (task.command {:?}): this guest has no \
             microdroid_launcher",
            task.command
        ))),
        TaskType::Executable => {
            let command = PathBuf::from(&task.command);
            check_executable(&command).map_err(AgentError::InvalidConfig)?;
            Ok(command)
        }
    }
}

/// Step 8: formats the `encryptedstore` partition on first use (the host wrote
/// [`ENCRYPTEDSTORE_MAGIC`] at its start) and mounts it. Nothing to do without one.
pub fn prepare_storage(
    parts: &PartitionMap,
    mount_point: &Path,
    sys: &dyn System,
) -> Result<(), AgentError> {
    let Some(dev) = parts.get(partitions::ENCRYPTEDSTORE) else {
        return Ok(());
    };
    let storage_err = |reason: String| AgentError::Storage {
        path: dev.to_path_buf(),
        reason,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(|e| storage_err(format!("cannot open: {e}")))?;
    let mut head = [0u8; ENCRYPTEDSTORE_MAGIC.len()];
    let unformatted = match file.read_exact_at(&mut head, 0) {
        Ok(()) => &head == ENCRYPTEDSTORE_MAGIC,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
        Err(e) => return Err(storage_err(format!("cannot read: {e}"))),
    };
    if unformatted {
        crate::agent_debug!("formatting {dev:?} (first use)");
        // Format first, then clear the magic: if formatting fails, the next boot tries
        // again. The magic lies in the ext2 boot block (bytes 0..1024), which is unused.
        sys.format_ext2(dev)?;
        file.write_all_at(&[0u8; ENCRYPTEDSTORE_MAGIC.len()], 0)
            .and_then(|()| file.sync_data())
            .map_err(|e| storage_err(format!("cannot clear the unformatted mark: {e}")))?;
    }
    drop(file);
    sys.mount_ext4(dev, mount_point)?;
    crate::agent_debug!("storage {dev:?} mounted at {mount_point:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::testutil::idsig_of;
    use crate::disk::testutil::TempDir;
    use crate::payload::metadata::PayloadConfig;

    fn dir_with_host(name: &str) -> TempDir {
        let dir = TempDir::new(name);
        std::fs::create_dir_all(dir.path().join("host")).unwrap();
        dir
    }

    #[test]
    fn idsig_partitions_may_be_zero_padded_only() {
        let dir = dir_with_host("agent-idsig-pad");
        let apk = crate::payload::testutil::zip_of(&[("a", &[7u8; 10_000][..])]);
        let idsig = idsig_of(&dir, &apk);
        let expected = Idsig::parse(&idsig, "x").unwrap();

        let exact = dir.file("exact", &idsig);
        assert_eq!(read_idsig_partition(&exact, "l").unwrap(), expected);
        let mut padded = idsig.clone();
        padded.resize(idsig.len().next_multiple_of(4096), 0);
        let padded = dir.file("padded", &padded);
        assert_eq!(read_idsig_partition(&padded, "l").unwrap(), expected);

        let mut dirty = idsig.clone();
        dirty.extend_from_slice(&[0, 0, 1, 0]);
        let mut long_pad = idsig.clone();
        long_pad.resize(idsig.len() + 4096, 0);
        for (name, bytes, needle) in [
            ("dirty", dirty, "not zero padding"),
            ("long-pad", long_pad, "not zero padding"),
            ("truncated", idsig[..idsig.len() - 5].to_vec(), "remain"),
            ("empty", vec![0u8; 4096], "version"),
            ("garbage", vec![0xffu8; 64], "idsig"),
        ] {
            let path = dir.file(name, &bytes);
            let err = read_idsig_partition(&path, "microdroid-apk").unwrap_err();
            assert_eq!(
                err.error_code(),
                crate::lifecycle::ErrorCode::PayloadVerificationFailed
            );
            let text = err.to_string();
            assert!(
                text.contains("microdroid-apk") && text.contains(needle),
                "{name}: {text}"
            );
        }
    }

    #[test]
    fn the_root_hash_covers_the_whole_partition() {
        let dir = dir_with_host("agent-verify");
        // Incompressible, so the APK spans several 4 KiB blocks and the idsig has a tree.
        let mut x = 1u32;
        let noise: Vec<u8> = (0..20_000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        let apk = crate::payload::testutil::zip_of(&[("a", &noise[..])]);
        assert!(apk.len() > 3 * 4096);
        let idsig = dir.file("idsig", &idsig_of(&dir, &apk));
        let mut padded = apk.clone();
        padded.resize(apk.len().next_multiple_of(4096), 0);
        let ok = dir.file("apk-padded", &padded);
        verify_apk("microdroid-apk", &ok, &idsig).unwrap();
        // A whole extra block of zeros is a different payload.
        padded.resize(padded.len() + 4096, 0);
        let longer = dir.file("apk-longer", &padded);
        let err = verify_apk("microdroid-apk", &longer, &idsig).unwrap_err();
        assert!(matches!(err, AgentError::Verification { .. }), "{err}");
        // An unreadable device is not a verification failure.
        let err = verify_apk("microdroid-apk", &dir.path().join("nope"), &idsig).unwrap_err();
        assert_eq!(err.error_code(), crate::lifecycle::ErrorCode::Unknown);
    }

    #[test]
    fn config_paths_stay_inside_the_apk() {
        let with = |p: &str| Metadata {
            payload: Some(PayloadSource::ConfigPath(p.into())),
            ..Metadata::default()
        };
        assert_eq!(
            config_relative_path(&with("/mnt/apk/assets/vm_config.json")).unwrap(),
            PathBuf::from("assets/vm_config.json")
        );
        for bad in [
            "/mnt/apk/../../etc/passwd",
            "/mnt/apk/",
            "/mnt/apk//etc/passwd",
            "/etc/passwd",
            "mnt/apk/x.json",
            "/mnt/apkx/y.json",
        ] {
            let err = config_relative_path(&with(bad)).unwrap_err();
            assert_eq!(
                err.error_code(),
                crate::lifecycle::ErrorCode::PayloadInvalidConfig
            );
            assert!(err.to_string().contains(bad), "{err}");
        }
        let binary = Metadata {
            payload: Some(PayloadSource::Config(PayloadConfig {
                payload_binary_name: "libx.so".into(),
                extra_apk_count: 0,
            })),
            ..Metadata::default()
        };
        let err = config_relative_path(&binary).unwrap_err().to_string();
        assert!(
            err.contains("libx.so") && err.contains("microdroid_launcher"),
            "{err}"
        );
        let err = config_relative_path(&Metadata::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("config_path"), "{err}");
    }

    #[test]
    fn oversized_configs_are_refused() {
        let dir = dir_with_host("agent-config-size");
        let apk_dir = dir.path().join("apk");
        std::fs::create_dir_all(apk_dir.join("assets")).unwrap();
        let mut big = b"{\"task\":{\"type\":\"executable\",\"command\":\"/bin/true\"}}".to_vec();
        big.resize(MAX_CONFIG_SIZE as usize + 1, b' ');
        std::fs::write(apk_dir.join("assets/vm_config.json"), &big).unwrap();
        let metadata = Metadata::for_app("assets/vm_config.json", &[]);
        let err = read_config(&metadata, &apk_dir).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
        big.truncate(MAX_CONFIG_SIZE as usize);
        std::fs::write(apk_dir.join("assets/vm_config.json"), &big).unwrap();
        assert!(read_config(&metadata, &apk_dir).unwrap().task.is_some());
    }

    #[test]
    fn metadata_errors_name_the_partition() {
        let dir = TempDir::new("agent-metadata");
        let bad = dir.file("vda1", &[0, 0, 0, 200, 1, 2, 3]);
        let err = read_metadata(&bad).unwrap_err().to_string();
        assert!(err.contains("vda1") && err.contains("truncated"), "{err}");
        let good = dir.file(
            "vda2",
            &Metadata::for_app("a.json", &[]).encode_framed().unwrap(),
        );
        assert_eq!(
            read_metadata(&good).unwrap().config_path_in_apk(),
            Some("a.json")
        );
    }
}
