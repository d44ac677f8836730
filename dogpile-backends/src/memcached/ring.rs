//! Which server holds a key: rendezvous (highest random weight) hashing, in two flavours.
//!
//! - [`Placement::Dogpile`] (the default): each server's score for a key is a 64-bit mix of the
//!   key's FNV-1a hash and the server address's; stable across processes, builds and machines.
//! - [`Placement::Pymemcache`]: pymemcache's `HashClient` with its default `RendezvousHash`, so
//!   a Python service and a Rust service that list the same servers put every key on the same
//!   server: the score is `murmur3_32("<host>:<port>-<key>", seed 0)`, the highest wins, and a
//!   tie goes to the greater node name.
//!
//! Either way, adding or removing a server moves only that server's share of keys.

use dogpile_core::stable_hash::fnv1a;

/// How keys are spread over several servers (the `key_placement` argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// This crate's own rendezvous hashing over FNV-1a (`key_placement = "dogpile"`).
    Dogpile,
    /// pymemcache `HashClient`'s rendezvous hashing over murmur3 (`key_placement = "pymemcache"`).
    Pymemcache,
}

/// The servers' names as each placement scores them.
pub(crate) struct Ring {
    placement: Placement,
    /// Per server: the FNV-1a hash of `host:port` as written (Dogpile), and pymemcache's node
    /// name `host:port` (no brackets around an IPv6 host, as pymemcache writes it).
    nodes: Vec<(u64, String)>,
}

impl Ring {
    /// `servers` are `(address as written, host, port)`.
    pub(crate) fn new(placement: Placement, servers: &[(String, String, u16)]) -> Ring {
        Ring {
            placement,
            nodes: servers
                .iter()
                .map(|(addr, host, port)| (fnv1a(addr.as_bytes()), format!("{host}:{port}")))
                .collect(),
        }
    }

    /// The index of the server that holds `key`.
    pub(crate) fn index(&self, key: &str) -> usize {
        if self.nodes.len() == 1 {
            return 0;
        }
        match self.placement {
            Placement::Dogpile => {
                let h = fnv1a(key.as_bytes());
                let mut best = (0, 0);
                for (i, (seed, _)) in self.nodes.iter().enumerate() {
                    let score = mix(h ^ seed);
                    if i == 0 || score > best.1 {
                        best = (i, score);
                    }
                }
                best.0
            }
            Placement::Pymemcache => {
                let mut best: Option<(usize, u32)> = None;
                let mut buf = Vec::with_capacity(64);
                for (i, (_, name)) in self.nodes.iter().enumerate() {
                    buf.clear();
                    buf.extend_from_slice(name.as_bytes());
                    buf.push(b'-');
                    buf.extend_from_slice(key.as_bytes());
                    let score = murmur3_32(&buf, 0);
                    best = match best {
                        Some((w, s)) if score < s || (score == s && *name <= self.nodes[w].1) => {
                            Some((w, s))
                        }
                        _ => Some((i, score)),
                    };
                }
                best.map_or(0, |(i, _)| i)
            }
        }
    }
}

/// splitmix64's finalizer: spreads the bits of a combined hash.
pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// MurmurHash3's 32-bit x86 hash (public domain, Austin Appleby), as pymemcache computes it.
/// pymemcache hashes the characters of a `str`; the keys and server names hashed here are
/// ASCII, where characters and bytes are the same.
pub(crate) fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut blocks = data.chunks_exact(4);
    for b in &mut blocks {
        let mut k = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let mut k = 0u32;
        for (i, b) in tail.iter().enumerate() {
            k |= u32::from(*b) << (8 * i);
        }
        h ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(placement: Placement, names: &[&str]) -> Ring {
        let servers: Vec<(String, String, u16)> = names
            .iter()
            .map(|n| {
                let (host, port) = n.rsplit_once(':').unwrap();
                (n.to_string(), host.to_string(), port.parse().unwrap())
            })
            .collect();
        Ring::new(placement, &servers)
    }

    #[test]
    fn murmur3_matches_pymemcache_test_vectors() {
        // pymemcache's test_rendezvous.py.
        assert_eq!(murmur3_32(b"6666", 0), 1_361_238_019);
        assert_eq!(murmur3_32(b"6666", 10), 2_981_722_772);
        // The reference implementation's published vectors.
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"abc", 0), 0xb3dd_93fa);
        assert_eq!(murmur3_32(b"Hello, world!", 1234), 0xfaf6_cdb3);
    }

    #[test]
    fn pymemcache_placement_matches_its_algorithm() {
        // Placements computed with pymemcache 4's RendezvousHash (murmur3_32, seed 0) over the
        // node names HashClient gives `(host, port)` servers: "host:port".
        let r = ring(
            Placement::Pymemcache,
            &["127.0.0.1:11211", "127.0.0.1:11212", "127.0.0.1:11213"],
        );
        let expected = include!("pymemcache_placements.in");
        for (key, server) in expected {
            assert_eq!(r.nodes[r.index(key)].1, server, "{key}");
        }
        // pymemcache's test_rendezvous.py, with bare node names.
        let bare = Ring {
            placement: Placement::Pymemcache,
            nodes: ["0", "1", "2"].iter().map(|n| (0, n.to_string())).collect(),
        };
        assert_eq!(["ok", "mykey", "wat"].map(|k| bare.index(k)), [0, 1, 2]);
    }
}
