//! Android's vmconfig JSON (the file `vm run <config.json>` takes, and the shape of
//! `/apex/com.android.virt/etc/microdroid.json`), parsed and validated into micro-vmm's plain
//! configuration types.
//!
//! The schema is AVF's `libs/vmconfig` `VmConfig` (Android 13 to 15):
//!
//! | key | type | micro-vmm |
//! |---|---|---|
//! | `name` | string | kept |
//! | `kernel`, `initrd`, `params` | path, path, string | [`BootSource::Kernel`] |
//! | `bootloader` | path | [`BootSource::Firmware`]; exactly one of `kernel`/`bootloader` |
//! | `disks` | array of `{image?, partitions?, writable}` | [`DiskConfig`], in guest order |
//! | `disks[].format`, `disks[].allow_block_devices` | `"raw"`/`"composite"`, bool | micro-vmm's own (not AVF's): an image's format (a writable image without it is raw), and whether a composite may name block devices |
//! | `protected` | bool | `true` is refused (needs pKVM) |
//! | `memory_mib` | non-zero u32 | checked against micro-vmm's RAM limits |
//! | `cpu_topology` | `"one_cpu"` or `"match_host"` | a vCPU count |
//! | `platform_version` | SemVer requirement, required | must match `1.0.0` |
//! | `devices` | array of sysfs paths (VFIO) | must be empty |
//! | `console_input_device` | `"hvc0"` or `"ttyS0"` | kept; input always goes to ttyS0 |
//!
//! Unlike AVF's serde struct, unknown keys and duplicate keys are errors. `null` is accepted
//! wherever AVF has an `Option` (it means "absent") and refused elsewhere, as serde does.
//! Relative paths are resolved against the JSON file's directory; nothing is opened here.
//! Every error names the file and the key (`vm.json: disks[1].partitions[0].writable: ...`).

use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::config::{
    BootSource, DiskConfig, ImageFormat, MAX_MEM_MIB, MAX_VCPUS, MIN_MEM_MIB, PartitionConfig,
    validate_cmdline,
};

/// Files (and strings) larger than this are refused before parsing.
pub const MAX_FILE_SIZE: u64 = 1 << 20;

/// The virtual platform version micro-vmm implements: crosvm's `CROSVM_PLATFORM_VERSION`,
/// which `platform_version` is checked against.
pub const PLATFORM_VERSION: (u64, u64, u64) = (1, 0, 0);

/// Longest GPT partition name, in UTF-16 code units.
const MAX_LABEL_UTF16: usize = 36;

/// Longest user-supplied string quoted in an error message.
const MAX_QUOTED: usize = 64;

/// What a vmconfig JSON file says, validated; paths resolved against the file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfigFile {
    pub name: Option<String>,
    /// `Kernel { kernel, initrd, cmdline: params or "" }` or `Firmware { image: bootloader }`.
    /// Always `Some` in a successfully parsed file (exactly one of the two is required).
    pub boot: Option<BootSource>,
    /// `memory_mib`, within `MIN_MEM_MIB..=MAX_MEM_MIB`.
    pub mem_mib: Option<u64>,
    /// `one_cpu` -> 1, `match_host` -> the host's CPU count (at most `MAX_VCPUS`); absent ->
    /// `None` (AVF's default is one CPU).
    pub vcpus: Option<u8>,
    /// In guest order.
    pub disks: Vec<DiskConfig>,
    /// `"hvc0"` or `"ttyS0"`, as written. micro-vmm has no virtio-console, so console input
    /// goes to ttyS0 either way.
    pub console_input_device: Option<String>,
}

/// Why a vmconfig file was refused. Every message starts with the file name, then the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VmConfigError {
    /// The file could not be opened or read (`reason` is the OS error's text).
    #[error("{file}: {reason}")]
    Io {
        file: String,
        kind: std::io::ErrorKind,
        reason: String,
    },
    #[error("{file}: the file is larger than 1 MiB{}, the limit for a vmconfig file", size_note(.size))]
    TooLarge { file: String, size: Option<u64> },
    #[error("{file}: invalid JSON: {reason}")]
    Syntax { file: String, reason: String },
    #[error("{}: unknown key {} (known keys: {known})", loc(.file, .at), quote(.key))]
    UnknownKey {
        file: String,
        /// The object holding the key ("" for the top level).
        at: String,
        key: String,
        /// The keys that object may hold, comma-separated.
        known: String,
    },
    #[error("{}: missing required key {key:?}", loc(.file, .at))]
    MissingKey {
        file: String,
        at: String,
        key: &'static str,
    },
    #[error("{}: expected {expected}, found {found}", loc(.file, .at))]
    WrongType {
        file: String,
        at: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{}: {reason}", loc(.file, .at))]
    Invalid {
        file: String,
        at: String,
        reason: String,
    },
    /// Valid for AVF, but a feature micro-vmm does not have (protected VMs, VFIO).
    #[error("{}: {reason}", loc(.file, .at))]
    Unsupported {
        file: String,
        at: String,
        reason: String,
    },
}

fn loc(file: &str, at: &str) -> String {
    if at.is_empty() {
        file.to_string()
    } else {
        format!("{file}: {at}")
    }
}

fn size_note(size: &Option<u64>) -> String {
    match size {
        Some(n) => format!(" ({n} bytes)"),
        None => String::new(),
    }
}

/// A user string for an error message: cut to a sane length, then quoted and escaped.
fn quote(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTED) {
        Some((i, _)) => format!("{:?}...", &s[..i]),
        None => format!("{s:?}"),
    }
}

/// Reads and validates the vmconfig file at `path`. Relative paths inside it are resolved
/// against `path`'s directory. Files over 1 MiB are refused without being parsed.
pub fn load(path: &Path) -> Result<VmConfigFile, VmConfigError> {
    let file = path.display().to_string();
    let io = |e: std::io::Error| VmConfigError::Io {
        file: file.clone(),
        kind: e.kind(),
        reason: e.to_string(),
    };
    // A FIFO nobody writes to must not hang us in open(2): it reads as empty instead.
    let f = crate::fsutil::open_read_no_wait(path).map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    if meta.is_file() && meta.len() > MAX_FILE_SIZE {
        return Err(VmConfigError::TooLarge {
            file,
            size: Some(meta.len()),
        });
    }
    // Bounded read: a pipe or a file growing under us is cut at the limit too.
    let mut bytes = Vec::new();
    f.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(VmConfigError::TooLarge { file, size: None });
    }
    let json = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            return Err(VmConfigError::Syntax {
                file,
                reason: format!(
                    "not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            });
        }
    };
    let base_dir = path.parent().unwrap_or(Path::new(""));
    parse_as(&file, &json, base_dir)
}

/// Parses and validates vmconfig JSON text; relative paths are resolved against `base_dir`.
/// Error messages call the input "vmconfig JSON" (see [`load`] for files).
pub fn parse(json: &str, base_dir: &Path) -> Result<VmConfigFile, VmConfigError> {
    parse_as("vmconfig JSON", json, base_dir)
}

