//! What the Redis backend says through `tracing` (at `warn`): the arguments a `url` makes it
//! ignore, and a held lock found lost by its extension. The events come from the configuring
//! thread and from the backend's lock thread, so this binary records them with a global
//! subscriber. Without `redis-server` the server test prints SKIPPED and passes, unless
//! `DOGPILE_REQUIRE_SERVERS=1`.
#![cfg(feature = "redis")]

mod support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dogpile::RegionConfig;
use support::log_recorder::Recorder;
use support::{raw_redis as raw, redis_cmd as cmd, Server};
use tracing::Level;

/// The warnings so far that contain every one of `parts`.
fn warnings_with(parts: &[&str]) -> Vec<String> {
    // The whole process's `warn` events.
    static RECORDER: OnceLock<Recorder> = OnceLock::new();
    let recorder = RECORDER.get_or_init(|| {
        let recorder = Recorder::up_to(Level::WARN);
        tracing::subscriber::set_global_default(recorder.clone()).unwrap();
        recorder
    });
    recorder
        .at(Level::WARN)
        .into_iter()
        .filter(|w| parts.iter().all(|p| w.contains(p)))
        .collect()
}

/// A Redis region at `url`, with the arguments `more` adds.
fn region_at(url: String, more: impl FnOnce(RegionConfig) -> RegionConfig) -> dogpile::CacheRegion {
    let config = RegionConfig::new("dogpile.cache.redis").argument("url", url);
    dogpile::make_region().configure(more(config)).unwrap()
}

/// As in dogpile, `url` wins: `host`, `port` and `db` beside it are ignored (the data goes to
/// the URL's database), with one `warn` event naming them. On main `host` or `port` beside a
/// `url` was an error, and `db` moved the data.
#[test]
fn url_wins_over_host_port_and_db_with_one_warning() {
    warnings_with(&[]);
    let Some(server) = Server::redis() else {
        return;
    };
    let region = region_at(format!("redis://{}/2", server.addr()), |c| {
        c.argument("host", "elsewhere.invalid")
            .argument("port", 1)
            .argument("db", 5)
    });
    region.set("where", 1u32).unwrap();
    let mut con = raw(&server.addr());
    let _: () = cmd(&mut con, &["SELECT", "2"]);
    assert!(
        cmd::<bool>(&mut con, &["EXISTS", "where"]),
        "not in the URL's db 2"
    );
    let _: () = cmd(&mut con, &["SELECT", "5"]);
    assert!(
        !cmd::<bool>(&mut con, &["EXISTS", "where"]),
        "moved to db 5"
    );
    let said = warnings_with(&[
        "url is given",
        "arguments.host, arguments.port, arguments.db",
    ]);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("ignored"), "{said:?}");

    // Without anything beside the url: no warning.
    region_at("redis://h:1".to_owned(), |c| c);
    assert_eq!(warnings_with(&["url is given"]).len(), 1);
}

/// A held lock that disappears from the server (here deleted behind its holder's back; in life,
/// expired while the server was unreachable) is found by the next extension and said at `warn`,
/// naming its key, and counted (`Stats::locks_lost`). On main the extension's "not ours" answer
/// was ignored.
#[test]
fn a_lost_lock_is_a_warning_naming_its_key() {
    warnings_with(&[]);
    let Some(server) = Server::redis() else {
        return;
    };
    let region = region_at(format!("redis://{}", server.addr()), |c| {
        c.argument("distributed_lock", true)
            .argument("lock_timeout", 0.6)
    });
    let lock = region.backend().unwrap().get_mutex("gone").unwrap();
    assert!(lock.try_acquire().unwrap());
    let _: () = cmd(&mut raw(&server.addr()), &["DEL", "_lockgone"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while warnings_with(&["_lockgone", "found gone"]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no warning about the lost lock within 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(region.stats().locks_lost >= 1, "{:?}", region.stats());
    // Still ours as far as the handle knows: releasing it is no error, and deletes nothing.
    lock.release().unwrap();
}
