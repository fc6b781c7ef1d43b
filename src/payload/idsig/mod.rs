//! APK Signature Scheme v4 `.idsig` files: the format, the fs-verity style Merkle tree over the
//! APK, and creating and checking them (docs/idsig.md).
//!
//! - [`format`]: the `.idsig` structure ([`Idsig`]): a strict parser and a writer.
//! - [`hashtree`]: the Merkle tree (4 KiB blocks, SHA-256, optional salt), level 0 hashed in
//!   parallel with positional reads.
//! - [`apk_sig`]: the APK Signing Block and the signer's content digest from its v3 (else v2)
//!   block, which an idsig's `apk_digest` carries.
//! - [`create`]: `create_idsig` (what `apksigner --v4-signing-enabled` writes for the hashing
//!   info and tree; what Android 14's `V4Signature::create` writes for the signing info) and
//!   Android's `createOrUpdateIdsigFile`.
//! - [`verify`]: an APK against an idsig, naming the first 4 KiB block that differs; the root
//!   hash of a file or block device the guest agent compares with `raw_root_hash`.
//!
//! Everything read here is untrusted: APKs and idsigs. Errors name the file and the field or
//! offset; lengths are checked against what remains of the file and against caps before
//! anything is allocated; nothing panics.

pub mod apk_sig;
pub mod create;
pub mod format;
pub mod hashtree;
pub mod verify;

use std::io;
use std::path::PathBuf;

pub use apk_sig::{ApkDigest, apk_digest};
pub use create::{IdsigUpdate, build_idsig, create_idsig, create_or_update_idsig};
pub use format::{HashingInfo, Idsig, SigningInfo};
pub use hashtree::{HashTree, root_hash_of_file};
pub use verify::{VerifyReport, check_root_hash, verify, verify_idsig};

/// Errors of the idsig layer.
#[derive(Debug, thiserror::Error)]
pub enum IdsigError {
    #[error("cannot open {path:?}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path:?} is not a regular file or block device")]
    NotAFile { path: PathBuf },
    #[error(
        "{path:?} is not an APK: it has no ZIP end of central directory record (an APK is a \
         ZIP file)"
    )]
    NotAZip { path: PathBuf },
    #[error("reading {path:?} at offset {offset} failed: {source}")]
    Read {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
    #[error("{path:?} ends before offset {expected}: reading at offset {offset} hit its end")]
    ShortFile {
        path: PathBuf,
        offset: u64,
        expected: u64,
    },
    #[error("cannot write {path:?}: {source}")]
    Write { path: PathBuf, source: io::Error },
    /// A malformed `.idsig`: `field` names what was being read, `offset` where.
    #[error("idsig {what}: {field} at offset {offset}: {reason}")]
    Format {
        what: String,
        field: &'static str,
        offset: u64,
        reason: String,
    },
    #[error("idsig {what}: {len} bytes is larger than the {max} bytes accepted")]
    TooLarge { what: String, len: u64, max: u64 },
    /// An idsig that cannot be written (a field longer than its u32 length allows).
    #[error("cannot encode idsig: {field} is {len} bytes, more than a u32 length holds")]
    Encode { field: &'static str, len: u64 },
    /// A malformed APK Signing Block or signature scheme block.
    #[error("APK {path:?}: {what} at offset {offset}: {reason}")]
    ApkSignature {
        path: PathBuf,
        what: &'static str,
        offset: u64,
        reason: String,
    },
    #[error(
        "idsig {idsig:?} does not fit APK {apk:?}: the APK is {apk_len} bytes, so its Merkle \
         tree is {expected} bytes, but the idsig holds {actual}"
    )]
    SizeMismatch {
        apk: PathBuf,
        idsig: PathBuf,
        apk_len: u64,
        expected: u64,
        actual: u64,
    },
    #[error(
        "APK {apk:?} does not match idsig {idsig:?}: 4 KiB data block {block} (bytes {offset}..) \
         differs"
    )]
    BlockMismatch {
        apk: PathBuf,
        idsig: PathBuf,
        block: u64,
        offset: u64,
    },
    #[error("idsig {idsig:?}: its Merkle tree is inconsistent: {reason}")]
    TreeInconsistent { idsig: PathBuf, reason: String },
    #[error("{path:?} ({len} bytes): root hash {actual} differs from the expected {expected}")]
    RootHashMismatch {
        path: PathBuf,
        len: u64,
        actual: String,
        expected: String,
    },
}

impl IdsigError {
    /// True when the input itself is bad (missing, not a file, not an APK, a malformed
    /// signature block or idsig), false for a host I/O failure: exit 35 against exit 1.
    pub fn is_bad_input(&self) -> bool {
        !matches!(
            self,
            IdsigError::Read { .. } | IdsigError::Write { .. } | IdsigError::Encode { .. }
        )
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
