//! The volume meter: how many member reads a principal made in the past hour (rule 9).
//!
//! The bundled policies refuse a read when `context.reads_this_hour >=
//! principal.hourly_read_limit` (`read-volume-limit` in `policies/guardrails.cedar`); the
//! meter is what gives the CRM that count. Before it decides a read, the CRM calls
//! [`VolumeMeter::observe`] with the principal, the time and how many member records it is
//! about to read, and passes the answer to [`Context::reads_this_hour`](crate::Context).
//!
//! Two meters implement the trait: [`LocalMeter`], in-process with bounded memory (the
//! default), and `RedisMeter` (feature `redis`), one count shared by every CRM instance
//! through an atomic script in Redis. Both share the window semantics of [`Window`].
//!
//! # Semantics
//!
//! `observe(principal, now, reads)` does one atomic step: it records `reads` member reads
//! by `principal` at instant `now`, and returns the reads recorded by *earlier* calls for
//! that principal at instants `t` with `now - window < t`: the window is half-open,
//! `(now - window, now]`, so a read at `t` still counts at `t + 59:59.999` and no longer
//! at `t + 1h` (reads stamped later than `now`, from a caller whose clock runs ahead, count
//! too). The reads of the call itself are not in its own answer, so the first read of the
//! hour sees 0 and the `limit + 1`-th sees `limit` and is refused.
//!
//! Every attempt counts, allowed or not: the meter records the reads before the decision
//! is made, so a scraper that keeps asking after its refusal keeps its count high and stays
//! refused until it stops for a whole window. It cannot probe for free.
//!
//! The window is kept in buckets of [`Window::granularity`] (one minute by default). Bucket
//! `k` holds the reads at instants in `((k-1)·g, k·g]`; a call counts every bucket that
//! holds an instant of its window. When `now` falls on a bucket edge the count is exact;
//! otherwise the oldest bucket counted may also hold reads up to one granularity step
//! older than the window: the meter may **over-count by the reads of less than one
//! bucket**, never under-count. Over-counting is the safe side: it refuses a little early.
//!
//! Time comes from the caller, never from the clock, as everywhere in this crate.
//!
//! # Failing closed
//!
//! An error means the meter cannot give a true count: Redis is down or slow
//! ([`MeterError::Unavailable`]), the local meter is full of active principals
//! ([`MeterError::Full`]), or time went backwards ([`MeterError::OutOfOrder`]). The read
//! must then be refused. [`VolumeMeter::observe_fail_closed`] does that for the CRM: it
//! gives a [`Metered`] whose count is [`REFUSE_ALL`] (`u64::MAX`, above every hourly limit,
//! so the bundled policies refuse every read with `read-volume-limit`) and the error, to be
//! logged and alerted on.
//!
//! # Example
//! ```
//! use membergate::meter::{LocalMeter, VolumeMeter};
//! use membergate::{PrincipalId, PrincipalKind};
//!
//! let meter = LocalMeter::new();
//! let staffer = PrincipalId::new(PrincipalKind::CampaignStaff, "cs-a-staff");
//! let t = |s: &str| s.parse::<jiff::Timestamp>();
//!
//! assert_eq!(meter.observe(&staffer, t("2020-03-01T12:00:00Z")?, 1)?, 0);
//! assert_eq!(meter.observe(&staffer, t("2020-03-01T12:30:00Z")?, 20)?, 1);
//! assert_eq!(meter.observe(&staffer, t("2020-03-01T12:59:59Z")?, 1)?, 21);
//! // One hour after the first read, it has left the window.
//! assert_eq!(meter.observe(&staffer, t("2020-03-01T13:00:00Z")?, 1)?, 21);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::records::PrincipalId;

mod local;
#[cfg(feature = "redis")]
mod redis;

pub use local::LocalMeter;
#[cfg(feature = "redis")]
pub use redis::{RedisMeter, RedisMeterOptions};

/// The count a fail-closed meter reports when it cannot count: above every hourly limit,
/// so the bundled policies refuse every read (`read-volume-limit`).
pub const REFUSE_ALL: u64 = u64::MAX;

