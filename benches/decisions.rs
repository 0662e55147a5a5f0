//! Latency of the questions a CRM asks, through membergate and through a plain
//! `cedar_policy::Authorizer` on the same Cedar requests and entities.
//!
//! Groups, by question: `one_decision`, `permitted_fields_one_member` (every catalogue
//! field of one member), `permitted_fields_page_100`, and `policy_scaling` (one decision
//! under 20, 200 and 2,000 generated policies, per campaign and per region). In each,
//! `engine` is the crate's engine (the member's attributes passed with the request, the
//! principal side in a `Directory` built beforehand), `reference` the same question
//! through `Engine::reference` (the records converted to Cedar entities included), and
//! `cedar_authorizer` Cedar's authorizer alone, its inputs built beforehand. In the two
//! `permitted_fields` groups, `engine_field_decisions` is `field_decisions` /
//! `field_decisions_page`: the same sets with the policies that decided each field.
//! `setup` measures what a reload costs: the engine from the policy directory, and the
//! directory of the sample's principal side and of a 20,000-principal one. `party_scale` decides every field of
//! 1,000,000 generated members read from a file in chunks. `plan` builds the plan of a
//! principal of each kind (`Engine::plan`), and renders one as SQL.

use std::hint::black_box;

use cedar_policy::{Authorizer, Entities};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use membergate::sample::{self, ids};
use membergate::{
    Action, Context, Directory, Engine, MemberRef, MemberRequest, Membership, PageRequest,
    PrincipalId, PrincipalKind, Request,
};

struct Setup {
    engine: Engine,
    directory: Directory,
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
    let directory = Directory::from_membership(&engine, &party).unwrap_or_else(|e| panic!("{e}"));
    Setup {
        directory,
        engine,
        party,
        staffer: PrincipalId::new(PrincipalKind::CampaignStaff, ids::CS_A_STAFF),
        context: Context::at(now).election(ids::LEADER_2020),
        page,
    }
}

