//! The two-tier options of [`RegionConfig`]: a [`LocalTier`] in front of the backend, and the
//! [backplane](crate::backplane) that keeps the tiers of many processes coherent.

use std::sync::Arc;
use std::time::Duration;

use super::{coerce_string, ArgValue, RegionConfig};
use crate::backplane::Backplane;
use crate::error::{Error, Result};
use crate::tier::LocalTier;

/// Where a region's backplane comes from.
#[derive(Clone)]
pub(crate) enum BackplaneChoice {
    /// The shared backend's own ([`Backend::backplane`](crate::Backend::backplane)): Redis
    /// pub/sub on its connection settings.
    FromBackend,
    /// A transport made by the caller.
    Instance(Arc<dyn Backplane>),
}

/// The two-tier options, as a region configuration holds them.
#[derive(Clone, Default)]
pub(crate) struct TierOptions {
    pub(crate) local_tier: Option<LocalTier>,
    pub(crate) backplane: Option<BackplaneChoice>,
    pub(crate) channel: Option<String>,
}

impl RegionConfig {
    /// Puts a [`LocalTier`] in front of the backend: hits are answered in this process, misses
    /// read the backend and fill the tier. With a [`backplane`](RegionConfig::backplane), the
    /// other processes' writes drop this one's copies; without one, a copy may be as stale as the
    /// tier's expiration allows.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dogpile_core::{CacheRegion, LocalTier, RegionConfig};
    /// use dogpile_core::testing::MapBackend;
    ///
    /// let region: CacheRegion = CacheRegion::new();
    /// region
    ///     .configure(
    ///         RegionConfig::with_backend(MapBackend::bytes())
    ///             .local_tier(LocalTier::with_store(MapBackend::default()).expiration_time(Duration::from_secs(5))),
    ///     )
    ///     .unwrap();
    /// region.set("k", 1u32).unwrap();
    /// assert_eq!(region.get::<u32>("k").unwrap(), Some(1)); // from the backend, copied
    /// assert_eq!(region.get::<u32>("k").unwrap(), Some(1)); // from the local tier
    /// assert_eq!(region.stats().local_hits, 1);
    /// ```
    pub fn local_tier(mut self, tier: LocalTier) -> Self {
        self.tiers.local_tier = Some(tier);
        self
    }

    /// Announces this region's writes and invalidations on `backplane`, and applies the other
    /// processes': their writes drop local copies, their region and tag invalidations hold here.
    /// Region invalidation times are also kept in the backend, for processes started later
    /// (unless a [`region_invalidator`](RegionConfig::region_invalidator) of your own is set:
    /// then it decides). See [`tier`](crate::tier) for what is served while the link is down.
    ///
    /// ```
    /// use dogpile_core::{CacheRegion, RegionConfig};
    /// use dogpile_core::testing::{LoopbackBackplane, MapBackend};
    ///
    /// let (shared, bus) = (std::sync::Arc::new(MapBackend::bytes()), LoopbackBackplane::new());
    /// let process = || {
    ///     let region: CacheRegion = CacheRegion::named("orders");
    ///     region
    ///         .configure(RegionConfig::with_backend(shared.clone()).expiration_time(60).backplane(bus.clone()))
    ///         .unwrap();
    ///     region
    /// };
    /// let (a, b) = (process(), process());
    /// b.set("o:1", 1u32).unwrap();
    /// # std::thread::sleep(std::time::Duration::from_millis(2));
    /// a.invalidate(true);
    /// assert_eq!(b.get::<u32>("o:1").unwrap(), None); // held in b too
    /// assert_eq!(process().get::<u32>("o:1").unwrap(), None); // and in a process started later
    /// ```
    pub fn backplane(mut self, backplane: impl Backplane) -> Self {
        self.tiers.backplane = Some(BackplaneChoice::Instance(Arc::new(backplane)));
        self
    }

    /// [`backplane`](RegionConfig::backplane) over the backend's own server (Redis pub/sub on the
    /// same connection settings); configuring fails for a backend that has none.
    pub fn backplane_from_backend(mut self) -> Self {
        self.tiers.backplane = Some(BackplaneChoice::FromBackend);
        self
    }

