//! `micro-vmm create-idsig` against Debian's `apksigner sign --v4-signing-enabled true`: for the
//! same signed APK, the hashing info and Merkle tree must be byte-identical and the signing
//! info must carry the same APK digest and signature algorithm; our verifier accepts both
//! idsigs and names the 4 KiB block a flipped byte lands in. Needs `apksigner` (Debian package
//! `apksigner`) and `openssl`; fails if they are absent.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use micro_vmm::payload::idsig::{self, Idsig, IdsigError};
use zip::write::SimpleFileOptions;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "mvmm-idsig-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run(program: &str, args: &[&str], install_hint: &str) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): {install_hint}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?} failed:\n{text}");
    text
}

fn apksigner(args: &[&str]) -> String {
    run(
        "apksigner",
        args,
        "apksigner is not installed; install it with `apt-get install apksigner`",
    )
}

/// A key pair as apksigner takes it: PKCS#8 DER key, DER certificate. `ec`: P-256, else RSA.
fn key_pair(dir: &TempDir, ec: bool) -> (PathBuf, PathBuf) {
    let pem = dir.path("key.pem");
    let cert = dir.path("cert.der");
    let pk8 = dir.path("key.pk8");
    let hint = "openssl is not installed (apt-get install openssl)";
    let newkey = if ec { "ec" } else { "rsa:2048" };
    let mut args = vec!["req", "-x509", "-newkey", newkey];
    if ec {
        args.extend(["-pkeyopt", "ec_paramgen_curve:P-256"]);
    }
    let (pem_s, cert_s, pk8_s) = (
        pem.to_str().unwrap(),
        cert.to_str().unwrap(),
        pk8.to_str().unwrap(),
    );
    args.extend([
        "-nodes",
        "-keyout",
        pem_s,
        "-outform",
        "DER",
        "-out",
        cert_s,
        "-days",
        "3650",
        "-subj",
        "/CN=micro-vmm test",
    ]);
    run("openssl", &args, hint);
    run(
        "openssl",
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", pem_s, "-outform", "DER", "-out", pk8_s,
        ],
        hint,
    );
    (pk8, cert)
}

/// Pseudo-random bytes (xorshift64), incompressible.
fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An unsigned APK: a manifest-named entry, a stored random entry of `stored` bytes, and a
/// deflated one.
fn unsigned_apk(path: &Path, stored: usize, seed: u64) {
    let mut z = zip::ZipWriter::new(fs::File::create(path).unwrap());
    let store = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let deflate = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    z.start_file("AndroidManifest.xml", store).unwrap();
    z.write_all(b"<manifest package=\"com.example.idsig\"/>\n")
        .unwrap();
    z.start_file("assets/random.bin", store).unwrap();
    z.write_all(&random(stored, seed)).unwrap();
    z.start_file("classes.dex", deflate).unwrap();
    let text: Vec<u8> = (0..50_000u32)
        .flat_map(|i| format!("line {i} {}\n", i % 97).into_bytes())
        .collect();
    z.write_all(&text).unwrap();
    z.finish().unwrap();
}

/// Signs `unsigned` with apksigner (v4 on); returns (signed APK, apksigner's idsig).
fn sign(dir: &TempDir, unsigned: &Path, ec: bool, extra: &[&str]) -> (PathBuf, PathBuf) {
    let (key, cert) = key_pair(dir, ec);
    let signed = dir.path("signed.apk");
    let mut args = vec![
        "sign",
        "--key",
        key.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--min-sdk-version",
        "24",
        "--v4-signing-enabled",
        "true",
    ];
    args.extend_from_slice(extra);
    args.extend([
        "--in",
        unsigned.to_str().unwrap(),
        "--out",
        signed.to_str().unwrap(),
    ]);
    apksigner(&args);
    let theirs = dir.path("signed.apk.idsig");
    assert!(theirs.exists(), "apksigner wrote no {theirs:?}");
    (signed, theirs)
}

