//! The byte backends' serializers on the bench workload: a 32-byte `String`, a struct with a few
//! fields, and a `Vec<u64>` of 100. Encode and decode time per value, and the encoded size
//! (printed once per value before the timings). The figures are in BENCHMARKS.md, "Serializers".
//!
//! Run: `cargo bench --bench serializers -- --warm-up-time 1 --measurement-time 2`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use dogpile::codec::{decode_value_with, encode_value_with};
use dogpile::serializer::{Bincode, Json, MessagePack, Pickle, Serializer};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The struct of the workload: a profile a web service might cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Profile {
    id: u64,
    name: String,
    email: String,
    active: bool,
    score: f64,
}

fn serializers() -> [&'static dyn Serializer; 4] {
    [&MessagePack, &Json, &Pickle, &Bincode]
}

fn bench_value<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    c: &mut Criterion,
    label: &str,
    value: &T,
) {
    let mut group = c.benchmark_group(format!("serializers/{label}"));
    for s in serializers() {
        let bytes = encode_value_with(s, value).expect("the workload encodes");
        let back: T = decode_value_with(s, &bytes).expect("the workload decodes");
        assert_eq!(&back, value, "{} round-trips", s.name());
        println!("size {label} {}: {} bytes", s.name(), bytes.len());
        group.bench_function(format!("encode/{}", s.name()), |b| {
            b.iter(|| encode_value_with(s, black_box(value)).unwrap())
        });
        group.bench_function(format!("decode/{}", s.name()), |b| {
            b.iter(|| decode_value_with::<T>(s, black_box(&bytes)).unwrap())
        });
    }
    group.finish();
}

fn workload(c: &mut Criterion) {
    bench_value(c, "string32", &"x".repeat(32));
    bench_value(
        c,
        "struct",
        &Profile {
            id: 1_234_567,
            name: "Ada Lovelace".into(),
            email: "ada@example.invalid".into(),
            active: true,
            score: 98.5,
        },
    );
    bench_value(
        c,
        "vec_u64_100",
        &(0..100u64).map(|i| i * 1_000_003).collect::<Vec<_>>(),
    );
}

criterion_group!(benches, workload);
criterion_main!(benches);
