//! The `.idsig` file (APK Signature Scheme v4): a strict parser and a writer.
//!
//! All integers are little-endian; "bytes" is a u32 length followed by that many bytes:
//!
//! ```text
//! u32 version (2)
//! u32 hashing_info_size, then: u32 hash_algorithm (1 = SHA-256), u8 log2_blocksize (12),
//!                              bytes salt, bytes raw_root_hash (32)
//! u32 signing_info_size, then: bytes apk_digest, bytes x509_certificate, bytes additional_data,
//!                              bytes public_key, u32 signature_algorithm_id, bytes signature,
//!                              [signing info blocks (newer apksigner, v3.1 rotation): kept opaque]
//! u32 merkle_tree_size, then the tree (top level first)
//! ```
//!
//! The parser is stricter than Android's (which ignores both block sizes): the hashing info
//! must be exactly its fields, the tree a whole number of 4 KiB blocks, and nothing may follow
//! the tree. Bytes after the six signing-info fields but inside `signing_info_size` are the
//! signing info blocks newer apksigners append; they are kept as [`SigningInfo::extra`] and
//! written back unchanged. Every length is checked against what remains of its enclosing
//! block before it is used, and the parser only borrows from the input, so a length field
//! never makes it allocate.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::IdsigError;
use super::hashtree::{BLOCK_SIZE, HASH_SIZE};

/// The only idsig version (Android 11 onwards).
pub const VERSION: u32 = 2;
/// `hash_algorithm` for SHA-256, the only one.
pub const HASH_ALGORITHM_SHA256: u32 = 1;
/// `log2_blocksize` for 4 KiB blocks, the only one.
pub const LOG2_BLOCK_SIZE: u8 = 12;
/// Longest salt (fs-verity's limit).
pub const MAX_SALT_SIZE: usize = 32;
/// Largest signing info block accepted (a certificate chain and signatures are a few KiB).
pub const MAX_SIGNING_INFO_SIZE: usize = 1 << 20;
/// Largest Merkle tree accepted: 256 MiB, the tree of a 32 GiB APK.
pub const MAX_TREE_SIZE: usize = 256 << 20;
/// Largest `.idsig` file read.
pub const MAX_IDSIG_SIZE: u64 = (MAX_TREE_SIZE + MAX_SIGNING_INFO_SIZE + 4096) as u64;
/// `signature_algorithm_id` Android 13 writes when it has no signature (DSA-SHA256).
pub const DEFAULT_SIGNATURE_ALGORITHM_ID: u32 = 0x0301;

/// Signature algorithm IDs an idsig may name (apksig / apkverify `algorithms.rs`).
pub const SIGNATURE_ALGORITHM_IDS: [u32; 10] = [
    0x0101, 0x0102, 0x0103, 0x0104, 0x0201, 0x0202, 0x0301, 0x0421, 0x0423, 0x0425,
];

/// The hashing info: how the Merkle tree was built and its root. The hash algorithm
/// (SHA-256) and block size (4 KiB) are the only ones the format allows, so they are implied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HashingInfo {
    /// Salt hashed in front of every block (empty for APKs).
    pub salt: Vec<u8>,
    /// Root hash of the Merkle tree over the whole APK file.
    pub raw_root_hash: [u8; HASH_SIZE],
}

/// The signing info. Android's VM host fills only `apk_digest` and `signature_algorithm_id`;
/// apksigner fills all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningInfo {
    /// The signer's content digest from the APK's v3 (or v2) signature block.
    pub apk_digest: Vec<u8>,
    /// DER certificate of the signer.
    pub x509_certificate: Vec<u8>,
    pub additional_data: Vec<u8>,
    /// DER SubjectPublicKeyInfo of the signer.
    pub public_key: Vec<u8>,
    pub signature_algorithm_id: u32,
    pub signature: Vec<u8>,
    /// Bytes after the fields inside `signing_info_size` (signing info blocks), kept opaque.
    pub extra: Vec<u8>,
}

