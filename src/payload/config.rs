//! The VM payload config: the JSON file inside an APK that says what the VM runs
//! (`VmPayloadConfig`, Android 15's `microdroid/payload/config`), or the implicit config of
//! the no-JSON mode where the payload is a library from the APK.
//!
//! Parsed as Android 15 does: unknown keys are ignored (configs carry extras such as
//! `"version": 1`), every key but `task.command` has a default. Errors name the APK, the
//! config's path inside it and the JSON key (`task.command`, `extra_apks[1].path`).
//!
//! Where this is stricter than Android (each checked after parsing):
//! - `os.name` may be any plain name (letters, digits, `_`, `-`, `.`; not starting with a
//!   dot): it is not limited to `""`/`"microdroid"` as in Android 15, so other OS
//!   descriptions can be added, but it can never be a path. The caller looks the name up
//!   (see [`VmPayloadConfig::os_name`], which turns `""` into `"microdroid"`).
//! - `task.command` must not be empty; for `executable` it must be an absolute path, for
//!   `microdroid_launcher` a file name (no `/`: it is looked up in `/mnt/apk/lib/<abi>/`).
//! - Android 13's `task.args` is accepted only when empty: it was removed in Android 14 and
//!   silently dropping arguments would change what runs.
//! - `apexes[].name` must not be empty; `extra_apks[].path` must be absolute.

use std::io::{Read, Seek};
use std::path::Path;

use serde::Deserialize;

use super::apk::{Apk, ApkError};
use super::metadata::{Metadata, PayloadSource};

/// Largest config file read from an APK.
pub const MAX_CONFIG_SIZE: u64 = 1 << 20;
/// The OS used when the config names none.
pub const DEFAULT_OS: &str = "microdroid";
/// Longest accepted `os.name`.
const MAX_OS_NAME_LEN: usize = 64;

/// Errors loading a payload config. `origin` reads like `"assets/vm_config.json" in APK
/// "/path/app.apk"`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("payload config: {0}")]
    Apk(#[from] ApkError),
    #[error("payload config {origin}: key `{key}`: {reason}")]
    Json {
        origin: String,
        key: String,
        reason: String,
    },
    #[error("payload config {origin}: key `{key}`: {reason}")]
    Invalid {
        origin: String,
        key: String,
        reason: String,
    },
    #[error("payload binary name {name:?}: {reason}")]
    PayloadBinaryName { name: String, reason: &'static str },
    #[error("payload metadata: {0}")]
    Metadata(String),
}

/// `VmPayloadConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VmPayloadConfig {
    /// Deprecated in Android 15 (the OS comes from the VM config); `""` means the default.
    #[serde(default)]
    pub os: OsConfig,
    /// What to run; `None` runs nothing.
    #[serde(default)]
    pub task: Option<Task>,
    /// APEXes to give the VM (`"{CLASSPATH}"` stands for every classpath APEX).
    #[serde(default)]
    pub apexes: Vec<ApexConfig>,
    /// Extra APKs (host paths).
    #[serde(default)]
    pub extra_apks: Vec<ApkConfig>,
    /// Prefer staged APEXes over active ones.
    #[serde(default)]
    pub prefer_staged: bool,
    /// `None`: follow the VM's debuggability (Android 14+).
    #[serde(default)]
    pub export_tombstones: Option<bool>,
    #[serde(default)]
    pub enable_authfs: bool,
    #[serde(default)]
    pub hugepages: bool,
}

/// `os` of a [`VmPayloadConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct OsConfig {
    pub name: String,
}

/// How the guest runs [`Task::command`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskType {
    /// Run the command (an absolute path in the guest).
    #[default]
    Executable,
    /// `microdroid_launcher /mnt/apk/lib/<abi>/<command>`: load the library and call its
    /// `AVmPayload_main`.
    MicrodroidLauncher,
}

/// `task` of a [`VmPayloadConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawTask")]
pub struct Task {
    pub kind: TaskType,
    pub command: String,
}

/// `task` as written in JSON, with Android 13's `args`.
#[derive(Deserialize)]
struct RawTask {
    #[serde(rename = "type", default)]
    kind: TaskType,
    command: String,
    #[serde(default)]
    args: Vec<String>,
}

impl TryFrom<RawTask> for Task {
    type Error = &'static str;

    fn try_from(raw: RawTask) -> Result<Task, &'static str> {
        if !raw.args.is_empty() {
            return Err("`args` was removed in Android 14 and is not supported (only [] is)");
        }
        Ok(Task {
            kind: raw.kind,
            command: raw.command,
        })
    }
}

