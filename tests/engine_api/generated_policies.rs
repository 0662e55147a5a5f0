//! The engine against its reference on generated policy sets over the bundled schema, so
//! that the compiled path is tested beyond the bundled policies.
//!
//! Generated: sets of 1–6 policies (`permit` or `forbid`, some flagged) with every kind of
//! scope (`principal`, `is`, `in Team`/`Campaign`, `is .. in`, `==`; any action, `==`,
//! `in [..]`, `in Action::"contact"`; `resource`, `is Member`, `in Clp`/`Region`, `==`)
//! and a `when` and/or `unless` condition: a random tree of `&&`, `||`, `!` and
//! `if-then-else` over atoms a real plan meets — the member's status, standing, dates
//! (joined, left, retention offsets), consents, opt-outs and CLP or region; the context's
//! time (against literals near the fixture's election dates, ±1 ms, in `Z`, offset and
//! date-only forms), read count, election, purpose, reason, session and field (by name,
//! class, list or contract); the principal's end date, read limit, teams, campaign and
//! candidate, CLP, region and contract; and arithmetic and `offset` that overflow for some
//! requests and not others. Every policy is well typed by construction: atoms that need a
//! principal kind appear only under a scope naming it, or guarded inline by `principal is
//! K` for one kind per policy, and action tests only for an action the scope admits, so
//! no policy is "impossible" (a warning, which refuses the directory). Strict validation
//! refuses an unguarded optional attribute (`resource.left`, `context.election` without
//! `has`), so the errors here are overflows: an erroring permit grants nothing, an
//! erroring forbid forbids nothing, and both paths must report the same erroring policies.
//!
//! Each set is written into a directory of its own beside the bundled schema and field
//! catalogue (no bundled policies, no suites, no invariants: loading needs neither) and
//! loaded; a set that fails to load is a generator bug and fails the test. The set must
//! compile with no fallback to Cedar. Then, on the fixture's directory rebuilt for that
//! engine, random requests (every principal of the fixture, every action and field, times
//! near the fixture's boundaries, with or without election, session, purpose and reason,
//! read counts around the limits) on random members (the fixture's and generated ones:
//! status, dates, leaving date, standing, consents, opt-outs, CLP; now and then an invalid
//! record) ask every question of both paths ([`every_question`]), and a page of several
//! members asks `field_decisions_page` and `permitted_fields_page` of both. Every answer
//! must be the same, errors included. A failure shrinks (within proptest's shrink limit)
//! and prints the policy text, the page and the requests; the assertion names the request.
//!
//! On every request, the plan of its principal, action and context ([`Engine::plan`])
//! must decide the page's members and the request's own as the engine does.
//!
//! Sets per run: `MEMBERGATE_PROPTEST_CASES / 2000` (default 50, about 8 s in release),
//! each with 1 to 79 requests (40 on average, so that a failing case can shrink).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use jiff::{SignedDuration, Timestamp};
use membergate::{
    Action, Context, Effect, Engine, Member, MemberRef, MemberStatus, PageRequest, PrincipalId,
    PrincipalKind, Request,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use proptest::strategy::Union;
use proptest::test_runner::{Config, TestRunner};

use crate::support::{
    every_question, field_decisions_page, fixture, fixture_directory, ids, plan_agrees,
    policies_dir, proptest_total, CHANNELS,
};

/// Requests asked of each generated policy set, on average.
const REQUESTS: usize = 40;

/// Generated policy sets per run, unless `MEMBERGATE_PROPTEST_CASES` says otherwise.
fn sets() -> u32 {
    proptest_total().map_or(50, |total| (total / 2_000).max(1))
}

// ------------------------------------------------------------------ literals

type Text = BoxedStrategy<String>;

/// A choice among fixed texts.
fn one_of(options: &[&str]) -> Text {
    select(options.iter().map(|s| s.to_string()).collect::<Vec<_>>()).boxed()
}

/// Moments the fixture turns on: election timetables, joining and leaving dates and their
/// retention ends (left + 730 days), role ends, call sessions, contracts.
const ANCHORS: &[&str] = &[
    "1997-04-01T00:00:00Z",
    "2009-09-01T00:00:00Z",
    "2011-09-01T00:00:00Z",
    "2015-03-01T00:00:00Z",
    "2016-01-12T17:00:00Z",
    "2016-08-15T12:00:00Z",
    "2016-09-21T12:00:00Z",
    "2017-02-10T12:00:00Z",
    "2017-11-01T00:00:00Z",
    "2019-02-18T10:00:00Z",
    "2019-06-30T17:00:00Z",
    "2019-11-01T00:00:00Z",
    "2020-01-15T10:00:00Z",
    "2020-01-20T17:00:00Z",
    "2020-01-25T00:00:00Z",
    "2020-02-14T14:00:00Z",
    "2020-03-01T09:00:00Z",
    "2020-03-01T12:00:00Z",
    "2020-03-10T00:00:00Z",
    "2020-04-02T12:00:00Z",
    "2020-06-15T00:00:00Z",
    "2021-01-01T00:00:00Z",
    "2021-05-04T09:00:00Z",
    "2022-06-15T00:00:00Z",
    "2030-01-01T00:00:00Z",
];

/// A time near one of the anchors: on it, a millisecond either side, or days off.
fn moment() -> impl Strategy<Value = Timestamp> {
    (
        select(ANCHORS),
        prop_oneof![
            4 => Just(0i64),
            2 => Just(-1),
            2 => Just(1),
            1 => -86_400_000i64..86_400_000,
            1 => -100_000_000_000i64..100_000_000_000,
        ],
    )
        .prop_map(|(anchor, ms)| {
            let t: Timestamp = anchor.parse().expect("anchor");
            t.checked_add(SignedDuration::from_millis(ms)).unwrap_or(t)
        })
}

/// `t` as Cedar's `datetime` literal: `Z` (with milliseconds when it has any), always
/// with milliseconds, at an offset (the same instant), or its date alone (midnight).
fn datetime_text(t: Timestamp, style: u8) -> String {
    let ms = t.subsec_millisecond();
    let text = match style {
        0 if ms == 0 => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        1 => t.strftime("%Y-%m-%d").to_string(),
        2 | 3 => {
            let (minutes, sign) = if style == 2 {
                (90, "+0130")
            } else {
                (-300, "-0500")
            };
            let local = t
                .checked_add(SignedDuration::from_mins(minutes))
                .expect("a time near the anchors");
            format!("{}.{ms:03}{sign}", local.strftime("%Y-%m-%dT%H:%M:%S"))
        }
        _ => format!("{}.{ms:03}Z", t.strftime("%Y-%m-%dT%H:%M:%S")),
    };
    format!("datetime(\"{text}\")")
}

fn datetime() -> Text {
    (moment(), 0..6u8)
        .prop_map(|(t, style)| datetime_text(t, style))
        .boxed()
}

/// A `duration` literal: ordinary ones, and ones so long that an `offset` by them
/// overflows for every time, or for times from an anchor on.
fn duration() -> Text {
    prop_oneof![
        6 => one_of(&["730d", "1d", "1h", "1ms", "-1ms", "0ms", "-730d", "2h30m", "1d2h3m4s5ms", "-1d", "365d"]),
        1 => Just("106751991167d".to_string()),
        2 => moment().prop_map(|t| format!("{}ms", i64::MAX - t.as_millisecond())),
    ]
    .prop_map(|d| format!("duration(\"{d}\")"))
    .boxed()
}

/// A comparison of datetimes, durations or longs.
fn cmp() -> Text {
    prop_oneof![
        4 => one_of(&["<", "<=", ">", ">="]),
        1 => one_of(&["==", "!="]),
    ]
    .boxed()
}

/// A read count near the fixture's limits (60, 200, 500, 1000, 100000).
fn count() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        0..4u64,
        select(vec![
            59u64, 60, 61, 199, 200, 201, 499, 500, 501, 999, 1000, 1001
        ]),
        Just(100_000),
        Just(1_000_000),
    ]
}

