//! The command connection in use: connecting it (and measuring the clock
//! offset to Redis), sending commands, pipelines and scripts over it with
//! one retry for idempotent ones, and dropping it for a fresh one after a failover.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use clusterhost_plugin_api::cluster::now_ms;
use redis::Script;

use crate::conn::{self, Conn};
use crate::core::{lock, Core};
use crate::error::Error;

/// The command connection and what was learned through it. Part of
/// [`Core`]; every job that talks to Redis goes through it.
#[derive(Default)]
pub(crate) struct Link {
    /// `None` before the first connect and after a reset: the next
    /// heartbeat connects afresh.
    conn: Mutex<Option<Conn>>,
    /// Cluster time offset from Redis's clock (ms, signed), measured at connect.
    clock_offset: AtomicI64,
    /// Counts connection resets; the pub/sub loop reconnects when it moves.
    epoch: AtomicU64,
    /// Requests sent (the `redis_commands` stat).
    commands: AtomicU64,
    /// Requests that failed (the `redis_errors` stat).
    errors: AtomicU64,
}

impl Link {
    /// How many times the connection was reset.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Requests sent so far.
    pub(crate) fn commands(&self) -> u64 {
        self.commands.load(Ordering::Relaxed)
    }

    /// Counts a request sent over another connection (the near cache's).
    pub(crate) fn count_command(&self) {
        self.commands.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests failed so far.
    pub(crate) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Drops the connection for good (the plugin stops): its own background
    /// tasks end with it, before the plugin's runtime goes.
    pub(crate) fn close(&self) {
        lock(&self.conn).take();
    }
}

impl Core {
    /// The command connection, or why there is none.
    fn conn(&self) -> Result<Conn, Error> {
        lock(&self.link.conn).clone().ok_or_else(|| Error::NotConnected { urls: self.config.urls.join(", ") })
    }

    /// Sends one request (`send` gets the connection), counting it and
    /// naming Redis in the error. With `retry` (idempotent requests only),
    /// a request that met a dropped connection is sent once more: the
    /// connection reconnects by itself.
    pub(crate) async fn send<T, F>(&self, retry: bool, send: impl Fn(Conn) -> F) -> Result<T, Error>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        self.link.commands.fetch_add(1, Ordering::Relaxed);
        match send(self.conn()?).await {
            Err(e) if retry && dropped(&e) => send(self.conn()?).await.map_err(|e| self.failed(e)),
            other => other.map_err(|e| self.failed(e)),
        }
    }

    /// An idempotent command.
    pub(crate) async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Error> {
        self.send(true, |mut conn| async move { cmd.query_async(&mut conn).await }).await
    }

    /// An idempotent pipeline.
    pub(crate) async fn pipe<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, Error> {
        self.send(true, |mut conn| async move { pipe.query_async(&mut conn).await }).await
    }

    /// A Lua script; `retry` when it is idempotent.
    pub(crate) async fn script<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&[u8]],
        retry: bool,
    ) -> Result<T, Error> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let invocation = &invocation;
        self.send(retry, |mut conn| async move { invocation.invoke_async(&mut conn).await }).await
    }

    /// Counts a failed request; a read-only answer means a failover.
    fn failed(&self, e: redis::RedisError) -> Error {
        self.link.errors.fetch_add(1, Ordering::Relaxed);
        if e.code() == Some("READONLY") {
            // Talking to a replica: after a Sentinel failover the old master
            // is one. Connect again (Sentinel names the new master).
            self.reset_connection("the server became a read-only replica (a failover?)");
        }
        Error::Command { urls: self.config.urls.join(", "), source: e }
    }

    /// This member's clock, corrected by the offset to Redis's `TIME`
    /// measured at connect: versions and fencing floors use it.
    pub fn cluster_time_ms(&self) -> u64 {
        now_ms().saturating_add_signed(self.link.clock_offset.load(Ordering::Relaxed))
    }

    /// Connects the command connection unless it is up.
    pub(crate) async fn ensure_connected(&self) -> Result<(), Error> {
        if lock(&self.link.conn).is_some() {
            return Ok(());
        }
        let conn = conn::connect(&self.config).await?;
        let before = now_ms();
        let mut probe = conn.clone();
        if let Ok((secs, micros)) = redis::cmd("TIME").query_async::<(u64, u64)>(&mut probe).await {
            let after = now_ms();
            let server = secs * 1000 + micros / 1000;
            let offset = server as i64 - ((before + after) / 2) as i64;
            self.link.clock_offset.store(offset, Ordering::Relaxed);
        }
        *lock(&self.link.conn) = Some(conn);
        tracing::info!(
            "connected to Redis ({} mode, {}), key prefix {:?}",
            conn::mode_name(self.config.mode),
            self.config.urls.join(", "),
            self.config.key_prefix
        );
        Ok(())
    }

    /// Drops the command connection; the heartbeat connects again at once
    /// (in sentinel mode, to whichever server Sentinel names master now),
    /// and pub/sub follows.
    pub(crate) fn reset_connection(&self, why: &str) {
        if lock(&self.link.conn).take().is_some() {
            tracing::warn!("reconnecting to Redis: {why}");
            self.link.epoch.fetch_add(1, Ordering::SeqCst);
            // In sentinel mode the tracking connection may be on the old master too.
            self.near.drop_all("the command connection to Redis is reset", true);
            self.wake.notify_one();
        }
    }
}

/// The connection broke under the command (it reconnects by itself).
fn dropped(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() || e.is_io_error()
}
