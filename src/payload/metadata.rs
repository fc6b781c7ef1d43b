//! The payload metadata: what the host puts in the `payload-metadata` partition so the guest
//! knows where its APEXes, APK and config are.
//!
//! The messages are Android's `microdroid/payload/metadata.proto` (proto3, package
//! `android.microdroid`) with the same field numbers, written by hand with prost's derive. On
//! disk a message is framed as a 4-byte big-endian length followed by the protobuf body;
//! readers take exactly that many bytes and ignore whatever follows (the partition is padded).

use std::io::{self, Read};

use prost::Message;

/// The version the host writes in [`Metadata::version`].
pub const METADATA_VERSION: u32 = 1;
/// Largest metadata body accepted or written (Android's are a few hundred bytes).
pub const MAX_METADATA_SIZE: u32 = 1 << 20;
/// Where the guest exposes the APK's contents; config paths in the metadata start with it.
pub const APK_MOUNT_POINT: &str = "/mnt/apk/";
/// The [`ApkPayload`] names the host always writes.
pub const APK_NAME: &str = "apk";
pub const APK_PARTITION: &str = "microdroid-apk";
pub const APK_IDSIG_PARTITION: &str = "microdroid-apk-idsig";

/// Errors reading or writing metadata.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("payload metadata is truncated: {len} bytes, needs {needed}")]
    Truncated { len: u64, needed: u64 },
    #[error("payload metadata body of {len} bytes is larger than the {max} allowed")]
    TooLarge { len: u64, max: u32 },
    #[error("payload metadata is not a valid Metadata protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("reading payload metadata: {0}")]
    Io(#[source] io::Error),
}

/// `android.microdroid.Metadata`.
#[derive(Clone, PartialEq, Message)]
pub struct Metadata {
    /// Always [`METADATA_VERSION`] from the host.
    #[prost(uint32, tag = "1")]
    pub version: u32,
    #[prost(message, repeated, tag = "2")]
    pub apexes: Vec<ApexPayload>,
    #[prost(message, optional, tag = "3")]
    pub apk: Option<ApkPayload>,
    /// Android's `oneof payload`.
    #[prost(oneof = "PayloadSource", tags = "4, 5")]
    pub payload: Option<PayloadSource>,
}

/// Android's `oneof payload` of [`Metadata`]: where the guest finds its payload config.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum PayloadSource {
    /// Field 4, `config_path` (A13 `payload_config_path`): the config JSON's path in the guest,
    /// `/mnt/apk/<path inside the APK>`.
    #[prost(string, tag = "4")]
    ConfigPath(String),
    /// Field 5, `config` (Android 14+): no JSON; run a library from the APK.
    #[prost(message, tag = "5")]
    Config(PayloadConfig),
}

/// `android.microdroid.ApexPayload`.
#[derive(Clone, PartialEq, Message)]
pub struct ApexPayload {
    /// The APEX module name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// `microdroid-apex-<i>`.
    #[prost(string, tag = "2")]
    pub partition_name: String,
    /// Left empty by the host; filled by the guest for apexd.
    #[prost(bytes = "vec", tag = "3")]
    pub public_key: Vec<u8>,
    /// Left empty by the host; filled by the guest for apexd.
    #[prost(bytes = "vec", tag = "4")]
    pub root_digest: Vec<u8>,
    /// From apex-info-list's `lastUpdateMillis` (which really holds seconds).
    #[prost(uint64, tag = "5")]
    pub last_update_seconds: u64,
    #[prost(bool, tag = "6")]
    pub is_factory: bool,
    /// Guest side only (Android 14+).
    #[prost(int64, tag = "7")]
    pub manifest_version: i64,
    /// Guest side only (Android 14+).
    #[prost(string, tag = "8")]
    pub manifest_name: String,
}

/// `android.microdroid.ApkPayload`.
#[derive(Clone, PartialEq, Message)]
pub struct ApkPayload {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub payload_partition_name: String,
    #[prost(string, tag = "3")]
    pub idsig_partition_name: String,
}

