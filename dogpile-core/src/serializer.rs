//! The serializers that turn a region's values into the payloads of byte backends.
//!
//! A region encodes each value it hands a byte backend (file, Redis, memcached, memory_pickle) with
//! its serializer, chosen with [`RegionConfig::serializer`](crate::RegionConfig::serializer) or the
//! `PREFIXserializer` configuration key. The built-in ones:
//!
//! | name      | type            | format                                              |
//! |-----------|-----------------|-----------------------------------------------------|
//! | `msgpack` | [`MessagePack`] | MessagePack, structs as maps of named fields (default) |
//! | `json`    | [`Json`]        | JSON                                                |
//! | `pickle`  | [`Pickle`]      | Python pickle (protocol 3, read: protocols 0 to 5)  |
//! | `bincode` | [`Bincode`]     | bincode 2, standard configuration                   |
//!
//! The default is MessagePack with named fields: it is maintained, compact and fast (BENCHMARKS.md,
//! "Serializers"), and it describes itself, so a value written as one type and read as another
//! does not decode and is a miss, as DESIGN section 3 asks. bincode, the format of earlier builds,
//! does not describe itself (a `String` reads back as a `Vec<u64>` of its bytes) and is no longer
//! maintained upstream; it stays for callers who choose it.
//!
//! Every serializer must use all the bytes it is given: bytes left over mean the payload was
//! written for another type, which is a miss too.
//!
//! Users' own serializers implement [`Serializer`] through [`erased_serde`], so that a region can
//! hold one as a trait object:
//!
//! ```
//! use dogpile_core::serializer::{erased_serde, Serializer, Visit};
//!
//! /// JSON with a trailing newline, so that entries read well in `redis-cli`.
//! #[derive(Debug)]
//! struct JsonLines;
//!
//! impl Serializer for JsonLines {
//!     fn name(&self) -> &str {
//!         "json-lines"
//!     }
//!
//!     fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Vec<u8>, String> {
//!         let mut out = serde_json::to_vec(value).map_err(|e| e.to_string())?;
//!         out.push(b'\n');
//!         Ok(out)
//!     }
//!
//!     fn decode(&self, bytes: &[u8], visit: Visit<'_>) -> Result<(), String> {
//!         let mut de = serde_json::Deserializer::from_slice(bytes);
//!         visit(&mut <dyn erased_serde::Deserializer>::erase(&mut de)).map_err(|e| e.to_string())?;
//!         de.end().map_err(|e| e.to_string())
//!     }
//! }
//!
//! let region: dogpile_core::CacheRegion = dogpile_core::CacheRegion::new();
//! region
//!     .configure(
//!         dogpile_core::RegionConfig::with_backend(dogpile_core::testing::MapBackend::bytes())
//!             .serializer(JsonLines),
//!     )
//!     .unwrap();
//! region.set("k", vec![1u64, 2, 3]).unwrap();
//! assert_eq!(region.get::<Vec<u64>>("k").unwrap(), Some(vec![1, 2, 3]));
//! assert_eq!(region.get::<String>("k").unwrap(), None);
//! ```

use std::fmt;
use std::sync::Arc;

pub use erased_serde;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// The callback a [`Serializer::decode`] hands its deserializer to: it reads the value the region
/// asked for.
pub type Visit<'a> =
    &'a mut dyn FnMut(&mut dyn erased_serde::Deserializer<'_>) -> Result<(), erased_serde::Error>;

/// Turns values into the payload bytes of byte backends and back.
///
/// Implementations must be deterministic readers of what they write, must fail (never panic) on
/// bytes they did not write, and must fail when bytes are left over after the value.
pub trait Serializer: fmt::Debug + Send + Sync + 'static {
    /// The name used in configuration maps and logs, such as `msgpack`.
    fn name(&self) -> &str;

    /// Encodes a value.
    fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Vec<u8>, String>;

    /// Decodes `bytes`: makes a deserializer over them, passes it to `visit`, which reads the
    /// value, then checks that no bytes are left over.
    fn decode(&self, bytes: &[u8], visit: Visit<'_>) -> Result<(), String>;

    /// A built-in serializer, which the region calls without type erasure. Not for users' types.
    #[doc(hidden)]
    fn builtin(&self) -> Option<Builtin> {
        None
    }
}

