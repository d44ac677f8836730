//! Expiration jitter (`expiration_jitter`): values written together expire spread over the
//! jitter, each at one instant every reader agrees on (plain reads and get-or-create alike), and
//! never before the expiration time. On a manual clock.

use std::time::{Duration, SystemTime};

use dogpile::clock::Clock;
use dogpile::{make_region, RegionConfig};

const TTL: u64 = 60;
const JITTER: u64 = 30;

/// A memory region with the jitter on a manual clock, and the clock's handle.
fn jittered() -> (
    dogpile::CacheRegion,
    std::sync::Arc<dogpile::clock::ManualClock>,
) {
    // A fixed start: the jitter is a hash of each key and its creation stamp, so the spread
    // below is the same on every run.
    let (clock, time) = Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let region = make_region()
        .configure(
            RegionConfig::new("dogpile.cache.memory")
                .expiration_time(TTL)
                .clock(clock)
                .expiration_jitter(Duration::from_secs(JITTER)),
        )
        .unwrap();
    (region, time)
}

#[test]
fn values_written_together_expire_spread_over_the_jitter() {
    let (region, time) = jittered();
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    region.set_multi(keys.iter().map(|k| (k, 1u32))).unwrap();
    let fresh = |region: &dogpile::CacheRegion| {
        region
            .get_multi::<u32, _>(&keys)
            .unwrap()
            .iter()
            .filter(|v| v.is_some())
            .count()
    };
    // Never before the expiration time.
    time.advance(Duration::from_secs(TTL));
    assert_eq!(fresh(&region), keys.len());
    // Second by second through the jitter: fewer and fewer, never more, a few at a time.
    let mut last = keys.len();
    let mut steps = Vec::new();
    for _ in 0..JITTER {
        time.advance(Duration::from_secs(1));
        let now = fresh(&region);
        assert!(now <= last, "a value came back: {now} after {last}");
        steps.push(last - now);
        last = now;
    }
    time.advance(Duration::from_secs(1));
    assert_eq!(fresh(&region), 0, "past the expiration time and the jitter");
    // 200 values over 31 one-second steps: about 6.5 a step. A jitter squeezed into a sixth of
    // its span would put 40 in a step.
    let most = steps.iter().copied().max().unwrap();
    assert!(
        most <= 20,
        "{most} of {} expired in one second: {steps:?}",
        keys.len()
    );
    // Half-way through the jitter about half are still fresh.
    let half: usize = steps[..(JITTER / 2) as usize].iter().sum();
    assert!(
        (70..=130).contains(&half),
        "{half} of 200 expired in the first half of the jitter: {steps:?}"
    );
    // The get-or-create path judges as the plain read does.
    let (region, time) = jittered();
    region.set_multi(keys.iter().map(|k| (k, 1u32))).unwrap();
    time.advance(Duration::from_secs(TTL + JITTER / 2));
    for k in &keys {
        let read = region.get::<u32>(k).unwrap();
        let created = region.get_or_create(k, || 2u32).unwrap();
        assert_eq!(read.unwrap_or(2), created, "{k}");
    }
}