/// Like [`parse`], with `file` as the name error messages give the input.
pub fn parse_as(file: &str, json: &str, base_dir: &Path) -> Result<VmConfigFile, VmConfigError> {
    if json.len() as u64 > MAX_FILE_SIZE {
        return Err(VmConfigError::TooLarge {
            file: file.to_string(),
            size: Some(json.len() as u64),
        });
    }
    let value: Json = serde_json::from_str(json).map_err(|e| VmConfigError::Syntax {
        file: file.to_string(),
        reason: e.to_string(),
    })?;
    Ctx { file, base_dir }.config(value)
}

// ---------------------------------------------------------------------------------------------
// A JSON value that keeps duplicate keys out (serde_json::Value silently keeps the last one).

enum Json {
    Null,
    Bool(bool),
    UInt(u64),
    NegInt,
    Float,
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::UInt(_) => "a number",
            Json::NegInt => "a negative number",
            Json::Float => "a non-integer number",
            Json::Str(_) => "a string",
            Json::Arr(_) => "an array",
            Json::Obj(_) => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(u64::try_from(v).map_or(Json::NegInt, Json::UInt))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::UInt(v))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Json, E> {
        Ok(Json::Float)
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::Str(v))
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        Json::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(Json::Arr(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut seen = HashSet::new();
        let mut fields = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key {}",
                    quote(&key)
                )));
            }
            fields.push((key, map.next_value()?));
        }
        Ok(Json::Obj(fields))
    }
}

// ---------------------------------------------------------------------------------------------
// Validation.

const TOP_KEYS: &[&str] = &[
    "name",
    "kernel",
    "initrd",
    "params",
    "bootloader",
    "disks",
    "protected",
    "memory_mib",
    "cpu_topology",
    "platform_version",
    "devices",
    "console_input_device",
];
const DISK_KEYS: &[&str] = &[
    "image",
    "partitions",
    "writable",
    "format",
    "allow_block_devices",
];
const PARTITION_KEYS: &[&str] = &["label", "path", "writable"];

/// The key/value pairs of one JSON object, checked against its known keys.
struct Fields {
    /// Where the object is ("" for the top level, "disks[0]", ...).
    at: String,
    fields: Vec<(&'static str, Json)>,
}

impl Fields {
    /// Removes and returns `key`'s value, if present.
    fn take(&mut self, key: &str) -> Option<Json> {
        let i = self.fields.iter().position(|(k, _)| *k == key)?;
        Some(self.fields.swap_remove(i).1)
    }

    fn key_path(&self, key: &str) -> String {
        if self.at.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.at)
        }
    }
}

struct Ctx<'a> {
    file: &'a str,
    base_dir: &'a Path,
}

type Result<T, E = VmConfigError> = std::result::Result<T, E>;

