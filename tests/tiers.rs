//! The local tier and the backplane, in one process: two regions on one shared backend and one
//! in-process bus behave as two processes (issue 16). The same rules against real Redis and real
//! processes are in `tiers_redis.rs`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dogpile::clock::{Clock, ManualClock};
use dogpile::testing::{LoopbackBackplane, MapBackend};
use dogpile::{CacheRegion, LocalTier, RegionConfig};

mod support;

/// One "process": a region with a local tier on the shared backend and the bus.
fn process(shared: &Arc<MapBackend>, bus: &LoopbackBackplane, clock: &Clock) -> CacheRegion {
    let region = CacheRegion::named("users");
    region
        .configure(
            RegionConfig::with_backend(shared.clone())
                .expiration_time(600)
                .clock(clock.clone())
                .local_tier(tier())
                .backplane(bus.clone()),
        )
        .unwrap();
    region
}

fn tier() -> LocalTier {
    LocalTier::with_store(MapBackend::default())
        .expiration_time(Duration::from_secs(30))
        .max_silence(Duration::from_secs(2))
}

struct Fleet {
    shared: Arc<MapBackend>,
    bus: LoopbackBackplane,
    clock: Clock,
    time: Arc<ManualClock>,
}

fn fleet() -> Fleet {
    let (clock, time) = Clock::manual(SystemTime::now());
    Fleet {
        shared: Arc::new(MapBackend::bytes()),
        bus: LoopbackBackplane::new(),
        clock,
        time,
    }
}

