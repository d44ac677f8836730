//! The region's configuration slot: read on every cache hit, replaced by `configure`.
//!
//! Readers take no lock and write no shared memory: they enter a `seize` epoch guard (the same
//! reclamation scheme papaya's map uses) and read one pointer. A replaced configuration is freed
//! once no reader can still see it. `arc-swap`, the usual tool, issues a full fence on every
//! load, which cost as much as the map lookup itself on the hit path.

use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, LazyLock};

use seize::{Collector, Guard, LocalGuard};

/// One collector for every region: configurations are replaced rarely, so they share it.
static COLLECTOR: LazyLock<Collector> = LazyLock::new(Collector::new);

/// An atomically replaceable `Option<Arc<T>>`.
pub(crate) struct Slot<T> {
    ptr: AtomicPtr<Arc<T>>,
}

impl<T: Send + Sync> Slot<T> {
    /// An empty slot.
    pub(crate) const fn empty() -> Self {
        Slot {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// Calls `f` with the current value. The value stays valid while `f` runs; keep `f` short
    /// (clone the `Arc` to keep the value longer), since it holds back reclamation.
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(Option<&Arc<T>>) -> R) -> R {
        let guard = COLLECTOR.enter();
        let ptr = guard.protect(&self.ptr, Ordering::Acquire);
        // SAFETY: `ptr` is null or came from `Box::into_raw` in `store`; the guard keeps it from
        // being reclaimed until it is dropped, after `f` returns.
        f(unsafe { ptr.as_ref() })
    }

    /// The current value, held for as long as the returned read lives: [`with`](Self::with)
    /// without a closure, for a caller whose own code must stay inline. Keep it short, as for
    /// `with`. (`with` does not call this: written as `f(self.pin().get())`, it changed what the
    /// compiler inlined around the decorated async hit, which then cost 55 instructions more.)
    #[inline(always)]
    pub(crate) fn pin(&self) -> Pinned<'_, T> {
        let guard = COLLECTOR.enter();
        let ptr = guard.protect(&self.ptr, Ordering::Acquire);
        Pinned {
            _guard: guard,
            ptr,
            _slot: std::marker::PhantomData,
        }
    }

    /// The current value.
    pub(crate) fn get(&self) -> Option<Arc<T>> {
        self.with(|v| v.cloned())
    }

    /// Whether there is a value.
    pub(crate) fn is_some(&self) -> bool {
        !self.ptr.load(Ordering::Acquire).is_null()
    }

    /// Replaces the value; the old one is freed when no reader can see it any more.
    pub(crate) fn store(&self, value: Arc<T>) {
        let new = Box::into_raw(Box::new(value));
        let old = self.ptr.swap(new, Ordering::AcqRel);
        if !old.is_null() {
            // Retired through a guard of this thread's, which delays its reclamation until every
            // reader is done, including one this thread still holds further up its stack (a
            // `with` or a `pin` around code that configures the region again): seize allows
            // the current thread to read a value retired this way, not one `Collector::retire`
            // took.
            let guard = COLLECTOR.enter();
            // SAFETY: `old` came from `Box::into_raw` and is no longer reachable from the slot
            // for a reader that comes after the swap; readers that loaded it hold guards, which
            // reclamation waits for.
            unsafe { guard.defer_retire(old, seize::reclaim::boxed) };
        }
    }
}

/// A slot's value as read by [`Slot::pin`]: valid while this lives (its guard holds back the
/// value's reclamation), and borrowed from it, so no reference outlives the guard.
pub(crate) struct Pinned<'s, T> {
    _guard: LocalGuard<'static>,
    /// Null, or the value the guard protects.
    ptr: *mut Arc<T>,
    _slot: std::marker::PhantomData<&'s Slot<T>>,
}

impl<T> Pinned<'_, T> {
    /// The value, if the slot had one.
    #[inline(always)]
    pub(crate) fn get(&self) -> Option<&Arc<T>> {
        // SAFETY: `ptr` is null or came from `Box::into_raw` in `store`; the guard this read
        // owns keeps it from being reclaimed, and the reference borrows the read.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> Drop for Slot<T> {
    fn drop(&mut self) {
        let ptr = *self.ptr.get_mut();
        if !ptr.is_null() {
            // SAFETY: `&mut self` means no reader holds this slot's value through it: every
            // reader borrows the slot for the length of its guard.
            drop(unsafe { Box::from_raw(ptr) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Counted(Arc<AtomicUsize>, u32);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_pinned_read_keeps_its_value_alive_while_the_slot_moves_on() {
        let (pinned_drops, other_drops) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let slot: Slot<Counted> = Slot::empty();
        assert!(slot.pin().get().is_none());
        slot.store(Arc::new(Counted(pinned_drops.clone(), 1)));
        let read = slot.pin();
        // Enough replacements to fill seize's batches many times over: without the read's
        // guard, the pinned value would be reclaimed among them.
        for i in 2..2_000 {
            slot.store(Arc::new(Counted(other_drops.clone(), i)));
        }
        assert_eq!(read.get().map(|c| c.1), Some(1));
        assert_eq!(
            pinned_drops.load(Ordering::SeqCst),
            0,
            "reclaimed while pinned"
        );
        drop(read);
        // With no read held, the same replacements are reclaimed: the pressure above was real.
        for i in 2_000..4_000 {
            slot.store(Arc::new(Counted(other_drops.clone(), i)));
        }
        assert!(
            other_drops.load(Ordering::SeqCst) > 0,
            "nothing was ever reclaimed"
        );
        assert_eq!(slot.pin().get().map(|c| c.1), Some(3_999));
    }

    #[test]
    fn replaced_values_are_freed_and_readers_see_old_or_new() {
        let drops = Arc::new(AtomicUsize::new(0));
        let slot: Arc<Slot<Counted>> = Arc::new(Slot::empty());
        assert!(slot.with(|v| v.is_none()));
        slot.store(Arc::new(Counted(drops.clone(), 0)));
        let reader = {
            let slot = slot.clone();
            std::thread::spawn(move || {
                let mut last = 0;
                for _ in 0..100_000 {
                    let n = slot.with(|v| v.map(|c| c.1)).unwrap();
                    assert!(n >= last, "values go forward");
                    last = n;
                }
            })
        };
        for i in 1..=100 {
            slot.store(Arc::new(Counted(drops.clone(), i)));
        }
        reader.join().unwrap();
        assert_eq!(slot.get().unwrap().1, 100);
        drop(slot);
        // Retired values are freed in batches; the last one with the slot. All 101 are freed
        // at the latest when the collector reclaims, which this test cannot force, so it
        // checks the one freed with the slot.
        assert!(drops.load(Ordering::SeqCst) >= 1);
    }
}