impl Ctx<'_> {
    fn invalid(&self, at: &str, reason: impl Into<String>) -> VmConfigError {
        VmConfigError::Invalid {
            file: self.file.to_string(),
            at: at.to_string(),
            reason: reason.into(),
        }
    }

    fn unsupported(&self, at: &str, reason: impl Into<String>) -> VmConfigError {
        VmConfigError::Unsupported {
            file: self.file.to_string(),
            at: at.to_string(),
            reason: reason.into(),
        }
    }

    fn wrong_type(&self, at: &str, expected: &'static str, found: &Json) -> VmConfigError {
        VmConfigError::WrongType {
            file: self.file.to_string(),
            at: at.to_string(),
            expected,
            found: found.kind(),
        }
    }

    fn missing(&self, at: &str, key: &'static str) -> VmConfigError {
        VmConfigError::MissingKey {
            file: self.file.to_string(),
            at: at.to_string(),
            key,
        }
    }

    /// Checks that `v` is an object holding only the given keys.
    fn object(&self, at: String, v: Json, keys: &'static [&'static str]) -> Result<Fields> {
        let Json::Obj(pairs) = v else {
            return Err(self.wrong_type(&at, "an object", &v));
        };
        let mut fields = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            match keys.iter().find(|k| **k == key) {
                Some(k) => fields.push((*k, value)),
                None => {
                    return Err(VmConfigError::UnknownKey {
                        file: self.file.to_string(),
                        at,
                        key,
                        known: keys.join(", "),
                    });
                }
            }
        }
        Ok(Fields { at, fields })
    }

    /// An optional string (`null` counts as absent).
    fn opt_string(&self, f: &mut Fields, key: &'static str) -> Result<Option<String>> {
        match f.take(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Str(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong_type(&f.key_path(key), "a string", &v)),
        }
    }

    /// An optional path (`null` counts as absent), resolved against the base directory.
    fn opt_path(&self, f: &mut Fields, key: &'static str) -> Result<Option<PathBuf>> {
        let at = f.key_path(key);
        match self.opt_string(f, key)? {
            None => Ok(None),
            Some(s) => self.path(&at, s).map(Some),
        }
    }

    fn path(&self, at: &str, s: String) -> Result<PathBuf> {
        if s.is_empty() {
            return Err(self.invalid(at, "the path is empty"));
        }
        if s.contains('\0') {
            return Err(self.invalid(at, "the path contains a NUL byte"));
        }
        let p = PathBuf::from(s);
        Ok(if p.is_absolute() {
            p
        } else {
            self.base_dir.join(p)
        })
    }

    /// A boolean; absent means `default` (`None`: the key is required).
    fn bool(&self, f: &mut Fields, key: &'static str, default: Option<bool>) -> Result<bool> {
        match (f.take(key), default) {
            (Some(Json::Bool(b)), _) => Ok(b),
            (Some(v), _) => Err(self.wrong_type(&f.key_path(key), "true or false", &v)),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(self.missing(&f.at, key)),
        }
    }

    /// An array; absent means empty (`null` is refused, as serde does for a `Vec`).
    fn array(&self, f: &mut Fields, key: &'static str) -> Result<Vec<Json>> {
        match f.take(key) {
            None => Ok(Vec::new()),
            Some(Json::Arr(items)) => Ok(items),
            Some(v) => Err(self.wrong_type(&f.key_path(key), "an array", &v)),
        }
    }

    fn config(&self, v: Json) -> Result<VmConfigFile> {
        let mut f = self.object(String::new(), v, TOP_KEYS)?;

        let name = self.opt_string(&mut f, "name")?;
        let kernel = self.opt_path(&mut f, "kernel")?;
        let initrd = self.opt_path(&mut f, "initrd")?;
        let params = self.opt_string(&mut f, "params")?;
        let bootloader = self.opt_path(&mut f, "bootloader")?;
        let disks = self.array(&mut f, "disks")?;
        let protected = self.bool(&mut f, "protected", Some(false))?;
        let memory_mib = f.take("memory_mib");
        let cpu_topology = self.opt_string(&mut f, "cpu_topology")?;
        let platform_version = f.take("platform_version");
        let devices = self.array(&mut f, "devices")?;
        let console_input_device = self.opt_string(&mut f, "console_input_device")?;

        // platform_version first: a config written for another platform says so, whatever
        // else is wrong with it.
        match platform_version {
            None => return Err(self.missing("", "platform_version")),
            Some(Json::Str(req)) => self.platform_version(&req)?,
            Some(v) => return Err(self.wrong_type("platform_version", "a string", &v)),
        }

        if protected {
            return Err(self.unsupported(
                "protected",
                "protected VMs need pKVM, which x86 KVM does not have; \
                 set \"protected\": false",
            ));
        }

        for (i, d) in devices.iter().enumerate() {
            if !matches!(d, Json::Str(_)) {
                return Err(self.wrong_type(&format!("devices[{i}]"), "a sysfs path string", d));
            }
        }
        if !devices.is_empty() {
            return Err(self.unsupported(
                "devices",
                format!(
                    "VFIO device assignment is not supported by micro-vmm \
                     ({} device(s) listed); remove them or use an empty list",
                    devices.len()
                ),
            ));
        }

        let boot = match (kernel, bootloader) {
            (Some(kernel), None) => {
                let cmdline = validate_cmdline(params.as_deref().unwrap_or(""))
                    .map_err(|e| self.invalid("params", e.to_string()))?;
                Some(BootSource::Kernel {
                    kernel,
                    initrd,
                    cmdline,
                })
            }
            (None, Some(image)) => {
                if initrd.is_some() {
                    return Err(self.invalid("initrd", "not allowed together with \"bootloader\""));
                }
                if params.is_some() {
                    return Err(self.invalid(
                        "params",
                        "not allowed together with \"bootloader\" \
                         (micro-vmm starts firmware without a command line)",
                    ));
                }
                Some(BootSource::Firmware { image })
            }
            (Some(_), Some(_)) => {
                return Err(self.invalid(
                    "",
                    "exactly one of \"kernel\" or \"bootloader\" is allowed, both are given",
                ));
            }
            (None, None) => {
                return Err(self.invalid(
                    "",
                    "exactly one of \"kernel\" or \"bootloader\" is required, neither is given",
                ));
            }
        };

        let mem_mib = match memory_mib {
            None | Some(Json::Null) => None,
            Some(Json::UInt(0)) => {
                return Err(self.invalid("memory_mib", "must not be 0"));
            }
            Some(Json::UInt(n)) => {
                // (AVF's limit is u32; micro-vmm's range is narrower.)
                if !(MIN_MEM_MIB..=MAX_MEM_MIB).contains(&n) {
                    return Err(self.invalid(
                        "memory_mib",
                        format!("{n} MiB is out of range ({MIN_MEM_MIB}..={MAX_MEM_MIB} MiB)"),
                    ));
                }
                Some(n)
            }
            Some(v) => {
                return Err(self.wrong_type("memory_mib", "a positive integer (MiB)", &v));
            }
        };

        let vcpus = match cpu_topology.as_deref() {
            None => None,
            Some("one_cpu") => Some(1),
            Some("match_host") => Some(host_cpus()),
            Some(other) => {
                return Err(self.invalid(
                    "cpu_topology",
                    format!("{} is not \"one_cpu\" or \"match_host\"", quote(other)),
                ));
            }
        };

        match console_input_device.as_deref() {
            None | Some("ttyS0") => {}
            Some("hvc0") => log::warn!(
                "{}: console_input_device \"hvc0\": micro-vmm has no virtio-console; \
                 console input goes to ttyS0",
                self.file
            ),
            Some(other) => {
                return Err(self.invalid(
                    "console_input_device",
                    format!("{} is not \"hvc0\" or \"ttyS0\"", quote(other)),
                ));
            }
        }

        let disks = disks
            .into_iter()
            .enumerate()
            .map(|(i, d)| self.disk(i, d))
            .collect::<Result<Vec<_>>>()?;

        Ok(VmConfigFile {
            name,
            boot,
            mem_mib,
            vcpus,
            disks,
            console_input_device,
        })
    }

    fn platform_version(&self, req: &str) -> Result<()> {
        let (a, b, c) = PLATFORM_VERSION;
        match version_req_matches(req, PLATFORM_VERSION) {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.invalid(
                "platform_version",
                format!(
                    "{} does not match micro-vmm's platform version {a}.{b}.{c}",
                    quote(req)
                ),
            )),
            Err(why) => Err(self.invalid(
                "platform_version",
                format!(
                    "{} is not a supported SemVer requirement: {why} \
                     (supported: comparators such as \"~1.0\", \"^1.0\", \"1.0\", \
                     \"=1.0.0\", \">=1.0, <2\")",
                    quote(req)
                ),
            )),
        }
    }

    fn disk(&self, i: usize, v: Json) -> Result<DiskConfig> {
        let at = format!("disks[{i}]");
        let mut f = self.object(at.clone(), v, DISK_KEYS)?;
        let image = self.opt_path(&mut f, "image")?;
        let partitions = self.array(&mut f, "partitions")?;
        let writable = self.bool(&mut f, "writable", None)?;
        let format_at = f.key_path("format");
        let format = match self.opt_string(&mut f, "format")? {
            None => None,
            Some(s) => Some(ImageFormat::parse(&s).ok_or_else(|| {
                self.invalid(
                    &format_at,
                    format!(
                        "{} is not a known format (\"raw\" or \"composite\")",
                        quote(&s)
                    ),
                )
            })?),
        };
        let allow_block_devices = self.bool(&mut f, "allow_block_devices", Some(false))?;

        match (image, partitions.is_empty()) {
            (Some(path), true) => Ok(DiskConfig::Image {
                path,
                writable,
                format,
                allow_block_devices,
            }),
            (None, false) if format.is_some() || allow_block_devices => Err(self.invalid(
                &at,
                "\"format\" and \"allow_block_devices\" apply to an \"image\", not to \"partitions\"",
            )),
            (None, false) => {
                let mut parts: Vec<PartitionConfig> = Vec::with_capacity(partitions.len());
                for (j, p) in partitions.into_iter().enumerate() {
                    let part_at = format!("{at}.partitions[{j}]");
                    let part = self.partition(part_at.clone(), p)?;
                    if let Some(k) = parts.iter().position(|q| q.label == part.label) {
                        return Err(self.invalid(
                            &format!("{part_at}.label"),
                            format!(
                                "duplicate label {} (also partitions[{k}])",
                                quote(&part.label)
                            ),
                        ));
                    }
                    parts.push(part);
                }
                Ok(DiskConfig::Composite {
                    partitions: parts,
                    writable,
                })
            }
            _ => Err(self.invalid(&at, "exactly one of \"image\" or non-empty \"partitions\"")),
        }
    }

    fn partition(&self, at: String, v: Json) -> Result<PartitionConfig> {
        let mut f = self.object(at, v, PARTITION_KEYS)?;
        let label = match f.take("label") {
            Some(Json::Str(s)) => s,
            Some(v) => return Err(self.wrong_type(&f.key_path("label"), "a string", &v)),
            None => return Err(self.missing(&f.at, "label")),
        };
        let label_at = f.key_path("label");
        if label.is_empty() {
            return Err(self.invalid(&label_at, "the label is empty"));
        }
        if label.contains('\0') {
            return Err(self.invalid(&label_at, "the label contains a NUL character"));
        }
        if label.encode_utf16().count() > MAX_LABEL_UTF16 {
            return Err(self.invalid(
                &label_at,
                format!(
                    "{} is longer than a GPT partition name ({MAX_LABEL_UTF16} UTF-16 units)",
                    quote(&label)
                ),
            ));
        }
        let path = match f.take("path") {
            Some(Json::Str(s)) => self.path(&f.key_path("path"), s)?,
            Some(v) => return Err(self.wrong_type(&f.key_path("path"), "a string", &v)),
            None => return Err(self.missing(&f.at, "path")),
        };
        let writable = self.bool(&mut f, "writable", Some(false))?;
        Ok(PartitionConfig {
            label,
            path,
            writable,
        })
    }
}

