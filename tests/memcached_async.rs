//! Async callers on memcached (issue 11 item 2, issue 13 item 3): the backend's async paths do
//! their I/O and their waiting without blocking the executor's thread, so a crowd of tasks on
//! a current-thread runtime gets one creator, and nobody waits for `lock_timeout`.
#![cfg(feature = "memcached")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{memcached_locking_region as region, Server};

/// One creation and the right value for all 32 tasks. lock_timeout is far above the hang
/// bound: a waiter that blocks the thread holds up the creator until the lock expires, and
/// then a second creator runs, or the bound is hit.
fn one_creator_on(runtime: tokio::runtime::Runtime) {
    let Some(server) = Server::memcached() else {
        return;
    };
    // The creator awaits a 300 ms timer: it can only finish if the waiters let the thread go.
    let (got, calls) = support::thirty_two_tasks_on_one_cold_key(
        runtime,
        Arc::new(region(&server.addr(), 20)),
        Duration::from_millis(300),
        7u32,
    );
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
