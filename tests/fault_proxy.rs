//! The fault proxy of tests/support does what it says: forwards, delays, holds and cuts.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use support::fault_proxy::{Fault, FaultProxy};

/// An echo server on a free loopback port; runs until the test process ends.
fn echo_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn round_trip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got)?;
    Ok(got)
}

#[test]
fn forwards_delays_holds_and_cuts() {
    let proxy = FaultProxy::start(&echo_server());
    let mut c = TcpStream::connect(proxy.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(round_trip(&mut c, b"hello").unwrap(), b"hello");

    proxy.set(Fault::Latency(Duration::from_millis(50)));
    let start = Instant::now();
    assert_eq!(round_trip(&mut c, b"slow").unwrap(), b"slow");
    assert!(
        start.elapsed() >= Duration::from_millis(50),
        "latency added"
    );

    // A blackhole answers nothing, and the held bytes flow once it is lifted.
    proxy.set(Fault::Blackhole);
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    c.write_all(b"held").unwrap();
    let mut buf = [0u8; 4];
    assert!(c.read_exact(&mut buf).is_err(), "no answer in a blackhole");
    proxy.set(Fault::Pass);
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"held");

    // A reset ends the live connection; a new one is reset while the fault lasts, and passes
    // once it is lifted.
    proxy.set(Fault::Reset);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        round_trip(&mut c, b"gone").is_err(),
        "the connection was reset"
    );
    let mut d = TcpStream::connect(proxy.addr()).unwrap();
    d.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(
        round_trip(&mut d, b"x").is_err(),
        "new connections are reset"
    );
    proxy.set(Fault::Pass);
    let mut e = TcpStream::connect(proxy.addr()).unwrap();
    e.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(round_trip(&mut e, b"back").unwrap(), b"back");

    proxy.set(Fault::Close);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        round_trip(&mut e, b"closed").is_err(),
        "the connection was closed"
    );
    assert!(proxy.accepted() >= 3);
}
