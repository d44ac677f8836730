//! Argument parsing; the operations are tested against real servers in `tests/redis.rs`.

use super::settings::*;
use super::*;

fn err(args: Arguments) -> String {
    RedisBackend::from_arguments(&args).unwrap_err().to_string()
}

fn cluster_err(args: Arguments) -> String {
    RedisBackend::cluster_from_arguments(&args)
        .unwrap_err()
        .to_string()
}

#[test]
fn defaults_and_url() {
    let b = RedisBackend::from_arguments(&Arguments::new()).unwrap();
    assert_eq!(b.name(), "dogpile.cache.redis at localhost:6379");
    assert_eq!(b.redis_expiration_time(), None);
    assert!(!b.distributed_lock());
    assert!(b.get_mutex("k").is_none());
    let b = RedisBackend::from_arguments(
        &Arguments::new()
            .with("url", "redis://user:secret@10.1.2.3:7000/2")
            .with("redis_expiration_time", 120)
            .with("distributed_lock", true),
    )
    .unwrap();
    assert_eq!(b.name(), "dogpile.cache.redis at 10.1.2.3:7000");
    assert_eq!(b.redis_expiration_time(), Some(Duration::from_secs(120)));
    assert!(b.distributed_lock());
    // Without a scheme, redis:// is assumed.
    let b = RedisBackend::from_arguments(&Arguments::new().with("url", "127.0.0.1:7001")).unwrap();
    assert_eq!(b.name(), "dogpile.cache.redis at 127.0.0.1:7001");
}

#[test]
fn host_port_db_and_credentials() {
    let args = Arguments::new()
        .with("host", "cache.local")
        .with("port", 6380)
        .with("db", 3)
        .with("username", "app")
        .with("password", "pw");
    let common = Common::read(&args).unwrap();
    let info = single_server_info(&args, &common).unwrap();
    assert_eq!(address(&info), "cache.local:6380");
    assert_eq!(info.redis_settings().db(), 3);
    assert_eq!(info.redis_settings().username(), Some("app"));
    assert_eq!(info.redis_settings().password(), Some("pw"));
    // The URL wins over host, port and db (as in dogpile); the password overrides the URL's.
    let args = Arguments::new()
        .with("url", "redis://:old@h:1/1")
        .with("host", "elsewhere")
        .with("port", 2)
        .with("db", 4)
        .with("password", "new");
    let common = Common::read(&args).unwrap();
    let info = single_server_info(&args, &common).unwrap();
    assert_eq!(address(&info), "h:1");
    assert_eq!(info.redis_settings().db(), 1);
    assert_eq!(info.redis_settings().password(), Some("new"));
}

#[test]
fn timeouts_lock_and_pool() {
    let args = Arguments::new()
        .with("socket_timeout", 0.25)
        .with("lock_timeout", 10)
        .with("lock_sleep", 0.002)
        .with("pool_size", 3)
        .with("thread_local_lock", false)
        .with("redis_expiration_time", 0);
    let c = Common::read(&args).unwrap();
    assert_eq!(c.limits.reply_timeout, Duration::from_millis(250));
    assert_eq!(c.limits.connect_timeout, Duration::from_millis(250));
    assert_eq!(c.limits.pool_timeout, Duration::from_millis(500));
    assert_eq!(c.lock.timeout, Duration::from_secs(10));
    assert_eq!(c.lock.max_pause, Duration::from_millis(2));
    assert_eq!(c.limits.pool_size, 3);
    assert_eq!(c.ttl, None, "0 means no server TTL, as in dogpile");
    let c = Common::read(
        &Arguments::new()
            .with("socket_connect_timeout", 2)
            .with("pool_timeout", 0.5),
    )
    .unwrap();
    assert_eq!(c.limits.connect_timeout, Duration::from_secs(2));
    assert_eq!(c.limits.reply_timeout, DEFAULT_SOCKET_TIMEOUT);
    assert_eq!(c.limits.pool_timeout, Duration::from_millis(500));
    // Every wait has a finite default.
    let c = Common::read(&Arguments::new()).unwrap();
    assert_eq!(c.limits.reply_timeout, Duration::from_secs(3));
    assert_eq!(c.limits.connect_timeout, Duration::from_secs(3));
    assert_eq!(c.limits.pool_timeout, Duration::from_secs(6));
    assert_eq!(c.lock.timeout, DEFAULT_LOCK_TIMEOUT);
    assert_eq!(c.lock.max_pause, DEFAULT_LOCK_SLEEP);
    assert_eq!(c.lock.prefix, "_lock");
    assert_eq!(c.limits.pool_size, DEFAULT_POOL_SIZE);
    assert_eq!(c.lock_blocking_timeout, None);
}