/// `match_host`: the CPUs this process may run on, at most `MAX_VCPUS`.
fn host_cpus() -> u8 {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    u8::try_from(n.min(usize::from(MAX_VCPUS))).unwrap_or(MAX_VCPUS)
}

// ---------------------------------------------------------------------------------------------
// SemVer requirements: the subset of the `semver` crate's `VersionReq` that Android configs
// use. Comma-separated comparators, all of which must match; each is an optional operator
// (`=`, `>`, `>=`, `<`, `<=`, `~`, `^`; none means `^`) and a version of one to three numeric
// parts, or `*`. Pre-release and build metadata are refused. The semantics of partial versions
// follow the `semver` crate (e.g. `~1.0` is `>=1.0.0, <1.1.0`; `^1.0` is `>=1.0.0, <2.0.0`).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Exact,
    Greater,
    GreaterEq,
    Less,
    LessEq,
    Tilde,
    Caret,
}

/// Whether `version` satisfies the requirement `req`; `Err` says why `req` is not understood.
fn version_req_matches(req: &str, version: (u64, u64, u64)) -> Result<bool, String> {
    if req.trim().is_empty() {
        return Err("it is empty".into());
    }
    if matches!(req.trim(), "*" | "x" | "X") {
        return Ok(true);
    }
    let mut all = true;
    // Every comparator is parsed, even after one fails to match, so that garbage is reported.
    for comparator in req.split(',') {
        all &= comparator_matches(comparator.trim(), version)?;
    }
    Ok(all)
}

fn comparator_matches(c: &str, v: (u64, u64, u64)) -> Result<bool, String> {
    if c.is_empty() {
        return Err("a comparator is empty".into());
    }
    if matches!(c, "*" | "x" | "X") {
        return Err(format!(
            "{}: a wildcard must be the only comparator",
            quote(c)
        ));
    }
    let (op, rest) = [
        (">=", Op::GreaterEq),
        ("<=", Op::LessEq),
        (">", Op::Greater),
        ("<", Op::Less),
        ("=", Op::Exact),
        ("~", Op::Tilde),
        ("^", Op::Caret),
    ]
    .iter()
    .find_map(|(p, op)| c.strip_prefix(p).map(|rest| (*op, rest.trim_start())))
    .unwrap_or((Op::Caret, c));
    let op_given = rest.len() != c.len();

    if rest.contains(['-', '+']) {
        return Err(format!(
            "{}: pre-release and build metadata are not supported",
            quote(c)
        ));
    }
    let parts: Vec<&str> = rest.split('.').collect();
    if parts.len() > 3 {
        return Err(format!("{}: more than three version parts", quote(c)));
    }
    // Trailing wildcards (`>=1.0.x`) mean the same as leaving the parts out, except that
    // without an operator (`1.*`) they mean `=` rather than `^`.
    let mut nums = Vec::with_capacity(3);
    let mut wildcard = false;
    for part in &parts {
        if matches!(*part, "*" | "x" | "X") {
            if nums.is_empty() {
                return Err(format!("{}: unsupported wildcard", quote(c)));
            }
            wildcard = true;
            continue;
        }
        if wildcard {
            return Err(format!("{}: a number after a wildcard", quote(c)));
        }
        nums.push(number(part).ok_or_else(|| format!("{}: not a version", quote(c)))?);
    }
    let op = if wildcard && !op_given { Op::Exact } else { op };
    let Some(&major) = nums.first() else {
        return Err(format!("{}: not a version", quote(c)));
    };
    let (minor, patch) = (nums.get(1).copied(), nums.get(2).copied());
    let (vm, vn, _) = v;
    Ok(match (minor, patch) {
        (Some(minor), Some(patch)) => {
            let want = (major, minor, patch);
            match op {
                Op::Exact => v == want,
                Op::Greater => v > want,
                Op::GreaterEq => v >= want,
                Op::Less => v < want,
                Op::LessEq => v <= want,
                Op::Tilde => v >= want && (vm, vn) == (major, minor),
                Op::Caret if major > 0 => v >= want && vm == major,
                Op::Caret if minor > 0 => v >= want && (vm, vn) == (0, minor),
                Op::Caret => v == want,
            }
        }
        (Some(minor), None) => {
            let have = (vm, vn);
            let want = (major, minor);
            match op {
                Op::Exact | Op::Tilde => have == want,
                Op::Greater => have > want,
                Op::GreaterEq => have >= want,
                Op::Less => have < want,
                Op::LessEq => have <= want,
                Op::Caret if major > 0 => have >= want && vm == major,
                Op::Caret => have == want,
            }
        }
        _ => match op {
            Op::Exact | Op::Tilde | Op::Caret => vm == major,
            Op::Greater => vm > major,
            Op::GreaterEq => vm >= major,
            Op::Less => vm < major,
            Op::LessEq => vm <= major,
        },
    })
}

