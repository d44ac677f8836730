//! The resilience options of a region, as [`RegionConfig`](super::RegionConfig) holds them and as
//! a configuration map writes them: fail-safe, creator timeouts, early refresh, probabilistic
//! early expiration (XFetch) and expiration jitter. What they do lives in `region/resilience.rs`.

use std::time::Duration;

use super::{coerce_string, seconds, ArgValue, RegionConfig};
use crate::error::{Error, Result};

/// How often a failing key is retried while fail-safe serves its old value, unless set: often
/// enough that a recovered source is seen within half a minute, rarely enough that a source that
/// is down sees one call per key per half minute from each process.
pub const DEFAULT_FAIL_SAFE_THROTTLE: Duration = Duration::from_secs(30);

/// The keys of a configuration map that set resilience options, as `PREFIXkey = value`.
pub(crate) const KEYS: [&str; 8] = [
    "fail_safe_max_duration",
    "fail_safe_throttle",
    "soft_timeout",
    "hard_timeout",
    "eager_refresh",
    "early_expiration_beta",
    "expiration_jitter",
    "random_seed",
];

/// The resilience options; every one off (`None`) unless set.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Resilience {
    /// Fail-safe: how long past its expiry an old value may stand in for a failed creation.
    pub(crate) fail_safe_max_duration: Option<Duration>,
    /// Fail-safe: at most one retry of a failing key per this long.
    pub(crate) fail_safe_throttle: Option<Duration>,
    /// With a stale value, a creator running longer than this leaves its caller the stale value.
    pub(crate) soft_timeout: Option<Duration>,
    /// A caller with no value gives up on its creator past this.
    pub(crate) hard_timeout: Option<Duration>,
    /// The share of a value's life past which its first hit refreshes it in the background.
    pub(crate) eager_refresh: Option<f64>,
    /// XFetch's β: how eagerly a read regenerates before expiry.
    pub(crate) early_expiration_beta: Option<f64>,
    /// Each value's expiry is moved later by up to this.
    pub(crate) expiration_jitter: Option<Duration>,
    /// The seed of the region's random source (XFetch's draws); from the time when unset.
    pub(crate) random_seed: Option<u64>,
}

impl Resilience {
    /// Reads one `PREFIXname = value` pair, `name` one of [`KEYS`]; `key` is the full key, for
    /// errors.
    pub(crate) fn read(&mut self, name: &str, key: &str, value: &str) -> Result<()> {
        match name {
            "fail_safe_max_duration" => self.fail_safe_max_duration = seconds(key, value)?,
            "fail_safe_throttle" => self.fail_safe_throttle = seconds(key, value)?,
            "soft_timeout" => self.soft_timeout = seconds(key, value)?,
            "hard_timeout" => self.hard_timeout = seconds(key, value)?,
            "eager_refresh" => self.eager_refresh = number(key, value)?,
            "early_expiration_beta" => self.early_expiration_beta = number(key, value)?,
            "expiration_jitter" => self.expiration_jitter = seconds(key, value)?,
            "random_seed" => {
                self.random_seed = match coerce_string(value) {
                    ArgValue::None => None,
                    ArgValue::Int(i) if i >= 0 => Some(i as u64),
                    other => {
                        return Err(Error::config(
                            key,
                            format!("expected a non-negative integer or none; got {other}"),
                        ))
                    }
                }
            }
            _ => return Err(Error::config(key, "not a resilience option")),
        }
        Ok(())
    }

    /// Refuses values no region can use, naming the option: checked by `configure`, so the
    /// builder methods stay infallible.
    pub(crate) fn check(&self) -> Result<()> {
        if let Some(f) = self.eager_refresh {
            if !(f > 0.0 && f < 1.0) {
                return Err(Error::config(
                    "eager_refresh",
                    format!("expected a fraction of the expiration time between 0 and 1 (exclusive), such as 0.8; got {f}"),
                ));
            }
        }
        if let Some(b) = self.early_expiration_beta {
            if !(b.is_finite() && b > 0.0) {
                return Err(Error::config(
                    "early_expiration_beta",
                    format!("expected a positive number (1.0 is XFetch's default); got {b}"),
                ));
            }
        }
        if let (Some(soft), Some(hard)) = (self.soft_timeout, self.hard_timeout) {
            if soft > hard {
                return Err(Error::config(
                    "soft_timeout",
                    format!("the soft timeout ({soft:?}) must not be longer than the hard timeout ({hard:?})"),
                ));
            }
        }
        Ok(())
    }

