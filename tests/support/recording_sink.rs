//! A [`BackplaneSink`] that records everything a backplane delivers, with the instant each
//! message arrived, for the transport tests (`tests/redis_backplane.rs`, the Sentinel failover).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use dogpile_core::backplane::BackplaneSink;

use super::wait_for;

/// A sink that records everything it hears, with the instant each message arrived.
#[derive(Default)]
pub struct RecordingSink {
    /// Each message, with when it arrived.
    pub messages: Mutex<Vec<(Instant, Vec<u8>)>>,
    alive: AtomicUsize,
    connected: AtomicUsize,
    disconnected: AtomicUsize,
}

impl BackplaneSink for RecordingSink {
    fn message(&self, bytes: &[u8]) {
        self.messages
            .lock()
            .unwrap()
            .push((Instant::now(), bytes.to_vec()));
    }
    fn alive(&self) {
        self.alive.fetch_add(1, Ordering::SeqCst);
    }
    fn connected(&self) {
        self.connected.fetch_add(1, Ordering::SeqCst);
    }
    fn disconnected(&self) {
        self.disconnected.fetch_add(1, Ordering::SeqCst);
    }
}

impl RecordingSink {
    /// Messages so far.
    pub fn count(&self) -> usize {
        self.messages.lock().unwrap().len()
    }
    /// `connected()` calls so far.
    pub fn times_connected(&self) -> usize {
        self.connected.load(Ordering::SeqCst)
    }
    /// `disconnected()` calls so far.
    pub fn times_disconnected(&self) -> usize {
        self.disconnected.load(Ordering::SeqCst)
    }
    /// `alive()` calls so far.
    pub fn times_alive(&self) -> usize {
        self.alive.load(Ordering::SeqCst)
    }
    /// The messages' bytes, in order of arrival.
    pub fn payloads(&self) -> Vec<Vec<u8>> {
        let messages = self.messages.lock().unwrap();
        messages.iter().map(|(_, b)| b.clone()).collect()
    }
    /// Waits until `n` messages have arrived.
    pub fn wait_count(&self, n: usize, what: &str) {
        wait_for(what, || self.count() >= n);
    }
}
