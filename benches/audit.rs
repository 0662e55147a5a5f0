//! The per-record cost of the decision log.
//!
//! Group `decision_log`, each one `JsonlSink::record`: `jsonl_dev_null` (to `/dev/null`:
//! encoding, hashing, the lock and the `write` call, no file), `jsonl_flush`
//! (`Durability::Flush`) and `jsonl_fsync` (`Durability::Fsync`: plus an `fsync` each),
//! both on a file under `target/` (the project's disk, not a RAM-backed `/tmp`).
//!
//! Group `decision_with_log`, what the log adds to one member's decision on the compiled
//! path (`Engine::field_decisions` on a `Directory` and a `MemberRequest`, as the example
//! CRM makes it): `decide` (the decision alone), `decide_record` (plus building its
//! `DecisionRecord`) and `decide_record_flush` (plus appending it with
//! `Durability::Flush`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use membergate::audit::{DecisionRecord, DecisionSink, Durability, JsonlSink};
use membergate::sample::{self, ids};
use membergate::{Action, Context, Directory, Engine, MemberRequest, PrincipalId, PrincipalKind};

/// A realistic record: a campaign staffer's read of a member's fields during the ballot.
fn record() -> DecisionRecord {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
    let engine = Engine::from_dir(dir).unwrap_or_else(|e| panic!("{}", e.render()));
    let party = sample::bundled();
    let directory = Directory::from_membership(&engine, &party).unwrap_or_else(|e| panic!("{e}"));
    let staffer = PrincipalId::new(PrincipalKind::CampaignStaff, ids::CS_A_STAFF);
    let at = "2020-03-01T12:00:00Z"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let ctx = Context::at(at).election(ids::LEADER_2020);
    let req = MemberRequest {
        principal: &staffer,
        action: Action::Read,
        member: party
            .member(ids::MEMBER_ELIGIBLE)
            .unwrap_or_else(|| panic!("no member {}", ids::MEMBER_ELIGIBLE)),
        context: &ctx,
    };
    let fields = engine
        .permitted_fields(&directory, &req)
        .unwrap_or_else(|e| panic!("{e}"));
    DecisionRecord::for_fields("req-0001", &engine, &req, fields)
        .with_policies(["campaign-read-contact"])
}

fn decision_log(c: &mut Criterion) {
    let record = record();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("decision_log");
    let file = |name: &str| dir.path().join(format!("{name}.jsonl"));
    for (name, path, durability) in [
        ("jsonl_dev_null", "/dev/null".into(), Durability::Flush),
        ("jsonl_flush", file("flush"), Durability::Flush),
        ("jsonl_fsync", file("fsync"), Durability::Fsync),
    ] {
        let sink = JsonlSink::open(&path, durability).unwrap_or_else(|e| panic!("{e}"));
        group.bench_function(name, |b| {
            b.iter(|| {
                sink.record(black_box(&record))
                    .unwrap_or_else(|e| panic!("{e}"))
            })
        });
    }
    group.finish();
}

fn decision_with_log(c: &mut Criterion) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
    let engine = Engine::from_dir(dir).unwrap_or_else(|e| panic!("{}", e.render()));
    let party = sample::bundled();
    let directory = Directory::from_membership(&engine, &party).unwrap_or_else(|e| panic!("{e}"));
    let staffer = PrincipalId::new(PrincipalKind::CampaignStaff, ids::CS_A_STAFF);
    let at = "2020-03-01T12:00:00Z"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let ctx = Context::at(at).election(ids::LEADER_2020);
    // The member's attributes, as the CRM reads them with its row.
    let req = MemberRequest {
        principal: &staffer,
        action: Action::Read,
        member: party
            .member(ids::MEMBER_ELIGIBLE)
            .unwrap_or_else(|| panic!("no member {}", ids::MEMBER_ELIGIBLE)),
        context: &ctx,
    };
    let decide = || {
        engine
            .field_decisions(&directory, &req)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let record = || {
        let d = decide();
        DecisionRecord::for_field_decisions("req-0001", &engine, &req, &d)
    };
    let logs = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap_or_else(|e| panic!("{e}"));
    let sink = JsonlSink::open(logs.path().join("decisions.jsonl"), Durability::Flush)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("decision_with_log");
    group.bench_function("decide", |b| b.iter(|| black_box(decide())));
    group.bench_function("decide_record", |b| b.iter(|| black_box(record())));
    group.bench_function("decide_record_flush", |b| {
        b.iter(|| sink.record(&record()).unwrap_or_else(|e| panic!("{e}")))
    });
    group.finish();
}

criterion_group!(benches, decision_log, decision_with_log);
criterion_main!(benches);
