//! Property tests of the engine's compiled path against its reference path: random edits of
//! the fixture's records (a member's status, dates, standing, consents and CLP; a
//! principal's end date and read limit; a candidate's nomination state) and random
//! requests (principal, action, member, field, time around every boundary, election,
//! session, purpose, reason, reads), decided by `authorize_in` / `permitted_fields_in` on a
//! store and by `authorize` / `permitted_fields` on the same records. Shrinks to a minimal
//! differing case.

use std::sync::OnceLock;

use jiff::{SignedDuration, Timestamp};
use membergate::{
    Action, Channel, Context, MemberStatus, Membership, PrincipalId, PrincipalKind, Request,
};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};

use crate::support::{self, engine};

/// The policy-suite fixture, less its deliberately invalid record (a store refuses it).
fn fixture() -> &'static Membership {
    static PARTY: OnceLock<Membership> = OnceLock::new();
    PARTY.get_or_init(|| {
        let mut party = support::fixture().clone();
        party.members.remove("m-former-undated");
        party
    })
}

fn ids<V>(map: &std::collections::BTreeMap<String, V>) -> Vec<String> {
    map.keys().cloned().collect()
}

fn principals() -> Vec<PrincipalId> {
    let p = fixture();
    let mut out = Vec::new();
    let kinds = [
        (PrincipalKind::Staff, ids(&p.staff)),
        (PrincipalKind::CampaignStaff, ids(&p.campaign_staff)),
        (PrincipalKind::Volunteer, ids(&p.volunteers)),
        (PrincipalKind::Officer, ids(&p.officers)),
        (PrincipalKind::Representative, ids(&p.representatives)),
        (PrincipalKind::Processor, ids(&p.processors)),
    ];
    for (kind, keys) in kinds {
        out.extend(keys.into_iter().map(|k| PrincipalId::new(kind, k)));
    }
    out
}

/// Moments the policies turn on: election timetables, sessions, retention, contracts.
const ANCHORS: &[&str] = &[
    "2009-09-01T00:00:00Z",
    "2016-07-20T12:00:00Z",
    "2016-09-21T12:00:00Z",
    "2017-03-01T12:00:00Z",
    "2019-02-18T09:00:00Z",
    "2020-01-20T17:00:00Z",
    "2020-02-14T14:00:00Z",
    "2020-02-20T18:00:00Z",
    "2020-03-01T12:00:00Z",
    "2020-04-02T12:00:00Z",
    "2021-04-10T12:00:00Z",
    "2022-06-15T00:00:00Z",
    "2024-01-10T10:00:00Z",
];

/// A time near one of the anchors: exactly on it, a millisecond either side, or days off.
fn moment() -> impl Strategy<Value = Timestamp> {
    (
        select(ANCHORS),
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(1),
            -3_000_000_000i64..3_000_000_000,
            -100_000_000_000i64..100_000_000_000
        ],
    )
        .prop_map(|(anchor, ms)| {
            let t: Timestamp = anchor.parse().expect("anchor");
            t.checked_add(SignedDuration::from_millis(ms)).unwrap_or(t)
        })
}

const CHANNELS: [Channel; 3] = [Channel::Phone, Channel::Email, Channel::Post];
const STATUSES: [MemberStatus; 5] = [
    MemberStatus::Member,
    MemberStatus::RegisteredSupporter,
    MemberStatus::AffiliatedSupporter,
    MemberStatus::Former,
    MemberStatus::Expelled,
];

/// One random edit of the fixture's records.
#[derive(Debug, Clone)]
struct Edit {
    member: usize,
    status: MemberStatus,
    joined: Timestamp,
    left: Timestamp,
    good_standing: bool,
    consents: Vec<Channel>,
    opt_outs: Vec<Channel>,
    clp: usize,
    principal: usize,
    ended_at: Option<Timestamp>,
    read_limit: u32,
    candidate: usize,
    nomination: (bool, bool, bool),
}

fn edit() -> impl Strategy<Value = Edit> {
    (
        (
            0..64usize,
            select(&STATUSES[..]),
            moment(),
            moment(),
            any::<bool>(),
            subsequence(&CHANNELS[..], 0..=3),
            subsequence(&CHANNELS[..], 0..=3),
            0..8usize,
        ),
        (
            0..64usize,
            proptest::option::of(moment()),
            prop_oneof![Just(0u32), 1..4u32, Just(1_000_000)],
            0..8usize,
            (any::<bool>(), any::<bool>(), any::<bool>()),
        ),
    )
        .prop_map(
            |(
                (member, status, joined, left, good_standing, consents, opt_outs, clp),
                (principal, ended_at, read_limit, candidate, nomination),
            )| Edit {
                member,
                status,
                joined,
                left,
                good_standing,
                consents,
                opt_outs,
                clp,
                principal,
                ended_at,
                read_limit,
                candidate,
                nomination,
            },
        )
}

