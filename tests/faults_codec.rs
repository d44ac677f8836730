//! Decoding fuzz: the envelope decoder and the payload decoder fed arbitrary bytes and mutated
//! valid envelopes. Nothing panics, nothing allocates far beyond the input's size, and whatever
//! decodes re-encodes consistently.
//!
//! A quick run (4,000 cases per property) is part of `cargo test`. The long run, 100,000 cases
//! per property:
//!
//! ```text
//! DOGPILE_FUZZ=1 cargo test --test faults_codec
//! ```
//!
//! `DOGPILE_FUZZ_CASES=N` sets any other number of cases. The quick run uses a fixed seed (the
//! same cases in every CI run), the long one a random seed; `DOGPILE_FUZZ_SEED=N` fixes it.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Debug;

use dogpile::backend::{Metadata, Payload};
use dogpile::clock::Timestamp;
use dogpile::codec::{decode_envelope, decode_value, encode_envelope, encode_value};
use dogpile::CachedValue;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// The largest single allocation made by this thread, to check that garbage cannot make the
// decoder ask for gigabytes.

struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the slot may be gone while the thread is being torn down.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Runs `f` and returns the largest allocation it made on this thread.
fn largest_allocation(f: impl FnOnce()) -> usize {
    LARGEST.with(|l| l.set(0));
    f();
    LARGEST.with(|l| l.get())
}

/// What a decode of `len` input bytes may allocate at most: serde preallocates up to 1 MiB for a
/// sequence, and the decoder's limit is under 256 times the input plus a kilobyte.
fn allowance(len: usize) -> usize {
    (1 << 20) + 256 * len + 1024
}

// ---------------------------------------------------------------------------------------------
// The types decoded.

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Kind {
    Plain,
    Count(u32),
    Named { label: String, weight: i16 },
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Record {
    id: u64,
    name: String,
    tags: Vec<String>,
    score: Option<f64>,
    kind: Kind,
    wide: u128,
}

fn record() -> impl Strategy<Value = Record> {
    let kind = prop_oneof![
        Just(Kind::Plain),
        any::<u32>().prop_map(Kind::Count),
        (".{0,12}", any::<i16>()).prop_map(|(label, weight)| Kind::Named { label, weight }),
    ];
    (
        any::<u64>(),
        ".{0,16}",
        proptest::collection::vec(".{0,8}", 0..4),
        proptest::option::of(any::<f64>()),
        kind,
        any::<u128>(),
    )
        .prop_map(|(id, name, tags, score, kind, wide)| Record {
            id,
            name,
            tags,
            score,
            kind,
            wide,
        })
}

/// A valid payload of one of the decoded types.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        ".{0,40}".prop_map(|s: String| encode_value(&s).unwrap()),
        proptest::collection::vec(any::<u64>(), 0..16).prop_map(|v| encode_value(&v).unwrap()),
        proptest::option::of((any::<u32>(), ".{0,16}"))
            .prop_map(|v: Option<(u32, String)>| encode_value(&v).unwrap()),
        record().prop_map(|r| encode_value(&r).unwrap()),
    ]
}