/// A Cedar set of strings.
fn strings(xs: &[&str]) -> String {
    let items: Vec<String> = xs.iter().map(|x| format!("{x:?}")).collect();
    format!("[{}]", items.join(", "))
}

const STATUSES: &[&str] = &[
    "member",
    "registered_supporter",
    "affiliated_supporter",
    "former",
    "expelled",
    "suspended",
];
const CHANNEL_NAMES: &[&str] = &["phone", "email", "post", "sms"];
const PURPOSES: &[&str] = &[
    "equality_monitoring",
    "subject_access",
    "complaint",
    "marketing",
];
const TEAMS: &[&str] = &[
    "membership",
    "compliance",
    "data_protection",
    "regional",
    "data_export",
];
const CLASSES: &[&str] = &[
    "identity",
    "contact",
    "membership",
    "financial",
    "special_category",
    "preferences",
    "minimal_record",
];

/// The field names of `fields.toml`.
fn field_names() -> Vec<String> {
    crate::support::engine()
        .catalogue()
        .iter()
        .map(|(_, f)| f.name.clone())
        .collect()
}

fn fields_set(names: &[String]) -> String {
    let items: Vec<String> = names.iter().map(|f| format!("Field::{f:?}")).collect();
    format!("[{}]", items.join(", "))
}