/// A SemVer numeric part: ASCII digits, no leading zero.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "/base/dir";

    fn ok(json: &str) -> VmConfigFile {
        match parse(json, Path::new(BASE)) {
            Ok(c) => c,
            Err(e) => panic!("{e}\n{json}"),
        }
    }

    /// Parses `json`, expects an error, and returns its message.
    fn err(json: &str) -> String {
        match parse(json, Path::new(BASE)) {
            Ok(c) => panic!("accepted: {c:?}\n{json}"),
            Err(e) => e.to_string(),
        }
    }

    /// A minimal valid config with `extra` spliced in (a leading comma is added).
    fn with(extra: &str) -> String {
        let sep = if extra.is_empty() { "" } else { ", " };
        format!(r#"{{"kernel": "/k", "platform_version": "~1.0"{sep}{extra}}}"#)
    }

    fn tempdir() -> vmm_sys_util::tempdir::TempDir {
        let base = std::env::temp_dir().join("micro-vmm-vmconfig");
        vmm_sys_util::tempdir::TempDir::new_with_prefix(base).unwrap()
    }

    #[test]
    fn android13_microdroid() {
        // microdroid/microdroid.json as shipped in Android 13.
        let c = ok(r#"{
          "bootloader": "/apex/com.android.virt/etc/microdroid_bootloader",
          "disks": [
            {
              "partitions": [
                { "label": "boot_a", "path": "/apex/com.android.virt/etc/fs/microdroid_boot-5.10.img" },
                { "label": "init_boot_a", "path": "/apex/com.android.virt/etc/fs/microdroid_init_boot.img" },
                { "label": "vendor_boot_a", "path": "/apex/com.android.virt/etc/fs/microdroid_vendor_boot-5.10.img" },
                { "label": "vbmeta_a", "path": "/apex/com.android.virt/etc/fs/microdroid_vbmeta.img" },
                { "label": "super", "path": "/apex/com.android.virt/etc/fs/microdroid_super.img" }
              ],
              "writable": false
            },
            {
              "partitions": [
                { "label": "uboot_env", "path": "/apex/com.android.virt/etc/uboot_env.img", "writable": false }
              ],
              "writable": true
            }
          ],
          "memory_mib": 256,
          "platform_version": "~1.0"
        }"#);
        assert_eq!(
            c.boot,
            Some(BootSource::Firmware {
                image: "/apex/com.android.virt/etc/microdroid_bootloader".into()
            })
        );
        assert_eq!(c.mem_mib, Some(256));
        assert_eq!(c.vcpus, None);
        assert_eq!(c.name, None);
        assert_eq!(c.console_input_device, None);
        assert_eq!(c.disks.len(), 2);
        let DiskConfig::Composite {
            partitions,
            writable,
        } = &c.disks[0]
        else {
            panic!("{:?}", c.disks[0]);
        };
        assert!(!writable);
        let labels: Vec<_> = partitions.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "boot_a",
                "init_boot_a",
                "vendor_boot_a",
                "vbmeta_a",
                "super"
            ]
        );
        assert!(partitions.iter().all(|p| !p.writable));
        assert_eq!(
            c.disks[1],
            DiskConfig::Composite {
                partitions: vec![PartitionConfig {
                    label: "uboot_env".into(),
                    path: "/apex/com.android.virt/etc/uboot_env.img".into(),
                    writable: false,
                }],
                writable: true,
            }
        );
    }

    #[test]
    fn android15_microdroid() {
        // microdroid/microdroid.json as shipped in Android 14 (15 adds console_input_device).
        let a14 = r#"{
          "kernel": "/apex/com.android.virt/etc/fs/microdroid_kernel",
          "disks": [
            {
              "partitions": [
                { "label": "vbmeta_a", "path": "/apex/com.android.virt/etc/fs/microdroid_vbmeta.img" },
                { "label": "super", "path": "/apex/com.android.virt/etc/fs/microdroid_super.img" }
              ],
              "writable": false
            }
          ],
          "memory_mib": 256,
          "platform_version": "~1.0"
        "#;
        let expected = VmConfigFile {
            name: None,
            boot: Some(BootSource::Kernel {
                kernel: "/apex/com.android.virt/etc/fs/microdroid_kernel".into(),
                initrd: None,
                cmdline: String::new(),
            }),
            mem_mib: Some(256),
            vcpus: None,
            disks: vec![DiskConfig::Composite {
                partitions: vec![
                    PartitionConfig {
                        label: "vbmeta_a".into(),
                        path: "/apex/com.android.virt/etc/fs/microdroid_vbmeta.img".into(),
                        writable: false,
                    },
                    PartitionConfig {
                        label: "super".into(),
                        path: "/apex/com.android.virt/etc/fs/microdroid_super.img".into(),
                        writable: false,
                    },
                ],
                writable: false,
            }],
            console_input_device: None,
        };
        assert_eq!(ok(&format!("{a14}}}")), expected);
        let a15 = ok(&format!("{a14}, \"console_input_device\": \"hvc0\"}}"));
        assert_eq!(
            a15,
            VmConfigFile {
                console_input_device: Some("hvc0".into()),
                ..expected
            }
        );
    }

    #[test]
    fn all_keys() {
        let c = ok(r#"{
          "name": "test-vm",
          "kernel": "/k",
          "initrd": "/i",
          "params": "console=ttyS0 panic=-1",
          "disks": [
            { "image": "/disk.img", "writable": true },
            { "image": "/ro.img", "partitions": [], "writable": false }
          ],
          "protected": false,
          "memory_mib": 512,
          "cpu_topology": "one_cpu",
          "platform_version": "^1.0",
          "devices": [],
          "console_input_device": "ttyS0"
        }"#);
        assert_eq!(
            c,
            VmConfigFile {
                name: Some("test-vm".into()),
                boot: Some(BootSource::Kernel {
                    kernel: "/k".into(),
                    initrd: Some("/i".into()),
                    cmdline: "console=ttyS0 panic=-1".into(),
                }),
                mem_mib: Some(512),
                vcpus: Some(1),
                disks: vec![
                    DiskConfig::image("/disk.img", true),
                    DiskConfig::image("/ro.img", false),
                ],
                console_input_device: Some("ttyS0".into()),
            }
        );
    }

    #[test]
    fn match_host() {
        let n = ok(&with(r#""cpu_topology": "match_host""#)).vcpus.unwrap();
        let host = std::thread::available_parallelism().unwrap().get();
        assert_eq!(usize::from(n), host.min(254));
    }

    #[test]
    fn nulls_mean_absent_for_optional_keys() {
        let c = ok(&with(
            r#""name": null, "initrd": null, "params": null, "bootloader": null,
               "memory_mib": null, "cpu_topology": null, "console_input_device": null,
               "disks": [{"image": "/d", "partitions": [], "writable": false}]"#,
        ));
        assert_eq!(c.name, None);
        assert_eq!(c.mem_mib, None);
        assert_eq!(c.vcpus, None);
        let c = ok(&with(
            r#""disks": [{"image": null, "partitions": [{"label": "a", "path": "/a"}], "writable": false}]"#,
        ));
        assert!(matches!(c.disks[0], DiskConfig::Composite { .. }));
        // Keys without an Option in AVF refuse null.
        for key in ["disks", "protected", "devices"] {
            let e = err(&with(&format!(r#""{key}": null"#)));
            assert!(e.contains(&format!("{key}: expected")), "{e}");
        }
    }

    #[test]
    fn relative_paths_resolve_against_the_file_dir() {
        let c = ok(r#"{
          "kernel": "boot/vmlinux", "initrd": "./initrd.img", "platform_version": "1.0",
          "disks": [
            { "image": "../disk.img", "writable": true },
            { "partitions": [ { "label": "a", "path": "parts/a.img", "writable": true },
                              { "label": "b", "path": "/abs/b.img" } ], "writable": true }
          ]
        }"#);
        assert_eq!(
            c.boot,
            Some(BootSource::Kernel {
                kernel: "/base/dir/boot/vmlinux".into(),
                initrd: Some("/base/dir/./initrd.img".into()),
                cmdline: String::new(),
            })
        );
        assert_eq!(
            c.disks,
            vec![
                DiskConfig::image("/base/dir/../disk.img", true),
                DiskConfig::Composite {
                    partitions: vec![
                        PartitionConfig {
                            label: "a".into(),
                            path: "/base/dir/parts/a.img".into(),
                            writable: true,
                        },
                        PartitionConfig {
                            label: "b".into(),
                            path: "/abs/b.img".into(),
                            writable: false,
                        },
                    ],
                    writable: true,
                },
            ]
        );
        let c = ok(r#"{"bootloader": "fw.bin", "platform_version": "1.0"}"#);
        assert_eq!(
            c.boot,
            Some(BootSource::Firmware {
                image: "/base/dir/fw.bin".into()
            })
        );
    }

    #[test]
    fn load_from_file() {
        let dir = tempdir();
        let path = dir.as_path().join("vm.json");
        std::fs::write(&path, with(r#""initrd": "initrd.img""#)).unwrap();
        let c = load(&path).unwrap();
        let Some(BootSource::Kernel { initrd, .. }) = c.boot else {
            panic!("{c:?}");
        };
        assert_eq!(initrd, Some(dir.as_path().join("initrd.img")));

        // Errors name the file as given.
        std::fs::write(&path, with(r#""memory_mib": 0"#)).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert_eq!(e, format!("{}: memory_mib: must not be 0", path.display()));

        let missing = dir.as_path().join("nope.json");
        let e = load(&missing).unwrap_err();
        assert!(matches!(e, VmConfigError::Io { .. }), "{e}");
        assert!(e.to_string().starts_with(&missing.display().to_string()));

        let e = load(dir.as_path()).unwrap_err();
        assert!(matches!(e, VmConfigError::Io { .. }), "{e}");

        std::fs::write(&path, b"{\"name\": \"\xff\"}").unwrap();
        let e = load(&path).unwrap_err();
        assert!(matches!(e, VmConfigError::Syntax { .. }), "{e}");
        assert!(e.to_string().contains("not UTF-8"), "{e}");
    }

    #[test]
    fn a_fifo_nobody_writes_is_an_error_not_a_hang() {
        let dir = tempdir();
        let fifo = dir.as_path().join("vm.json");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(load(&fifo).map(|_| ()).map_err(|e| e.to_string()));
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("load of a FIFO nobody writes returned within 5 s");
        assert!(got.is_err(), "{got:?}");
    }

    #[test]
    fn too_large() {
        let dir = tempdir();
        let path = dir.as_path().join("big.json");
        // Valid JSON padded with whitespace to 2 MiB: refused for its size alone.
        let mut json = with("");
        json.push_str(&" ".repeat(2 << 20));
        std::fs::write(&path, &json).unwrap();
        let e = load(&path).unwrap_err();
        assert!(
            matches!(e, VmConfigError::TooLarge { size: Some(n), .. } if n == json.len() as u64),
            "{e}"
        );
        assert!(e.to_string().contains("larger than 1 MiB"), "{e}");
        let e = parse(&json, Path::new(BASE)).unwrap_err();
        assert!(matches!(e, VmConfigError::TooLarge { .. }), "{e}");

        // Exactly 1 MiB is fine.
        let mut json = with("");
        json.push_str(&" ".repeat((1 << 20) - json.len()));
        std::fs::write(&path, &json).unwrap();
        load(&path).unwrap();
    }

    #[test]
    fn malformed_json() {
        for bad in [
            "",
            "{",
            "{\"kernel\": \"/k\",}",
            "{\"kernel\": \"/k\"} trailing",
            "[1, 2",
            "nul",
            "{'kernel': '/k'}",
            "\u{feff}{}",
        ] {
            let e = parse(bad, Path::new(BASE)).unwrap_err();
            assert!(matches!(e, VmConfigError::Syntax { .. }), "{bad:?}: {e}");
            assert!(
                e.to_string().starts_with("vmconfig JSON: invalid JSON: "),
                "{e}"
            );
        }
        // Deep nesting is an error, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            parse(&deep, Path::new(BASE)),
            Err(VmConfigError::Syntax { .. })
        ));
        let deep = format!(
            "{{\"name\": {}1{}}}",
            "{\"a\":".repeat(10_000),
            "}".repeat(10_000)
        );
        assert!(parse(&deep, Path::new(BASE)).is_err());
    }

    #[test]
    fn duplicate_keys() {
        let e = err(r#"{"kernel": "/a", "kernel": "/b", "platform_version": "1.0"}"#);
        assert!(e.contains("duplicate key \"kernel\""), "{e}");
    }

    #[test]
    fn not_an_object() {
        for (json, found) in [
            ("[]", "an array"),
            ("null", "null"),
            ("\"x\"", "a string"),
            ("1", "a number"),
        ] {
            assert_eq!(
                err(json),
                format!("vmconfig JSON: expected an object, found {found}")
            );
        }
        assert_eq!(
            err(&with(r#""disks": [1]"#)),
            "vmconfig JSON: disks[0]: expected an object, found a number"
        );
        assert_eq!(
            err(&with(
                r#""disks": [{"partitions": ["p"], "writable": true}]"#
            )),
            "vmconfig JSON: disks[0].partitions[0]: expected an object, found a string"
        );
    }

    #[test]
    fn image_format_and_block_devices() {
        let c = ok(&with(
            r#""disks": [{"image": "/d", "writable": true, "format": "composite",
                          "allow_block_devices": true},
                         {"image": "/e", "writable": true, "format": null}]"#,
        ));
        assert_eq!(
            c.disks,
            vec![
                DiskConfig::Image {
                    path: "/d".into(),
                    writable: true,
                    format: Some(ImageFormat::Composite),
                    allow_block_devices: true,
                },
                DiskConfig::image("/e", true),
            ]
        );
        let e = err(&with(
            r#""disks": [{"image": "/d", "writable": true, "format": "qcow2"}]"#,
        ));
        assert!(
            e.contains("disks[0].format: \"qcow2\" is not a known format"),
            "{e}"
        );
        let e = err(&with(
            r#""disks": [{"partitions": [{"label": "a", "path": "/a"}], "writable": true,
                          "format": "raw"}]"#,
        ));
        assert!(e.contains("apply to an \"image\""), "{e}");
        let e = err(&with(
            r#""disks": [{"image": "/d", "writable": true, "allow_block_devices": 1}]"#,
        ));
        assert!(
            e.contains("allow_block_devices: expected true or false"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys() {
        assert_eq!(
            err(&with(r#""cpus": 2"#)),
            "vmconfig JSON: unknown key \"cpus\" (known keys: name, kernel, initrd, params, \
             bootloader, disks, protected, memory_mib, cpu_topology, platform_version, devices, \
             console_input_device)"
        );
        assert_eq!(
            err(&with(r#""disks": [{"img": "/d", "writable": true}]"#)),
            "vmconfig JSON: disks[0]: unknown key \"img\" (known keys: image, partitions, \
             writable, format, allow_block_devices)"
        );
        assert_eq!(
            err(&with(
                r#""disks": [{"partitions": [{"label": "a", "paths": ["/a"]}], "writable": true}]"#
            )),
            "vmconfig JSON: disks[0].partitions[0]: unknown key \"paths\" (known keys: label, \
             path, writable)"
        );
        // A long unknown key is cut short in the message.
        let e = err(&with(&format!("\"{}\": 1", "k".repeat(10_000))));
        assert!(e.len() < 300, "{e}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        for (extra, msg) in [
            (r#""name": 1"#, "name: expected a string, found a number"),
            (
                r#""initrd": true"#,
                "initrd: expected a string, found a boolean",
            ),
            (
                r#""params": ["a"]"#,
                "params: expected a string, found an array",
            ),
            (
                r#""disks": {}"#,
                "disks: expected an array, found an object",
            ),
            (
                r#""protected": "no""#,
                "protected: expected true or false, found a string",
            ),
            (
                r#""protected": 0"#,
                "protected: expected true or false, found a number",
            ),
            (
                r#""memory_mib": "256""#,
                "memory_mib: expected a positive integer (MiB), found a string",
            ),
            (
                r#""memory_mib": 256.5"#,
                "memory_mib: expected a positive integer (MiB), found a non-integer number",
            ),
            (
                r#""memory_mib": 256.0"#,
                "memory_mib: expected a positive integer (MiB), found a non-integer number",
            ),
            (
                r#""memory_mib": -1"#,
                "memory_mib: expected a positive integer (MiB), found a negative number",
            ),
            (
                r#""cpu_topology": 1"#,
                "cpu_topology: expected a string, found a number",
            ),
            (
                r#""devices": [1]"#,
                "devices[0]: expected a sysfs path string, found a number",
            ),
            (
                r#""console_input_device": {}"#,
                "console_input_device: expected a string, found an object",
            ),
            (
                r#""disks": [{"image": 1, "writable": true}]"#,
                "disks[0].image: expected a string, found a number",
            ),
            (
                r#""disks": [{"image": "/d", "writable": "yes"}]"#,
                "disks[0].writable: expected true or false, found a string",
            ),
            (
                r#""disks": [{"image": "/d", "writable": null}]"#,
                "disks[0].writable: expected true or false, found null",
            ),
            (
                r#""disks": [{"partitions": {}, "writable": true}]"#,
                "disks[0].partitions: expected an array, found an object",
            ),
            (
                r#""disks": [{"image": "/d", "writable": true}, {"partitions": [{"label": 1, "path": "/p"}], "writable": true}]"#,
                "disks[1].partitions[0].label: expected a string, found a number",
            ),
            (
                r#""disks": [{"partitions": [{"label": "a", "path": ["/p"]}], "writable": true}]"#,
                "disks[0].partitions[0].path: expected a string, found an array",
            ),
            (
                r#""disks": [{"partitions": [{"label": "a", "path": "/p", "writable": 1}], "writable": true}]"#,
                "disks[0].partitions[0].writable: expected true or false, found a number",
            ),
        ] {
            assert_eq!(
                err(&with(extra)),
                format!("vmconfig JSON: {msg}"),
                "{extra}"
            );
        }
        assert_eq!(
            err(r#"{"kernel": 7, "platform_version": "1.0"}"#),
            "vmconfig JSON: kernel: expected a string, found a number"
        );
        assert_eq!(
            err(r#"{"bootloader": false, "platform_version": "1.0"}"#),
            "vmconfig JSON: bootloader: expected a string, found a boolean"
        );
        assert_eq!(
            err(r#"{"kernel": "/k", "platform_version": 1.0}"#),
            "vmconfig JSON: platform_version: expected a string, found a non-integer number"
        );
    }

    #[test]
    fn missing_required_keys() {
        assert_eq!(
            err(r#"{"kernel": "/k"}"#),
            "vmconfig JSON: missing required key \"platform_version\""
        );
        assert_eq!(
            err(&with(r#""disks": [{"image": "/d"}]"#)),
            "vmconfig JSON: disks[0]: missing required key \"writable\""
        );
        assert_eq!(
            err(&with(
                r#""disks": [{"partitions": [{"path": "/p"}], "writable": false}]"#
            )),
            "vmconfig JSON: disks[0].partitions[0]: missing required key \"label\""
        );
        assert_eq!(
            err(&with(
                r#""disks": [{"partitions": [{"label": "a"}], "writable": false}]"#
            )),
            "vmconfig JSON: disks[0].partitions[0]: missing required key \"path\""
        );
    }

    #[test]
    fn boot_source_rules() {
        assert_eq!(
            err(r#"{"platform_version": "1.0"}"#),
            "vmconfig JSON: exactly one of \"kernel\" or \"bootloader\" is required, neither is given"
        );
        assert_eq!(
            err(r#"{"initrd": "/i", "params": "x", "platform_version": "1.0"}"#),
            "vmconfig JSON: exactly one of \"kernel\" or \"bootloader\" is required, neither is given"
        );
        assert_eq!(
            err(&with(r#""bootloader": "/b""#)),
            "vmconfig JSON: exactly one of \"kernel\" or \"bootloader\" is allowed, both are given"
        );
        assert_eq!(
            err(r#"{"bootloader": "/b", "initrd": "/i", "platform_version": "1.0"}"#),
            "vmconfig JSON: initrd: not allowed together with \"bootloader\""
        );
        assert!(
            err(r#"{"bootloader": "/b", "params": "x", "platform_version": "1.0"}"#)
                .starts_with("vmconfig JSON: params: not allowed together with \"bootloader\"")
        );
        assert!(err(&with(r#""params": "a\u0000b""#)).starts_with("vmconfig JSON: params: "));
        let long = "a".repeat(crate::boot::layout::CMDLINE_MAX_SIZE);
        assert!(
            err(&with(&format!(r#""params": "{long}""#))).starts_with("vmconfig JSON: params: ")
        );
        for (key, bad) in [("kernel", ""), ("kernel", "/k\\u0000"), ("bootloader", "")] {
            let e = err(&format!(
                r#"{{"{key}": "{bad}", "platform_version": "1.0"}}"#
            ));
            assert!(
                e.starts_with(&format!("vmconfig JSON: {key}: the path ")),
                "{e}"
            );
        }
    }

    #[test]
    fn disk_rules() {
        let exactly_one = "exactly one of \"image\" or non-empty \"partitions\"";
        for disk in [
            r#"{"writable": true}"#,
            r#"{"partitions": [], "writable": true}"#,
            r#"{"image": null, "writable": true}"#,
            r#"{"image": "/d", "partitions": [{"label": "a", "path": "/a"}], "writable": true}"#,
        ] {
            assert_eq!(
                err(&with(&format!(
                    r#""disks": [{{"image": "/ok", "writable": false}}, {disk}]"#
                ))),
                format!("vmconfig JSON: disks[1]: {exactly_one}"),
                "{disk}"
            );
        }
        assert_eq!(
            err(&with(r#""disks": [{"image": "", "writable": true}]"#)),
            "vmconfig JSON: disks[0].image: the path is empty"
        );
        assert_eq!(
            err(&with(
                r#""disks": [{"partitions": [{"label": "a", "path": "/a"}, {"label": "b", "path": "/b"}, {"label": "a", "path": "/c"}], "writable": false}]"#
            )),
            "vmconfig JSON: disks[0].partitions[2].label: duplicate label \"a\" (also partitions[0])"
        );
        assert_eq!(
            err(&with(
                r#""disks": [{"partitions": [{"label": "", "path": "/a"}], "writable": false}]"#
            )),
            "vmconfig JSON: disks[0].partitions[0].label: the label is empty"
        );
        let label36 = "x".repeat(36);
        ok(&with(&format!(
            r#""disks": [{{"partitions": [{{"label": "{label36}", "path": "/a"}}], "writable": false}}]"#
        )));
        let e = err(&with(&format!(
            r#""disks": [{{"partitions": [{{"label": "{label36}y", "path": "/a"}}], "writable": false}}]"#
        )));
        assert!(e.contains("longer than a GPT partition name"), "{e}");
        // Labels in different disks may repeat.
        ok(&with(
            r#""disks": [{"partitions": [{"label": "a", "path": "/a"}], "writable": false},
                         {"partitions": [{"label": "a", "path": "/b"}], "writable": false}]"#,
        ));
    }

    #[test]
    fn memory_rules() {
        assert_eq!(
            err(&with(r#""memory_mib": 0"#)),
            "vmconfig JSON: memory_mib: must not be 0"
        );
        assert_eq!(
            err(&with(r#""memory_mib": 8"#)),
            "vmconfig JSON: memory_mib: 8 MiB is out of range (16..=1048576 MiB)"
        );
        for big in ["1048577", "4294967296", "18446744073709551615"] {
            let e = err(&with(&format!(r#""memory_mib": {big}"#)));
            assert!(e.contains("out of range"), "{e}");
        }
        // Beyond u64: serde_json reads it as a float.
        assert!(err(&with(r#""memory_mib": 99999999999999999999999"#)).contains("non-integer"));
        assert_eq!(ok(&with(r#""memory_mib": 16"#)).mem_mib, Some(16));
        assert_eq!(ok(&with(r#""memory_mib": 1048576"#)).mem_mib, Some(1 << 20));
    }

    #[test]
    fn protected_and_devices_are_refused() {
        let e = parse(&with(r#""protected": true"#), Path::new(BASE)).unwrap_err();
        assert!(matches!(e, VmConfigError::Unsupported { .. }));
        assert!(
            e.to_string().starts_with(
                "vmconfig JSON: protected: protected VMs need pKVM, which x86 KVM does not have"
            ),
            "{e}"
        );
        let e = parse(
            &with(r#""devices": ["/sys/bus/platform/devices/16d00000.eh"]"#),
            Path::new(BASE),
        )
        .unwrap_err();
        assert!(matches!(e, VmConfigError::Unsupported { .. }));
        assert!(
            e.to_string()
                .starts_with("vmconfig JSON: devices: VFIO device assignment is not supported"),
            "{e}"
        );
        ok(&with(r#""protected": false, "devices": []"#));
    }

    #[test]
    fn cpu_topology_and_console_values() {
        assert_eq!(
            err(&with(r#""cpu_topology": "two_cpus""#)),
            "vmconfig JSON: cpu_topology: \"two_cpus\" is not \"one_cpu\" or \"match_host\""
        );
        assert_eq!(
            err(&with(r#""cpu_topology": "ONE_CPU""#)),
            "vmconfig JSON: cpu_topology: \"ONE_CPU\" is not \"one_cpu\" or \"match_host\""
        );
        assert_eq!(
            err(&with(r#""console_input_device": "hvc1""#)),
            "vmconfig JSON: console_input_device: \"hvc1\" is not \"hvc0\" or \"ttyS0\""
        );
        assert_eq!(
            ok(&with(r#""console_input_device": "ttyS0""#)).console_input_device,
            Some("ttyS0".into())
        );
    }

    #[test]
    fn platform_version_rules() {
        for good in [
            "~1.0",
            "^1.0",
            "1.0",
            "1",
            "=1.0.0",
            ">=1.0",
            ">=1.0, <2",
            "*",
            "1.*",
        ] {
            ok(&with("").replace("~1.0", good));
        }
        assert_eq!(
            err(&with("").replace("~1.0", "~2.0")),
            "vmconfig JSON: platform_version: \"~2.0\" does not match micro-vmm's platform \
             version 1.0.0"
        );
        let e = err(&with("").replace("~1.0", "garbage"));
        assert!(
            e.starts_with(
                "vmconfig JSON: platform_version: \"garbage\" is not a supported SemVer requirement"
            ),
            "{e}"
        );
    }

    fn m(req: &str) -> Result<bool, String> {
        version_req_matches(req, PLATFORM_VERSION)
    }

    #[test]
    fn semver_subset() {
        for yes in [
            "~1.0",
            "~1",
            "~1.0.0",
            "^1.0",
            "^1",
            "^1.0.0",
            "1.0",
            "1",
            "1.0.0",
            "=1.0.0",
            "=1.0",
            "=1",
            ">=1.0",
            ">=1.0.0",
            ">=1",
            ">=0.9",
            ">0.9",
            ">0.9.9",
            ">0",
            "<2",
            "<1.1",
            "<1.0.1",
            "<=1.0.0",
            "<=1.0",
            "<=1",
            ">=1.0, <2",
            ">=1.0,<2.0.0",
            " >= 1.0 , < 2 ",
            "*",
            "1.*",
            "1.0.*",
            "1.x",
            "x",
            "~1.*",
            "=1.*",
            ">=1.0.*",
            ">=0.1, <=1",
        ] {
            assert_eq!(m(yes), Ok(true), "{yes}");
        }
        for no in [
            "~2.0",
            "^0.9, >=1.0",
            "~1.1",
            "~0.9",
            "^2",
            "^1.1",
            "^0.9",
            "^0.0",
            "2.0",
            "1.1",
            "=1.0.1",
            "=0",
            ">1.0.0",
            ">1.0",
            ">1",
            ">=1.0.1",
            ">=1.1",
            ">=2",
            "<1.0.0",
            "<1.0",
            "<1",
            "<=0.9",
            "<=0",
            ">=1.0, <1.0",
            "~1.0, ~2.0",
            "2.*",
            "1.1.x",
            ">1.*",
        ] {
            assert_eq!(m(no), Ok(false), "{no}");
        }
        // Caret and tilde on 0.x versions, checked against other versions.
        let v = |req: &str, ver| version_req_matches(req, ver).unwrap();
        assert!(v("^0.2.3", (0, 2, 5)) && !v("^0.2.3", (0, 3, 0)) && !v("^0.2.3", (0, 2, 2)));
        assert!(v("^0.0.3", (0, 0, 3)) && !v("^0.0.3", (0, 0, 4)));
        assert!(v("^0.0", (0, 0, 7)) && !v("^0.0", (0, 1, 0)));
        assert!(v("^1.2.3", (1, 9, 0)) && !v("^1.2.3", (1, 2, 2)) && !v("^1.2.3", (2, 0, 0)));
        assert!(v("~1.2.3", (1, 2, 9)) && !v("~1.2.3", (1, 3, 0)));
        assert!(v(">1.2", (1, 3, 0)) && !v(">1.2", (1, 2, 9)));
        assert!(v("<=1.2", (1, 2, 9)) && !v("<=1.2", (1, 3, 0)));
        for garbage in [
            "",
            " ",
            "garbage",
            "1.0,",
            ",1.0",
            "1.0 || 2.0",
            ">=1.0 <2",
            "1.0.0.0",
            "01.0",
            "1.00",
            "v1.0",
            "~>1.0",
            "=>1.0",
            "1.0.0-alpha",
            "1.0.0+build",
            "-1",
            "1..0",
            "1.",
            ".1",
            "*.1",
            ">=*",
            "1.*.0",
            "99999999999999999999",
            "*, 1.0",
            "1.0\u{0}",
            "１.0",
        ] {
            assert!(m(garbage).is_err(), "{garbage:?} -> {:?}", m(garbage));
        }
    }

    #[test]
    fn never_panics_on_odd_input() {
        // A crude fuzz: every prefix of a full config, and byte-level mutations of it.
        let full = r#"{"name": "n", "kernel": "k", "initrd": "i", "params": "p",
            "disks": [{"image": "d", "writable": true},
                      {"partitions": [{"label": "l", "path": "p", "writable": true}], "writable": false}],
            "protected": false, "memory_mib": 256, "cpu_topology": "one_cpu",
            "platform_version": ">=1.0, <2", "devices": [], "console_input_device": "ttyS0"}"#;
        ok(full);
        for i in 0..full.len() {
            if full.is_char_boundary(i) {
                let _ = parse(&full[..i], Path::new(BASE));
            }
        }
        let bytes = full.as_bytes();
        for i in 0..bytes.len() {
            for b in [b'"', b'{', b'[', b'0', b'-', b',', b'}', b'\\', 0xc3] {
                let mut m = bytes.to_vec();
                m[i] = b;
                if let Ok(s) = std::str::from_utf8(&m) {
                    let _ = parse(s, Path::new(BASE));
                }
            }
        }
    }
}
