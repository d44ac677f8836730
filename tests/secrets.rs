//! No secret in any `Debug` text or error: passwords, URL credentials and every argument whose
//! name says password, secret, token or key show as `***`; and credentials in a config map are
//! taken as the text written (a Redis password `0123` or `none` authenticates as written).

mod support;

use dogpile::config::{ArgValue, Arguments};
use dogpile::{make_region, RegionConfig};

/// Secrets the tests write, none of which may show in a text.
const SECRETS: &[&str] = &[
    "hunter2",
    "pw-in-url",
    "pw-in-list",
    "s3cr3t-sasl",
    "private.pem",
    "tok-123",
    "user:",
    "sl4sh",
];

fn assert_hidden(text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret:?} shows in {text}");
    }
}

fn config_map() -> Vec<(&'static str, &'static str)> {
    vec![
        ("cache.backend", "dogpile.cache.redis"),
        (
            "cache.arguments.url",
            "redis://user:pw-in-url@127.0.0.1:1/0",
        ),
        ("cache.arguments.password", "hunter2"),
        ("cache.arguments.sasl_password", "s3cr3t-sasl"),
        ("cache.arguments.ssl_keyfile", "/etc/keys/private.pem"),
        ("cache.arguments.auth_token", "tok-123"),
        ("cache.arguments.username", "ann"),
    ]
}

#[test]
fn debug_texts_show_secrets_as_stars() {
    let from_map = RegionConfig::from_config(config_map(), "cache.").unwrap();
    let text = format!("{from_map:?}");
    assert_hidden(&text);
    for shown in [
        "\"password\": ***",
        "\"sasl_password\": ***",
        "\"ssl_keyfile\": ***",
        "\"auth_token\": ***",
        "redis://***@127.0.0.1:1/0",
        "\"ann\"",
    ] {
        assert!(text.contains(shown), "{shown} not in {text}");
    }

    let in_code = RegionConfig::new("dogpile.cache.redis_cluster")
        .argument("startup_nodes", vec!["redis://:pw-in-list@h:1", "h:2"])
        .argument("password", "hunter2");
    assert_hidden(&format!("{in_code:?}"));
    assert_hidden(&format!("{in_code:#?}"));

    let value = ArgValue::from(vec!["redis://user:pw-in-list@h:1"]);
    assert_hidden(&format!("{value:?} {value}"));
    assert_eq!(value.to_string(), "[\"redis://***@h:1\"]");
    let args = Arguments::new().with("password", "hunter2");
    assert_hidden(&format!("{args:?}"));
    // A password written with `/`, `?` or `#` unescaped (the URL is not a valid one, and its
    // authority would end at the `/`).
    for url in [
        "redis://:sl4sh/pw@h:1/0",
        "redis://u:sl4sh?pw@h:1",
        "u:sl4sh#pw@h:1",
    ] {
        let c = RegionConfig::new("dogpile.cache.redis").argument("url", url);
        assert_hidden(&format!("{c:?}"));
    }
    // A socket URL's credentials are in its query (redis-rs reads `user` and `pass` there;
    // redis-py writes `password`), and a list's first address may have no scheme.
    for url in [
        "redis+unix:///tmp/r.sock?pass=hunter2",
        "unix:///tmp/r.sock?db=1&user=ann&pass=hunter2",
        "redis+unix:///tmp/r.sock?password=hunter2#frag",
        "user:hunter2@10.0.0.1:11211, memcache://10.0.0.2:11211",
        "10.0.0.1:1, user:hunter2@10.0.0.2:2, redis://h:3",
    ] {
        let c = RegionConfig::new("dogpile.cache.redis").argument("url", url);
        assert_hidden(&format!("{c:?}"));
        let listed = RegionConfig::new("dogpile.cache.redis_cluster")
            .argument("startup_nodes", url.split(", ").collect::<Vec<_>>());
        assert_hidden(&format!("{listed:?}"));
    }
    assert!(
        format!("{:?}", ArgValue::from("unix:///s?db=1&pass=hunter2"))
            .contains("unix:///s?db=1&pass=***")
    );
    // A query password holding `@`, `,` or a space shows no part of itself; nor does one in a
    // dict written as text, whose closing quote and brace stay.
    for url in [
        "redis+unix:///s?pass=hun@ter2",
        "redis+unix:///s?pass=hun,ter2&db=1",
        "redis+unix:///s?pass=hun ter2",
    ] {
        let text = format!("{:?}", ArgValue::from(url));
        assert!(!text.contains("ter2"), "{text}");
    }
    let dict = format!(
        "{:?}",
        ArgValue::from("{'url': 'redis+unix:///s?pass=hunter2', 'db': 1}")
    );
    assert!(dict.contains("pass=***', 'db': 1}"), "{dict}");
}

