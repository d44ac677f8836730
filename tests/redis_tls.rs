//! The Redis backend over TLS (issue 14), against a `redis-server` that speaks only TLS, on a
//! free loopback port, with certificates the test makes itself (`openssl`):
//!
//! * values and the distributed lock over `rediss://`, configured from a config map in
//!   dogpile's layout (`arguments.connection_kwargs.ssl_ca_certs`), and through `ssl = true`;
//! * two OS processes on one cold key over TLS: one creation;
//! * a certificate that does not verify (another CA, another host name) is an error at the first
//!   call that says so, never a plain-text fallback; `ssl_cert_reqs = none` and
//!   `ssl_check_hostname = false` loosen exactly what they say.
//!
//! Without `redis-server` or `openssl` the tests print SKIPPED and pass, unless
//! `DOGPILE_REQUIRE_SERVERS=1`.
#![cfg(feature = "redis")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use dogpile::{CacheRegion, RegionConfig};
use support::{child_role, spawn_child, Server, TlsFiles};

/// A region on `server` over TLS, configured from a config map as a Python service's would be.
fn region_from_map(
    server: &Server,
    ca: &str,
    more: &[(&str, String)],
) -> dogpile::Result<CacheRegion> {
    let mut map = vec![
        ("cache.redis.backend", "dogpile.cache.redis".to_owned()),
        ("cache.redis.expiration_time", "60".to_owned()),
        (
            "cache.redis.arguments.url",
            format!("rediss://127.0.0.1:{}/0", server.port),
        ),
        (
            "cache.redis.arguments.connection_kwargs.ssl_ca_certs",
            ca.to_owned(),
        ),
        ("cache.redis.arguments.socket_timeout", "5".to_owned()),
    ];
    map.extend(more.iter().cloned());
    let region = dogpile::make_region().build();
    region.configure_from_config(map, "cache.redis.")?;
    Ok(region)
}

#[test]
fn values_and_the_lock_over_tls() {
    let Some(tls) = TlsFiles::make("redis-tls-values") else {
        return;
    };
    let Some(server) = tls.redis_server("server") else {
        return;
    };
    let region = Arc::new(
        region_from_map(
            &server,
            &tls.path("ca.pem"),
            &[("cache.redis.arguments.distributed_lock", "true".to_owned())],
        )
        .unwrap(),
    );
    region.set("k", "over tls".to_string()).unwrap();
    assert_eq!(
        region.get::<String>("k").unwrap().as_deref(),
        Some("over tls")
    );
    region.set_multi([("a", 1u32), ("b", 2)]).unwrap();
    assert_eq!(
        region.get_multi::<u32, _>(&["a", "b", "c"]).unwrap(),
        [Some(1), Some(2), None]
    );
    region.delete("k").unwrap();
    assert_eq!(region.get::<String>("k").unwrap(), None);
    // Eight threads on one cold key, under the distributed lock over TLS: one creation.
    let (values, creations) =
        support::threads_on_one_cold_key(&region, 8, Duration::from_millis(200), 7u32);
    assert_eq!(values, [7; 8]);
    assert_eq!(creations, 1);
    assert!(!region.key_is_locked("cold").unwrap());
    // The async path speaks TLS too.
    support::async_round_trip(&region);
}

#[test]
fn ssl_true_turns_a_redis_url_into_tls() {
    let Some(tls) = TlsFiles::make("redis-tls-ssl") else {
        return;
    };
    let Some(server) = tls.redis_server("server") else {
        return;
    };
    let region = dogpile::make_region()
        .configure(
            RegionConfig::new("dogpile.cache.redis")
                .argument("url", format!("redis://127.0.0.1:{}", server.port))
                .argument("ssl", true)
                .argument("connection_kwargs.ssl_ca_certs", tls.path("ca.pem"))
                .argument("socket_timeout", 5),
        )
        .unwrap();
    region.set("k", 1u8).unwrap();
    assert_eq!(region.get::<u8>("k").unwrap(), Some(1));
    // Without ssl, the same URL speaks plain text to a TLS port: an error, never a value.
    let plain = dogpile::make_region()
        .configure(
            RegionConfig::new("dogpile.cache.redis")
                .argument("url", format!("redis://127.0.0.1:{}", server.port))
                .argument("socket_timeout", 2),
        )
        .unwrap();
    assert!(plain.get::<u8>("k").is_err());
}

