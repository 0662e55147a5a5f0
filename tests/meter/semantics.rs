//! What every `VolumeMeter` must do, checked on any of them: `tests/meter.rs` runs these on
//! `LocalMeter`, `tests/redis_meter.rs` on `RedisMeter`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use membergate::meter::{Metered, VolumeMeter, Window, REFUSE_ALL};
use membergate::sample::{self, ids};
use membergate::{Action, Context, Decision, Directory, Engine, PrincipalId, PrincipalKind};
use membergate::{MemberRef, Membership, Request};

pub fn t(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

pub fn minutes(n: i64) -> SignedDuration {
    SignedDuration::from_mins(n)
}

pub fn staff(id: &str) -> PrincipalId {
    PrincipalId::new(PrincipalKind::Staff, id)
}

/// During the 2020 ballot, on a bucket edge.
pub const T0: &str = "2020-03-01T12:00:00Z";

/// The window the model checks use: 10 s in 1 s buckets, so that a short run of calls
/// crosses many bucket edges and window ends.
pub fn small_window() -> Window {
    Window::new(Duration::from_secs(10), Duration::from_secs(1)).expect("window")
}

/// Over `Window::HOUR`: a read at t counts until just before t + 1 h, not at t + 1 h.
pub fn window_boundaries(meter: &dyn VolumeMeter) {
    let p = staff("boundaries");
    let t0 = t(T0);
    let at = |d: SignedDuration, reads| meter.observe(&p, t0 + d, reads).expect("observe");
    assert_eq!(
        at(minutes(0), 1),
        0,
        "the first read sees nothing before it"
    );
    assert_eq!(
        at(minutes(0), 1),
        1,
        "a second read at the same instant sees the first"
    );
    assert_eq!(at(minutes(59), 1), 2, "reads at t count at t + 59 min");
    let just_before = minutes(60) - SignedDuration::from_nanos(1);
    assert_eq!(at(just_before, 0), 3, "and one nanosecond before t + 1 h");
    assert_eq!(
        at(minutes(60), 0),
        1,
        "at t + 1 h only the read at t + 59 min is left"
    );
    assert_eq!(at(minutes(119), 0), 0, "t + 59 min has left at t + 119 min");
}

/// Between bucket edges the oldest bucket may still count reads up to one bucket older
/// than the window: a count over, never under.
pub fn over_counts_within_one_bucket(meter: &dyn VolumeMeter) {
    let p = staff("between-edges");
    let t0 = t(T0) + SignedDuration::from_secs(30); // mid-bucket
    let at = |d: SignedDuration| meter.observe(&p, t0 + d, 0).expect("observe");
    meter.observe(&p, t0, 5).expect("observe");
    assert_eq!(at(minutes(60) - SignedDuration::from_millis(1)), 5);
    // Exactly one hour on: the exact count is 0, the bucket (12:00, 12:01] still counts.
    assert_eq!(at(minutes(60)), 5);
    assert_eq!(at(minutes(60) + SignedDuration::from_millis(29_999)), 5);
    // At the bucket's end plus one hour it has left.
    assert_eq!(at(minutes(60) + SignedDuration::from_secs(30)), 0);
}

/// The count excludes the call's own reads, adds every attempt whatever its outcome, and
/// is kept per principal (kind and id).
pub fn counts_every_attempt_per_principal(meter: &dyn VolumeMeter) {
    let now = t(T0);
    let a = staff("per-principal");
    let b = PrincipalId::new(PrincipalKind::Volunteer, "per-principal"); // same id, other kind
    assert_eq!(meter.observe(&a, now, 100).expect("observe"), 0);
    assert_eq!(
        meter.observe(&a, now, 0).expect("observe"),
        100,
        "reads=0 only asks"
    );
    assert_eq!(meter.observe(&a, now, 7).expect("observe"), 100);
    assert_eq!(
        meter.observe(&b, now, 1).expect("observe"),
        0,
        "another principal"
    );
    assert_eq!(meter.observe(&a, now, 0).expect("observe"), 107);
}

/// A call up to one bucket before the newest (threads reading the clock in turn) is counted
/// like the others.
pub fn accepts_calls_one_bucket_late(meter: &dyn VolumeMeter) {
    let p = staff("late");
    let t0 = t(T0);
    assert_eq!(meter.observe(&p, t0 + minutes(1), 1).expect("observe"), 0);
    assert_eq!(meter.observe(&p, t0, 1).expect("a call one bucket late"), 1);
    // The late read at t0 leaves the window at t0 + 1 h, the other at t0 + 61 min.
    assert_eq!(meter.observe(&p, t0 + minutes(60), 0).expect("observe"), 1);
    assert_eq!(meter.observe(&p, t0 + minutes(61), 0).expect("observe"), 0);
}

/// One call, as a model check sees it.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    /// Which of a few principals.
    pub principal: u8,
    /// How far the clock moves on before the call.
    pub advance: Duration,
    /// How much earlier than the clock the call is stamped (at most one bucket).
    pub late: Duration,
    pub reads: u64,
}