/// `android.microdroid.PayloadConfig` (Android 14+): the no-JSON payload.
#[derive(Clone, PartialEq, Message)]
pub struct PayloadConfig {
    /// File name of a shared library inside the APK (`lib/<abi>/<name>`).
    #[prost(string, tag = "1")]
    pub payload_binary_name: String,
    /// Number of extra APKs (partitions `extra-apk-<i>`).
    #[prost(uint32, tag = "2")]
    pub extra_apk_count: u32,
}

impl ApkPayload {
    /// The fixed APK entry the host writes.
    pub fn standard() -> ApkPayload {
        ApkPayload {
            name: APK_NAME.into(),
            payload_partition_name: APK_PARTITION.into(),
            idsig_partition_name: APK_IDSIG_PARTITION.into(),
        }
    }
}

impl Metadata {
    /// The metadata the host writes for an app whose config JSON is at `config_path_in_apk`
    /// (e.g. `assets/vm_config.json`), with the selected `apexes` in partition order.
    pub fn for_app(config_path_in_apk: &str, apexes: &[ApexPayload]) -> Metadata {
        Metadata {
            version: METADATA_VERSION,
            apexes: apexes.to_vec(),
            apk: Some(ApkPayload::standard()),
            payload: Some(PayloadSource::ConfigPath(format!(
                "{APK_MOUNT_POINT}{config_path_in_apk}"
            ))),
        }
    }

    /// The metadata the host writes for a payload binary (no config JSON) and
    /// `extra_apk_count` extra APKs. No APEXes, as in Android.
    pub fn for_payload_binary(name: &str, extra_apk_count: u32) -> Metadata {
        Metadata {
            version: METADATA_VERSION,
            apexes: Vec::new(),
            apk: Some(ApkPayload::standard()),
            payload: Some(PayloadSource::Config(PayloadConfig {
                payload_binary_name: name.into(),
                extra_apk_count,
            })),
        }
    }

    /// The config path inside the APK, when the payload is a config JSON under
    /// [`APK_MOUNT_POINT`]; `None` otherwise.
    pub fn config_path_in_apk(&self) -> Option<&str> {
        match &self.payload {
            Some(PayloadSource::ConfigPath(p)) => p.strip_prefix(APK_MOUNT_POINT),
            _ => None,
        }
    }

    /// The framed form: 4-byte big-endian body length, then the body. Fails only if the body
    /// would be larger than [`MAX_METADATA_SIZE`] (which no reader would accept).
    pub fn encode_framed(&self) -> Result<Vec<u8>, MetadataError> {
        let len = self.encoded_len();
        if len > MAX_METADATA_SIZE as usize {
            return Err(MetadataError::TooLarge {
                len: len as u64,
                max: MAX_METADATA_SIZE,
            });
        }
        let mut out = Vec::with_capacity(4 + len);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        self.encode_raw(&mut out);
        Ok(out)
    }

    /// Decodes the framed form. Bytes after the body are ignored, as Android does.
    pub fn decode_framed(bytes: &[u8]) -> Result<Metadata, MetadataError> {
        let len = frame_len(bytes.get(..4), bytes.len())?;
        let body = bytes.get(4..4 + len).ok_or(MetadataError::Truncated {
            len: bytes.len() as u64,
            needed: 4 + len as u64,
        })?;
        Ok(Metadata::decode(body)?)
    }

    /// Reads the framed form from `reader` (a file or the partition's block device), reading
    /// exactly the prefix and the body and nothing after it.
    pub fn read_framed(reader: &mut impl Read) -> Result<Metadata, MetadataError> {
        let mut prefix = [0u8; 4];
        let got = read_up_to(reader, &mut prefix)?;
        let len = frame_len(prefix.get(..got).filter(|p| p.len() == 4), got)?;
        let mut body = Vec::with_capacity(len);
        reader
            .take(len as u64)
            .read_to_end(&mut body)
            .map_err(MetadataError::Io)?;
        if body.len() < len {
            return Err(MetadataError::Truncated {
                len: 4 + body.len() as u64,
                needed: 4 + len as u64,
            });
        }
        Ok(Metadata::decode(body.as_slice())?)
    }
}