impl Fleet {
    fn process(&self) -> CacheRegion {
        process(&self.shared, &self.bus, &self.clock)
    }
    fn shared_reads(&self) -> usize {
        self.shared.reads.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn get(region: &CacheRegion, key: &str) -> Option<String> {
    region.get::<String>(key).unwrap()
}

#[test]
fn a_second_read_is_answered_locally() {
    let f = fleet();
    let (a, b) = (f.process(), f.process());
    a.set("k", "v1".to_string()).unwrap();
    assert_eq!(get(&b, "k").as_deref(), Some("v1"));
    let reads = f.shared_reads();
    for _ in 0..10 {
        assert_eq!(get(&b, "k").as_deref(), Some("v1"));
    }
    assert_eq!(
        f.shared_reads(),
        reads,
        "local hits must not read the shared backend"
    );
    assert_eq!(b.stats().local_hits, 10);
    // The writer dropped its own copy: its next read fills from the shared backend.
    assert_eq!(get(&a, "k").as_deref(), Some("v1"));
    assert_eq!(get(&a, "k").as_deref(), Some("v1"));
    assert_eq!(a.stats().local_hits, 1);
}

#[test]
fn every_kind_of_write_in_one_process_drops_the_others_copies() {
    let f = fleet();
    let (a, b) = (f.process(), f.process());
    // Each key read twice: the second read is a local copy (checked, so a test of "dropped"
    // is a test of something that was there).
    let warm = |keys: &[&str]| {
        let before = b.stats().local_hits;
        for k in keys {
            get(&b, k);
            get(&b, k);
        }
        assert_eq!(
            b.stats().local_hits,
            before + keys.len() as u64,
            "copies made"
        );
    };
    a.set("set", "old".to_string()).unwrap();
    a.set("del", "old".to_string()).unwrap();
    a.set_multi([("m1", "old".to_string()), ("m2", "old".to_string())])
        .unwrap();
    warm(&["set", "del", "m1", "m2"]);

    a.set("set", "new".to_string()).unwrap();
    assert_eq!(get(&b, "set").as_deref(), Some("new"));
    a.delete("del").unwrap();
    assert_eq!(get(&b, "del"), None);
    a.set_multi([("m1", "new".to_string()), ("m2", "new".to_string())])
        .unwrap();
    assert_eq!(get(&b, "m1").as_deref(), Some("new"));
    assert_eq!(get(&b, "m2").as_deref(), Some("new"));
    a.delete_multi(&["m1", "m2"]).unwrap();
    assert_eq!(get(&b, "m1"), None);

    // A creation is a write too.
    a.set("created", "old".to_string()).unwrap();
    warm(&["created"]);
    a.delete("created").unwrap();
    a.get_or_create("created", || "made".to_string()).unwrap();
    assert_eq!(get(&b, "created").as_deref(), Some("made"));
    // One message per write call: set, set, set_multi, set, delete, set_multi, delete_multi,
    // set, delete, and the creation.
    assert_eq!(a.stats().backplane_sent, 10);
    assert_eq!(b.stats().backplane_received, 10);
    // A process never acts on its own messages.
    assert_eq!(a.stats().backplane_received, 0);
}

#[test]
fn region_invalidation_reaches_running_processes_and_later_ones() {
    let f = fleet();
    let (a, b) = (f.process(), f.process());
    a.set("k", "v".to_string()).unwrap();
    get(&b, "k");
    f.time.advance(Duration::from_secs(1));
    a.invalidate(true);
    assert_eq!(get(&b, "k"), None, "hard: absent in the other process");
    // A process configured after the invalidation reads its time from the shared backend.
    let c = f.process();
    assert_eq!(get(&c, "k"), None);
    assert_eq!(
        c.get_or_create("k", || "new".to_string()).unwrap(),
        "new",
        "a hard-invalidated value is recreated"
    );

    // Soft: expired everywhere, so the get-or-create path serves it while one creates.
    f.time.advance(Duration::from_secs(1));
    b.invalidate(false);
    assert_eq!(get(&a, "k"), None, "soft: a plain get treats it as expired");
    let d = f.process();
    assert_eq!(get(&d, "k"), None);
    assert_eq!(
        d.get_or_create("k", || "newer".to_string()).unwrap(),
        "newer"
    );
}

/// A backplane whose sends can be made to fail while its subscriptions stay up: the
/// publisher's own link broke (an idle connection dropped by a firewall), the others' did not.
#[derive(Clone)]
struct LossyPublisher {
    bus: LoopbackBackplane,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl dogpile::backplane::Backplane for LossyPublisher {
    fn name(&self) -> &str {
        "lossy publisher"
    }
    fn publish(&self, channel: &str, bytes: &[u8]) -> dogpile::Result<()> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(dogpile::Error::backend_msg(
                "lossy publisher",
                "send timed out",
            ));
        }
        self.bus.publish(channel, bytes)
    }
    fn subscribe(
        &self,
        channel: &str,
        sink: Arc<dyn dogpile::backplane::BackplaneSink>,
    ) -> dogpile::Result<dogpile::backplane::Subscription> {
        self.bus.subscribe(channel, sink)
    }
}

#[test]
fn a_region_invalidation_whose_message_is_lost_still_reaches_running_processes() {
    let f = fleet();
    let lossy = LossyPublisher {
        bus: f.bus.clone(),
        failing: Arc::default(),
    };
    let a = CacheRegion::named("users");
    a.configure(
        RegionConfig::with_backend(f.shared.clone())
            .expiration_time(600)
            .clock(f.clock.clone())
            .local_tier(tier())
            .backplane(lossy.clone()),
    )
    .unwrap();
    let b = f.process();
    a.set("k", "v".to_string()).unwrap();
    assert_eq!(get(&b, "k").as_deref(), Some("v"));
    f.time.advance(Duration::from_secs(1));
    lossy
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    a.invalidate(true);
    assert_eq!(get(&a, "k"), None, "invalidated where it was made");
    // The times are in the shared backend; b's link looks up throughout and hears nothing. Past
    // the tier's expiration (30 s, the bound tag times are re-read at), b's next heartbeat reads
    // them again.
    f.time.advance(Duration::from_secs(31));
    f.bus.heartbeat();
    support::wait_for_within(
        "the lost invalidation to hold in the other process",
        Duration::from_millis(1),
        Duration::from_secs(20),
        || {
            f.bus.heartbeat();
            get(&b, "k").is_none()
        },
    );
}

/// The shared backend with every read attempt counted, failed ones too.
struct CountedReads {
    inner: Arc<MapBackend>,
    gets: std::sync::atomic::AtomicUsize,
}

impl dogpile::Backend for CountedReads {
    fn name(&self) -> &str {
        "counted reads"
    }
    fn payload_kind(&self) -> dogpile::backend::PayloadKind {
        self.inner.payload_kind()
    }
    fn get(&self, key: &str) -> dogpile::Result<Option<dogpile::CachedValue>> {
        self.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: dogpile::CachedValue) -> dogpile::Result<()> {
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> dogpile::Result<()> {
        self.inner.delete(key)
    }
}

/// While the shared backend is down, the invalidation times due for a re-read are tried again
/// seconds apart, not at every heartbeat (a few a second with Redis), each with a warning.
#[test]
fn a_failed_reread_of_the_invalidation_times_waits_before_the_next() {
    let f = fleet();
    let counted = Arc::new(CountedReads {
        inner: f.shared.clone(),
        gets: Default::default(),
    });
    let region = CacheRegion::named("users");
    region
        .configure(
            RegionConfig::with_backend(counted.clone())
                .expiration_time(600)
                .clock(f.clock.clone())
                .local_tier(tier())
                .backplane(f.bus.clone()),
        )
        .unwrap();
    let gets = || counted.gets.load(std::sync::atomic::Ordering::SeqCst);
    f.time.advance(Duration::from_secs(31));
    f.shared.set_failing(true);
    let before = gets();
    f.bus.heartbeat();
    support::wait_for("the due re-read", || gets() == before + 1);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(2));
        f.bus.heartbeat();
    }
    assert_eq!(
        gets(),
        before + 1,
        "a failed re-read was tried at every heartbeat"
    );
    // A few seconds on, it is tried again, and holds once the backend is back.
    f.time.advance(Duration::from_secs(6));
    f.bus.heartbeat();
    support::wait_for("the retry", || gets() == before + 2);
    f.shared.set_failing(false);
    drop(region);
}

