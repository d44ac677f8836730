use std::collections::{BTreeMap, HashMap};

use dogpile::{cache_multi_on_arguments, CacheRegion, RegionConfig};

static REGION: CacheRegion = CacheRegion::new();

fn positive(v: &i64) -> bool {
    *v > 0
}

#[cache_multi_on_arguments(region = REGION, namespace = "n", expiration_time = 60, should_cache_fn = positive)]
pub fn values(ids: &[u32]) -> Vec<i64> {
    ids.iter().map(|&i| i64::from(i) - 1).collect()
}

#[cache_multi_on_arguments(
    region = REGION,
    fail_safe_max_duration = 60,
    fail_safe_throttle = std::time::Duration::from_secs(5),
    eager_refresh = 0.8,
    early_expiration_beta = 1.0
)]
fn resilient(ids: &[u32]) -> Vec<u32> {
    ids.to_vec()
}

#[cache_multi_on_arguments(region = REGION, asdict = true)]
fn names(ids: &[String]) -> HashMap<String, usize> {
    ids.iter().map(|s| (s.clone(), s.len())).collect()
}

#[cache_multi_on_arguments(region = REGION, asdict = true, ignore = [scale])]
fn ordered<'a>(scale: u32, ids: &'a [&'a str]) -> BTreeMap<&'a str, u32> {
    ids.iter().map(|s| (*s, s.len() as u32 * scale)).collect()
}

struct Store;

impl Store {
    #[cache_multi_on_arguments(region = REGION, namespace = "Store")]
    fn load(&self, ids: &[u64]) -> Vec<String> {
        ids.iter().map(u64::to_string).collect()
    }
}

fn main() {
    REGION
        .configure(RegionConfig::new("dogpile.cache.memory"))
        .unwrap();
    assert_eq!(resilient(&[3, 4]), vec![3, 4]);
    assert_eq!(values(&[1, 2]), vec![0, 1]);
    assert_eq!(values_get(&[1, 2]), vec![None, Some(1)]);
    values_set([(7, 70)]);
    values_invalidate(&[7]);
    assert_eq!(values_refresh(&[3]), vec![2]);
    assert_eq!(values_uncached(&[3]), vec![2]);
    assert_eq!(names(&["ab".to_string()])["ab"], 2);
    assert_eq!(names_get(&["ab".to_string()]).len(), 1);
    assert_eq!(ordered(2, &["abc"])["abc"], 6);
    assert_eq!(Store.load(&[1, 2]), vec!["1", "2"]);
    assert_eq!(Store.load_get(&[2]), vec![Some("2".to_string())]);
}