/// The built-in serializers, for the region's direct (not type-erased) path.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    MessagePack,
    Json,
    Pickle,
    Bincode,
}

impl Builtin {
    const ALL: [Builtin; 4] = [
        Builtin::MessagePack,
        Builtin::Json,
        Builtin::Pickle,
        Builtin::Bincode,
    ];

    fn name(self) -> &'static str {
        match self {
            Builtin::MessagePack => "msgpack",
            Builtin::Json => "json",
            Builtin::Pickle => "pickle",
            Builtin::Bincode => "bincode",
        }
    }

    fn serializer(self) -> Arc<dyn Serializer> {
        match self {
            Builtin::MessagePack => Arc::new(MessagePack),
            Builtin::Json => Arc::new(Json),
            Builtin::Pickle => Arc::new(Pickle),
            Builtin::Bincode => Arc::new(Bincode),
        }
    }

    fn encode<T: Serialize>(self, value: &T) -> Result<Vec<u8>, String> {
        match self {
            Builtin::MessagePack => {
                // `to_vec_named` starts from an empty `Vec`, which a 32-byte string regrows
                // three times: start with room for a small value.
                let mut out = Vec::with_capacity(64);
                msgpack_into(&mut out, value)?;
                Ok(out)
            }
            Builtin::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
            Builtin::Pickle => serde_pickle::to_vec(value, serde_pickle::SerOptions::new())
                .map_err(|e| e.to_string()),
            Builtin::Bincode => crate::codec::bincode_encode(value),
        }
    }

    fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, String> {
        match self {
            Builtin::MessagePack => {
                let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
                let v = T::deserialize(&mut de).map_err(|e| e.to_string())?;
                msgpack_end(&mut de, bytes)?;
                Ok(v)
            }
            Builtin::Json => {
                let mut de = serde_json::Deserializer::from_slice(bytes);
                let v = T::deserialize(&mut de).map_err(|e| e.to_string())?;
                de.end().map_err(|e| e.to_string())?;
                Ok(v)
            }
            // serde-pickle reads up to the STOP opcode and fails on bytes past it.
            Builtin::Pickle => serde_pickle::from_slice(bytes, serde_pickle::DeOptions::new())
                .map_err(|e| e.to_string()),
            Builtin::Bincode => crate::codec::bincode_decode(bytes),
        }
    }

    fn decode_erased(self, bytes: &[u8], visit: Visit<'_>) -> Result<(), String> {
        let erased = |r: Result<(), erased_serde::Error>| r.map_err(|e| e.to_string());
        match self {
            Builtin::MessagePack => {
                let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
                erased(visit(&mut <dyn erased_serde::Deserializer>::erase(&mut de)))?;
                msgpack_end(&mut de, bytes)
            }
            Builtin::Json => {
                let mut de = serde_json::Deserializer::from_slice(bytes);
                erased(visit(&mut <dyn erased_serde::Deserializer>::erase(&mut de)))?;
                de.end().map_err(|e| e.to_string())
            }
            Builtin::Pickle => {
                let mut de = serde_pickle::Deserializer::new(bytes, serde_pickle::DeOptions::new());
                erased(visit(&mut <dyn erased_serde::Deserializer>::erase(&mut de)))?;
                de.end().map_err(|e| e.to_string())
            }
            // bincode 2 has no public `serde::Deserializer` over a slice: decode through a
            // self-describing value is not possible either, so the erased path is refused. The
            // region never takes it for a built-in (see `encode_value`/`decode_value`).
            Builtin::Bincode => {
                Err("bincode cannot decode through a type-erased deserializer".to_owned())
            }
        }
    }
}