#[test]
fn without_word_from_the_backplane_local_copies_are_not_served() {
    let f = fleet();
    let (a, b) = (f.process(), f.process());
    a.set("k", "v1".to_string()).unwrap();
    get(&b, "k");
    get(&b, "k");
    assert_eq!(b.stats().local_hits, 1);
    // Silence for longer than max_silence (2 s): the link may be cut without anyone knowing.
    f.time.advance(Duration::from_secs(3));
    let reads = f.shared_reads();
    assert_eq!(get(&b, "k").as_deref(), Some("v1"));
    assert_eq!(b.stats().local_hits, 1, "served from the shared backend");
    assert_eq!(f.shared_reads(), reads + 1);
    // A heartbeat brings local hits back (the read above made a new copy: both reads are local).
    f.bus.heartbeat();
    get(&b, "k");
    get(&b, "k");
    assert_eq!(b.stats().local_hits, 3);
}

#[test]
fn a_write_lost_while_the_link_was_cut_never_leaves_a_stale_copy() {
    let f = fleet();
    let (a, b) = (f.process(), f.process());
    a.set("k", "old".to_string()).unwrap();
    get(&b, "k");
    get(&b, "k");
    f.bus.set_up(false);
    a.set("k", "new".to_string()).unwrap(); // its message is lost
    assert_eq!(a.stats().backplane_dropped, 1);
    assert_eq!(
        get(&b, "k").as_deref(),
        Some("new"),
        "while cut: the shared backend"
    );
    f.bus.set_up(true);
    assert_eq!(get(&b, "k").as_deref(), Some("new"), "after the heal");
    assert_eq!(b.stats().backplane_reconnects, 1);
}

#[test]
fn copies_made_before_a_reconnect_are_dropped() {
    let f = fleet();
    let (a, b) = (f.process(), f.process());
    a.set("k", "old".to_string()).unwrap();
    f.bus.set_up(false);
    // While the link is down b reads (and copies) "old"; then a write's message is lost.
    assert_eq!(get(&b, "k").as_deref(), Some("old"));
    a.set("k", "new".to_string()).unwrap();
    // The heal brings word from the backplane again: only the reconnect's new epoch keeps the
    // copy made during the outage from being served.
    f.bus.set_up(true);
    assert_eq!(get(&b, "k").as_deref(), Some("new"));
}

