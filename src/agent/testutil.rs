//! Test helpers: a fake guest under a temporary directory (a sysfs block list, device files,
//! mount points, a console file), a [`System`] that records instead of mounting, and payload
//! partitions built with the real APK, idsig and metadata code.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::system::System;
use super::{AgentConfig, AgentError};
use crate::disk::testutil::TempDir;
use crate::payload::idsig::create::build_idsig;
use crate::payload::metadata::Metadata;
use crate::payload::testutil::{RawEntry, raw_zip};

/// A guest's file system in a temporary directory.
pub struct FakeGuest {
    pub dir: TempDir,
    pub cfg: AgentConfig,
    next_dev: Mutex<u32>,
}

impl FakeGuest {
    pub fn new(name: &str) -> FakeGuest {
        let dir = TempDir::new(name);
        let p = dir.path();
        for d in ["sys", "dev", "run", "mnt", "host"] {
            fs::create_dir_all(p.join(d)).unwrap();
        }
        fs::write(p.join("console"), b"").unwrap();
        let cfg = AgentConfig {
            sysfs_block: p.join("sys"),
            dev_dir: p.join("dev"),
            apk_dir: p.join("mnt/apk"),
            extra_apk_dir: p.join("mnt/extra-apk"),
            encryptedstore_dir: p.join("mnt/encryptedstore"),
            payload_service: p.join("run/vm_payload_service"),
            console: p.join("console"),
            partition_wait: Duration::from_millis(300),
            kill_grace: Duration::from_millis(300),
            delivery_wait: Duration::from_secs(2),
            reap_all: false,
        };
        FakeGuest {
            dir,
            cfg,
            next_dev: Mutex::new(1),
        }
    }

    /// A partition labelled `label` holding `data` zero-padded to 4 KiB, as the composite
    /// disk presents it. Returns its device path.
    pub fn partition(&self, label: &str, data: &[u8]) -> PathBuf {
        let mut n = self.next_dev.lock().unwrap();
        let name = format!("vda{n}");
        *n += 1;
        add_partition(&self.cfg, &name, label, data)
    }

    /// The APK `apk` with its idsig, on `<apk_label>` and `<idsig_label>`.
    pub fn apk_partitions(&self, apk_label: &str, idsig_label: &str, apk: &[u8]) {
        self.partition(apk_label, apk);
        self.partition(idsig_label, &idsig_of(&self.dir, apk));
    }

    /// The usual payload: metadata pointing at `assets/vm_config.json`, the APK and its idsig.
    pub fn payload(&self, apk: &[u8]) {
        self.metadata(&Metadata::for_app("assets/vm_config.json", &[]));
        self.apk_partitions("microdroid-apk", "microdroid-apk-idsig", apk);
    }

    pub fn metadata(&self, metadata: &Metadata) {
        self.partition("payload-metadata", &metadata.encode_framed().unwrap());
    }

    /// Where the extracted APK's `rel` is.
    pub fn in_apk(&self, rel: &str) -> PathBuf {
        self.cfg.apk_dir.join(rel)
    }

    pub fn console(&self) -> String {
        fs::read_to_string(&self.cfg.console).unwrap()
    }
}

/// Adds the block device `name` labelled `label`, holding `data` zero-padded to 4 KiB, to
/// the guest `cfg` describes. Returns its device path.
pub fn add_partition(cfg: &AgentConfig, name: &str, label: &str, data: &[u8]) -> PathBuf {
    let dev = cfg.dev_dir.join(name);
    let mut padded = data.to_vec();
    padded.resize(data.len().next_multiple_of(4096), 0);
    fs::write(&dev, padded).unwrap();
    let sys = cfg.sysfs_block.join(name);
    fs::create_dir_all(&sys).unwrap();
    fs::write(
        sys.join("uevent"),
        format!("MAJOR=254\nDEVNAME={name}\nDEVTYPE=partition\nPARTNAME={label}\n"),
    )
    .unwrap();
    dev
}

/// The idsig bytes of `apk` (built from a copy in `dir`).
pub fn idsig_of(dir: &TempDir, apk: &[u8]) -> Vec<u8> {
    let path = dir.path().join("host/apk-for-idsig");
    fs::write(&path, apk).unwrap();
    build_idsig(&path).unwrap().to_bytes().unwrap()
}

/// An APK holding `assets/vm_config.json` = `config` and the executable `bin/task` = `script`.
pub fn app_apk(config: &str, script: &str) -> Vec<u8> {
    let mut task = RawEntry::stored("bin/task", script.as_bytes());
    task.mode = 0o100755;
    raw_zip(&[
        RawEntry::stored("assets/vm_config.json", config.as_bytes()),
        task,
        RawEntry::stored("lib/x86_64/libpayload.so", b"\x7fELF"),
    ])
}

/// A config running `command` as an executable task.
pub fn exec_config(command: &Path) -> String {
    format!(
        r#"{{"version":1,"task":{{"type":"executable","command":{:?}}}}}"#,
        command.to_str().unwrap()
    )
}

/// Records what the payload steps ask of the kernel; creates the mount point directories.
#[derive(Default)]
pub struct FakeSystem {
    pub calls: Mutex<Vec<String>>,
    /// Make `format_ext2` fail.
    pub fail_format: bool,
}

impl FakeSystem {
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

/// The last path component, for short call records.
fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

impl System for FakeSystem {
    fn mount_tmpfs(&self, dir: &Path) -> Result<(), AgentError> {
        fs::create_dir_all(dir).unwrap();
        self.record(format!("tmpfs {}", name(dir)));
        Ok(())
    }

    fn remount_read_only(&self, dir: &Path) -> Result<(), AgentError> {
        self.record(format!("ro {}", name(dir)));
        Ok(())
    }

    fn format_ext2(&self, dev: &Path) -> Result<(), AgentError> {
        self.record(format!("mke2fs {}", name(dev)));
        if self.fail_format {
            return Err(AgentError::Storage {
                path: dev.to_path_buf(),
                reason: "mke2fs failed (exit status: 1)".into(),
            });
        }
        Ok(())
    }

    fn mount_ext4(&self, dev: &Path, dir: &Path) -> Result<(), AgentError> {
        fs::create_dir_all(dir).unwrap();
        self.record(format!("ext4 {} {}", name(dev), name(dir)));
        Ok(())
    }
}
