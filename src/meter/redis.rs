//! [`RedisMeter`]: one volume count shared by every CRM instance, kept in Redis.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use redis::{
    Cmd, Connection, ErrorKind, IntoConnectionInfo, RedisError, RedisResult, ServerErrorKind,
};

use super::{MeterError, VolumeMeter, Window};
use crate::records::PrincipalId;

mod pool;

use pool::{Pool, Refused};

/// One observation, atomically (Redis runs a script alone). `KEYS[1]` is the principal's
/// hash: field `<bucket>` holds the reads in that bucket, field `floor` the oldest bucket
/// still kept. ARGV: the current bucket, the first bucket counted, the oldest bucket to keep,
/// the reads, the key's expiry in milliseconds. Returns `{0, count}`, or `{1, floor}` when
/// the window starts before the buckets kept (the call is too far out of order).
const OBSERVE: &str = r"
local current, first, keep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local floor = tonumber(redis.call('HGET', KEYS[1], 'floor'))
if floor and first < floor then
  return {1, floor}
end
local total = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local bucket = tonumber(fields[i])
  if bucket then
    if bucket < keep then
      redis.call('HDEL', KEYS[1], fields[i])
    elseif bucket >= first then
      total = total + tonumber(fields[i + 1])
    end
  end
end
if not floor or keep > floor then
  redis.call('HSET', KEYS[1], 'floor', keep)
end
redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {0, total}
";

/// How a [`RedisMeter`] keys and times its calls.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use membergate::meter::RedisMeterOptions;
/// let options = RedisMeterOptions {
///     key_prefix: "crm-eu:meter:".into(),
///     ..RedisMeterOptions::default()
/// };
/// assert_eq!(options.timeout, Duration::from_millis(200));
/// assert_eq!(options.connections, 8);
/// assert_eq!(options.retry_after, Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisMeterOptions {
    /// The window counted ([`Window::HOUR`] by default).
    pub window: Window,
    /// Prefix of the meter's keys (`membergate:meter:` by default); the key of a principal
    /// is the prefix then the principal's uid, e.g. `membergate:meter:Staff::"s-1"`.
    pub key_prefix: String,
    /// The deadline of each call, from when it starts (200 ms by default): waiting for a
    /// free connection, connecting, sending the call and reading its answer all fit in it, or
    /// the call returns [`MeterError::Unavailable`].
    pub timeout: Duration,
    /// How many connections to Redis the meter keeps at most (8 by default), so how many
    /// calls run at once; the others wait for a free one, until their deadline at most.
    pub connections: usize,
    /// After Redis could not be reached or did not answer in time, how long calls are
    /// refused at once, without trying it (1 s by default). Then one call tries it again,
    /// the others still refused, and an answer lets every call through again.
    pub retry_after: Duration,
}

impl Default for RedisMeterOptions {
    fn default() -> Self {
        RedisMeterOptions {
            window: Window::HOUR,
            key_prefix: "membergate:meter:".into(),
            timeout: Duration::from_millis(200),
            connections: 8,
            retry_after: Duration::from_secs(1),
        }
    }
}

