//! The VM config, `config.json` in the VM directory (micro-vmm's stand-in for Android's
//! `config.xml`): parsing with errors that name the file and the field, Android 15's builder
//! rules (`VirtualMachineConfig.Builder.build`), and `isCompatibleWith` for `set-config`.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::config::{validate_mem, validate_output_limit, validate_vcpus};
use crate::payload::partition::MAX_PARTITION_SIZE;

use super::ManagerError;

/// The config format version written and accepted.
pub const CONFIG_VERSION: u32 = 1;
/// Largest config file read.
pub const MAX_CONFIG_SIZE: u64 = 64 << 10;
/// The OS an app VM runs when none is named (Android's default).
pub const DEFAULT_OS: &str = "microdroid";

/// One app VM's configuration (docs/manager.md). Field names are the JSON keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmAppConfig {
    /// Format version ([`CONFIG_VERSION`]); a newer one is refused.
    #[serde(default = "default_version")]
    pub version: u32,
    /// The app's APK: an absolute path (Android's `apkPath`).
    pub apk: PathBuf,
    /// The payload config's path inside the APK (`payloadConfigPath`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_path: Option<String>,
    /// A payload binary in the APK's `lib/<abi>/` (`payloadBinaryName`): refused, micro-vmm's
    /// guest has no launcher for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_binary_name: Option<String>,
    /// Guest RAM; the OS config's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Number of vCPUs (Android has a topology, ONE_CPU or MATCH_HOST, instead).
    #[serde(default = "default_cpus")]
    pub cpus: u64,
    /// Size of `storage.img`; 0 means no storage (`encryptedStorageBytes`).
    #[serde(default)]
    pub encrypted_storage_bytes: u64,
    /// DEBUG_LEVEL_FULL when true, NONE when false.
    #[serde(default)]
    pub debug: bool,
    /// A protected VM: refused when true (micro-vmm has no pVM firmware).
    #[serde(default)]
    pub protected: bool,
    /// Extra APKs (`extraApks`): not allowed with `config_path`, which names them itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_apks: Vec<String>,
    /// The guest OS name (`os`).
    #[serde(default = "default_os")]
    pub os: String,
    /// micro-vmm: the guest OS as a vmconfig JSON file (`--app --os-config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_config: Option<PathBuf>,
    /// micro-vmm: the guest-asset directory (`--app --guest-dir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_dir: Option<PathBuf>,
    /// micro-vmm: the most MiB each log file of a run gets (`console.log`, `failure.log`,
    /// `vmm.log`; `--app --output-limit`) [default: 64].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_limit_mib: Option<u64>,
}

fn default_version() -> u32 {
    CONFIG_VERSION
}

fn default_cpus() -> u64 {
    1
}

fn default_os() -> String {
    DEFAULT_OS.to_string()
}

