//! Tags on the region: [`invalidate_tag`](CacheRegion::invalidate_tag), the reads that honour
//! a call's tags, and the rule that demotes a value created before its tags' invalidations.

use super::{CacheRegion, CacheValue, Configured, CreateOptions};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::lock::Lookup;
use crate::registry::BackendCatalog;
use crate::stats::Counter;
use crate::tags::Floors;

impl<C: BackendCatalog> CacheRegion<C> {
    /// The latest invalidations of `tags`. When their times cannot be read from the shared
    /// backend the call treats every value as absent (a hard floor at now): a value a tag may have
    /// invalidated is never served, and the creator runs.
    #[inline]
    pub(super) fn tag_floors(&self, cfg: &Configured, tags: &[String]) -> Floors {
        if tags.is_empty() {
            return Floors::default();
        }
        let read = cfg.tags.floors(tags, cfg.clock.now_coarse());
        self.floors_or_absent(cfg, tags, read)
    }

    /// [`tag_floors`](Self::tag_floors) for async callers: the times known here are used at once;
    /// a read of the shared backend runs on the blocking pool, not on the executor's thread.
    pub(super) async fn tag_floors_async(&self, cfg: &Configured, tags: &[String]) -> Floors {
        if tags.is_empty() {
            return Floors::default();
        }
        let now = cfg.clock.now_coarse();
        if let Some(known) = cfg.tags.known_floors(tags, now) {
            return known;
        }
        let (times, owned) = (cfg.tags.clone(), tags.to_vec());
        let read = blocking::unblock(move || times.floors(&owned, now)).await;
        self.floors_or_absent(cfg, tags, read)
    }

    /// The floors read, or, when they could not be read, a hard floor at now: every value counts
    /// as absent, so a value a tag may have invalidated is never served.
    fn floors_or_absent(&self, cfg: &Configured, tags: &[String], read: Result<Floors>) -> Floors {
        read.unwrap_or_else(|e| {
            self.stats.incr(Counter::BackendErrors);
            tracing::warn!(
                region = self.name(),
                ?tags,
                error = %e,
                "reading tag invalidation times failed; values are treated as absent"
            );
            Floors {
                hard: cfg.clock.now().as_nanos().saturating_add(1),
                soft: 0,
            }
        })
    }

    /// Invalidates every value carrying `tag`, in every process that shares the backend: values
    /// created before now count as absent (`hard`) or expired (`soft`) for the calls that name
    /// the tag ([`CreateOptions::tags`], `#[cache_on_arguments(tags = [...])]`). One small write
    /// to the backend (where processes started later read it) and, with a backplane, one message;
    /// no key is visited.
    ///
    /// ```
    /// use dogpile_core::{CacheRegion, CreateOptions, RegionConfig};
    /// # let region: CacheRegion = CacheRegion::new();
    /// # region.configure(RegionConfig::with_backend(dogpile_core::testing::MapBackend::bytes())).unwrap();
    /// let of_user = |id: u32| CreateOptions::new().tags([format!("user:{id}")]);
    /// region.get_or_create_with("name:7", &of_user(7), || "Ada".to_string()).unwrap();
    /// region.get_or_create_with("name:8", &of_user(8), || "Alan".to_string()).unwrap();
    /// # std::thread::sleep(std::time::Duration::from_millis(2));
    /// region.invalidate_tag("user:7", true).unwrap();
    /// assert_eq!(region.get_with_options::<String>("name:7", &of_user(7)).unwrap(), None);
    /// assert_eq!(region.get_with_options::<String>("name:8", &of_user(8)).unwrap().as_deref(), Some("Alan"));
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NotConfigured`](crate::Error::NotConfigured) before
    /// [`configure`](CacheRegion::configure); the backend's error when the tag's time cannot be
    /// stored (nothing is invalidated then, here or elsewhere).
    pub fn invalidate_tag(&self, tag: &str, hard: bool) -> Result<()> {
        let cfg = self.configured()?;
        cfg.tags.invalidate(tag, hard, cfg.clock.now())
    }

    /// [`get`](CacheRegion::get) with a call's options: its `expiration_time`, and its tags (a
    /// value a tag invalidated is `None`).
    ///
    /// # Errors
    ///
    /// As [`get`](CacheRegion::get).
    pub fn get_with_options<T: CacheValue>(
        &self,
        key: &str,
        options: &CreateOptions<T>,
    ) -> Result<Option<T>> {
        let cfg = self.configured()?;
        let mkey = cfg.mangle(key);
        let ttl = cfg.ttl(options.expiration_time.as_ref());
        let floors = self.tag_floors(&cfg, &options.tags);
        let read = self.lookup_stamped::<T>(&cfg, &mkey, ttl)?;
        Ok(self.tagged_read(floors, read))
    }

    /// [`get_with_options`](CacheRegion::get_with_options) for async callers.
    ///
    /// # Errors
    ///
    /// As [`get`](CacheRegion::get).
    pub async fn get_with_options_async<T: CacheValue>(
        &self,
        key: &str,
        options: &CreateOptions<T>,
    ) -> Result<Option<T>> {
        let cfg = self.configured()?;
        let mkey = cfg.mangle(key);
        let ttl = cfg.ttl(options.expiration_time.as_ref());
        let floors = self.tag_floors_async(&cfg, &options.tags).await;
        let read = self.lookup_stamped_async::<T>(&cfg, &mkey, ttl).await?;
        Ok(self.tagged_read(floors, read))
    }

    /// A plain read judged by a call's tags, and counted.
    fn tagged_read<T: CacheValue>(
        &self,
        floors: Floors,
        (found, stamp): (Lookup<T>, Option<Timestamp>),
    ) -> Option<T> {
        let found = floors.demote(found, stamp);
        self.count_read(&found);
        found.fresh()
    }
}
