//! Property tests of the engine against its reference (`engine.reference()`, Cedar's
//! authorizer) on the same directory. Generated: the member of the request, its
//! attributes drawn directly (status, dates, standing, consents, CLP; now and then a CLP
//! the directory lacks, a former member without a leaving date or a time Cedar cannot
//! hold), under a fixture id or a fresh one; random upserts into the fixture's directory (a
//! principal's end date and read limit, a candidate's nomination, an election's
//! timetable, a call session's members, an officer's CLP and a campaign staffer's
//! campaign, some of them refused); and random requests (principal, action, field, time
//! around every boundary, election, session, purpose, reason, reads). Every question has
//! the same answer on both paths, and on a directory built from scratch of the same
//! records; the request's plan (`Engine::plan`) decides the member and the fixture's
//! members as the engine does. Shrinks to a minimal differing case.

use std::sync::OnceLock;

use jiff::{SignedDuration, Timestamp};
use membergate::{
    Action, Context, Directory, DirectoryRecord, FieldDecisions, Member, MemberRef, MemberRequest,
    MemberStatus, Membership, PageRequest, PrincipalId, PrincipalKind, Request,
};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};

use crate::support::{
    engine, fixture, fixture_directory, ids, insert_record, plan_agrees, proptest_total, CHANNELS,
};

fn principals() -> &'static [PrincipalId] {
    static ALL: OnceLock<Vec<PrincipalId>> = OnceLock::new();
    ALL.get_or_init(|| fixture().principal_ids().collect())
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

/// A CLP id: one of the fixture's, or (rarely) one the directory lacks.
fn clp() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => select(ids(&fixture().clps)),
        1 => Just("clp-nowhere".to_string()),
    ]
}

/// A member's attributes, drawn directly: a former or expelled member keeps a leaving
/// date, but now and then does not (an error on both paths); others now and then have
/// one. Now and then the member joined at a time Cedar cannot hold.
fn member_attrs() -> impl Strategy<Value = Member> {
    (
        select(&MemberStatus::ALL[..]),
        prop_oneof![20 => moment(), 1 => Just(Timestamp::MIN)],
        moment(),
        0..20u8,
        any::<bool>(),
        subsequence(&CHANNELS[..], 0..=3),
        subsequence(&CHANNELS[..], 0..=3),
        clp(),
    )
        .prop_map(
            |(status, joined, left, odd, in_good_standing, consents, opt_outs, clp)| {
                let leaves = matches!(status, MemberStatus::Former | MemberStatus::Expelled);
                Member {
                    status,
                    clp,
                    joined,
                    // `odd == 0`: the other way round.
                    left: (leaves == (odd != 0)).then_some(left),
                    in_good_standing,
                    consents,
                    opt_outs,
                }
            },
        )
}

/// The member of a request: a fixture id (some listed in call sessions) or a fresh one,
/// with generated attributes.
fn member() -> impl Strategy<Value = (String, Member)> {
    let mut names = ids(&fixture().members);
    names.push("m-fresh".into());
    (select(names), member_attrs())
}

/// One change to the fixture's directory.
#[derive(Debug, Clone)]
enum Upsert {
    /// A principal's end date and read limit.
    Principal {
        principal: usize,
        ended_at: Option<Timestamp>,
        read_limit: u32,
    },
    /// A candidate's nomination state.
    Nomination {
        candidate: usize,
        nomination: (bool, bool, bool),
    },
    /// One of an election's dates (freeze, nominations close, ballot close).
    Timetable {
        election: usize,
        which: u8,
        at: Timestamp,
    },
    /// A member listed in, or struck from, a call session.
    SessionMember { session: usize, member: usize },
    /// An officer's CLP (perhaps one the directory lacks: refused).
    OfficerClp { officer: usize, clp: String },
    /// A campaign staffer's campaign (perhaps one the directory lacks: refused).
    Campaign { staffer: usize, campaign: String },
}

fn upsert() -> impl Strategy<Value = Upsert> {
    let mut campaigns = ids(&fixture().campaigns);
    campaigns.push("camp-nowhere".into());
    prop_oneof![
        (
            0..64usize,
            proptest::option::of(moment()),
            prop_oneof![Just(0u32), 1..4u32, Just(1_000_000)],
        )
            .prop_map(|(principal, ended_at, read_limit)| Upsert::Principal {
                principal,
                ended_at,
                read_limit
            }),
        (0..8usize, (any::<bool>(), any::<bool>(), any::<bool>())).prop_map(
            |(candidate, nomination)| Upsert::Nomination {
                candidate,
                nomination
            }
        ),
        (0..8usize, 0..3u8, moment()).prop_map(|(election, which, at)| Upsert::Timetable {
            election,
            which,
            at
        }),
        (0..8usize, 0..64usize)
            .prop_map(|(session, member)| Upsert::SessionMember { session, member }),
        (0..8usize, clp()).prop_map(|(officer, clp)| Upsert::OfficerClp { officer, clp }),
        (0..8usize, select(campaigns))
            .prop_map(|(staffer, campaign)| Upsert::Campaign { staffer, campaign }),
    ]
}