/// One of [`VmPayloadConfig::apexes`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApexConfig {
    pub name: String,
}

/// One of [`VmPayloadConfig::extra_apks`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApkConfig {
    pub path: String,
}

impl VmPayloadConfig {
    /// Parses and checks config JSON; `origin` names it in errors.
    pub fn from_json(json: &[u8], origin: &str) -> Result<VmPayloadConfig, ConfigError> {
        let json_err = |path: &str, e: &serde_json::Error| {
            let reason = e.to_string();
            ConfigError::Json {
                origin: origin.into(),
                key: key_of(path, &reason),
                reason,
            }
        };
        let mut de = serde_json::Deserializer::from_slice(json);
        let config: VmPayloadConfig = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| json_err(&e.path().to_string(), e.inner()))?;
        // Anything but whitespace after the object is an error, as serde_json::from_slice has.
        de.end().map_err(|e| json_err(".", &e))?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Reads the config at `config_path` (e.g. `assets/vm_config.json`) from the APK at
    /// `apk_path` (at most [`MAX_CONFIG_SIZE`] bytes).
    pub fn from_apk(apk_path: &Path, config_path: &str) -> Result<VmPayloadConfig, ConfigError> {
        VmPayloadConfig::from_open_apk(&mut Apk::open(apk_path)?, config_path)
    }

    /// [`VmPayloadConfig::from_apk`] on an APK already open.
    pub fn from_open_apk<R: Read + Seek>(
        apk: &mut Apk<R>,
        config_path: &str,
    ) -> Result<VmPayloadConfig, ConfigError> {
        let json = apk.read_entry(config_path, MAX_CONFIG_SIZE)?;
        let origin = format!("{config_path:?} in APK {:?}", apk.path());
        VmPayloadConfig::from_json(&json, &origin)
    }

    /// The config the guest uses for `metadata` (what the host wrote in the
    /// `payload-metadata` partition): the JSON it points to in `apk`, or the implicit config
    /// of a payload binary.
    pub fn from_metadata<R: Read + Seek>(
        metadata: &Metadata,
        apk: &mut Apk<R>,
    ) -> Result<VmPayloadConfig, ConfigError> {
        match &metadata.payload {
            Some(PayloadSource::ConfigPath(path)) => {
                let in_apk = metadata.config_path_in_apk().ok_or_else(|| {
                    ConfigError::Metadata(format!(
                        "config path {path:?} is not under {}",
                        super::metadata::APK_MOUNT_POINT
                    ))
                })?;
                VmPayloadConfig::from_open_apk(apk, in_apk)
            }
            Some(PayloadSource::Config(c)) => {
                VmPayloadConfig::for_payload_binary(&c.payload_binary_name, c.extra_apk_count)
            }
            None => Err(ConfigError::Metadata("it names no payload".into())),
        }
    }

    /// The implicit config of the no-JSON mode: run the library `name` from the APK with
    /// `microdroid_launcher`, with `extra_apk_count` extra APKs (placeholder paths
    /// `extra-apk-<i>`; only their number matters). `name` must be a plain file name.
    pub fn for_payload_binary(
        name: &str,
        extra_apk_count: u32,
    ) -> Result<VmPayloadConfig, ConfigError> {
        let bad = |reason| ConfigError::PayloadBinaryName {
            name: name.into(),
            reason,
        };
        if name.is_empty() {
            return Err(bad("must not be empty"));
        }
        if name.contains('/') {
            return Err(bad("must not contain '/'"));
        }
        if name == "." || name == ".." || name.contains('\0') {
            return Err(bad("must be a file name"));
        }
        Ok(VmPayloadConfig {
            os: OsConfig::default(),
            task: Some(Task {
                kind: TaskType::MicrodroidLauncher,
                command: name.into(),
            }),
            apexes: Vec::new(),
            extra_apks: (0..extra_apk_count)
                .map(|i| ApkConfig {
                    path: format!("extra-apk-{i}"),
                })
                .collect(),
            prefer_staged: false,
            export_tombstones: None,
            enable_authfs: false,
            hugepages: false,
        })
    }

    /// The OS to run: `os.name`, or [`DEFAULT_OS`] when it is empty.
    pub fn os_name(&self) -> &str {
        if self.os.name.is_empty() {
            DEFAULT_OS
        } else {
            &self.os.name
        }
    }