/// The [`VolumeMeter`] shared by every CRM instance: the counts live in Redis, one hash per
/// principal holding its per-bucket counts, and each [`observe`](VolumeMeter::observe) is one
/// Lua script that Redis runs atomically (count the window, add the reads, expire the
/// buckets older than one window before it). Two instances pointed at the same Redis and key
/// prefix see one count.
///
/// The window semantics are those of [`LocalMeter`](super::LocalMeter): half-open window,
/// counted in buckets, over-counting by less than one bucket, never under-counting. Calls may
/// come out of order (instances' clocks differ slightly) by up to one window; older ones fail
/// with [`MeterError::OutOfOrder`]. A principal's key expires in Redis after two windows and a
/// bucket without a call (by Redis's clock), so idle principals cost nothing.
///
/// **Failing closed.** Each call has one deadline, [`RedisMeterOptions::timeout`] from
/// when it starts, however many threads of the instance call at once: waiting for one of the
/// meter's [`connections`](RedisMeterOptions::connections) (opened lazily, then kept),
/// connecting, sending the call and reading the answer all fit in it, or the call returns
/// [`MeterError::Unavailable`] (the host name aside: use an address, or a name resolved at
/// once). A connection that failed is dropped (its late answer would be taken for the next
/// call's); one that failed though Redis may not have (a kept one Redis closed, a call
/// interrupted by a signal) is replaced once, within the deadline (a call run twice counts
/// twice: over, never under). When Redis cannot be reached, closes the connection or does
/// not answer in time, the meter knows it is down: for
/// [`retry_after`](RedisMeterOptions::retry_after) every call returns
/// [`MeterError::Unavailable`] at once, without touching the network; then one call tries
/// Redis again while the others are still refused, and its answer lets every call through.
/// So when Redis is down or stalled the CRM gets an error within one deadline, and
/// [`observe_fail_closed`](VolumeMeter::observe_fail_closed) turns it into a refusal of every
/// read.
///
/// # Example
/// ```no_run
/// use membergate::meter::{RedisMeter, VolumeMeter};
/// use membergate::{Context, PrincipalId, PrincipalKind};
///
/// let meter = RedisMeter::new("redis://127.0.0.1:6379/")?;
/// let staffer = PrincipalId::new(PrincipalKind::CampaignStaff, "cs-a-staff");
/// let now = jiff::Timestamp::now(); // the CRM's clock; the meter never reads one
/// let metered = meter.observe_fail_closed(&staffer, now, 1);
/// if let Some(error) = &metered.error {
///     eprintln!("refusing reads: {error}");
/// }
/// let ctx = Context::at(now).reads_this_hour(metered.reads_this_hour);
/// # let _ = ctx;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RedisMeter {
    client: redis::Client,
    /// `redis at host:port`, for messages (never the URL: it may hold a password).
    name: String,
    options: RedisMeterOptions,
    /// How many replies connecting waits for (`HELLO` or `AUTH`, `SELECT`), at least one:
    /// the `redis` crate gives each the whole timeout it is given, so it gets its share.
    setup_replies: u32,
    /// Gives the script's hash, for `EVALSHA`.
    script: redis::Script,
    pool: Pool<Connection>,
}

