//! M1 through the handle from a multi-threaded tokio runtime: tasks on different worker threads
//! share one `GatewayHandle` (no actix in the test's own code) and every call gets exactly one
//! answer, its own.

mod handle_support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures_util::stream::{FuturesUnordered, StreamExt as _};
use handle_support::{options, running, WAIT};
use serde_json::json;

const TASKS: u64 = 8;
const CALLS_PER_TASK: u64 = 1_250;
/// Calls each task keeps in flight.
const IN_FLIGHT: u64 = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn m1_eight_threads_share_a_handle_and_10000_rpcs_are_each_answered_once_with_their_own_reply(
) {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let (handle, _pid) = running(options(&state_dir, &[])).await;
    let threads = Arc::new(Mutex::new(HashSet::new()));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let handle = handle.clone();
            let threads = threads.clone();
            tokio::spawn(async move {
                let mut answered = Vec::new();
                let mut calls = FuturesUnordered::new();
                let mut next = 0;
                while next < CALLS_PER_TASK || !calls.is_empty() {
                    while next < CALLS_PER_TASK && (calls.len() as u64) < IN_FLIGHT {
                        let handle = handle.clone();
                        let n = next;
                        calls.push(async move {
                            (n, handle.rpc("echo", json!({"task": task, "n": n})).await)
                        });
                        next += 1;
                    }
                    if let Some((n, answer)) = calls.next().await {
                        threads.lock().unwrap().insert(std::thread::current().id());
                        let reply =
                            answer.unwrap_or_else(|error| panic!("call {task}/{n}: {error}"));
                        // The reply of this call, not of another one in flight.
                        assert_eq!(reply, json!({"task": task, "n": n}));
                        answered.push(n);
                    }
                }
                answered
            })
        })
        .collect();
    let mut total = 0;
    for (task, joined) in tasks.into_iter().enumerate() {
        let answered = tokio::time::timeout(WAIT, joined)
            .await
            .expect("calls answered within the bound")
            .expect("task ran");
        let unique: HashSet<_> = answered.iter().collect();
        assert_eq!(
            answered.len(),
            unique.len(),
            "task {task}: an answer came twice"
        );
        assert_eq!(
            answered.len() as u64,
            CALLS_PER_TASK,
            "task {task}: answers missing"
        );
        total += answered.len();
    }
    assert_eq!(total, 10_000);
    let threads = threads.lock().unwrap().len();
    assert!(threads >= 2, "every answer was awaited on one thread");
    handle.shutdown().await.expect("shutdown");
}