    /// The checks Android leaves to later stages (see the module documentation).
    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, reason: &str| ConfigError::Invalid {
            origin: origin.into(),
            key,
            reason: reason.into(),
        };
        let name = &self.os.name;
        if !name.is_empty()
            && (name.len() > MAX_OS_NAME_LEN
                || name.starts_with('.')
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)))
        {
            return Err(invalid(
                "os.name".into(),
                "must be a plain name (letters, digits, '_', '-', '.'; at most 64; not \
                 starting with '.')",
            ));
        }
        if let Some(task) = &self.task {
            let command = &task.command;
            let reason = match task.kind {
                _ if command.is_empty() => Some("must not be empty"),
                _ if command.contains('\0') => Some("must not contain NUL"),
                TaskType::Executable if !command.starts_with('/') => {
                    Some("an executable task's command must be an absolute path in the guest")
                }
                TaskType::MicrodroidLauncher
                    if command.contains('/') || command == "." || command == ".." =>
                {
                    Some("a microdroid_launcher task's command must be a library file name")
                }
                _ => None,
            };
            if let Some(reason) = reason {
                return Err(invalid("task.command".into(), reason));
            }
        }
        for (i, apex) in self.apexes.iter().enumerate() {
            if apex.name.is_empty() {
                return Err(invalid(format!("apexes[{i}].name"), "must not be empty"));
            }
        }
        for (i, apk) in self.extra_apks.iter().enumerate() {
            if !apk.path.starts_with('/') {
                return Err(invalid(
                    format!("extra_apks[{i}].path"),
                    "must be an absolute path",
                ));
            }
        }
        Ok(())
    }
}

