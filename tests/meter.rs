//! The volume meter (rule 9): `LocalMeter`'s window, memory bound, threads and count
//! against an exact model, and the meter wired to the engine on the bundled policies.

mod semantics;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::SignedDuration;
use membergate::meter::{LocalMeter, MeterError, Metered, VolumeMeter, Window};
use proptest::prelude::*;

use semantics::{minutes, staff, t, Op, T0};

fn hour_meter() -> LocalMeter {
    LocalMeter::new()
}

// ------------------------------------------------------------------ window

#[test]
fn reads_count_until_one_hour_later() {
    semantics::window_boundaries(&hour_meter());
}

#[test]
fn between_bucket_edges_it_over_counts_by_less_than_a_bucket() {
    semantics::over_counts_within_one_bucket(&hour_meter());
}

#[test]
fn every_attempt_counts_per_principal() {
    semantics::counts_every_attempt_per_principal(&hour_meter());
}

#[test]
fn a_call_one_bucket_late_is_counted() {
    semantics::accepts_calls_one_bucket_late(&hour_meter());
}

#[test]
fn a_call_more_than_one_bucket_late_fails_and_changes_nothing() {
    let meter = hour_meter();
    let p = staff("late");
    let t0 = t(T0);
    assert_eq!(meter.observe(&p, t0 + minutes(3), 4).unwrap(), 0);
    let err = meter.observe(&p, t0, 1).unwrap_err();
    let MeterError::OutOfOrder { now, kept_since } = err.clone() else {
        panic!("expected OutOfOrder, got {err:?}");
    };
    assert_eq!(now, t0);
    assert!(kept_since > now - minutes(60), "{kept_since}");
    assert!(err.to_string().contains("clock went backwards"), "{err}");
    // Another principal in the same meter is refused too: the meter's time went on.
    assert!(meter.observe(&staff("other"), t0, 1).is_err());
    assert_eq!(
        meter.observe(&p, t0 + minutes(3), 0).unwrap(),
        4,
        "nothing recorded"
    );
    assert_eq!(meter.tracked(), 1);
}

#[test]
fn a_finer_window() {
    let window = Window::new(Duration::from_secs(600), Duration::from_secs(1)).unwrap();
    let meter = LocalMeter::with_window(window, 10).unwrap();
    let p = staff("fine");
    let t0 = t(T0);
    meter.observe(&p, t0, 3).unwrap();
    assert_eq!(meter.observe(&p, t0 + minutes(9), 0).unwrap(), 3);
    let edge = t0 + minutes(10);
    assert_eq!(
        meter
            .observe(&p, edge - SignedDuration::from_millis(1), 0)
            .unwrap(),
        3
    );
    assert_eq!(meter.observe(&p, edge, 0).unwrap(), 0);
}

#[test]
fn bad_windows_and_capacities_are_refused() {
    let secs = Duration::from_secs;
    for (length, step) in [
        (secs(3600), Duration::from_micros(999)),
        (secs(3600), secs(7)),
        (Duration::ZERO, secs(1)),
        (secs(3600), secs(7200)),
        (secs(200_000), Duration::from_millis(1)),
    ] {
        let err = Window::new(length, step).unwrap_err();
        assert!(
            matches!(err, MeterError::Config(_)),
            "{length:?}/{step:?}: {err}"
        );
    }
    assert!(matches!(
        LocalMeter::with_window(Window::HOUR, 0),
        Err(MeterError::Config(_))
    ));
    assert_eq!(Window::default(), Window::HOUR);
    assert_eq!(Window::HOUR.granularity(), secs(60));
}

// ------------------------------------------------------------------ memory bound

#[test]
fn a_full_meter_refuses_new_principals_and_keeps_every_count() {
    let meter = LocalMeter::with_window(Window::HOUR, 3).unwrap();
    let t0 = t(T0);
    for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
        meter
            .observe(&staff(id), t0 + minutes(i as i64), 10)
            .unwrap();
    }
    let err = meter.observe(&staff("d"), t0 + minutes(5), 1).unwrap_err();
    assert_eq!(err, MeterError::Full { capacity: 3 });
    assert!(err.to_string().contains("must be refused"), "{err}");
    let refused = Metered::fail_closed(Err(err));
    semantics::a_failed_meter_refuses(refused);
    // Asked again in the same bucket: the same answer (without looking again).
    assert!(meter.observe(&staff("d"), t0 + minutes(5), 1).is_err());
    for id in ["a", "b", "c"] {
        assert_eq!(meter.observe(&staff(id), t0 + minutes(5), 0).unwrap(), 10);
    }
    assert_eq!(meter.tracked(), 3);
}

