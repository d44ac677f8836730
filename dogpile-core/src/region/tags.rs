//! Tags on the region: [`invalidate_tag`](CacheRegion::invalidate_tag), the reads that honour
//! a call's tags, and the rule that demotes a value created before its tags' invalidations.

use super::{CacheRegion, CacheValue, Configured, CreateOptions};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::lock::Lookup;
use crate::registry::BackendCatalog;
use crate::stats::Counter;
use crate::tags::Floors;

impl Floors {
    /// Whether any of the call's tags was ever invalidated.
    #[inline]
    pub(crate) fn any(&self) -> bool {
        (self.hard | self.soft) != 0
    }

    /// What the tags make of a value created at `created_at`: absent when created before the
    /// last hard invalidation of one of them, stale before the last soft one. (Strictly before,
    /// as for region invalidation.)
    #[inline]
    pub(crate) fn demote<T>(&self, found: Lookup<T>, created_at: Option<Timestamp>) -> Lookup<T> {
        let Some(created) = created_at.map(Timestamp::as_nanos) else {
            return found;
        };
        match found {
            Lookup::Fresh(_) | Lookup::Stale(_) if created < self.hard => Lookup::Absent,
            Lookup::Fresh(v) if created < self.soft => Lookup::Stale(v),
            other => other,
        }
    }
}

impl<C: BackendCatalog> CacheRegion<C> {
    /// The latest invalidations of `tags`. When their times cannot be read from the shared
    /// backend the call treats every value as absent (a hard floor at now): a value a tag may have
    /// invalidated is never served, and the creator runs.
    pub(super) fn tag_floors(&self, cfg: &Configured, tags: &[String]) -> Floors {
        if tags.is_empty() {
            return Floors::default();
        }
        let now = cfg.clock.now();
        cfg.tags.floors(tags, now).unwrap_or_else(|e| {
            self.stats.incr(Counter::BackendErrors);
            tracing::warn!(
                region = self.name(),
                ?tags,
                error = %e,
                "reading tag invalidation times failed; values are treated as absent"
            );
            Floors {
                hard: now.as_nanos().saturating_add(1),
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
        let read = self.lookup_stamped::<T>(&cfg, &mkey, ttl)?;
        Ok(self.tagged_read(&cfg, options, read))
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
        let read = self.lookup_stamped_async::<T>(&cfg, &mkey, ttl).await?;
        Ok(self.tagged_read(&cfg, options, read))
    }

    /// A plain read judged by a call's tags, and counted.
    fn tagged_read<T: CacheValue>(
        &self,
        cfg: &Configured,
        options: &CreateOptions<T>,
        (found, stamp): (Lookup<T>, Option<Timestamp>),
    ) -> Option<T> {
        let found = self.tag_floors(cfg, &options.tags).demote(found, stamp);
        self.count_read(&found);
        found.fresh()
    }
}
