//! Serialization for byte backends.
//!
//! A region hands byte backends its values encoded with its serializer ([`crate::serializer`])
//! (MessagePack with named fields unless configured otherwise); a byte backend wraps that payload
//! and its metadata in an envelope, in one of two [`WireFormat`]s:
//!
//! ```text
//! Dogpile (the default): b"DGPL" | format version: u8 | created_at: u64 LE, ns since the epoch | payload
//! Python:                {"ct": <created_at, seconds since the epoch>, "v": 2} | b"|" | payload
//! ```
//!
//! The Python one is what Python dogpile.cache 1.x writes (`json.dumps(metadata)`, `|`, then its
//! serializer's bytes), so a Rust region and a Python one can share entries; reading tells the
//! two apart by their first byte, so either is read whatever a region writes. Anything that does
//! not decode (another format, another version, another type, garbage) is a miss: logged, and
//! overwritten by the next creation. Nothing here panics on bad bytes.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::{CachedValue, CachedValueRef, Metadata, Payload, PayloadRef, FORMAT_VERSION};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::serializer::{self, MessagePack, Serializer};

const MAGIC: &[u8; 4] = b"DGPL";
const HEADER_LEN: usize = MAGIC.len() + 1 + 8;

/// The value version Python dogpile writes in its metadata (`"v"`) and reads as current.
pub const PYTHON_VALUE_VERSION: i64 = 2;

/// The longest metadata line of the Python format read: `{"ct": …, "v": 2}` is about 35 bytes.
const PYTHON_METADATA_MAX: usize = 512;

/// How a byte backend lays out a value beside its metadata.
///
/// ```
/// use dogpile_core::backend::{CachedValue, Metadata, Payload};
/// use dogpile_core::clock::Timestamp;
/// use dogpile_core::codec::{decode_envelope, encode_envelope, WireFormat};
///
/// let value = CachedValue {
///     payload: Payload::Bytes(b"42".to_vec().into()),
///     metadata: Metadata {
///         wire: WireFormat::Python,
///         ..Metadata::new(Timestamp::from_nanos(1_796_155_618_500_000_000))
///     },
/// };
/// let bytes = encode_envelope(&value).unwrap();
/// assert_eq!(bytes, br#"{"ct": 1796155618.5, "v": 2}|42"#);
/// assert_eq!(decode_envelope(&bytes).unwrap().metadata, value.metadata);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WireFormat {
    /// This toolkit's envelope: binary, with the creation time in nanoseconds.
    #[default]
    Dogpile,
    /// Python dogpile.cache's: a JSON metadata line, `|`, then the payload.
    Python,
}

impl WireFormat {
    /// The format called `name` in configuration maps: `dogpile` or `python`.
    pub fn by_name(name: &str) -> Option<WireFormat> {
        match name.trim().to_ascii_lowercase().as_str() {
            "dogpile" | "rust" => Some(WireFormat::Dogpile),
            "python" => Some(WireFormat::Python),
            _ => None,
        }
    }
}

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Too short to hold an envelope header.
    #[error("{0} bytes is too short for a dogpile envelope")]
    Truncated(usize),
    /// Does not start with the envelope's magic bytes: not written by dogpile.
    #[error("not a dogpile envelope")]
    Foreign,
    /// Written in another format version.
    #[error("format version {found}, this build reads {FORMAT_VERSION}")]
    Version {
        /// The version found.
        found: u8,
    },
    /// Python's metadata line is not what Python dogpile writes.
    #[error("the metadata before '|' is not Python dogpile's {{\"ct\": …, \"v\": …}}: {0}")]
    PythonMetadata(String),
    /// Python's metadata names another value version.
    #[error("Python dogpile value version {found}, this build reads {PYTHON_VALUE_VERSION}")]
    PythonVersion {
        /// The version found.
        found: i64,
    },
    /// The payload is not a value of the type asked for.
    #[error("payload does not decode as {type_name}: {message}")]
    Payload {
        /// The type asked for.
        type_name: &'static str,
        /// What the decoder said.
        message: String,
    },
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a value as a payload with the default serializer ([`MessagePack`]), as a region
/// configured without a `serializer` does.
pub fn encode_value<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    encode_value_with(&MessagePack, value)
}

