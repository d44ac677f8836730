//! What a region reports through `tracing`: backend errors at `warn`, creations, waits and stale
//! values at `debug`, inside a span that names the region, the key and the backend.

mod support;

use std::sync::Arc;

use dogpile::testing::MapBackend;
use dogpile::{make_region, RegionConfig};
use support::log_recorder::Recorder;
use tracing::Level;

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

/// Every event and span recorded while regions with credentials fail: none shows a password or
/// the credentials of a URL.
#[test]
#[cfg(feature = "redis")]
fn no_secret_in_events_or_spans() {
    use std::sync::LazyLock;

    use dogpile::{cache_on_arguments, CacheRegion};

    // A server that refuses the connection.
    static REFUSED: LazyLock<CacheRegion> = LazyLock::new(|| {
        make_region()
            .name("refused")
            .configure(
                RegionConfig::new("dogpile.cache.redis")
                    .argument("url", "redis://user:pw-in-url@127.0.0.1:1/0")
                    .argument("password", "hunter2")
                    .argument("socket_timeout", 1),
            )
            .unwrap()
    });

    #[cache_on_arguments(region = REFUSED)]
    fn double(x: u32) -> u32 {
        x * 2
    }

    let recorder = Recorder::default();
    tracing::subscriber::with_default(recorder.clone(), || {
        assert!(REFUSED.get::<u32>("k").is_err());
        assert!(REFUSED.set("k", 1u32).is_err());
        assert_eq!(double(2), 4);
        assert_eq!(double_get(2), None);
        // A server that refuses the password.
        if let Some(server) = support::Server::start("redis-server", |port| {
            let mut args = support::redis_args(port);
            args.extend(["--requirepass".to_owned(), "the-right-one".to_owned()]);
            args
        }) {
            let region = make_region()
                .name("wrong password")
                .configure(
                    RegionConfig::new("dogpile.cache.redis")
                        .argument(
                            "url",
                            format!("redis://default:hunter2@127.0.0.1:{}/0", server.port),
                        )
                        .argument("socket_timeout", 5),
                )
                .unwrap();
            let e = region.get::<u32>("k").unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(region.get_or_create("k", || 1u32).is_err());
        }
    });
    let events = recorder.events.lock().unwrap().clone();
    let spans = recorder.spans.lock().unwrap().clone();
    assert!(
        events.iter().any(|(level, _)| *level == Level::WARN),
        "{events:?}"
    );
    for text in events.iter().map(|(_, t)| t).chain(&spans) {
        for secret in ["hunter2", "pw-in-url", "user:", "default:"] {
            assert!(!text.contains(secret), "{secret:?} shows in {text}");
        }
    }
}
