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

/// An in-process [`Backplane`](crate::backplane::Backplane): every clone shares one hub, and a
/// publish reaches every subscriber of the channel before it returns. Two regions in one test
/// configured with clones of it behave as two processes on one message bus.
///
/// [`set_up`](LoopbackBackplane::set_up) cuts and heals the link (subscribers are told, messages
/// published while it is down are lost), and [`heartbeat`](LoopbackBackplane::heartbeat) plays the
/// transport's keep-alive.
///
/// ```
/// use std::sync::Arc;
/// use dogpile_core::backplane::{Backplane, BackplaneSink};
/// use dogpile_core::testing::LoopbackBackplane;
///
/// #[derive(Default)]
/// struct Count(std::sync::atomic::AtomicUsize);
/// impl BackplaneSink for Count {
///     fn message(&self, _: &[u8]) {
///         self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
///     }
///     fn alive(&self) {}
///     fn connected(&self) {}
///     fn disconnected(&self) {}
/// }
///
/// let bus = LoopbackBackplane::new();
/// let sink = Arc::new(Count::default());
/// let _subscription = bus.subscribe("region", sink.clone()).unwrap();
/// bus.clone().publish("region", b"hello").unwrap();
/// bus.publish("another channel", b"not for us").unwrap();
/// assert_eq!(sink.0.load(std::sync::atomic::Ordering::SeqCst), 1);
/// ```
#[derive(Clone, Default)]
pub struct LoopbackBackplane {
    hub: std::sync::Arc<Hub>,
}

/// One subscription to the hub: its id, its channel and where its messages go.
struct Subscriber {
    id: u64,
    channel: String,
    sink: std::sync::Arc<dyn crate::backplane::BackplaneSink>,
}

#[derive(Default)]
struct Hub {
    subscribers: Mutex<Vec<Subscriber>>,
    next_id: std::sync::atomic::AtomicU64,
    down: std::sync::atomic::AtomicBool,
    /// Messages published, delivered or not.
    published: AtomicUsize,
}

impl std::fmt::Debug for LoopbackBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopbackBackplane")
            .field("subscribers", &self.hub.subscribers.lock().len())
            .field("down", &self.hub.down.load(Ordering::SeqCst))
            .finish()
    }
}

impl LoopbackBackplane {
    /// A hub with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    fn sinks(&self) -> Vec<std::sync::Arc<dyn crate::backplane::BackplaneSink>> {
        let subs = self.hub.subscribers.lock();
        subs.iter().map(|s| s.sink.clone()).collect()
    }

    /// Cuts (`false`) or heals (`true`) the link: subscribers get
    /// [`disconnected`](crate::backplane::BackplaneSink::disconnected) or
    /// [`connected`](crate::backplane::BackplaneSink::connected); publishing fails while it is cut.
    pub fn set_up(&self, up: bool) {
        let was_down = self.hub.down.swap(!up, Ordering::SeqCst);
        if was_down != up {
            // No change.
            return;
        }
        for sink in self.sinks() {
            if up {
                sink.connected();
                sink.alive();
            } else {
                sink.disconnected();
            }
        }
    }

    /// Tells every subscriber the link works, as a transport's heartbeat reply does. Nothing
    /// while the link is cut.
    pub fn heartbeat(&self) {
        if self.hub.down.load(Ordering::SeqCst) {
            return;
        }
        for sink in self.sinks() {
            sink.alive();
        }
    }

    /// How many messages were published (delivered or not).
    pub fn published(&self) -> usize {
        self.hub.published.load(Ordering::SeqCst)
    }
}

impl crate::backplane::Backplane for LoopbackBackplane {
    fn name(&self) -> &str {
        "loopback"
    }

    fn publish(&self, channel: &str, bytes: &[u8]) -> Result<()> {
        self.hub.published.fetch_add(1, Ordering::SeqCst);
        if self.hub.down.load(Ordering::SeqCst) {
            return Err(Error::backend_msg("loopback", "backplane link is cut"));
        }
        let subs: Vec<_> = {
            let subs = self.hub.subscribers.lock();
            subs.iter()
                .filter(|s| s.channel == channel)
                .map(|s| s.sink.clone())
                .collect()
        };
        for sink in subs {
            sink.message(bytes);
            sink.alive();
        }
        Ok(())
    }

    fn subscribe(
        &self,
        channel: &str,
        sink: std::sync::Arc<dyn crate::backplane::BackplaneSink>,
    ) -> Result<crate::backplane::Subscription> {
        let id = self.hub.next_id.fetch_add(1, Ordering::SeqCst);
        self.hub.subscribers.lock().push(Subscriber {
            id,
            channel: channel.to_owned(),
            sink: sink.clone(),
        });
        if !self.hub.down.load(Ordering::SeqCst) {
            sink.connected();
            sink.alive();
        }
        let hub = std::sync::Arc::downgrade(&self.hub);
        Ok(crate::backplane::Subscription::new(move || {
            if let Some(hub) = hub.upgrade() {
                hub.subscribers.lock().retain(|s| s.id != id);
            }
        }))
    }
}