/// Encodes a value as a payload with `serializer`.
pub fn encode_value_with<T: Serialize>(
    serializer: &dyn Serializer,
    value: &T,
) -> Result<Vec<u8>, String> {
    serializer::encode_with(serializer, value)
}

/// Decodes a payload written by the default serializer ([`MessagePack`]) as a `T`. Every byte
/// must be used: bytes left over mean the payload was written for another type.
pub fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    decode_value_with(&MessagePack, bytes)
}

/// Decodes a payload written by `serializer` as a `T`.
pub fn decode_value_with<T: DeserializeOwned>(
    serializer: &dyn Serializer,
    bytes: &[u8],
) -> Result<T, DecodeError> {
    serializer::decode_with(serializer, bytes).map_err(|message| DecodeError::Payload {
        type_name: std::any::type_name::<T>(),
        message,
    })
}

/// bincode's half of [`Bincode`](crate::serializer::Bincode).
pub(crate) fn bincode_encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| e.to_string())
}

/// bincode's half of [`Bincode`](crate::serializer::Bincode): every byte must be used.
pub(crate) fn bincode_decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match decode_limited::<T>(bytes) {
        Ok((v, used)) if used == bytes.len() => Ok(v),
        Ok((_, used)) => Err(format!(
            "{} bytes left over after {used}",
            bytes.len() - used
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// `bincode::serde::decode_from_slice` with a byte limit that follows the input's length.
///
/// bincode's standard configuration has no limit, and it allocates a string's buffer from the
/// length prefix before reading the bytes: eight bytes of garbage saying "2^40 bytes follow" made
/// it ask for a terabyte (an abort), and a length past `isize::MAX` made it panic. With a limit,
/// bincode refuses any claim past it. Decoding claims at most 16 bytes per input byte (a `u128`
/// read from a one-byte varint), so a limit of 16 times the input never refuses a payload that
/// decodes, and a lying length prefix can make it allocate at most the limit (bucketed by powers of
/// 16: under 256 times the input plus a kilobyte) before the read finds the bytes missing.
fn decode_limited<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    let need = bytes.len().saturating_mul(16).saturating_add(64);
    macro_rules! within {
        ($($shift:literal)*) => {$(
            if need <= 1usize << $shift {
                return bincode::serde::decode_from_slice(
                    bytes,
                    config().with_limit::<{ 1usize << $shift }>(),
                );
            }
        )*};
    }
    within!(10 14 18 22 26 30);
    #[cfg(target_pointer_width = "64")]
    within!(34 38 42 46);
    bincode::serde::decode_from_slice(bytes, config())
}

/// Wraps a byte payload and its metadata in an envelope. `None` for an object payload, which
/// has no bytes (a byte backend configured under an object-only proxy).
pub fn encode_envelope(value: &CachedValue) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    encode_envelope_into(&mut out, value).then_some(out)
}

/// [`encode_envelope`] appending to `out`, so that a batch write encodes every value into one
/// reused buffer instead of a new one each. `false` (and nothing appended) for an object payload.
///
/// ```
/// use dogpile_core::backend::{CachedValue, Metadata, Payload};
/// use dogpile_core::clock::Timestamp;
/// use dogpile_core::codec::{encode_envelope, encode_envelope_into};
///
/// let value = CachedValue {
///     payload: Payload::Bytes(b"42".to_vec().into()),
///     metadata: Metadata::new(Timestamp::from_nanos(7)),
/// };
/// let mut out = b"set k\r\n".to_vec();
/// assert!(encode_envelope_into(&mut out, &value));
/// assert_eq!(&out[7..], &encode_envelope(&value).unwrap()[..]);
/// ```
pub fn encode_envelope_into(out: &mut Vec<u8>, value: &CachedValue) -> bool {
    let Payload::Bytes(payload) = &value.payload else {
        return false;
    };
    if value.metadata.wire == WireFormat::Python {
        // Python's `json.dumps({"ct": time.time(), "v": 2})`; f64's shortest round-trip text
        // is a JSON number Python reads back to the same float.
        use std::io::Write;
        let secs = value.metadata.created_at.as_nanos() as f64 / 1e9;
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{{\"ct\": {secs:?}, \"v\": {PYTHON_VALUE_VERSION}}}|");
        out.extend_from_slice(payload);
        return true;
    }
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(value.metadata.version);
    out.extend_from_slice(&value.metadata.created_at.as_nanos().to_le_bytes());
    out.extend_from_slice(payload);
    true
}

/// Reads an envelope back.
pub fn decode_envelope(bytes: &[u8]) -> Result<CachedValue, DecodeError> {
    decode_envelope_ref(bytes).map(CachedValueRef::into_owned)
}

/// Reads an envelope back, its payload borrowed from `bytes`: what a batch read decodes where
/// the reply lies, with no copy per value.
///
/// ```
/// use dogpile_core::backend::{CachedValue, Metadata, Payload, PayloadRef};
/// use dogpile_core::clock::Timestamp;
/// use dogpile_core::codec::{decode_envelope_ref, encode_envelope};
///
/// let value = CachedValue {
///     payload: Payload::Bytes(b"42".to_vec().into()),
///     metadata: Metadata::new(Timestamp::from_nanos(7)),
/// };
/// let bytes = encode_envelope(&value).unwrap();
/// let view = decode_envelope_ref(&bytes).unwrap();
/// assert!(matches!(view.payload, PayloadRef::Bytes(b"42")));
/// assert_eq!(view.metadata, value.metadata);
/// ```
pub fn decode_envelope_ref(bytes: &[u8]) -> Result<CachedValueRef<'_>, DecodeError> {
    if bytes.first() == Some(&b'{') {
        return decode_python(bytes);
    }
    if bytes.len() < HEADER_LEN {
        return Err(
            if bytes.starts_with(&MAGIC[..bytes.len().min(4)]) && !bytes.is_empty() {
                DecodeError::Truncated(bytes.len())
            } else {
                DecodeError::Foreign
            },
        );
    }
    if &bytes[..4] != MAGIC {
        return Err(DecodeError::Foreign);
    }
    let version = bytes[4];
    if version != FORMAT_VERSION {
        return Err(DecodeError::Version { found: version });
    }
    let mut created = [0u8; 8];
    created.copy_from_slice(&bytes[5..HEADER_LEN]);
    Ok(CachedValueRef {
        payload: PayloadRef::Bytes(&bytes[HEADER_LEN..]),
        metadata: Metadata::with_version(
            Timestamp::from_nanos(u64::from_le_bytes(created)),
            version,
        ),
    })
}

/// Reads Python dogpile's `{"ct": …, "v": …}|payload`.
fn decode_python(bytes: &[u8]) -> Result<CachedValueRef<'_>, DecodeError> {
    #[derive(serde::Deserialize)]
    struct PyMetadata {
        ct: f64,
        v: i64,
    }
    let head = &bytes[..bytes.len().min(PYTHON_METADATA_MAX)];
    let bar = head
        .iter()
        .position(|b| *b == b'|')
        .ok_or_else(|| DecodeError::PythonMetadata("no '|' after it".into()))?;
    let meta: PyMetadata = serde_json::from_slice(&bytes[..bar])
        .map_err(|e| DecodeError::PythonMetadata(e.to_string()))?;
    if meta.v != PYTHON_VALUE_VERSION {
        return Err(DecodeError::PythonVersion { found: meta.v });
    }
    if !meta.ct.is_finite() || meta.ct < 0.0 || meta.ct > u64::MAX as f64 / 1e9 {
        return Err(DecodeError::PythonMetadata(format!(
            "ct {} is not a time after the epoch",
            meta.ct
        )));
    }
    Ok(CachedValueRef {
        payload: PayloadRef::Bytes(&bytes[bar + 1..]),
        metadata: Metadata {
            created_at: Timestamp::from_nanos((meta.ct * 1e9).round() as u64),
            // Current for Python is current here.
            version: FORMAT_VERSION,
            wire: WireFormat::Python,
        },
    })
}

