//! A hash that every process, build and machine computes alike: 64-bit FNV-1a. The standard
//! library's hashers are seeded or may change between releases, so they cannot pick the file
//! store's lock byte, the memcached server of a key, or a value's expiration jitter, which all
//! processes must agree on.

/// 64-bit FNV-1a of `bytes`.
///
/// ```
/// assert_eq!(dogpile_core::stable_hash::fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
/// ```
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::fnv1a;

    #[test]
    fn fnv1a_64_test_vectors() {
        // From the FNV reference's test suite: what every build must compute.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