    /// These options with `call`'s own set over them: what one get-or-create call runs with.
    /// The jitter and the seed are the region's: every reader of a value must judge its expiry
    /// alike, and one call site cannot change that.
    pub(crate) fn overlaid(&self, call: &Resilience) -> Resilience {
        Resilience {
            fail_safe_max_duration: call.fail_safe_max_duration.or(self.fail_safe_max_duration),
            fail_safe_throttle: call.fail_safe_throttle.or(self.fail_safe_throttle),
            soft_timeout: call.soft_timeout.or(self.soft_timeout),
            hard_timeout: call.hard_timeout.or(self.hard_timeout),
            eager_refresh: call.eager_refresh.or(self.eager_refresh),
            early_expiration_beta: call.early_expiration_beta.or(self.early_expiration_beta),
            expiration_jitter: self.expiration_jitter,
            random_seed: self.random_seed,
        }
    }

    /// Fail-safe's throttle when fail-safe is on.
    pub(crate) fn fail_safe_throttle(&self) -> Option<Duration> {
        self.fail_safe_max_duration.map(|_| {
            self.fail_safe_throttle
                .unwrap_or(DEFAULT_FAIL_SAFE_THROTTLE)
        })
    }

    /// Whether any option that acts on the get-or-create path is set (jitter acts on every read
    /// and is asked separately).
    pub(crate) fn acts_on_creation(&self) -> bool {
        self.fail_safe_max_duration.is_some()
            || self.soft_timeout.is_some()
            || self.hard_timeout.is_some()
            || self.eager_refresh.is_some()
            || self.early_expiration_beta.is_some()
    }
}

/// The resilience options, as builder methods. Each is off unless set (dogpile's behaviour), and
/// each can be written in a configuration map as `PREFIXname = value` (durations in seconds).
impl RegionConfig {
    /// Fail-safe: when the creator fails (an `Err`, or a panic) and an expired value exists,
    /// callers get the expired value instead of the error, for up to `max_duration` past its
    /// expiry; the failing key is then retried at most once per
    /// [`fail_safe_throttle`](RegionConfig::fail_safe_throttle) while the old value is served.
    /// Counted in [`Stats::fail_safe_served`](crate::Stats::fail_safe_served) and logged at
    /// `warn`. A hard-invalidated value is gone and is never served. In a map:
    /// `PREFIXfail_safe_max_duration = 60`.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use dogpile_core::{clock::Clock, CacheRegion, CreateOptions, RegionConfig};
    /// use dogpile_core::testing::MapBackend;
    ///
    /// let (clock, time) = Clock::manual(SystemTime::now());
    /// let region: CacheRegion = CacheRegion::new();
    /// region
    ///     .configure(
    ///         RegionConfig::with_backend(MapBackend::default())
    ///             .expiration_time(60)
    ///             .clock(clock)
    ///             .fail_safe_max_duration(Duration::from_secs(3600)),
    ///     )
    ///     .unwrap();
    /// region.set("rates", 1.25f64).unwrap();
    /// time.advance(Duration::from_secs(120)); // expired
    /// let options = CreateOptions::new();
    /// let got = region.try_get_or_create("rates", &options, || Err::<f64, _>("the API is down"));
    /// assert_eq!(got.unwrap(), 1.25); // the old value, not the error
    /// assert_eq!(region.stats().fail_safe_served, 1);
    /// ```
    pub fn fail_safe_max_duration(mut self, max_duration: Duration) -> Self {
        self.resilience.fail_safe_max_duration = Some(max_duration);
        self
    }

    /// Fail-safe's throttle: after a failed creation, the key's old value is served without
    /// running the creator for this long (per process), then one caller tries again. The default
    /// is [`DEFAULT_FAIL_SAFE_THROTTLE`]. In a map: `PREFIXfail_safe_throttle = 30`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dogpile_core::RegionConfig;
    ///
    /// let config = RegionConfig::new("dogpile.cache.memory")
    ///     .fail_safe_max_duration(Duration::from_secs(600))
    ///     .fail_safe_throttle(Duration::from_secs(5));
    /// # let _ = config;
    /// ```
    pub fn fail_safe_throttle(mut self, throttle: Duration) -> Self {
        self.resilience.fail_safe_throttle = Some(throttle);
        self
    }

