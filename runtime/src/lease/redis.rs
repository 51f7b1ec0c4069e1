//! A lease in Redis: the key `<lease-name>` holds the leader's identity and expires
//! `lease-duration` after its last renewal (Redis counts the time, so clocks do not matter).
//!
//! Every try is one script, atomic on the server: if the key holds our identity, `PEXPIRE` it
//! (a renewal); if it is absent or holds a release mark (`released:<identity>`), `SET` it with
//! `PX` (taking it); else answer the holder. A graceful stop replaces our identity with the
//! release mark by the same compare-and-set, so a standby takes over at its next try.
//!
//! One case the key alone cannot tell: Redis restarted without persistence and lost the key
//! while the leader still leads. A standby that saw another holder therefore does not take an
//! absent key before that holder's key would have expired (its time to live when last seen):
//! the leader, renewing, takes it back first. A replica that never saw a holder takes an absent
//! key at once (a first start).

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{Attempt, BoxFuture, LeaseBackend, LeaseError};
use crate::config::RedisLeaseConfig;

/// The try: KEYS[1] the lease, ARGV identity, milliseconds, whether an absent key may be taken.
/// Answers `{1, previous, 0}` (held; `previous` the released holder, or ""), `{0, holder, ttl}`
/// (held by another for `ttl` more milliseconds), `{2, "", 0}` (absent, not taken yet).
const TRY: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, '', 0}
end
if v and string.sub(v, 1, 9) ~= 'released:' then
  return {0, v, redis.call('PTTL', KEYS[1])}
end
if not v and ARGV[3] ~= '1' then
  return {2, '', 0}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if v then return {1, string.sub(v, 10), 0} end
return {1, '', 0}
";

/// The release: KEYS[1] the lease, ARGV identity, milliseconds the mark lasts.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], 'released:' .. ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// A lease kept in a Redis key.
pub struct RedisLease {
    client: redis::Client,
    key: String,
    shown: String,
    connection: Mutex<Option<redis::aio::MultiplexedConnection>>,
    try_script: redis::Script,
    release_script: redis::Script,
    /// When the other holder's key, as last seen, expires: an absent key is not trusted
    /// before then.
    seen_other: std::sync::Mutex<Option<Instant>>,
    /// Whether we held it at the last try.
    held: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for RedisLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLease")
            .field("at", &self.shown)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl RedisLease {
    /// The lease `key` at `config.url`, with `config`'s credentials (the password stays a
    /// secret: it is in no message).
    pub fn new(config: &RedisLeaseConfig, key: &str) -> Result<RedisLease, LeaseError> {
        let err = |m: String| LeaseError::new("redis", m);
        let info = redis::IntoConnectionInfo::into_connection_info(config.url.as_str())
            .map_err(|e| err(format!("high-availability.redis.url: {e}")))?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &config.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &config.password {
            settings = settings.set_password(password.expose_secret());
        }
        let info = info.set_redis_settings(settings);
        let client = match &config.ca_file {
            Some(path) => {
                let root = std::fs::read(path).map_err(|e| {
                    err(format!("high-availability.redis.ca-file: cannot read {path}: {e}"))
                })?;
                redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(root),
                    },
                )
            }
            None => redis::Client::open(info),
        }
        .map_err(|e| err(format!("high-availability.redis: {e}")))?;
        Ok(RedisLease {
            client,
            key: key.to_owned(),
            shown: crate::secret::redact_url(&config.url),
            connection: Mutex::new(None),
            try_script: redis::Script::new(TRY),
            release_script: redis::Script::new(RELEASE),
            seen_other: std::sync::Mutex::new(None),
            held: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The connection, made again after a failure. Bounded by the elector's timeout.
    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, LeaseError> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.error(e))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    fn error(&self, e: redis::RedisError) -> LeaseError {
        LeaseError::new("redis", format!("{}: {e}", self.shown))
    }

    /// Runs `script` on the connection; a failure drops it (the next try connects again).
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, LeaseError> {
        let mut c = self.connection().await?;
        match invocation.invoke_async(&mut c).await {
            Ok(v) => Ok(v),
            Err(e) => {
                *self.connection.lock().await = None;
                Err(self.error(e))
            }
        }
    }
}

impl LeaseBackend for RedisLease {
    fn try_acquire_or_renew<'a>(
        &'a self,
        identity: &'a str,
        duration: Duration,
    ) -> BoxFuture<'a, Result<Attempt, LeaseError>> {
        Box::pin(async move {
            use std::sync::atomic::Ordering;
            let millis = duration.as_millis().max(1) as u64;
            let trust_absent = self.held.load(Ordering::Acquire)
                || self
                    .seen_other
                    .lock()
                    .expect("lock")
                    .is_none_or(|expires| Instant::now() >= expires);
            let mut invocation = self.try_script.key(&self.key);
            invocation
                .arg(identity)
                .arg(millis)
                .arg(if trust_absent { "1" } else { "0" });
            let started = Instant::now();
            let (code, who, ttl): (i64, String, i64) = self.invoke(invocation).await?;
            match code {
                1 => {
                    self.held.store(true, Ordering::Release);
                    Ok(Attempt::Held {
                        previous: Some(who).filter(|w| !w.is_empty() && w != identity),
                    })
                }
                0 => {
                    self.held.store(false, Ordering::Release);
                    // A key without expiry (-1) was not set by us: trusted free only after one
                    // lease duration.
                    let ttl = u64::try_from(ttl).map_or(duration, Duration::from_millis);
                    *self.seen_other.lock().expect("lock") = Some(started + ttl);
                    Ok(Attempt::HeldBy(Some(who)))
                }
                _ => Ok(Attempt::HeldBy(None)),
            }
        })
    }

    fn release<'a>(&'a self, identity: &'a str) -> BoxFuture<'a, Result<(), LeaseError>> {
        Box::pin(async move {
            self.held
                .store(false, std::sync::atomic::Ordering::Release);
            let mut invocation = self.release_script.key(&self.key);
            invocation.arg(identity).arg(60_000u64);
            let _released: i64 = self.invoke(invocation).await?;
            Ok(())
        })
    }

    fn describe(&self) -> String {
        format!("redis key `{}` at {}", self.key, self.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_in_no_debug_output_or_description() {
        let config = RedisLeaseConfig {
            url: "rediss://redis.example.com:6380/0".into(),
            password: Some(crate::secret::Secret::new("pw-s3cr3t")),
            username: Some("extractor".into()),
            ca_file: None,
        };
        let lease = RedisLease::new(&config, "demo").unwrap();
        for shown in [
            format!("{lease:?}"),
            lease.describe(),
            format!("{config:?}"),
        ] {
            assert!(!shown.contains("pw-s3cr3t"), "{shown}");
        }
        assert!(lease.describe().contains("redis.example.com:6380"));
    }
}