/// The `i`th (modulo) entry of `map`, cloned, with its id.
fn nth<V: Clone>(map: &std::collections::BTreeMap<String, V>, i: usize) -> (String, V) {
    let (id, v) = map.iter().nth(i % map.len()).expect("not empty");
    (id.clone(), v.clone())
}

/// The record `u` upserts, from the records `m` holds now.
fn record(m: &Membership, u: &Upsert) -> (String, DirectoryRecord) {
    match u {
        Upsert::Principal {
            principal,
            ended_at,
            read_limit,
        } => {
            let all = principals();
            let p = &all[principal % all.len()];
            let id = p.id.clone();
            macro_rules! set {
                ($map:ident) => {{
                    let mut r = m.$map[&id].clone();
                    r.ended_at = *ended_at;
                    r.hourly_read_limit = *read_limit;
                    DirectoryRecord::from(r)
                }};
            }
            let r = match p.kind {
                PrincipalKind::Staff => set!(staff),
                PrincipalKind::CampaignStaff => set!(campaign_staff),
                PrincipalKind::Volunteer => set!(volunteers),
                PrincipalKind::Officer => set!(officers),
                PrincipalKind::Representative => set!(representatives),
                PrincipalKind::Processor => set!(processors),
            };
            (id, r)
        }
        Upsert::Nomination {
            candidate,
            nomination,
        } => {
            let (id, mut c) = nth(&m.candidates, *candidate);
            (c.validly_nominated, c.fee_paid, c.data_agreement_signed) = *nomination;
            (id, c.into())
        }
        Upsert::Timetable {
            election,
            which,
            at,
        } => {
            let (id, mut e) = nth(&m.elections, *election);
            *match which {
                0 => &mut e.freeze_date,
                1 => &mut e.nominations_close,
                _ => &mut e.ballot_close,
            } = *at;
            (id, e.into())
        }
        Upsert::SessionMember { session, member } => {
            let (id, mut s) = nth(&m.call_sessions, *session);
            let (who, _) = nth(&fixture().members, *member);
            match s.members.iter().position(|x| *x == who) {
                Some(i) => drop(s.members.remove(i)),
                None => s.members.push(who),
            }
            (id, s.into())
        }
        Upsert::OfficerClp { officer, clp } => {
            let (id, mut o) = nth(&m.officers, *officer);
            o.clp = clp.clone();
            (id, o.into())
        }
        Upsert::Campaign { staffer, campaign } => {
            let (id, mut cs) = nth(&m.campaign_staff, *staffer);
            cs.campaign = campaign.clone();
            (id, cs.into())
        }
    }
}

/// One random request on the fixture's ids, but for the member.
#[derive(Debug, Clone)]
struct Asked {
    principal: PrincipalId,
    action: Action,
    field: String,
    context: Context,
}

fn asked() -> impl Strategy<Value = Asked> {
    let p = fixture();
    let mut fields: Vec<String> = engine()
        .catalogue()
        .iter()
        .map(|(_, f)| f.name.clone())
        .collect();
    fields.push("shoe_size".into());
    let mut elections: Vec<Option<String>> = ids(&p.elections).into_iter().map(Some).collect();
    elections.push(None);
    let mut sessions: Vec<Option<String>> = ids(&p.call_sessions).into_iter().map(Some).collect();
    sessions.push(None);
    (
        select(principals()),
        select(&Action::ALL[..]),
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
            |(principal, action, field, now, election, session, purpose, reason, reads)| Asked {
                principal,
                action,
                field,
                context: Context {
                    now,
                    reads_this_hour: reads,
                    election,
                    session,
                    purpose: purpose.map(str::to_string),
                    reason: reason.map(str::to_string),
                },
            },
        )
}

fn cases() -> u32 {
    proptest_total().map_or(5_000, |total| (total / 20).max(1))
}

