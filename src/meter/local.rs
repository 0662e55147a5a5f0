//! [`LocalMeter`]: the in-process volume meter, with bounded memory.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use jiff::Timestamp;

use super::{MeterError, Span, VolumeMeter, Window};
use crate::records::PrincipalId;

/// The in-process [`VolumeMeter`]: per principal, a ring of per-bucket counts, for as many
/// principals as its capacity allows.
///
/// **Memory** is bounded: each tracked principal holds `buckets + 2` counts of 8 bytes (496
/// bytes for [`Window::HOUR`]) plus its id and the map's entry, about 700 bytes in all, and
/// at most [`capacity`](LocalMeter::capacity) principals are tracked ([`LocalMeter::new`]:
/// 50,000, so about 35 MB at most). When a new principal comes and the meter is full, the
/// principals with no reads in any window a call may still ask about are forgotten first
/// (forgetting them loses no count). If every tracked principal has read within the window,
/// the call fails with [`MeterError::Full`]: the meter never forgets a count to make room,
/// and the caller must refuse the read.
///
/// **Time** may go backwards a little, as it does between threads that read the clock just
/// before calling: a call up to one bucket older than the newest the meter has seen is
/// counted exactly like the others. A call older than that would need buckets the rings no
/// longer keep, and fails with [`MeterError::OutOfOrder`]. (A caller stamping a call far in
/// the future therefore makes later calls fail, closed, until its clock catches up.)
///
/// **Threads**: one mutex guards the meter; a call holds it for one hash lookup and one pass
/// over the principal's ring (about a hundred nanoseconds), so contention stays low.
///
/// # Example
/// ```
/// use membergate::meter::{LocalMeter, VolumeMeter, Window};
/// use membergate::{PrincipalId, PrincipalKind};
///
/// let meter = LocalMeter::with_window(Window::HOUR, 2)?;
/// let now: jiff::Timestamp = "2020-03-01T12:00:00Z".parse()?;
/// let a = PrincipalId::new(PrincipalKind::Volunteer, "v-1");
/// let b = PrincipalId::new(PrincipalKind::Volunteer, "v-2");
/// let c = PrincipalId::new(PrincipalKind::Volunteer, "v-3");
/// meter.observe(&a, now, 1)?;
/// meter.observe(&b, now, 1)?;
/// // Both have read in the last hour: a third principal cannot be tracked.
/// assert!(meter.observe(&c, now, 1).is_err());
/// // Two hours on, both are idle and are forgotten to make room.
/// assert_eq!(meter.observe(&c, now + jiff::SignedDuration::from_hours(2), 1)?, 0);
/// assert_eq!(meter.tracked(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct LocalMeter {
    window: Window,
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The latest time any call was made at.
    latest: Option<Timestamp>,
    rings: HashMap<PrincipalId, Ring>,
    /// The newest bucket at which the meter was full with no idle principal: until time
    /// moves to a later bucket, none becomes idle, so there is no need to look again.
    full_at: Option<i128>,
}

impl Default for LocalMeter {
    fn default() -> Self {
        LocalMeter::new()
    }
}

impl LocalMeter {
    /// The capacity of [`LocalMeter::new`], in principals.
    pub const DEFAULT_CAPACITY: usize = 50_000;

    /// A meter over [`Window::HOUR`] (one-minute buckets) for up to
    /// [`LocalMeter::DEFAULT_CAPACITY`] principals at once.
    ///
    /// # Example
    /// ```
    /// use membergate::meter::{LocalMeter, Window};
    /// let meter = LocalMeter::new();
    /// assert_eq!(meter.window(), Window::HOUR);
    /// assert_eq!(meter.capacity(), LocalMeter::DEFAULT_CAPACITY);
    /// ```
    pub fn new() -> Self {
        LocalMeter {
            window: Window::HOUR,
            capacity: Self::DEFAULT_CAPACITY,
            state: Mutex::default(),
        }
    }

    /// A meter over `window` for up to `capacity` principals at once.
    ///
    /// # Errors
    /// [`MeterError::Config`] if `capacity` is 0.
    ///
    /// # Example
    /// ```
    /// use std::time::Duration;
    /// use membergate::meter::{LocalMeter, Window};
    /// let window = Window::new(Duration::from_secs(3600), Duration::from_secs(10))?;
    /// let meter = LocalMeter::with_window(window, 1_000)?;
    /// assert_eq!(meter.capacity(), 1_000);
    /// # Ok::<(), membergate::meter::MeterError>(())
    /// ```
    pub fn with_window(window: Window, capacity: usize) -> Result<Self, MeterError> {
        if capacity == 0 {
            return Err(MeterError::Config(
                "a local meter must be able to track at least one principal".into(),
            ));
        }
        Ok(LocalMeter {
            window,
            capacity,
            state: Mutex::default(),
        })
    }

