//! The usage guide's recipe "Encoding/decoding data into another format": a [`ProxyBackend`] that
//! re-encodes what reaches a byte backend as MessagePack (with `rmp-serde`), and decodes it back
//! on the way out. The backend is `dogpile.cache.memory_pickle`, which stores bytes as Redis or
//! memcached would.
//!
//! What is and is not re-encoded. As the usage guide's note says of pickle, the proxy sees the value
//! *after* the region has serialized it: for a byte backend the region hands over a
//! [`CachedValue`] whose payload is the value already encoded by the region's serializer
//! (MessagePack with field names by default; the region's `serializer` option chooses another),
//! beside its metadata (creation time, format version). The proxy does not know the value's type,
//! so it cannot turn the value itself into MessagePack. What it does:
//!
//! - on the way in, it packs the whole record, metadata and payload bytes, into one MessagePack
//!   array `[version, created_at_ns, payload]` (the payload as MessagePack `bin`) and hands that
//!   to the backend as the payload;
//! - on the way out, it unpacks the array and rebuilds the `CachedValue` the region expects. Bytes
//!   that do not unpack (written by something else) are a miss, as the region treats them.
//!
//! So the creation time and version become readable to any MessagePack reader, while the value
//! inside stays as the region's serializer wrote it. The example prints the sizes at each step, and the size the value would
//! have as MessagePack on its own, which only code that knows the type can produce.
//!
//! Run with `cargo run --example msgpack_proxy`.

use std::sync::Arc;

use dogpile::backend::memory::MemoryBackend;
use dogpile::backend::{Metadata, Payload};
use dogpile::clock::Timestamp;
use dogpile::{Backend, CacheRegion, CachedValue, ProxyBackend, RegionConfig};
use serde::{Deserialize, Serialize};

/// Bytes that MessagePack writes as `bin` (serde would otherwise write a `Vec<u8>` as an array of
/// integers, one to two bytes each).
struct Bin(Vec<u8>);