#[test]
fn lock_blocking_and_lock_prefix() {
    let bound = |args: Arguments| {
        RedisBackend::from_arguments(&args)
            .unwrap()
            .lock_blocking_timeout()
    };
    assert_eq!(bound(Arguments::new()), None);
    assert_eq!(
        bound(Arguments::new().with("lock_blocking_timeout", 2.5)),
        Some(Duration::from_millis(2500))
    );
    assert_eq!(
        bound(Arguments::new().with("lock_blocking", true)),
        None,
        "blocking without a timeout: the region's bound"
    );
    // dogpile: lock_blocking=False never waits, whatever the timeout.
    for args in [
        Arguments::new().with("lock_blocking", false),
        Arguments::new()
            .with("lock_blocking", false)
            .with("lock_blocking_timeout", 10),
    ] {
        assert_eq!(bound(args), Some(Duration::ZERO));
    }
    let cluster = RedisBackend::cluster_from_arguments(
        &Arguments::new()
            .with("startup_nodes", "h:1")
            .with("lock_blocking_timeout", 1),
    )
    .unwrap();
    assert_eq!(
        cluster.lock_blocking_timeout(),
        Some(Duration::from_secs(1))
    );

    let b = RedisBackend::from_arguments(
        &Arguments::new()
            .with("lock_prefix", "my.lk:")
            .with("distributed_lock", true),
    )
    .unwrap();
    let keeper = b.lock.as_ref().unwrap();
    assert_eq!(RedisMutex::new(keeper, "key").lock_key(), "my.lk:key");
    for good in ["ab", "_lock", "a-b.c:d_e9", "ééé"] {
        let c = Common::read(&Arguments::new().with("lock_prefix", good)).unwrap();
        assert_eq!(c.lock.prefix, good);
    }
    for bad in ["a", "eleven_char", "a b", "lock/", "", "x*"] {
        let e = err(Arguments::new().with("lock_prefix", bad));
        assert!(
            e.starts_with("arguments.lock_prefix: expected 2 to 10 letters, digits"),
            "{bad:?}: {e}"
        );
        assert!(e.ends_with(&format!("got {bad:?}")), "{e}");
    }
    assert_eq!(
        err(Arguments::new().with("lock_blocking", "no")),
        "arguments.lock_blocking: expected true or false, got a string \"no\""
    );
    assert!(err(Arguments::new().with("lock_blocking_timeout", -1))
        .starts_with("arguments.lock_blocking_timeout: expected a number of seconds"));
    assert_eq!(
        err(Arguments::new().with("pool_timeout", 0)),
        "arguments.pool_timeout: expected more than 0 seconds, got 0"
    );
}

