//! [`RedisBackplane`]: the [backplane](dogpile_core::backplane) over Redis pub/sub, on the
//! connection settings of `dogpile.cache.redis` (the same arguments, read by the same code).

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dogpile_core::backplane::{Backplane, BackplaneSink, Subscription};
use dogpile_core::{Arguments, Error, Result};
use parking_lot::Mutex;
use redis::{RedisError, RedisResult, Value};

use super::conn::{Conns, Limits};
use super::settings::positive;
use super::{single_server, REDIS};

use crate::backoff::Backoff;

/// The shortest heartbeat: a socket read timeout cannot be zero.
const MIN_HEARTBEAT: Duration = Duration::from_millis(1);

/// The name of every subscription's thread.
const THREAD_NAME: &str = "dogpile-backplane";

/// Redis pub/sub as a [`Backplane`], made from a URL, from the arguments of
/// `dogpile.cache.redis` (plus `heartbeat`), or by a backend for its own server
/// ([`Backend::backplane`](dogpile_core::Backend::backplane): `dogpile.cache.redis`,
/// `dogpile.cache.valkey`, and the Sentinel backends, whose backplane finds the master anew on
/// each reconnection). Making it does not connect.
///
/// Publishing is one `PUBLISH` on a connection of its own (connected on first use, replaced
/// once when it broke; concurrent publishers take turns on it), every wait bounded by
/// `socket_connect_timeout` and `socket_timeout`: a frozen server makes a publish fail, never
/// hang.
///
/// Each subscription is a thread (`dogpile-backplane`) holding a subscribed connection. It reads
/// with a timeout of one heartbeat, and when nothing came it sends a `PING` on that connection
/// and waits at most one more heartbeat for the reply. So while the link works the sink hears
/// [`alive`](BackplaneSink::alive) at least once per heartbeat (plus a round trip); a link that
/// stopped answering is reported [`disconnected`](BackplaneSink::disconnected) about two
/// heartbeats after its last sign of life, a refused or reset connection at once; and an outage
/// is reported once, however many reconnection attempts fail (the first `connected` comes
/// with no `disconnected` before it). The thread reconnects by itself, pausing 0.5 ms, 1 ms,
/// 2 ms… up to four heartbeats between attempts, and reports
/// [`connected`](BackplaneSink::connected) when it is subscribed again. Dropping the
/// [`Subscription`] stops the thread: the drop waits at most two heartbeats for it to end, and
/// once the thread has seen the stop it calls the sink no more.
///
/// ```no_run
/// use std::sync::Arc;
/// use dogpile_backends::redis::RedisBackplane;
/// use dogpile_core::backplane::{Backplane, BackplaneSink};
///
/// struct Print;
/// impl BackplaneSink for Print {
///     fn message(&self, bytes: &[u8]) {
///         println!("{} bytes", bytes.len());
///     }
///     fn alive(&self) {}
///     fn connected(&self) {}
///     fn disconnected(&self) {}
/// }
///
/// let backplane = RedisBackplane::from_url("redis://127.0.0.1:6379/0")?;
/// let subscription = backplane.subscribe("dogpile:users", Arc::new(Print))?;
/// backplane.publish("dogpile:users", b"hello")?;
/// drop(subscription); // the thread stops
/// # Ok::<(), dogpile_core::Error>(())
/// ```
pub struct RedisBackplane {
    /// The publishing connection (a pool of one), whose client and timeouts the subscriptions
    /// use too.
    conns: Arc<Conns>,
    heartbeat: Duration,
}

impl RedisBackplane {
    /// The default interval between two signs of life on an idle subscription (`heartbeat`).
    pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(250);

    /// Pub/sub on the server at `url` (`redis://[user:password@]host:port[/db]`, `rediss://…`),
    /// with the default timeouts and heartbeat. Does not connect.
    ///
    /// ```
    /// use dogpile_backends::redis::RedisBackplane;
    ///
    /// let backplane = RedisBackplane::from_url("redis://:hunter2@127.0.0.1:6379")?;
    /// assert!(!format!("{backplane:?}").contains("hunter2"));
    /// assert!(RedisBackplane::from_url("redis://:hunter2@[").is_err());
    /// # Ok::<(), dogpile_core::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A configuration error for a URL that is not a Redis URL (the error shows it without its
    /// credentials).
    pub fn from_url(url: &str) -> Result<Self> {
        Self::from_arguments(&Arguments::new().with("url", url))
    }

