//! [`RedisMeter`]: one volume count shared by every CRM instance, kept in Redis.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;

use super::{MeterError, VolumeMeter, Window};
use crate::records::PrincipalId;

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
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisMeterOptions {
    /// The window counted ([`Window::HOUR`] by default).
    pub window: Window,
    /// Prefix of the meter's keys (`membergate:meter:` by default); the key of a principal
    /// is the prefix then the principal's uid, e.g. `membergate:meter:Staff::"s-1"`.
    pub key_prefix: String,
    /// How long connecting, sending a call and waiting for its answer may each take before
    /// the meter is [`MeterError::Unavailable`] (200 ms by default).
    pub timeout: Duration,
}

impl Default for RedisMeterOptions {
    fn default() -> Self {
        RedisMeterOptions {
            window: Window::HOUR,
            key_prefix: "membergate:meter:".into(),
            timeout: Duration::from_millis(200),
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
/// **Failing closed.** The meter connects lazily and keeps one connection, shared by the
/// threads of the instance one call at a time. Connecting, writing and reading each time out
/// after [`RedisMeterOptions::timeout`]; any failure drops the connection (the next call
/// connects again) and returns [`MeterError::Unavailable`], so when Redis is down or slow the
/// CRM gets an error within about that time, and
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
    script: redis::Script,
    connection: Mutex<Option<redis::Connection>>,
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
    /// [`MeterError::Config`] if the URL is malformed or the timeout is zero.
    pub fn with_options(url: &str, options: RedisMeterOptions) -> Result<Self, MeterError> {
        if options.timeout.is_zero() {
            return Err(MeterError::Config(
                "the Redis timeout must be positive".into(),
            ));
        }
        let client = redis::Client::open(url)
            .map_err(|e| MeterError::Config(format!("bad Redis URL: {e}")))?;
        let name = format!("redis at {}", client.get_connection_info().addr());
        Ok(RedisMeter {
            client,
            name,
            options,
            script: redis::Script::new(OBSERVE),
            connection: Mutex::new(None),
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
    /// [`MeterError::Unavailable`] if it does not within the timeout.
    pub fn ping(&self) -> Result<(), MeterError> {
        self.with_connection(|conn| redis::cmd("PING").query::<String>(conn).map(drop))
    }

    /// Runs `call` on the connection, connecting first if there is none. On any error the
    /// connection is dropped: after a timeout its late answer would be taken for the next.
    fn with_connection<T>(
        &self,
        call: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, MeterError> {
        let mut slot = self.lock();
        let result = match slot.take() {
            Some(conn) => Ok(conn),
            None => self.connect(),
        }
        .and_then(|mut conn| {
            let answer = call(&mut conn)?;
            Ok((conn, answer))
        });
        match result {
            Ok((conn, answer)) => {
                *slot = Some(conn);
                Ok(answer)
            }
            Err(e) => Err(self.unavailable(&e)),
        }
    }

    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let timeout = self.options.timeout;
        let conn = self.client.get_connection_with_timeout(timeout)?;
        conn.set_read_timeout(Some(timeout))?;
        conn.set_write_timeout(Some(timeout))?;
        Ok(conn)
    }

    fn unavailable(&self, e: &redis::RedisError) -> MeterError {
        let reason = if e.is_timeout() {
            format!("no answer within {:?} ({e})", self.options.timeout)
        } else if e.is_connection_refusal() {
            format!("connection refused ({e})")
        } else {
            e.to_string()
        };
        MeterError::Unavailable {
            meter: self.name.clone(),
            reason,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<redis::Connection>> {
        // A poisoned slot holds at worst a connection mid-call: drop it.
        self.connection.lock().unwrap_or_else(|poisoned| {
            let mut slot = poisoned.into_inner();
            *slot = None;
            slot
        })
    }
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
        let (status, value): (i64, i64) = self.with_connection(|conn| {
            self.script
                .key(&key)
                .arg(span.current.to_string())
                .arg(span.first.to_string())
                .arg(keep.to_string())
                .arg(i64::try_from(reads).unwrap_or(i64::MAX))
                .arg(expiry_ms.to_string())
                .invoke(conn)
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
