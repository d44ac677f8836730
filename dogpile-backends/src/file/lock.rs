//! The file store's dogpile lock: per-key locks made of open-file-description byte-range locks
//! on one file, shared within a process by the keys of one slot.
//!
//! **Slots.** A key maps to byte [`slot`]`(key)` of the lock file, one of 2^20: every process
//! computes the same byte, and the kernel's lock on it is what excludes other processes. Two keys
//! can share a slot (a 1,000-key batch holds such a pair about one time in three), so the lock
//! unit is the slot, not the key: a process takes a slot's kernel lock once, through its one
//! open file description of the lock file ([`LockFile`]), and every key of the process on that
//! slot shares it. A table per lock file records which keys hold each slot, so
//! - the same key held twice in one process is refused (the table says so), as it must be;
//! - a slot-mate of a held key is taken at once, without a kernel call: no caller ever waits on a
//!   lock its own process holds for another key, so a batch holding two slot-mates, or a creator
//!   asking for its key's slot-mate, cannot deadlock on itself;
//! - the kernel lock is let go when the slot's last key is released.
//!
//! Across processes, slot-mates serialize: a process waits while another holds the slot for any
//! of its keys. That never deadlocks as long as no caller waits while it holds a lock, which the
//! region's lock algorithm guarantees.
//!
//! **Waiting.** No call blocks in the kernel: taking a lock is `F_OFD_SETLK` (never waits), and a
//! wait polls (`F_OFD_GETLK`, every 0.5 ms doubling to 2 ms) for another process's holder, or
//! sleeps on a condition variable for one of this process, and returns by its deadline either
//! way. The async wait runs that poll on the `blocking` crate's thread pool, in slices of at most
//! [`ASYNC_SLICE`], so it never blocks an executor thread, needs no particular runtime, and a
//! dropped wait frees its pool thread soon after.
//!
//! **Processes.** The kernel drops a dead process's locks (its descriptions close), so a killed
//! creator never blocks the others. The lock file is opened close-on-exec; a child made by
//! `fork` without `exec` would share the parent's description, and so its locks.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use dogpile_core::{BoxFuture, CacheMutex, Error, Result};

use crate::backoff::Backoff;

/// Lock slots: keys share a byte when their hashes agree modulo this.
const SLOTS: u64 = 1 << 20;

/// The longest pause of a poll for another process's holder (the first is 0.5 ms).
const POLL_MAX: Duration = Duration::from_millis(2);

/// The longest an async wait occupies a pool thread in one go: a dropped wait's thread is free
/// again by then.
const ASYNC_SLICE: Duration = Duration::from_millis(100);

/// The byte of the lock file that locks `key`: FNV-1a of the key modulo 2^20, stable across
/// processes and builds, as every process must pick the same byte.
pub fn slot(key: &str) -> u64 {
    dogpile_core::stable_hash::fnv1a(key.as_bytes()) % SLOTS
}

/// One lock file as this process sees it: its one open file description, which holds all of
/// the process's kernel locks on the file, and which keys hold each locked slot.
pub(crate) struct LockFile {
    path: PathBuf,
    /// `(st_dev, st_ino)`: one `LockFile` per file per process, whatever path names it.
    id: (u64, u64),
    file: File,
    /// Locked slot -> the keys of this process that hold it (rarely more than one). A slot is in
    /// the map exactly while this description holds its kernel lock.
    slots: Mutex<HashMap<u64, Vec<Arc<str>>>>,
    /// Notified whenever a key is released, for waiters on a key held in this process.
    released: Condvar,
}

/// Every lock file open in this process: a second backend on the same file shares its
/// description, or its locks would conflict with the first one's.
static OPEN_FILES: Mutex<Vec<Weak<LockFile>>> = Mutex::new(Vec::new());

/// Opens (creating if needed) the lock file at `path`, or finds it already open.
pub(crate) fn open(path: &Path) -> io::Result<Arc<LockFile>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let meta = file.metadata()?;
    let id = (meta.dev(), meta.ino());
    let mut open_files = OPEN_FILES.lock();
    open_files.retain(|w| w.strong_count() > 0);
    if let Some(found) = open_files
        .iter()
        .filter_map(Weak::upgrade)
        .find(|f| f.id == id)
    {
        return Ok(found);
    }
    let opened = Arc::new(LockFile {
        path: path.to_owned(),
        id,
        file,
        slots: Mutex::new(HashMap::new()),
        released: Condvar::new(),
    });
    open_files.push(Arc::downgrade(&opened));
    Ok(opened)
}

impl std::fmt::Debug for LockFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LockFile").field(&self.path).finish()
    }
}