/// The fixture's directory with `upserts` made one after the other, and the records it
/// must then hold. A refused upsert must leave the directory unchanged, with the error a
/// directory built of the records with that change gives. `decide` runs before each
/// upsert, so that what the directory keeps from a decision (a principal's plan) is
/// there to be outdated by the upsert.
fn upserted(
    upserts: &[Upsert],
    decide: impl Fn(&Directory),
) -> Result<(Directory, Membership), TestCaseError> {
    let mut dir = fixture_directory().clone();
    let mut records = dir.records().clone();
    for u in upserts {
        decide(&dir);
        let (id, r) = record(&records, u);
        match dir.upsert(&id, r.clone()) {
            Ok(()) => insert_record(&mut records, &id, r),
            Err(err) => {
                prop_assert_eq!(dir.records(), &records, "refused {:?}", u);
                let mut broken = records.clone();
                insert_record(&mut broken, &id, r);
                prop_assert_eq!(
                    Directory::from_membership(engine(), &broken).map(drop),
                    Err(err),
                    "refused {:?}",
                    u
                );
            }
        }
    }
    prop_assert_eq!(dir.records(), &records);
    Ok((dir, records))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn engine_decides_as_the_reference(
        upserts in prop::collection::vec(upsert(), 0..4),
        (id, attrs) in member(),
        asked in asked(),
    ) {
        let e = engine();
        let r = e.reference();
        let member = MemberRef { id: &id, attrs: &attrs };
        let req = Request {
            principal: &asked.principal,
            action: asked.action,
            member,
            field: &asked.field,
            context: &asked.context,
        };
        let (dir, records) = upserted(&upserts, |dir| {
            let _ = e.authorize(dir, &req);
        })?;
        let rebuilt = Directory::from_membership(e, &records).expect("the upserted records are valid");
        let why = format!("request {req:?}\nupserts {upserts:?}");

        // One field: the decision and the account.
        let decision = e.authorize(&dir, &req);
        prop_assert_eq!(&decision, &r.authorize(&dir, &req), "{}", why);
        prop_assert_eq!(&decision, &e.authorize(&rebuilt, &req), "rebuilt {}", why);
        let explained = e.explain(&dir, &req);
        prop_assert_eq!(&explained, &r.explain(&dir, &req), "{}", why);
        prop_assert_eq!(explained.map(|x| x.decision), decision.clone(), "{}", why);

        // Every field: the field set and the field decisions.
        let all: MemberRequest = req.all_fields();
        let fields = e.permitted_fields(&dir, &all);
        prop_assert_eq!(&fields, &r.permitted_fields(&dir, &all), "{}", why);
        let decisions = e.field_decisions(&dir, &all);
        prop_assert_eq!(&decisions, &r.field_decisions(&dir, &all), "{}", why);
        prop_assert_eq!(&decisions, &e.field_decisions(&rebuilt, &all), "rebuilt {}", why);
        prop_assert_eq!(
            decisions.as_ref().map(FieldDecisions::granted).map_err(Clone::clone),
            fields.clone(),
            "{}", why
        );
        if let Ok(d) = &decisions {
            // On every field, the reference's decision on that field alone.
            for (field, info) in e.catalogue().iter() {
                let one = all.field(&info.name);
                let want = r.authorize(&dir, &one);
                prop_assert_eq!(&e.authorize(&dir, &one), &want, "{}", why);
                let want = want.expect("a known member's field is decided");
                prop_assert_eq!(d.granted().contains(field), want.is_allowed(), "{} {}", info.name, why);
                prop_assert_eq!(
                    d.policies(field).collect::<Vec<_>>(),
                    want.policies(),
                    "{} {}", info.name, why
                );
            }
        }

        // In a page, after another fixture member, the same. (Not the same id twice: see
        // `a_page_naming_one_member_twice_is_decided_alike`.)
        let other = fixture().members.keys().find(|m| **m != id).expect("a member");
        let members = [crate::support::member(fixture(), other), member];
        let page: PageRequest = crate::support::page(&all, &members);
        let paged = e.field_decisions_page(&dir, &page);
        prop_assert_eq!(&paged, &r.field_decisions_page(&dir, &page), "{}", why);
        prop_assert_eq!(
            e.permitted_fields_page(&dir, &page),
            r.permitted_fields_page(&dir, &page),
            "{}", why
        );
        if let Ok(d) = &decisions {
            prop_assert_eq!(paged.as_ref().ok().and_then(|ds| ds.get(1)), Some(d), "{}", why);
        } else {
            prop_assert!(paged.is_err(), "{}", why);
        }

        // The plan of the request decides the member, and the fixture's members, as the
        // engine does (between its bounds where a part is per member), and is the same on
        // the directory rebuilt of the same records.
        let asking = (&asked.principal, asked.action, &asked.context);
        let mut members: Vec<MemberRef> = fixture()
            .members
            .keys()
            .filter(|m| **m != id)
            .map(|m| crate::support::member(fixture(), m))
            .collect();
        members.push(member);
        plan_agrees(e, &dir, asking, &members);
        prop_assert_eq!(
            e.plan(&dir, &asked.principal, asked.action, &asked.context),
            e.plan(&rebuilt, &asked.principal, asked.action, &asked.context),
            "rebuilt {}", why
        );
    }
}
