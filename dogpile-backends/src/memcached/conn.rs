//! Connections to one memcached server: a small pool of idle connections for blocking callers
//! and one for async callers, and the exchange of one request for its reply over either.
//!
//! Every operation is written once, as an `async fn` taking an [`Io`]: with `Io::Blocking` it
//! does blocking socket calls and never waits on a future (so [`block_on`] only polls it),
//! with `Io::Async` it uses `async-io` sockets and timers, which work under any executor
//! (tokio, async-std, smol, a plain `block_on`) without blocking the executor's thread.
//!
//! Every wait for the server is bounded by `socket_timeout`: connecting, each write and each
//! read. There is no bound on connections (a caller never waits for a pool slot); at most
//! [`MAX_IDLE`] idle ones are kept per server and kind. A connection whose exchange failed in
//! any way (an I/O error, a timeout, a reply that cannot be parsed, bytes after the reply) is
//! dropped, never reused: its stream may be out of step with the requests.

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use async_io::{Async, Timer};
use dogpile_core::{Error, Result};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use parking_lot::Mutex;

use super::proto::{self, Item, ProtocolError};

/// Idle connections kept per server, for each kind of caller.
pub(crate) const MAX_IDLE: usize = 16;

/// How an operation does its I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Io {
    /// Blocking socket calls on the caller's thread.
    Blocking,
    /// Non-blocking sockets and timers from `async-io`: the caller's task yields while it waits.
    Async,
}

impl Io {
    /// Sleeps for `d`: the thread, or only the task.
    pub(crate) async fn sleep(self, d: Duration) {
        match self {
            Io::Blocking => std::thread::sleep(d),
            Io::Async => {
                Timer::after(d).await;
            }
        }
    }
}

/// Runs an operation written for [`Io::Blocking`] to its end on this thread.
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    futures_lite::future::block_on(f)
}

/// What the reply handler says after one item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// The reply goes on.
    More,
    /// The reply is complete.
    Done,
}

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Connecting, writing or reading failed, or timed out, or the server closed the connection.
    Io(io::Error),
    /// The reply cannot be understood.
    Protocol(ProtocolError),
    /// The server answered with an error (`SERVER_ERROR …`, `CLIENT_ERROR …`, `ERROR`).
    Server(String),
}

impl Failure {
    /// An error line from the server.
    pub(crate) fn server(line: &[u8]) -> Failure {
        Failure::Server(format!("the server answered {}", proto::quote(line)))
    }

    /// A reply item that has no place where it came.
    pub(crate) fn unexpected(item: &Item<'_>) -> Failure {
        match item {
            Item::Error(line) => Failure::server(line),
            other => Failure::Protocol(ProtocolError(format!("unexpected reply {other:?}"))),
        }
    }

