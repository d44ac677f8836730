//! The usage guide's recipe "Prefixing all keys in Redis": a key mangler that puts `myapp:dogpile:` in
//! front of every key the region sends to its backend, so dogpile's entries cannot collide with
//! keys your own code keeps on the same server. The mangler applies to `region.get` / `set` /
//! `delete` and to the keys of `#[cache_on_arguments]` functions alike; callers keep using the
//! short keys.
//!
//! A proxy prints each key as the backend receives it, so the prefix is visible on any backend:
//!
//! - `cargo run --example key_prefix`: on the in-process memory backend;
//! - `DOGPILE_REDIS_URL=redis://127.0.0.1:6379/0 cargo run --example key_prefix --features redis`:
//!   on that Redis server, where it also checks with a plain Redis client which keys exist, and
//!   deletes what it wrote. With no server there, it says how to start one and exits.

use std::sync::LazyLock;

use dogpile::{cache_on_arguments, Backend, CacheRegion, CachedValue, ProxyBackend, RegionConfig};

const PREFIX: &str = "myapp:dogpile:";

/// The usage guide's `key_mangler=lambda key: "myapp:dogpile:" + key`.
fn prefix_keys(key: &str) -> String {
    format!("{PREFIX}{key}")
}

static REGION: LazyLock<CacheRegion> = LazyLock::new(|| {
    dogpile::make_region()
        .name("myapp")
        .key_mangler(prefix_keys)
        .build()
});

#[cache_on_arguments(region = REGION, namespace = "demo")]
fn greeting(name: &str) -> String {
    format!("hello, {name}")
}

/// Prints every key that reaches the backend: proxies sit after the key mangler.
struct ShowKeys;

impl ProxyBackend for ShowKeys {
    fn get(&self, proxied: &dyn Backend, key: &str) -> dogpile::Result<Option<CachedValue>> {
        println!("    backend get    {key}");
        proxied.get(key)
    }

    fn set(&self, proxied: &dyn Backend, key: &str, value: CachedValue) -> dogpile::Result<()> {
        println!("    backend set    {key}");
        proxied.set(key, value)
    }

    fn delete(&self, proxied: &dyn Backend, key: &str) -> dogpile::Result<()> {
        println!("    backend delete {key}");
        proxied.delete(key)
    }
}

/// The Redis URL to use, when there is one and this build can use it.
fn redis_url() -> Option<String> {
    let url = std::env::var("DOGPILE_REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())?;
    if cfg!(feature = "redis") {
        Some(url)
    } else {
        println!("DOGPILE_REDIS_URL is set, but this build has no Redis backend: add `--features redis`.");
        None
    }
}

fn main() -> dogpile::Result<()> {
    let redis = redis_url();
    let config = match &redis {
        Some(url) => {
            println!("backend: dogpile.cache.redis at {url}");
            RegionConfig::new("dogpile.cache.redis")
                .argument("url", url.as_str())
                // Fail fast when nothing listens there.
                .argument("socket_connect_timeout", 2)
                .argument("socket_timeout", 2)
        }
        None => {
            if cfg!(feature = "redis") {
                println!("backend: dogpile.cache.memory (set DOGPILE_REDIS_URL to use Redis)");
            } else {
                println!("backend: dogpile.cache.memory (set DOGPILE_REDIS_URL and add `--features redis` to use Redis)");
            }
            RegionConfig::new("dogpile.cache.memory")
        }
    };
    REGION.configure(config.expiration_time(600).wrap(ShowKeys))?;

    println!("region.set(\"answer\", 42):");
    if let Err(e) = REGION.set("answer", 42u32) {
        if let (Some(url), true) = (&redis, e.is_backend()) {
            println!("No Redis server answered at {url}: {e}");
            println!("Start one, for example `redis-server --port 6379 --save ''` (or `docker run --rm -p 6379:6379 redis`),");
            println!("then run: DOGPILE_REDIS_URL=redis://127.0.0.1:6379/0 cargo run --example key_prefix --features redis");
            return Ok(());
        }
        return Err(e);
    }
    println!("region.get::<u32>(\"answer\"):");
    let answer = REGION.get::<u32>("answer")?;
    println!("  = {answer:?}");

    println!("greeting(\"ada\"), a #[cache_on_arguments] function, twice:");
    let first = greeting("ada");
    let second = greeting("ada");
    println!("  = {first:?}, then {second:?} (a hit)");

    if let Some(url) = &redis {
        show_on_redis(url);
    }

    println!("cleaning up:");
    REGION.delete("answer")?;
    greeting_invalidate("ada");
    Ok(())
}

/// Asks Redis itself, with a plain client, which of the two spellings of each key exists.
fn show_on_redis(url: &str) {
    let keys = ["answer", "key_prefix:greeting|demo|ada"];
    let checked = redis::Client::open(url)
        .and_then(|client| client.get_connection())
        .and_then(|mut con| {
            keys.iter()
                .flat_map(|k| [k.to_string(), prefix_keys(k)])
                .map(|k| {
                    let exists: bool = redis::cmd("EXISTS").arg(&k).query(&mut con)?;
                    Ok((k, exists))
                })
                .collect::<redis::RedisResult<Vec<_>>>()
        });
    match checked {
        Ok(found) => {
            println!("on the Redis server (EXISTS, with a plain client):");
            for (key, exists) in found {
                println!("  {key:<44} {}", if exists { "exists" } else { "-" });
            }
        }
        Err(e) => println!("could not look at the server with a plain client: {e}"),
    }
}
