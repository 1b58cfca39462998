//! Keeping a store's blocking I/O off the async runtime's worker threads.
//!
//! The role traits are synchronous and the engine calls them from async
//! code; a backend whose calls block (SQLite does) wraps each call in
//! [`offload`], so the worker's other tasks (a heartbeat, another step's
//! progress) keep running meanwhile.

/// Run `blocking` (a store's I/O) off the async runtime's worker threads: on
/// a worker of a multi-threaded tokio runtime, the worker's other tasks
/// move to another thread while it runs ([`tokio::task::block_in_place`]);
/// elsewhere (a plain thread, a blocking-pool thread, a current-thread
/// runtime, which has no other worker to hand its tasks to) it just runs.
pub fn offload<T>(blocking: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(blocking)
        }
        _ => blocking(),
    }
}

#[cfg(test)]
mod tests {
    use super::offload;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_blocking_call_does_not_hold_up_the_workers_other_tasks() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let seen = runtime.block_on(async {
            tokio::spawn(async {
                let other_ran = Arc::new(AtomicBool::new(false));
                let flag = other_ran.clone();
                // Queued on this (the only) worker: without offloading it
                // could not run until the blocking call below returns.
                let other = tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
                let seen = offload(|| {
                    let deadline = std::time::Instant::now() + Duration::from_secs(5);
                    while !other_ran.load(Ordering::SeqCst) && std::time::Instant::now() < deadline
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    other_ran.load(Ordering::SeqCst)
                });
                other.await.unwrap();
                seen
            })
            .await
            .unwrap()
        });
        assert!(seen, "the other task ran while the call blocked");
    }

    #[test]
    fn runs_outside_a_runtime_and_on_a_current_thread_runtime() {
        assert_eq!(offload(|| 1), 1);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(runtime.block_on(async { offload(|| 2) }), 2);
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let on_blocking_pool =
            multi.block_on(async { tokio::task::spawn_blocking(|| offload(|| 3)).await.unwrap() });
        assert_eq!(on_blocking_pool, 3);
    }
}
