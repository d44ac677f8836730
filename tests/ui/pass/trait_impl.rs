use dogpile::{cache_impl, cache_multi_on_arguments, cache_on_arguments, CacheRegion, RegionConfig};
use std::fmt::Display;

static REGION: CacheRegion = CacheRegion::new();

pub trait Repo {
    fn name(&self, id: u32) -> String;
    fn names(&self, ids: &[u32]) -> Vec<String>;
    fn plain(&self) -> u8;
}

pub struct Db {
    prefix: String,
}

/// A trait's methods, cached; companions public, on `Db`.
#[cache_impl(pub)]
impl Repo for Db {
    /// A doc comment stays on the method.
    #[cache_on_arguments(region = REGION, namespace = "Db")]
    fn name(&self, id: u32) -> String {
        format!("{}{id}", self.prefix)
    }

    #[dogpile::cache_multi_on_arguments(region = REGION, namespace = "Db")]
    fn names(&self, ids: &[u32]) -> Vec<String> {
        ids.iter().map(|i| format!("{}{i}", self.prefix)).collect()
    }

    /// Methods without a cache attribute are left as they are.
    fn plain(&self) -> u8 {
        1
    }
}

pub struct Wrapper<T>(T);

/// A generic block with a `where` clause: the companions' block gets both.
#[cache_impl]
impl<T> Repo for Wrapper<T>
where
    T: Display + Send + Sync,
{
    #[cache_on_arguments(region = REGION, namespace = "Wrapper")]
    fn name(&self, id: u32) -> String {
        format!("{}{id}", self.0)
    }

    #[cache_multi_on_arguments(region = REGION, namespace = "Wrapper")]
    fn names(&self, ids: &[u32]) -> Vec<String> {
        ids.iter().map(|i| format!("{}{i}", self.0)).collect()
    }

    fn plain(&self) -> u8 {
        2
    }
}

/// An async trait method.
trait Fetch {
    async fn fetch(&self, id: u32) -> u32;
}

#[cache_impl(pub(crate))]
impl Fetch for Db {
    #[cache_on_arguments(region = REGION, namespace = "fetch")]
    async fn fetch(&self, id: u32) -> u32 {
        id + 1
    }
}

fn main() {
    REGION
        .configure(RegionConfig::new("dogpile.cache.memory"))
        .unwrap();
    let db = Db { prefix: "u".into() };
    let repo: &dyn Repo = &db;
    assert_eq!(repo.name(1), "u1");
    assert_eq!(db.name_get(1).as_deref(), Some("u1"));
    db.name_set("x".into(), 2);
    assert_eq!(repo.name(2), "x");
    db.name_invalidate(2);
    assert_eq!(db.name_refresh(2), "u2");
    assert_eq!(db.name_uncached(3), "u3");
    assert_eq!(repo.names(&[4, 5]), ["u4", "u5"]);
    assert_eq!(db.names_get(&[4]), [Some("u4".to_string())]);
    assert_eq!(repo.plain(), 1);
    let w = Wrapper(7);
    assert_eq!(w.name(1), "71");
    assert_eq!(w.name_get(1).as_deref(), Some("71"));
    assert_eq!(w.names(&[2]), ["72"]);
    assert_eq!(w.plain(), 2);
    let _ = Db::fetch_get;
    assert_eq!(db.label(3), "label 3");
    assert_eq!(db.label_get(3).as_deref(), Some("label 3"));
    assert_eq!("ab".to_string().shout(2), "ABAB");
}

/// An associated type in the signature: the companions name it `<Db as Keyed>::Id`.
trait Keyed {
    type Id: dogpile::KeyArg;
    fn label(&self, id: Self::Id) -> String;
}

#[cache_impl]
impl Keyed for Db {
    type Id = u64;

    #[cache_on_arguments(region = REGION)]
    fn label(&self, id: Self::Id) -> String {
        format!("label {id}")
    }
}

/// A trait implemented for a type of another crate: no inherent block, so no companions.
trait Shout {
    fn shout(&self, times: u8) -> String;
}

#[cache_impl(no_companions)]
impl Shout for String {
    #[cache_on_arguments(region = REGION)]
    fn shout(&self, times: u8) -> String {
        self.to_uppercase().repeat(times.into())
    }
}
