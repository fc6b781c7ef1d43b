//! `micro-vmm create-partition`: the files it writes and its errors, through the binary.

use std::path::PathBuf;
use std::process::Command;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("mvmm-cp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_micro-vmm"))
        .arg("create-partition")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn creates_each_type() {
    let dir = Dir::new("types");
    let p = |n: &str| dir.0.join(n).to_str().unwrap().to_owned();
    let (code, err) = run(&["--type", "instance", &p("instance.img"), "10M"]);
    assert_eq!(code, Some(0), "{err}");
    let data = std::fs::read(p("instance.img")).unwrap();
    assert_eq!(data.len(), 10 << 20);
    assert_eq!(&data[..21], b"Android-VM-instance\x01\x00");
    let (code, err) = run(&["-t", "encryptedstore", &p("storage.img"), "5000"]);
    assert_eq!(code, Some(0), "{err}");
    let data = std::fs::read(p("storage.img")).unwrap();
    assert_eq!(data.len(), 8192);
    assert_eq!(&data[..19], b"UNFORMATTED-STORAGE");
    let (code, err) = run(&[&p("raw.img"), "1K"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(std::fs::read(p("raw.img")).unwrap(), vec![0u8; 4096]);
}

#[test]
fn bad_arguments_fail_with_a_message_and_write_nothing() {
    let dir = Dir::new("bad");
    let p = dir.0.join("x.img");
    let p = p.to_str().unwrap();
    for (args, needle) in [
        (vec![p, "0"], "must not be 0"),
        (vec![p, "2T"], "1 TiB"),
        (vec![p, "ten"], "invalid value"),
        (vec!["-t", "qcow2", p, "1M"], "unknown partition type"),
    ] {
        let (code, err) = run(&args);
        assert_ne!(code, Some(0), "{args:?}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);
}