#[test]
fn idle_principals_make_room_and_active_ones_stay() {
    let meter = LocalMeter::with_window(Window::HOUR, 3).unwrap();
    let t0 = t(T0);
    meter.observe(&staff("a"), t0, 1).unwrap();
    meter.observe(&staff("b"), t0, 1).unwrap();
    meter.observe(&staff("c"), t0 + minutes(30), 2).unwrap();
    // At t0 + 61 min a call one bucket late could still count the reads at t0: a and b
    // are kept, and the meter is full.
    let err = meter.observe(&staff("d"), t0 + minutes(61), 1).unwrap_err();
    assert!(matches!(err, MeterError::Full { .. }), "{err}");
    // From t0 + 62 min no call the meter accepts can: both go, c stays with its count.
    assert_eq!(meter.observe(&staff("d"), t0 + minutes(62), 1).unwrap(), 0);
    assert_eq!(meter.tracked(), 2);
    assert_eq!(meter.observe(&staff("c"), t0 + minutes(62), 0).unwrap(), 2);
    assert_eq!(meter.observe(&staff("a"), t0 + minutes(62), 0).unwrap(), 0);
    assert_eq!(meter.tracked(), 3);
}

#[test]
fn tracked_principals_never_exceed_the_capacity() {
    let meter = LocalMeter::with_window(Window::HOUR, 50).unwrap();
    let t0 = t(T0);
    let mut full = 0;
    for i in 0..2_000_i64 {
        // A new principal every 10 s: 360 an hour against room for 50.
        let now = t0 + SignedDuration::from_secs(10 * i);
        match meter.observe(&staff(&format!("p{i}")), now, 1) {
            Ok(before) => assert_eq!(before, 0),
            Err(MeterError::Full { capacity: 50 }) => full += 1,
            Err(e) => panic!("{e}"),
        }
        assert!(meter.tracked() <= 50);
    }
    // Only principals idle for an hour make room: most newcomers were refused.
    assert!(full > 1_500, "{full} refused");
    assert!(full < 2_000, "room was never made");
}

// ------------------------------------------------------------------ threads

#[test]
fn concurrent_calls_give_exact_totals() {
    let meter = LocalMeter::new();
    semantics::exact_under_concurrency(&[&meter], 8, 5_000);
}

#[test]
fn shared_through_an_arc() {
    let meter = Arc::new(LocalMeter::new());
    let shared: Arc<dyn VolumeMeter> = meter.clone();
    let boxed: Box<dyn VolumeMeter> = Box::new(Arc::clone(&shared));
    let p = staff("shared");
    meter.observe(&p, t(T0), 2).unwrap();
    assert_eq!(boxed.observe(&p, t(T0), 0).unwrap(), 2);
}

#[test]
fn a_call_is_quick() {
    let meter = LocalMeter::new();
    let start = Instant::now();
    for i in 0..100_000_i64 {
        let p = staff(&format!("p{}", i % 1_000));
        meter
            .observe(&p, t(T0) + SignedDuration::from_millis(i), 1)
            .unwrap();
    }
    // About 100 ns a call in release builds; this only catches a pathology.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

// ------------------------------------------------------------------ exact model

fn op() -> impl Strategy<Value = Op> {
    // Steps of 250 ms over 1 s buckets: many calls on bucket edges and window ends.
    (0u8..3, 0u64..12, 0u64..=4, 0u64..5).prop_map(|(principal, advance, late, reads)| Op {
        principal,
        advance: Duration::from_millis(250 * advance),
        late: Duration::from_millis(250 * late),
        reads,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("MEMBERGATE_PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(500)
    ))]

    /// Never under the exact count, never over it by more than one bucket's reads.
    #[test]
    fn never_under_counts(ops in prop::collection::vec(op(), 1..200)) {
        let window = semantics::small_window();
        let meter = LocalMeter::with_window(window, 100).unwrap();
        semantics::check_against_exact_model(&meter, window, "model", &ops);
    }
}

// ------------------------------------------------------------------ with the engine

#[test]
fn the_scraper_is_stopped_at_its_hourly_limit() {
    semantics::scraping_is_stopped_at_the_hourly_limit(&LocalMeter::new());
}

#[test]
fn two_staffers_are_counted_apart() {
    let meter = LocalMeter::new();
    let party = semantics::party();
    let now = t(T0);
    for member in party.readable.iter().take(500) {
        assert!(semantics::read_phone(&meter, member, now).is_allowed());
    }
    assert!(!semantics::read_phone(&meter, &party.readable[0], now).is_allowed());
    // Another principal has its own count.
    let other = membergate::PrincipalId::new(
        membergate::PrincipalKind::CampaignStaff,
        membergate::sample::ids::CS_A_CANDIDATE,
    );
    assert_eq!(meter.observe(&other, now, 1).unwrap(), 0);
}

/// A meter that cannot count, as Redis down would be.
struct Down;

impl VolumeMeter for Down {
    fn observe(
        &self,
        _: &membergate::PrincipalId,
        _: jiff::Timestamp,
        _: u64,
    ) -> Result<u64, MeterError> {
        Err(MeterError::Unavailable {
            meter: "test".into(),
            reason: "down".into(),
        })
    }
}

#[test]
fn a_meter_that_is_down_refuses_every_read() {
    let metered = Down.observe_fail_closed(&staff("s"), t(T0), 1);
    assert!(metered
        .error
        .as_ref()
        .unwrap()
        .to_string()
        .contains("unavailable (test): down"));
    semantics::a_failed_meter_refuses(metered);
    let party = semantics::party();
    let decision = semantics::read_phone(&Down, &party.readable[0], t(T0));
    assert_eq!(decision.policies(), ["read-volume-limit"]);
}