/// Ids of the fixture's principals of `kind`.
fn principal_ids(kind: PrincipalKind) -> Vec<String> {
    fixture()
        .principal_ids()
        .filter(|p| p.kind == kind)
        .map(|p| p.id)
        .collect()
}

// ------------------------------------------------------------------ atoms

/// Atoms any principal can meet: the member, the context, the principal's common
/// attributes, and overflowing arithmetic.
fn common_atom() -> Text {
    let f = fixture();
    let mut elections = ids(&f.elections);
    elections.push("leader-2024".into());
    let mut members = ids(&f.members);
    members.push("m-fresh".into());
    let atoms: Vec<Text> = vec![
        // The member.
        select(STATUSES)
            .prop_map(|s| format!("resource.status == {s:?}"))
            .boxed(),
        subsequence(STATUSES, 1..=3)
            .prop_map(|ss| format!("{}.contains(resource.status)", strings(&ss)))
            .boxed(),
        Just("resource.in_good_standing".to_string()).boxed(),
        (cmp(), datetime())
            .prop_map(|(op, d)| format!("resource.joined {op} {d}"))
            .boxed(),
        Just("resource has left".to_string()).boxed(),
        (cmp(), datetime())
            .prop_map(|(op, d)| format!("resource has left && resource.left {op} {d}"))
            .boxed(),
        (duration(), cmp())
            .prop_map(|(d, op)| {
                format!("resource has left && resource.left.offset({d}) {op} context.now")
            })
            .boxed(),
        (duration(), cmp())
            .prop_map(|(d, op)| format!("resource.joined.offset({d}) {op} context.now"))
            .boxed(),
        (select(&["consents", "opt_outs"][..]), select(CHANNEL_NAMES))
            .prop_map(|(set, c)| format!("resource.{set}.contains({c:?})"))
            .boxed(),
        (
            select(&["consents", "opt_outs"][..]),
            select(&["containsAny", "containsAll"][..]),
            subsequence(CHANNEL_NAMES, 1..=3),
        )
            .prop_map(|(set, op, cs)| format!("resource.{set}.{op}({})", strings(&cs)))
            .boxed(),
        select(ids(&f.clps))
            .prop_map(|c| format!("resource in Clp::{c:?}"))
            .boxed(),
        select(ids(&f.regions))
            .prop_map(|r| format!("resource in Region::{r:?}"))
            .boxed(),
        select(members)
            .prop_map(|m| format!("resource == Member::{m:?}"))
            .boxed(),
        // The context.
        (cmp(), datetime())
            .prop_map(|(op, d)| format!("context.now {op} {d}"))
            .boxed(),
        (cmp(), count())
            .prop_map(|(op, n)| format!("context.reads_this_hour {op} {n}"))
            .boxed(),
        cmp()
            .prop_map(|op| format!("context.reads_this_hour {op} principal.hourly_read_limit"))
            .boxed(),
        select(elections)
            .prop_map(|e| format!("context has election && context.election == Election::{e:?}"))
            .boxed(),
        (
            cmp(),
            select(&["nominations_close", "freeze_date", "ballot_close"][..]),
        )
            .prop_map(|(op, a)| format!("context has election && context.now {op} context.election.{a}"))
            .boxed(),
        Just("context has election && resource.joined < context.election.freeze_date".to_string())
            .boxed(),
        select(PURPOSES)
            .prop_map(|p| format!("context has purpose && context.purpose == {p:?}"))
            .boxed(),
        subsequence(PURPOSES, 1..=3)
            .prop_map(|ps| format!("context has purpose && {}.contains(context.purpose)", strings(&ps)))
            .boxed(),
        one_of(&[
            r#"context has reason && context.reason != """#,
            "context has reason",
            "context has session && context.session.members.contains(resource)",
            "context has session && context.session.opens <= context.now && context.now < context.session.closes",
            "context has session && context.session has office && resource in context.session.office",
        ]),
        select(ids(&f.call_sessions))
            .prop_map(|s| format!("context has session && context.session == CallSession::{s:?}"))
            .boxed(),
        select(field_names())
            .prop_map(|n| format!("context.field == Field::{n:?}"))
            .boxed(),
        select(CLASSES)
            .prop_map(|c| format!("context.field in FieldClass::{c:?}"))
            .boxed(),
        subsequence(field_names(), 1..=3)
            .prop_map(|fs| format!("context.field in {}", fields_set(&fs)))
            .boxed(),
        (duration(), cmp(), datetime())
            .prop_map(|(d, op, t)| format!("context.now.offset({d}) {op} {t}"))
            .boxed(),
        (duration(), cmp())
            .prop_map(|(d, op)| format!("context.now.offset({d}) {op} context.now"))
            .boxed(),
        (cmp(), duration())
            .prop_map(|(op, d)| format!("context.now.durationSince(resource.joined) {op} {d}"))
            .boxed(),
        (cmp(), 0..9_000i64)
            .prop_map(|(op, n)| format!("context.now.durationSince(resource.joined).toDays() {op} {n}"))
            .boxed(),
        (moment(), cmp(), duration())
            .prop_map(|(t, op, d)| {
                format!("context.now.toDate() == {} || context.now.toTime() {op} {d}", datetime_text(t, 1))
            })
            .boxed(),
        // Arithmetic that overflows for some principals or read counts.
        (
            select(vec![
                1i64,
                2,
                9_223_372_036_854_775,
                92_233_720_368_547_758,
                i64::MAX,
            ]),
            select(&["context.reads_this_hour", "principal.hourly_read_limit"][..]),
            cmp(),
            count(),
        )
            .prop_map(|(m, what, op, n)| format!("{what} * {m} {op} {n}"))
            .boxed(),
        (cmp(), count())
            .prop_map(|(op, n)| format!("context.reads_this_hour + principal.hourly_read_limit {op} {n}"))
            .boxed(),
        Just("(0 - context.reads_this_hour) - 9223372036854775807 < 0".to_string()).boxed(),
        // Any principal's end of role.
        cmp()
            .prop_map(|op| format!("principal has ended_at && principal.ended_at {op} context.now"))
            .boxed(),
        (cmp(), datetime())
            .prop_map(|(op, d)| format!("principal has ended_at && principal.ended_at {op} {d}"))
            .boxed(),
    ];
    Union::new(atoms).boxed()
}

