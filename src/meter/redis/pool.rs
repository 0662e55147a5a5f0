//! The connections of a [`RedisMeter`](super::RedisMeter) and its circuit breaker: a call
//! waits for a connection no longer than its deadline, and while the server is known down
//! calls are refused at once, without touching the network.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// At most `size` connections, idle or lent, and what is known of the server, under one
/// lock that is never held while talking to the server.
pub(super) struct Pool<C> {
    state: Mutex<State<C>>,
    /// Signalled to one waiter when a lease ends, to all when the breaker opens.
    changed: Condvar,
    size: usize,
    retry_after: Duration,
}

struct State<C> {
    idle: Vec<C>,
    /// Leases not ended yet, each holding a connection or about to open one.
    lent: usize,
    breaker: Breaker,
}

/// Why a call gets no connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refused {
    /// The server is known down: the call is refused without trying (the reason says why).
    Down(String),
    /// Every connection was busy until the call's deadline.
    Busy,
}

impl<C> Pool<C> {
    /// A pool of at most `size` connections (at least one), refusing calls for
    /// `retry_after` after the server failed.
    pub(super) fn new(size: usize, retry_after: Duration) -> Self {
        Pool {
            state: Mutex::new(State {
                idle: Vec::new(),
                lent: 0,
                breaker: Breaker::Closed,
            }),
            changed: Condvar::new(),
            size: size.max(1),
            retry_after,
        }
    }

    /// A lease on a connection (an idle one, or none yet: the caller opens it), waiting
    /// until `deadline` at the latest for one to be free. Refused at once, or as soon as the
    /// breaker opens while waiting, when the server is known down.
    pub(super) fn lease(&self, deadline: Instant) -> Result<Lease<'_, C>, Refused> {
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            if let Some(reason) = state.breaker.refusal(now, self.retry_after) {
                return Err(Refused::Down(reason));
            }
            if !state.idle.is_empty() || state.lent < self.size {
                let conn = state.idle.pop();
                state.lent += 1;
                state.breaker.admit(now, self.retry_after);
                return Ok(Lease {
                    pool: self,
                    conn,
                    outcome: Outcome::Unknown,
                });
            }
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                return Err(Refused::Busy);
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn end(&self, conn: Option<C>, outcome: Outcome) {
        let mut state = self.lock();
        state.lent = state.lent.saturating_sub(1);
        let cause = match outcome {
            Outcome::Answered => {
                state.breaker = Breaker::Closed;
                state.idle.extend(conn);
                drop(state);
                self.changed.notify_one();
                return;
            }
            Outcome::Unknown => {
                state.breaker.pass_the_probe();
                drop(state);
                self.changed.notify_one();
                return;
            }
            Outcome::Failed(cause) => cause,
        };
        state.breaker = Breaker::Open {
            since: Instant::now(),
            cause,
        };
        // The server failed: the idle connections may be as dead (a restarted server closed
        // them), and the call that tries it again must find out on a new one.
        let stale = std::mem::take(&mut state.idle);
        drop(state);
        self.changed.notify_all();
        drop((conn, stale));
    }

    fn lock(&self) -> MutexGuard<'_, State<C>> {
        // Nothing panics while holding the lock; if something did, the state is still whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection lent to one call, ended by [`Lease::answered`] or [`Lease::failed`].
/// Dropped without either (the call lost its connection, or panicked), it tells nothing of
/// the server: the slot is free again, and if the call was trying the server again, the next
/// one does.
pub(super) struct Lease<'a, C> {
    pool: &'a Pool<C>,
    conn: Option<C>,
    outcome: Outcome,
}

enum Outcome {
    Unknown,
    Answered,
    Failed(String),
}

impl<C> Lease<'_, C> {
    /// The idle connection lent, if there was one (else the caller opens one).
    pub(super) fn take(&mut self) -> Option<C> {
        self.conn.take()
    }

    /// The server answered: the breaker closes, and `conn`, if still usable, is kept.
    pub(super) fn answered(mut self, conn: Option<C>) {
        self.conn = conn;
        self.outcome = Outcome::Answered;
    }

    /// The server could not be reached or did not answer in time (`cause`): the breaker
    /// opens and calls are refused for the pool's `retry_after`.
    pub(super) fn failed(mut self, cause: String) {
        self.conn = None;
        self.outcome = Outcome::Failed(cause);
    }
}

impl<C> Drop for Lease<'_, C> {
    fn drop(&mut self) {
        let outcome = std::mem::replace(&mut self.outcome, Outcome::Unknown);
        self.pool.end(self.conn.take(), outcome);
    }
}

/// What the pool knows of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Breaker {
    /// It answers: calls go through.
    Closed,
    /// It failed at `since`: calls are refused until `since + retry_after`, when the
    /// first one to get a connection tries it again.
    Open { since: Instant, cause: String },
    /// A call is trying it again: the others are still refused until it ends.
    Probing { since: Instant, cause: String },
}

impl Breaker {
    /// Why a call at `now` is refused without trying, if it is.
    fn refusal(&self, now: Instant, retry_after: Duration) -> Option<String> {
        let (since, cause, then) = match self {
            Breaker::Closed => return None,
            Breaker::Open { since, .. } if now.saturating_duration_since(*since) >= retry_after => {
                return None
            }
            Breaker::Open { since, cause } => (
                since,
                cause,
                format!("it is tried again {retry_after:?} after a failure"),
            ),
            Breaker::Probing { since, cause } => {
                (since, cause, "one call is trying it again".to_string())
            }
        };
        let ago = now.saturating_duration_since(*since).as_millis();
        Some(format!(
            "not tried: it failed {ago} ms ago ({cause}) and {then}"
        ))
    }