    /// Soft timeout: when a stale value exists and the creator has run longer than this, its
    /// caller gets the stale value while the creator finishes and stores its value. It needs a
    /// creator that can move to another thread:
    /// [`get_or_create_in_background`](crate::CacheRegion::get_or_create_in_background) and
    /// `#[cache_on_arguments(background = true)]` (other callers of a stale key never wait in
    /// the first place). Counted in [`Stats::soft_timeouts`](crate::Stats::soft_timeouts). In a
    /// map: `PREFIXsoft_timeout = 0.5`.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use dogpile_core::{clock::Clock, CacheRegion, CreateOptions, RegionConfig};
    /// use dogpile_core::testing::MapBackend;
    ///
    /// let (clock, time) = Clock::manual(SystemTime::now());
    /// let region: CacheRegion = CacheRegion::new();
    /// region
    ///     .configure(
    ///         RegionConfig::with_backend(MapBackend::default())
    ///             .expiration_time(60)
    ///             .clock(clock)
    ///             .soft_timeout(Duration::from_millis(20)),
    ///     )
    ///     .unwrap();
    /// region.set("report", 1u32).unwrap();
    /// time.advance(Duration::from_secs(61));
    /// let (release, wait) = std::sync::mpsc::channel::<()>();
    /// let slow = move || {
    ///     let _ = wait.recv(); // a creator that takes as long as the example wants
    ///     2u32
    /// };
    /// let got = region.get_or_create_in_background("report", &CreateOptions::new(), slow).unwrap();
    /// assert_eq!(got, 1); // the stale value, after 20 ms
    /// release.send(()).unwrap(); // the creator finishes and stores 2
    /// # while region.get::<u32>("report").unwrap() != Some(2) { std::thread::yield_now() }
    /// ```
    pub fn soft_timeout(mut self, timeout: Duration) -> Self {
        self.resilience.soft_timeout = Some(timeout);
        self
    }

    /// Hard timeout: a caller with no value stops waiting for its creator past this and gets
    /// [`Error::CreatorTimeout`]; the creator still stores its value when it finishes. A caller
    /// with a stale value gets the stale value. Like
    /// [`soft_timeout`](RegionConfig::soft_timeout) it needs a creator that can move to another
    /// thread ([`get_or_create_in_background`](crate::CacheRegion::get_or_create_in_background));
    /// a `#[cache_on_arguments(background = true)]` function, which has no error to return,
    /// waits for its creator instead. A caller with no value that waits for *another* caller's
    /// creation (any get-or-create, a creator that borrows included) is bounded the same way:
    /// past the hard timeout it gets [`Error::CreatorTimeout`] while that creation goes on.
    /// Counted in [`Stats::hard_timeouts`](crate::Stats::hard_timeouts). In a map:
    /// `PREFIXhard_timeout = 2`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dogpile_core::{CacheRegion, CreateOptions, Error, RegionConfig};
    /// use dogpile_core::testing::MapBackend;
    ///
    /// let region: CacheRegion = CacheRegion::new();
    /// region
    ///     .configure(
    ///         RegionConfig::with_backend(MapBackend::default())
    ///             .hard_timeout(Duration::from_millis(20)),
    ///     )
    ///     .unwrap();
    /// let (release, wait) = std::sync::mpsc::channel::<()>();
    /// let slow = move || {
    ///     let _ = wait.recv();
    ///     7u32
    /// };
    /// let got = region.get_or_create_in_background("k", &CreateOptions::new(), slow);
    /// assert!(matches!(got, Err(Error::CreatorTimeout { .. })));
    /// release.send(()).unwrap(); // the creator still stores its value
    /// # while region.get::<u32>("k").unwrap() != Some(7) { std::thread::yield_now() }
    /// ```
    pub fn hard_timeout(mut self, timeout: Duration) -> Self {
        self.resilience.hard_timeout = Some(timeout);
        self
    }