/// One `fcntl` byte-range call on `slot`; returns the `flock` (for `F_OFD_GETLK`).
fn fcntl_lock(
    file: &File,
    cmd: libc::c_int,
    kind: libc::c_int,
    slot: u64,
) -> io::Result<libc::flock> {
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = slot as _;
    fl.l_len = 1;
    fl.l_pid = 0; // required by the OFD commands
    loop {
        // SAFETY: the descriptor is open for the call, and `fl` is a valid, live `flock`.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
        if r != -1 {
            return Ok(fl);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn would_block(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES))
}

/// What a wait found when it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waited {
    /// The key is free (or may be: the caller looks again).
    Free,
    /// The deadline passed with the key still held.
    TimedOut,
}

impl LockFile {
    fn error(&self, what: &str, e: io::Error) -> Error {
        Error::backend(
            format!("{} {}", super::NAME, self.path.display()),
            format!("{what} the dogpile lock file failed: {e}"),
            e,
        )
    }

    /// Takes `key` on `slot` for this process if neither this process holds the key nor another
    /// process the slot. Never waits.
    fn try_take(&self, slot: u64, key: &Arc<str>) -> Result<bool> {
        let mut slots = self.slots.lock();
        if let Some(keys) = slots.get_mut(&slot) {
            if keys.iter().any(|k| k == key) {
                return Ok(false);
            }
            // The slot is ours already, for a slot-mate: share it.
            keys.push(key.clone());
            return Ok(true);
        }
        match fcntl_lock(&self.file, libc::F_OFD_SETLK, libc::F_WRLCK, slot) {
            Ok(_) => {
                slots.insert(slot, vec![key.clone()]);
                Ok(true)
            }
            Err(e) if would_block(&e) => Ok(false),
            Err(e) => Err(self.error("locking", e)),
        }
    }

    /// Gives back `key`'s share of `slot`, and the kernel lock with the slot's last key. The
    /// caller has checked that it holds the key.
    fn give_back(&self, slot: u64, key: &str) -> Result<()> {
        let mut slots = self.slots.lock();
        let Some(keys) = slots.get_mut(&slot) else {
            return Ok(());
        };
        keys.retain(|k| &**k != key);
        let unlocked = if keys.is_empty() {
            slots.remove(&slot);
            fcntl_lock(&self.file, libc::F_OFD_SETLK, libc::F_UNLCK, slot)
                .map(drop)
                .map_err(|e| self.error("unlocking", e))
        } else {
            Ok(())
        };
        drop(slots);
        self.released.notify_all();
        unlocked
    }

    /// Whether another process holds `slot` exclusively, asked of the kernel. Only meaningful
    /// while this process does not hold the slot (a description never conflicts with itself).
    fn held_elsewhere(&self, slot: u64) -> Result<bool> {
        // Asks whether a shared lock would be refused: only an exclusive holder refuses it.
        let fl = fcntl_lock(&self.file, libc::F_OFD_GETLK, libc::F_RDLCK, slot)
            .map_err(|e| self.error("testing", e))?;
        Ok(i32::from(fl.l_type) != libc::F_UNLCK)
    }

    /// Whether `key` is held, by this process or (for its slot) another.
    fn locked(&self, slot: u64, key: &str) -> Result<bool> {
        if let Some(keys) = self.slots.lock().get(&slot) {
            // This process holds the slot, so no other process holds any of its keys.
            return Ok(keys.iter().any(|k| &**k == key));
        }
        self.held_elsewhere(slot)
    }

    /// Waits until `key` may be free, or until `deadline`.
    fn wait(&self, slot: u64, key: &str, deadline: Instant) -> Result<Waited> {
        let mut backoff = Backoff::up_to(POLL_MAX);
        loop {
            let mut slots = self.slots.lock();
            match slots.get(&slot) {
                Some(keys) if keys.iter().any(|k| &**k == key) => {
                    // Held in this process: its release notifies.
                    if self.released.wait_until(&mut slots, deadline).timed_out() {
                        let still = slots
                            .get(&slot)
                            .is_some_and(|keys| keys.iter().any(|k| &**k == key));
                        return Ok(if still {
                            Waited::TimedOut
                        } else {
                            Waited::Free
                        });
                    }
                }
                // The slot is this process's, for other keys: nobody holds this one.
                Some(_) => return Ok(Waited::Free),
                None => {
                    drop(slots);
                    if !self.held_elsewhere(slot)? {
                        return Ok(Waited::Free);
                    }
                    let Some(pause) = backoff.next_pause(deadline) else {
                        return Ok(Waited::TimedOut);
                    };
                    std::thread::sleep(pause);
                }
            }
        }
    }
}