impl Default for SigningInfo {
    /// What Android 13 writes: empty fields, algorithm 0x0301.
    fn default() -> SigningInfo {
        SigningInfo {
            apk_digest: Vec::new(),
            x509_certificate: Vec::new(),
            additional_data: Vec::new(),
            public_key: Vec::new(),
            signature_algorithm_id: DEFAULT_SIGNATURE_ALGORITHM_ID,
            signature: Vec::new(),
            extra: Vec::new(),
        }
    }
}

/// A parsed `.idsig`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Idsig {
    pub hashing_info: HashingInfo,
    pub signing_info: SigningInfo,
    /// The Merkle tree, top level first, each level padded to 4 KiB (empty for APKs of at
    /// most 4 KiB).
    pub merkle_tree: Vec<u8>,
}

/// A bounds-checked little-endian reader over a borrowed block; offsets in errors are
/// relative to the start of the file.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// File offset of `buf[0]`.
    base: u64,
    what: &'a str,
}

impl<'a> Cursor<'a> {
    fn err(&self, field: &'static str, reason: String) -> IdsigError {
        IdsigError::Format {
            what: self.what.to_string(),
            field,
            offset: self.base + self.pos as u64,
            reason,
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, field: &'static str, len: usize) -> Result<&'a [u8], IdsigError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let Some(out) = rest.get(..len) else {
            return Err(self.err(
                field,
                format!(
                    "needs {len} bytes but only {} remain (truncated)",
                    rest.len()
                ),
            ));
        };
        self.pos += len;
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, IdsigError> {
        let b = self.take(field, 1)?;
        Ok(b.first().copied().unwrap_or_default())
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, IdsigError> {
        let b = self.take(field, 4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(u32::from_le_bytes(a))
    }

    /// A u32 length (at most `max` and at most what remains), then that many bytes.
    fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], IdsigError> {
        let at = self.pos;
        let len = self.u32(field)? as usize;
        if len > max {
            self.pos = at;
            return Err(self.err(field, format!("length {len} is larger than {max}")));
        }
        if len > self.remaining() {
            self.pos = at;
            return Err(self.err(
                field,
                format!(
                    "length {len} is larger than the {} bytes that remain",
                    self.remaining().saturating_sub(4)
                ),
            ));
        }
        self.take(field, len)
    }

    /// A u32 size, then a sub-cursor over that many bytes.
    fn block(&mut self, field: &'static str, max: usize) -> Result<Cursor<'a>, IdsigError> {
        let base = self.base + self.pos as u64 + 4;
        let buf = self.bytes(field, max)?;
        Ok(Cursor {
            buf,
            pos: 0,
            base,
            what: self.what,
        })
    }
}

impl Idsig {
    /// Parses an idsig held in memory; `what` names it in errors (usually its path).
    pub fn parse(bytes: &[u8], what: &str) -> Result<Idsig, IdsigError> {
        let mut c = Cursor {
            buf: bytes,
            pos: 0,
            base: 0,
            what,
        };
        let (hashing_info, signing_info) = parse_head(&mut c)?;
        let tree_at = c.pos;
        let merkle_tree = c.bytes("merkle_tree_size", MAX_TREE_SIZE)?;
        if !merkle_tree.len().is_multiple_of(BLOCK_SIZE) {
            c.pos = tree_at;
            return Err(c.err(
                "merkle_tree_size",
                format!(
                    "{} is not a multiple of the {BLOCK_SIZE}-byte block",
                    merkle_tree.len()
                ),
            ));
        }
        if c.remaining() != 0 {
            return Err(c.err(
                "end of file",
                format!("{} bytes follow the Merkle tree", c.remaining()),
            ));
        }
        Ok(Idsig {
            hashing_info,
            signing_info,
            merkle_tree: merkle_tree.to_vec(),
        })
    }

    /// The signing info of the idsig file at `path`, read without its Merkle tree (a few
    /// hundred bytes instead of 1/128 of the APK): what `createOrUpdateIdsigFile` compares.
    pub fn read_signing_info(path: &Path) -> Result<SigningInfo, IdsigError> {
        let what = path.display().to_string();
        let mut file = File::open(path).map_err(|source| IdsigError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let mut head = Vec::new();
        let mut read = |len: usize, head: &mut Vec<u8>| -> Result<(), IdsigError> {
            let at = head.len();
            head.resize(at + len, 0);
            file.read_exact(&mut head[at..])
                .map_err(|source| IdsigError::Read {
                    path: path.to_path_buf(),
                    offset: at as u64,
                    source,
                })
        };
        let size_at = |head: &[u8], at: usize| {
            head.get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, |b| u32::from_le_bytes(b) as usize)
        };
        read(8, &mut head)?;
        let hashing = size_at(&head, 4).min(MAX_HEAD_BLOCK);
        read(hashing + 4, &mut head)?;
        let signing = size_at(&head, 8 + hashing).min(MAX_SIGNING_INFO_SIZE);
        read(signing, &mut head)?;
        let mut c = Cursor {
            buf: &head,
            pos: 0,
            base: 0,
            what: &what,
        };
        Ok(parse_head(&mut c)?.1)
    }

    /// Reads and parses an idsig from `r` (at most [`MAX_IDSIG_SIZE`] bytes are read).
    pub fn read_from<R: Read>(r: R, what: &str) -> Result<Idsig, IdsigError> {
        read_limited(r, what, MAX_IDSIG_SIZE)
    }

    /// Reads and parses the idsig file at `path`.
    pub fn load(path: &Path) -> Result<Idsig, IdsigError> {
        let what = path.display().to_string();
        let file = File::open(path).map_err(|source| IdsigError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let meta = file.metadata().map_err(|source| IdsigError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        if !meta.is_file() {
            return Err(IdsigError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        if meta.len() > MAX_IDSIG_SIZE {
            return Err(IdsigError::TooLarge {
                what,
                len: meta.len(),
                max: MAX_IDSIG_SIZE,
            });
        }
        Idsig::read_from(file, &what)
    }

    /// The file's bytes. Fails only if a field is longer than a u32 length holds.
    pub fn to_bytes(&self) -> Result<Vec<u8>, IdsigError> {
        let h = &self.hashing_info;
        let mut hashing = Vec::with_capacity(45 + h.salt.len());
        hashing.extend_from_slice(&HASH_ALGORITHM_SHA256.to_le_bytes());
        hashing.push(LOG2_BLOCK_SIZE);
        put_bytes(&mut hashing, "salt", &h.salt)?;
        put_bytes(&mut hashing, "raw_root_hash", &h.raw_root_hash)?;

        let s = &self.signing_info;
        let mut signing = Vec::new();
        put_bytes(&mut signing, "apk_digest", &s.apk_digest)?;
        put_bytes(&mut signing, "x509_certificate", &s.x509_certificate)?;
        put_bytes(&mut signing, "additional_data", &s.additional_data)?;
        put_bytes(&mut signing, "public_key", &s.public_key)?;
        signing.extend_from_slice(&s.signature_algorithm_id.to_le_bytes());
        put_bytes(&mut signing, "signature", &s.signature)?;
        signing.extend_from_slice(&s.extra);

        let mut out =
            Vec::with_capacity(16 + hashing.len() + signing.len() + self.merkle_tree.len());
        out.extend_from_slice(&VERSION.to_le_bytes());
        put_bytes(&mut out, "hashing_info", &hashing)?;
        put_bytes(&mut out, "signing_info", &signing)?;
        put_bytes(&mut out, "merkle_tree", &self.merkle_tree)?;
        Ok(out)
    }
}

/// Reads at most `max` bytes (more is an error) and parses them. Memory grows with what is
/// actually read, never with a length field.
/// Longest hashing-info block [`Idsig::read_signing_info`] reads (the real one is 45 bytes
/// plus the salt).
const MAX_HEAD_BLOCK: usize = 64 << 10;

/// The version, hashing info and signing info: everything before the Merkle tree.
fn parse_head(c: &mut Cursor<'_>) -> Result<(HashingInfo, SigningInfo), IdsigError> {
    let version = c.u32("version")?;
    if version != VERSION {
        c.pos = 0;
        return Err(c.err(
            "version",
            format!("version {version} is not supported (only {VERSION})"),
        ));
    }
    let hashing_info = parse_hashing_info(c.block("hashing_info_size", usize::MAX)?)?;
    let signing_info = parse_signing_info(c.block("signing_info_size", MAX_SIGNING_INFO_SIZE)?)?;
    Ok((hashing_info, signing_info))
}

fn read_limited<R: Read>(r: R, what: &str, max: u64) -> Result<Idsig, IdsigError> {
    let mut bytes = Vec::new();
    r.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| IdsigError::Read {
            path: what.into(),
            offset: bytes.len() as u64,
            source,
        })?;
    if bytes.len() as u64 > max {
        return Err(IdsigError::TooLarge {
            what: what.to_string(),
            len: bytes.len() as u64,
            max,
        });
    }
    Idsig::parse(&bytes, what)
}

fn put_bytes(out: &mut Vec<u8>, field: &'static str, data: &[u8]) -> Result<(), IdsigError> {
    let len = u32::try_from(data.len()).map_err(|_| IdsigError::Encode {
        field,
        len: data.len() as u64,
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(data);
    Ok(())
}

fn parse_hashing_info(mut c: Cursor<'_>) -> Result<HashingInfo, IdsigError> {
    let at = c.pos;
    let algorithm = c.u32("hash_algorithm")?;
    if algorithm != HASH_ALGORITHM_SHA256 {
        c.pos = at;
        return Err(c.err(
            "hash_algorithm",
            format!("{algorithm} is not supported (only {HASH_ALGORITHM_SHA256}, SHA-256)"),
        ));
    }
    let at = c.pos;
    let log2 = c.u8("log2_blocksize")?;
    if log2 != LOG2_BLOCK_SIZE {
        c.pos = at;
        return Err(c.err(
            "log2_blocksize",
            format!("{log2} is not supported (only {LOG2_BLOCK_SIZE}, 4 KiB blocks)"),
        ));
    }
    let salt = c.bytes("salt", MAX_SALT_SIZE)?.to_vec();
    let at = c.pos;
    let root = c.bytes("raw_root_hash", usize::MAX)?;
    let raw_root_hash: [u8; HASH_SIZE] = root.try_into().map_err(|_| {
        c.pos = at;
        c.err(
            "raw_root_hash",
            format!("{} bytes, not {HASH_SIZE}", root.len()),
        )
    })?;
    if c.remaining() != 0 {
        return Err(c.err(
            "hashing_info_size",
            format!("{} unexpected bytes after the hashing info", c.remaining()),
        ));
    }
    Ok(HashingInfo {
        salt,
        raw_root_hash,
    })
}

fn parse_signing_info(mut c: Cursor<'_>) -> Result<SigningInfo, IdsigError> {
    let max = usize::MAX;
    let apk_digest = c.bytes("apk_digest", max)?.to_vec();
    let x509_certificate = c.bytes("x509_certificate", max)?.to_vec();
    let additional_data = c.bytes("additional_data", max)?.to_vec();
    let public_key = c.bytes("public_key", max)?.to_vec();
    let at = c.pos;
    let signature_algorithm_id = c.u32("signature_algorithm_id")?;
    if !SIGNATURE_ALGORITHM_IDS.contains(&signature_algorithm_id) {
        c.pos = at;
        return Err(c.err(
            "signature_algorithm_id",
            format!("unknown algorithm {signature_algorithm_id:#06x}"),
        ));
    }
    let signature = c.bytes("signature", max)?.to_vec();
    let extra = c.buf.get(c.pos..).unwrap_or_default().to_vec();
    Ok(SigningInfo {
        apk_digest,
        x509_certificate,
        additional_data,
        public_key,
        signature_algorithm_id,
        signature,
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Idsig {
        Idsig {
            hashing_info: HashingInfo {
                salt: Vec::new(),
                raw_root_hash: [0xab; 32],
            },
            signing_info: SigningInfo {
                apk_digest: vec![1; 32],
                x509_certificate: vec![2; 10],
                additional_data: vec![3; 3],
                public_key: vec![4; 7],
                signature_algorithm_id: 0x0103,
                signature: vec![5; 9],
                extra: Vec::new(),
            },
            merkle_tree: vec![7; 8192],
        }
    }

    #[test]
    fn signing_info_is_read_without_the_tree() {
        let t = crate::disk::testutil::TempDir::new("idsig-head");
        let sig = sample();
        let bytes = sig.to_bytes().unwrap();
        let path = t.file("a.idsig", &bytes);
        assert_eq!(Idsig::read_signing_info(&path).unwrap(), sig.signing_info);
        // The tree is not read: a file cut right after the signing info still answers.
        let head_len = bytes.len() - sig.merkle_tree.len() - 4;
        let cut = t.file("cut.idsig", &bytes[..head_len]);
        assert_eq!(Idsig::read_signing_info(&cut).unwrap(), sig.signing_info);
        // Cut inside the signing info, absurd sizes, wrong version: errors, no huge reads.
        let short = t.file("short.idsig", &bytes[..head_len - 3]);
        assert!(Idsig::read_signing_info(&short).is_err());
        let mut absurd = bytes.clone();
        absurd[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Idsig::read_signing_info(&t.file("absurd.idsig", &absurd)).is_err());
        let mut v3 = bytes.clone();
        v3[0] = 3;
        assert!(Idsig::read_signing_info(&t.file("v3.idsig", &v3)).is_err());
        assert!(Idsig::read_signing_info(&t.file("empty.idsig", b"")).is_err());
    }

    fn format_err(e: IdsigError) -> (&'static str, u64, String) {
        match e {
            IdsigError::Format {
                field,
                offset,
                reason,
                ..
            } => (field, offset, reason),
            other => panic!("not a format error: {other}"),
        }
    }

    #[test]
    fn worked_example_hashing_info_is_45_bytes() {
        let bytes = Idsig::default().to_bytes().unwrap();
        assert_eq!(&bytes[0..4], &2u32.to_le_bytes());
        assert_eq!(&bytes[4..8], &45u32.to_le_bytes());
        assert_eq!(&bytes[8..12], &1u32.to_le_bytes());
        assert_eq!(bytes[12], 12);
        assert_eq!(&bytes[13..17], &0u32.to_le_bytes()); // empty salt
        assert_eq!(&bytes[17..21], &32u32.to_le_bytes());
        // Android 13's default signing info: 24 bytes, algorithm 0x0301.
        assert_eq!(&bytes[53..57], &24u32.to_le_bytes());
        assert_eq!(&bytes[57..73], &[0u8; 16]);
        assert_eq!(&bytes[73..77], &0x0301u32.to_le_bytes());
        assert_eq!(&bytes[77..81], &[0u8; 4]);
        assert_eq!(&bytes[81..85], &[0u8; 4]); // empty tree
        assert_eq!(bytes.len(), 85);
    }

    #[test]
    fn round_trip() {
        for idsig in [
            sample(),
            Idsig::default(),
            Idsig {
                hashing_info: HashingInfo {
                    salt: vec![9; 32],
                    raw_root_hash: [1; 32],
                },
                signing_info: SigningInfo {
                    extra: vec![0x61, 0xad, 0x93, 0x1b, 0, 0, 0, 0],
                    ..sample().signing_info
                },
                merkle_tree: Vec::new(),
            },
        ] {
            let bytes = idsig.to_bytes().unwrap();
            let back = Idsig::parse(&bytes, "t").unwrap();
            assert_eq!(back, idsig);
            assert_eq!(back.to_bytes().unwrap(), bytes);
            assert_eq!(Idsig::read_from(&bytes[..], "t").unwrap(), idsig);
        }
    }

    #[test]
    fn truncated_anywhere_is_an_error() {
        let bytes = sample().to_bytes().unwrap();
        for len in 0..bytes.len() {
            let e = Idsig::parse(&bytes[..len], "t").unwrap_err();
            let (field, offset, _) = format_err(e);
            assert!(offset <= len as u64, "len {len}: {field} at {offset}");
        }
    }

    #[test]
    fn truncation_names_the_field() {
        let bytes = sample().to_bytes().unwrap();
        let cases: [(usize, &str); 5] = [
            (2, "version"),
            (6, "hashing_info_size"),
            (30, "hashing_info_size"),
            (60, "signing_info_size"),
            (bytes.len() - 1, "merkle_tree_size"),
        ];
        for (len, want) in cases {
            let (field, _, reason) = format_err(Idsig::parse(&bytes[..len], "t").unwrap_err());
            assert_eq!(field, want, "len {len}: {reason}");
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = sample().to_bytes().unwrap();
        bytes.push(0);
        let (field, offset, _) = format_err(Idsig::parse(&bytes, "t").unwrap_err());
        assert_eq!(field, "end of file");
        assert_eq!(offset, bytes.len() as u64 - 1);
    }

    /// Replaces the u32 at `at` and expects an error naming `field`.
    fn patched(at: usize, value: u32, field: &str) -> String {
        let mut bytes = sample().to_bytes().unwrap();
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
        let (f, _, reason) = format_err(Idsig::parse(&bytes, "t").unwrap_err());
        assert_eq!(f, field, "{reason}");
        reason
    }

    #[test]
    fn wrong_version_algorithm_and_sizes() {
        assert!(patched(0, 3, "version").contains("version 3"));
        assert!(patched(8, 2, "hash_algorithm").contains("only 1"));
        let mut bytes = sample().to_bytes().unwrap();
        bytes[12] = 16;
        let (f, _, _) = format_err(Idsig::parse(&bytes, "t").unwrap_err());
        assert_eq!(f, "log2_blocksize");
        // Absurd lengths: no allocation, a clear error.
        for (at, field) in [
            (4, "hashing_info_size"),
            (13, "salt"),
            (17, "raw_root_hash"),
            (53, "signing_info_size"),
            (57, "apk_digest"),
        ] {
            let reason = patched(at, u32::MAX, field);
            assert!(reason.contains("4294967295"), "{field}: {reason}");
        }
        // A root hash of the wrong length (the hashing info still adds up).
        let reason = patched(13, 1, "raw_root_hash");
        assert!(
            reason.contains("larger") || reason.contains("not 32"),
            "{reason}"
        );
        // Hashing info longer than its fields.
        assert!(patched(4, 44, "raw_root_hash").contains("larger"));
    }

    #[test]
    fn bad_signature_algorithm_and_tree_size() {
        let bytes = sample().to_bytes().unwrap();
        // signing info: 57 + 4+32 + 4+10 + 4+3 + 4+7 = 125 is the algorithm id.
        assert_eq!(&bytes[125..129], &0x0103u32.to_le_bytes());
        assert!(patched(125, 0x0999, "signature_algorithm_id").contains("0x0999"));
        let tree_at = bytes.len() - 8192 - 4;
        assert!(patched(tree_at, u32::MAX, "merkle_tree_size").contains("larger"));
        assert!(patched(tree_at, 4096, "end of file").contains("4096 bytes follow"));
        let mut short = bytes.clone();
        short.truncate(bytes.len() - 100);
        short[tree_at..tree_at + 4].copy_from_slice(&(8092u32).to_le_bytes());
        assert!(
            format_err(Idsig::parse(&short, "t").unwrap_err())
                .2
                .contains("multiple")
        );
        // The tree truncated: its size claims more than remains.
        let (f, _, reason) =
            format_err(Idsig::parse(&bytes[..bytes.len() - 4096], "t").unwrap_err());
        assert_eq!(f, "merkle_tree_size");
        assert!(reason.contains("8192"), "{reason}");
    }

    #[test]
    fn oversized_reader_is_refused_without_parsing() {
        struct Zeros;
        impl Read for Zeros {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                buf.fill(0);
                Ok(buf.len())
            }
        }
        match read_limited(Zeros, "zeros", 1 << 20).unwrap_err() {
            IdsigError::TooLarge { len, max, .. } => {
                assert_eq!((len, max), ((1 << 20) + 1, 1 << 20))
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn empty_input() {
        let (f, o, _) = format_err(Idsig::parse(&[], "t").unwrap_err());
        assert_eq!((f, o), ("version", 0));
    }
}
