//! What the handler tests share: a Hub on the in-memory test bed whose one rule sends every
//! delivery to one handler, the worker over it, and an upload from alice to bob.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use mailroom_core::testing::{MemoryBlobs, MemoryMeta};
use mailroom_core::{
    AccountKind, AccountName, Actor, ClientSession, EventKind, Handler, Hub, Job, JobQuery,
    Protocol, RetryPolicy, RouteEffect, Rule, Rules, SystemClock, VirtualPath,
};
use mailroom_events::{Handlers, JobsConfig};
use tokio_util::sync::CancellationToken;

/// A Hub whose rule `rule` sends every delivery to `handler`, retried by `retry`; alice may
/// send to bob.
pub async fn hub(rule: &str, handler: Handler, retry: RetryPolicy) -> Arc<Hub> {
    let rule = Rule {
        name: rule.to_owned(),
        on: vec![EventKind::DeliveryDelivered],
        account: None,
        sender: None,
        recipient: None,
        outcome: None,
        file: None,
        handlers: vec![handler],
        copy_to: Vec::new(),
    };
    let hub = Hub::new(
        Arc::new(MemoryMeta::new()),
        Arc::new(MemoryBlobs::new()),
        Arc::new(SystemClock),
    )
    .with_jobs(Rules::new(vec![rule], 100).unwrap(), retry);
    let admin = Actor::cli("test");
    for name in ["alice", "bob"] {
        hub.add_account(&admin, name_of(name), AccountKind::Client, None, Vec::new())
            .await
            .unwrap();
    }
    hub.set_route(&admin, name_of("alice"), name_of("bob"), RouteEffect::Allow)
        .await
        .unwrap();
    Arc::new(hub)
}

/// Runs the worker over `hub` with `handlers` until the returned token is cancelled.
pub fn worker(hub: &Arc<Hub>, handlers: Handlers) -> CancellationToken {
    let shutdown = CancellationToken::new();
    tokio::spawn(mailroom_events::run(
        hub.clone(),
        handlers,
        JobsConfig::default(),
        shutdown.clone(),
    ));
    shutdown
}

/// The hub's jobs once `done` holds for them, awaited on the hub's signal of committed job
/// outcomes (at most 30 s).
pub async fn jobs_when(hub: &Hub, mut done: impl FnMut(&[Job]) -> bool) -> Vec<Job> {
    let mut outcomes = hub.watch_settled();
    let wait = async {
        loop {
            // Subscribed before reading: an outcome committed after this read wakes the wait.
            let jobs = hub.jobs(JobQuery::default()).await.unwrap();
            if done(&jobs) {
                return jobs;
            }
            outcomes.changed().await.unwrap();
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), wait)
        .await
        .expect("the jobs did not reach the state within 30 s")
}

pub fn name_of(name: &str) -> AccountName {
    AccountName::parse(name).unwrap()
}

/// alice, connecting from `source`, sends bob `name`; returns the delivery's id.
pub async fn send(hub: &Hub, name: &str, source: Option<&str>) -> String {
    let session = ClientSession {
        account: name_of("alice"),
        source: source.map(str::to_owned),
        protocol: Protocol::Sftp,
    };
    let path = VirtualPath::parse(&format!("/outbox/bob/{name}")).unwrap();
    let mut upload = hub.begin_upload(&session, &path).await.unwrap();
    upload.write_at(0, b"%PDF-1.7").await.unwrap();
    hub.finish_upload(upload).await.unwrap()[0].id.to_string()
}