/// The body length from a 4-byte `prefix` (`None` when fewer than 4 bytes were available out
/// of `available`), checked against [`MAX_METADATA_SIZE`].
fn frame_len(prefix: Option<&[u8]>, available: usize) -> Result<usize, MetadataError> {
    let prefix: [u8; 4] =
        prefix
            .and_then(|p| p.try_into().ok())
            .ok_or(MetadataError::Truncated {
                len: available as u64,
                needed: 4,
            })?;
    let len = u32::from_be_bytes(prefix);
    if len > MAX_METADATA_SIZE {
        return Err(MetadataError::TooLarge {
            len: u64::from(len),
            max: MAX_METADATA_SIZE,
        });
    }
    Ok(len as usize)
}

/// Reads until `buf` is full or end of file; returns the bytes read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> Result<usize, MetadataError> {
    let mut got = 0;
    while let Some(rest) = buf.get_mut(got..).filter(|r| !r.is_empty()) {
        match reader.read(rest) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(MetadataError::Io(e)),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apex(name: &str, partition: &str) -> ApexPayload {
        ApexPayload {
            name: name.into(),
            partition_name: partition.into(),
            last_update_seconds: 2,
            is_factory: true,
            ..ApexPayload::default()
        }
    }

    /// Hand-encoded from the protobuf wire format: a tag byte is `field << 3 | wire type`
    /// (0 varint, 2 length-delimited).
    #[test]
    fn golden_bytes_config_path() {
        let m = Metadata {
            version: 1,
            apexes: vec![apex("a", "b")],
            apk: Some(ApkPayload {
                name: "c".into(),
                payload_partition_name: "d".into(),
                idsig_partition_name: "e".into(),
            }),
            payload: Some(PayloadSource::ConfigPath("f".into())),
        };
        #[rustfmt::skip]
        let body: &[u8] = &[
            0x08, 0x01,                         // 1 version = 1
            0x12, 0x0a,                         // 2 apexes, 10 bytes:
              0x0a, 0x01, b'a',                 //   1 name
              0x12, 0x01, b'b',                 //   2 partition_name
              0x28, 0x02,                       //   5 last_update_seconds = 2
              0x30, 0x01,                       //   6 is_factory = true
            0x1a, 0x09,                         // 3 apk, 9 bytes:
              0x0a, 0x01, b'c',                 //   1 name
              0x12, 0x01, b'd',                 //   2 payload_partition_name
              0x1a, 0x01, b'e',                 //   3 idsig_partition_name
            0x22, 0x01, b'f',                   // 4 config_path
        ];
        let mut framed = vec![0, 0, 0, body.len() as u8];
        framed.extend_from_slice(body);
        assert_eq!(m.encode_framed().unwrap(), framed);
        assert_eq!(Metadata::decode_framed(&framed).unwrap(), m);
    }

    #[test]
    fn golden_bytes_payload_config_and_guest_fields() {
        let m = Metadata {
            version: 1,
            apexes: vec![ApexPayload {
                name: "x".into(),
                public_key: vec![0xaa],
                root_digest: vec![0xbb],
                manifest_version: 3,
                manifest_name: "m".into(),
                ..ApexPayload::default()
            }],
            apk: None,
            payload: Some(PayloadSource::Config(PayloadConfig {
                payload_binary_name: "p.so".into(),
                extra_apk_count: 2,
            })),
        };
        #[rustfmt::skip]
        let body: &[u8] = &[
            0x08, 0x01,
            0x12, 0x0e,                         // 2 apexes, 14 bytes:
              0x0a, 0x01, b'x',                 //   1 name
              0x1a, 0x01, 0xaa,                 //   3 public_key
              0x22, 0x01, 0xbb,                 //   4 root_digest
              0x38, 0x03,                       //   7 manifest_version = 3
              0x42, 0x01, b'm',                 //   8 manifest_name
            0x2a, 0x08,                         // 5 config, 8 bytes:
              0x0a, 0x04, b'p', b'.', b's', b'o', // 1 payload_binary_name
              0x10, 0x02,                       //   2 extra_apk_count = 2
        ];
        let mut framed = vec![0, 0, 0, body.len() as u8];
        framed.extend_from_slice(body);
        assert_eq!(m.encode_framed().unwrap(), framed);
        assert_eq!(Metadata::decode_framed(&framed).unwrap(), m);
        // Android 13 wrote field 4 under another name; same number, same wire type.
        let a13: &[u8] = &[0, 0, 0, 5, 0x08, 0x01, 0x22, 0x01, b'/'];
        assert_eq!(
            Metadata::decode_framed(a13).unwrap().payload,
            Some(PayloadSource::ConfigPath("/".into()))
        );
    }

    #[test]
    fn host_metadata() {
        let m = Metadata::for_app("assets/vm_config.json", &[apex("com.android.art", "p")]);
        assert_eq!(m.version, 1);
        assert_eq!(m.config_path_in_apk(), Some("assets/vm_config.json"));
        assert_eq!(
            m.payload,
            Some(PayloadSource::ConfigPath(
                "/mnt/apk/assets/vm_config.json".into()
            ))
        );
        let apk = m.apk.as_ref().unwrap();
        assert_eq!(
            (
                apk.name.as_str(),
                apk.payload_partition_name.as_str(),
                apk.idsig_partition_name.as_str()
            ),
            ("apk", "microdroid-apk", "microdroid-apk-idsig")
        );
        let b = Metadata::for_payload_binary("libmain.so", 1);
        assert!(b.apexes.is_empty());
        assert_eq!(b.config_path_in_apk(), None);
        assert_eq!(
            b.payload,
            Some(PayloadSource::Config(PayloadConfig {
                payload_binary_name: "libmain.so".into(),
                extra_apk_count: 1
            }))
        );
    }

    #[test]
    fn framing_errors_and_trailing_bytes() {
        let m = Metadata::for_payload_binary("libmain.so", 0);
        let framed = m.encode_framed().unwrap();
        // Trailing padding (the partition is 4 KiB aligned) is ignored by both readers.
        let mut padded = framed.clone();
        padded.resize(4096, 0xee);
        assert_eq!(Metadata::decode_framed(&padded).unwrap(), m);
        let mut reader = padded.as_slice();
        assert_eq!(Metadata::read_framed(&mut reader).unwrap(), m);
        assert_eq!(reader.len(), 4096 - framed.len(), "read past the body");
        for cut in [0, 3, 4, framed.len() - 1] {
            let short = &framed[..cut];
            assert!(
                matches!(
                    Metadata::decode_framed(short),
                    Err(MetadataError::Truncated { .. })
                ),
                "cut {cut}"
            );
            assert!(
                matches!(
                    Metadata::read_framed(&mut &short[..]),
                    Err(MetadataError::Truncated { .. })
                ),
                "cut {cut}"
            );
        }
        // A length over the cap is refused before anything is allocated or read.
        let huge = [0xff, 0xff, 0xff, 0xff, 0x08, 0x01];
        assert!(matches!(
            Metadata::decode_framed(&huge),
            Err(MetadataError::TooLarge { .. })
        ));
        assert!(matches!(
            Metadata::read_framed(&mut &huge[..]),
            Err(MetadataError::TooLarge { .. })
        ));
        // A body that is not a protobuf (field 1 with wire type 7).
        let bad = [0, 0, 0, 2, 0x0f, 0x00];
        let e = Metadata::decode_framed(&bad).unwrap_err();
        assert!(matches!(e, MetadataError::Decode(_)), "{e}");
        // Too large to write.
        let big = Metadata::for_app(&"x".repeat(MAX_METADATA_SIZE as usize), &[]);
        assert!(matches!(
            big.encode_framed(),
            Err(MetadataError::TooLarge { .. })
        ));
    }
}