/// [`encode_envelope`] for a byte backend's writes: an object payload, which such a backend cannot
/// store, is an error naming the backend and the key.
pub fn encode_envelope_for(value: &CachedValue, backend: &str, key: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_envelope_into_for(&mut out, value, backend, key)?;
    Ok(out)
}

/// [`encode_envelope_for`] appending to `out` (see [`encode_envelope_into`]).
///
/// ```
/// use dogpile_core::backend::{CachedValue, Metadata, Payload};
/// use dogpile_core::clock::Timestamp;
/// use dogpile_core::codec::encode_envelope_into_for;
///
/// let object = CachedValue {
///     payload: Payload::Object(std::sync::Arc::new(1u8)),
///     metadata: Metadata::new(Timestamp::from_nanos(7)),
/// };
/// let mut out = Vec::new();
/// let err = encode_envelope_into_for(&mut out, &object, "my backend", "k").unwrap_err();
/// assert!(err.to_string().contains("object payload"), "{err}");
/// assert!(out.is_empty());
/// ```
pub fn encode_envelope_into_for(
    out: &mut Vec<u8>,
    value: &CachedValue,
    backend: &str,
    key: &str,
) -> Result<()> {
    if encode_envelope_into(out, value) {
        return Ok(());
    }
    Err(Error::backend_msg(
        backend,
        format!(
            "cannot store {key:?}: an object payload reached a byte backend, which stores bytes"
        ),
    ))
}