/// Counts a principal's member reads over a sliding window. See the [module
/// documentation](self) for the exact semantics.
pub trait VolumeMeter: Send + Sync {
    /// Records `reads` member reads by `principal` at `now`, and returns how many reads
    /// earlier calls recorded for `principal` in the window `(now - window, now]` (or stamped
    /// later than `now`): the value for [`Context::reads_this_hour`](crate::Context). One
    /// atomic step: concurrent calls never lose or double a count.
    ///
    /// The count may exceed the exact one by the reads of less than one bucket, never fall
    /// short of it.
    ///
    /// # Errors
    /// Whenever the meter cannot give a count that is at least the true one; the caller must
    /// then refuse the read (see [`VolumeMeter::observe_fail_closed`]).
    fn observe(
        &self,
        principal: &PrincipalId,
        now: Timestamp,
        reads: u64,
    ) -> Result<u64, MeterError>;

    /// [`VolumeMeter::observe`], failing closed: on an error the count is [`REFUSE_ALL`], so
    /// the bundled policies refuse the read, and the error is kept for the caller to log.
    ///
    /// # Example
    /// ```
    /// use membergate::meter::{LocalMeter, VolumeMeter, REFUSE_ALL};
    /// use membergate::{Context, PrincipalId, PrincipalKind};
    ///
    /// let meter = LocalMeter::new();
    /// let staffer = PrincipalId::new(PrincipalKind::CampaignStaff, "cs-a-staff");
    /// let now = "2020-03-01T12:00:00Z".parse()?;
    /// let metered = meter.observe_fail_closed(&staffer, now, 1);
    /// if let Some(error) = &metered.error {
    ///     eprintln!("refusing reads: {error}"); // and alert: the meter is down
    /// }
    /// assert_eq!(metered.reads_this_hour, 0);
    /// let ctx = Context::at(now).reads_this_hour(metered.reads_this_hour);
    /// # assert_ne!(ctx.reads_this_hour, REFUSE_ALL);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn observe_fail_closed(&self, principal: &PrincipalId, now: Timestamp, reads: u64) -> Metered {
        Metered::fail_closed(self.observe(principal, now, reads))
    }
}

/// A meter shared by the CRM's threads or handlers (`Arc<dyn VolumeMeter>` included).
impl<M: VolumeMeter + ?Sized> VolumeMeter for Arc<M> {
    fn observe(
        &self,
        principal: &PrincipalId,
        now: Timestamp,
        reads: u64,
    ) -> Result<u64, MeterError> {
        (**self).observe(principal, now, reads)
    }
}

/// A count for [`Context::reads_this_hour`](crate::Context) that fails closed: the meter's
/// count, or [`REFUSE_ALL`] with the error when the meter could not count.
///
/// # Example
/// ```
/// use membergate::meter::{MeterError, Metered, REFUSE_ALL};
///
/// let down = Metered::fail_closed(Err(MeterError::Unavailable {
///     meter: "redis at 127.0.0.1:6379".into(),
///     reason: "connection refused".into(),
/// }));
/// assert_eq!(down.reads_this_hour, REFUSE_ALL);
/// assert!(down.error.is_some());
/// assert_eq!(Metered::fail_closed(Ok(7)).reads_this_hour, 7);
/// ```
#[derive(Debug)]
pub struct Metered {
    /// The reads in the window before this one, or [`REFUSE_ALL`] if the meter failed.
    pub reads_this_hour: u64,
    /// Why the meter failed, if it did: log it and alert, reads are being refused.
    pub error: Option<MeterError>,
}

impl Metered {
    /// The count of `result`, or [`REFUSE_ALL`] and the error.
    pub fn fail_closed(result: Result<u64, MeterError>) -> Self {
        match result {
            Ok(count) => Metered {
                reads_this_hour: count,
                error: None,
            },
            Err(error) => Metered {
                reads_this_hour: REFUSE_ALL,
                error: Some(error),
            },
        }
    }
}

/// Why a meter could not count. Every variant means: refuse the read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeterError {
    /// The shared meter could not be reached in time or failed (Redis down, slow, or
    /// refusing the script).
    #[error(
        "volume meter unavailable ({meter}): {reason}; reads must be refused until it is back"
    )]
    Unavailable {
        /// Which meter (e.g. `redis at 127.0.0.1:6379`, never with a password).
        meter: String,
        /// What went wrong.
        reason: String,
    },
    /// The local meter tracks as many principals as it may, and each has read within the
    /// window, so none can be forgotten without losing a count.
    #[error("volume meter full: {capacity} principals tracked, all with reads in the window; reads by new principals must be refused (raise the capacity)")]
    Full {
        /// The meter's capacity in principals.
        capacity: usize,
    },
    /// A call's time is so far before the newest the meter has seen that the buckets its
    /// window needs are no longer kept: the clock went backwards.
    #[error("volume meter: the window of an observation at {now} starts before {kept_since}, the oldest reads the meter still keeps (the clock went backwards)")]
    OutOfOrder {
        /// The time of the refused call.
        now: Timestamp,
        /// The meter keeps the reads after this instant.
        kept_since: Timestamp,
    },
    /// A window or meter setting that cannot work.
    #[error("volume meter configuration: {0}")]
    Config(String),
}