impl VmAppConfig {
    /// Reads and validates a config file (at most [`MAX_CONFIG_SIZE`] bytes).
    pub fn load(path: &Path) -> Result<VmAppConfig, ManagerError> {
        let file = std::fs::File::open(path).map_err(ManagerError::io("open", path))?;
        let mut bytes = Vec::new();
        file.take(MAX_CONFIG_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(ManagerError::io("read", path))?;
        if bytes.len() as u64 > MAX_CONFIG_SIZE {
            return Err(config_error(
                path,
                format!("larger than {MAX_CONFIG_SIZE} bytes"),
            ));
        }
        Self::parse(&bytes, path)
    }

    /// Parses and validates config JSON; `origin` names it in errors.
    pub fn parse(bytes: &[u8], origin: &Path) -> Result<VmAppConfig, ManagerError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let config: VmAppConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            let inner = e.into_inner();
            if at == "." || at.is_empty() {
                config_error(origin, inner.to_string())
            } else {
                config_error(origin, format!("{at}: {inner}"))
            }
        })?;
        config
            .validate()
            .map_err(|reason| config_error(origin, reason))?;
        Ok(config)
    }

    /// Android 15's builder rules, and what micro-vmm can run. The error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.version == 0 || self.version > CONFIG_VERSION {
            return Err(format!(
                "version: {} is not supported (this micro-vmm writes {CONFIG_VERSION})",
                self.version
            ));
        }
        if !self.apk.is_absolute() {
            return Err(format!("apk: {:?} is not an absolute path", self.apk));
        }
        match (&self.config_path, &self.payload_binary_name) {
            (Some(_), Some(_)) => {
                return Err("config_path and payload_binary_name: give only one".into());
            }
            (None, None) => {
                return Err("config_path: missing (the payload config in the APK)".into());
            }
            (None, Some(bin)) => {
                if bin.contains('/') {
                    return Err(format!("payload_binary_name: {bin:?} contains '/'"));
                }
                return Err(format!(
                    "payload_binary_name: {bin:?}: not supported (micro-vmm's guest has no \
                     launcher for payload binaries); use config_path"
                ));
            }
            (Some(path), None) => {
                if path.is_empty() || path.starts_with('/') || path.contains('\0') {
                    return Err(format!(
                        "config_path: {path:?} must be a relative path inside the APK"
                    ));
                }
            }
        }
        if !self.extra_apks.is_empty() {
            return Err(
                "extra_apks: not allowed with config_path (the payload config names its extra \
                 APKs)"
                    .into(),
            );
        }
        if let Some(mib) = self.memory_mib {
            validate_mem(mib).map_err(|e| format!("memory_mib: {e}"))?;
        }
        validate_vcpus(self.cpus).map_err(|e| format!("cpus: {e}"))?;
        self.output_limit()?;
        if self.encrypted_storage_bytes > MAX_PARTITION_SIZE {
            return Err(format!(
                "encrypted_storage_bytes: {} is larger than the 1 TiB allowed",
                self.encrypted_storage_bytes
            ));
        }
        if self.protected {
            return Err("protected: micro-vmm has no protected VMs (pVM firmware)".into());
        }
        if self.os.is_empty() || self.os.contains('/') || self.os.contains('\0') {
            return Err(format!("os: {:?} is not an OS name", self.os));
        }
        if self.os != DEFAULT_OS && self.os_config.is_none() {
            return Err(format!(
                "os: micro-vmm has only {DEFAULT_OS:?} built in; give os_config for {:?}",
                self.os
            ));
        }
        for (field, path) in [
            ("os_config", &self.os_config),
            ("guest_dir", &self.guest_dir),
        ] {
            if let Some(p) = path
                && !p.is_absolute()
            {
                return Err(format!("{field}: {p:?} is not an absolute path"));
            }
        }
        Ok(())
    }

    /// The output limit in bytes (`output_limit_mib`, default 64 MiB).
    pub fn output_limit(&self) -> Result<u64, String> {
        validate_output_limit(self.output_limit_mib).map_err(|e| format!("output_limit_mib: {e}"))
    }

    /// Checks that the files the config names exist now (create and set-config; an imported
    /// config may name files that only exist on another host).
    pub fn check_files(&self, origin: &Path) -> Result<(), ManagerError> {
        if !self.apk.is_file() {
            return Err(config_error(
                origin,
                format!("apk: {:?} is not a regular file", self.apk),
            ));
        }
        if let Some(p) = &self.os_config
            && !p.is_file()
        {
            return Err(config_error(
                origin,
                format!("os_config: {p:?} is not a regular file"),
            ));
        }
        Ok(())
    }

    /// Android 15's `isCompatibleWith`: `Err` names the first field that may not change.
    /// apk, memory_mib, cpus and guest_dir may change; os_config selects the OS, so it is
    /// compared like `os`.
    pub fn check_compatible(&self, new: &VmAppConfig) -> Result<(), ManagerError> {
        fn cmp<T: PartialEq + std::fmt::Debug>(
            field: &'static str,
            old: &T,
            new: &T,
        ) -> Result<(), ManagerError> {
            if old == new {
                Ok(())
            } else {
                Err(ManagerError::Incompatible {
                    field,
                    old: format!("{old:?}"),
                    new: format!("{new:?}"),
                })
            }
        }
        cmp("debug", &self.debug, &new.debug)?;
        cmp("protected", &self.protected, &new.protected)?;
        cmp(
            "encrypted_storage_bytes",
            &self.encrypted_storage_bytes,
            &new.encrypted_storage_bytes,
        )?;
        cmp("config_path", &self.config_path, &new.config_path)?;
        cmp(
            "payload_binary_name",
            &self.payload_binary_name,
            &new.payload_binary_name,
        )?;
        cmp("os", &self.os, &new.os)?;
        cmp("os_config", &self.os_config, &new.os_config)?;
        cmp("extra_apks", &self.extra_apks, &new.extra_apks)
    }

    /// The JSON written to `config.json`.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