fn micro_vmm(args: &[&Path]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_micro-vmm"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Creates our idsig for `signed` and compares it with apksigner's; both must verify.
fn compare(dir: &TempDir, signed: &Path, theirs: &Path) -> Idsig {
    let ours = dir.path("ours.idsig");
    let (ok, _, err) = micro_vmm(&[Path::new("create-idsig"), signed, &ours]);
    assert!(ok, "create-idsig failed: {err}");
    let a = Idsig::load(&ours).unwrap();
    let b = Idsig::load(theirs).unwrap();
    assert_eq!(a.hashing_info, b.hashing_info);
    assert!(
        a.merkle_tree == b.merkle_tree,
        "Merkle trees differ ({} and {} bytes)",
        a.merkle_tree.len(),
        b.merkle_tree.len()
    );
    assert_eq!(a.signing_info.apk_digest, b.signing_info.apk_digest);
    assert_eq!(
        a.signing_info.signature_algorithm_id,
        b.signing_info.signature_algorithm_id
    );
    assert!(!b.signing_info.apk_digest.is_empty());
    // The version and hashing info bytes are identical too (the writer's encoding).
    let (raw_a, raw_b) = (fs::read(&ours).unwrap(), fs::read(theirs).unwrap());
    assert_eq!(raw_a[..53], raw_b[..53]);
    let tree_len = a.merkle_tree.len();
    assert_eq!(
        raw_a[raw_a.len() - tree_len..],
        raw_b[raw_b.len() - tree_len..]
    );

    let root = idsig::hex(&a.hashing_info.raw_root_hash);
    for sig in [&ours, &theirs.to_path_buf()] {
        let (ok, out, err) = micro_vmm(&[Path::new("verify-idsig"), signed, sig]);
        assert!(ok, "verify-idsig {sig:?}: {err}");
        assert_eq!(out.trim(), format!("ok: root hash {root}"));
        let report = idsig::verify(signed, sig).unwrap();
        assert_eq!(report.apk_len, fs::metadata(signed).unwrap().len());
    }
    a
}

#[test]
fn rsa_v3_apk_matches_apksigner_and_flipped_byte_is_named() {
    let dir = TempDir::new("rsa");
    let unsigned = dir.path("unsigned.apk");
    unsigned_apk(&unsigned, 5 << 20, 1);
    let (signed, theirs) = sign(&dir, &unsigned, false, &[]);
    let ours = compare(&dir, &signed, &theirs);
    assert_eq!(ours.signing_info.signature_algorithm_id, 0x0103); // RSA PKCS#1 SHA-256
    let len = fs::metadata(&signed).unwrap().len();
    assert_eq!(
        idsig::hashtree::level_sizes(len).len(),
        2,
        "{len} bytes: two levels"
    );

    // One flipped byte: both idsigs name its block.
    let mut data = fs::read(&signed).unwrap();
    let at = 3 * (1 << 20) + 12345;
    data[at] ^= 0x01;
    let flipped = dir.path("flipped.apk");
    fs::write(&flipped, &data).unwrap();
    let block = at / 4096;
    for sig in [dir.path("ours.idsig"), theirs.clone()] {
        let (ok, out, err) = micro_vmm(&[Path::new("verify-idsig"), &flipped, &sig]);
        assert!(!ok, "verify-idsig accepted a modified APK: {out}");
        assert!(
            err.contains(&format!("data block {block} (bytes {}..)", block * 4096)),
            "{err}"
        );
        match idsig::verify(&flipped, &sig).unwrap_err() {
            IdsigError::BlockMismatch { block: b, .. } => assert_eq!(b, block as u64),
            e => panic!("{e}"),
        }
    }
}

#[test]
fn v2_only_apk_matches_apksigner() {
    let dir = TempDir::new("v2");
    let unsigned = dir.path("unsigned.apk");
    unsigned_apk(&unsigned, 1 << 20, 2);
    let (signed, theirs) = sign(&dir, &unsigned, false, &["--v3-signing-enabled", "false"]);
    compare(&dir, &signed, &theirs);
    let d = idsig::apk_digest(&signed).unwrap().unwrap();
    assert_eq!(d.scheme, 2);
}

/// Over 64 MiB: a three-level tree; an EC key (algorithm 0x0201).
#[test]
fn ec_apk_with_three_level_tree_matches_apksigner() {
    let dir = TempDir::new("ec");
    let unsigned = dir.path("unsigned.apk");
    unsigned_apk(&unsigned, 66 << 20, 3);
    let (signed, theirs) = sign(&dir, &unsigned, true, &[]);
    let ours = compare(&dir, &signed, &theirs);
    assert_eq!(ours.signing_info.signature_algorithm_id, 0x0201);
    let len = fs::metadata(&signed).unwrap().len();
    assert_eq!(
        idsig::hashtree::level_sizes(len).len(),
        3,
        "{len} bytes should need three levels"
    );
}
