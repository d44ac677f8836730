use dogpile::{cache_on_arguments, CacheRegion, RegionConfig};

static REGION: CacheRegion = CacheRegion::new();

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub name: String,
}

#[cache_on_arguments(region = REGION)]
fn user(id: u32) -> User {
    User { name: format!("u{id}") }
}

#[cache_on_arguments(region = REGION)]
fn maybe_user(id: u32) -> Option<User> {
    (id > 0).then(|| User { name: format!("u{id}") })
}

#[cache_on_arguments(region = REGION)]
fn checked(id: u32) -> Result<User, String> {
    if id == 0 {
        return Err("zero".into());
    }
    Ok(User { name: format!("u{id}") })
}

#[cache_on_arguments(region = REGION)]
fn io_result(id: u32) -> std::io::Result<u32> {
    Ok(id)
}

#[cache_on_arguments(region = REGION)]
fn bytes(id: u32) -> Vec<u8> {
    vec![id as u8]
}

#[cache_on_arguments(region = REGION)]
fn unit(id: u32) {
    let _ = id;
}

fn main() {
    REGION
        .configure(RegionConfig::new("dogpile.cache.memory"))
        .unwrap();
    assert_eq!(user(1).name, "u1");
    assert!(maybe_user(0).is_none());
    assert!(checked(0).is_err());
    let cached: Option<User> = checked_get(1);
    assert!(cached.is_none());
    assert_eq!(io_result(3).unwrap(), 3);
    assert_eq!(bytes(4), vec![4]);
    unit(1);
}
