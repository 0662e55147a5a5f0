//! The hot path allocates nothing: once the engine, the directory and the request are
//! built, deciding a field, a member's every field, or a member's field decisions with
//! their policies makes no heap allocation (counted by `allocation-counter`, which
//! replaces the global allocator of this test binary only).
//!
//! A context that states a purpose or a break-glass reason is left out: its text becomes
//! an evaluator string once per request.

use std::hint::black_box;

use membergate::sample::{self, ids};
use membergate::{Action, Context, Directory, Engine, MemberRequest, PrincipalId, PrincipalKind};

#[test]
fn deciding_allocates_nothing() {
    let engine = Engine::from_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/policies"))
        .expect("the bundled policies load");
    let party = sample::bundled();
    let directory = Directory::from_membership(&engine, &party).expect("the sample's directory");
    let at = |t: &str| Context::at(t.parse().expect("a time"));
    let asks = [
        (
            PrincipalId::new(PrincipalKind::CampaignStaff, ids::CS_A_STAFF),
            at("2020-03-01T12:00:00Z").election(ids::LEADER_2020),
        ),
        (
            PrincipalId::new(PrincipalKind::Volunteer, ids::V_PHONEBANK),
            at("2020-02-20T18:00:00Z").session(ids::SESSION_A),
        ),
        (
            PrincipalId::new(PrincipalKind::Staff, ids::S_MEMBERSHIP),
            at("2024-05-01T09:00:00Z"),
        ),
        (
            PrincipalId::new(PrincipalKind::Processor, ids::P_MAILING),
            at("2024-05-01T09:00:00Z"),
        ),
        (
            PrincipalId::new(PrincipalKind::Representative, ids::MP_RESIGNED),
            at("2019-02-19T09:00:00Z"),
        ),
    ];
    let members = [
        ids::MEMBER_ELIGIBLE,
        ids::MEMBER_OTHER_CLP,
        ids::MEMBER_LEFT_2009,
    ];
    let mut requests = Vec::new();
    for (principal, context) in &asks {
        for id in members {
            let member = party.member(id).expect("a sample member");
            requests.push(MemberRequest {
                principal,
                action: Action::Read,
                member,
                context,
            });
        }
    }
    let decide_all = || {
        let mut allowed = 0usize;
        for req in &requests {
            let fields = engine.permitted_fields(&directory, req).expect("decided");
            let decisions = engine.field_decisions(&directory, req).expect("decided");
            assert_eq!(decisions.granted(), fields);
            let phone = engine
                .authorize(&directory, &req.field("phone"))
                .expect("decided");
            allowed += fields.len() + usize::from(phone.is_allowed());
            black_box(decisions);
        }
        allowed
    };
    // The first pass warms what is made once per thread (the page's policy list).
    let allowed = decide_all();
    assert!(
        allowed > 0,
        "some fields are allowed, so the passes did real work"
    );
    let counted = allocation_counter::measure(|| {
        black_box(decide_all());
    });
    assert_eq!(
        counted.count_total,
        0,
        "deciding {} requests allocated {} times ({} bytes)",
        requests.len(),
        counted.count_total,
        counted.bytes_total
    );
}
