//! Latency of the questions a CRM asks, through membergate and through a plain
//! `cedar_policy::Authorizer` on the same Cedar requests and entities.
//!
//! Groups, by question: `one_decision`, `permitted_fields_one_member` (every catalogue
//! field of one member), `permitted_fields_page_100`, and `policy_scaling` (one decision
//! under 20, 200 and 2,000 generated policies, per campaign and per region). In each, `membergate` is the
//! crate's reference path (the CRM records converted to Cedar entities included),
//! `compiled` the crate's compiled path on an `EntityStore` built beforehand, and
//! `cedar_authorizer` is Cedar's authorizer alone, its inputs built beforehand. In the two
//! `permitted_fields` groups, `compiled_field_decisions` is the compiled path's
//! `field_decisions_in` / `field_decisions_page_in`: the same sets with the policies that
//! decided each field.

use std::hint::black_box;

use cedar_policy::{Authorizer, Entities};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use membergate::sample::{self, ids};
use membergate::{
    Action, Context, Engine, EntityStore, Membership, PrincipalId, PrincipalKind, Request,
};

struct Setup {
    engine: Engine,
    store: EntityStore,
    party: Membership,
    staffer: PrincipalId,
    context: Context,
    page: Vec<String>,
}

fn setup() -> Setup {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
    let engine = Engine::from_dir(dir).unwrap_or_else(|e| panic!("{}", e.render()));
    let party = sample::bundled();
    let now = "2020-03-01T12:00:00Z"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let page = party.members.keys().take(100).cloned().collect();
    let store = engine.store(&party).unwrap_or_else(|e| panic!("{e}"));
    Setup {
        store,
        engine,
        party,
        staffer: PrincipalId::new(PrincipalKind::CampaignStaff, ids::CS_A_STAFF),
        context: Context::at(now).election(ids::LEADER_2020),
        page,
    }
}

impl Setup {
    fn request(&self, member: &str, field: &str) -> Request {
        Request::new(
            self.staffer.clone(),
            Action::Read,
            member,
            field,
            self.context.clone(),
        )
    }