/// Atoms that need the principal to be of `kind`. The second list holds those that
/// evaluate (to false) on any principal, so may stand unguarded even where the scope does
/// not name the kind.
fn kind_atoms(kind: PrincipalKind) -> (Vec<Text>, Vec<Text>) {
    let f = fixture();
    let same = select(principal_ids(kind))
        .prop_map(move |id| format!("principal == {}", PrincipalId::new(kind, id)))
        .boxed();
    let resource_clp = Just("resource in principal.clp".to_string()).boxed();
    match kind {
        PrincipalKind::Staff => (
            vec![
                one_of(&["principal has region && resource in principal.region"]),
                select(ids(&f.regions))
                    .prop_map(|r| format!("principal has region && principal.region == Region::{r:?}"))
                    .boxed(),
            ],
            vec![
                select(TEAMS)
                    .prop_map(|t| format!("principal in Team::{t:?}"))
                    .boxed(),
                same,
            ],
        ),
        PrincipalKind::CampaignStaff => (
            vec![
                select(&["fee_paid", "validly_nominated", "data_agreement_signed"][..])
                    .prop_map(|a| format!("principal.campaign.candidate.{a}"))
                    .boxed(),
                select(&["staff", "agent", "candidate"][..])
                    .prop_map(|r| format!("principal.role == {r:?}"))
                    .boxed(),
                select(ids(&f.campaigns))
                    .prop_map(|c| format!("principal.campaign == Campaign::{c:?}"))
                    .boxed(),
                (
                    cmp(),
                    select(&["nominations_close", "freeze_date", "ballot_close"][..]),
                )
                    .prop_map(|(op, a)| format!("context.now {op} principal.campaign.election.{a}"))
                    .boxed(),
                cmp()
                    .prop_map(|op| format!("resource.joined {op} principal.campaign.election.freeze_date"))
                    .boxed(),
                one_of(&[
                    "context has election && context.election == principal.campaign.election",
                    "principal.campaign has ended_at && principal.campaign.ended_at <= context.now",
                    "context has session && context.session has campaign && context.session.campaign == principal.campaign",
                ]),
            ],
            vec![
                select(ids(&f.campaigns))
                    .prop_map(|c| format!("principal in Campaign::{c:?}"))
                    .boxed(),
                same,
            ],
        ),
        PrincipalKind::Volunteer => (
            vec![one_of(&[
                "context has session && context.session.volunteer == principal && context.session.opens <= context.now",
            ])],
            vec![
                one_of(&["context has session && context.session.volunteer == principal"]),
                same,
            ],
        ),
        PrincipalKind::Officer => (
            vec![
                resource_clp,
                select(&["secretary", "chair"][..])
                    .prop_map(|r| format!("principal.role == {r:?}"))
                    .boxed(),
                select(ids(&f.clps))
                    .prop_map(|c| format!("principal.clp == Clp::{c:?}"))
                    .boxed(),
            ],
            vec![same],
        ),
        PrincipalKind::Representative => (
            vec![
                resource_clp,
                select(ids(&f.clps))
                    .prop_map(|c| format!("principal.clp == Clp::{c:?}"))
                    .boxed(),
            ],
            vec![same],
        ),
        PrincipalKind::Processor => (
            vec![
                one_of(&[
                    "context.field in principal.contract.fields",
                    "principal.contract.statuses.contains(resource.status)",
                ]),
                (cmp(), select(&["starts", "ends"][..]))
                    .prop_map(|(op, a)| format!("context.now {op} principal.contract.{a}"))
                    .boxed(),
                select(field_names())
                    .prop_map(|n| format!("principal.contract.fields.contains(Field::{n:?})"))
                    .boxed(),
            ],
            vec![same],
        ),
    }
}

