//! Plans ([`Engine::plan`]) against the engine's per-member decisions: every principal of
//! the bundled sample, every action and the contexts at and around each of its
//! boundaries, over the whole membership; and a policy written so that the planner cannot
//! express it, whose members are then decided one by one.

mod sql;
mod tpe;

use membergate::{Action, Engine, MemberRef, PrincipalId};

use crate::support::{
    boundary_contexts, bundled, copy_dir, directory, engine, plan_agrees, policies_dir, principal,
    PlanTally, PER_MEMBER_POLICY,
};

/// Every principal, every action, its boundary contexts, every member of the sample.
#[test]
fn plans_decide_every_member_as_the_engine() {
    let (e, dir, party) = (engine(), directory(), bundled());
    let members: Vec<MemberRef> = party
        .members
        .iter()
        .map(|(id, attrs)| MemberRef { id, attrs })
        .collect();
    let principals: Vec<PrincipalId> = party.principal_ids().collect();
    let started = std::time::Instant::now();
    let chunks: Vec<_> = principals.chunks(principals.len().div_ceil(2)).collect();
    let (tally, plans) = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let members = &members;
                s.spawn(move || {
                    let mut tally = PlanTally::default();
                    let mut plans = 0usize;
                    for p in chunk {
                        for ctx in boundary_contexts(party, p) {
                            for action in Action::ALL {
                                tally += plan_agrees(e, dir, (p, action, &ctx), members);
                                plans += 1;
                            }
                        }
                    }
                    (tally, plans)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .fold((PlanTally::default(), 0), |(mut t, n), (u, m)| {
                t += u;
                (t, n + m)
            })
    });
    eprintln!(
        "plans: {} principals, {plans} plans (principal x action x context), {} member \
         decisions compared ({} fields each), {} refused; in {:.1?}",
        principals.len(),
        tally.members,
        e.catalogue().len() + 1,
        tally.refused,
        started.elapsed()
    );
    assert_eq!(
        tally.per_member, 0,
        "the bundled policies are planned exactly"
    );
    assert!(tally.members > 1_000_000);
}

/// A policy that compares two of the member's dates: the planner cannot express it, so
/// its part is decided per member, between the plan's bounds, never widened or dropped.
#[test]
fn a_condition_the_planner_cannot_express_is_decided_per_member() {
    let dir = tempfile::tempdir().expect("temporary directory");
    copy_dir(&policies_dir(), dir.path());
    std::fs::write(dir.path().join("per_member.cedar"), PER_MEMBER_POLICY).expect("write");
    let engine = Engine::from_dir(dir.path()).expect("loads");
    let party = bundled();
    let directory = directory().for_engine(&engine).expect("the same records");
    let staffer = principal(r#"Staff::"s-membership""#);
    let ctx = membergate::Context::at(crate::support::t("2024-05-01T09:00:00Z"));
    let plan = engine
        .plan(&directory, &staffer, Action::Export, &ctx)
        .expect("a plan");
    assert!(!plan.is_exact(), "{plan}");
    let name = plan.field("name").expect("a field");
    assert!(
        name.to_string()
            .contains("per member: part 0 of `export-short-memberships`"),
        "{name}"
    );
    let members: Vec<MemberRef> = party
        .members
        .iter()
        .map(|(id, attrs)| MemberRef { id, attrs })
        .collect();
    let tally = plan_agrees(
        &engine,
        &directory,
        (&staffer, Action::Export, &ctx),
        &members,
    );
    assert_eq!(tally.members, members.len());
    // Some members are left to a per-member decision, and some of those are allowed.
    assert!(tally.per_member > 0, "{tally:?}");
    let c = name.condition().expect("a condition");
    let (low, high) = (c.bound(false), c.bound(true));
    let open = party
        .members
        .iter()
        .filter(|(id, m)| low.holds(id, m) != high.holds(id, m))
        .count();
    assert!(open > 0 && open < members.len(), "{open} open");
}
