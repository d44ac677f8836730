//! A `tracing` subscriber that records every event (its level and its fields as text) and every
//! span (its name and fields), for the tests of what the library logs (`tests/tracing_events.rs`,
//! `tests/redis_events.rs`, the memcached lock's warnings). Installed for one thread with
//! `tracing::subscriber::with_default`, or for the process with `set_global_default` when the
//! events come from the backends' own threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Records events (level, message, fields) and span names with their fields.
#[derive(Default, Clone)]
pub struct Recorder {
    /// Each event: its level and its fields, `name=value ` each.
    pub events: Arc<Mutex<Vec<(Level, String)>>>,
    /// Each span: its name and its fields.
    pub spans: Arc<Mutex<Vec<String>>>,
    next: Arc<AtomicU64>,
    /// The least severe level recorded (`None`: every level).
    max_level: Option<Level>,
}

impl Recorder {
    /// A recorder of the events at `level` and the more severe ones only.
    pub fn up_to(level: Level) -> Self {
        Recorder {
            max_level: Some(level),
            ..Recorder::default()
        }
    }

    /// The events so far.
    pub fn events(&self) -> Vec<(Level, String)> {
        self.events.lock().unwrap().clone()
    }

    /// The spans so far.
    pub fn spans(&self) -> Vec<String> {
        self.spans.lock().unwrap().clone()
    }

    /// The texts of the events at `level`.
    pub fn at(&self, level: Level) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|(l, _)| *l == level)
            .map(|(_, text)| text)
            .collect()
    }
}

struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.max_level.is_none_or(|max| *metadata.level() <= max)
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut text = Text(format!("{} ", span.metadata().name()));
        span.record(&mut text);
        self.spans.lock().unwrap().push(text.0);
        Id::from_u64(self.next.fetch_add(1, Ordering::SeqCst) + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut text = Text(String::new());
        event.record(&mut text);
        self.events
            .lock()
            .unwrap()
            .push((*event.metadata().level(), text.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}