    /// The Cedar inputs of every field of `member`, built once.
    fn cedar_inputs(&self, member: &str) -> Vec<(cedar_policy::Request, Entities)> {
        self.engine
            .catalogue()
            .iter()
            .map(|(_, f)| {
                self.engine
                    .cedar_inputs(&self.party, &self.request(member, &f.name))
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect()
    }
}

/// How many of the prepared Cedar requests the authorizer allows: the reference's
/// `permitted_fields`, one decision per field.
fn allowed<'a>(
    authorizer: &Authorizer,
    policies: &cedar_policy::PolicySet,
    inputs: impl IntoIterator<Item = &'a (cedar_policy::Request, Entities)>,
) -> usize {
    inputs
        .into_iter()
        .filter(|(r, e)| {
            authorizer.is_authorized(r, policies, e).decision() == cedar_policy::Decision::Allow
        })
        .count()
}

fn one_decision(c: &mut Criterion) {
    let s = setup();
    let req = s.request(ids::MEMBER_ELIGIBLE, "phone");
    let (cedar_req, entities) = s
        .engine
        .cedar_inputs(&s.party, &req)
        .unwrap_or_else(|e| panic!("{e}"));
    let authorizer = Authorizer::new();
    let mut g = c.benchmark_group("one_decision");
    g.bench_function("membergate", |b| {
        b.iter(|| s.engine.authorize(black_box(&s.party), black_box(&req)))
    });
    g.bench_function("compiled", |b| {
        b.iter(|| s.engine.authorize_in(black_box(&s.store), black_box(&req)))
    });
    g.bench_function("cedar_authorizer", |b| {
        b.iter(|| {
            authorizer.is_authorized(
                black_box(&cedar_req),
                s.engine.policies(),
                black_box(&entities),
            )
        })
    });
    g.finish();
}

fn permitted_fields_one_member(c: &mut Criterion) {
    let s = setup();
    let inputs = s.cedar_inputs(ids::MEMBER_ELIGIBLE);
    let authorizer = Authorizer::new();
    let mut g = c.benchmark_group("permitted_fields_one_member");
    g.bench_function("membergate", |b| {
        b.iter(|| {
            s.engine.permitted_fields(
                black_box(&s.party),
                &s.staffer,
                Action::Read,
                ids::MEMBER_ELIGIBLE,
                &s.context,
            )
        })
    });
    g.bench_function("compiled", |b| {
        b.iter(|| {
            s.engine.permitted_fields_in(
                black_box(&s.store),
                &s.staffer,
                Action::Read,
                ids::MEMBER_ELIGIBLE,
                &s.context,
            )
        })
    });
    g.bench_function("compiled_field_decisions", |b| {
        b.iter(|| {
            s.engine.field_decisions_in(
                black_box(&s.store),
                &s.staffer,
                Action::Read,
                ids::MEMBER_ELIGIBLE,
                &s.context,
            )
        })
    });
    g.bench_function("cedar_authorizer", |b| {
        b.iter(|| allowed(&authorizer, s.engine.policies(), &inputs))
    });
    g.finish();
}

fn permitted_fields_page_100(c: &mut Criterion) {
    let s = setup();
    let page: Vec<&str> = s.page.iter().map(String::as_str).collect();
    let inputs: Vec<_> = page.iter().map(|m| s.cedar_inputs(m)).collect();
    let authorizer = Authorizer::new();
    let mut g = c.benchmark_group("permitted_fields_page_100");
    g.sample_size(20);
    g.bench_function("membergate", |b| {
        b.iter(|| {
            s.engine.permitted_fields_page(
                black_box(&s.party),
                &s.staffer,
                Action::Read,
                &page,
                &s.context,
            )
        })
    });
    g.bench_function("compiled", |b| {
        b.iter(|| {
            s.engine.permitted_fields_page_in(
                black_box(&s.store),
                &s.staffer,
                Action::Read,
                &page,
                &s.context,
            )
        })
    });
    g.bench_function("compiled_field_decisions", |b| {
        b.iter(|| {
            s.engine.field_decisions_page_in(
                black_box(&s.store),
                &s.staffer,
                Action::Read,
                &page,
                &s.context,
            )
        })
    });
    g.bench_function("cedar_authorizer", |b| {
        b.iter(|| allowed(&authorizer, s.engine.policies(), inputs.iter().flatten()))
    });
    g.finish();
}

/// One decision under policy sets of growing size: the bundled schema and catalogue with
/// `n` generated policies (see `sample::generated_policies`).
fn policy_scaling(c: &mut Criterion) {
    let s = setup();
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
    let authorizer = Authorizer::new();
    let mut g = c.benchmark_group("policy_scaling");
    for n in [20usize, 200, 2000] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for file in [membergate::SCHEMA_FILE, membergate::CATALOGUE_FILE] {
            std::fs::copy(format!("{src}/{file}"), dir.path().join(file))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(
            dir.path().join("generated.cedar"),
            sample::generated_policies(n),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let engine = Engine::from_dir(dir.path()).unwrap_or_else(|e| panic!("{}", e.render()));
        let req = s.request(ids::MEMBER_ELIGIBLE, "phone");
        let (cedar_req, entities) = engine
            .cedar_inputs(&s.party, &req)
            .unwrap_or_else(|e| panic!("{e}"));
        let store = engine.store(&s.party).unwrap_or_else(|e| panic!("{e}"));
        g.bench_with_input(BenchmarkId::new("membergate", n), &n, |b, _| {
            b.iter(|| engine.authorize(black_box(&s.party), black_box(&req)))
        });
        g.bench_with_input(BenchmarkId::new("compiled", n), &n, |b, _| {
            b.iter(|| engine.authorize_in(black_box(&store), black_box(&req)))
        });
        g.bench_with_input(BenchmarkId::new("cedar_authorizer", n), &n, |b, _| {
            b.iter(|| {
                authorizer.is_authorized(
                    black_box(&cedar_req),
                    engine.policies(),
                    black_box(&entities),
                )
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    one_decision,
    permitted_fields_one_member,
    permitted_fields_page_100,
    policy_scaling
);
criterion_main!(benches);