    /// Pub/sub on the server that `dogpile.cache.redis` with these arguments would use: `url` or
    /// `host` / `port` / `db`, credentials, TLS, `socket_timeout` (each reply, a publish's
    /// included), `socket_connect_timeout`, `pool_timeout`, keepalive; the backend's other
    /// arguments are accepted and have no effect here. One more: `heartbeat` (seconds, default
    /// [`DEFAULT_HEARTBEAT`](Self::DEFAULT_HEARTBEAT)), the read timeout of a subscription, after which it pings.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dogpile_backends::redis::RedisBackplane;
    /// use dogpile_core::Arguments;
    ///
    /// let args = Arguments::new()
    ///     .with("host", "127.0.0.1")
    ///     .with("socket_timeout", 0.5)
    ///     .with("heartbeat", 0.1);
    /// let backplane = RedisBackplane::from_arguments(&args)?;
    /// assert_eq!(backplane.heartbeat(), Duration::from_millis(100));
    /// assert!(RedisBackplane::from_arguments(&Arguments::new().with("heartbeat", 0)).is_err());
    /// # Ok::<(), dogpile_core::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A configuration error naming the argument that is unknown or wrong.
    pub fn from_arguments(args: &Arguments) -> Result<Self> {
        let (desc, client, common) = single_server(REDIS, args, &["heartbeat"])?;
        let heartbeat = positive(args, "heartbeat", args.seconds("heartbeat")?)?
            .unwrap_or(Self::DEFAULT_HEARTBEAT);
        let conns = Conns::new(desc, client, publisher_limits(common.limits));
        Ok(Self::with_conns(conns).with_heartbeat(heartbeat))
    }

    /// A backplane on the server of a backend's connections, with their settings; `None` for a
    /// cluster.
    pub(crate) fn beside(conns: &Conns) -> Option<Self> {
        conns
            .has_one_server()
            .then(|| Self::with_conns(conns.sibling(publisher_limits(conns.limits()))))
    }

    fn with_conns(conns: Conns) -> Self {
        RedisBackplane {
            conns: Arc::new(conns),
            heartbeat: Self::DEFAULT_HEARTBEAT,
        }
    }

    /// This backplane with another heartbeat (raised to 1 ms if shorter): a subscription hears
    /// from the server at least this often, or pings it. Subscriptions started afterwards use it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dogpile_backends::redis::RedisBackplane;
    ///
    /// let backplane = RedisBackplane::from_url("redis://127.0.0.1")?
    ///     .with_heartbeat(Duration::from_millis(50));
    /// assert_eq!(backplane.heartbeat(), Duration::from_millis(50));
    /// # Ok::<(), dogpile_core::Error>(())
    /// ```
    pub fn with_heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every.max(MIN_HEARTBEAT);
        self
    }

    /// The interval between two signs of life on an idle subscription.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }
}

impl RedisBackplane {
    /// The channel's name on the server: pub/sub channels are the whole server's, not a
    /// database's, so a database other than 0 is part of the name (regions of one name on two
    /// databases are two caches, and must not hear each other).
    fn on_server<'c>(&self, channel: &'c str) -> std::borrow::Cow<'c, str> {
        match self.conns.db() {
            0 => channel.into(),
            db => format!("{channel}@db{db}").into(),
        }
    }
}

/// The publisher's connections: one, with the backend's waits.
fn publisher_limits(limits: Limits) -> Limits {
    Limits {
        pool_size: 1,
        ..limits
    }
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("server", &self.conns.desc())
            .field("heartbeat", &self.heartbeat)
            .finish()
    }
}

impl Backplane for RedisBackplane {
    fn name(&self) -> &str {
        "redis"
    }

    fn heartbeat(&self) -> Option<Duration> {
        Some(self.heartbeat)
    }

    fn publish(&self, channel: &str, bytes: &[u8]) -> Result<()> {
        let channel = self.on_server(channel);
        self.conns.query::<i64>(
            &format!("publishing on the backplane channel {channel:?}"),
            redis::cmd("PUBLISH").arg(&*channel).arg(bytes),
        )?;
        Ok(())
    }

    fn subscribe(&self, channel: &str, sink: Arc<dyn BackplaneSink>) -> Result<Subscription> {
        let channel = &*self.on_server(channel);
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let listener = Listener::new(
            self.conns.clone(),
            channel,
            sink,
            self.heartbeat,
            Stop(stop_rx),
        );
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || {
                // Dropped when the thread ends, a panicking sink included: what the stop waits for.
                let _done = done_tx;
                listener.run();
            })
            .map_err(|e| {
                Error::backend(
                    self.conns.desc(),
                    format!("subscribing to the backplane channel {channel:?}: cannot start the {THREAD_NAME} thread: {e}"),
                    e,
                )
            })?;
        let thread = thread.thread().id();
        let wait = self.heartbeat * 2;
        let done = Mutex::new(done_rx);
        Ok(Subscription::new(move || {
            drop(stop_tx);
            // The thread sees the stop within a heartbeat (a read or a ping); wait that long so
            // the sink is quiet once the drop returns, but never longer, and never on the
            // thread itself (a sink that drops its own subscription).
            if std::thread::current().id() != thread {
                let _ = done.lock().recv_timeout(wait);
            }
        }))
    }
}

