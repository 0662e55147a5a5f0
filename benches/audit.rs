//! The per-record cost of the decision log.
//!
//! Group `decision_log`, each one `JsonlSink::record`: `jsonl_dev_null` (to `/dev/null`:
//! encoding, hashing, the lock and the `write` call, no file), `jsonl_flush`
//! (`Durability::Flush`) and `jsonl_fsync` (`Durability::Fsync`: plus an `fsync` each),
//! both on a file under `target/` (the project's disk, not a RAM-backed `/tmp`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use membergate::audit::{DecisionRecord, DecisionSink, Durability, JsonlSink};
use membergate::sample::{self, ids};
use membergate::{Action, Context, Engine, PrincipalId, PrincipalKind};

/// A realistic record: a campaign staffer's read of a member's fields during the ballot.
fn record() -> DecisionRecord {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
    let engine = Engine::from_dir(dir).unwrap_or_else(|e| panic!("{}", e.render()));
    let staffer = PrincipalId::new(PrincipalKind::CampaignStaff, ids::CS_A_STAFF);
    let at = "2020-03-01T12:00:00Z"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let ctx = Context::at(at).election(ids::LEADER_2020);
    let fields = engine
        .permitted_fields(
            &sample::bundled(),
            &staffer,
            Action::Read,
            ids::MEMBER_ELIGIBLE,
            &ctx,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    DecisionRecord::for_fields(
        "req-0001",
        &engine,
        &staffer,
        Action::Read,
        ids::MEMBER_ELIGIBLE,
        &ctx,
        fields,
    )
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

criterion_group!(benches, decision_log);
criterion_main!(benches);