    /// The backplane channel (default `dogpile:REGION_NAME`); the regions of every process that
    /// share a cache must use the same one, and different regions different ones. Also the
    /// prefix of the keys that hold the region's invalidation and tag times in the backend.
    pub fn backplane_channel(mut self, channel: impl Into<String>) -> Self {
        self.tiers.channel = Some(channel.into());
        self
    }
}

/// A number of seconds, more than zero, from a config map value (the tier's bounds cannot be
/// zero or unset).
fn positive_seconds(key: &str, value: &str) -> Result<Duration> {
    match super::seconds(key, value) {
        Ok(Some(d)) if !d.is_zero() => Ok(d),
        _ => Err(Error::config(
            key,
            format!(
                "expected a number of seconds, more than zero; got {}",
                coerce_string(value)
            ),
        )),
    }
}

/// The config map keys of the two-tier options, after the prefix.
pub(crate) const KEYS: [&str; 6] = [
    "local_tier",
    "local_tier.max_size",
    "local_tier.expiration_time",
    "local_tier.max_silence",
    "backplane",
    "backplane_channel",
];

/// The two-tier options as a config map's keys give them, in any order: finished into
/// [`TierOptions`] once every key is read, so `local_tier = false` means off whether it comes
/// before or after a `local_tier.*` key.
#[derive(Default)]
pub(crate) struct TierKeys {
    options: TierOptions,
    /// `local_tier = true|false`, and the key that said it.
    switch: Option<(bool, String)>,
    /// The tier's own options, and the first key that gave one.
    tier: Option<(LocalTier, String)>,
}

impl TierKeys {
    /// Reads one key (`rest` is the key after the prefix); false when it is not one of these.
    pub(crate) fn read(&mut self, rest: &str, key: &str, value: &str) -> Result<bool> {
        if let Some(option) = rest.strip_prefix("local_tier.") {
            let (tier, _) = self
                .tier
                .get_or_insert_with(|| (LocalTier::new(), key.to_owned()));
            match option {
                "max_size" => match coerce_string(value) {
                    ArgValue::Int(n) if n > 0 => tier.max_size = Some(n as u64),
                    other => {
                        return Err(Error::config(
                            key,
                            format!("expected a number of entries, more than zero; got {other}"),
                        ))
                    }
                },
                "expiration_time" => tier.expiration = positive_seconds(key, value)?,
                "max_silence" => tier.max_silence = positive_seconds(key, value)?,
                _ => {
                    return Err(Error::config(
                        key,
                        "unknown local tier option; dogpile reads local_tier.max_size, local_tier.expiration_time and local_tier.max_silence",
                    ))
                }
            }
            return Ok(true);
        }
        match rest {
            "local_tier" => self.switch = Some((super::boolean(key, value)?, key.to_owned())),
            "backplane" => match coerce_string(value) {
                ArgValue::Bool(true) => self.options.backplane = Some(BackplaneChoice::FromBackend),
                ArgValue::Bool(false) => self.options.backplane = None,
                other => {
                    return Err(Error::config(
                        key,
                        format!(
                            "expected true (the backend's own backplane) or false, got {other}"
                        ),
                    ))
                }
            },
            "backplane_channel" => {
                let channel = value.trim();
                if channel.is_empty() {
                    return Err(Error::config(
                        key,
                        "expected a channel name, got an empty string",
                    ));
                }
                self.options.channel = Some(channel.to_owned());
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The options, once every key is read. `local_tier = false` beside a `local_tier.*` option
    /// is an error: one of the two is a mistake.
    pub(crate) fn finish(mut self) -> Result<TierOptions> {
        self.options.local_tier = match (self.switch, self.tier) {
            (Some((false, off)), Some((_, option))) => {
                return Err(Error::config(
                    off,
                    format!(
                        "the local tier is switched off here, but {option} sets one of its options"
                    ),
                ))
            }
            (Some((false, _)), None) => None,
            (_, Some((tier, _))) => Some(tier),
            (Some((true, _)), None) => Some(LocalTier::new()),
            (None, None) => None,
        };
        Ok(self.options)
    }
}