/// What a policy's conditions may speak of.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// The one principal kind the conditions test: named by the scope (`known`), or
    /// tested inline with `principal is`. One kind per policy: in a request of that kind
    /// every atom is then of type Bool (not `False`), so the policy is never impossible.
    kind: PrincipalKind,
    known: bool,
    /// An action the scope admits; conditions test only it (for the same reason).
    action: Action,
}

fn atom(frame: Frame) -> Text {
    let (needs_kind, any_kind) = kind_atoms(frame.kind);
    let needs_kind = Union::new(needs_kind).boxed();
    let any_kind = Union::new(any_kind).boxed();
    let ty = frame.kind.type_name();
    let kind: Text = if frame.known {
        prop_oneof![needs_kind, any_kind].boxed()
    } else {
        prop_oneof![
            (needs_kind, 0..3u8)
                .prop_map(move |(a, how)| match how {
                    0 => format!("principal is {ty} && ({a})"),
                    1 => format!("!(principal is {ty}) || ({a})"),
                    _ =>
                        format!("if principal is {ty} then ({a}) else context.reads_this_hour > 2"),
                })
                .boxed(),
            any_kind,
        ]
        .boxed()
    };
    let a = frame.action.as_str();
    let contact = a.starts_with("contact_");
    let other = select(Action::ALL.iter().map(|x| x.as_str()).collect::<Vec<_>>());
    let action: Text = (0..4u8, other, common_atom())
        .prop_map(move |(how, b, x)| match how {
            0 => format!("action == Action::{a:?} && ({x})"),
            1 => format!("action != Action::{a:?} || ({x})"),
            2 if contact => format!("action in Action::\"contact\" && ({x})"),
            _ => format!("action in [Action::{a:?}, Action::{b:?}] && ({x})"),
        })
        .boxed();
    prop_oneof![6 => common_atom(), 3 => kind, 1 => action]
        .prop_map(|a| format!("({a})"))
        .boxed()
}

fn condition(frame: Frame) -> Text {
    atom(frame)
        .prop_recursive(3, 6, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} && {b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} || {b})")),
                inner.clone().prop_map(|a| format!("!{a}")),
                (inner.clone(), inner.clone(), inner)
                    .prop_map(|(c, t, e)| format!("(if {c} then {t} else {e})")),
            ]
        })
        .boxed()
}

// ------------------------------------------------------------------ policies

/// A principal scope and the frame it gives: the kind it names, or (scope `principal`)
/// the kind the conditions may test inline.
fn principal_scope() -> BoxedStrategy<(String, PrincipalKind, bool)> {
    let f = fixture();
    let kinds = PrincipalKind::ALL.to_vec();
    prop_oneof![
        3 => select(kinds.clone()).prop_map(|k| ("principal".to_string(), k, false)),
        3 => select(kinds.clone())
            .prop_map(|k| (format!("principal is {}", k.type_name()), k, true)),
        1 => (select(TEAMS), any::<bool>()).prop_map(|(t, is)| {
            let is = if is { " is Staff" } else { "" };
            (format!("principal{is} in Team::{t:?}"), PrincipalKind::Staff, true)
        }),
        1 => (select(ids(&f.campaigns)), any::<bool>()).prop_map(|(c, is)| {
            let is = if is { " is CampaignStaff" } else { "" };
            (format!("principal{is} in Campaign::{c:?}"), PrincipalKind::CampaignStaff, true)
        }),
        1 => select(f.principal_ids().collect::<Vec<_>>())
            .prop_map(|p| (format!("principal == {p}"), p.kind, true)),
    ]
    .boxed()
}