#[test]
fn errors_name_the_argument() {
    let e = err(Arguments::new().with("hots", "x"));
    assert!(
        e.starts_with("arguments.hots: unknown argument for dogpile.cache.redis; it takes: url, host, port, db"),
        "{e}"
    );
    assert_eq!(
        err(Arguments::new().with("port", "six")),
        "arguments.port: expected a non-negative integer, got a string \"six\""
    );
    assert_eq!(
        err(Arguments::new().with("port", 70000)),
        "arguments.port: expected 1 to 65535, got 70000"
    );
    assert_eq!(
        err(Arguments::new().with("db", -1)),
        "arguments.db: expected 0 or more, got -1"
    );
    assert_eq!(
        err(Arguments::new().with("distributed_lock", "yes")),
        "arguments.distributed_lock: expected true or false, got a string \"yes\""
    );
    assert_eq!(
        err(Arguments::new().with("lock_timeout", 0)),
        "arguments.lock_timeout: expected more than 0 seconds, got 0"
    );
    assert_eq!(
        err(Arguments::new().with("pool_size", 0)),
        "arguments.pool_size: expected at least 1, got 0"
    );
    assert!(err(Arguments::new().with("socket_timeout", -1.0))
        .starts_with("arguments.socket_timeout: expected a number of seconds"));
    assert!(err(Arguments::new().with("url", "http://h:1"))
        .starts_with("arguments.url: not a Redis URL (\"http://h:1\")"));
}

#[test]
fn server_ttl_must_exceed_the_region_expiration() {
    let b =
        RedisBackend::from_arguments(&Arguments::new().with("redis_expiration_time", 60)).unwrap();
    let e = b
        .check_region_expiration(Some(&Expiration::After(Duration::from_secs(60))))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(
            "arguments.redis_expiration_time: 60 s must exceed the region's expiration_time (60 s)"
        ),
        "{e}"
    );
    assert!(b
        .check_region_expiration(Some(&Expiration::After(Duration::from_secs(59))))
        .is_ok());
    assert!(b.check_region_expiration(Some(&Expiration::Never)).is_ok());
    assert!(b.check_region_expiration(None).is_ok());
    let no_ttl = RedisBackend::from_arguments(&Arguments::new()).unwrap();
    assert!(no_ttl
        .check_region_expiration(Some(&Expiration::After(Duration::from_secs(1 << 40))))
        .is_ok());
}

#[test]
fn cluster_arguments() {
    let b = RedisBackend::cluster_from_arguments(
        &Arguments::new().with("startup_nodes", "127.0.0.1:7000, 127.0.0.1:7001"),
    )
    .unwrap();
    assert_eq!(
        b.name(),
        "dogpile.cache.redis_cluster at 127.0.0.1:7000,127.0.0.1:7001"
    );
    let b = RedisBackend::cluster_from_arguments(
        &Arguments::new()
            .with("url", vec!["redis://127.0.0.1:7000"])
            .with("distributed_lock", true),
    )
    .unwrap();
    assert!(b.distributed_lock());
    assert!(cluster_err(Arguments::new()).starts_with("arguments.startup_nodes: missing"));
    assert!(
        cluster_err(Arguments::new().with("startup_nodes", "h:1").with("db", 1))
            .starts_with("arguments.db: dogpile.cache.redis_cluster takes startup_nodes")
    );
    assert!(cluster_err(
        Arguments::new()
            .with("startup_nodes", "h:1")
            .with("url", "h:2")
    )
    .starts_with("arguments.url: give either startup_nodes or url"));
    assert!(cluster_err(Arguments::new().with("startup_nodes", ""))
        .starts_with("arguments.startup_nodes: expected at least one"));
    assert!(cluster_err(
        Arguments::new()
            .with("startup_nodes", "h:1")
            .with("nodes", 1)
    )
    .starts_with("arguments.nodes: unknown argument for dogpile.cache.redis_cluster"));
}

#[test]
fn a_dead_server_is_an_error_naming_it_not_a_panic() {
    // Port 1 on loopback: nothing listens there.
    let b = RedisBackend::from_arguments(
        &Arguments::new()
            .with("url", "redis://127.0.0.1:1")
            .with("socket_timeout", 2)
            .with("distributed_lock", true),
    )
    .unwrap();
    let e = b.get("k").unwrap_err().to_string();
    assert!(
        e.starts_with("dogpile.cache.redis at 127.0.0.1:1: reading a value:"),
        "{e}"
    );
    assert!(b.get_multi(&["a", "b"]).is_err());
    let m = b.get_mutex("k").unwrap();
    assert!(m.try_acquire().is_err());
    assert!(m.locked().is_err());
}

