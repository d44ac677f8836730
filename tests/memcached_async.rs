//! Async callers on memcached (issue 11 item 2, issue 13 item 3): the backend's async paths do
//! their I/O and their waiting without blocking the executor's thread, so a crowd of tasks on
//! a current-thread runtime gets one creator, and nobody waits for `lock_timeout`.
#![cfg(feature = "memcached")]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dogpile::CacheRegion;
use support::{memcached_locking_region as region, within, Server};

/// 32 tasks on one cold key, on `runtime`: the values they got and the number of creations.
/// The creator takes 300 ms, awaiting a timer: it can only finish if the waiters let the
/// thread go. Run on a helper thread, so a hang fails the test after 30 s.
fn thirty_two_tasks(runtime: tokio::runtime::Runtime, region: CacheRegion) -> (Vec<u32>, usize) {
    within("32 tasks on one cold key", move || {
        let region = Arc::new(region);
        let calls = Arc::new(AtomicUsize::new(0));
        let got = runtime.block_on(async {
            let tasks: Vec<_> = (0..32)
                .map(|_| {
                    let (region, calls) = (region.clone(), calls.clone());
                    tokio::spawn(async move {
                        region
                            .get_or_create_async("cold", || async {
                                calls.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(300)).await;
                                7u32
                            })
                            .await
                            .unwrap()
                    })
                })
                .collect();
            let mut got = Vec::new();
            for t in tasks {
                got.push(t.await.unwrap());
            }
            got
        });
        (got, calls.load(Ordering::SeqCst))
    })
}

/// One creation and the right value for all 32 tasks. lock_timeout is far above the hang
/// bound: a waiter that blocks the thread holds up the creator until the lock expires, and
/// then a second creator runs, or the bound is hit.
fn one_creator_on(runtime: tokio::runtime::Runtime) {
    let Some(server) = Server::memcached() else {
        return;
    };
    let (got, calls) = thirty_two_tasks(runtime, region(&server.addr(), 20));
    assert_eq!(got, vec![7; 32]);
    assert_eq!(calls, 1, "creations");
}

#[test]
fn thirty_two_tasks_on_a_current_thread_runtime_get_one_creator() {
    one_creator_on(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    );
}

#[test]
fn thirty_two_tasks_on_two_workers_get_one_creator() {
    one_creator_on(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    );
}

#[test]
fn async_reads_and_writes_round_trip() {
    let Some(server) = Server::memcached() else {
        return;
    };
    let region = region(&server.addr(), 5);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        assert_eq!(region.get_async::<String>("a").await.unwrap(), None);
        region.set_async("a", "x".to_string()).await.unwrap();
        assert_eq!(
            region.get_async::<String>("a").await.unwrap().as_deref(),
            Some("x")
        );
        // The blocking and the async paths see the same data.
        assert_eq!(region.get::<String>("a").unwrap().as_deref(), Some("x"));
        region.delete_async("a").await.unwrap();
        assert_eq!(region.get::<String>("a").unwrap(), None);
    });
}