    /// A call at `now` that [`Breaker::refusal`] let through goes on: after the cool-down,
    /// it is the one trying the server again.
    fn admit(&mut self, now: Instant, retry_after: Duration) {
        if let Breaker::Open { since, cause } = self {
            if now.saturating_duration_since(*since) >= retry_after {
                *self = Breaker::Probing {
                    since: *since,
                    cause: std::mem::take(cause),
                };
            }
        }
    }

    /// The call trying the server again ended without a verdict: the next one tries.
    fn pass_the_probe(&mut self) {
        if let Breaker::Probing { since, cause } = self {
            *self = Breaker::Open {
                since: *since,
                cause: std::mem::take(cause),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_breaker_refuses_during_the_cool_down_then_lets_one_call_try() {
        let t0 = Instant::now();
        let mut breaker = Breaker::Open {
            since: t0,
            cause: "connection refused".into(),
        };
        let at = |ms| t0 + Duration::from_millis(ms);
        let refused = breaker.refusal(at(999), SECOND).expect("refused");
        assert!(
            refused.contains("999 ms ago (connection refused)"),
            "{refused}"
        );
        assert!(
            refused.contains("tried again 1s after a failure"),
            "{refused}"
        );
        // Admitting a refused call changes nothing.
        breaker.admit(at(999), SECOND);
        assert!(matches!(breaker, Breaker::Open { .. }));
        // The cool-down is over: one call tries, the others are still refused.
        assert_eq!(breaker.refusal(at(1000), SECOND), None);
        breaker.admit(at(1000), SECOND);
        assert!(matches!(breaker, Breaker::Probing { .. }));
        let refused = breaker.refusal(at(5000), SECOND).expect("refused");
        assert!(refused.contains("one call is trying it again"), "{refused}");
        assert_eq!(Breaker::Closed.refusal(at(0), SECOND), None);
    }

    #[test]
    fn a_failure_refuses_every_call_until_the_cool_down_ends() {
        let pool: Pool<u32> = Pool::new(2, Duration::from_millis(500));
        let mut lease = pool.lease(Instant::now() + SECOND).expect("a lease");
        assert_eq!(lease.take(), None, "nothing idle yet");
        lease.answered(Some(7));
        let lease = pool.lease(Instant::now() + SECOND).expect("a lease");
        lease.failed("no answer".into());
        // Refused at once, however long the deadline.
        let start = Instant::now();
        for _ in 0..100 {
            match pool.lease(start + 10 * SECOND) {
                Err(Refused::Down(reason)) => assert!(reason.contains("(no answer)"), "{reason}"),
                other => panic!("{:?}", other.map(drop)),
            }
        }
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
        // After the cool-down one call tries, on a new connection (the idle one was dropped);
        // the others are still refused until it answers.
        thread::sleep(Duration::from_millis(500));
        let mut probe = pool.lease(Instant::now() + SECOND).expect("the probe");
        assert_eq!(probe.take(), None, "the idle connection was dropped");
        assert!(matches!(
            pool.lease(Instant::now() + SECOND),
            Err(Refused::Down(_))
        ));
        probe.answered(Some(8));
        let mut lease = pool.lease(Instant::now() + SECOND).expect("closed again");
        assert_eq!(lease.take(), Some(8));
    }

    #[test]
    fn a_call_waits_for_a_connection_no_longer_than_its_deadline() {
        let pool: Pool<u32> = Pool::new(1, SECOND);
        let held = pool.lease(Instant::now() + SECOND).expect("a lease");
        let start = Instant::now();
        let waited = pool.lease(start + Duration::from_millis(100));
        let took = start.elapsed();
        assert!(matches!(waited, Err(Refused::Busy)));
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < SECOND, "{took:?}");
        drop(held);
    }

    #[test]
    fn waiting_calls_are_refused_as_soon_as_the_breaker_opens() {
        let pool: Pool<u32> = Pool::new(1, 10 * SECOND);
        let held = pool.lease(Instant::now() + SECOND).expect("a lease");
        thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                let start = Instant::now();
                let result = pool.lease(start + 10 * SECOND).map(drop);
                (result, start.elapsed())
            });
            thread::sleep(Duration::from_millis(50));
            held.failed("timed out".into());
            let (result, took) = waiter.join().expect("the waiter");
            assert!(matches!(result, Err(Refused::Down(_))), "{result:?}");
            assert!(took < 5 * SECOND, "{took:?}");
        });
    }

    #[test]
    fn a_lease_dropped_without_a_verdict_frees_its_slot_and_passes_the_probe() {
        let pool: Pool<u32> = Pool::new(1, Duration::ZERO);
        drop(pool.lease(Instant::now() + SECOND).expect("a lease"));
        pool.lease(Instant::now() + SECOND)
            .expect("the slot is free")
            .failed("refused".into());
        // With no cool-down, the next call tries again at once, the others wait their turn.
        let probe = pool.lease(Instant::now() + SECOND).expect("the probe");
        assert!(matches!(
            pool.lease(Instant::now() + SECOND),
            Err(Refused::Down(_))
        ));
        drop(probe);
        let probe = pool.lease(Instant::now() + SECOND).expect("the next probe");
        assert!(matches!(
            pool.lease(Instant::now() + SECOND),
            Err(Refused::Down(_))
        ));
        probe.answered(None);
        assert!(pool.lease(Instant::now() + SECOND).is_ok());
    }
}