fn config_error(path: &Path, reason: String) -> ManagerError {
    ManagerError::Config {
        path: path.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<VmAppConfig, String> {
        VmAppConfig::parse(json.as_bytes(), Path::new("c.json")).map_err(|e| e.to_string())
    }

    const MIN: &str = r#"{"apk": "/a.apk", "config_path": "assets/vm_config.json"}"#;

    #[test]
    fn defaults_and_round_trip() {
        let c = parse(MIN).unwrap();
        assert_eq!(c.version, 1);
        assert_eq!(
            (c.cpus, c.memory_mib, c.encrypted_storage_bytes),
            (1, None, 0)
        );
        assert_eq!(c.os, "microdroid");
        assert!(!c.debug && !c.protected);
        let back = VmAppConfig::parse(&c.to_json(), Path::new("x")).unwrap();
        assert_eq!(back, c);
        let full = parse(
            r#"{"apk": "/a.apk", "config_path": "c.json", "memory_mib": 64, "cpus": 2,
                "encrypted_storage_bytes": 65536, "debug": true, "os": "x",
                "os_config": "/os.json", "guest_dir": "/g"}"#,
        )
        .unwrap();
        assert_eq!(
            VmAppConfig::parse(&full.to_json(), Path::new("x")).unwrap(),
            full
        );
    }

    #[test]
    fn builder_rules_name_the_field() {
        for (json, want) in [
            (r#"{"apk": "a.apk", "config_path": "c"}"#, "apk:"),
            (r#"{"apk": "/a.apk"}"#, "config_path: missing"),
            (
                r#"{"apk": "/a", "config_path": "c", "payload_binary_name": "b.so"}"#,
                "only one",
            ),
            (
                r#"{"apk": "/a", "payload_binary_name": "libx.so"}"#,
                "not supported",
            ),
            (
                r#"{"apk": "/a", "payload_binary_name": "l/x.so"}"#,
                "contains '/'",
            ),
            (r#"{"apk": "/a", "config_path": "/abs"}"#, "config_path:"),
            (r#"{"apk": "/a", "config_path": ""}"#, "config_path:"),
            (
                r#"{"apk": "/a", "config_path": "c", "extra_apks": ["p"]}"#,
                "extra_apks",
            ),
            (
                r#"{"apk": "/a", "config_path": "c", "memory_mib": 0}"#,
                "memory_mib",
            ),
            (r#"{"apk": "/a", "config_path": "c", "cpus": 0}"#, "cpus"),
            (
                r#"{"apk": "/a", "config_path": "c", "output_limit_mib": 0}"#,
                "output_limit_mib",
            ),
            (r#"{"apk": "/a", "config_path": "c", "cpus": 1000}"#, "cpus"),
            (
                r#"{"apk": "/a", "config_path": "c", "protected": true}"#,
                "protected",
            ),
            (r#"{"apk": "/a", "config_path": "c", "os": ""}"#, "os:"),
            (
                r#"{"apk": "/a", "config_path": "c", "os": "other"}"#,
                "os_config",
            ),
            (
                r#"{"apk": "/a", "config_path": "c", "os_config": "rel"}"#,
                "os_config:",
            ),
            (
                r#"{"apk": "/a", "config_path": "c", "guest_dir": "rel"}"#,
                "guest_dir:",
            ),
            (
                r#"{"apk": "/a", "config_path": "c", "version": 2}"#,
                "version",
            ),
            (
                r#"{"apk": "/a", "config_path": "c", "encrypted_storage_bytes": 2199023255553}"#,
                "encrypted_storage_bytes",
            ),
            (r#"{"apk": "/a", "config_path": "c", "cpus": "2"}"#, "cpus"),
            (
                r#"{"apk": "/a", "config_path": "c", "memory": 2}"#,
                "memory",
            ),
            (r#"{"apk": "/a", "config_path": "c", "debug": 1}"#, "debug"),
            (r#"[1]"#, "c.json"),
            (r#"{"apk": "/a", "config_path": "c""#, "c.json"),
            ("", "c.json"),
        ] {
            let e = parse(json).unwrap_err();
            assert!(e.contains(want), "{json}: {e}");
            assert!(e.contains("c.json"), "{json}: {e}");
        }
    }

    #[test]
    fn oversized_file_is_refused() {
        let t = crate::disk::testutil::TempDir::new("mgr-cfg");
        let p = t.file("big.json", &vec![b' '; MAX_CONFIG_SIZE as usize + 1]);
        let e = VmAppConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
        let e = VmAppConfig::load(&t.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn compatibility_follows_android_15() {
        let old = parse(MIN).unwrap();
        // apk path, memory, cpus and the asset directory may change.
        let mut ok = old.clone();
        ok.apk = "/b.apk".into();
        ok.memory_mib = Some(512);
        ok.cpus = 4;
        ok.guest_dir = Some("/g".into());
        old.check_compatible(&ok).unwrap();
        type Change = (&'static str, fn(&mut VmAppConfig));
        let changes: [Change; 6] = [
            ("debug", |c| c.debug = true),
            ("encrypted_storage_bytes", |c| {
                c.encrypted_storage_bytes = 4096
            }),
            ("config_path", |c| c.config_path = Some("other.json".into())),
            ("os", |c| c.os = "microdroid_gki".into()),
            ("os_config", |c| c.os_config = Some("/os.json".into())),
            ("extra_apks", |c| c.extra_apks = vec!["p".into()]),
        ];
        for (field, change) in changes {
            let mut new = old.clone();
            change(&mut new);
            match old.check_compatible(&new) {
                Err(ManagerError::Incompatible { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
