//! The APK Signing Block and the content digest of its v3 (else v2) signer: what an idsig's
//! `apk_digest` and `signature_algorithm_id` carry (Android 14's `V4Signature::create`,
//! apkverify `v3.rs`; apksigner's v4 signer makes the same choice).
//!
//! The block sits right before the ZIP central directory:
//!
//! ```text
//! u64 size (of what follows), { u64 len, u32 id, value[len - 4] }*, u64 size, "APK Sig Block 42"
//! ```
//!
//! A v2 block (ID 0x7109871a) or v3 block (0xf05368c0) is a u32-length-prefixed sequence of
//! signers; every nested item is u32-length-prefixed too:
//!
//! ```text
//! v2 signer: signed_data, signatures, public_key
//! v3 signer: signed_data, u32 min_sdk, u32 max_sdk, signatures, public_key
//! signed_data: digests, certificates, [v3: u32 min_sdk, u32 max_sdk,] attributes
//! digest / signature: u32 signature_algorithm_id, bytes value
//! ```
//!
//! The signer is the only one, or (v3, several signers for SDK ranges) the one whose range
//! holds [`TARGET_SDK`]. Of its signatures, the strongest supported one is chosen (content
//! digest SHA-512 > verity SHA-256 > SHA-256; DSA is not supported), and the digest is copied
//! from the signed data, not recomputed. The v3.1 block (0x1b93ad61, key rotation for SDK 33+)
//! is not read.
//!
//! Everything is bounds-checked; the block is read whole only if at most
//! [`MAX_SIGNING_BLOCK_SIZE`] bytes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::IdsigError;
use super::hashtree::{input_len, open_input};

/// The APK Signing Block's magic, at its very end.
pub const SIGNING_BLOCK_MAGIC: &[u8; 16] = b"APK Sig Block 42";
/// APK Signature Scheme v2 block ID.
pub const V2_BLOCK_ID: u32 = 0x7109_871a;
/// APK Signature Scheme v3 block ID.
pub const V3_BLOCK_ID: u32 = 0xf053_68c0;
/// Largest signing block read (real ones are a few KiB: certificates, signatures, padding).
pub const MAX_SIGNING_BLOCK_SIZE: u64 = 16 << 20;
/// The platform SDK level used to choose among v3 signers with SDK ranges (Android 14).
pub const TARGET_SDK: u32 = 34;

const EOCD_MAGIC: u32 = 0x0605_4b50;
const EOCD_SIZE: usize = 22;
const ZIP64_LOCATOR_MAGIC: u32 = 0x0706_4b50;
const ZIP64_LOCATOR_SIZE: u64 = 20;

/// The signer's content digest from an APK's signature block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApkDigest {
    /// 3 (from the v3 block) or 2 (from the v2 block).
    pub scheme: u8,
    pub signature_algorithm_id: u32,
    pub digest: Vec<u8>,
}

/// The content digest of the APK at `path`, from its v3 block, else its v2 block. `None` if
/// the file has no APK Signing Block (an unsigned or v1-only APK, or not a ZIP at all) or the
/// block has neither a v2 nor a v3 block; an error if what is there is malformed.
pub fn apk_digest(path: &Path) -> Result<Option<ApkDigest>, IdsigError> {
    let file = open_input(path)?;
    let len = input_len(&file, path)?;
    let Some((block, block_at)) = signing_block(&file, path, len)? else {
        return Ok(None);
    };
    let pairs = Pairs::parse(&block, block_at, path)?;
    if let Some((value, at)) = pairs.get(V3_BLOCK_ID) {
        return Ok(Some(digest_of(value, at, path, 3)?));
    }
    if let Some((value, at)) = pairs.get(V2_BLOCK_ID) {
        return Ok(Some(digest_of(value, at, path, 2)?));
    }
    Ok(None)
}

fn sig_err(path: &Path, what: &'static str, offset: u64, reason: String) -> IdsigError {
    IdsigError::ApkSignature {
        path: path.to_path_buf(),
        what,
        offset,
        reason,
    }
}