/// An action scope and an action it admits.
fn action_scope() -> BoxedStrategy<(String, Action)> {
    let all = Action::ALL.to_vec();
    let contact = vec![
        Action::ContactPhone,
        Action::ContactEmail,
        Action::ContactPost,
    ];
    prop_oneof![
        3 => select(all.clone()).prop_map(|a| ("action".to_string(), a)),
        3 => select(all.clone())
            .prop_map(|a| (format!("action == Action::{:?}", a.as_str()), a)),
        2 => (subsequence(all.clone(), 1..=3), any::<bool>(), any::<prop::sample::Index>())
            .prop_map(|(listed, group, i)| {
                let mut names: Vec<String> =
                    listed.iter().map(|a| format!("Action::{:?}", a.as_str())).collect();
                if group {
                    names.push("Action::\"contact\"".into());
                }
                (format!("action in [{}]", names.join(", ")), *i.get(&listed))
            }),
        1 => select(contact).prop_map(|a| ("action in Action::\"contact\"".to_string(), a)),
    ]
    .boxed()
}

fn resource_scope() -> Text {
    let f = fixture();
    prop_oneof![
        4 => Just("resource".to_string()),
        2 => Just("resource is Member".to_string()),
        2 => select(ids(&f.clps)).prop_map(|c| format!("resource in Clp::{c:?}")),
        2 => (select(ids(&f.regions)), any::<bool>()).prop_map(|(r, is)| {
            let is = if is { " is Member" } else { "" };
            format!("resource{is} in Region::{r:?}")
        }),
        1 => select(ids(&f.members)).prop_map(|m| format!("resource == Member::{m:?}")),
    ]
    .boxed()
}

/// One policy's text, without its `@id`.
fn policy() -> Text {
    (principal_scope(), action_scope(), resource_scope())
        .prop_flat_map(|((p, kind, known), (a, action), r)| {
            let frame = Frame {
                kind,
                known,
                action,
            };
            (
                Just(format!("({p}, {a}, {r})")),
                prop::bool::weighted(0.4),
                0..8u8,
                prop::option::weighted(0.75, condition(frame)),
                prop::option::weighted(0.3, condition(frame)),
            )
        })
        .prop_map(|(scope, forbid, flag, when, unless)| {
            let mut text = String::new();
            if flag == 0 && !forbid {
                text.push_str("@flag(\"watched\")\n");
            }
            text.push_str(if forbid { "forbid " } else { "permit " });
            text.push_str(&scope);
            if let Some(w) = when {
                text.push_str(&format!("\nwhen {{ {w} }}"));
            }
            if let Some(u) = unless {
                text.push_str(&format!("\nunless {{ {u} }}"));
            }
            text.push(';');
            text
        })
        .boxed()
}

/// A generated policy set: the text of its one `.cedar` file.
#[derive(Clone)]
struct PolicyText(String);

impl fmt::Debug for PolicyText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\n{}\n", self.0)
    }
}

fn policy_set() -> impl Strategy<Value = PolicyText> {
    vec(policy(), 1..=6).prop_map(|ps| {
        let text: Vec<String> = ps
            .iter()
            .enumerate()
            .map(|(i, p)| format!("@id(\"g{i}\")\n{p}\n"))
            .collect();
        PolicyText(text.join("\n"))
    })
}

/// The engine of `policies` alone, beside the bundled schema and field catalogue; `None`
/// for a set Cedar's validator finds impossible (a policy that holds on no valid request,
/// which the generator cannot always foresee: a `when` can establish what an `unless`
/// then tests), which the run rejects and replaces.
fn load(policies: &PolicyText) -> Option<Engine> {
    let dir = tempfile::tempdir().expect("temporary directory");
    for file in ["schema.cedarschema", "fields.toml"] {
        std::fs::copy(policies_dir().join(file), dir.path().join(file)).expect("copy");
    }
    std::fs::write(dir.path().join("generated.cedar"), &policies.0).expect("write");
    match Engine::from_dir(dir.path()) {
        Ok(e) => Some(e),
        Err(e)
            if e.problems()
                .iter()
                .all(|p| p.message().contains("policy is impossible")) =>
        {
            None
        }
        Err(e) => panic!(
            "a generated policy set does not load:\n{}\n{}",
            policies.0,
            e.render()
        ),
    }
}