#[test]
fn url_errors_hide_credentials() {
    assert_eq!(redacted("redis://user:pw@h:1/0"), "redis://***@h:1/0");
    assert_eq!(redacted("user:pw@h:1"), "***@h:1");
    assert_eq!(redacted("redis://h:1"), "redis://h:1");
    let e = err(Arguments::new().with("url", "http://u:secret@h:1"));
    assert!(!e.contains("secret"), "{e}");
}

fn sentinel_err(args: Arguments) -> String {
    RedisBackend::sentinel_from_arguments(&args)
        .unwrap_err()
        .to_string()
}

#[test]
fn connection_kwargs_in_dotted_and_dict_form_and_the_argument_wins() {
    // dogpile's dict form in a config map, `connection_kwargs.NAME`:
    let dotted = Arguments::new()
        .with("connection_kwargs.socket_timeout", 0.5)
        .with("connection_kwargs.max_connections", 4)
        .with("connection_kwargs.health_check_interval", 30)
        .with("connection_kwargs.retry_on_timeout", true);
    // and a dict written as one value:
    let written = Arguments::new().with(
        "connection_kwargs",
        "{'socket_timeout': 0.5, 'max_connections': 4, 'health_check_interval': 30, 'retry_on_timeout': True}",
    );
    for args in [dotted, written] {
        let c = Common::read(&args).unwrap();
        assert_eq!(c.limits.reply_timeout, Duration::from_millis(500));
        assert_eq!(c.limits.pool_size, 4);
    }
    // The argument wins over the kwargs, as dogpile passes its own after them.
    let args = Arguments::new()
        .with("socket_timeout", 2)
        .with("connection_kwargs.socket_timeout", 0.5)
        .with("connection_kwargs.db", 5);
    let c = Common::read(&args).unwrap();
    assert_eq!(c.limits.reply_timeout, Duration::from_secs(2));
    let info = single_server_info(&args, &c).unwrap();
    assert_eq!(info.redis_settings().db(), 5, "db from the kwargs");
    // An unknown setting, or a mistyped one, names itself in full.
    let e = err(Arguments::new().with("connection_kwargs.decode_responses", true));
    assert!(
        e.starts_with(
            "arguments.connection_kwargs.decode_responses: unknown argument for connection_kwargs"
        ),
        "{e}"
    );
    let e = err(Arguments::new().with("connection_kwargs.socket_timeout", "soon"));
    assert!(
        e.starts_with("arguments.connection_kwargs.socket_timeout: expected a number of seconds"),
        "{e}"
    );
    let e = err(Arguments::new().with("connection_kwargs", "{'ssl': }"));
    assert!(
        e.starts_with("arguments.connection_kwargs: expected a dict")
            && e.ends_with("the value of \"ssl\" is empty"),
        "{e}"
    );
}

#[test]
fn a_password_in_connection_kwargs_is_a_secret() {
    let args = Arguments::new().with("connection_kwargs", "{'password': 'hunter22', 'db': 'x'}");
    let e = err(args.clone());
    assert!(!e.contains("hunter22"), "{e}");
    assert!(!format!("{args:?}").contains("hunter22"), "{args:?}");
    let c =
        Common::read(&Arguments::new().with("connection_kwargs", "{'password': 0123}")).unwrap();
    assert_eq!(
        c.password.map(|p| p.0).as_deref(),
        Some("0123"),
        "a credential is text"
    );
}

#[test]
fn connection_pool_is_refused_with_what_to_use() {
    let e = err(Arguments::new().with("connection_pool", "pool"));
    assert!(
        e.starts_with("arguments.connection_pool: a redis-py ConnectionPool is a Python object")
            && e.contains("pool_size"),
        "{e}"
    );
}

