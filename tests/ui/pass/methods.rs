use dogpile::{cache_on_arguments, CacheRegion, RegionConfig};

static REGION: CacheRegion = CacheRegion::new();

pub struct Users {
    suffix: String,
}

impl Users {
    /// A method: `self` is not part of the key.
    #[cache_on_arguments(region = REGION, namespace = "Users")]
    pub fn name(&self, id: u32) -> String {
        format!("user{id}{}", self.suffix)
    }

    /// An associated function without `self`.
    #[cache_on_arguments(region = REGION, namespace = "Users")]
    pub fn count(group: &str) -> usize {
        group.len()
    }

    /// A method taking `self` by value.
    #[cache_on_arguments(region = REGION, namespace = "Users")]
    pub fn into_label(self, n: u8) -> String {
        format!("{}{n}", self.suffix)
    }

    #[cache_on_arguments(region = REGION, namespace = "Users")]
    fn bump(&mut self, n: u8) -> u8 {
        self.suffix.push('!');
        n + 1
    }
}

fn main() {
    REGION
        .configure(RegionConfig::new("dogpile.cache.memory"))
        .unwrap();
    let mut users = Users { suffix: "!".into() };
    assert_eq!(users.name(1), "user1!");
    assert_eq!(users.name_get(1).as_deref(), Some("user1!"));
    users.name_set("x".into(), 2);
    users.name_invalidate(2);
    assert_eq!(users.name_refresh(1), "user1!");
    assert_eq!(users.name_uncached(1), "user1!");
    assert_eq!(Users::count("abc"), 3);
    assert_eq!(Users::count_get("abc"), Some(3));
    assert_eq!(users.bump(1), 2);
    assert_eq!(users.into_label(7), "!!7");
}