fn read_at(file: &File, path: &Path, buf: &mut [u8], offset: u64) -> Result<(), IdsigError> {
    file.read_exact_at(buf, offset)
        .map_err(|source| IdsigError::Read {
            path: path.to_path_buf(),
            offset,
            source,
        })
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Finds the End of Central Directory record: the last `PK\5\6` whose comment length reaches
/// exactly the end of the file. Returns (its offset, central directory offset).
fn find_eocd(file: &File, path: &Path, len: u64) -> Result<Option<(u64, u64)>, IdsigError> {
    if len < EOCD_SIZE as u64 {
        return Ok(None);
    }
    let tail_len = len.min((EOCD_SIZE + u16::MAX as usize) as u64);
    let tail_at = len - tail_len;
    let mut tail = vec![0u8; tail_len as usize];
    read_at(file, path, &mut tail, tail_at)?;
    for i in (0..=tail.len() - EOCD_SIZE).rev() {
        if le_u32(&tail, i) != Some(EOCD_MAGIC) {
            continue;
        }
        let comment = le_u16(&tail, i + 20).unwrap_or(u16::MAX) as usize;
        if i + EOCD_SIZE + comment != tail.len() {
            continue;
        }
        let eocd_at = tail_at + i as u64;
        let cd_size = u64::from(le_u32(&tail, i + 12).unwrap_or(0));
        let cd_at = u64::from(le_u32(&tail, i + 16).unwrap_or(0));
        if eocd_at >= ZIP64_LOCATOR_SIZE {
            let mut loc = [0u8; 4];
            read_at(file, path, &mut loc, eocd_at - ZIP64_LOCATOR_SIZE)?;
            if u32::from_le_bytes(loc) == ZIP64_LOCATOR_MAGIC {
                return Err(sig_err(
                    path,
                    "ZIP end of central directory",
                    eocd_at,
                    "ZIP64 APKs are not supported".into(),
                ));
            }
        }
        if cd_at.checked_add(cd_size) != Some(eocd_at) {
            return Err(sig_err(
                path,
                "ZIP end of central directory",
                eocd_at,
                format!(
                    "the central directory ({cd_size} bytes at {cd_at}) does not end where the \
                     end record starts"
                ),
            ));
        }
        return Ok(Some((eocd_at, cd_at)));
    }
    Ok(None)
}

/// The APK Signing Block (whole, with both size fields and the magic) and its offset.
fn signing_block(file: &File, path: &Path, len: u64) -> Result<Option<(Vec<u8>, u64)>, IdsigError> {
    let Some((_, cd_at)) = find_eocd(file, path, len)? else {
        return Ok(None);
    };
    let Some(footer_at) = cd_at.checked_sub(24) else {
        return Ok(None);
    };
    let mut footer = [0u8; 24];
    read_at(file, path, &mut footer, footer_at)?;
    if &footer[8..] != SIGNING_BLOCK_MAGIC {
        return Ok(None);
    }
    let what = "APK Signing Block";
    let size = le_u64(&footer, 0).unwrap_or(0);
    if !(24..=MAX_SIGNING_BLOCK_SIZE).contains(&size) {
        return Err(sig_err(
            path,
            what,
            footer_at,
            format!("size {size} is outside 24..={MAX_SIGNING_BLOCK_SIZE}"),
        ));
    }
    let Some(block_at) = cd_at.checked_sub(size + 8) else {
        return Err(sig_err(
            path,
            what,
            footer_at,
            format!("size {size} reaches before the start of the file"),
        ));
    };
    let mut block = vec![0u8; (size + 8) as usize];
    read_at(file, path, &mut block, block_at)?;
    let header = le_u64(&block, 0).unwrap_or(0);
    if header != size {
        return Err(sig_err(
            path,
            what,
            block_at,
            format!("size at the start ({header}) differs from size at the end ({size})"),
        ));
    }
    Ok(Some((block, block_at)))
}

/// The ID-value pairs of a signing block: (id, value range in the block).
struct Pairs<'a> {
    block: &'a [u8],
    block_at: u64,
    pairs: Vec<(u32, usize, usize)>,
}

impl<'a> Pairs<'a> {
    fn parse(block: &'a [u8], block_at: u64, path: &Path) -> Result<Pairs<'a>, IdsigError> {
        let end = block.len() - 24;
        let mut at = 8;
        let mut pairs = Vec::new();
        while at < end {
            let bad = |reason: String| {
                sig_err(path, "APK Signing Block pair", block_at + at as u64, reason)
            };
            let len = le_u64(&block[..end], at).ok_or_else(|| bad("truncated length".into()))?;
            let remaining = (end - at - 8) as u64;
            if len < 4 || len > remaining {
                return Err(bad(format!(
                    "length {len} is outside 4..={remaining} (what remains of the block)"
                )));
            }
            let id = le_u32(block, at + 8).unwrap_or(0);
            let value_at = at + 12;
            let value_end = at + 8 + len as usize;
            pairs.push((id, value_at, value_end));
            at = value_end;
        }
        Ok(Pairs {
            block,
            block_at,
            pairs,
        })
    }

    /// The first value with `id`, and its file offset.
    fn get(&self, id: u32) -> Option<(&'a [u8], u64)> {
        let &(_, start, end) = self.pairs.iter().find(|(i, _, _)| *i == id)?;
        Some((self.block.get(start..end)?, self.block_at + start as u64))
    }
}

/// A reader of u32-length-prefixed items inside a signature scheme block.
struct Seq<'a> {
    buf: &'a [u8],
    pos: usize,
    /// File offset of `buf[0]`.
    at: u64,
    path: &'a Path,
    what: &'static str,
}

