//! What a region reports through `tracing`: backend errors at `warn`, creations, waits and stale
//! values at `debug`, inside a span that names the region, the key and the backend.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dogpile::testing::MapBackend;
use dogpile::{make_region, RegionConfig};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Records events (level, message, fields) and span names with their fields.
#[derive(Default, Clone)]
struct Recorder {
    events: Arc<Mutex<Vec<(Level, String)>>>,
    spans: Arc<Mutex<Vec<String>>>,
    next: Arc<AtomicU64>,
}

struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
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

#[test]
fn backend_errors_warn_and_creations_are_debug_events_in_a_span() {
    let recorder = Recorder::default();
    let backend = Arc::new(MapBackend::default());
    let region = make_region()
        .name("traced")
        .configure(RegionConfig::with_backend(backend.clone()))
        .unwrap();
    tracing::subscriber::with_default(recorder.clone(), || {
        region.get_or_create("k", || 1u32).unwrap();
        backend.set_failing(true);
        assert!(region.get::<u32>("k").is_err());
    });
    let events = recorder.events.lock().unwrap().clone();
    let creating = events
        .iter()
        .find(|(_, text)| text.contains("creating value"))
        .expect("a creation event");
    assert_eq!(creating.0, Level::DEBUG);
    assert!(creating.1.contains("key=\"k\""), "{creating:?}");
    let error = events
        .iter()
        .find(|(_, text)| text.contains("cache backend error"))
        .expect("a backend error event");
    assert_eq!(error.0, Level::WARN);
    assert!(error.1.contains("region=\"traced\""), "{error:?}");
    assert!(error.1.contains("failing on purpose"), "{error:?}");
    let spans = recorder.spans.lock().unwrap().clone();
    assert!(
        spans.iter().any(|s| s.starts_with("get_or_create ")
            && s.contains("key=\"k\"")
            && s.contains("backend=map backend")),
        "{spans:?}"
    );
}
