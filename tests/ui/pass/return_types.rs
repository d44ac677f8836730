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

/// An error type that takes dogpile's errors: a waiter past `hard_timeout` gets the timeout as
/// its `Err`.
#[derive(Debug)]
pub enum AppError {
    Cache(dogpile::Error),
    Zero,
}

impl From<dogpile::Error> for AppError {
    fn from(e: dogpile::Error) -> Self {
        AppError::Cache(e)
    }
}

#[cache_on_arguments(region = REGION, hard_timeout = 5)]
fn app(id: u32) -> Result<u32, AppError> {
    if id == 0 {
        return Err(AppError::Zero);
    }
    Ok(id)
}

#[cache_on_arguments(region = REGION, hard_timeout = 5)]
async fn app_async(id: u32) -> Result<u32, AppError> {
    Ok(id)
}

mod app {
    /// An alias named `Result`, as `io::Result`.
    pub type Result<T> = std::result::Result<T, super::AppError>;
}

#[cache_on_arguments(region = REGION)]
fn app_alias(id: u32) -> app::Result<u32> {
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
    assert_eq!(app(5).unwrap(), 5);
    assert!(matches!(app(0), Err(AppError::Zero)));
    assert_eq!(app_alias(6).unwrap(), 6);
    let _ = app_async(7);
    unit(1);
}
