//! The backplane: how the processes sharing a cache tell each other what they wrote.
//!
//! A region with a [local tier](crate::LocalTier) keeps copies of values in this process. When
//! another process writes, deletes or invalidates, those copies must go: each write is announced
//! on the backplane, and every other process drops its copy of the key. The region speaks
//! [`Notice`]s; a transport ([`Backplane`]) carries their bytes between processes. The built-in
//! transport is Redis pub/sub (`dogpile_backends::redis::RedisBackplane`); any message bus that
//! delivers in order per sender and reports when it loses its link will do.
//!
//! ```
//! use dogpile_core::backplane::{Message, Notice};
//!
//! let message = Message::new(7, Notice::Delete(vec!["users:42".into()]));
//! let bytes = message.encode();
//! assert_eq!(Message::decode(&bytes).unwrap(), message);
//! ```

use std::fmt;
use std::sync::Arc;

use crate::error::Result;

/// What one process tells the others about a region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// New values were stored at these (mangled) keys: drop the local copies.
    Set(Vec<String>),
    /// These (mangled) keys were deleted: drop the local copies.
    Delete(Vec<String>),
    /// The region was invalidated at `at` (nanoseconds since the epoch): hard or soft.
    Invalidate {
        /// Hard (values count as absent) or soft (as expired).
        hard: bool,
        /// When, in nanoseconds since the Unix epoch.
        at: u64,
    },
    /// Every value carrying `tag` was invalidated at `at`.
    InvalidateTag {
        /// The tag.
        tag: String,
        /// Hard (values count as absent) or soft (as expired).
        hard: bool,
        /// When, in nanoseconds since the Unix epoch.
        at: u64,
    },
}

/// A [`Notice`] with the instance that sent it, so that an instance never acts on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sending region instance (random, chosen when the region is configured).
    pub origin: u64,
    /// What happened.
    pub notice: Notice,
}

/// Why bytes off the backplane are not a [`Message`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("backplane message undecodable: {0}")]
pub struct DecodeError(&'static str);

/// The first byte of every message: the layout's version, so a later layout is refused, not
/// misread.
const LAYOUT: u8 = 1;

const SET: u8 = b'S';
const DELETE: u8 = b'D';
const INVALIDATE: u8 = b'I';
const INVALIDATE_TAG: u8 = b'T';

impl Message {
    /// A message from `origin`.
    pub fn new(origin: u64, notice: Notice) -> Self {
        Message { origin, notice }
    }

    /// The bytes a transport carries: a layout byte, the origin (8 bytes, little-endian), a kind
    /// byte, then the kind's fields; every string is a 4-byte little-endian length and its
    /// bytes, so no key or tag can be confused with a separator.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.push(LAYOUT);
        out.extend_from_slice(&self.origin.to_le_bytes());
        let put_str = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        };
        match &self.notice {
            Notice::Set(keys) | Notice::Delete(keys) => {
                out.push(if matches!(self.notice, Notice::Set(_)) {
                    SET
                } else {
                    DELETE
                });
                out.extend_from_slice(&(keys.len() as u32).to_le_bytes());
                for k in keys {
                    put_str(&mut out, k);
                }
            }
            Notice::Invalidate { hard, at } => {
                out.push(INVALIDATE);
                out.push(u8::from(*hard));
                out.extend_from_slice(&at.to_le_bytes());
            }
            Notice::InvalidateTag { tag, hard, at } => {
                out.push(INVALIDATE_TAG);
                out.push(u8::from(*hard));
                out.extend_from_slice(&at.to_le_bytes());
                put_str(&mut out, tag);
            }
        }
        out
    }

    /// Reads [`encode`](Message::encode)'s bytes back.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for bytes of another layout, a truncated message, a length past the end,
    /// text that is not UTF-8, or bytes left over.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        if r.u8()? != LAYOUT {
            return Err(DecodeError("unknown layout"));
        }
        let origin = r.u64()?;
        let notice = match r.u8()? {
            kind @ (SET | DELETE) => {
                let n = r.u32()? as usize;
                // Each key takes at least its 4-byte length: a count past that is a lie.
                if n > r.0.len() / 4 {
                    return Err(DecodeError("key count past the end"));
                }
                let keys = (0..n).map(|_| r.string()).collect::<Result<Vec<_>, _>>()?;
                if kind == SET {
                    Notice::Set(keys)
                } else {
                    Notice::Delete(keys)
                }
            }
            INVALIDATE => Notice::Invalidate {
                hard: r.flag()?,
                at: r.u64()?,
            },
            INVALIDATE_TAG => {
                let hard = r.flag()?;
                let at = r.u64()?;
                Notice::InvalidateTag {
                    tag: r.string()?,
                    hard,
                    at,
                }
            }
            _ => return Err(DecodeError("unknown kind")),
        };
        if !r.0.is_empty() {
            return Err(DecodeError("bytes left over"));
        }
        Ok(Message { origin, notice })
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> std::result::Result<&[u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> std::result::Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn flag(&mut self) -> std::result::Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError("flag neither 0 nor 1")),
        }
    }
    fn u32(&mut self) -> std::result::Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> std::result::Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn string(&mut self) -> std::result::Result<String, DecodeError> {
        let n = self.u32()? as usize;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError("text not UTF-8"))
    }
}