#[test]
fn a_certificate_that_does_not_verify_is_an_error_that_says_so() {
    let Some(tls) = TlsFiles::make("redis-tls-verify") else {
        return;
    };
    let Some(server) = tls.redis_server("server") else {
        return;
    };
    // Another CA signed nothing of this server's.
    let region = region_from_map(&server, &tls.path("other-ca.pem"), &[]).unwrap();
    let err = region.get::<u8>("k").unwrap_err().to_string();
    assert!(
        err.contains("dogpile.cache.redis at 127.0.0.1") && err.contains("certificate"),
        "{err}"
    );
    // ssl_cert_reqs = none: no verification at all (redis-py's CERT_NONE).
    let loose = region_from_map(
        &server,
        &tls.path("other-ca.pem"),
        &[(
            "cache.redis.arguments.connection_kwargs.ssl_cert_reqs",
            "none".to_owned(),
        )],
    )
    .unwrap();
    loose.set("k", 3u8).unwrap();
    assert_eq!(loose.get::<u8>("k").unwrap(), Some(3));

    // A certificate of the right CA for another host name.
    let Some(misnamed) = tls.redis_server("misnamed") else {
        return;
    };
    let region = region_from_map(&misnamed, &tls.path("ca.pem"), &[]).unwrap();
    let err = region.get::<u8>("k").unwrap_err().to_string();
    assert!(err.contains("certificate"), "{err}");
    // ssl_check_hostname = false: the CA is checked, the name is not.
    let any_name = region_from_map(
        &misnamed,
        &tls.path("ca.pem"),
        &[(
            "cache.redis.arguments.connection_kwargs.ssl_check_hostname",
            "false".to_owned(),
        )],
    )
    .unwrap();
    any_name.set("k", 4u8).unwrap();
    assert_eq!(any_name.get::<u8>("k").unwrap(), Some(4));
    let wrong_ca_any_name = region_from_map(
        &misnamed,
        &tls.path("other-ca.pem"),
        &[(
            "cache.redis.arguments.connection_kwargs.ssl_check_hostname",
            "false".to_owned(),
        )],
    )
    .unwrap();
    assert!(wrong_ca_any_name.get::<u8>("k").is_err());
}

/// The child side: eight threads on one cold key over TLS, each creation a line in a log file
/// both processes append to.
fn child_creates(port: &str, ca: &str, log: &std::path::Path) {
    let region = Arc::new(
        dogpile::make_region()
            .configure(
                RegionConfig::new("dogpile.cache.redis")
                    .expiration_time(60)
                    .argument("url", format!("rediss://127.0.0.1:{port}"))
                    .argument("connection_kwargs.ssl_ca_certs", ca)
                    .argument("socket_timeout", 5)
                    .argument("distributed_lock", true),
            )
            .unwrap(),
    );
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (region, log) = (region.clone(), log.to_owned());
            std::thread::spawn(move || {
                region
                    .get_or_create("cold", || {
                        support::append_line(&log, "created");
                        // Long enough that both processes' callers arrive while it runs.
                        std::thread::sleep(Duration::from_millis(1000));
                        "fresh".to_string()
                    })
                    .unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), "fresh");
    }
}

/// Two OS processes, eight threads each, on one cold key, over TLS: one creation.
#[test]
fn two_processes_over_tls_create_once() {
    if child_role().is_some() {
        let port = std::env::var("DOGPILE_TEST_PORT").unwrap();
        let ca = std::env::var("DOGPILE_TEST_CA").unwrap();
        return child_creates(&port, &ca, &support::env_path("DOGPILE_TEST_LOG"));
    }
    let Some(tls) = TlsFiles::make("redis-tls-stampede") else {
        return;
    };
    let Some(server) = tls.redis_server("server") else {
        return;
    };
    let log = tls.path("creations.log");
    let envs = [
        ("DOGPILE_TEST_PORT", server.port.to_string()),
        ("DOGPILE_TEST_CA", tls.path("ca.pem")),
        ("DOGPILE_TEST_LOG", log.clone()),
    ];
    let mut children: Vec<_> = (0..2)
        .map(|_| spawn_child("two_processes_over_tls_create_once", "creator", &envs))
        .collect();
    for c in &mut children {
        let status = support::wait_child(c, "a TLS stampede child");
        assert!(status.success(), "a child process failed");
    }
    let created = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        created.lines().count(),
        1,
        "creations over TLS: {created:?}"
    );
    let region = region_from_map(&server, &tls.path("ca.pem"), &[]).unwrap();
    assert_eq!(
        region.get::<String>("cold").unwrap().as_deref(),
        Some("fresh")
    );
}
