//! A loopback TCP proxy that injects network faults between a client and a server, switched at
//! run time: added latency, connections reset or closed, a reply lost with its connection, and a
//! blackhole that accepts and never answers (bytes are held, as a frozen server or a lossy link
//! holds them, and flow again once the fault is lifted).
//!
//! ```ignore
//! let server = Server::redis()?;
//! let proxy = FaultProxy::start(&server.addr());
//! // point the client at proxy.addr() …
//! proxy.set(Fault::Blackhole); // calls now get no answer
//! proxy.set(Fault::Pass);      // and flow again
//! ```
//!
//! It listens on 127.0.0.1 only, on a free port, and stops (closing every connection) when
//! dropped. Each connection is two pump threads that look at the fault between reads, so a
//! change takes effect within a few milliseconds.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards bytes both ways as they come.
    Pass,
    /// Forwards each chunk of bytes after this delay, both ways.
    Latency(Duration),
    /// Accepts and never answers: nothing is forwarded either way while it lasts; held bytes flow
    /// once the fault changes.
    Blackhole,
    /// Resets (TCP RST) every live connection now, and every new one as soon as it is accepted.
    Reset,
    /// Closes (TCP FIN) every live connection now, and every new one as soon as it is accepted.
    Close,
    /// Once: the next bytes the server sends are dropped and their connection closed (TCP FIN)
    /// both ways, so the server carried out a request whose client never hears of it; then
    /// the fault is `Pass` again.
    LoseNextReply,
}

/// How often a pump looks at the fault while it has nothing to read.
const TICK: Duration = Duration::from_millis(5);

struct Shared {
    fault: Mutex<Fault>,
    /// Bumped when a fault that ends connections is set: a connection older than this ends.
    cut_epoch: AtomicU64,
    /// The epoch a new connection is born in.
    epoch: AtomicU64,
    stop: AtomicBool,
    live: AtomicUsize,
    accepted: AtomicUsize,
}

/// The proxy; see the module docs.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on a free 127.0.0.1 port that forwards to `upstream` (`host:port`, which
    /// must be a loopback address).
    pub fn start(upstream: &str) -> FaultProxy {
        let upstream = upstream.to_string();
        assert!(
            upstream.starts_with("127.") || upstream.starts_with("localhost:"),
            "the fault proxy forwards to loopback only, not {upstream}"
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fault proxy");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            fault: Mutex::new(Fault::Pass),
            cut_epoch: AtomicU64::new(0),
            epoch: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            live: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
        });
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name(format!("fault-proxy-{port}"))
            .spawn(move || accept_loop(listener, &upstream, &s))
            .unwrap();
        FaultProxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:PORT`: where clients connect.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Switches the fault; `Reset` and `Close` also end every live connection at once.
    pub fn set(&self, fault: Fault) {
        let mut f = self.shared.fault.lock();
        *f = fault;
        if matches!(fault, Fault::Reset | Fault::Close) {
            let now = self.shared.epoch.fetch_add(1, Ordering::AcqRel);
            self.shared.cut_epoch.store(now, Ordering::Release);
        }
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        *self.shared.fault.lock()
    }

    /// Connections open through the proxy now.
    pub fn live_connections(&self) -> usize {
        self.shared.live.load(Ordering::Acquire)
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::Acquire)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn accept_loop(listener: TcpListener, upstream: &str, shared: &Arc<Shared>) {
    let mut pumps: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((client, _)) => {
                shared.accepted.fetch_add(1, Ordering::AcqRel);
                let _ = client.set_nonblocking(false);
                match *shared.fault.lock() {
                    Fault::Reset => {
                        reset(&client);
                        continue;
                    }
                    Fault::Close => {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    _ => {}
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    // Nothing upstream: the client sees its connection closed.
                    continue;
                };
                let epoch = shared.epoch.load(Ordering::Acquire);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                shared.live.fetch_add(1, Ordering::AcqRel);
                let conn = Arc::new(Conn {
                    client,
                    server,
                    epoch,
                    ended: AtomicBool::new(false),
                    pumps_left: AtomicUsize::new(2),
                });
                for to_server in [true, false] {
                    let (conn, shared) = (conn.clone(), shared.clone());
                    pumps.push(std::thread::spawn(move || pump(&conn, to_server, &shared)));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(TICK),
            Err(_) => std::thread::sleep(TICK),
        }
        pumps.retain(|p| !p.is_finished());
    }
    for p in pumps {
        let _ = p.join();
    }
}

struct Conn {
    client: TcpStream,
    server: TcpStream,
    epoch: u64,
    ended: AtomicBool,
    pumps_left: AtomicUsize,
}

impl Conn {
    fn end(&self, rst: bool) {
        if !self.ended.swap(true, Ordering::AcqRel) {
            if rst {
                reset(&self.client);
                reset(&self.server);
            }
            let _ = self.client.shutdown(Shutdown::Both);
            let _ = self.server.shutdown(Shutdown::Both);
        }
    }
}

/// Makes the next close of `stream` send a RST instead of a FIN.
fn reset(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the descriptor is open for the call, and `linger` is a valid value of the size
    // given.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Moves bytes one way until either side closes, the fault ends the connection, or the proxy
/// stops.
fn pump(conn: &Conn, to_server: bool, shared: &Shared) {
    let (mut from, mut to) = if to_server {
        (&conn.client, &conn.server)
    } else {
        (&conn.server, &conn.client)
    };
    let _ = from.set_read_timeout(Some(TICK));
    let mut buf = vec![0u8; 64 * 1024];
    let mut held: Vec<u8> = Vec::new();
    loop {
        if shared.stop.load(Ordering::Acquire) || conn.ended.load(Ordering::Acquire) {
            break;
        }
        if conn.epoch <= shared.cut_epoch.load(Ordering::Acquire) {
            let rst = matches!(*shared.fault.lock(), Fault::Reset);
            conn.end(rst);
            break;
        }
        let fault = *shared.fault.lock();
        if fault == Fault::Blackhole {
            // Hold everything: read nothing more than fits, forward nothing.
            if held.len() < 1 << 20 {
                match from.read(&mut buf) {
                    Ok(0) => {
                        conn.end(false);
                        break;
                    }
                    Ok(n) => held.extend_from_slice(&buf[..n]),
                    Err(e) if is_timeout(&e) => {}
                    Err(_) => {
                        conn.end(false);
                        break;
                    }
                }
            } else {
                std::thread::sleep(TICK);
            }
            continue;
        }
        if !held.is_empty() {
            if to.write_all(&held).is_err() {
                conn.end(false);
                break;
            }
            held.clear();
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                break;
            }
            Ok(n) => {
                if !to_server {
                    let mut fault = shared.fault.lock();
                    if *fault == Fault::LoseNextReply {
                        *fault = Fault::Pass;
                        drop(fault);
                        conn.end(false);
                        break;
                    }
                }
                // The fault as it is now, not as it was when the read began.
                let fault_now = *shared.fault.lock();
                if let Fault::Latency(d) = fault_now {
                    std::thread::sleep(d);
                }
                if *shared.fault.lock() == Fault::Blackhole {
                    held.extend_from_slice(&buf[..n]);
                    continue;
                }
                if to.write_all(&buf[..n]).is_err() {
                    conn.end(false);
                    break;
                }
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => {
                conn.end(false);
                break;
            }
        }
    }
    if conn.pumps_left.fetch_sub(1, Ordering::AcqRel) == 1 {
        conn.end(false);
        shared.live.fetch_sub(1, Ordering::AcqRel);
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
        || e.kind() == ErrorKind::Interrupted
}