/// Runs `ops` on `meter` (over `window`) and checks every answer against an exact count:
/// at least the reads in `(now - length, now]` and at most those in
/// `(now - length - granularity, now]`; exactly the former when `now` is on a bucket edge.
pub fn check_against_exact_model(meter: &dyn VolumeMeter, window: Window, tag: &str, ops: &[Op]) {
    let length = SignedDuration::try_from(window.length()).expect("length");
    let step = SignedDuration::try_from(window.granularity()).expect("granularity");
    let mut clock = t(T0);
    let mut seen: Vec<(u8, Timestamp, u64)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        clock += SignedDuration::try_from(op.advance).expect("advance");
        let now = clock - SignedDuration::try_from(op.late).expect("late");
        let p = staff(&format!("{tag}-{}", op.principal));
        let got = meter
            .observe(&p, now, op.reads)
            .unwrap_or_else(|e| panic!("call {i} ({op:?}) at {now}: {e}"));
        let exact = |since: Timestamp| -> u64 {
            seen.iter()
                .filter(|&&(q, at, _)| q == op.principal && at > since)
                .map(|&(_, _, reads)| reads)
                .sum()
        };
        let (low, high) = (exact(now - length), exact(now - length - step));
        assert!(
            low <= got && got <= high,
            "call {i} ({op:?}) at {now}: counted {got}, exact {low}, exact plus one bucket {high}"
        );
        if now.as_nanosecond() % step.as_nanos() == 0 {
            assert_eq!(
                got, low,
                "call {i} at {now}, on a bucket edge: the exact count"
            );
        }
        seen.push((op.principal, now, op.reads));
    }
}

/// Threads calling at once through `meters` (several handles on one count, or one): for
/// each principal, the answers are exactly 0, 1, ..., n - 1, each once. No call was lost,
/// doubled or answered from a stale count.
pub fn exact_under_concurrency(meters: &[&dyn VolumeMeter], threads: usize, calls: u64) {
    let principals = [staff("concurrent-a"), staff("concurrent-b")];
    let now = t(T0);
    let answers: Vec<Vec<(usize, u64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let meter = meters[thread % meters.len()];
                let principals = &principals;
                s.spawn(move || {
                    (0..calls)
                        .map(|i| {
                            let which = (thread + i as usize) % principals.len();
                            let before =
                                meter.observe(&principals[which], now, 1).expect("observe");
                            (which, before)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for (which, principal) in principals.iter().enumerate() {
        let got: Vec<u64> = answers
            .iter()
            .flatten()
            .filter(|(w, _)| *w == which)
            .map(|&(_, before)| before)
            .collect();
        let distinct: BTreeSet<u64> = got.iter().copied().collect();
        let n = got.len() as u64;
        assert_eq!(
            distinct.len() as u64,
            n,
            "{principal}: an answer given twice"
        );
        assert_eq!(
            distinct,
            (0..n).collect(),
            "{principal}: answers are not 0..{n}"
        );
        assert_eq!(meters[0].observe(principal, now, 0).expect("observe"), n);
    }
}

// ------------------------------------------------------------------ with the engine

pub struct Party {
    pub engine: Engine,
    pub membership: Membership,
    pub directory: Directory,
    /// Members whose phone number campaign A's staffer may read during the ballot.
    pub readable: Vec<String>,
}

/// The bundled policies and sample membership, built once.
pub fn party() -> &'static Party {
    static PARTY: OnceLock<Party> = OnceLock::new();
    PARTY.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let engine = Engine::from_dir(dir).expect("bundled policies load");
        let membership = sample::bundled();
        let directory = Directory::from_membership(&engine, &membership).expect("directory");
        let staffer = cs_a_staff();
        let ctx = during_ballot(t(T0)).reads_this_hour(0);
        let readable = membership
            .members
            .keys()
            .filter(|m| {
                let req = Request {
                    principal: &staffer,
                    action: Action::Read,
                    member: member(&membership, m),
                    field: "phone",
                    context: &ctx,
                };
                engine
                    .authorize(&directory, &req)
                    .expect("decide")
                    .is_allowed()
            })
            .take(1_000)
            .cloned()
            .collect();
        Party {
            engine,
            membership,
            directory,
            readable,
        }
    })
}

/// The member `id` of the sample, as a request names it.
fn member<'a>(membership: &'a Membership, id: &str) -> MemberRef<'a> {
    membership
        .member(id)
        .unwrap_or_else(|| panic!("no member `{id}` in the sample"))
}

