//! Per-key locks as open-file-description byte-range locks on one file.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use dogpile_core::{CacheMutex, Error, Result};

/// Lock slots: keys share a byte when their hashes agree modulo this.
const SLOTS: u64 = 1 << 20;

pub(super) fn open(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

fn slot(key: &str) -> u64 {
    // FNV-1a: stable across processes and builds, as every process must pick the same byte.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % SLOTS
}

pub(super) fn mutex(path: Arc<PathBuf>, key: &str) -> Option<Box<dyn CacheMutex>> {
    Some(Box::new(FileMutex {
        path,
        slot: slot(key),
        held: Mutex::new(None),
    }))
}

struct FileMutex {
    path: Arc<PathBuf>,
    slot: u64,
    /// The open file holding the lock, while held: closing it releases the lock.
    held: Mutex<Option<File>>,
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

impl FileMutex {
    fn open(&self) -> Result<File> {
        open(&self.path).map_err(|e| self.error("opening", e))
    }

    fn error(&self, what: &str, e: io::Error) -> Error {
        Error::backend(
            format!("{} {}", super::NAME, self.path.display()),
            format!("{what} the dogpile lock file failed: {e}"),
            e,
        )
    }
}

impl CacheMutex for FileMutex {
    fn try_acquire(&self) -> Result<bool> {
        let mut held = self.held.lock();
        if held.is_some() {
            return Ok(false);
        }
        let file = self.open()?;
        match fcntl_lock(&file, libc::F_OFD_SETLK, libc::F_WRLCK, self.slot) {
            Ok(_) => {
                *held = Some(file);
                Ok(true)
            }
            Err(e) if would_block(&e) => Ok(false),
            Err(e) => Err(self.error("locking", e)),
        }
    }

    fn wait(&self, _deadline: Instant) -> Result<()> {
        // A shared lock is granted once no exclusive one is held: the holder released it,
        // or died. Let go of it at once; the caller looks at the value again.
        // TODO(issue 11): SETLKW has no deadline.
        let file = self.open()?;
        fcntl_lock(&file, libc::F_OFD_SETLKW, libc::F_RDLCK, self.slot)
            .map_err(|e| self.error("waiting on", e))?;
        fcntl_lock(&file, libc::F_OFD_SETLK, libc::F_UNLCK, self.slot)
            .map_err(|e| self.error("unlocking", e))?;
        Ok(())
    }

    fn release(&self) -> Result<()> {
        if let Some(file) = self.held.lock().take() {
            // Closing the file releases the lock too; unlocking first says so plainly.
            fcntl_lock(&file, libc::F_OFD_SETLK, libc::F_UNLCK, self.slot)
                .map_err(|e| self.error("unlocking", e))?;
        }
        Ok(())
    }

    fn locked(&self) -> Result<bool> {
        if self.held.lock().is_some() {
            return Ok(true);
        }
        let file = self.open()?;
        // Asks whether a shared lock would be refused: only an exclusive holder refuses it,
        // so waiters do not count.
        let fl = fcntl_lock(&file, libc::F_OFD_GETLK, libc::F_RDLCK, self.slot)
            .map_err(|e| self.error("testing", e))?;
        Ok(i32::from(fl.l_type) != libc::F_UNLCK)
    }
}