#[test]
fn without_a_backplane_a_copy_lives_no_longer_than_the_tier_expiration() {
    let (clock, time) = Clock::manual(SystemTime::now());
    let shared = Arc::new(MapBackend::bytes());
    let region = |shared: &Arc<MapBackend>| {
        let r = CacheRegion::new();
        r.configure(
            RegionConfig::with_backend(shared.clone())
                .expiration_time(600)
                .clock(clock.clone())
                .local_tier(tier()),
        )
        .unwrap();
        r
    };
    let (a, b) = (region(&shared), region(&shared));
    a.set("k", "old".to_string()).unwrap();
    get(&b, "k");
    a.set("k", "new".to_string()).unwrap();
    assert_eq!(
        get(&b, "k").as_deref(),
        Some("old"),
        "no backplane: b cannot know"
    );
    time.advance(Duration::from_secs(31));
    assert_eq!(get(&b, "k").as_deref(), Some("new"), "past the tier's 30 s");
}

#[test]
fn the_tier_expiration_is_at_most_the_regions() {
    // A call's own expiration may be longer than the region's; the tier's copy still lives no
    // longer than the region's expiration (5 s here, the tier's own being 30 s).
    let (clock, time) = Clock::manual(SystemTime::now());
    let shared = Arc::new(MapBackend::bytes());
    let region = CacheRegion::new();
    region
        .configure(
            RegionConfig::with_backend(shared.clone())
                .expiration_time(5)
                .clock(clock)
                .local_tier(tier()),
        )
        .unwrap();
    region.set("k", 1u8).unwrap();
    let read = |expiration| region.get_with_expiration::<u8>("k", expiration).unwrap();
    assert_eq!(read(60), Some(1)); // fills the tier
    assert_eq!(read(60), Some(1));
    assert_eq!(region.stats().local_hits, 1);
    time.advance(Duration::from_secs(6));
    let reads = shared.reads.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(read(60), Some(1), "fresh by the call's expiration");
    assert_eq!(
        shared.reads.load(std::sync::atomic::Ordering::SeqCst),
        reads + 1,
        "but the copy, past the region's 5 s, was not served"
    );
}

/// Which call of a [`Gate`] holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hold {
    Get,
    Set,
}

/// A shared backend whose next `get` or `set` holds once it has done its work, until the test
/// says go: to let another write slip in between the shared backend and the local tier.
struct Gate {
    inner: MapBackend,
    /// The call to hold, the channel that says it has done its work, and the one it waits on.
    #[allow(clippy::type_complexity)]
    armed: std::sync::Mutex<
        Option<(
            Hold,
            std::sync::mpsc::Sender<()>,
            std::sync::mpsc::Receiver<()>,
        )>,
    >,
}

impl Gate {
    fn new() -> Self {
        Gate {
            inner: MapBackend::bytes(),
            armed: std::sync::Mutex::new(None),
        }
    }

    /// Arms the next `hold` call: the first channel says it has done its work, the second
    /// lets it go on.
    fn hold(&self, hold: Hold) -> (std::sync::mpsc::Receiver<()>, std::sync::mpsc::Sender<()>) {
        let (done_tx, done) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel();
        *self.armed.lock().unwrap() = Some((hold, done_tx, go_rx));
        (done, go)
    }

    fn pass(&self, call: Hold) {
        let mut armed = self.armed.lock().unwrap();
        if armed.as_ref().is_some_and(|(h, _, _)| *h == call) {
            let (_, done, go) = armed.take().unwrap();
            drop(armed);
            done.send(()).unwrap();
            go.recv_timeout(Duration::from_secs(60))
                .expect("the test lets the held call go on");
        }
    }
}