    /// The meter's window.
    pub fn window(&self) -> Window {
        self.window
    }

    /// The most principals tracked at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many principals are tracked now (idle ones included until room is needed).
    pub fn tracked(&self) -> usize {
        self.lock().rings.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // No code panics while holding the lock, and every update leaves the state whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts per ring: the window's buckets, one more for the partial oldest bucket and
    /// one more for calls up to one bucket late.
    fn ring_len(&self) -> usize {
        self.window.buckets().saturating_add(2)
    }
}

impl VolumeMeter for LocalMeter {
    fn observe(
        &self,
        principal: &PrincipalId,
        now: Timestamp,
        reads: u64,
    ) -> Result<u64, MeterError> {
        let span = self.window.span(now);
        let len = self.ring_len();
        let mut state = self.lock();
        let latest = state.latest.map_or(now, |t| t.max(now));
        let newest = self.window.span(latest).current;
        // Rings keep the buckets (newest - len, newest]; a window that starts before them
        // cannot be counted in full. Every later call passes only if its window starts
        // after `oldest`, whatever comes in between: `oldest` only grows.
        let oldest = newest - i128::try_from(len).unwrap_or(i128::MAX) + 1;
        if span.first < oldest {
            return Err(MeterError::OutOfOrder {
                now,
                kept_since: self.window.bucket_start(oldest),
            });
        }
        state.latest = Some(latest);
        if let Some(ring) = state.rings.get_mut(principal) {
            return Ok(ring.observe(span, reads));
        }
        if state.rings.len() >= self.capacity {
            state.make_room(self.capacity, newest, oldest)?;
        }
        let mut ring = Ring::new(len, span.current);
        let before = ring.observe(span, reads);
        state.rings.insert(principal.clone(), ring);
        Ok(before)
    }
}

impl State {
    /// Forgets the principals with no reads in a bucket from `oldest` on: no call the meter
    /// still accepts can count those buckets, so nothing is lost. Fails if none is idle.
    fn make_room(&mut self, capacity: usize, newest: i128, oldest: i128) -> Result<(), MeterError> {
        if self.full_at != Some(newest) {
            self.rings.retain(|_, ring| ring.active_since(oldest));
            if self.rings.len() < capacity {
                return Ok(());
            }
            self.full_at = Some(newest);
        }
        Err(MeterError::Full { capacity })
    }
}

/// One principal's counts: slot `i` holds bucket `newest - ((newest - i) mod len)`, so the
/// ring covers the buckets `(newest - len, newest]`.
#[derive(Debug)]
struct Ring {
    newest: i128,
    counts: Box<[u64]>,
}

impl Ring {
    fn new(len: usize, newest: i128) -> Self {
        Ring {
            newest,
            counts: vec![0; len].into_boxed_slice(),
        }
    }

    /// Moves the ring on to `span.current` if it is newer, then counts the buckets from
    /// `span.first` on and adds `reads` to `span.current`. The caller ensures `span.first`
    /// is within the ring.
    fn observe(&mut self, span: Span, reads: u64) -> u64 {
        let old = self.newest;
        let newest = old.max(span.current);
        let len = self.counts.len();
        let mut before = 0u64;
        for (i, count) in self.counts.iter_mut().enumerate() {
            let bucket = slot_bucket(newest, len, i);
            if bucket > old {
                // The slot now holds a bucket newer than any it held: start it empty.
                *count = 0;
            }
            if bucket >= span.first {
                before = before.saturating_add(*count);
            }
            if bucket == span.current {
                *count = count.saturating_add(reads);
            }
        }
        self.newest = newest;
        before
    }

    /// Whether any bucket from `oldest` on holds a read.
    fn active_since(&self, oldest: i128) -> bool {
        let len = self.counts.len();
        self.counts
            .iter()
            .enumerate()
            .any(|(i, &count)| count > 0 && slot_bucket(self.newest, len, i) >= oldest)
    }
}

/// The bucket slot `i` of a ring of `len` slots holds when its newest bucket is `newest`.
fn slot_bucket(newest: i128, len: usize, i: usize) -> i128 {
    // Both are at most Window::MAX_BUCKETS + 2.
    let len = i128::try_from(len).unwrap_or(i128::MAX);
    let i = i128::try_from(i).unwrap_or(0);
    newest - (newest - i).rem_euclid(len)
}