/// A `Vec` writer whose growth fails with an error instead of aborting the process, as
/// `rmp_serde::to_vec_named`'s own does: a value too large to encode is that call's error.
struct Fallible<'a>(&'a mut Vec<u8>);

impl std::io::Write for Fallible<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0
            .try_reserve(buf.len())
            .map_err(|_| std::io::ErrorKind::OutOfMemory)?;
        self.0.extend_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Checks that a MessagePack value used every byte. The decoder reads the slice in place (over a
/// `Cursor` it would allocate a read buffer for every value), but then it tells no position.
/// A value that is not a map or an array says its whole length in its first bytes, so when that
/// length is the input's, the decoded value used every byte. Otherwise one more value is asked
/// for, and only the end of the input is the answer that passes; when something does follow, the
/// value is measured again over a `Cursor` to say how many bytes are left over (a failing decode
/// only).
fn msgpack_end(
    de: &mut rmp_serde::Deserializer<rmp_serde::decode::ReadRefReader<'_, [u8]>>,
    bytes: &[u8],
) -> Result<(), String> {
    if msgpack_scalar_len(bytes) == Some(bytes.len()) {
        return Ok(());
    }
    match <serde::de::IgnoredAny as serde::Deserialize>::deserialize(&mut *de) {
        Err(rmp_serde::decode::Error::InvalidMarkerRead(e))
            if e.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            Ok(())
        }
        _ => {
            let mut measure = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
            let _ = <serde::de::IgnoredAny as serde::Deserialize>::deserialize(&mut measure);
            let used = measure.position() as usize;
            Err(format!(
                "{} bytes left over after {used}",
                bytes.len().saturating_sub(used)
            ))
        }
    }
}

/// The whole length of the MessagePack value at the start of `bytes`, read from its first
/// bytes, for a value that is not a map or an array (whose length needs its elements); `None`
/// for those, for an unused marker and for a header cut short.
fn msgpack_scalar_len(bytes: &[u8]) -> Option<usize> {
    let size = |width: usize| -> Option<usize> {
        let field = bytes.get(1..1 + width)?;
        Some(field.iter().fold(0usize, |n, b| n << 8 | usize::from(*b)))
    };
    // A header of `1 + width` bytes whose length field counts `extra` bytes more (an ext's type).
    let sized = |width: usize, extra: usize| -> Option<usize> {
        size(width)?.checked_add(1 + width + extra)
    };
    match *bytes.first()? {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 | 0x80 | 0x90 => Some(1),
        m @ 0xa0..=0xbf => Some(1 + usize::from(m & 0x1f)),
        0xcc | 0xd0 => Some(2),
        0xcd | 0xd1 => Some(3),
        0xca | 0xce | 0xd2 => Some(5),
        0xcb | 0xcf | 0xd3 => Some(9),
        0xd4 => Some(3),
        0xd5 => Some(4),
        0xd6 => Some(6),
        0xd7 => Some(10),
        0xd8 => Some(18),
        0xc4 | 0xd9 => sized(1, 0),
        0xc5 | 0xda => sized(2, 0),
        0xc6 | 0xdb => sized(4, 0),
        0xc7 => sized(1, 1),
        0xc8 => sized(2, 1),
        0xc9 => sized(4, 1),
        // Maps and arrays with elements, and the marker MessagePack never uses.
        _ => None,
    }
}