impl dogpile::Backend for Gate {
    fn name(&self) -> &str {
        "gate"
    }
    fn payload_kind(&self) -> dogpile::backend::PayloadKind {
        self.inner.payload_kind()
    }
    fn get(&self, key: &str) -> dogpile::Result<Option<dogpile::CachedValue>> {
        let v = self.inner.get(key);
        self.pass(Hold::Get);
        v
    }
    fn set(&self, key: &str, value: dogpile::CachedValue) -> dogpile::Result<()> {
        let done = self.inner.set(key, value);
        self.pass(Hold::Set);
        done
    }
    fn delete(&self, key: &str) -> dogpile::Result<()> {
        self.inner.delete(key)
    }
}

#[test]
fn a_read_that_raced_a_write_makes_no_stale_copy() {
    let (clock, _time) = Clock::manual(SystemTime::now());
    let gate = Arc::new(Gate::new());
    let bus = LoopbackBackplane::new();
    let make = || {
        let r = Arc::new(CacheRegion::named("race"));
        r.configure(
            RegionConfig::with_backend(gate.clone())
                .expiration_time(600)
                .clock(clock.clone())
                .local_tier(tier())
                .backplane(bus.clone()),
        )
        .unwrap();
        r
    };
    let (a, b) = (make(), make());
    a.set("k", "old".to_string()).unwrap();
    let (read_done, go) = gate.hold(Hold::Get);
    let reader = {
        let b = b.clone();
        std::thread::spawn(move || get(&b, "k"))
    };
    // b has read "old" from the shared backend and not yet copied it: a writes.
    read_done
        .recv_timeout(Duration::from_secs(60))
        .expect("the held read");
    a.set("k", "new".to_string()).unwrap();
    go.send(()).unwrap();
    assert_eq!(
        reader.join().unwrap().as_deref(),
        Some("old"),
        "the read itself saw old"
    );
    assert_eq!(
        get(&b, "k").as_deref(),
        Some("new"),
        "but made no copy of it"
    );
}

#[test]
fn a_region_with_a_backplane_needs_a_name_or_a_channel() {
    let region: CacheRegion = CacheRegion::new();
    let err = region
        .configure(
            RegionConfig::with_backend(MapBackend::bytes()).backplane(LoopbackBackplane::new()),
        )
        .unwrap_err();
    assert!(err.to_string().contains("backplane_channel"), "{err}");
    region
        .configure(
            RegionConfig::with_backend(MapBackend::bytes())
                .backplane(LoopbackBackplane::new())
                .backplane_channel("mine"),
        )
        .unwrap();
}

#[test]
fn reconfiguring_ends_the_old_subscription() {
    let bus = LoopbackBackplane::new();
    let region = CacheRegion::named("re");
    let config = || {
        RegionConfig::with_backend(MapBackend::bytes())
            .backplane(bus.clone())
            .replace_existing_backend(true)
    };
    region.configure(config()).unwrap();
    region.configure(config()).unwrap();
    // Cut and heal: a live sink of the first configuration would count a reconnect too (both
    // count into the region's statistics).
    bus.set_up(false);
    bus.set_up(true);
    assert_eq!(region.stats().backplane_reconnects, 1);
}