#[test]
fn socket_keepalive_and_its_options() {
    let c = Common::read(&Arguments::new()).unwrap();
    assert!(c.tcp.keepalive().is_none());
    let c = Common::read(&Arguments::new().with("socket_keepalive", true).with(
        "socket_keepalive_options",
        "{4: 60, 'TCP_KEEPINTVL': 10, 6: 3}",
    ))
    .unwrap();
    assert!(c.tcp.keepalive().is_some());
    let e = err(Arguments::new().with("socket_keepalive_options.TCP_KEEPIDLE", 60));
    assert!(e.contains("without socket_keepalive = true"), "{e}");
    let e = err(Arguments::new()
        .with("socket_keepalive", true)
        .with("socket_keepalive_options.TCP_NOPE", 1));
    assert!(
        e.starts_with("arguments.socket_keepalive_options.TCP_NOPE: unknown keepalive option"),
        "{e}"
    );
}

#[test]
fn tls_arguments() {
    // `ssl` turns a redis:// address into a TLS one; rediss:// is TLS already.
    let ssl = Arguments::new()
        .with("url", "redis://h:1")
        .with("ssl", true);
    let c = Common::read(&ssl).unwrap();
    assert!(Tls::is_tls(&single_server_info(&ssl, &c).unwrap()));
    let plain = Arguments::new().with("url", "redis://h:1");
    let c = Common::read(&plain).unwrap();
    assert!(!Tls::is_tls(&single_server_info(&plain, &c).unwrap()));
    let rediss = Arguments::new().with("url", "rediss://h:1");
    let c = Common::read(&rediss).unwrap();
    assert!(Tls::is_tls(&single_server_info(&rediss, &c).unwrap()));
    RedisBackend::from_arguments(&rediss).expect("a TLS backend with the system's roots");
    // Files are read at once: a missing one is an error naming it.
    let e = err(Arguments::new()
        .with("url", "rediss://h:1")
        .with("connection_kwargs.ssl_ca_certs", "/no/such/ca.pem"));
    assert!(
        e.starts_with("arguments.connection_kwargs.ssl_ca_certs: cannot read \"/no/such/ca.pem\""),
        "{e}"
    );
    let e = err(Arguments::new().with("connection_kwargs.ssl_cert_reqs", "maybe"));
    assert!(e.contains("expected required, optional or none"), "{e}");
    // A file that is not PEM is an error naming its setting, at configure time.
    let e = err(Arguments::new()
        .with("url", "rediss://h:1")
        .with("connection_kwargs.ssl_certfile", "/etc/hostname"));
    assert!(
        e.starts_with("arguments.connection_kwargs.ssl_certfile: no certificate in PEM form"),
        "{e}"
    );
    // TLS settings for a plain-text address would be dropped: an error instead.
    let e = err(Arguments::new()
        .with("url", "redis://h:1")
        .with("connection_kwargs.ssl_cert_reqs", "required"));
    assert!(
        e.starts_with(
            "arguments.connection_kwargs.ssl_cert_reqs: a TLS setting for a plain-text address"
        ),
        "{e}"
    );
    let e = err(Arguments::new()
        .with("url", "redis+unix:///tmp/r.sock")
        .with("ssl", true));
    assert!(e.starts_with("ssl: ssl = true needs a TCP address"), "{e}");
}