/// A handle on one key's lock in one lock file.
pub(crate) fn mutex(file: Arc<LockFile>, key: &str) -> Option<Box<dyn CacheMutex>> {
    Some(Box::new(FileMutex {
        slot: slot(key),
        key: Arc::from(key),
        file,
        held: AtomicBool::new(false),
    }))
}

struct FileMutex {
    file: Arc<LockFile>,
    slot: u64,
    key: Arc<str>,
    /// Whether this handle holds the key: only the handle that took it gives it back.
    held: AtomicBool,
}

impl FileMutex {
    fn not_held(&self) -> Error {
        Error::backend_msg(
            format!("{} {}", super::NAME, self.file.path.display()),
            format!(
                "releasing the dogpile lock of {:?}: No acquire held for key {:?}",
                &*self.key, &*self.key
            ),
        )
    }
}

impl CacheMutex for FileMutex {
    fn try_acquire(&self) -> Result<bool> {
        if self.held.load(Ordering::Acquire) {
            return Ok(false);
        }
        let taken = self.file.try_take(self.slot, &self.key)?;
        if taken {
            self.held.store(true, Ordering::Release);
        }
        Ok(taken)
    }

    fn wait(&self, deadline: Instant) -> Result<()> {
        self.file.wait(self.slot, &self.key, deadline).map(drop)
    }

    fn release(&self) -> Result<()> {
        // Only a handle that took the key gives it back, once: a stray release must not free
        // another holder's lock, nor another key's share of the slot.
        if !self.held.swap(false, Ordering::AcqRel) {
            return Err(self.not_held());
        }
        self.file.give_back(self.slot, &self.key)
    }

    fn locked(&self) -> Result<bool> {
        if self.held.load(Ordering::Acquire) {
            return Ok(true);
        }
        self.file.locked(self.slot, &self.key)
    }

    // `try_acquire_async` and `release_async` run in place, not on the pool as the trait's
    // defaults do: neither ever waits (an in-process table and a non-blocking `fcntl` on a file
    // already open), so a thread hop would only cost time, and with no await point inside, a
    // dropped future cannot leave a key taken by nobody or released twice.
    fn try_acquire_async(self: Arc<Self>) -> BoxFuture<'static, Result<bool>> {
        Box::pin(async move { self.try_acquire() })
    }

    fn release_async(self: Arc<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move { self.release() })
    }

    // On the pool in slices rather than in one go (the default): a dropped wait frees its pool
    // thread within a slice instead of holding it until the deadline.
    fn wait_async(self: Arc<Self>, deadline: Instant) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            loop {
                let until = deadline.min(Instant::now() + ASYNC_SLICE);
                let this = self.clone();
                let waited =
                    blocking::unblock(move || this.file.wait(this.slot, &this.key, until)).await?;
                if waited == Waited::Free || Instant::now() >= deadline {
                    return Ok(());
                }
            }
        })
    }
}

