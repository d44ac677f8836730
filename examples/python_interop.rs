//! One Redis cache shared with Python dogpile.cache services.
//!
//! A Rust region reads and writes entries exactly as Python dogpile 1.x does when it is
//! configured with the Python side's serializer (`Pickle`, dogpile's default on Redis, or
//! `Json`) and `WireFormat::Python` (`{"ct": …, "v": 2}|payload`); the distributed lock already
//! speaks the same protocol (`_lock` + key, a token, `SET NX PX`, compare-and-delete), so the two
//! sides have one creator per key between them. A decorated Rust function can use the key a
//! decorated Python function uses with a `key` template.
//!
//! ```text
//! DOGPILE_REDIS_URL=redis://127.0.0.1:6379/0 cargo run --example python_interop --features redis
//! ```
//!
//! With a Python that has `dogpile.cache` (`DOGPILE_PYTHON`, default `python3`), the example also
//! runs the Python side: Python reads what Rust wrote, and Rust reads what Python wrote. Without
//! one it prints the Python to run. It deletes what it wrote.

use std::process::Command;

use dogpile::codec::WireFormat;
use dogpile::serializer::Pickle;
use dogpile::{cache_on_arguments, CacheRegion, RegionConfig};

static REGION: CacheRegion = CacheRegion::new();

/// The twin of Python's
///
/// ```python
/// @region.cache_on_arguments(namespace="ns")
/// def load_user(user_id, lang): ...
/// ```
///
/// in a module run as `__main__`: Python's key is `__main__:load_user|ns|7 en`, and the
/// template spells it.
#[cache_on_arguments(region = REGION, key = "__main__:load_user|ns|{user_id} {lang}")]
fn load_user(user_id: u32, lang: &str) -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::from([
        ("id".to_string(), user_id.to_string()),
        ("lang".to_string(), lang.to_string()),
        ("made_by".to_string(), "rust".to_string()),
    ])
}

/// What the Python side runs: the same region, as a Python service configures it.
fn python_side(host: &str, port: u16) -> String {
    format!(
        r#"
from dogpile.cache import make_region
region = make_region().configure(
    "dogpile.cache.redis", expiration_time=600,
    arguments={{"host": "{host}", "port": {port}, "distributed_lock": True, "thread_local_lock": False}},
)
print("python read:", region.get("interop:from-rust"))
region.set("interop:from-python", [1, 2, 3])
@region.cache_on_arguments(namespace="ns")
def load_user(user_id, lang):
    return {{"id": str(user_id), "lang": lang, "made_by": "python"}}
print("python load_user(7, 'en'):", load_user(7, "en"))
"#
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("DOGPILE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    REGION.configure(
        RegionConfig::new("dogpile.cache.redis")
            .expiration_time(600)
            .argument("url", url.clone())
            .argument("distributed_lock", true)
            .argument("socket_timeout", 2)
            .serializer(Pickle)
            .wire_format(WireFormat::Python),
    )?;
    if let Err(e) = REGION.set("interop:from-rust", "written by Rust".to_string()) {
        eprintln!("no Redis at {url} ({e}); start one with `redis-server --port 6379` or set DOGPILE_REDIS_URL");
        return Ok(());
    }
    let mut con = redis::Client::open(url.as_str())?.get_connection()?;
    let raw: Vec<u8> = redis::cmd("GET").arg("interop:from-rust").query(&mut con)?;
    println!(
        "what Python dogpile reads: {}",
        String::from_utf8_lossy(&raw).escape_debug()
    );

    let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())?;
    let (host, port) = match info.addr() {
        redis::ConnectionAddr::Tcp(h, p) => (h.clone(), *p),
        _ => ("127.0.0.1".to_string(), 6379),
    };
    let python = std::env::var("DOGPILE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = python_side(&host, port);
    match Command::new(&python).args(["-c", &script]).output() {
        Ok(out) if out.status.success() => {
            print!("{}", String::from_utf8_lossy(&out.stdout));
            println!(
                "rust read: {:?}",
                REGION.get::<Vec<i64>>("interop:from-python")?
            );
            println!(
                "rust load_user(7, \"en\"): {:?} (Python's entry)",
                load_user(7, "en")
            );
        }
        _ => {
            println!(
                "no Python with dogpile.cache here ({python}); the Python side to run:{script}"
            );
            println!("rust load_user(7, \"en\"): {:?}", load_user(7, "en"));
        }
    }
    REGION.delete_multi(&[
        "interop:from-rust",
        "interop:from-python",
        "__main__:load_user|ns|7 en",
    ])?;
    Ok(())
}