/// The error of configuring a region with `config`.
#[cfg(any(feature = "redis", feature = "memcached"))]
fn configure_error(config: RegionConfig) -> String {
    make_region().configure(config).unwrap_err().to_string()
}

#[test]
#[cfg(feature = "redis")]
fn redis_configuration_errors_hide_secrets() {
    let redis = |pairs: &[(&str, ArgValue)]| {
        let mut c = RegionConfig::new("dogpile.cache.redis");
        for (k, v) in pairs {
            c = c.argument(*k, v.clone());
        }
        configure_error(c)
    };
    // A type error that echoes a list holding a URL.
    let e = redis(&[(
        "url",
        ArgValue::List(vec!["redis://:pw-in-list@h:1".into(), ArgValue::Bool(true)]),
    )]);
    assert_hidden(&e);
    assert!(e.starts_with("arguments.url: expected a string"), "{e}");
    // A secret of the wrong type.
    let e = redis(&[("password", vec!["hunter2"].into())]);
    assert_eq!(e, "arguments.password: expected a string, got a list ***");
    // A URL that does not parse.
    let e = redis(&[("url", "redis://user:hunter2@h:notaport".into())]);
    assert_hidden(&e);
    assert!(e.contains("redis://***@h:notaport"), "{e}");
    // A password with an unescaped `/`: the URL does not parse, and the error says so without it.
    let e = redis(&[("url", "redis://:sl4sh/pw@h:1/0".into())]);
    assert_hidden(&e);
    assert!(e.starts_with("arguments.url: "), "{e}");
    // A socket URL that does not parse, its password in the query.
    let e = redis(&[("url", "redis+unix:///tmp/r.sock?db=x&pass=hunter2".into())]);
    assert_hidden(&e);
    assert!(e.starts_with("arguments.url: "), "{e}");
    // A user name in the query is hidden in the URL, but it is no secret to hunt for in the rest
    // of the text: `unix` here, which the scheme `redis+unix` holds.
    let e = redis(&[("url", "redis+unix:///tmp/r.sock?user=unix&db=x".into())]);
    assert!(e.contains("redis+unix:///tmp/r.sock?user=***&db=x"), "{e}");
    // The backend's own Debug.
    let backend = dogpile::backend::redis::RedisBackend::from_arguments(
        &Arguments::new()
            .with("url", "redis://user:pw-in-url@127.0.0.1:1/0")
            .with("password", "hunter2"),
    )
    .unwrap();
    assert_hidden(&format!("{backend:?}"));
}

#[test]
#[cfg(feature = "memcached")]
fn memcached_configuration_errors_hide_secrets() {
    for url in [
        "memcache://user:hunter2@127.0.0.1:1",
        "127.0.0.1:1, memcache://:hunter2@h:2",
        "redis://user:hunter2@h:1",
        "memcache://u:sl4sh/pw@h:1",
        // The first address has no scheme, a later one has.
        "user:hunter2@10.0.0.1:11211, memcache://10.0.0.2:11211",
    ] {
        let e = configure_error(RegionConfig::new("dogpile.cache.memcached").argument("url", url));
        assert_hidden(&e);
        assert!(e.starts_with("arguments.url: "), "{e}");
        assert!(e.contains("***@"), "{e}");
    }
}

#[test]
fn config_map_errors_hide_secrets() {
    let mut map = config_map();
    map[0] = ("cache.backend", "dogpile.cache.memory");
    let e = make_region()
        .build()
        .configure_from_config(map.iter().copied(), "cache.")
        .unwrap_err()
        .to_string();
    assert_hidden(&e);
}

/// A `redis-server` that asks for `password`.
#[cfg(feature = "redis")]
fn redis_with_password(password: &'static str) -> Option<support::Server> {
    support::Server::start("redis-server", move |port| {
        let mut args = support::redis_args(port);
        args.extend(["--requirepass".to_owned(), password.to_owned()]);
        args
    })
}

#[test]
#[cfg(feature = "redis")]
fn a_password_is_taken_as_written() {
    for password in ["0123", "1e3", "none", "True"] {
        let Some(server) = redis_with_password(password) else {
            return;
        };
        let port = server.port.to_string();
        let map = [
            ("c.backend", "dogpile.cache.redis"),
            ("c.arguments.host", "127.0.0.1"),
            ("c.arguments.port", port.as_str()),
            ("c.arguments.password", password),
            ("c.arguments.socket_timeout", "5"),
        ];
        let region = make_region().build();
        region
            .configure_from_config(map, "c.")
            .unwrap_or_else(|e| panic!("password {password:?}: {e}"));
        region
            .set("k", 1u32)
            .unwrap_or_else(|e| panic!("password {password:?}: {e}"));
        assert_eq!(region.get::<u32>("k").unwrap(), Some(1), "{password:?}");
    }
}