#[test]
fn sentinel_arguments() {
    let b = RedisBackend::sentinel_from_arguments(
        &Arguments::new().with("sentinels", "127.0.0.1:26379, 127.0.0.1:26380"),
    )
    .unwrap();
    assert_eq!(
        b.name(),
        "dogpile.cache.redis_sentinel \"mymaster\" at 127.0.0.1:26379,127.0.0.1:26380"
    );
    assert!(b.distributed_lock(), "on by default, as in dogpile");
    let b = RedisBackend::sentinel_from_arguments(
        &Arguments::new()
            .with("sentinels", vec!["127.0.0.1:26379"])
            .with("service_name", "cache")
            .with("distributed_lock", false)
            .with("sentinel_kwargs.password", "sentinel-pw")
            .with("db", 2),
    )
    .unwrap();
    assert!(!b.distributed_lock());
    assert!(b.name().contains("\"cache\""));
    assert!(sentinel_err(Arguments::new()).starts_with("arguments.sentinels: missing"));
    let e = sentinel_err(
        Arguments::new()
            .with("sentinels", "h:1")
            .with("url", "redis://h:2"),
    );
    assert!(
        e.starts_with(
            "arguments.url: dogpile.cache.redis_sentinel finds the master through the sentinels"
        ),
        "{e}"
    );
    let e = sentinel_err(
        Arguments::new()
            .with("sentinels", "h:1")
            .with("sentinel_kwargs.db", 1),
    );
    assert!(
        e.starts_with("arguments.sentinel_kwargs.db: unknown argument"),
        "{e}"
    );
    // Under Valkey's names the errors name Valkey.
    let e = RedisBackend::sentinel(VALKEY_SENTINEL, &Arguments::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("dogpile.cache.valkey_sentinel needs"), "{e}");
    let b = RedisBackend::single(VALKEY, &Arguments::new()).unwrap();
    assert_eq!(b.name(), "dogpile.cache.valkey at localhost:6379");
}

#[test]
fn connection_kwargs_fill_in_only_what_the_url_leaves_out() {
    let info = |args: Arguments| {
        let c = Common::read(&args).unwrap();
        single_server_info(&args, &c).unwrap()
    };
    // A URL without a database takes the kwargs' (as redis-py's from_url); one with, keeps it.
    let i = info(
        Arguments::new()
            .with("url", "redis://h:1")
            .with("connection_kwargs.db", 4),
    );
    assert_eq!(i.redis_settings().db(), 4);
    let i = info(
        Arguments::new()
            .with("url", "redis://h:1/2")
            .with("connection_kwargs.db", 4),
    );
    assert_eq!(i.redis_settings().db(), 2);
    // The URL's credentials win over the kwargs'; an argument overrides the URL's.
    let i = info(
        Arguments::new()
            .with("url", "redis://u:urlpw@h:1")
            .with("connection_kwargs.password", "kwpw"),
    );
    assert_eq!(i.redis_settings().password(), Some("urlpw"));
    let i = info(
        Arguments::new()
            .with("url", "redis://h:1")
            .with("connection_kwargs.password", "kwpw"),
    );
    assert_eq!(i.redis_settings().password(), Some("kwpw"));
    let i = info(
        Arguments::new()
            .with("url", "redis://u:urlpw@h:1")
            .with("password", "argpw"),
    );
    assert_eq!(i.redis_settings().password(), Some("argpw"));
}

#[test]
fn a_none_argument_is_no_argument() {
    // A config map's `socket_timeout = none` does not hide the kwargs' setting.
    let c = Common::read(
        &Arguments::new()
            .with("socket_timeout", dogpile_core::ArgValue::None)
            .with("connection_kwargs.socket_timeout", 0.5)
            .with("pool_size", dogpile_core::ArgValue::None)
            .with("connection_kwargs.max_connections", 3)
            .with("connection_pool", dogpile_core::ArgValue::None),
    )
    .unwrap();
    assert_eq!(c.limits.reply_timeout, Duration::from_millis(500));
    assert_eq!(c.limits.pool_size, 3);
}

#[test]
fn dotted_names_only_under_dict_arguments() {
    let e = err(Arguments::new().with("url.foo", "x"));
    assert!(e.starts_with("arguments.url.foo: unknown argument"), "{e}");
    let e = err(Arguments::new().with("ssl.ca_certs", "x"));
    assert!(
        e.starts_with("arguments.ssl.ca_certs: unknown argument"),
        "{e}"
    );
}

#[test]
fn the_sentinel_backend_never_shows_a_password() {
    let b = RedisBackend::sentinel_from_arguments(
        &Arguments::new().with("sentinels", "redis://user:s3cr3tpw@127.0.0.1:26379"),
    )
    .unwrap();
    assert!(!b.name().contains("s3cr3tpw"), "{}", b.name());
    assert!(b.name().contains("127.0.0.1:26379"), "{}", b.name());
}