/// The fixture with the edit applied (a former or expelled member always keeps a date).
fn apply(e: &Edit) -> Membership {
    let mut party = fixture().clone();
    let clps = ids(&party.clps);
    let members = ids(&party.members);
    if let Some(m) = members
        .get(e.member % members.len())
        .and_then(|id| party.members.get_mut(id))
    {
        m.status = e.status;
        m.joined = e.joined;
        m.left =
            matches!(e.status, MemberStatus::Former | MemberStatus::Expelled).then_some(e.left);
        m.in_good_standing = e.good_standing;
        m.consents = e.consents.clone();
        m.opt_outs = e.opt_outs.clone();
        if let Some(clp) = clps.get(e.clp % clps.len()) {
            m.clp = clp.clone();
        }
    }
    let all = principals();
    if let Some(p) = all.get(e.principal % all.len()) {
        let (ended, limit) = match p.kind {
            PrincipalKind::Staff => party
                .staff
                .get_mut(&p.id)
                .map(|r| (&mut r.ended_at, &mut r.hourly_read_limit)),
            PrincipalKind::CampaignStaff => party
                .campaign_staff
                .get_mut(&p.id)
                .map(|r| (&mut r.ended_at, &mut r.hourly_read_limit)),
            PrincipalKind::Volunteer => party
                .volunteers
                .get_mut(&p.id)
                .map(|r| (&mut r.ended_at, &mut r.hourly_read_limit)),
            PrincipalKind::Officer => party
                .officers
                .get_mut(&p.id)
                .map(|r| (&mut r.ended_at, &mut r.hourly_read_limit)),
            PrincipalKind::Representative => party
                .representatives
                .get_mut(&p.id)
                .map(|r| (&mut r.ended_at, &mut r.hourly_read_limit)),
            PrincipalKind::Processor => party
                .processors
                .get_mut(&p.id)
                .map(|r| (&mut r.ended_at, &mut r.hourly_read_limit)),
        }
        .expect("principal in fixture");
        *ended = e.ended_at;
        *limit = e.read_limit;
    }
    let candidates = ids(&party.candidates);
    if let Some(c) = candidates
        .get(e.candidate % candidates.len())
        .and_then(|id| party.candidates.get_mut(id))
    {
        (c.validly_nominated, c.fee_paid, c.data_agreement_signed) = e.nomination;
    }
    party
}

/// One random request against the fixture's ids.
fn request() -> impl Strategy<Value = Request> {
    let p = fixture();
    let fields: Vec<String> = engine()
        .catalogue()
        .iter()
        .map(|(_, f)| f.name.clone())
        .collect();
    let mut elections: Vec<Option<String>> = ids(&p.elections).into_iter().map(Some).collect();
    elections.push(None);
    let mut sessions: Vec<Option<String>> = ids(&p.call_sessions).into_iter().map(Some).collect();
    sessions.push(None);
    (
        select(principals()),
        select(&Action::ALL[..]),
        select(ids(&p.members)),
        select(fields),
        moment(),
        select(elections),
        select(sessions),
        select(vec![
            None,
            Some("subject_access"),
            Some("equality_monitoring"),
            Some("complaint"),
            Some("marketing"),
        ]),
        select(vec![None, Some(""), Some("court order")]),
        prop_oneof![Just(0u64), 0..6u64, Just(1_000_000)],
    )
        .prop_map(
            |(principal, action, member, field, now, election, session, purpose, reason, reads)| {
                let context = Context {
                    now,
                    reads_this_hour: reads,
                    election,
                    session,
                    purpose: purpose.map(str::to_string),
                    reason: reason.map(str::to_string),
                };
                Request::new(principal, action, member, field, context)
            },
        )
}

fn cases() -> u32 {
    std::env::var("MEMBERGATE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(5_000, |total| (total / 20).max(1))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn compiled_path_decides_as_the_reference(edit in edit(), req in request()) {
        let party = apply(&edit);
        let store = engine().store(&party).expect("the edited fixture is valid");
        let reference = engine().authorize(&party, &req);
        let compiled = engine().authorize_in(&store, &req);
        prop_assert_eq!(&compiled, &reference, "request {:?}\nedit {:?}", req, edit);
        let fields_ref = engine().permitted_fields(&party, &req.principal, req.action, &req.member, &req.context);
        let fields_in = engine().permitted_fields_in(&store, &req.principal, req.action, &req.member, &req.context);
        prop_assert_eq!(fields_in, fields_ref.clone(), "request {:?}\nedit {:?}", req, edit);

        // The field decisions: the reference's field set, and on every field the policies
        // of the reference's decision on that field alone.
        let (p, action, ctx) = (&req.principal, req.action, &req.context);
        let decisions = engine().field_decisions_in(&store, p, action, &req.member, ctx);
        prop_assert_eq!(decisions.as_ref().map(|d| d.granted()).map_err(Clone::clone), fields_ref,
            "request {:?}\nedit {:?}", req, edit);
        if let Ok(d) = &decisions {
            for (field, info) in engine().catalogue().iter() {
                let one = Request { field: info.name.clone(), ..req.clone() };
                let want = engine().authorize(&party, &one).map(|w| w.policies().to_vec());
                let got: Vec<String> = d.policies(field).into_iter().map(str::to_string).collect();
                prop_assert_eq!(want, Ok(got), "request {:?}\nedit {:?}", one, edit);
            }
            // In a page, the same.
            let other = fixture().members.keys().next().expect("a member");
            let page = engine().field_decisions_page_in(&store, p, action, &[other, &req.member], ctx);
            prop_assert_eq!(page.as_ref().ok().and_then(|ds| ds.get(1)), Some(d),
                "request {:?}\nedit {:?}", req, edit);
        }
    }
}
