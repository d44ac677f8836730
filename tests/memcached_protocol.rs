//! The memcached client against servers that misbehave (issue 13 items 2, 4, 6): garbage,
//! truncated values, a connection closed mid-reply, values for keys not asked for. Each is an
//! error of that call naming the server, the connection is dropped and replaced, and nothing
//! panics. Also: batches are one round trip per server, sent to every server at once.
#![cfg(feature = "memcached")]

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dogpile::backend::memcached::MemcachedBackend;
use dogpile::config::Arguments;
use dogpile::{CacheRegion, RegionConfig};
use support::fault_proxy::{Fault, FaultProxy};
use support::{within, Server};

/// What the fake server sends after each request line: the bytes, and whether it then closes.
#[derive(Clone)]
struct Script {
    reply: Vec<u8>,
    close: bool,
}

/// A loopback server that answers every request line with a scripted reply.
struct FakeServer {
    addr: String,
    script: Arc<Mutex<Script>>,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FakeServer {
    fn start() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let script = Arc::new(Mutex::new(Script {
            reply: b"END\r\n".to_vec(),
            close: false,
        }));
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (script, accepted, stop) = (script.clone(), accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            accepted.fetch_add(1, Ordering::AcqRel);
                            let (script, stop) = (script.clone(), stop.clone());
                            std::thread::spawn(move || serve(conn, &script, &stop));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            });
        }
        FakeServer {
            addr,
            script,
            accepted,
            stop,
        }
    }

    fn answer(&self, reply: &[u8], close: bool) {
        *self.script.lock().unwrap() = Script {
            reply: reply.to_vec(),
            close,
        };
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Acquire)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn serve(mut conn: TcpStream, script: &Mutex<Script>, stop: &AtomicBool) {
    conn.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut pending = Vec::new();
    while !stop.load(Ordering::Acquire) {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(_) => continue,
        }
        // One answer per request line (the requests here are one-line gets).
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            pending.drain(..=nl);
            let s = script.lock().unwrap().clone();
            if conn.write_all(&s.reply).is_err() {
                return;
            }
            if s.close {
                return;
            }
        }
    }
}

fn region(addr: &str, socket_timeout: f64) -> CacheRegion {
    dogpile::make_region()
        .configure(
            RegionConfig::new("dogpile.cache.memcached")
                .expiration_time(60)
                .argument("url", addr)
                .argument("socket_timeout", socket_timeout),
        )
        .unwrap()
}

/// The bad replies, each with what its error must say.
fn bad_replies() -> Vec<(&'static str, Vec<u8>, bool)> {
    vec![
        ("garbage", b"HELLO WORLD\r\n".to_vec(), false),
        ("a truncated value", b"VALUE k 0 10\r\nabc".to_vec(), true),
        ("a close before any reply", Vec::new(), true),
        ("a close mid-line", b"VALU".to_vec(), true),
        (
            "a value not ended by CRLF",
            b"VALUE k 0 3\r\nabcXY".to_vec(),
            false,
        ),
        (
            "a value for a key not asked for",
            b"VALUE other 0 3\r\nabc\r\nEND\r\n".to_vec(),
            false,
        ),
        ("bytes after the reply", b"END\r\nEND\r\n".to_vec(), false),
        (
            "an absurd length",
            b"VALUE k 0 99999999999999\r\n".to_vec(),
            false,
        ),
        ("a line without end", vec![b'x'; 20_000], false),
        (
            "a server error",
            b"SERVER_ERROR out of memory\r\n".to_vec(),
            false,
        ),
        ("a bare newline", b"END\n".to_vec(), false),
    ]
}

#[test]
fn a_server_that_misbehaves_is_an_error_and_its_connection_is_replaced() {
    let fake = Arc::new(FakeServer::start());
    let region = Arc::new(region(&fake.addr, 0.5));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = Arc::new(runtime);
    for (what, reply, close) in bad_replies() {
        for asynchronous in [false, true] {
            // A good call first, so a pooled connection exists.
            fake.answer(b"END\r\n", false);
            let (r, rt) = (region.clone(), runtime.clone());
            let got = within("a good get", move || {
                if asynchronous {
                    rt.block_on(r.get_async::<u32>("k"))
                } else {
                    r.get::<u32>("k")
                }
            });
            assert_eq!(got.unwrap(), None);

            fake.answer(&reply, close);
            let (r, rt) = (region.clone(), runtime.clone());
            let got = within(what, move || {
                if asynchronous {
                    rt.block_on(r.get_async::<u32>("k"))
                } else {
                    r.get::<u32>("k")
                }
            });
            let err = got.expect_err(what).to_string();
            assert!(err.contains(&fake.addr), "{what}: {err}");

            // The next call works, on a new connection: the broken one was not reused.
            fake.answer(b"END\r\n", false);
            let before = fake.accepted();
            let (r, rt) = (region.clone(), runtime.clone());
            let got = within("a get after a bad reply", move || {
                if asynchronous {
                    rt.block_on(r.get_async::<u32>("k"))
                } else {
                    r.get::<u32>("k")
                }
            });
            assert_eq!(got.unwrap(), None, "{what}");
            assert!(
                fake.accepted() > before,
                "{what}: the bad connection was reused"
            );
        }
    }
    // A decorated function (here get_or_create) falls back to its body, never panics.
    fake.answer(b"HELLO\r\n", false);
    let r = region.clone();
    match within("get_or_create on garbage", move || {
        r.get_or_create("k", || 5u32)
    }) {
        Ok(v) => assert_eq!(v, 5),
        Err(e) => assert!(e.to_string().contains(&fake.addr), "{e}"),
    }
}