/// The stop signal of a subscription: its sender is dropped.
struct Stop(Receiver<()>);

impl Stop {
    fn requested(&self) -> bool {
        matches!(self.0.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Sleeps `pause`, or less when the stop comes; whether it came.
    fn pause(&self, pause: Duration) -> bool {
        matches!(
            self.0.recv_timeout(pause),
            Err(RecvTimeoutError::Disconnected)
        )
    }
}

/// Why a subscribed session ended.
enum Ended {
    /// The subscription was dropped: the thread ends.
    Stopped,
    /// The link broke (the sink was told): the thread reconnects.
    Broken,
}

/// One subscription's thread: connects, subscribes, delivers, pings, reconnects.
struct Listener {
    conns: Arc<Conns>,
    channel: String,
    sink: Arc<dyn BackplaneSink>,
    heartbeat: Duration,
    stop: Stop,
    /// Whether the sink was told `connected` and not since `disconnected`.
    up: bool,
    /// The pauses between reconnection attempts, started afresh at each subscription.
    backoff: Backoff,
}

impl Listener {
    fn new(
        conns: Arc<Conns>,
        channel: &str,
        sink: Arc<dyn BackplaneSink>,
        heartbeat: Duration,
        stop: Stop,
    ) -> Self {
        Listener {
            conns,
            channel: channel.to_owned(),
            sink,
            heartbeat,
            stop,
            up: false,
            backoff: Backoff::up_to(Self::longest_pause(heartbeat)),
        }
    }

    /// The longest pause between reconnection attempts: four heartbeats, so a server back after
    /// a restart is found again soon and one that stays down costs little. The pauses start at
    /// 0.5 ms and double.
    fn longest_pause(heartbeat: Duration) -> Duration {
        heartbeat * 4
    }

    fn run(mut self) {
        while !self.stop.requested() {
            match self.conns.connect_one() {
                Ok(mut conn) => {
                    if let Ended::Stopped = self.session(&mut conn) {
                        return;
                    }
                }
                Err(e) => self.lost(&e),
            }
            let longest = Self::longest_pause(self.heartbeat);
            let pause = self
                .backoff
                .next_pause(Instant::now() + longest)
                .unwrap_or(longest);
            if self.stop.pause(pause) {
                return;
            }
        }
    }

    /// Subscribes on `conn` and delivers until the link breaks or the stop comes. The sink hears
    /// `disconnected` here, before the connection is let go (which costs an `UNSUBSCRIBE` that
    /// a dead link does not answer).
    fn session(&mut self, conn: &mut redis::Connection) -> Ended {
        if self.stop.requested() {
            return Ended::Stopped;
        }
        let mut pubsub = conn.as_pubsub();
        let ended = match self.deliver(&mut pubsub) {
            Ok(()) => Ended::Stopped,
            Err(_) if self.stop.requested() => Ended::Stopped,
            Err(e) => {
                self.lost(&e);
                Ended::Broken
            }
        };
        // Letting go waits for the UNSUBSCRIBE reply: at most a heartbeat.
        let _ = pubsub.set_read_timeout(Some(self.heartbeat));
        ended
    }

    fn deliver(&mut self, pubsub: &mut redis::PubSub<'_>) -> RedisResult<()> {
        // The SUBSCRIBE reply is bounded by the connection's reply timeout.
        pubsub.subscribe(&self.channel)?;
        pubsub.set_read_timeout(Some(self.heartbeat))?;
        if self.stop.requested() {
            return Ok(());
        }
        self.backoff = Backoff::up_to(Self::longest_pause(self.heartbeat));
        if !self.up {
            self.up = true;
            tracing::debug!(backend = %self.conns.desc(), channel = %self.channel, "backplane subscribed");
            self.sink.connected();
        }
        self.sink.alive();
        loop {
            let got = pubsub.get_message();
            if self.stop.requested() {
                return Ok(());
            }
            match got {
                Ok(msg) => self.sink.message(msg.get_payload_bytes()),
                // Silence for a heartbeat: ask the server, waiting at most one more.
                Err(e) if e.is_timeout() => {
                    pubsub.ping::<Value>()?;
                    if self.stop.requested() {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
            self.sink.alive();
        }
    }

    /// Tells the sink the link broke, once per outage.
    fn lost(&mut self, e: &RedisError) {
        if std::mem::take(&mut self.up) {
            tracing::warn!(backend = %self.conns.desc(), channel = %self.channel, error = %e, "backplane link lost; reconnecting");
            self.sink.disconnected();
        } else {
            tracing::debug!(backend = %self.conns.desc(), channel = %self.channel, error = %e, "backplane still unreachable");
        }
    }
}