    /// Early refresh: the first hit on a value past this fraction of its expiration time (`0.8`:
    /// 80 % of its life) starts one refresh in the background, on the region's
    /// [`AsyncCreationRunner`](crate::AsyncCreationRunner) or on a new thread when there is
    /// none, and every caller keeps getting the current value; so a hot key never expires under
    /// load. A creator that cannot move to another thread (`get_or_create`'s) is run by the one
    /// caller that takes the key's lock, while the others keep the current value. Counted in
    /// [`Stats::eager_refreshes`](crate::Stats::eager_refreshes). In a map:
    /// `PREFIXeager_refresh = 0.8`.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use dogpile_core::{clock::Clock, CacheRegion, RegionConfig};
    /// use dogpile_core::testing::MapBackend;
    ///
    /// let (clock, time) = Clock::manual(SystemTime::now());
    /// let region: CacheRegion = CacheRegion::new();
    /// region
    ///     .configure(
    ///         RegionConfig::with_backend(MapBackend::default())
    ///             .expiration_time(100)
    ///             .clock(clock)
    ///             .eager_refresh(0.8),
    ///     )
    ///     .unwrap();
    /// assert_eq!(region.get_or_create("k", || 1).unwrap(), 1);
    /// time.advance(Duration::from_secs(85)); // past 80 s of 100: refreshed on this hit
    /// assert_eq!(region.get_or_create("k", || 2).unwrap(), 2);
    /// assert_eq!(region.stats().eager_refreshes, 1);
    /// ```
    pub fn eager_refresh(mut self, fraction: f64) -> Self {
        self.resilience.eager_refresh = Some(fraction);
        self
    }

    /// Probabilistic early expiration (XFetch: Vattani, Chierichetti and Lowenstein, VLDB 2015):
    /// each hit regenerates the value early with probability `exp(-remaining / (δ·β))`, where
    /// `remaining` is the time left before expiry and `δ` the region's measured creation time, so
    /// refreshes spread over time without coordination; the key's lock still lets one caller
    /// regenerate at a time. `β = 1.0` is the paper's default; larger is earlier. Counted in
    /// [`Stats::early_expirations`](crate::Stats::early_expirations). In a map:
    /// `PREFIXearly_expiration_beta = 1.0`.
    ///
    /// ```
    /// use dogpile_core::{CacheRegion, RegionConfig};
    /// use dogpile_core::testing::MapBackend;
    ///
    /// let region: CacheRegion = CacheRegion::new();
    /// region
    ///     .configure(
    ///         RegionConfig::with_backend(MapBackend::default())
    ///             .expiration_time(300)
    ///             .early_expiration_beta(1.0)
    ///             .random_seed(42),
    ///     )
    ///     .unwrap();
    /// assert_eq!(region.get_or_create("k", || 1).unwrap(), 1);
    /// ```
    pub fn early_expiration_beta(mut self, beta: f64) -> Self {
        self.resilience.early_expiration_beta = Some(beta);
        self
    }

    /// Jitter: each stored value's expiry is moved later by a pseudo-random amount up to this,
    /// so values written together do not expire together. The amount is a hash of the value's
    /// key and creation stamp, so every reader (in any process with this setting) judges the
    /// same expiry, and nothing is added to what is stored. In a map:
    /// `PREFIXexpiration_jitter = 30`.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use dogpile_core::{clock::Clock, CacheRegion, RegionConfig};
    /// use dogpile_core::testing::MapBackend;
    ///
    /// let (clock, time) = Clock::manual(SystemTime::now());
    /// let region: CacheRegion = CacheRegion::new();
    /// region
    ///     .configure(
    ///         RegionConfig::with_backend(MapBackend::default())
    ///             .expiration_time(60)
    ///             .clock(clock)
    ///             .expiration_jitter(Duration::from_secs(60)),
    ///     )
    ///     .unwrap();
    /// let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    /// region.set_multi(keys.iter().map(|k| (k, 1u8))).unwrap();
    /// time.advance(Duration::from_secs(90));
    /// let alive = region.get_multi::<u8, _>(&keys).unwrap().iter().flatten().count();
    /// assert!(alive > 10 && alive < 90, "{alive} of 100 still fresh");
    /// ```
    pub fn expiration_jitter(mut self, max_jitter: Duration) -> Self {
        self.resilience.expiration_jitter = Some(max_jitter);
        self
    }