#[test]
fn config_maps_name_the_tier_options() {
    let config = RegionConfig::from_config(
        [
            ("c.backend", "dogpile.cache.memory_pickle"),
            ("c.local_tier.max_size", "100"),
            ("c.local_tier.expiration_time", "5"),
            ("c.local_tier.max_silence", "0.5"),
        ],
        "c.",
    )
    .unwrap();
    let text = format!("{config:?}");
    assert!(text.contains("max_size: Some(100)"), "{text}");
    assert!(text.contains("max_silence: 500ms"), "{text}");
    let region: CacheRegion = CacheRegion::new();
    region.configure(config).unwrap();
    region.set("k", 7u8).unwrap();
    assert_eq!(region.get::<u8>("k").unwrap(), Some(7));
    assert_eq!(region.get::<u8>("k").unwrap(), Some(7));
    assert_eq!(region.stats().local_hits, 1);

    for (key, value, says) in [
        ("c.local_tier.max_size", "0", "more than zero"),
        ("c.local_tier.expiration_time", "-1", "more than zero"),
        ("c.local_tier.size", "1", "unknown local tier option"),
        ("c.backplane", "redis", "expected true"),
    ] {
        let err = RegionConfig::from_config([("c.backend", "x"), (key, value)], "c.").unwrap_err();
        assert!(err.to_string().starts_with(key), "{err}");
        assert!(err.to_string().contains(says), "{err}");
    }
    // A backend with no backplane of its own cannot give one.
    let err = CacheRegion::named("n")
        .configure(
            RegionConfig::from_config(
                [
                    ("c.backend", "dogpile.cache.memory"),
                    ("c.backplane", "true"),
                ],
                "c.",
            )
            .unwrap(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("has no backplane"), "{err}");
}

fn tagged(tag: &str) -> dogpile::CreateOptions<String> {
    dogpile::CreateOptions::new().tags([tag.to_string()])
}

#[test]
fn a_tag_invalidated_in_one_process_holds_in_the_others_and_in_later_ones() {
    let f = fleet();
    let (a, b) = (f.process(), f.process());
    let make = |r: &CacheRegion, key: &str, tag: &str, v: &str| {
        let v = v.to_string();
        r.get_or_create_with(key, &tagged(tag), move || v).unwrap()
    };
    make(&a, "u1", "user:1", "one");
    make(&a, "u2", "user:2", "two");
    // b knows both, with copies in its tier.
    assert_eq!(make(&b, "u1", "user:1", "b made it"), "one");
    assert_eq!(make(&b, "u2", "user:2", "b made it"), "two");
    f.time.advance(Duration::from_secs(1));
    a.invalidate_tag("user:1", true).unwrap();
    assert_eq!(
        make(&b, "u1", "user:1", "one again"),
        "one again",
        "hard: absent in b"
    );
    assert_eq!(
        make(&b, "u2", "user:2", "b made it"),
        "two",
        "another tag: kept"
    );
    assert_eq!(
        b.get_with_options::<String>("u2", &tagged("user:2"))
            .unwrap()
            .as_deref(),
        Some("two")
    );
    // A process started afterwards reads the tag's time from the shared backend.
    let c = f.process();
    f.time.advance(Duration::from_secs(1));
    a.set("u3", "three".to_string()).unwrap();
    let old = c
        .get_with_options::<String>("u3", &tagged("user:3"))
        .unwrap();
    assert_eq!(old.as_deref(), Some("three"));
    f.time.advance(Duration::from_secs(1));
    b.invalidate_tag("user:3", false).unwrap();
    // Soft: the get-or-create path serves the stale value while one caller creates; a plain
    // read with the tag treats it as expired.
    assert_eq!(
        c.get_with_options::<String>("u3", &tagged("user:3"))
            .unwrap(),
        None
    );
    assert_eq!(make(&c, "u3", "user:3", "new three"), "new three");
    // Values made after the invalidation are fresh again.
    assert_eq!(
        c.get_with_options::<String>("u3", &tagged("user:3"))
            .unwrap()
            .as_deref(),
        Some("new three")
    );
    let d = f.process();
    assert_eq!(
        make(&d, "u1", "user:1", "d made it"),
        "one again",
        "made after the tag's invalidation"
    );
}

#[test]
fn tags_on_a_batch_are_refused_not_ignored() {
    let f = fleet();
    let a = f.process();
    let err = a
        .try_get_or_create_multi(&["a", "b"], &tagged("t"), |keys| {
            Ok::<_, std::convert::Infallible>(keys.iter().map(|k| k.to_string()).collect())
        })
        .unwrap_err();
    assert!(err.to_string().contains("tags"), "{err}");
}

#[test]
fn two_writers_of_one_key_in_one_process_leave_the_backends_value() {
    let gate = Arc::new(Gate::new());
    let region = Arc::new(CacheRegion::named("writers"));
    region
        .configure(
            RegionConfig::with_backend(gate.clone())
                .expiration_time(600)
                .local_tier(tier())
                .backplane(LoopbackBackplane::new()),
        )
        .unwrap();
    let (written, go) = gate.hold(Hold::Set);
    let first = {
        let region = region.clone();
        std::thread::spawn(move || region.set("k", "first".to_string()).unwrap())
    };
    // "first" is in the shared backend; "second" overtakes it, backend and tier.
    written
        .recv_timeout(Duration::from_secs(60))
        .expect("the held write");
    region.set("k", "second".to_string()).unwrap();
    go.send(()).unwrap();
    first.join().unwrap();
    // The backend has "second"; so must every read here, local or not.
    assert_eq!(get(&region, "k").as_deref(), Some("second"));
    assert_eq!(get(&region, "k").as_deref(), Some("second"));
}

#[test]
fn local_tier_false_is_off_in_either_order_and_refused_beside_its_options() {
    // A sorted map puts `local_tier` before `local_tier.max_size`, a hash map in any order:
    // before the fix, false followed by an option switched the tier back on.
    let read = |pairs: &[(&str, &str)]| {
        let mut map: Vec<(&str, &str)> = vec![("c.backend", "dogpile.cache.memory_pickle")];
        map.extend_from_slice(pairs);
        RegionConfig::from_config(map, "c.")
    };
    for order in [
        [("c.local_tier", "false"), ("c.local_tier.max_size", "10")],
        [("c.local_tier.max_size", "10"), ("c.local_tier", "false")],
    ] {
        let err = read(&order).unwrap_err().to_string();
        assert!(
            err.starts_with("c.local_tier: the local tier is switched off"),
            "{err}"
        );
        assert!(err.contains("c.local_tier.max_size"), "{err}");
    }
    let off = read(&[("c.local_tier", "false")]).unwrap();
    assert!(format!("{off:?}").contains("local_tier: None"), "{off:?}");
    let on = read(&[("c.local_tier", "true")]).unwrap();
    assert!(format!("{on:?}").contains("local_tier: Some"), "{on:?}");
    let err = read(&[("c.local_tier", "maybe")]).unwrap_err().to_string();
    assert!(err.contains("expected true or false"), "{err}");
}

#[test]
fn an_invalidation_made_before_the_backplane_was_configured_still_holds() {
    // Real clock: the invalidation of an unconfigured region is stamped with it.
    let shared = Arc::new(MapBackend::bytes());
    let bus = LoopbackBackplane::new();
    let config = || {
        RegionConfig::with_backend(shared.clone())
            .expiration_time(600)
            .local_tier(tier())
            .backplane(bus.clone())
            .replace_existing_backend(true)
    };
    let writer = CacheRegion::named("early");
    writer.configure(config()).unwrap();
    writer.set("k", "old".to_string()).unwrap();
    std::thread::sleep(Duration::from_millis(2));
    let late = CacheRegion::named("early");
    late.invalidate(true); // before it has any configuration
    late.configure(config()).unwrap();
    // Before the fix the backplane's strategy started empty and "old" was served again.
    assert_eq!(get(&late, "k"), None);
    // And it was stored for the others, running or started later.
    let later = CacheRegion::named("early");
    later.configure(config()).unwrap();
    assert_eq!(get(&later, "k"), None);
}

#[test]
fn a_batch_read_answers_from_the_tier_and_reads_the_rest_in_one_call() {
    let f = fleet();
    let (a, b) = (f.process(), f.process());
    a.set_multi([("m1", "one".to_string()), ("m2", "two".to_string())])
        .unwrap();
    let keys = ["m1", "m2", "absent"];
    let want = vec![Some("one".to_string()), Some("two".to_string()), None];
    assert_eq!(b.get_multi::<String, _>(&keys).unwrap(), want); // from the shared map
    let reads = f.shared_reads();
    assert_eq!(b.get_multi::<String, _>(&keys).unwrap(), want);
    assert_eq!(
        b.stats().local_hits,
        2,
        "two copies made by the first batch"
    );
    assert_eq!(
        f.shared_reads(),
        reads + 1,
        "the one absent key, read alone"
    );
    a.set("m2", "new two".to_string()).unwrap();
    assert_eq!(
        b.get_multi::<String, _>(&keys).unwrap()[1].as_deref(),
        Some("new two")
    );
}