impl Setup {
    fn member(&self, id: &str) -> MemberRef<'_> {
        self.party
            .member(id)
            .unwrap_or_else(|| panic!("no member {id}"))
    }

    fn member_request(&self, id: &str) -> MemberRequest<'_> {
        MemberRequest {
            principal: &self.staffer,
            action: Action::Read,
            member: self.member(id),
            context: &self.context,
        }
    }

    fn request<'a>(&'a self, member: &str, field: &'a str) -> Request<'a> {
        self.member_request(member).field(field)
    }

    fn page(&self) -> Vec<MemberRef<'_>> {
        self.page.iter().map(|id| self.member(id)).collect()
    }

    /// The Cedar inputs of every field of `member`, built once.
    fn cedar_inputs(&self, member: &str) -> Vec<(cedar_policy::Request, Entities)> {
        self.engine
            .catalogue()
            .iter()
            .map(|(_, f)| {
                self.engine
                    .reference()
                    .cedar_inputs(&self.directory, &self.request(member, &f.name))
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
        .reference()
        .cedar_inputs(&s.directory, &req)
        .unwrap_or_else(|e| panic!("{e}"));
    let authorizer = Authorizer::new();
    let mut g = c.benchmark_group("one_decision");
    g.bench_function("engine", |b| {
        b.iter(|| {
            s.engine
                .authorize(black_box(&s.directory), black_box(&req))
                .map(|d| d.is_allowed())
        })
    });
    g.bench_function("reference", |b| {
        b.iter(|| {
            s.engine
                .reference()
                .authorize(black_box(&s.directory), black_box(&req))
                .map(|d| d.is_allowed())
        })
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
    let req = s.member_request(ids::MEMBER_ELIGIBLE);
    let inputs = s.cedar_inputs(ids::MEMBER_ELIGIBLE);
    let authorizer = Authorizer::new();
    let mut g = c.benchmark_group("permitted_fields_one_member");
    g.bench_function("engine", |b| {
        b.iter(|| {
            s.engine
                .permitted_fields(black_box(&s.directory), black_box(&req))
        })
    });
    g.bench_function("engine_field_decisions", |b| {
        b.iter(|| {
            s.engine
                .field_decisions(black_box(&s.directory), black_box(&req))
                .map(|d| d.granted())
        })
    });
    g.bench_function("reference", |b| {
        b.iter(|| {
            s.engine
                .reference()
                .permitted_fields(black_box(&s.directory), black_box(&req))
        })
    });
    g.bench_function("cedar_authorizer", |b| {
        b.iter(|| allowed(&authorizer, s.engine.policies(), &inputs))
    });
    g.finish();
}

fn permitted_fields_page_100(c: &mut Criterion) {
    let s = setup();
    let members = s.page();
    let req = PageRequest {
        principal: &s.staffer,
        action: Action::Read,
        members: &members,
        context: &s.context,
    };
    let inputs: Vec<_> = s.page.iter().map(|m| s.cedar_inputs(m)).collect();
    let authorizer = Authorizer::new();
    let mut g = c.benchmark_group("permitted_fields_page_100");
    g.sample_size(20);
    g.bench_function("engine", |b| {
        b.iter(|| {
            s.engine
                .permitted_fields_page(black_box(&s.directory), black_box(&req))
        })
    });
    g.bench_function("engine_field_decisions", |b| {
        b.iter(|| {
            s.engine
                .field_decisions_page(black_box(&s.directory), black_box(&req))
                .map(|d| d.len())
        })
    });
    g.bench_function("reference", |b| {
        b.iter(|| {
            s.engine
                .reference()
                .permitted_fields_page(black_box(&s.directory), black_box(&req))
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
        let directory =
            Directory::from_membership(&engine, &s.party).unwrap_or_else(|e| panic!("{e}"));
        let req = s.request(ids::MEMBER_ELIGIBLE, "phone");
        let (cedar_req, entities) = engine
            .reference()
            .cedar_inputs(&directory, &req)
            .unwrap_or_else(|e| panic!("{e}"));
        g.bench_with_input(BenchmarkId::new("engine", n), &n, |b, _| {
            b.iter(|| {
                engine
                    .authorize(black_box(&directory), black_box(&req))
                    .map(|d| d.is_allowed())
            })
        });
        g.bench_with_input(BenchmarkId::new("reference", n), &n, |b, _| {
            b.iter(|| {
                engine
                    .reference()
                    .authorize(black_box(&directory), black_box(&req))
                    .map(|d| d.is_allowed())
            })
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

/// What a reload costs: loading, validating and compiling the bundled policy directory,
/// and building the bundled sample's directory (its principal side) for the engine, and
/// a 20,000-principal one.
fn setup_costs(c: &mut Criterion) {
    let s = setup();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
    let mut g = c.benchmark_group("setup");
    g.sample_size(20);
    g.bench_function("engine_from_dir", |b| {
        b.iter(|| Engine::from_dir(black_box(dir)).map(|e| e.policy_ids().count()))
    });
    g.bench_function("directory_from_membership", |b| {
        b.iter(|| {
            Directory::from_membership(&s.engine, black_box(&s.party))
                .map(|d| d.records().staff.len())
        })
    });
    // A large party's principal side: the sample's with 15,000 more volunteers, 4,000
    // more CLP officers and 1,000 more staff (about 20,000 principals), as a reload
    // rebuilds it.
    let mut large = s.party.principal_side();
    let (v, o, st) = (
        large.volunteers[ids::V_PHONEBANK].clone(),
        large.officers[ids::O_SECRETARY_001].clone(),
        large.staff[ids::S_MEMBERSHIP].clone(),
    );
    for i in 0..15_000 {
        large.volunteers.insert(format!("v-extra-{i}"), v.clone());
    }
    for i in 0..4_000 {
        large.officers.insert(format!("o-extra-{i}"), o.clone());
    }
    for i in 0..1_000 {
        large.staff.insert(format!("s-extra-{i}"), st.clone());
    }
    let directory = Directory::from_membership(&s.engine, &large).unwrap_or_else(|e| panic!("{e}"));
    g.bench_function("directory_20k_principals_for_engine", |b| {
        b.iter(|| {
            black_box(&directory)
                .for_engine(&s.engine)
                .map(|d| d.records().volunteers.len())
        })
    });
    g.finish();
}

/// Party scale: every field of each of 1,000,000 generated members, read from a JSON-lines
/// file 10,000 at a time (as a CRM reads rows in chunks) and decided in pages of 100 on the
/// engine. Only the deciding is timed (`iter_custom`): reading and parsing the rows is the
/// CRM's cost, not the engine's. The file is generated once, outside the measurement.
/// (Cedar's authorizer would take about 15 minutes a pass; `permitted_fields_page_100`
/// puts the two side by side.)
fn party_scale(c: &mut Criterion) {
    use std::io::{BufRead, BufWriter, Write};
    const MEMBERS: usize = 1_000_000;
    const CHUNK: usize = 10_000;
    let s = setup();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("members.jsonl");
    let config = sample::SampleConfig {
        seed: 2020,
        members: MEMBERS,
    };
    let mut out = BufWriter::new(std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}")));
    let principal_side = sample::generate_each(&config, |id, member, _| {
        serde_json::to_writer(&mut out, &(id, member)).unwrap_or_else(|e| panic!("{e}"));
        out.write_all(b"\n").unwrap_or_else(|e| panic!("{e}"));
    });
    out.flush().unwrap_or_else(|e| panic!("{e}"));
    drop(out);
    let directory =
        Directory::from_membership(&s.engine, &principal_side).unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("party_scale");
    g.sample_size(10);
    g.bench_function("engine_1m_members_in_chunks", |b| {
        b.iter_custom(|iters| {
            let mut deciding = std::time::Duration::ZERO;
            for _ in 0..iters {
                let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{e}"));
                let mut lines = std::io::BufReader::new(file).lines();
                let mut chunk: Vec<(String, membergate::Member)> = Vec::with_capacity(CHUNK);
                loop {
                    chunk.clear();
                    for line in lines.by_ref().take(CHUNK) {
                        let line = line.unwrap_or_else(|e| panic!("{e}"));
                        chunk.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}")));
                    }
                    if chunk.is_empty() {
                        break;
                    }
                    let refs: Vec<MemberRef> = chunk
                        .iter()
                        .map(|(id, attrs)| MemberRef { id, attrs })
                        .collect();
                    let start = std::time::Instant::now();
                    for page in refs.chunks(100) {
                        let req = PageRequest {
                            principal: &s.staffer,
                            action: Action::Read,
                            members: page,
                            context: &s.context,
                        };
                        black_box(s.engine.permitted_fields_page(&directory, &req))
                            .unwrap_or_else(|e| panic!("{e}"));
                    }
                    deciding += start.elapsed();
                }
            }
            deciding
        })
    });
    g.finish();
}

/// `Engine::plan` for a principal of each kind, in a context where its policies have
/// something to fold (the campaign in its contest, the volunteer in its session): the
/// whole plan, every field and "any field". No member is read: the cost does not depend
/// on the membership's size (`*_1m_members`: the same with the principal side of a
/// 1,000,000-member party, its sessions listing members of the million). `plan_and_sql` adds rendering the listing's `WHERE` and
/// every field's `CASE` for PostgreSQL.
fn plan(c: &mut Criterion) {
    let s = setup();
    let at = |t: &str| Context::at(t.parse().unwrap_or_else(|e| panic!("{e}")));
    let cases = [
        (
            "campaign_staff",
            PrincipalId::new(PrincipalKind::CampaignStaff, ids::CS_A_STAFF),
            at("2020-03-01T12:00:00Z").election(ids::LEADER_2020),
        ),
        (
            "volunteer",
            PrincipalId::new(PrincipalKind::Volunteer, ids::V_PHONEBANK),
            at("2020-02-20T18:00:00Z")
                .election(ids::LEADER_2020)
                .session(ids::SESSION_A),
        ),
        (
            "officer",
            PrincipalId::new(PrincipalKind::Officer, ids::O_SECRETARY_001),
            at("2024-05-01T09:00:00Z"),
        ),
        (
            "regional_staff",
            PrincipalId::new(PrincipalKind::Staff, ids::S_REGIONAL_LONDON),
            at("2024-05-01T09:00:00Z"),
        ),
        (
            "membership_staff",
            PrincipalId::new(PrincipalKind::Staff, ids::S_MEMBERSHIP),
            at("2024-05-01T09:00:00Z"),
        ),
        (
            "processor",
            PrincipalId::new(PrincipalKind::Processor, ids::P_MAILING),
            at("2024-05-01T09:00:00Z"),
        ),
    ];
    // The principal side of a 1,000,000-member party (its call sessions list members
    // of the million): a plan reads no member, so it costs what it costs at 12,000.
    let config = sample::SampleConfig {
        seed: 2020,
        members: 1_000_000,
    };
    let million =
        Directory::from_membership(&s.engine, &sample::generate_each(&config, |_, _, _| {}))
            .unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("plan");
    for (name, p, ctx) in &cases {
        g.bench_function(*name, |b| {
            b.iter(|| {
                s.engine
                    .plan(&s.directory, black_box(p), Action::Read, black_box(ctx))
                    .unwrap_or_else(|e| panic!("{e}"))
            })
        });
    }
    for (name, p, ctx) in &cases[..2] {
        g.bench_function(format!("{name}_1m_members"), |b| {
            b.iter(|| {
                s.engine
                    .plan(&million, black_box(p), Action::Read, black_box(ctx))
                    .unwrap_or_else(|e| panic!("{e}"))
            })
        });
    }
    let columns = membergate::plan::sql::MemberColumns::default();
    let (_, p, ctx) = &cases[0];
    g.bench_function("campaign_staff_plan_and_sql", |b| {
        use membergate::plan::sql::sea_query::{Alias, Expr, PostgresQueryBuilder, Query};
        b.iter(|| {
            let plan = s
                .engine
                .plan(&s.directory, black_box(p), Action::Read, black_box(ctx))
                .unwrap_or_else(|e| panic!("{e}"));
            let mut q = Query::select();
            q.column(Alias::new("id")).from(Alias::new("members"));
            for (name, fp) in plan.fields() {
                let col = Expr::col((Alias::new("members"), Alias::new(name)));
                q.expr_as(columns.reveal(fp, col, true), Alias::new(name));
            }
            q.and_where(columns.filter(plan.any_field(), true));
            q.build(PostgresQueryBuilder)
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    setup_costs,
    one_decision,
    permitted_fields_one_member,
    permitted_fields_page_100,
    policy_scaling,
    plan,
    party_scale
);
criterion_main!(benches);