// ------------------------------------------------------------------ members and requests

/// A member: one of the fixture's as recorded, or generated attributes under a fixture
/// id or a fresh one. If `broken`, now and then a record both paths refuse (a CLP the
/// directory lacks, a former member without a leaving date, a time Cedar cannot hold).
fn member(broken: bool) -> BoxedStrategy<(String, Member)> {
    let f = fixture();
    let recorded: Vec<(String, Member)> = f
        .members
        .iter()
        .filter(|(id, _)| broken || id.as_str() != "m-former-undated")
        .map(|(id, m)| (id.clone(), m.clone()))
        .collect();
    let mut names = ids(&f.members);
    names.push("m-fresh".into());
    let odd = if broken { 0..24u8 } else { 3..24u8 };
    let generated = (
        select(names),
        select(&MemberStatus::ALL[..]),
        moment(),
        moment(),
        any::<bool>(),
        subsequence(&CHANNELS[..], 0..=3),
        subsequence(&CHANNELS[..], 0..=3),
        select(ids(&f.clps)),
        odd,
    )
        .prop_map(
            |(id, status, joined, left, in_good_standing, consents, opt_outs, clp, odd)| {
                let leaves = matches!(status, MemberStatus::Former | MemberStatus::Expelled);
                // Broken: a CLP the directory lacks (odd 0), a time Cedar cannot hold (1),
                // the leaving date of a former member missing or of a member there (2).
                // Valid: a member with a leaving date (3).
                let dated = if odd == 2 {
                    !leaves
                } else {
                    leaves || odd == 3
                };
                let m = Member {
                    status,
                    clp: if odd == 0 { "clp-nowhere".into() } else { clp },
                    joined: if odd == 1 { Timestamp::MIN } else { joined },
                    left: dated.then_some(left),
                    in_good_standing,
                    consents,
                    opt_outs,
                };
                (id, m)
            },
        );
    prop_oneof![select(recorded), generated].boxed()
}

/// One request but for the member.
#[derive(Debug, Clone)]
struct Asked {
    principal: PrincipalId,
    action: Action,
    field: String,
    context: Context,
    /// The member: one of the page's (by index), or its own.
    member: Result<prop::sample::Index, (String, Member)>,
}

fn asked() -> impl Strategy<Value = Asked> {
    let f = fixture();
    let mut fields = field_names();
    fields.push("shoe_size".into());
    let mut elections: Vec<Option<String>> = ids(&f.elections).into_iter().map(Some).collect();
    elections.extend([None, None, None]);
    let elections =
        prop_oneof![30 => select(elections), 1 => Just(Some("leader-2024".to_string()))];
    let mut sessions: Vec<Option<String>> = ids(&f.call_sessions).into_iter().map(Some).collect();
    sessions.extend([None, None, None]);
    (
        (
            select(f.principal_ids().collect::<Vec<_>>()),
            select(&Action::ALL[..]),
            prop_oneof![30 => select(field_names()), 1 => select(fields)],
        ),
        (
            moment(),
            elections,
            select(sessions),
            select(vec![
                None,
                None,
                Some("subject_access"),
                Some("equality_monitoring"),
                Some("complaint"),
                Some("marketing"),
            ]),
            prop_oneof![12 => Just(None), 4 => Just(Some("court order")), 1 => Just(Some(""))],
            prop_oneof![20 => count(), 1 => Just(u64::MAX)],
        ),
        prop_oneof![
            6 => any::<prop::sample::Index>().prop_map(Ok),
            1 => member(true).prop_map(Err),
        ],
    )
        .prop_map(
            |(
                (principal, action, field),
                (now, election, session, purpose, reason, reads),
                member,
            )| Asked {
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
                member,
            },
        )
}

// ------------------------------------------------------------------ the property

/// What the run compared, summed over the sets.
#[derive(Default)]
struct Tally {
    sets: AtomicUsize,
    requests: AtomicUsize,
    decisions: AtomicUsize,
    allowed: AtomicUsize,
    granted: AtomicUsize,
    denied: AtomicUsize,
    refused: AtomicUsize,
    erroring: AtomicUsize,
    /// Members on which a plan and the engine were compared, and of those, members with
    /// a field left to a per-member decision.
    planned: AtomicUsize,
    per_member: AtomicUsize,
}