impl<'a> Seq<'a> {
    fn err(&self, reason: String) -> IdsigError {
        sig_err(self.path, self.what, self.at + self.pos as u64, reason)
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn u32(&mut self, field: &str) -> Result<u32, IdsigError> {
        let v =
            le_u32(self.buf, self.pos).ok_or_else(|| self.err(format!("{field}: truncated")))?;
        self.pos += 4;
        Ok(v)
    }

    /// A u32 length and that many bytes, as a nested sequence.
    fn item(&mut self, what: &'static str) -> Result<Seq<'a>, IdsigError> {
        let len = self.u32(what)? as usize;
        let rest = self.buf.len() - self.pos;
        if len > rest {
            self.pos -= 4;
            return Err(self.err(format!(
                "{what}: length {len} is larger than the {rest} bytes that remain"
            )));
        }
        let item = Seq {
            buf: &self.buf[self.pos..self.pos + len],
            pos: 0,
            at: self.at + self.pos as u64,
            path: self.path,
            what,
        };
        self.pos += len;
        Ok(item)
    }

    /// The items of a length-prefixed sequence.
    fn items(mut self, what: &'static str) -> Result<Vec<Seq<'a>>, IdsigError> {
        let mut out = Vec::new();
        while !self.is_empty() {
            out.push(self.item(what)?);
        }
        Ok(out)
    }
}

/// One signer: (min_sdk, max_sdk, signature algorithm IDs, digests by algorithm ID).
struct Signer<'a> {
    sdk: (u32, u32),
    signatures: Vec<u32>,
    digests: Vec<(u32, Seq<'a>)>,
}

fn parse_signer<'a>(mut s: Seq<'a>, scheme: u8) -> Result<Signer<'a>, IdsigError> {
    let mut signed = s.item("signed data")?;
    let mut sdk = (0, u32::MAX);
    if scheme == 3 {
        sdk = (s.u32("signer min_sdk")?, s.u32("signer max_sdk")?);
    }
    let signatures = s
        .item("signatures")?
        .items("signature")?
        .into_iter()
        .map(|mut sig| sig.u32("signature algorithm id"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut digests = Vec::new();
    for mut d in signed.item("digests")?.items("digest")? {
        let id = d.u32("digest algorithm id")?;
        let value = d.item("digest value")?;
        digests.push((id, value));
    }
    Ok(Signer {
        sdk,
        signatures,
        digests,
    })
}

/// Rank of the content digest a signature algorithm uses (higher is stronger); `None` for
/// algorithms Android does not accept here (DSA, unknown IDs).
fn digest_rank(algorithm: u32) -> Option<u8> {
    match algorithm {
        0x0101 | 0x0103 | 0x0201 => Some(1), // chunked SHA-256
        0x0421 | 0x0423 => Some(2),          // verity chunked SHA-256
        0x0102 | 0x0104 | 0x0202 => Some(3), // chunked SHA-512
        _ => None,
    }
}

/// The chosen signer's strongest digest in a v2 (`scheme` 2) or v3 block value.
fn digest_of(value: &[u8], at: u64, path: &Path, scheme: u8) -> Result<ApkDigest, IdsigError> {
    let what = if scheme == 3 {
        "v3 signature block"
    } else {
        "v2 signature block"
    };
    let mut top = Seq {
        buf: value,
        pos: 0,
        at,
        path,
        what,
    };
    let signers = top.item("signers")?.items("signer")?;
    let signers: Vec<Signer<'_>> = signers
        .into_iter()
        .map(|s| parse_signer(s, scheme))
        .collect::<Result<_, _>>()?;
    let chosen: Vec<&Signer<'_>> = if signers.len() == 1 {
        signers.iter().collect()
    } else {
        signers
            .iter()
            .filter(|s| s.sdk.0 <= TARGET_SDK && TARGET_SDK <= s.sdk.1)
            .collect()
    };
    let [signer] = chosen.as_slice() else {
        return Err(sig_err(
            path,
            what,
            at,
            format!(
                "{} signers, {} of them for SDK {TARGET_SDK}: need exactly one",
                signers.len(),
                chosen.len()
            ),
        ));
    };
    let best = signer
        .signatures
        .iter()
        .filter_map(|&id| Some((digest_rank(id)?, id)))
        .fold(None, |best: Option<(u8, u32)>, cur| match best {
            Some(b) if b.0 >= cur.0 => Some(b),
            _ => Some(cur),
        });
    let Some((_, algorithm)) = best else {
        return Err(sig_err(
            path,
            what,
            at,
            format!(
                "the signer has no supported signature (algorithms {:#06x?})",
                signer.signatures
            ),
        ));
    };
    let Some((_, digest)) = signer.digests.iter().find(|(id, _)| *id == algorithm) else {
        return Err(sig_err(
            path,
            what,
            at,
            format!("the signed data has no digest for algorithm {algorithm:#06x}"),
        ));
    };
    Ok(ApkDigest {
        scheme,
        signature_algorithm_id: algorithm,
        digest: digest.buf.to_vec(),
    })
}