macro_rules! builtin {
    ($(#[$doc:meta])* $ty:ident => $kind:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $ty;

        impl Serializer for $ty {
            fn name(&self) -> &str {
                Builtin::$kind.name()
            }

            fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Vec<u8>, String> {
                Builtin::$kind.encode(&value)
            }

            fn decode(&self, bytes: &[u8], visit: Visit<'_>) -> Result<(), String> {
                Builtin::$kind.decode_erased(bytes, visit)
            }

            fn builtin(&self) -> Option<Builtin> {
                Some(Builtin::$kind)
            }
        }
    };
}

builtin!(
    /// MessagePack (`rmp-serde`) with structs as maps of named fields: the default. Self-describing,
    /// so a value of another type, or a struct without the fields asked for, is a miss.
    MessagePack => MessagePack
);
builtin!(
    /// JSON (`serde_json`). Readable by any language; larger and slower than MessagePack.
    Json => Json
);
builtin!(
    /// Python pickle (`serde-pickle`): writes protocol 3, which every Python 3 reads; reads the
    /// protocols Python writes (0 to 5). A pickled class instance is an error, not a value.
    /// `serde-pickle` reads back integers up to `i64::MAX` only: a `u64` above it encodes but does
    /// not decode (a miss).
    Pickle => Pickle
);
builtin!(
    /// bincode 2, standard configuration: the format of earlier dogpile builds. Not
    /// self-describing (a value of another type can decode as garbage) and unmaintained upstream;
    /// prefer [`MessagePack`].
    Bincode => Bincode
);

/// The serializer a region uses unless told otherwise: [`MessagePack`].
pub fn default_serializer() -> Arc<dyn Serializer> {
    Builtin::MessagePack.serializer()
}

/// The built-in serializer called `name` (`msgpack`, `json`, `pickle` or `bincode`); `key` names
/// the configuration key it came from, for the error that lists the known names.
pub fn by_name(name: &str, key: &str) -> Result<Arc<dyn Serializer>> {
    let wanted = name.trim();
    Builtin::ALL
        .into_iter()
        .find(|b| b.name().eq_ignore_ascii_case(wanted))
        .map(Builtin::serializer)
        .ok_or_else(|| {
            let known: Vec<&str> = Builtin::ALL.iter().map(|b| b.name()).collect();
            Error::config(
                key,
                format!(
                    "unknown serializer {wanted:?}; the known ones are {}",
                    known.join(", ")
                ),
            )
        })
}

/// Appends `value` in MessagePack (maps with field names, as dogpile's msgpack serializer
/// writes them) to `out`.
fn msgpack_into<T: Serialize>(out: &mut Vec<u8>, value: &T) -> Result<(), String> {
    rmp_serde::encode::write_named(&mut Fallible(out), value).map_err(|e| e.to_string())
}

/// The largest encoding buffer a thread keeps between writes ([`encode_shared_with`]).
const KEEP: usize = 4 * 1024;

thread_local! {
    /// The buffer [`encode_shared_with`] encodes into on this thread.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The thread's encoding buffer while a value is written into it: cut back to nothing on the
/// way out (a panic in a `Serialize` impl included) when it grew past [`KEEP`].
struct Trimmed<'a>(std::cell::RefMut<'a, Vec<u8>>);

impl Drop for Trimmed<'_> {
    fn drop(&mut self) {
        if self.0.capacity() > KEEP {
            *self.0 = Vec::new();
        }
    }
}

/// [`encode_with`] into shared bytes, as a byte backend's payload holds them
/// ([`Payload::Bytes`](crate::backend::Payload::Bytes)).
///
/// MessagePack, the default, is written into a buffer this thread keeps and copied once into
/// the `Arc`: one allocation per value where a `Vec` of its own would be two (the `Vec`, then
/// the `Arc` it is copied into, and the `Vec`'s free). A serializer that encodes another value
/// on this thread while it runs (a `Serialize` impl that writes to a cache) finds the buffer
/// taken and gets a `Vec` of its own; a buffer grown past 4 KiB (for a larger value) is not
/// kept, so no thread holds more than that once its write is done, even a write that panicked.
///
/// ```
/// use dogpile_core::serializer::{encode_shared_with, encode_with, MessagePack};
/// let shared = encode_shared_with(&MessagePack, &"hello").unwrap();
/// assert_eq!(&shared[..], &encode_with(&MessagePack, &"hello").unwrap()[..]);
/// ```
pub fn encode_shared_with<T: Serialize>(
    serializer: &dyn Serializer,
    value: &T,
) -> Result<Arc<[u8]>, String> {
    if serializer.builtin() == Some(Builtin::MessagePack) {
        let shared = SCRATCH.try_with(|scratch| {
            let mut buf = Trimmed(scratch.try_borrow_mut().ok()?);
            buf.0.clear();
            Some(msgpack_into(&mut buf.0, value).map(|()| Arc::from(&buf.0[..])))
        });
        if let Ok(Some(encoded)) = shared {
            return encoded;
        }
    }
    encode_with(serializer, value).map(Arc::from)
}