fn envelope(payload: Vec<u8>, created: u64) -> Vec<u8> {
    encode_envelope(&CachedValue {
        payload: Payload::Bytes(payload.into()),
        metadata: Metadata::new(Timestamp::from_nanos(created)),
    })
    .unwrap()
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Sets the byte at (index modulo the length).
    Set(usize, u8),
    /// Flips one bit.
    Flip(usize, u8),
    /// Cuts the bytes at (index modulo the length + 1).
    Truncate(usize),
    /// Inserts bytes at (index modulo the length + 1).
    Insert(usize, Vec<u8>),
    /// Overwrites 9 bytes at (index) with a varint marker and a huge length.
    HugeLength(usize, u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        4 => (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        2 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..12))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (any::<usize>(), any::<u64>()).prop_map(|(i, n)| Mutation::HugeLength(i, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let at = |i: usize, extra: usize| i % (bytes.len() + extra).max(1);
    match m {
        Mutation::Set(i, b) if !bytes.is_empty() => {
            let i = at(*i, 0);
            bytes[i] = *b;
        }
        Mutation::Flip(i, bit) if !bytes.is_empty() => {
            let i = at(*i, 0);
            bytes[i] ^= 1 << bit;
        }
        Mutation::Truncate(i) => {
            let i = at(*i, 1);
            bytes.truncate(i);
        }
        Mutation::Insert(i, b) => {
            let i = at(*i, 1);
            bytes.splice(i..i, b.iter().copied());
        }
        Mutation::HugeLength(i, n) => {
            let i = at(*i, 1);
            let mut huge = vec![0xFD];
            huge.extend_from_slice(&n.to_le_bytes());
            let end = (i + huge.len()).min(bytes.len());
            bytes.splice(i..end, huge);
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// The checks.

/// Decodes `bytes` as a `T`; what decodes must re-encode to bytes that decode to the same
/// encoding again (compared as bytes, so a NaN inside is no problem).
fn check_value<T: Serialize + DeserializeOwned + Debug>(bytes: &[u8]) -> bool {
    match decode_value::<T>(bytes) {
        Ok(v) => {
            let again = encode_value(&v).expect("a decoded value encodes");
            let back: T = decode_value(&again)
                .unwrap_or_else(|e| panic!("re-encoded {v:?} does not decode: {e}"));
            assert_eq!(encode_value(&back).unwrap(), again, "{v:?}");
            true
        }
        Err(e) => {
            // The error tells the type asked for.
            assert!(e.to_string().contains("does not decode as"), "{e}");
            false
        }
    }
}

fn check_payload(bytes: &[u8]) {
    let largest = largest_allocation(|| {
        check_value::<String>(bytes);
        check_value::<Vec<u64>>(bytes);
        check_value::<Option<(u32, String)>>(bytes);
        check_value::<Record>(bytes);
        check_value::<i64>(bytes);
        check_value::<Vec<String>>(bytes);
    });
    assert!(
        largest <= allowance(bytes.len()),
        "decoding {} bytes allocated {largest} bytes at once",
        bytes.len()
    );
}

/// The envelope decoder: no panic; a decoded envelope re-encodes to the very same bytes; its
/// payload goes through [`check_payload`].
fn check_envelope(bytes: &[u8]) {
    match decode_envelope(bytes) {
        Ok(v) => {
            assert_eq!(encode_envelope(&v).as_deref(), Some(bytes));
            let Payload::Bytes(p) = &v.payload else {
                panic!("an envelope decodes to bytes")
            };
            check_payload(p);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

fn runner() -> proptest::test_runner::TestRunner {
    support::fuzz_runner("DOGPILE_FUZZ_CASES", 4_000, 100_000)
}

#[test]
fn arbitrary_bytes_never_panic() {
    let garbage = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(any::<u8>(), 0..600),
        // Bytes that start like an envelope, so the payload decoder sees garbage too.
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(|tail| {
            let mut b = envelope(Vec::new(), 0);
            b.extend(tail);
            b
        }),
    ];
    runner()
        .run(&garbage, |bytes| {
            check_envelope(&bytes);
            check_payload(&bytes);
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutated_valid_envelopes_never_panic() {
    let strategy = (
        payload(),
        any::<u64>(),
        proptest::collection::vec(mutation(), 1..5),
    );
    runner()
        .run(&strategy, |(payload, created, mutations)| {
            let mut bytes = envelope(payload.clone(), created);
            // Unmutated, it decodes to what was written.
            let v = decode_envelope(&bytes).unwrap();
            assert_eq!(v.metadata.created_at, Timestamp::from_nanos(created));
            check_payload(&payload);
            for m in &mutations {
                apply(&mut bytes, m);
            }
            check_envelope(&bytes);
            // The mutated payload alone, for decoders reading payloads without an envelope
            // (the memory_pickle backend).
            let mut bare = payload;
            for m in &mutations {
                apply(&mut bare, m);
            }
            check_payload(&bare);
            Ok(())
        })
        .unwrap();
}

#[test]
fn valid_values_round_trip() {
    runner()
        .run(&record(), |r| {
            let bytes = envelope(encode_value(&r).unwrap(), 7);
            let Payload::Bytes(p) = decode_envelope(&bytes).unwrap().payload else {
                panic!("bytes expected")
            };
            let back: Record = decode_value(&p).unwrap();
            assert_eq!(encode_value(&back).unwrap(), encode_value(&r).unwrap());
            Ok(())
        })
        .unwrap();
}

/// A small corpus of hand-made inputs that once mattered or easily could: every one is a miss
/// or a value, never a panic, never a huge allocation.
#[test]
fn the_corpus() {
    let good = envelope(encode_value(&"hello".to_string()).unwrap(), 1);
    let mut corpus: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"D".to_vec(),
        b"DGPL".to_vec(),
        good[..good.len() - 1].to_vec(),
        good.clone(),
        b"\x80\x04\x95pickle".to_vec(),
        vec![0xFF; 64],
        vec![0x00; 64],
    ];
    // Lying length prefixes: "2^32-1", "2^40", "2^63-1" and "2^64-1 bytes follow".
    for prefix in [
        &[0xFC, 0xFF, 0xFF, 0xFF, 0xFF][..],
        &[0xFD, 0, 0, 0, 0, 0, 1, 0, 0],
        &[0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
        &[0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
        &[
            0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 1,
        ],
    ] {
        let mut bare = prefix.to_vec();
        bare.extend_from_slice(b"abc");
        corpus.push(envelope(bare.clone(), 0));
        // Behind an Option tag, and behind a u64 id (the Record's first field).
        let mut tagged = vec![1, 5];
        tagged.extend_from_slice(&bare);
        corpus.push(tagged);
        corpus.push(bare);
    }
    for bytes in &corpus {
        check_envelope(bytes);
        check_payload(bytes);
        for t in 0..bytes.len() {
            check_payload(&bytes[..t]);
        }
    }
    // The 2^40 one alone, as a String: an error, and no terabyte asked for.
    let huge = [0xFD, 0, 0, 0, 0, 0, 1, 0, 0, b'a'];
    let largest = largest_allocation(|| assert!(decode_value::<String>(&huge).is_err()));
    assert!(largest <= allowance(huge.len()), "{largest}");
}