fn tally() -> &'static Tally {
    static TALLY: OnceLock<Tally> = OnceLock::new();
    TALLY.get_or_init(Tally::default)
}

fn add(counter: &AtomicUsize, n: usize) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Both paths on every request of `asks` against the engine of `policies`: `false` if
/// the set is rejected ([`load`]).
fn check(policies: &PolicyText, page: &[(String, Member)], asks: &[Asked]) -> bool {
    let Some(engine) = load(policies) else {
        return false;
    };
    assert!(
        engine.compiled().fallbacks().is_empty(),
        "falls back to Cedar: {:?}\n{}",
        engine.compiled().fallbacks(),
        policies.0
    );
    let dir = fixture_directory()
        .for_engine(&engine)
        .expect("the fixture's records suit the bundled catalogue");
    let members: Vec<MemberRef> = page
        .iter()
        .map(|(id, attrs)| MemberRef { id, attrs })
        .collect();
    let fields = engine.catalogue().len();
    let t = tally();
    add(&t.sets, 1);
    for ask in asks {
        let member = match &ask.member {
            Ok(i) => members[i.index(members.len())],
            Err((id, attrs)) => MemberRef { id, attrs },
        };
        let req = Request {
            principal: &ask.principal,
            action: ask.action,
            member,
            field: &ask.field,
            context: &ask.context,
        };
        // One field, every field, and the member alone in a page.
        match every_question(&engine, &dir, &req) {
            Ok(d) => {
                add(
                    if d.effect() == Effect::Allow {
                        &t.allowed
                    } else {
                        &t.denied
                    },
                    1,
                );
                add(&t.erroring, usize::from(!d.errors().is_empty()));
            }
            Err(_) => add(&t.refused, 1),
        }
        // The plan, on the page and the member.
        let mut on: Vec<MemberRef> = members.clone();
        on.push(member);
        let p = plan_agrees(
            &engine,
            &dir,
            (&ask.principal, ask.action, &ask.context),
            &on,
        );
        add(&t.planned, p.members);
        add(&t.per_member, p.per_member);
        // The page.
        let req = PageRequest {
            principal: &ask.principal,
            action: ask.action,
            members: &members,
            context: &ask.context,
        };
        let paged = field_decisions_page(&engine, &dir, &req);
        add(&t.requests, 1);
        if let Ok(ds) = &paged {
            add(&t.granted, ds.iter().map(|d| d.granted().len()).sum());
        }
        add(
            &t.decisions,
            1 + fields + paged.map_or(0, |ds| ds.len() * fields),
        );
    }
    true
}

/// The property: generated policy sets, each asked about [`REQUESTS`] random requests on
/// random members and a page of them, decide alike on both paths.
#[test]
fn generated_policy_sets_decide_as_the_reference() {
    let config = Config {
        cases: sets(),
        failure_persistence: None,
        ..Config::default()
    };
    let strategy = (
        policy_set(),
        vec(member(false), 3..=6),
        vec(asked(), 1..2 * REQUESTS),
    );
    let mut runner = TestRunner::new(config);
    let started = std::time::Instant::now();
    let result = runner.run(&strategy, |(policies, page, asks)| {
        if check(&policies, &page, &asks) {
            Ok(())
        } else {
            Err(proptest::test_runner::TestCaseError::reject(
                "an impossible policy",
            ))
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let t = tally();
    let n = |c: &AtomicUsize| c.load(Ordering::Relaxed);
    eprintln!(
        "generated policies: {} sets, {} requests, {} field decisions compared ({} fields \
         granted in pages); requests {} allowed, {} denied, {} with an erroring policy, {} \
         refused; plans compared on {} members ({} with a per-member part); in {:.1?}",
        n(&t.sets),
        n(&t.requests),
        n(&t.decisions),
        n(&t.granted),
        n(&t.allowed),
        n(&t.denied),
        n(&t.erroring),
        n(&t.refused),
        n(&t.planned),
        n(&t.per_member),
        started.elapsed()
    );
    // The generator reaches every kind of answer.
    if sets() >= 20 {
        assert!(n(&t.allowed) > 0 && n(&t.denied) > 0, "both effects occur");
        assert!(n(&t.erroring) > 0, "some policy errors");
        assert!(n(&t.refused) > 0, "some request is refused");
        assert!(n(&t.planned) > 0, "plans are compared");
    }
}
