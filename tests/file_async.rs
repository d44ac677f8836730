//! The file store under async callers: its waits and its SQLite calls never block an executor
//! thread, on a current-thread runtime as on a multi-thread one. A hang is caught by a generous
//! deadline on a helper thread.
#![cfg(feature = "file")]

mod support;

use std::sync::{mpsc, Arc};
use std::time::Duration;

use support::{child_role, file_store_region, within, TempDir};

/// 32 tasks on one cold key of a file store with its distributed lock, and a slow creator:
/// every task gets the value, and the creator runs once.
fn thirty_two_tasks_on_one_cold_key(runtime: tokio::runtime::Runtime, tag: &str) {
    let dir = TempDir::new(tag);
    let region = Arc::new(file_store_region(&dir.path().join("cache.db")));
    let (values, creations) = support::thirty_two_tasks_on_one_cold_key(
        runtime,
        region,
        Duration::from_millis(200),
        42u64,
    );
    assert_eq!(values, vec![42; 32]);
    assert_eq!(creations, 1, "the creator ran more than once");
}

#[test]
fn thirty_two_tasks_on_a_current_thread_runtime_wait_for_one_creation() {
    if child_role().is_some() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    thirty_two_tasks_on_one_cold_key(runtime, "file-async-current");
}

#[test]
fn thirty_two_tasks_on_a_two_worker_runtime_wait_for_one_creation() {
    if child_role().is_some() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    thirty_two_tasks_on_one_cold_key(runtime, "file-async-workers");
}

#[test]
fn an_async_write_queued_behind_another_writer_leaves_the_executor_free() {
    if child_role().is_some() {
        return;
    }
    let dir = TempDir::new("file-async-busy");
    let path = dir.path().join("cache.db");
    let region = Arc::new(file_store_region(&path));
    // Another program holds the store's write lock until told to let go.
    let (release, released) = mpsc::channel::<()>();
    let (locked, is_locked) = mpsc::channel::<()>();
    let writer_path = path.clone();
    let writer = std::thread::spawn(move || {
        let mut conn = rusqlite::Connection::open(&writer_path).unwrap();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        locked.send(()).unwrap();
        released.recv().unwrap();
        tx.commit().unwrap();
    });
    is_locked.recv().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stored = within("an async write behind another writer", move || {
        runtime.block_on(async move {
            let r = region.clone();
            let write = tokio::spawn(async move { r.set_async("k", 7u32).await });
            // The write waits for the lock off this thread, so this task keeps running: only it
            // can tell the other writer to let go. (Were the write blocking this one thread, it
            // would wait out SQLite's busy timeout and fail.)
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            release.send(()).unwrap();
            let stored = write.await.unwrap();
            (stored, region.get_async::<u32>("k").await.unwrap())
        })
    });
    writer.join().unwrap();
    let (stored, read) = stored;
    stored.expect("the write failed while it waited");
    assert_eq!(read, Some(7));
}
