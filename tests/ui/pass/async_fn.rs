use dogpile::{cache_on_arguments, CacheRegion, RegionConfig};

static REGION: CacheRegion = CacheRegion::new();

#[cache_on_arguments(region = REGION, expiration_time = 30)]
async fn fetch(id: u64) -> String {
    tokio::task::yield_now().await;
    format!("item {id}")
}

#[cache_on_arguments(region = REGION)]
async fn fetch_checked(id: u64) -> Result<String, std::num::ParseIntError> {
    let n: u64 = id.to_string().parse()?;
    Ok(format!("item {n}"))
}

struct Client;

impl Client {
    #[cache_on_arguments(region = REGION, namespace = "Client")]
    async fn get(&self, path: &str) -> Vec<u8> {
        path.as_bytes().to_vec()
    }
}

fn assert_send<T: Send>(_: &T) {}

fn main() {
    REGION
        .configure(RegionConfig::new("dogpile.cache.memory"))
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let fut = fetch(1);
        assert_send(&fut);
        assert_eq!(fut.await, "item 1");
        assert_eq!(fetch_get(1).await.as_deref(), Some("item 1"));
        fetch_set("one".into(), 1).await;
        fetch_invalidate(1).await;
        assert_eq!(fetch_refresh(1).await, "item 1");
        assert_eq!(fetch_uncached(2).await, "item 2");
        assert_eq!(fetch_checked(3).await.unwrap(), "item 3");
        let client = Client;
        assert_eq!(client.get("ab").await, b"ab".to_vec());
        assert_eq!(client.get_get("ab").await, Some(b"ab".to_vec()));
    });
}