/// [`decode_envelope`] for backends: bytes that do not decode are logged and read as a miss.
pub fn decode_envelope_or_miss(bytes: &[u8], backend: &str, key: &str) -> Option<CachedValue> {
    decode_envelope_ref_or_miss(bytes, backend, key).map(CachedValueRef::into_owned)
}

/// [`decode_envelope_ref`] for backends: bytes that do not decode are logged and read as a miss.
///
/// ```
/// use dogpile_core::codec::decode_envelope_ref_or_miss;
/// assert!(decode_envelope_ref_or_miss(b"not ours", "my backend", "k").is_none());
/// ```
pub fn decode_envelope_ref_or_miss<'b>(
    bytes: &'b [u8],
    backend: &str,
    key: &str,
) -> Option<CachedValueRef<'b>> {
    match decode_envelope_ref(bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(backend, key, error = %e, "undecodable cache entry read as a miss");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn sample() -> CachedValue {
        CachedValue {
            payload: Payload::Bytes(Arc::from(encode_value(&"hello".to_string()).unwrap())),
            metadata: Metadata::new(Timestamp::from_nanos(1_234_567_890)),
        }
    }

    #[test]
    fn envelope_round_trips() {
        let bytes = encode_envelope(&sample()).unwrap();
        let back = decode_envelope(&bytes).unwrap();
        assert_eq!(back.metadata, sample().metadata);
        let Payload::Bytes(p) = back.payload else {
            panic!("bytes expected")
        };
        assert_eq!(decode_value::<String>(&p).unwrap(), "hello");
    }

    #[test]
    fn a_borrowed_decode_points_into_the_bytes_and_matches_the_owned_one() {
        let dogpile = encode_envelope(&sample()).unwrap();
        let python = encode_envelope(&CachedValue {
            metadata: Metadata {
                wire: WireFormat::Python,
                ..sample().metadata
            },
            ..sample()
        })
        .unwrap();
        for bytes in [&dogpile, &python] {
            let view = decode_envelope_ref(bytes).unwrap();
            let PayloadRef::Bytes(payload) = view.payload else {
                panic!("bytes expected")
            };
            // The payload is the tail of the input itself, not a copy of it.
            assert!(std::ptr::eq(
                payload.as_ptr(),
                bytes[bytes.len() - payload.len()..].as_ptr()
            ));
            assert_eq!(decode_value::<String>(payload).unwrap(), "hello");
            let owned = decode_envelope(bytes).unwrap();
            assert_eq!(owned.metadata, view.metadata);
            let Payload::Bytes(p) = owned.payload else {
                panic!("bytes expected")
            };
            assert_eq!(&*p, payload);
        }
        assert_eq!(
            decode_envelope_ref(&dogpile[..7]).unwrap_err(),
            DecodeError::Truncated(7)
        );
        assert!(decode_envelope_ref_or_miss(b"{\"ct\": 1}|x", "b", "k").is_none());
    }

    #[test]
    fn garbage_truncation_and_other_versions_are_errors() {
        let bytes = encode_envelope(&sample()).unwrap();
        assert_eq!(decode_envelope(b"").unwrap_err(), DecodeError::Foreign);
        assert_eq!(
            decode_envelope(b"hello world, not ours").unwrap_err(),
            DecodeError::Foreign
        );
        assert_eq!(
            decode_envelope(&bytes[..7]).unwrap_err(),
            DecodeError::Truncated(7)
        );
        let mut other = bytes.clone();
        other[4] = FORMAT_VERSION + 1;
        assert_eq!(
            decode_envelope(&other).unwrap_err(),
            DecodeError::Version {
                found: FORMAT_VERSION + 1
            }
        );
    }

    #[test]
    fn a_value_of_another_type_does_not_decode() {
        let s = encode_value(&"a string".to_string()).unwrap();
        assert!(decode_value::<i64>(&s).is_err());
        let n = encode_value(&7i64).unwrap();
        assert!(decode_value::<String>(&n).is_err());
        assert_eq!(decode_value::<i64>(&n).unwrap(), 7);
    }

    #[test]
    fn lying_length_prefixes_are_errors_not_huge_allocations() {
        let bincode = crate::serializer::Bincode;
        let encode_value = |v: &dyn erased_serde::Serialize| encode_value_with(&bincode, &v);
        fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
            decode_value_with(&crate::serializer::Bincode, bytes)
        }
        // Varint length markers: 0xFC = a u32 follows, 0xFD = a u64 follows.
        for prefix in [
            &[0xFC, 0xFF, 0xFF, 0xFF, 0xFF][..],
            &[0xFD, 0, 0, 0, 0, 0, 1, 0, 0],
            &[0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
            &[0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
        ] {
            let mut bytes = prefix.to_vec();
            bytes.extend_from_slice(b"abc");
            assert!(decode_value::<String>(&bytes).is_err(), "{prefix:?}");
            assert!(decode_value::<Vec<u64>>(&bytes).is_err(), "{prefix:?}");
        }
        // A large value still decodes: the limit follows the input.
        let big = "x".repeat(1 << 20);
        assert_eq!(
            decode_value::<String>(&encode_value(&big).unwrap()).unwrap(),
            big
        );
        let wide = vec![u128::MAX, 0, 1];
        assert_eq!(
            decode_value::<Vec<u128>>(&encode_value(&wide).unwrap()).unwrap(),
            wide
        );
        let small = vec![0u128; 1000];
        assert_eq!(
            decode_value::<Vec<u128>>(&encode_value(&small).unwrap()).unwrap(),
            small
        );
    }

    #[test]
    fn option_and_empty_values_round_trip() {
        let none: Option<u8> = None;
        assert_eq!(
            decode_value::<Option<u8>>(&encode_value(&none).unwrap()).unwrap(),
            None
        );
        assert_eq!(
            decode_value::<String>(&encode_value(&String::new()).unwrap()).unwrap(),
            ""
        );
    }
}