impl Serialize for Bin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Bin;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bin, E> {
                Ok(Bin(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bin, E> {
                Ok(Bin(v))
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

/// The record as MessagePack holds it: a three-element array.
#[derive(Serialize, Deserialize)]
struct Record(u8, u64, Bin);

/// The usage guide's `MsgpackProxy`: encodes on `set` / `set_multi`, decodes on `get` / `get_multi`.
struct MsgpackProxy;

impl MsgpackProxy {
    fn value_encode(&self, value: CachedValue) -> dogpile::Result<CachedValue> {
        let bytes = match &value.payload {
            Payload::Bytes(bytes) => bytes,
            // An object backend (`dogpile.cache.memory`) has no bytes to re-encode: pass through.
            Payload::Object(_) => return Ok(value),
        };
        let record = Record(
            value.metadata.version,
            value.metadata.created_at.as_nanos(),
            Bin(bytes.to_vec()),
        );
        let packed = rmp_serde::to_vec(&record)
            .map_err(|e| dogpile::Error::backend("msgpack proxy", "encoding a record", e))?;
        Ok(CachedValue {
            payload: Payload::Bytes(packed.into()),
            // The backend interface carries metadata beside the payload; the copy inside the
            // record is the one `value_decode` trusts.
            metadata: value.metadata,
        })
    }

    fn value_decode(&self, value: Option<CachedValue>) -> Option<CachedValue> {
        let value = value?;
        let Payload::Bytes(packed) = &value.payload else {
            return Some(value);
        };
        match rmp_serde::from_slice::<Record>(packed) {
            Ok(Record(version, created_at, Bin(payload))) => Some(CachedValue {
                payload: Payload::Bytes(payload.into()),
                metadata: Metadata::with_version(Timestamp::from_nanos(created_at), version),
            }),
            // Not a record of ours: a miss, which the next creation overwrites.
            Err(_) => None,
        }
    }
}

impl ProxyBackend for MsgpackProxy {
    fn get(&self, proxied: &dyn Backend, key: &str) -> dogpile::Result<Option<CachedValue>> {
        Ok(self.value_decode(proxied.get(key)?))
    }

    fn set(&self, proxied: &dyn Backend, key: &str, value: CachedValue) -> dogpile::Result<()> {
        proxied.set(key, self.value_encode(value)?)
    }

    fn get_multi(
        &self,
        proxied: &dyn Backend,
        keys: &[&str],
    ) -> dogpile::Result<Vec<Option<CachedValue>>> {
        Ok(proxied
            .get_multi(keys)?
            .into_iter()
            .map(|v| self.value_decode(v))
            .collect())
    }

    fn set_multi(
        &self,
        proxied: &dyn Backend,
        items: Vec<(String, CachedValue)>,
    ) -> dogpile::Result<()> {
        let encoded = items
            .into_iter()
            .map(|(k, v)| Ok((k, self.value_encode(v)?)))
            .collect::<dogpile::Result<Vec<_>>>()?;
        proxied.set_multi(encoded)
    }
}

/// A JSON-like value, the kind of data dogpile's usage guide has in mind.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Profile {
    id: u64,
    name: String,
    tags: Vec<String>,
    scores: Vec<u32>,
}

fn payload_len(value: &CachedValue) -> usize {
    match &value.payload {
        Payload::Bytes(b) => b.len(),
        Payload::Object(_) => 0,
    }
}

fn main() -> dogpile::Result<()> {
    // Keep a handle on the backend to look at what it stores; the region gets it through the
    // proxy.
    let store = Arc::new(MemoryBackend::new(None, true));
    let region = CacheRegion::named("profiles");
    region.configure(
        RegionConfig::with_backend(store.clone())
            .expiration_time(3600)
            .wrap(MsgpackProxy),
    )?;

    let profile = Profile {
        id: 7,
        name: "Ada Lovelace".into(),
        tags: vec!["math".into(), "engines".into(), "poetry".into()],
        scores: vec![98, 87, 100, 91],
    };
    region.set("profile:7", profile.clone())?;
    let back = region.get::<Profile>("profile:7")?;
    println!("stored and read back through the proxy: {back:?}");
    println!("  round trip intact: {}", back.as_ref() == Some(&profile));

    let region_len = dogpile::codec::encode_value(&profile)
        .map_err(|message| dogpile::Error::Encode {
            key: "profile:7".into(),
            message,
        })?
        .len();
    let stored = store.get("profile:7")?;
    let stored_len = stored.as_ref().map(payload_len).unwrap_or(0);
    println!("sizes:");
    println!("  the value, as the region encodes it:           {region_len:>3} bytes");
    println!("  what the backend stores (MessagePack record):  {stored_len:>3} bytes: that payload, its version and creation time");
    let alone = rmp_serde::to_vec(&profile)
        .map(|v| v.len().to_string())
        .unwrap_or_else(|e| format!("(does not encode: {e})"));
    println!("  the value as MessagePack without field names:  {alone:>3} bytes (needs the type: a proxy cannot make it)");
    if let Some(Payload::Bytes(packed)) = stored.as_ref().map(|v| &v.payload) {
        if let Ok(Record(version, created_at, Bin(inner))) = rmp_serde::from_slice(packed) {
            let created = Timestamp::from_nanos(created_at)
                .to_system_time()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            println!(
                "the record, as any MessagePack reader sees it: [{version}, {created_at}, <{} bytes>] \
                 (version, created {:.3} s after the Unix epoch, payload)",
                inner.len(),
                created.as_secs_f64()
            );
        }
    }

    // A batch goes through set_multi / get_multi of the proxy.
    region.set_multi([("n:1", 1u64), ("n:2", 2), ("n:3", 3)])?;
    println!(
        "set_multi and get_multi through the proxy: {:?}",
        region.get_multi::<u64, _>(&["n:1", "n:2", "n:3", "n:4"])?
    );

    // Bytes that are not a record (another program's, an older format): a miss, not an error.
    store.set(
        "profile:8",
        CachedValue {
            payload: Payload::Bytes(Arc::from(&b"not messagepack"[..])),
            metadata: Metadata::new(Timestamp::from_nanos(0)),
        },
    )?;
    println!(
        "a foreign entry reads as a miss: {:?}",
        region.get::<Profile>("profile:8")?
    );
    Ok(())
}