pub fn cs_a_staff() -> PrincipalId {
    PrincipalId::new(PrincipalKind::CampaignStaff, ids::CS_A_STAFF)
}

pub fn during_ballot(now: Timestamp) -> Context {
    Context::at(now).election(ids::LEADER_2020)
}

/// Campaign A's staffer asks for `member`'s phone number at `now`, as the CRM does: the
/// meter first (failing closed), then the engine.
pub fn read_phone(meter: &dyn VolumeMeter, member: &str, now: Timestamp) -> Decision<'static> {
    let party = party();
    let staffer = cs_a_staff();
    let metered = meter.observe_fail_closed(&staffer, now, 1);
    let ctx = during_ballot(now).reads_this_hour(metered.reads_this_hour);
    let req = Request {
        principal: &staffer,
        action: Action::Read,
        member: self::member(&party.membership, member),
        field: "phone",
        context: &ctx,
    };
    party
        .engine
        .authorize(&party.directory, &req)
        .expect("decide")
}

/// Incident 1 with the real meter: campaign A's staffer (500 reads an hour) reads members'
/// phone numbers one by one, one every 2 s for two hours. The first 500 are allowed, every
/// later one is refused by `read-volume-limit`, since the refused attempts keep its count
/// over the limit; after an hour without reading it may read again.
pub fn scraping_is_stopped_at_the_hourly_limit(meter: &dyn VolumeMeter) {
    let party = party();
    assert_eq!(
        party.membership.campaign_staff[ids::CS_A_STAFF].hourly_read_limit,
        500
    );
    assert!(
        party.readable.len() >= 600,
        "too few readable members in the sample"
    );
    let t0 = t(T0);
    let mut allowed = 0;
    let mut last = t0;
    for i in 0..3_600_i64 {
        let member = &party.readable[(i as usize) % party.readable.len()];
        last = t0 + SignedDuration::from_secs(2 * i);
        let decision = read_phone(meter, member, last);
        if i < 500 {
            assert!(
                decision.is_allowed(),
                "read {i} at {last} refused: {decision:?}"
            );
            assert_eq!(decision.policies(), ["campaign-read-contact"]);
            allowed += 1;
        } else {
            assert!(!decision.is_allowed(), "read {i} at {last} allowed");
            assert_eq!(decision.policies(), ["read-volume-limit"], "read {i}");
        }
    }
    assert_eq!(allowed, 500);
    // The staffer pauses: a minute later its last hour still holds 1,770 attempts; an hour
    // after its last attempt only the refused one of a minute later is left.
    let member = &party.readable[0];
    let decision = read_phone(meter, member, last + minutes(1));
    assert_eq!(decision.policies(), ["read-volume-limit"], "a minute later");
    let decision = read_phone(meter, member, last + minutes(60));
    assert!(
        decision.is_allowed(),
        "an hour after the last attempts: {decision:?}"
    );
}

/// A failed meter refuses every read, even one the principal could make just below its
/// limit, and the decision names `read-volume-limit`.
pub fn a_failed_meter_refuses(metered: Metered) {
    assert_eq!(metered.reads_this_hour, REFUSE_ALL);
    assert!(metered.error.is_some());
    let party = party();
    let staffer = PrincipalId::new(PrincipalKind::Staff, ids::S_MEMBERSHIP);
    let limit = u64::from(party.membership.staff[ids::S_MEMBERSHIP].hourly_read_limit);
    let decide = |reads: u64| {
        let ctx = Context::at(t(T0)).reads_this_hour(reads);
        let req = Request {
            principal: &staffer,
            action: Action::Read,
            member: member(&party.membership, ids::MEMBER_ELIGIBLE),
            field: "name",
            context: &ctx,
        };
        let reference = party
            .engine
            .reference()
            .authorize(&party.directory, &req)
            .expect("decide");
        let decided = party
            .engine
            .authorize(&party.directory, &req)
            .expect("decide");
        assert_eq!(reference, decided);
        decided
    };
    assert!(decide(limit - 1).is_allowed());
    let refused = decide(metered.reads_this_hour);
    assert!(!refused.is_allowed());
    assert_eq!(refused.policies(), ["read-volume-limit"]);
}
