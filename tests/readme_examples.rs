//! The examples of the README's "Resilience options" section, compiled and run: each test's body
//! is one of the section's blocks, and `the_readme_blocks_are_these_tests` checks that every block
//! of the section is the body of a test here, so the README cannot drift from code that compiles.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use dogpile::clock::Clock;
use dogpile::{make_region, CreateOptions, RegionConfig};

type Result = std::result::Result<(), Box<dyn std::error::Error>>;

#[test]
fn fail_safe() -> Result {
    let (clock, time) = Clock::manual(SystemTime::now());
    let region = make_region().configure(
        RegionConfig::new("dogpile.cache.memory")
            .expiration_time(60)
            .clock(clock)
            .fail_safe_max_duration(Duration::from_secs(3600))
            .fail_safe_throttle(Duration::from_secs(30)),
    )?;
    region.set("rates", 1.25f64)?;
    time.advance(Duration::from_secs(120));
    let rates =
        region.try_get_or_create("rates", &CreateOptions::new(), || Err::<f64, _>("API down"));
    assert_eq!(rates.unwrap(), 1.25);
    Ok(())
}

#[test]
fn creator_timeouts() -> Result {
    let region = make_region().configure(
        RegionConfig::new("dogpile.cache.memory")
            .soft_timeout(Duration::from_millis(10))
            .hard_timeout(Duration::from_millis(20)),
    )?;
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let slow_report = move || {
        let _ = wait.recv();
        7u32
    };
    let got = region.get_or_create_in_background("report", &CreateOptions::new(), slow_report);
    assert!(matches!(got, Err(dogpile::Error::CreatorTimeout { .. })));
    release.send(()).unwrap(); // the creator finishes and stores 7
    Ok(())
}

#[test]
fn eager_refresh() -> Result {
    let (clock, time) = Clock::manual(SystemTime::now());
    let region = make_region().configure(
        RegionConfig::new("dogpile.cache.memory")
            .expiration_time(100)
            .clock(clock)
            .eager_refresh(0.8),
    )?;
    region.set("hot", 1u32)?;
    time.advance(Duration::from_secs(85));
    assert_eq!(region.get_or_create("hot", || 2u32)?, 2); // refreshed before it expired
    assert_eq!(region.stats().eager_refreshes, 1);
    Ok(())
}

#[test]
fn early_expiration() -> Result {
    let region = make_region().configure(
        RegionConfig::new("dogpile.cache.memory")
            .expiration_time(300)
            .early_expiration_beta(1.0)
            .random_seed(42),
    )?;
    assert_eq!(region.get_or_create("k", || 1u32)?, 1);
    Ok(())
}

#[test]
fn expiration_jitter() -> Result {
    let (clock, time) = Clock::manual(SystemTime::now());
    let region = make_region().configure(
        RegionConfig::new("dogpile.cache.memory")
            .expiration_time(60)
            .clock(clock)
            .expiration_jitter(Duration::from_secs(60)),
    )?;
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    region.set_multi(keys.iter().map(|k| (k, 1u8)))?;
    time.advance(Duration::from_secs(90));
    let fresh = region.get_multi::<u8, _>(&keys)?.iter().flatten().count();
    assert!(fresh > 10 && fresh < 90);
    Ok(())
}

#[test]
fn from_a_configuration_map() -> Result {
    let config = HashMap::from([
        ("cache.api.backend", "dogpile.cache.memory"),
        ("cache.api.expiration_time", "300"),
        ("cache.api.fail_safe_max_duration", "3600"),
        ("cache.api.fail_safe_throttle", "30"),
        ("cache.api.soft_timeout", "0.5"),
        ("cache.api.hard_timeout", "5"),
        ("cache.api.eager_refresh", "0.8"),
        ("cache.api.early_expiration_beta", "1.0"),
        ("cache.api.expiration_jitter", "30"),
    ]);
    make_region()
        .build()
        .configure_from_config(&config, "cache.api.")?;
    Ok(())
}

/// The lines of `text`, trimmed, without blank ones.
fn lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn the_readme_blocks_are_these_tests() {
    let readme = include_str!("../README.md");
    let this = lines(include_str!("readme_examples.rs"));
    let start = readme
        .find("## Resilience options")
        .expect("the README's Resilience options section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let blocks: Vec<&str> = section
        .split("```rust\n")
        .skip(1)
        .map(|b| &b[..b.find("```").expect("a closed code block")])
        .collect();
    assert_eq!(
        blocks.len(),
        6,
        "a block was added or removed: add or remove its test"
    );
    for block in blocks {
        let block = lines(block);
        assert!(
            this.windows(block.len()).any(|w| w == block.as_slice()),
            "a README block is not the body of a test in tests/readme_examples.rs:\n{}",
            block.join("\n")
        );
    }
}
