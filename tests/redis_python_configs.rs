//! Python dogpile configurations of every Redis backend, written as dogpile's config dicts are
//! (every value a string, nested settings as `arguments.connection_kwargs.NAME`), with every
//! argument of dogpile 1.5's Redis, Sentinel, Cluster and Valkey backends (issue 14, item 4).
//! Each configures without error; the single-server one then works against a real server, and
//! the argument that must be refused (`connection_pool`, a Python object) says what to use.
#![cfg(feature = "redis")]

mod support;

use support::Server;

/// A config dict as a Python service holds it, under `prefix`.
fn config(prefix: &str, backend: &str, arguments: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut map = vec![
        (format!("{prefix}backend"), backend.to_owned()),
        (format!("{prefix}expiration_time"), "300".to_owned()),
    ];
    for (k, v) in arguments {
        map.push((format!("{prefix}arguments.{k}"), (*v).to_owned()));
    }
    map
}

/// The arguments every Redis backend takes, as strings.
const COMMON: &[(&str, &str)] = &[
    ("username", "app"),
    ("password", "0123"),
    ("redis_expiration_time", "600"),
    ("distributed_lock", "true"),
    ("lock_timeout", "30"),
    ("lock_sleep", "0.1"),
    ("lock_blocking", "true"),
    ("lock_blocking_timeout", "10"),
    ("lock_prefix", "_lk:"),
    ("socket_timeout", "2.5"),
    ("socket_connect_timeout", "1"),
    ("socket_keepalive", "true"),
    ("socket_keepalive_options", "{4: 60, 5: 10, 6: 3}"),
    ("thread_local_lock", "false"),
    ("connection_kwargs.health_check_interval", "30"),
    ("connection_kwargs.retry_on_timeout", "true"),
];

fn with_common(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut all: Vec<(&str, &str)> = COMMON.to_vec();
    all.extend_from_slice(extra);
    all
}

#[test]
fn every_backend_configures_from_a_python_config() {
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "dogpile.cache.redis",
            with_common(&[("host", "127.0.0.1"), ("port", "6390"), ("db", "2")]),
        ),
        (
            "dogpile.cache.redis",
            with_common(&[("url", "redis://127.0.0.1:6390/1")]),
        ),
        (
            "dogpile.cache.valkey",
            with_common(&[
                ("url", "rediss://127.0.0.1:6390/0"),
                ("connection_kwargs.ssl_cert_reqs", "required"),
                ("connection_kwargs.ssl_check_hostname", "true"),
            ]),
        ),
        (
            "dogpile.cache.redis_cluster",
            with_common(&[("startup_nodes", "127.0.0.1:7000, 127.0.0.1:7001")]),
        ),
        (
            "dogpile.cache.valkey_cluster",
            with_common(&[("url", "redis://127.0.0.1:7000")]),
        ),
        (
            "dogpile.cache.redis_sentinel",
            with_common(&[
                ("sentinels", "127.0.0.1:26379, 127.0.0.1:26380"),
                ("service_name", "mymaster"),
                ("sentinel_kwargs.password", "sentinel-secret"),
                ("db", "0"),
            ]),
        ),
        (
            "dogpile.cache.valkey_sentinel",
            with_common(&[("sentinels", "127.0.0.1:26379")]),
        ),
    ];
    for (backend, arguments) in cases {
        let map = config("cache.", backend, &arguments);
        let region = dogpile::make_region().build();
        region
            .configure_from_config(map, "cache.")
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(region.backend_name().as_deref(), Some(backend));
        // lock_blocking_timeout reaches the region; secrets never show.
        let b = region.backend().unwrap();
        assert_eq!(
            b.lock_blocking_timeout(),
            Some(std::time::Duration::from_secs(10))
        );
        let shown = format!("{region:?} {b:?}");
        assert!(
            !shown.contains("0123") && !shown.contains("sentinel-secret"),
            "{shown}"
        );
    }
}

#[test]
fn connection_pool_is_refused_with_what_to_use_instead() {
    let map = config(
        "cache.",
        "dogpile.cache.redis",
        &[("connection_pool", "<redis.ConnectionPool>")],
    );
    let err = dogpile::make_region()
        .build()
        .configure_from_config(map, "cache.")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "cache.arguments.connection_pool: a redis-py ConnectionPool is a Python object"
        ) && err.contains("pool_size and pool_timeout"),
        "{err}"
    );
}

#[test]
fn a_python_config_works_against_a_real_server() {
    let Some(server) = Server::redis() else {
        return;
    };
    let port = server.port.to_string();
    let mut arguments: Vec<(&str, &str)> = COMMON
        .iter()
        .copied()
        .filter(|(k, _)| !matches!(*k, "username" | "password"))
        .collect();
    arguments.extend([("host", "127.0.0.1"), ("port", port.as_str()), ("db", "3")]);
    let map = config("cache.", "dogpile.cache.redis", &arguments);
    let region = dogpile::make_region().build();
    region.configure_from_config(map, "cache.").unwrap();
    assert_eq!(region.get_or_create("k", || 5u8).unwrap(), 5);
    // db 3, the lock prefix and the server TTL as configured.
    let mut con = support::raw_redis(&server.addr());
    let _: () = support::redis_cmd(&mut con, &["SELECT", "3"]);
    let ttl: i64 = support::redis_cmd(&mut con, &["TTL", "k"]);
    assert!(ttl > 500 && ttl <= 600, "server TTL {ttl}");
    assert!(region.get::<u8>("k").unwrap() == Some(5));
    let mutex = region.backend().unwrap().get_mutex("k").unwrap();
    assert!(mutex.try_acquire().unwrap());
    let locks: Vec<String> = support::redis_cmd(&mut con, &["KEYS", "_lk:*"]);
    assert_eq!(locks, ["_lk:k"]);
    mutex.release().unwrap();
}