    /// Whether the connection was found broken (closed or reset by the server), as a pooled
    /// connection is after the server restarted: worth one more try on a new connection.
    fn broken(&self) -> bool {
        matches!(self, Failure::Io(e) if matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::NotConnected
        ))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Io(e) => e.fmt(f),
            Failure::Protocol(e) => e.fmt(f),
            Failure::Server(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Failure {}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

impl From<ProtocolError> for Failure {
    fn from(e: ProtocolError) -> Self {
        Failure::Protocol(e)
    }
}

/// A reply handler: called with each item until it says [`Flow::Done`]. Exchanges take any
/// handler (`H: Handler + ?Sized`), so an async exchange's future is `Send` exactly when its
/// handler is, and a blocking one may use a handler that is not.
pub(crate) trait Handler: FnMut(Item<'_>) -> std::result::Result<Flow, Failure> {}

impl<F: FnMut(Item<'_>) -> std::result::Result<Flow, Failure> + ?Sized> Handler for F {}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "no answer within socket_timeout")
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the server closed the connection",
    )
}

/// The receive buffer of a new connection: room for a batch of small values in one read.
const START_BUF: usize = 16 * 1024;
/// A buffer grown past this by a large reply is replaced by a new small one once it is read.
const KEEP_BUF: usize = 256 * 1024;

/// Bytes received and not yet parsed.
struct RecvBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl RecvBuf {
    fn new() -> Self {
        RecvBuf {
            buf: vec![0; START_BUF],
            start: 0,
            end: 0,
        }
    }

    /// Hands the complete items received so far to `f`: `Ok(true)` once it said `Done`.
    fn drain<H: Handler + ?Sized>(
        &mut self,
        f: &mut H,
        delivered: &mut usize,
    ) -> std::result::Result<bool, Failure> {
        while let Some((item, n)) = proto::parse(&self.buf[self.start..self.end])? {
            *delivered += 1;
            let flow = f(item)?;
            self.start += n;
            if flow == Flow::Done {
                if self.start != self.end {
                    return Err(Failure::Protocol(ProtocolError(format!(
                        "{} bytes after the end of the reply: {}",
                        self.end - self.start,
                        proto::quote(&self.buf[self.start..self.end])
                    ))));
                }
                self.start = 0;
                self.end = 0;
                // A large reply grew the buffer: an idle pooled connection keeps a small one.
                if self.buf.len() > KEEP_BUF {
                    self.buf = vec![0; START_BUF];
                }
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Room to read into: unparsed bytes move to the front, and the buffer doubles when full
    /// (a large value is read in as it arrives, never allocated from a length the server sent).
    fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        &mut self.buf[self.end..]
    }

    fn filled(&mut self, n: usize) {
        self.end += n;
    }
}

struct SyncConn {
    stream: TcpStream,
    rbuf: RecvBuf,
}

struct AsyncConn {
    stream: Async<TcpStream>,
    rbuf: RecvBuf,
}

enum Conn {
    Sync(SyncConn),
    Async(AsyncConn),
}

async fn with_timeout<T>(t: Duration, f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    futures_lite::future::or(f, async {
        Timer::after(t).await;
        Err(timed_out())
    })
    .await
}

/// Blocking sockets report a timeout as `WouldBlock` on Unix: say what it means.
fn sync_io(e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => timed_out(),
        _ => e,
    }
}

impl Conn {
    async fn send(&mut self, req: &[u8], timeout: Duration) -> io::Result<()> {
        match self {
            Conn::Sync(c) => c.stream.write_all(req).map_err(sync_io),
            Conn::Async(c) => with_timeout(timeout, c.stream.write_all(req)).await,
        }
    }

    async fn receive<H: Handler + ?Sized>(
        &mut self,
        f: &mut H,
        delivered: &mut usize,
        timeout: Duration,
    ) -> std::result::Result<(), Failure> {
        match self {
            Conn::Sync(c) => loop {
                if c.rbuf.drain(f, delivered)? {
                    return Ok(());
                }
                let n = c.stream.read(c.rbuf.spare()).map_err(sync_io)?;
                if n == 0 {
                    return Err(closed().into());
                }
                c.rbuf.filled(n);
            },
            Conn::Async(c) => loop {
                if c.rbuf.drain(f, delivered)? {
                    return Ok(());
                }
                let n = with_timeout(timeout, c.stream.read(c.rbuf.spare())).await?;
                if n == 0 {
                    return Err(closed().into());
                }
                c.rbuf.filled(n);
            },
        }
    }
}

/// One memcached server: its address, and its idle connections.
pub(crate) struct Server {
    /// `host:port`, as errors name the server.
    pub(crate) addr: String,
    /// What errors and logs call this server: `dogpile.cache.memcached host:port`.
    pub(crate) label: String,
    timeout: Duration,
    idle: Mutex<Vec<SyncConn>>,
    idle_async: Mutex<Vec<AsyncConn>>,
}

/// How a request reached its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Sent once, or again after a write that failed (the server read nothing of the first).
    Once,
    /// Sent twice: the pooled connection of the first broke before any of its reply arrived,
    /// so the server may have carried out the first as well. A reply that says "already there"
    /// (an add answered `NS`) may then be about the first send's own write.
    Resent,
}

/// A request written to a server, whose reply is still to be read: batches write to every
/// server first and then read each reply, so the servers work at the same time.
pub(crate) struct Sent<'a> {
    server: &'a Server,
    io: Io,
    what: &'a str,
    req: &'a [u8],
    retry: bool,
    conn: Conn,
    reused: bool,
}

impl Server {
    pub(crate) fn new(addr: String, label: String, timeout: Duration) -> Server {
        Server {
            addr,
            label,
            timeout,
            idle: Mutex::new(Vec::new()),
            idle_async: Mutex::new(Vec::new()),
        }
    }

    /// The error of `what` on this server.
    pub(crate) fn error(&self, what: &str, e: impl Into<dogpile_core::BoxError>) -> Error {
        let e = e.into();
        Error::backend(self.label.clone(), format!("{what} failed: {e}"), e)
    }

    fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        // An IP address is read without a lookup; a host name is looked up (blocking, but only
        // when a new connection is made).
        let addrs: Vec<SocketAddr> = match self.addr.parse::<SocketAddr>() {
            Ok(a) => vec![a],
            Err(_) => self.addr.to_socket_addrs()?.collect(),
        };
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the host name has no address",
            ));
        }
        Ok(addrs)
    }

    async fn connect(&self, io: Io) -> io::Result<Conn> {
        let mut last = None;
        for a in self.resolve()? {
            let made = match io {
                Io::Blocking => TcpStream::connect_timeout(&a, self.timeout)
                    .map_err(sync_io)
                    .and_then(|s| {
                        s.set_read_timeout(Some(self.timeout))?;
                        s.set_write_timeout(Some(self.timeout))?;
                        s.set_nodelay(true)?;
                        Ok(Conn::Sync(SyncConn {
                            stream: s,
                            rbuf: RecvBuf::new(),
                        }))
                    }),
                Io::Async => with_timeout(self.timeout, Async::<TcpStream>::connect(a))
                    .await
                    .and_then(|s| {
                        s.get_ref().set_nodelay(true)?;
                        Ok(Conn::Async(AsyncConn {
                            stream: s,
                            rbuf: RecvBuf::new(),
                        }))
                    }),
            };
            match made {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no address to connect to")))
    }

    fn checkout(&self, io: Io) -> Option<Conn> {
        match io {
            Io::Blocking => self.idle.lock().pop().map(Conn::Sync),
            Io::Async => self.idle_async.lock().pop().map(Conn::Async),
        }
    }

    fn checkin(&self, conn: Conn) {
        match conn {
            Conn::Sync(c) => {
                let mut idle = self.idle.lock();
                if idle.len() < MAX_IDLE {
                    idle.push(c);
                }
            }
            Conn::Async(c) => {
                let mut idle = self.idle_async.lock();
                if idle.len() < MAX_IDLE {
                    idle.push(c);
                }
            }
        }
    }

    /// Drops every idle connection: one was found broken, so the others (made before the same
    /// server restart) most likely are too.
    fn drop_idle(&self) {
        self.idle.lock().clear();
        self.idle_async.lock().clear();
    }

    async fn fresh(&self, io: Io, what: &str) -> Result<Conn> {
        self.connect(io)
            .await
            .map_err(|e| self.error(&format!("{what} (connecting)"), e))
    }

    /// Writes `req` on a pooled connection, or a new one. `retry`: the request may be sent
    /// twice (it is idempotent), so a pooled connection found broken while reading the reply
    /// is replaced and the request sent again.
    pub(crate) async fn send<'a>(
        &'a self,
        io: Io,
        what: &'a str,
        req: &'a [u8],
        retry: bool,
    ) -> Result<Sent<'a>> {
        let (mut conn, mut reused) = match self.checkout(io) {
            Some(c) => (c, true),
            None => (self.fresh(io, what).await?, false),
        };
        if let Err(e) = conn.send(req, self.timeout).await {
            // A write that fails on a pooled connection found it dead (nothing was read by the
            // server): one more try on a new one.
            let e = Failure::Io(e);
            if !reused || !e.broken() {
                return Err(self.error(what, e));
            }
            self.drop_idle();
            conn = self.fresh(io, what).await?;
            reused = false;
            conn.send(req, self.timeout)
                .await
                .map_err(|e| self.error(what, e))?;
        }
        Ok(Sent {
            server: self,
            io,
            what,
            req,
            retry,
            conn,
            reused,
        })
    }

    /// Sends `req` and hands its reply to `f`; says whether the request went out twice.
    pub(crate) async fn call<H: Handler + ?Sized>(
        &self,
        io: Io,
        what: &str,
        req: &[u8],
        retry: bool,
        f: &mut H,
    ) -> Result<Delivery> {
        self.send(io, what, req, retry).await?.receive(f).await
    }
}

impl Sent<'_> {
    /// Reads the reply, handing each item to `f`; the connection goes back to the pool only
    /// when the reply was complete and nothing followed it.
    pub(crate) async fn receive<H: Handler + ?Sized>(self, f: &mut H) -> Result<Delivery> {
        let Sent {
            server,
            io,
            what,
            req,
            retry,
            mut conn,
            reused,
        } = self;
        let mut delivered = 0;
        match conn.receive(f, &mut delivered, server.timeout).await {
            Ok(()) => {
                server.checkin(conn);
                Ok(Delivery::Once)
            }
            // Nothing reached the handler yet, so it starts clean on the second try.
            Err(e) if reused && retry && delivered == 0 && e.broken() => {
                drop(conn);
                server.drop_idle();
                tracing::debug!(server = %server.addr, error = %e, "memcached connection broke; reconnecting");
                let mut conn = server.fresh(io, what).await?;
                conn.send(req, server.timeout)
                    .await
                    .map_err(|e| server.error(what, e))?;
                conn.receive(f, &mut delivered, server.timeout)
                    .await
                    .map_err(|e| server.error(what, e))?;
                server.checkin(conn);
                Ok(Delivery::Resent)
            }
            Err(e) => Err(server.error(what, e)),
        }
    }
}