#[test]
fn batch_writes_are_one_round_trip_and_batch_reads_go_to_every_server_at_once() {
    let Some(a) = Server::memcached() else {
        return;
    };
    let Some(b) = Server::memcached() else {
        return;
    };
    let (pa, pb) = (FaultProxy::start(&a.addr()), FaultProxy::start(&b.addr()));
    let region = Arc::new(region(&format!("{},{}", pa.addr(), pb.addr()), 10.0));
    let keys: Vec<String> = (0..100).map(|i| format!("key:{i}")).collect();
    let backend =
        MemcachedBackend::from_arguments(&Arguments::new().with("url", vec![pa.addr(), pb.addr()]))
            .unwrap();
    assert!(keys.iter().any(|k| backend.server_for(k) == pa.addr()));
    assert!(keys.iter().any(|k| backend.server_for(k) == pb.addr()));
    // Connections made before the latency, so connecting costs nothing below.
    region
        .set_multi(keys.iter().map(|k| (k.as_str(), 0u32)))
        .unwrap();
    region.get_multi::<u32, _>(&keys).unwrap();

    // Each way now takes 500 ms on both servers: one round trip is about a second.
    pa.set(Fault::Latency(Duration::from_millis(500)));
    pb.set(Fault::Latency(Duration::from_millis(500)));
    let timed = |what: &'static str, f: Box<dyn FnOnce() + Send>| {
        within(what, move || {
            let start = Instant::now();
            f();
            start.elapsed()
        })
    };
    let (r, k) = (region.clone(), keys.clone());
    let set = timed(
        "set_multi",
        Box::new(move || {
            r.set_multi(k.iter().enumerate().map(|(i, k)| (k.as_str(), i as u32)))
                .unwrap()
        }),
    );
    let (r, k) = (region.clone(), keys.clone());
    let get = timed(
        "get_multi",
        Box::new(move || {
            assert_eq!(
                r.get_multi::<u32, _>(&k).unwrap(),
                (0..100).map(Some).collect::<Vec<_>>()
            )
        }),
    );
    let (r, k) = (region.clone(), keys.clone());
    let delete = timed(
        "delete_multi",
        Box::new(move || r.delete_multi(&k).unwrap()),
    );
    // Two servers one after another would take two round trips (~2 s), a loop over the keys
    // a hundred (~100 s): one round trip for both servers at once is ~1 s.
    for (what, took) in [
        ("set_multi", set),
        ("get_multi", get),
        ("delete_multi", delete),
    ] {
        assert!(took < Duration::from_millis(1800), "{what} took {took:?}");
    }
    pa.set(Fault::Pass);
    pb.set(Fault::Pass);
    assert!(region
        .get_multi::<u32, _>(&keys)
        .unwrap()
        .iter()
        .all(Option::is_none));
}

#[test]
fn pymemcache_placement_stores_each_key_where_it_says() {
    let Some(a) = Server::memcached() else {
        return;
    };
    let Some(b) = Server::memcached() else {
        return;
    };
    let both = vec![a.addr(), b.addr()];
    let args = |url: Vec<String>| {
        Arguments::new()
            .with("url", url)
            .with("key_placement", "pymemcache")
    };
    let placed = MemcachedBackend::from_arguments(&args(both.clone())).unwrap();
    let region = dogpile::make_region()
        .configure(
            RegionConfig::new("dogpile.cache.memcached")
                .argument("url", both.clone())
                .argument("key_placement", "pymemcache"),
        )
        .unwrap();
    let keys: Vec<String> = (0..100).map(|i| format!("user:{i}")).collect();
    region
        .set_multi(keys.iter().map(|k| (k.as_str(), 1u8)))
        .unwrap();
    let mut per_server = [0; 2];
    for k in &keys {
        let home = placed.server_for(k);
        for (i, addr) in both.iter().enumerate() {
            let line = support::memcached_line(addr, format!("mg {k}\r\n").as_bytes());
            let here = line == "HD\r\n";
            assert_eq!(here, home == addr, "{k} on {addr}: {line:?}");
            per_server[i] += usize::from(here);
        }
    }
    assert!(per_server.iter().all(|n| *n > 20), "{per_server:?}");
    let err = dogpile::make_region()
        .configure(
            RegionConfig::new("dogpile.cache.memcached")
                .argument("url", both)
                .argument("key_placement", "ketama"),
        )
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "arguments.key_placement: expected \"dogpile\" or \"pymemcache\", got \"ketama\""
    );
}

#[test]
fn large_batches_and_values_round_trip() {
    let Some(server) = Server::memcached() else {
        return;
    };
    let region = region(&server.addr(), 5.0);
    // 3,000 keys of 200 bytes: one `get` line of 600 kB (memcached reads multigets unbounded).
    let keys: Vec<String> = (0..3000).map(|i| format!("{i:0>200}")).collect();
    region
        .set_multi(keys.iter().enumerate().map(|(i, k)| (k.as_str(), i as u32)))
        .unwrap();
    assert_eq!(
        region.get_multi::<u32, _>(&keys).unwrap(),
        (0..3000).map(Some).collect::<Vec<_>>()
    );
    // Values larger than the receive buffer, one and several at once.
    let big: Vec<String> = (0..5).map(|i| i.to_string().repeat(300_000)).collect();
    for (i, v) in big.iter().enumerate() {
        region.set(&format!("big{i}"), v.clone()).unwrap();
    }
    assert_eq!(
        region.get::<String>("big0").unwrap().as_ref(),
        Some(&big[0])
    );
    let names: Vec<String> = (0..5).map(|i| format!("big{i}")).collect();
    let got = region.get_multi::<String, _>(&names).unwrap();
    assert_eq!(got, big.into_iter().map(Some).collect::<Vec<_>>());
    region.delete_multi(&keys).unwrap();
    assert_eq!(region.get::<u32>(&keys[0]).unwrap(), None);
}
