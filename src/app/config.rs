//! `--app` flags, validated into plain types before anything is built or opened.

use std::path::PathBuf;
use std::time::Duration;

use crate::api::OutputTarget;
use crate::api::cli::AppArgs;
use crate::api::config::{validate_mem, validate_output_limit, validate_vcpus};
use crate::payload::partition::parse_size;

use super::AppError;

/// Android's default storage size for `vm run-app --storage` (10 MiB).
pub const DEFAULT_STORAGE_SIZE: u64 = 10 << 20;
/// Android's instance image size (`INSTANCE_FILE_SIZE`, 10 MiB).
pub const INSTANCE_SIZE: u64 = 10 << 20;
/// The guest CID when none is given.
pub const DEFAULT_CID: u64 = 3;
/// How long the payload gets to start (Android: 30 s, 300 s under nested virtualization).
pub const HANGUP_TIMEOUT: Duration = Duration::from_secs(30);
pub const HANGUP_TIMEOUT_NESTED: Duration = Duration::from_secs(300);
/// Longest `--hangup-timeout` accepted, in seconds (one day).
pub const MAX_HANGUP_TIMEOUT_SECS: u64 = 86_400;

/// A validated `--app` run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppConfig {
    pub apk: PathBuf,
    pub idsig: PathBuf,
    /// The payload config's path inside the APK.
    pub config_path: String,
    pub instance: Option<PathBuf>,
    pub instance_id_file: Option<PathBuf>,
    /// The storage image and the size it gets when created.
    pub storage: Option<(PathBuf, u64)>,
    pub extra_idsigs: Vec<PathBuf>,
    pub apex_dir: Option<PathBuf>,
    pub mem_mib: Option<u64>,
    pub vcpus: u8,
    pub cid: u64,
    pub serial: OutputTarget,
    pub log: OutputTarget,
    pub debug: bool,
    pub os_config: Option<PathBuf>,
    pub guest_dir: Option<PathBuf>,
    pub hangup_timeout: Duration,
    /// The control socket's path (`--socket`).
    pub socket: Option<PathBuf>,
    /// Most bytes each output file gets (`--output-limit`).
    pub output_limit: u64,
    /// `--sandbox`, `--uid`, `--gid`.
    pub sandbox: crate::api::cli::SandboxArgs,
}

impl TryFrom<AppArgs> for AppConfig {
    type Error = AppError;

    fn try_from(a: AppArgs) -> Result<AppConfig, AppError> {
        let bad = |flag: &'static str, reason: String| AppError::BadFlag { flag, reason };
        let Some(mut app) = a.app.filter(|v| v.len() == 3) else {
            return Err(bad("--app", "needs APK IDSIG CONFIG_PATH".into()));
        };
        let config_path = app.pop().unwrap_or_default();
        let idsig = app.pop().unwrap_or_default();
        let apk = app.pop().unwrap_or_default();
        let config_path = match config_path.into_os_string().into_string() {
            Ok(s) if !s.is_empty() && !s.starts_with('/') => s,
            Ok(s) => {
                return Err(bad(
                    "--app",
                    format!("CONFIG_PATH {s:?} must be a relative path inside the APK"),
                ));
            }
            Err(s) => return Err(bad("--app", format!("CONFIG_PATH {s:?} is not UTF-8"))),
        };
        let storage_size = match &a.storage_size {
            Some(s) => match parse_size(s) {
                Ok(0) => return Err(bad("--storage-size", "must not be zero".into())),
                Ok(n) => n,
                Err(e) => return Err(bad("--storage-size", e.to_string())),
            },
            None => DEFAULT_STORAGE_SIZE,
        };
        let cid = a.cid.unwrap_or(DEFAULT_CID);
        if !(3..=u64::from(u32::MAX - 1)).contains(&cid) {
            return Err(bad(
                "--cid",
                format!("{cid} is not a guest CID (3 to 2^32-2)"),
            ));
        }
        let mem_mib = a
            .mem
            .map(validate_mem)
            .transpose()
            .map_err(|e| bad("--mem", e.to_string()))?;
        let vcpus =
            validate_vcpus(a.cpus.unwrap_or(1)).map_err(|e| bad("--cpus", e.to_string()))?;
        let hangup_timeout = match a.hangup_timeout {
            Some(0) => return Err(bad("--hangup-timeout", "must be at least 1 s".into())),
            Some(s) if s > MAX_HANGUP_TIMEOUT_SECS => {
                return Err(bad(
                    "--hangup-timeout",
                    format!("{s} s is too long (at most {MAX_HANGUP_TIMEOUT_SECS} s, one day)"),
                ));
            }
            Some(s) => Duration::from_secs(s),
            None if running_in_a_vm() => HANGUP_TIMEOUT_NESTED,
            None => HANGUP_TIMEOUT,
        };
        Ok(AppConfig {
            apk,
            idsig,
            config_path,
            instance: a.instance,
            instance_id_file: a.instance_id_file,
            storage: a.storage.map(|p| (p, storage_size)),
            extra_idsigs: a.extra_idsig,
            apex_dir: a.apex_dir,
            mem_mib,
            vcpus,
            cid,
            serial: OutputTarget::parse("--serial", &a.serial)
                .map_err(|e| bad("--serial", e.to_string()))?,
            log: OutputTarget::parse("--log", &a.log).map_err(|e| bad("--log", e.to_string()))?,
            debug: a.debug,
            os_config: a.os_config,
            guest_dir: a.guest_dir,
            hangup_timeout,
            socket: a.socket,
            output_limit: validate_output_limit(a.output_limit)
                .map_err(|e| bad("--output-limit", e.to_string()))?,
            sandbox: a.sandbox,
        })
    }
}