impl Drop for FileMutex {
    fn drop(&mut self) {
        // A handle dropped while holding (its owner forgot, or was cancelled) gives the key back,
        // so the slot is not locked for the rest of the process's life.
        if self.held.load(Ordering::Acquire) {
            if let Err(e) = self.release() {
                tracing::warn!(error = %e, "releasing a dropped dogpile file lock failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn lock_file(tag: &str) -> (Dir, Arc<LockFile>) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "dogpile-lock-unit-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = open(&dir.join("l.lock")).unwrap();
        (Dir(dir), file)
    }

    fn handle(file: &Arc<LockFile>, key: &str) -> Box<dyn CacheMutex> {
        mutex(file.clone(), key).unwrap()
    }

    /// Two keys on one slot, found by brute force with the real slot function.
    fn slot_mates(prefix: &str) -> (String, String) {
        let mut seen = HashMap::new();
        for i in 0u64.. {
            let k = format!("{prefix}{i}");
            if let Some(other) = seen.insert(slot(&k), k.clone()) {
                return (other, k);
            }
        }
        unreachable!()
    }

    /// Another process's view of the lock file: a description of its own.
    fn other_description(file: &LockFile) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file.path)
            .unwrap()
    }

    #[test]
    fn the_slot_function_is_stable() {
        // FNV-1a 64 test vectors ("" and "a"), modulo 2^20: what every build must compute.
        assert_eq!(slot(""), 0xcbf2_9ce4_8422_2325 % SLOTS);
        assert_eq!(slot("a"), 0xaf63_dc4c_8601_ec8c % SLOTS);
    }

    #[test]
    fn the_same_key_excludes_and_slot_mates_share() {
        let (_dir, file) = lock_file("share");
        let (a, b) = slot_mates("share:");
        let a1 = handle(&file, &a);
        let a2 = handle(&file, &a);
        let b1 = handle(&file, &b);
        assert!(a1.try_acquire().unwrap());
        assert!(!a2.try_acquire().unwrap(), "one key, two holders");
        assert!(a2.locked().unwrap());
        assert!(!b1.locked().unwrap());
        assert!(b1.try_acquire().unwrap(), "a slot-mate must not wait");
        // Another process is kept out of the slot while either key holds it.
        let other = other_description(&file);
        let s = slot(&a);
        assert!(fcntl_lock(&other, libc::F_OFD_SETLK, libc::F_WRLCK, s).is_err());
        a1.release().unwrap();
        assert!(fcntl_lock(&other, libc::F_OFD_SETLK, libc::F_WRLCK, s).is_err());
        assert!(!a2.locked().unwrap());
        b1.release().unwrap();
        fcntl_lock(&other, libc::F_OFD_SETLK, libc::F_WRLCK, s).unwrap();
        // Now the other process holds the slot: both keys look locked and cannot be taken.
        assert!(a2.locked().unwrap() && b1.locked().unwrap());
        assert!(!a2.try_acquire().unwrap() && !b1.try_acquire().unwrap());
        fcntl_lock(&other, libc::F_OFD_SETLK, libc::F_UNLCK, s).unwrap();
        assert!(a2.try_acquire().unwrap());
        a2.release().unwrap();
    }

    #[test]
    fn a_second_open_of_one_file_shares_its_locks() {
        let (_dir, file) = lock_file("reopen");
        let again = open(&file.path).unwrap();
        assert!(Arc::ptr_eq(&file, &again));
        let (a, b) = slot_mates("reopen:");
        let m = handle(&file, &a);
        assert!(m.try_acquire().unwrap());
        let mate = handle(&again, &b);
        assert!(mate.try_acquire().unwrap());
        m.release().unwrap();
        mate.release().unwrap();
    }

    #[test]
    fn waits_end_at_their_deadline_and_on_release() {
        let (_dir, file) = lock_file("wait");
        let holder = handle(&file, "k");
        let waiter = handle(&file, "k");
        assert!(holder.try_acquire().unwrap());
        // Held here: the wait times out.
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(file.wait(slot("k"), "k", soon).unwrap(), Waited::TimedOut);
        assert!(Instant::now() >= soon);
        // Released from another thread: the wait ends.
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            holder.release().unwrap();
        });
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(file.wait(slot("k"), "k", far).unwrap(), Waited::Free);
        t.join().unwrap();
        assert!(waiter.try_acquire().unwrap());
        waiter.release().unwrap();

        // Held by another process: polled, and the deadline is kept.
        let other = other_description(&file);
        fcntl_lock(&other, libc::F_OFD_SETLK, libc::F_WRLCK, slot("k")).unwrap();
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(file.wait(slot("k"), "k", soon).unwrap(), Waited::TimedOut);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(other); // closing the description drops its lock, as a dying process does
        });
        assert_eq!(file.wait(slot("k"), "k", far).unwrap(), Waited::Free);
        t.join().unwrap();
    }

    #[test]
    fn one_holder_per_key_while_slot_mates_come_and_go() {
        // Threads take and give back two slot-mates over and over with fresh handles: each key
        // has one holder at a time, and the kernel lock is let go once neither is held.
        use std::sync::atomic::AtomicUsize;
        let (_dir, file) = lock_file("stress");
        let (a, b) = slot_mates("stress:");
        let holders = [AtomicUsize::new(0), AtomicUsize::new(0)];
        let other = other_description(&file);
        std::thread::scope(|s| {
            for t in 0..6 {
                let (file, holders, keys) = (&file, &holders, [&a, &b]);
                s.spawn(move || {
                    for _ in 0..3_000 {
                        let which = t % 2;
                        let m = handle(file, keys[which]);
                        if m.try_acquire().unwrap() {
                            assert_eq!(holders[which].fetch_add(1, Ordering::SeqCst), 0);
                            std::hint::spin_loop();
                            holders[which].fetch_sub(1, Ordering::SeqCst);
                            m.release().unwrap();
                        }
                    }
                });
            }
        });
        assert!(file.slots.lock().is_empty());
        fcntl_lock(&other, libc::F_OFD_SETLK, libc::F_WRLCK, slot(&a)).unwrap();
    }

    #[test]
    fn a_dropped_holder_gives_its_key_back() {
        let (_dir, file) = lock_file("drop");
        let m = handle(&file, "k");
        assert!(m.try_acquire().unwrap());
        drop(m);
        assert!(file.slots.lock().is_empty());
        let m = handle(&file, "k");
        assert!(m.try_acquire().unwrap());
        m.release().unwrap();
    }
}
