//! Small backends for tests and examples: a map that keeps objects, and one that keeps bytes.
//!
//! The real backends live in `dogpile-backends`; these let the core be tested on its own, and
//! let tests look at or damage what is stored.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::backend::{Backend, CachedValue, PayloadKind};
use crate::codec;
use crate::error::{Error, Result};

/// A `Mutex<HashMap>` backend. `PayloadKind::Object` by default; [`MapBackend::bytes`] makes one
/// that stores encoded envelopes, as a server backend would.
#[derive(Debug)]
pub struct MapBackend {
    kind: PayloadKind,
    objects: Mutex<HashMap<String, CachedValue>>,
    bytes: Mutex<HashMap<String, Vec<u8>>>,
    fail: std::sync::atomic::AtomicBool,
    /// How many `get`-like calls reached the backend.
    pub reads: AtomicUsize,
    /// How many `set`-like calls reached the backend.
    pub writes: AtomicUsize,
}

impl Default for MapBackend {
    fn default() -> Self {
        Self::with_kind(PayloadKind::Object)
    }
}

impl MapBackend {
    /// A backend that stores encoded bytes.
    pub fn bytes() -> Self {
        Self::with_kind(PayloadKind::Bytes)
    }

    fn with_kind(kind: PayloadKind) -> Self {
        MapBackend {
            kind,
            objects: Mutex::default(),
            bytes: Mutex::default(),
            fail: Default::default(),
            reads: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
        }
    }

    /// Puts raw bytes at a key (byte backends only): for tests of corrupt entries.
    pub fn put_raw(&self, key: &str, raw: Vec<u8>) {
        self.bytes.lock().insert(key.to_owned(), raw);
    }

    /// The raw bytes at a key (byte backends only).
    pub fn raw(&self, key: &str) -> Option<Vec<u8>> {
        self.bytes.lock().get(key).cloned()
    }

    /// The keys stored.
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = match self.kind {
            PayloadKind::Object => self.objects.lock().keys().cloned().collect(),
            PayloadKind::Bytes => self.bytes.lock().keys().cloned().collect(),
        };
        k.sort();
        k
    }

    /// Makes every call fail (as a dead server would) until called with `false`.
    pub fn set_failing(&self, failing: bool) {
        self.fail.store(failing, Ordering::SeqCst);
    }

    fn check(&self) -> Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::backend_msg("map backend", "failing on purpose"));
        }
        Ok(())
    }
}

impl Backend for MapBackend {
    fn name(&self) -> &str {
        "map backend"
    }

    fn payload_kind(&self) -> PayloadKind {
        self.kind
    }

    fn get(&self, key: &str) -> Result<Option<CachedValue>> {
        self.check()?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(match self.kind {
            PayloadKind::Object => self.objects.lock().get(key).cloned(),
            PayloadKind::Bytes => self
                .bytes
                .lock()
                .get(key)
                .and_then(|b| codec::decode_envelope_or_miss(b, self.name(), key)),
        })
    }

    fn set(&self, key: &str, value: CachedValue) -> Result<()> {
        self.check()?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        match self.kind {
            PayloadKind::Object => {
                self.objects.lock().insert(key.to_owned(), value);
            }
            PayloadKind::Bytes => {
                let bytes = codec::encode_envelope_for(&value, self.name(), key)?;
                self.bytes.lock().insert(key.to_owned(), bytes);
            }
        }
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.check()?;
        self.objects.lock().remove(key);
        self.bytes.lock().remove(key);
        Ok(())
    }
}