impl std::fmt::Debug for RedisMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisMeter")
            .field("redis", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl RedisMeter {
    /// A meter on the Redis at `url` (`redis://host:port/db`, optionally with
    /// `user:password@`) with the default options. It does not connect yet.
    ///
    /// # Errors
    /// [`MeterError::Config`] if the URL is malformed.
    pub fn new(url: &str) -> Result<Self, MeterError> {
        Self::with_options(url, RedisMeterOptions::default())
    }

    /// A meter on the Redis at `url` with `options`. It does not connect yet.
    ///
    /// # Errors
    /// [`MeterError::Config`] if the URL is malformed, the timeout zero or there are no
    /// connections.
    ///
    /// # Example
    /// ```
    /// use std::time::Duration;
    /// use membergate::meter::{RedisMeter, RedisMeterOptions};
    ///
    /// let options = RedisMeterOptions {
    ///     key_prefix: "crm-eu:meter:".into(),
    ///     connections: 16,
    ///     retry_after: Duration::from_millis(500),
    ///     ..RedisMeterOptions::default()
    /// };
    /// let meter = RedisMeter::with_options("redis://127.0.0.1:6379/", options)?;
    /// assert_eq!(meter.options().connections, 16);
    /// let none = RedisMeterOptions { connections: 0, ..RedisMeterOptions::default() };
    /// assert!(RedisMeter::with_options("redis://127.0.0.1:6379/", none).is_err());
    /// # Ok::<(), membergate::meter::MeterError>(())
    /// ```
    pub fn with_options(url: &str, options: RedisMeterOptions) -> Result<Self, MeterError> {
        if options.timeout.is_zero() {
            return Err(MeterError::Config(
                "the Redis timeout must be positive".into(),
            ));
        }
        if options.connections == 0 {
            return Err(MeterError::Config(
                "the Redis meter needs at least one connection".into(),
            ));
        }
        let bad_url = |e: RedisError| MeterError::Config(format!("bad Redis URL: {e}"));
        let info = url.into_connection_info().map_err(bad_url)?;
        // Connecting sends no `CLIENT SETINFO`: two replies fewer to wait for.
        let settings = info.redis_settings().clone().set_skip_set_lib_name();
        let setup_replies = u32::from(settings.password().is_some())
            .max(u32::from(settings.protocol().supports_resp3()))
            + u32::from(settings.db() != 0);
        let client = redis::Client::open(info.set_redis_settings(settings)).map_err(bad_url)?;
        let name = format!("redis at {}", client.get_connection_info().addr());
        Ok(RedisMeter {
            client,
            name,
            setup_replies: setup_replies.max(1),
            pool: Pool::new(options.connections, options.retry_after),
            options,
            script: redis::Script::new(OBSERVE),
        })
    }

    /// The meter's options.
    pub fn options(&self) -> &RedisMeterOptions {
        &self.options
    }

    /// The Redis key holding `principal`'s counts.
    ///
    /// # Example
    /// ```
    /// use membergate::meter::RedisMeter;
    /// use membergate::{PrincipalId, PrincipalKind};
    /// let meter = RedisMeter::new("redis://127.0.0.1/")?;
    /// let p = PrincipalId::new(PrincipalKind::Staff, "s-1");
    /// assert_eq!(meter.key(&p), r#"membergate:meter:Staff::"s-1""#);
    /// # Ok::<(), membergate::meter::MeterError>(())
    /// ```
    pub fn key(&self, principal: &PrincipalId) -> String {
        format!("{}{principal}", self.options.key_prefix)
    }

    /// Checks that Redis answers, for a health check.
    ///
    /// # Errors
    /// [`MeterError::Unavailable`] if it does not within the timeout, or is known down.
    pub fn ping(&self) -> Result<(), MeterError> {
        self.with_connection(|conn, deadline| {
            query::<String>(conn, deadline, &redis::cmd("PING")).map(drop)
        })
    }

    /// Runs `call` on a connection of the pool by the deadline, [`RedisMeterOptions::timeout`]
    /// from now: the deadline goes with it, for its timeouts. Connects if the pool lends no
    /// open connection, and once more, by the same deadline, if the kept one turns out closed
    /// or the call failed without a word from Redis ([`Verdict::Unknown`]); the call may then
    /// run twice: over-counted, never under.
    /// The breaker opens when Redis cannot be reached or does not answer in time.
    fn with_connection<T>(
        &self,
        call: impl Fn(&mut Connection, Instant) -> RedisResult<T>,
    ) -> Result<T, MeterError> {
        let deadline = Instant::now() + self.options.timeout;
        let mut lease = self.pool.lease(deadline).map_err(|refused| {
            let reason = match refused {
                Refused::Down(reason) => reason,
                Refused::Busy => format!(
                    "no connection free within {:?} ({} calls under way)",
                    self.options.timeout, self.options.connections
                ),
            };
            self.unavailable(reason)
        })?;
        let kept = lease.take();
        let reused = kept.is_some();
        let mut result = self.run(kept, deadline, &call);
        if let Err(e) = &result {
            if Verdict::of(e) == Verdict::Unknown || (reused && e.is_connection_dropped()) {
                result = self.run(None, deadline, &call);
            }
        }
        match result {
            Ok((conn, answer)) => {
                lease.answered(Some(conn));
                Ok(answer)
            }
            Err(e) => {
                // After an error the connection is dropped: after a timeout its late answer
                // would be taken for the next call's.
                let reason = self.reason(&e);
                match Verdict::of(&e) {
                    Verdict::Down => lease.failed(reason.clone()),
                    Verdict::Answered => lease.answered(None),
                    Verdict::Unknown => drop(lease),
                }
                Err(self.unavailable(reason))
            }
        }
    }

    /// `call` on `conn`, or on a new connection, by `deadline`; the connection comes back
    /// with the answer.
    fn run<T>(
        &self,
        conn: Option<Connection>,
        deadline: Instant,
        call: impl Fn(&mut Connection, Instant) -> RedisResult<T>,
    ) -> RedisResult<(Connection, T)> {
        let mut conn = match conn {
            Some(conn) => conn,
            None => {
                let share = left(deadline)? / self.setup_replies;
                self.client.get_connection_with_timeout(share)?
            }
        };
        let answer = call(&mut conn, deadline)?;
        Ok((conn, answer))
    }

    fn reason(&self, e: &RedisError) -> String {
        if e.is_timeout() {
            format!("no answer within {:?} ({e})", self.options.timeout)
        } else if e.is_connection_refusal() {
            format!("connection refused ({e})")
        } else {
            e.to_string()
        }
    }

    fn unavailable(&self, reason: String) -> MeterError {
        MeterError::Unavailable {
            meter: self.name.clone(),
            reason,
        }
    }
}

/// What a failed call says of Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// It cannot be reached, did not answer in time, or closed the connection: down.
    Down,
    /// The call failed without telling anything of Redis: an I/O call interrupted by a
    /// signal, or no time left to ask it.
    Unknown,
    /// It answered, with an error (a refused script, a key of another type).
    Answered,
}