/// True when this host is itself a VM (the CPU reports a hypervisor), where Android allows
/// the payload ten times longer to start.
fn running_in_a_vm() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines()
            .find(|l| l.starts_with("flags"))
            .is_some_and(|l| l.split_whitespace().any(|f| f == "hypervisor"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::cli::{Cli, parse_from};

    fn app(args: &[&str]) -> Result<AppConfig, String> {
        let mut argv = vec!["micro-vmm"];
        argv.extend_from_slice(args);
        let cli: Cli = parse_from(argv).map_err(|e| e.to_string())?;
        AppConfig::try_from(cli.app).map_err(|e| e.to_string())
    }

    #[test]
    fn hangup_timeout_is_bounded() {
        let base = ["--app", "a", "b", "c", "--hangup-timeout"];
        let with = |t: &str| {
            let mut v = base.to_vec();
            v.push(t);
            app(&v)
        };
        assert_eq!(
            with("86400").unwrap().hangup_timeout,
            Duration::from_secs(86_400)
        );
        let e = with("18446744073709551615").unwrap_err();
        assert!(e.contains("too long (at most 86400 s"), "{e}");
    }

    #[test]
    fn flags_become_a_config() {
        let c = app(&[
            "--app",
            "a.apk",
            "a.idsig",
            "assets/vm_config.json",
            "--storage",
            "s.img",
            "--storage-size",
            "4M",
            "--mem",
            "300",
            "--cpus",
            "2",
            "--cid",
            "42",
            "--extra-idsig",
            "x.idsig",
            "--hangup-timeout",
            "5",
            "--log",
            "file:/tmp/l",
            "--socket",
            "/tmp/c.sock",
            "--output-limit",
            "3",
        ])
        .unwrap();
        assert_eq!(c.apk, PathBuf::from("a.apk"));
        assert_eq!(c.idsig, PathBuf::from("a.idsig"));
        assert_eq!(c.config_path, "assets/vm_config.json");
        assert_eq!(c.storage, Some((PathBuf::from("s.img"), 4 << 20)));
        assert_eq!((c.mem_mib, c.vcpus, c.cid), (Some(300), 2, 42));
        assert_eq!(c.extra_idsigs, vec![PathBuf::from("x.idsig")]);
        assert_eq!(c.hangup_timeout, Duration::from_secs(5));
        assert_eq!(c.log, OutputTarget::File("/tmp/l".into()));
        assert_eq!(c.serial, OutputTarget::Stdout);
        assert_eq!(c.socket, Some(PathBuf::from("/tmp/c.sock")));
        let d = app(&["--app", "a", "b", "c"]).unwrap();
        assert_eq!((d.cid, d.vcpus, d.storage, d.debug), (3, 1, None, false));
        assert_eq!((c.output_limit, d.output_limit), (3 << 20, 64 << 20));
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [
            &["--app", "a", "b"][..],
            &["--app", "a", "b", "/abs/config.json"],
            &["--app", "a", "b", "c", "--cid", "2"],
            &["--app", "a", "b", "c", "--cpus", "0"],
            &["--app", "a", "b", "c", "--mem", "1"],
            &[
                "--app",
                "a",
                "b",
                "c",
                "--storage",
                "s",
                "--storage-size",
                "0",
            ],
            &[
                "--app",
                "a",
                "b",
                "c",
                "--storage",
                "s",
                "--storage-size",
                "12Q",
            ],
            &["--app", "a", "b", "c", "--storage-size", "1M"],
            &["--app", "a", "b", "c", "--hangup-timeout", "0"],
            &["--app", "a", "b", "c", "--output-limit", "0"],
            &["--app", "a", "b", "c", "--output-limit", "1048577"],
            &["--app", "a", "b", "c", "--hangup-timeout", "86401"],
            &[
                "--app",
                "a",
                "b",
                "c",
                "--hangup-timeout",
                "18446744073709551615",
            ],
            &["--app", "a", "b", "c", "--serial", "tcp:1"],
            &["--instance", "i.img"],
            &["--socket", "s"],
            &["--app", "a", "b", "c", "run"],
            &[],
        ] {
            assert!(app(bad).is_err(), "{bad:?}");
        }
    }
}
