//! The reload-policy actor (P1, P2): reads `gateway.reload` from the gateway's JSON5 config file,
//! caches it for 15 s, and lets overlapping refreshes share one read.

use std::path::PathBuf;

use actix::prelude::*;
use tokio::sync::oneshot;

use gatewarden_core::config::ReloadConfig;
use gatewarden_core::reload_policy::{
    default_policy, parse_reload_policy, RefreshDecision, ReloadPolicy, ReloadPolicyCache,
};

/// Ask for the current policy, refreshing it first when the cache is stale (or `force`).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "ReloadPolicy")]
pub struct GetReloadPolicy {
    /// Bypass the cache (L2: every start forces a refresh).
    pub force: bool,
}

/// F2: a digest of the gateway's config file as it is now (`None`: missing, unreadable or
/// larger than [`MAX_CONFIG_BYTES`]). Read fresh every time: the doctor and the user change it.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Option<String>")]
pub struct GetConfigDigest;

/// The largest gateway config file digested (Q3's bound for files gatewarden reads).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The outcome of a read, fed back to the actor.
#[derive(Message)]
#[rtype(result = "()")]
struct ReadFinished(ReloadPolicy);

/// Owns the cache of the reload policy and the config file's path.
pub struct ReloadPolicyActor {
    path: PathBuf,
    config: ReloadConfig,
    cache: ReloadPolicyCache,
    origin: std::time::Instant,
    waiting: Vec<oneshot::Sender<ReloadPolicy>>,
}

impl ReloadPolicyActor {
    /// An actor reading `path` (the gateway's `openclaw.json`).
    pub fn new(path: PathBuf, config: ReloadConfig) -> Self {
        ReloadPolicyActor {
            cache: ReloadPolicyCache::new(&config),
            path,
            config,
            origin: std::time::Instant::now(),
            waiting: Vec::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl Actor for ReloadPolicyActor {
    type Context = Context<Self>;
}

impl Handler<GetReloadPolicy> for ReloadPolicyActor {
    type Result = ResponseFuture<ReloadPolicy>;

    fn handle(&mut self, message: GetReloadPolicy, ctx: &mut Self::Context) -> Self::Result {
        let now = self.now_ms();
        match self.cache.needs_refresh(now, message.force) {
            RefreshDecision::UseCached => {
                let policy = self.cache.current().clone();
                Box::pin(async move { policy })
            }
            decision => {
                let (sender, receiver) = oneshot::channel();
                self.waiting.push(sender);
                if decision == RefreshDecision::StartRead {
                    self.cache.read_started();
                    let path = self.path.clone();
                    let config = self.config.clone();
                    let me = ctx.address();
                    actix_rt::spawn(async move {
                        // P1: an unreadable or missing file means defaults.
                        let policy = match tokio::fs::read_to_string(&path).await {
                            Ok(text) => parse_reload_policy(&text, &config),
                            Err(_) => default_policy(&config),
                        };
                        me.do_send(ReadFinished(policy));
                    });
                }
                let fallback = default_policy(&self.config);
                Box::pin(async move { receiver.await.unwrap_or(fallback) })
            }
        }
    }
}

impl Handler<GetConfigDigest> for ReloadPolicyActor {
    type Result = ResponseFuture<Option<String>>;

    fn handle(&mut self, _message: GetConfigDigest, _ctx: &mut Self::Context) -> Self::Result {
        let path = self.path.clone();
        Box::pin(async move {
            use tokio::io::AsyncReadExt;
            let file = tokio::fs::File::open(&path).await.ok()?;
            let mut bytes = Vec::new();
            file.take(MAX_CONFIG_BYTES + 1)
                .read_to_end(&mut bytes)
                .await
                .ok()?;
            if bytes.len() as u64 > MAX_CONFIG_BYTES {
                return None;
            }
            Some(gatewarden_core::recovery::config_digest(&bytes))
        })
    }
}

impl Handler<ReadFinished> for ReloadPolicyActor {
    type Result = ();

    fn handle(&mut self, message: ReadFinished, _ctx: &mut Self::Context) {
        let now = self.now_ms();
        self.cache.read_finished(now, message.0.clone());
        for waiter in self.waiting.drain(..) {
            let _ = waiter.send(message.0.clone());
        }
    }
}