impl Verdict {
    fn of(e: &RedisError) -> Self {
        if e.is_timeout() || e.is_connection_refusal() || e.is_connection_dropped() {
            Verdict::Down
        } else if e.is_io_error() {
            Verdict::Unknown
        } else {
            Verdict::Answered
        }
    }
}

/// The time left until `deadline`, or an error if there is none: not a timeout, Redis was
/// not asked ([`Verdict::Unknown`]).
fn left(deadline: Instant) -> RedisResult<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(RedisError::from(std::io::Error::other(
            "the deadline passed before Redis was asked",
        )));
    }
    Ok(left)
}

/// `cmd`'s answer on `conn`, sending and reading by `deadline`.
fn query<T: redis::FromRedisValue>(
    conn: &mut Connection,
    deadline: Instant,
    cmd: &Cmd,
) -> RedisResult<T> {
    let left = left(deadline)?;
    conn.set_write_timeout(Some(left))?;
    conn.set_read_timeout(Some(left))?;
    cmd.query(conn)
}

impl VolumeMeter for RedisMeter {
    fn observe(
        &self,
        principal: &PrincipalId,
        now: Timestamp,
        reads: u64,
    ) -> Result<u64, MeterError> {
        let window = self.options.window;
        let span = window.span(now);
        let buckets = i128::try_from(window.buckets()).unwrap_or(i128::MAX);
        // Keep one window of buckets before the first counted: calls that late still count.
        let keep = span.first - buckets;
        let expiry_ms = window
            .length()
            .saturating_mul(2)
            .saturating_add(window.granularity())
            .as_millis();
        let key = self.key(principal);
        let args = [
            "1".to_string(),
            key.clone(),
            span.current.to_string(),
            span.first.to_string(),
            keep.to_string(),
            i64::try_from(reads).unwrap_or(i64::MAX).to_string(),
            expiry_ms.to_string(),
        ];
        let (status, value): (i64, i64) = self.with_connection(|conn, deadline| {
            // By its hash; the whole script only if Redis does not have it (yet, or any more).
            let mut by_hash = redis::cmd("EVALSHA");
            by_hash.arg(self.script.get_hash()).arg(&args[..]);
            match query(conn, deadline, &by_hash) {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => query(
                    conn,
                    deadline,
                    redis::cmd("EVAL").arg(OBSERVE).arg(&args[..]),
                ),
                answer => answer,
            }
        })?;
        if status == 0 {
            // A sum of counts, negative only if something else wrote the key.
            u64::try_from(value).map_err(|_| MeterError::Unavailable {
                meter: self.name.clone(),
                reason: format!("key {key} holds a negative count ({value})"),
            })
        } else {
            Err(MeterError::OutOfOrder {
                now,
                kept_since: window.bucket_start(i128::from(value)),
            })
        }
    }
}