    /// Seeds the region's random source (XFetch's draws), for reproducible tests; unseeded, it is
    /// seeded from the time. In a map: `PREFIXrandom_seed = 42`.
    ///
    /// ```
    /// let config = dogpile_core::RegionConfig::new("dogpile.cache.memory").random_seed(42);
    /// # let _ = config;
    /// ```
    pub fn random_seed(mut self, seed: u64) -> Self {
        self.resilience.random_seed = Some(seed);
        self
    }
}

/// A number (checked by [`Resilience::check`]); `none` for off.
fn number(key: &str, value: &str) -> Result<Option<f64>> {
    match coerce_string(value) {
        ArgValue::None => Ok(None),
        ArgValue::Int(i) => Ok(Some(i as f64)),
        ArgValue::Float(x) => Ok(Some(x)),
        other => Err(Error::config(
            key,
            format!("expected a number or none; got {other}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_map_sets_them_where_the_other_region_options_are_read() {
        let config = RegionConfig::from_config(
            [
                ("c.backend", "x"),
                ("c.lock_blocking_timeout", "3"),
                ("c.fail_safe_max_duration", "60"),
                ("c.eager_refresh", "0.8"),
                ("c.expiration_jitter", "none"),
            ],
            "c.",
        )
        .unwrap();
        assert_eq!(
            config.resilience,
            Resilience {
                fail_safe_max_duration: Some(Duration::from_secs(60)),
                eager_refresh: Some(0.8),
                ..Resilience::default()
            }
        );
        let err = RegionConfig::from_config([("c.backend", "x"), ("c.hard_timeout", "-2")], "c.")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "c.hard_timeout: expected a number of seconds (0 to 3155760000, a hundred years) or none; got -2"
        );
    }

    #[test]
    fn a_calls_options_go_over_the_regions_but_not_the_jitter() {
        let region = Resilience {
            fail_safe_max_duration: Some(Duration::from_secs(60)),
            soft_timeout: Some(Duration::from_secs(1)),
            expiration_jitter: Some(Duration::from_secs(5)),
            ..Resilience::default()
        };
        let call = Resilience {
            soft_timeout: Some(Duration::from_secs(2)),
            expiration_jitter: Some(Duration::from_secs(50)),
            ..Resilience::default()
        };
        let merged = region.overlaid(&call);
        assert_eq!(merged.soft_timeout, Some(Duration::from_secs(2)));
        assert_eq!(merged.fail_safe_max_duration, Some(Duration::from_secs(60)));
        assert_eq!(merged.expiration_jitter, Some(Duration::from_secs(5)));
        assert_eq!(
            merged.fail_safe_throttle(),
            Some(DEFAULT_FAIL_SAFE_THROTTLE)
        );
        assert_eq!(call.fail_safe_throttle(), None);
    }

    #[test]
    fn every_key_reads_and_bad_values_name_the_key() {
        let mut r = Resilience::default();
        for (k, v) in [
            ("fail_safe_max_duration", "60"),
            ("fail_safe_throttle", "0.5"),
            ("soft_timeout", "1"),
            ("hard_timeout", "2"),
            ("eager_refresh", "0.8"),
            ("early_expiration_beta", "1"),
            ("expiration_jitter", "5"),
            ("random_seed", "7"),
        ] {
            r.read(k, &format!("c.{k}"), v).unwrap();
        }
        assert_eq!(r.fail_safe_max_duration, Some(Duration::from_secs(60)));
        assert_eq!(r.fail_safe_throttle, Some(Duration::from_millis(500)));
        assert_eq!(r.eager_refresh, Some(0.8));
        assert_eq!(r.early_expiration_beta, Some(1.0));
        assert_eq!(r.random_seed, Some(7));
        r.check().unwrap();
        let err = r
            .read("soft_timeout", "c.soft_timeout", "soon")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "c.soft_timeout: expected a number of seconds (0 to 3155760000, a hundred years) or none; got \"soon\""
        );
        r.soft_timeout = Some(Duration::from_secs(3));
        assert!(r
            .check()
            .unwrap_err()
            .to_string()
            .starts_with("soft_timeout:"));
        r.soft_timeout = None;
        r.eager_refresh = Some(1.5);
        assert!(r
            .check()
            .unwrap_err()
            .to_string()
            .starts_with("eager_refresh:"));
        r.eager_refresh = None;
        r.early_expiration_beta = Some(-1.0);
        assert!(r
            .check()
            .unwrap_err()
            .to_string()
            .starts_with("early_expiration_beta:"));
    }
}