/// What a transport reports to the region that subscribed.
///
/// Called from the transport's own thread; each call must be quick (the region only updates
/// in-memory state).
pub trait BackplaneSink: Send + Sync + 'static {
    /// Bytes another process (or this one: the region filters by origin) published.
    fn message(&self, bytes: &[u8]);

    /// The link is known to work now: a message or a heartbeat reply arrived. A region trusts its
    /// local copies only for a bounded time after the last call (see
    /// [`LocalTier::max_silence`](crate::LocalTier::max_silence)), so a transport calls this at
    /// least once per heartbeat while the link works.
    fn alive(&self);

    /// The subscription is (re)established: messages published while it was down are lost, so
    /// the region drops its local copies and reloads what it keeps in the shared backend.
    fn connected(&self);

    /// The link broke; the transport reconnects by itself.
    fn disconnected(&self);
}

/// A transport that carries [`Message`] bytes between processes: every subscriber of a channel
/// gets what any process publishes on it, in the order each sender published.
///
/// A transport must never block a caller for long: `publish` has a bounded wait (the region
/// calls it after every write), and a subscription reconnects by itself on its own thread,
/// reporting each change of state to its sink.
///
/// An in-process transport for tests is [`testing::LoopbackBackplane`](crate::testing::LoopbackBackplane).
pub trait Backplane: Send + Sync + 'static {
    /// The transport's name, for logs and errors (`redis`).
    fn name(&self) -> &str;

    /// How often, at the longest, a working subscription reports
    /// [`alive`](BackplaneSink::alive) while no message comes: a region refuses a
    /// [`max_silence`](crate::LocalTier::max_silence) under twice this, which would stop serving
    /// local copies between heartbeats of a link that works. `None` (the default): not known.
    fn heartbeat(&self) -> Option<std::time::Duration> {
        None
    }

    /// Publishes `bytes` to every subscriber of `channel`.
    ///
    /// # Errors
    ///
    /// The transport's error when the message could not be sent within its bound; the region
    /// logs and counts it (`Stats::backplane_dropped`).
    fn publish(&self, channel: &str, bytes: &[u8]) -> Result<()>;

    /// Starts delivering `channel`'s messages to `sink`, on the transport's own thread, until the
    /// returned subscription is dropped. Returns at once; the first
    /// [`connected`](BackplaneSink::connected) comes when the subscription is in place.
    ///
    /// # Errors
    ///
    /// The transport's error when the subscription cannot be started at all (a bad address);
    /// a server that is down is not an error here: the transport keeps trying.
    fn subscribe(&self, channel: &str, sink: Arc<dyn BackplaneSink>) -> Result<Subscription>;
}

/// A running subscription: dropping it stops delivery (the transport's thread ends soon after).
pub struct Subscription {
    stop: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Subscription {
    /// A subscription that runs `stop` when dropped.
    pub fn new(stop: impl FnOnce() + Send + Sync + 'static) -> Self {
        Subscription {
            stop: Some(Box::new(stop)),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Subscription")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_notice_round_trips() {
        for notice in [
            Notice::Set(vec!["a".into(), "b|c".into(), String::new()]),
            Notice::Delete(vec!["k".into()]),
            Notice::Invalidate {
                hard: true,
                at: 1 << 60,
            },
            Notice::InvalidateTag {
                tag: "user:42".into(),
                hard: false,
                at: 5,
            },
        ] {
            let m = Message::new(u64::MAX, notice);
            assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn damaged_bytes_are_errors_not_panics() {
        let good = Message::new(1, Notice::Set(vec!["key".into()])).encode();
        for cut in 0..good.len() {
            assert!(Message::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(Message::decode(&longer).is_err());
        let mut lying = good;
        lying[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Message::decode(&lying).is_err());
    }
}
