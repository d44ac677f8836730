use dogpile::{cache_on_arguments, CacheRegion, RegionConfig};

static REGION: CacheRegion = CacheRegion::new();

pub struct Connection;

#[cache_on_arguments(region = REGION, key = "user:{id}:{lang}", ignore = [conn])]
fn greeting(conn: &Connection, id: u64, lang: &str) -> String {
    let _ = conn;
    format!("{lang}{id}")
}

#[cache_on_arguments(region = REGION, ignore = [log])]
fn ignored_without_template(id: u64, log: &mut Vec<String>) -> u64 {
    log.push(id.to_string());
    id
}

fn main() {
    REGION
        .configure(RegionConfig::new("dogpile.cache.memory"))
        .unwrap();
    assert_eq!(greeting(&Connection, 1, "en"), "en1");
    assert_eq!(REGION.get::<String>("user:1:en").unwrap().as_deref(), Some("en1"));
    let mut log = Vec::new();
    assert_eq!(ignored_without_template(5, &mut log), 5);
    assert_eq!(ignored_without_template(5, &mut log), 5);
    assert_eq!(log.len(), 1);
    assert_eq!(ignored_without_template_get(5), Some(5));
}