/// The key an error is about: the path where it happened, plus the field for a missing one
/// (serde reports a missing field at its parent).
fn key_of(path: &str, reason: &str) -> String {
    let missing = reason
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next());
    match (path, missing) {
        (".", Some(field)) => field.into(),
        (_, Some(field)) => format!("{path}.{field}"),
        _ => path.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::metadata::Metadata;
    use crate::payload::testutil::{TempDir, zip_of};

    fn parse(json: &str) -> Result<VmPayloadConfig, ConfigError> {
        VmPayloadConfig::from_json(json.as_bytes(), "test.json")
    }

    fn err_key(json: &str) -> String {
        match parse(json) {
            Err(ConfigError::Json { key, .. } | ConfigError::Invalid { key, .. }) => key,
            other => panic!("{json}: {other:?}"),
        }
    }

    #[test]
    fn full_config() {
        let c = parse(
            r#"{
                "version": 1,
                "os": {"name": "microdroid"},
                "task": {"type": "microdroid_launcher", "command": "libmain.so"},
                "apexes": [{"name": "com.android.art"}, {"name": "{CLASSPATH}"}],
                "extra_apks": [{"path": "/data/app/extra.apk"}],
                "prefer_staged": true,
                "export_tombstones": false,
                "enable_authfs": true,
                "hugepages": true,
                "some_future_key": {"x": [1, 2]}
            }"#,
        )
        .unwrap();
        assert_eq!(c.os_name(), "microdroid");
        assert_eq!(
            c.task,
            Some(Task {
                kind: TaskType::MicrodroidLauncher,
                command: "libmain.so".into()
            })
        );
        assert_eq!(c.apexes.len(), 2);
        assert_eq!(c.apexes[1].name, "{CLASSPATH}");
        assert_eq!(c.extra_apks[0].path, "/data/app/extra.apk");
        assert!(c.prefer_staged && c.enable_authfs && c.hugepages);
        assert_eq!(c.export_tombstones, Some(false));
    }

    #[test]
    fn defaults() {
        let c = parse(r#"{"task": {"command": "/bin/true"}}"#).unwrap();
        assert_eq!(c.os.name, "");
        assert_eq!(c.os_name(), DEFAULT_OS);
        assert_eq!(c.task.as_ref().unwrap().kind, TaskType::Executable);
        assert!(c.apexes.is_empty() && c.extra_apks.is_empty());
        assert!(!c.prefer_staged && !c.enable_authfs && !c.hugepages);
        assert_eq!(c.export_tombstones, None);
        assert_eq!(parse("{}").unwrap().task, None);
        // Android 13's args, empty.
        assert!(parse(r#"{"task": {"command": "/bin/true", "args": []}}"#).is_ok());
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(err_key(r#"{"task": {}}"#), "task.command");
        assert_eq!(err_key(r#"{"task": {"command": 5}}"#), "task.command");
        assert_eq!(err_key(r#"{"task": {"command": ""}}"#), "task.command");
        assert_eq!(err_key(r#"{"task": {"command": "bin/x"}}"#), "task.command");
        assert_eq!(
            err_key(r#"{"task": {"type": "microdroid_launcher", "command": "../x.so"}}"#),
            "task.command"
        );
        assert_eq!(
            err_key(r#"{"task": {"type": "shell", "command": "/x"}}"#),
            "task.type"
        );
        assert_eq!(
            err_key(r#"{"task": {"command": "/x", "args": ["-v"]}}"#),
            "task"
        );
        assert_eq!(
            err_key(r#"{"apexes": [{"name": "a"}, {}]}"#),
            "apexes[1].name"
        );
        assert_eq!(err_key(r#"{"apexes": [{"name": ""}]}"#), "apexes[0].name");
        assert_eq!(
            err_key(r#"{"extra_apks": [{"path": "rel.apk"}]}"#),
            "extra_apks[0].path"
        );
        assert_eq!(err_key(r#"{"prefer_staged": "yes"}"#), "prefer_staged");
        assert_eq!(err_key(r#"{"export_tombstones": 1}"#), "export_tombstones");
        assert_eq!(err_key(r#"{"os": {"name": "../etc/x"}}"#), "os.name");
        assert_eq!(err_key(r#"{"os": {}}"#), "os.name");
        assert_eq!(err_key("5"), ".");
        assert_eq!(err_key("{} {}"), ".");
        assert_eq!(err_key("not json"), ".");
        let e = parse(r#"{"task": {}}"#).unwrap_err().to_string();
        assert!(
            e.contains("test.json") && e.contains("missing field"),
            "{e}"
        );
    }

    #[test]
    fn from_apk_names_the_apk_and_the_path() {
        let dir = TempDir::new("config-apk");
        let apk = dir.file(
            "app.apk",
            &zip_of(&[
                ("assets/vm_config.json", br#"{"task": {"command": 1}}"#),
                ("assets/ok.json", br#"{"task": {"command": "/bin/x"}}"#),
            ]),
        );
        let e = VmPayloadConfig::from_apk(&apk, "assets/vm_config.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("app.apk")
                && e.contains("assets/vm_config.json")
                && e.contains("task.command"),
            "{e}"
        );
        let e = VmPayloadConfig::from_apk(&apk, "assets").unwrap_err();
        assert!(
            matches!(e, ConfigError::Apk(ApkError::IsDirectory { .. })),
            "{e}"
        );
        let e = VmPayloadConfig::from_apk(&apk, "assets/none.json").unwrap_err();
        assert!(
            matches!(e, ConfigError::Apk(ApkError::NoEntry { .. })),
            "{e}"
        );
        assert!(VmPayloadConfig::from_apk(&apk, "assets/ok.json").is_ok());
        // Through the metadata, as the guest does.
        let mut opened = Apk::open(&apk).unwrap();
        let m = Metadata::for_app("assets/ok.json", &[]);
        let c = VmPayloadConfig::from_metadata(&m, &mut opened).unwrap();
        assert_eq!(c.task.unwrap().command, "/bin/x");
        let m = Metadata::for_payload_binary("libmain.so", 2);
        let c = VmPayloadConfig::from_metadata(&m, &mut opened).unwrap();
        assert_eq!(c.extra_apks.len(), 2);
        let mut m = Metadata::for_app("x", &[]);
        m.payload = None;
        assert!(VmPayloadConfig::from_metadata(&m, &mut opened).is_err());
    }

    #[test]
    fn config_too_large() {
        let dir = TempDir::new("config-big");
        let mut json = b"{}".to_vec();
        json.resize(MAX_CONFIG_SIZE as usize + 1, b' ');
        let apk = dir.file("app.apk", &zip_of(&[("c.json", &json)]));
        let e = VmPayloadConfig::from_apk(&apk, "c.json").unwrap_err();
        assert!(
            matches!(e, ConfigError::Apk(ApkError::TooLarge { .. })),
            "{e}"
        );
    }

    #[test]
    fn payload_binary_mode() {
        let c = VmPayloadConfig::for_payload_binary("libmain.so", 2).unwrap();
        assert_eq!(
            c.task,
            Some(Task {
                kind: TaskType::MicrodroidLauncher,
                command: "libmain.so".into()
            })
        );
        let paths: Vec<&str> = c.extra_apks.iter().map(|a| a.path.as_str()).collect();
        assert_eq!(paths, ["extra-apk-0", "extra-apk-1"]);
        assert_eq!(c.export_tombstones, None);
        assert_eq!(c.os_name(), "microdroid");
        for bad in ["", "lib/x.so", "/x.so", "..", "."] {
            assert!(
                matches!(
                    VmPayloadConfig::for_payload_binary(bad, 0),
                    Err(ConfigError::PayloadBinaryName { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