/// Encodes `value` with `serializer`: built-ins directly, users' own through type erasure.
pub fn encode_with<T: Serialize>(
    serializer: &dyn Serializer,
    value: &T,
) -> Result<Vec<u8>, String> {
    match serializer.builtin() {
        Some(b) => b.encode(value),
        None => serializer.encode(value),
    }
}

/// Decodes a `T` from `bytes` with `serializer`.
pub fn decode_with<T: DeserializeOwned>(
    serializer: &dyn Serializer,
    bytes: &[u8],
) -> Result<T, String> {
    if let Some(b) = serializer.builtin() {
        return b.decode(bytes);
    }
    let mut out = None;
    serializer.decode(bytes, &mut |de| {
        out = Some(erased_serde::deserialize::<T>(de)?);
        Ok(())
    })?;
    out.ok_or_else(|| format!("serializer {:?} decoded nothing", serializer.name()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// A value whose serialization encodes another value on the same thread, as a `Serialize`
    /// impl that writes to a cache would (the thread's buffer is taken then), and keeps what
    /// that gave.
    struct Nested(std::cell::RefCell<Option<Arc<[u8]>>>);

    impl Serialize for Nested {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            let inner =
                encode_shared_with(&MessagePack, &"inner").map_err(serde::ser::Error::custom)?;
            *self.0.borrow_mut() = Some(inner);
            s.serialize_u8(7)
        }
    }

    /// A pair whose first half, a 100,000-byte string, is written before the second panics.
    struct Panics;

    impl Serialize for Panics {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            use serde::ser::SerializeTuple;
            let mut pair = s.serialize_tuple(2)?;
            pair.serialize_element(&"p".repeat(100_000))?;
            panic!("a Serialize impl that panics");
        }
    }

    #[test]
    fn shared_encoding_is_the_plain_encoding_even_when_nested() {
        for value in [
            String::new(),
            "x".repeat(40),
            "y".repeat(100_000),
            "z".into(),
        ] {
            assert_eq!(
                &encode_shared_with(&MessagePack, &value).unwrap()[..],
                &encode_with(&MessagePack, &value).unwrap()[..],
                "{}",
                value.len()
            );
        }
        let nested = Nested(Default::default());
        let outer = encode_shared_with(&MessagePack, &nested).unwrap();
        assert_eq!(&outer[..], &encode_with(&MessagePack, &7u8).unwrap()[..]);
        assert_eq!(
            nested.0.borrow().as_deref(),
            Some(&encode_with(&MessagePack, &"inner").unwrap()[..])
        );
        // The 100,000-byte value's buffer was not kept.
        assert!(SCRATCH.with(|s| s.borrow().capacity()) <= KEEP);
        // Nor that of a value whose serialization panicked after writing 100,000 bytes.
        let panicked = std::panic::catch_unwind(|| encode_shared_with(&MessagePack, &Panics));
        assert!(panicked.is_err());
        assert!(SCRATCH.with(|s| s.borrow().capacity()) <= KEEP);
        // Another serializer takes its own path, with the same bytes as its plain encoding.
        assert_eq!(
            &encode_shared_with(&Json, &vec![1, 2]).unwrap()[..],
            b"[1,2]"
        );
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Point {
        x: i64,
        label: String,
        tags: Vec<u64>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Account {
        id: u64,
        owner: String,
    }

    fn all() -> Vec<Arc<dyn Serializer>> {
        Builtin::ALL.into_iter().map(Builtin::serializer).collect()
    }

    /// The same serializer behind the type-erased path, as a user's own would be.
    #[derive(Debug)]
    struct Erased(Builtin);

    impl Serializer for Erased {
        fn name(&self) -> &str {
            "erased"
        }
        fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Vec<u8>, String> {
            self.0.encode(&value)
        }
        fn decode(&self, bytes: &[u8], visit: Visit<'_>) -> Result<(), String> {
            self.0.decode_erased(bytes, visit)
        }
    }

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + fmt::Debug>(value: T) {
        for s in all() {
            let bytes = encode_with(&*s, &value).unwrap();
            let back = decode_with::<T>(&*s, &bytes);
            assert_eq!(back.as_ref(), Ok(&value), "{} {value:?}", s.name());
        }
        for b in [Builtin::MessagePack, Builtin::Json, Builtin::Pickle] {
            let s = Erased(b);
            let bytes = encode_with(&s, &value).unwrap();
            assert_eq!(bytes, b.encode(&value).unwrap(), "{b:?}");
            let back = decode_with::<T>(&s, &bytes);
            assert_eq!(back.as_ref(), Ok(&value), "erased {b:?}");
        }
    }

    #[test]
    fn every_serializer_round_trips_the_test_value_types() {
        round_trip("x".repeat(32));
        round_trip(String::new());
        round_trip((0..100u64).collect::<Vec<_>>());
        round_trip(Point {
            x: -3,
            label: "p".into(),
            tags: vec![1, i64::MAX as u64],
        });
        round_trip(Some(7u8));
        round_trip(None::<u8>);
        round_trip(42i64);
        round_trip(i64::MAX as u64);
        round_trip(vec![("a".to_string(), 1u32)]);
        round_trip(true);
    }

    #[test]
    fn self_describing_serializers_refuse_another_type() {
        let point = Point {
            x: 1,
            label: "a".into(),
            tags: vec![],
        };
        for b in [Builtin::MessagePack, Builtin::Json, Builtin::Pickle] {
            let s = b.encode(&"x".repeat(32)).unwrap();
            assert!(b.decode::<Vec<u64>>(&s).is_err(), "{b:?}");
            assert!(b.decode::<u64>(&s).is_err(), "{b:?}");
            let v = b.encode(&vec![1u64, 2, 3]).unwrap();
            assert!(b.decode::<String>(&v).is_err(), "{b:?}");
            let p = b.encode(&point).unwrap();
            assert!(b.decode::<Account>(&p).is_err(), "{b:?}");
            assert!(b.decode::<String>(&p).is_err(), "{b:?}");
            let n = b.encode(&7u64).unwrap();
            assert!(b.decode::<String>(&n).is_err(), "{b:?}");
        }
    }

    /// How many bytes rmp's decoder reads for the first value of `bytes`.
    fn measured_len(bytes: &[u8]) -> Option<usize> {
        let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
        serde::de::IgnoredAny::deserialize(&mut de).ok()?;
        Some(de.position() as usize)
    }

    #[test]
    fn a_scalars_header_length_is_what_the_decoder_reads() {
        let mut samples: Vec<Vec<u8>> = Vec::new();
        let mut add = |v: Vec<u8>| samples.push(v);
        for n in [
            0u64,
            1,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            u32::MAX.into(),
            u64::MAX,
        ] {
            add(rmp_serde::to_vec(&n).unwrap());
        }
        for n in [
            -1i64,
            -32,
            -33,
            -128,
            -129,
            -32_768,
            -32_769,
            i32::MIN.into(),
            i64::MIN,
        ] {
            add(rmp_serde::to_vec(&n).unwrap());
        }
        add(rmp_serde::to_vec(&1.5f32).unwrap());
        add(rmp_serde::to_vec(&1.5f64).unwrap());
        add(rmp_serde::to_vec(&()).unwrap());
        add(rmp_serde::to_vec(&true).unwrap());
        add(rmp_serde::to_vec(&false).unwrap());
        add(rmp_serde::to_vec(&Vec::<u8>::new()).unwrap());
        add(rmp_serde::to_vec(&std::collections::BTreeMap::<u8, u8>::new()).unwrap());
        for len in [0usize, 1, 31, 32, 255, 256, 65_535, 65_536] {
            add(rmp_serde::to_vec(&"x".repeat(len)).unwrap());
        }
        // Binaries and extensions, written by hand from the specification: a marker, a length
        // field of 1, 2 or 4 bytes (none for a fixed-size extension), an extension's type byte.
        let headed = |head: &[u8], len: usize| {
            let mut v = head.to_vec();
            v.extend(std::iter::repeat_n(7u8, len));
            v
        };
        for (head, len) in [
            (&[0xc4, 3][..], 3),
            (&[0xc5, 1, 0], 256),
            (&[0xc6, 0, 1, 0, 0], 65_536),
            (&[0xd4, 5], 1),
            (&[0xd5, 5], 2),
            (&[0xd6, 5], 4),
            (&[0xd7, 5], 8),
            (&[0xd8, 5], 16),
            (&[0xc7, 3, 5], 3),
            (&[0xc8, 1, 0, 5], 256),
            (&[0xc9, 0, 1, 0, 0, 5], 65_536),
        ] {
            add(headed(head, len));
        }
        for bytes in &samples {
            let measured = measured_len(bytes);
            assert!(measured.is_some(), "{:x?}", &bytes[..bytes.len().min(8)]);
            assert_eq!(
                msgpack_scalar_len(bytes),
                measured,
                "{:x?}",
                &bytes[..bytes.len().min(8)]
            );
            // Cut short, the header never claims the value is whole.
            for cut in 0..bytes.len().min(12) {
                assert_ne!(
                    msgpack_scalar_len(&bytes[..cut]),
                    Some(cut),
                    "{:x?}",
                    &bytes[..cut]
                );
            }
        }
        // Containers with elements need their elements: no answer from the header.
        let point = Point {
            x: 1,
            label: "p".into(),
            tags: vec![2],
        };
        for v in [
            rmp_serde::to_vec(&vec![1u8, 2]).unwrap(),
            rmp_serde::to_vec_named(&point).unwrap(),
        ] {
            assert_eq!(msgpack_scalar_len(&v), None);
        }
        // A whole scalar followed by more bytes is still an error of the decode.
        let mut s = rmp_serde::to_vec(&"x".repeat(32)).unwrap();
        s.push(0xc0);
        assert!(decode_with::<String>(&MessagePack, &s)
            .unwrap_err()
            .contains("1 bytes left over"));
    }

    #[test]
    fn garbage_and_left_over_bytes_are_errors() {
        for s in all() {
            let mut bytes = encode_with(&*s, &7u64).unwrap();
            bytes.extend_from_slice(b"!!");
            assert!(decode_with::<u64>(&*s, &bytes).is_err(), "{}", s.name());
            for garbage in [&b""[..], b"\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff"] {
                assert!(decode_with::<String>(&*s, garbage).is_err(), "{}", s.name());
            }
        }
    }

    #[test]
    fn names_resolve_and_unknown_names_list_the_known_ones() {
        for b in Builtin::ALL {
            assert_eq!(by_name(b.name(), "k").unwrap().name(), b.name());
        }
        assert_eq!(by_name(" MsgPack ", "k").unwrap().name(), "msgpack");
        let err = by_name("yaml", "cache.serializer").unwrap_err().to_string();
        assert!(err.contains("cache.serializer"), "{err}");
        assert!(err.contains("\"yaml\""), "{err}");
        assert!(err.contains("msgpack, json, pickle, bincode"), "{err}");
        assert_eq!(default_serializer().name(), "msgpack");
    }
}