/// The sliding window of a meter: its length and the granularity of its buckets.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use membergate::meter::Window;
///
/// assert_eq!(Window::HOUR.buckets(), 60);
/// let fine = Window::new(Duration::from_secs(3600), Duration::from_secs(10))?;
/// assert_eq!(fine.buckets(), 360);
/// assert!(Window::new(Duration::from_secs(3600), Duration::from_secs(7)).is_err());
/// # Ok::<(), membergate::meter::MeterError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    length: Duration,
    granularity: Duration,
}

impl Default for Window {
    fn default() -> Self {
        Window::HOUR
    }
}

impl Window {
    /// One hour in one-minute buckets: the window of the policies' `reads_this_hour`.
    pub const HOUR: Window = Window {
        length: Duration::from_secs(3600),
        granularity: Duration::from_secs(60),
    };

    /// The most buckets a window may have (memory: 8 bytes a bucket per principal).
    pub const MAX_BUCKETS: u128 = 100_000;

    /// A window of `length` in buckets of `granularity`.
    ///
    /// # Errors
    /// [`MeterError::Config`] unless the granularity is at least one millisecond, the length
    /// a whole number of granularity steps (at least one), and at most
    /// [`Window::MAX_BUCKETS`] buckets.
    pub fn new(length: Duration, granularity: Duration) -> Result<Self, MeterError> {
        if granularity < Duration::from_millis(1) {
            return Err(MeterError::Config(format!(
                "the granularity must be at least 1 ms, not {granularity:?}"
            )));
        }
        let (len, step) = (length.as_nanos(), granularity.as_nanos());
        if len == 0 || len % step != 0 {
            return Err(MeterError::Config(format!(
                "the window ({length:?}) must be a positive whole number of granularity steps ({granularity:?})"
            )));
        }
        if len / step > Self::MAX_BUCKETS {
            return Err(MeterError::Config(format!(
                "the window ({length:?}) has {} buckets of {granularity:?}, more than {}",
                len / step,
                Self::MAX_BUCKETS
            )));
        }
        Ok(Window {
            length,
            granularity,
        })
    }

    /// How long the window is.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// How long one bucket is: the most by which a count can exceed the exact one.
    pub fn granularity(&self) -> Duration {
        self.granularity
    }

    /// How many buckets make the window.
    pub fn buckets(&self) -> usize {
        // `new` keeps it at most MAX_BUCKETS.
        usize::try_from(self.length.as_nanos() / self.granularity.as_nanos()).unwrap_or(usize::MAX)
    }

    fn step_nanos(&self) -> i128 {
        // At least 1 ms and at most `length`, which `new` bounded: fits an i128.
        i128::try_from(self.granularity.as_nanos()).unwrap_or(i128::MAX)
    }

    /// The instant bucket `key` starts after: it holds the instants in `(start, start + step]`.
    pub(crate) fn bucket_start(&self, key: i128) -> Timestamp {
        key.checked_sub(1)
            .and_then(|k| k.checked_mul(self.step_nanos()))
            .and_then(|ns| Timestamp::from_nanosecond(ns).ok())
            .unwrap_or(Timestamp::MIN)
    }

    /// The buckets a call at `now` touches.
    pub(crate) fn span(&self, now: Timestamp) -> Span {
        let step = self.step_nanos();
        let t = now.as_nanosecond();
        let floor = t.div_euclid(step);
        let current = if t.rem_euclid(step) == 0 {
            floor
        } else {
            floor + 1
        };
        // Bucket k holds instants in ((k-1)·step, k·step]. An instant t > now - length is in
        // a bucket k >= floor((now - length)/step) + 1 = floor(now/step) - n + 1.
        let n = i128::try_from(self.buckets()).unwrap_or(i128::MAX);
        Span {
            current,
            first: floor - n + 1,
        }
    }
}

/// The buckets of one call: the one its reads go to and the oldest it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    /// The bucket holding `now`.
    pub current: i128,
    /// The oldest bucket holding an instant of the window `(now - length, now]`.
    pub first: i128,
}
