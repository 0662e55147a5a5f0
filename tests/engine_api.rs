//! The engine's API against the bundled policies, on both decision paths: the engine
//! (compiled) and its oracle `engine.reference()` (Cedar's authorizer) give the same
//! answers to every question. Thread safety, pages against single decisions, faithfulness
//! to plain Cedar, explanations, flags, time and FieldSet here; the two paths compared
//! over the whole bundled sample, and directory upserts, in [`differential`]; on generated
//! policy sets over the bundled schema, in [`generated_policies`].

mod differential;
mod generated_policies;

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use membergate::sample::ids;
use membergate::{
    Action, Context, Decision, Directory, Effect, Engine, Explanation, FieldDecisions, FieldSet,
    MemberRef, MemberRequest, Outcome, PageRequest, PolicyError, PrincipalId, PrincipalKind,
    Reference, Request,
};
use serde_json::json;

use crate::support::{
    authorize, bundled, directory, engine, every_question, explain, field_decisions_page, fixture,
    fixture_directory, member, permitted_fields, policies_dir, principal as p, t, Ask,
};

// ------------------------------------------------------------------ threads

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn engine_is_send_and_sync() {
    assert_send_sync::<Engine>();
    assert_send_sync::<Arc<Engine>>();
    assert_send_sync::<Reference<'static>>();
    assert_send_sync::<Directory>();
    assert_send_sync::<Request<'static>>();
    assert_send_sync::<Decision<'static>>();
    assert_send_sync::<FieldDecisions<'static>>();
    assert_send_sync::<Explanation<'static>>();
    assert_send_sync::<FieldSet>();
}

/// Members of the fixture with well-formed records, of every kind of standing.
const FIXTURE_MEMBERS: [&str; 10] = [
    "m-eligible",
    "m-registered",
    "m-affiliated",
    "m-late",
    "m-arrears",
    "m-former-recent",
    "m-former-2009",
    "m-expelled",
    "m-neighbour",
    "m-other-region",
];

/// Requests over fixture members by a few principals, on a few fields.
fn sample_requests() -> Vec<Ask> {
    let principals = [
        (r#"CampaignStaff::"cs-a""#, Some("leader-2020")),
        (r#"CampaignStaff::"cs-b""#, Some("leader-2020")),
        (r#"Staff::"s-membership""#, None),
        (r#"Officer::"o-secretary""#, None),
    ];
    let mut out = Vec::new();
    for (who, election) in principals {
        for member in FIXTURE_MEMBERS {
            for field in ["name", "phone", "status", "political_views"] {
                let mut ctx = Context::at(t("2020-03-01T12:00:00Z"));
                ctx.election = election.map(str::to_string);
                out.push(Ask::new(
                    fixture(),
                    p(who),
                    Action::Read,
                    member,
                    field,
                    ctx,
                ));
            }
        }
    }
    out
}

/// A decision with owned policy ids, to outlive the engine that gave it.
type Owned = (Effect, Vec<String>, Vec<PolicyError>, Vec<String>);

fn owned(d: &Decision<'_>) -> Owned {
    let strings = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect();
    (
        d.effect(),
        strings(d.policies()),
        d.errors().to_vec(),
        strings(d.flags()),
    )
}

#[test]
fn engine_shared_in_an_arc_decides_the_same_on_every_thread() {
    let engine = Arc::new(Engine::from_dir(policies_dir()).expect("load"));
    let dir = Arc::new(Directory::from_membership(&engine, fixture()).expect("directory"));
    let asks = Arc::new(sample_requests());
    let spawn = || {
        let (engine, dir, asks) = (Arc::clone(&engine), Arc::clone(&dir), Arc::clone(&asks));
        std::thread::spawn(move || {
            asks.iter()
                .map(|a| owned(&engine.authorize(&dir, &a.request()).expect("decided")))
                .collect::<Vec<_>>()
        })
    };
    let (a, b) = (spawn(), spawn());
    let a = a.join().expect("thread a");
    let b = b.join().expect("thread b");
    assert_eq!(a.len(), asks.len());
    assert_eq!(a, b);
    // The shared engine, on its own directory of the same records, and its reference.
    let here: Vec<Owned> = asks
        .iter()
        .map(|a| {
            owned(&authorize(self::engine(), fixture_directory(), &a.request()).expect("decided"))
        })
        .collect();
    assert_eq!(a, here);
    // Not a trivial sample: both effects occur.
    assert!(a.iter().any(|d| d.0 == Effect::Allow) && a.iter().any(|d| d.0 == Effect::Deny));
}

// ------------------------------------------------------------------ pages and fields

/// A page of the bundled sample: its first 200 members (the well-known ones among them).
fn page_200() -> Vec<MemberRef<'static>> {
    let party = bundled();
    let page: Vec<MemberRef> = party
        .members
        .keys()
        .take(200)
        .map(|id| member(party, id))
        .collect();
    assert_eq!(page.len(), 200);
    assert!(page.iter().any(|m| m.id == ids::MEMBER_ELIGIBLE));
    page
}

fn page_equals_per_member(principal: PrincipalId, action: Action, ctx: Context) {
    let (e, dir) = (engine(), directory());
    let page = page_200();
    let req = PageRequest {
        principal: &principal,
        action,
        members: &page,
        context: &ctx,
    };
    // Both paths, field decisions and field sets.
    let decisions = field_decisions_page(e, dir, &req).expect("page decided");
    let sets: Vec<FieldSet> = decisions.iter().map(FieldDecisions::granted).collect();
    assert_eq!(sets.len(), page.len());
    for (member, (set, d)) in page.iter().zip(sets.iter().zip(&decisions)) {
        let one = MemberRequest {
            principal: &principal,
            action,
            member: *member,
            context: &ctx,
        };
        let id = member.id;
        assert_eq!(
            e.permitted_fields(dir, &one),
            Ok(*set),
            "{principal} {action} {id}"
        );
        assert_eq!(
            e.field_decisions(dir, &one).as_ref(),
            Ok(d),
            "{principal} {action} {id}"
        );
    }
    // The page tells members apart: not every set is the same.
    assert!(
        sets.iter().any(|s| *s != sets[0]),
        "{principal}: every member got {:?}",
        e.catalogue().names(sets[0])
    );
    // The order of the page is the order given, on both paths.
    let reversed: Vec<MemberRef> = page.iter().rev().copied().collect();
    let req = PageRequest {
        members: &reversed,
        ..req
    };
    let mut back = e.permitted_fields_page(dir, &req).expect("page decided");
    back.reverse();
    assert_eq!(back, sets);
    let mut back = e
        .reference()
        .permitted_fields_page(dir, &req)
        .expect("page decided");
    back.reverse();
    assert_eq!(back, sets);
}

#[test]
fn page_equals_per_member_for_a_cleared_campaign_during_the_ballot() {
    page_equals_per_member(
        PrincipalId::new(PrincipalKind::CampaignStaff, ids::CS_A_STAFF),
        Action::Read,
        Context::at(t("2020-03-01T12:00:00Z")).election(ids::LEADER_2020),
    );
}

#[test]
fn page_equals_per_member_for_regional_staff() {
    page_equals_per_member(
        PrincipalId::new(PrincipalKind::Staff, ids::S_REGIONAL_LONDON),
        Action::Read,
        Context::at(t("2021-06-01T09:00:00Z")),
    );
}

#[test]
fn page_equals_per_member_for_a_volunteer_in_a_session() {
    page_equals_per_member(
        PrincipalId::new(PrincipalKind::Volunteer, ids::V_PHONEBANK),
        Action::Read,
        Context::at(t("2020-02-20T18:00:00Z")).session(ids::SESSION_A),
    );
}

#[test]
fn page_equals_per_member_for_membership_team_contact_by_email() {
    page_equals_per_member(
        PrincipalId::new(PrincipalKind::Staff, ids::S_MEMBERSHIP),
        Action::ContactEmail,
        Context::at(t("2024-05-01T09:00:00Z")),
    );
}

#[test]
fn permitted_fields_equals_authorize_field_by_field() {
    let (e, dir) = (engine(), directory());
    let combos = [
        (
            PrincipalId::new(PrincipalKind::CampaignStaff, ids::CS_A_STAFF),
            Action::Read,
            Context::at(t("2020-03-01T12:00:00Z")).election(ids::LEADER_2020),
        ),
        (
            PrincipalId::new(PrincipalKind::Staff, ids::S_MEMBERSHIP),
            Action::Read,
            Context::at(t("2024-05-01T09:00:00Z")).purpose("equality_monitoring"),
        ),
        (
            PrincipalId::new(PrincipalKind::Officer, ids::O_SECRETARY_001),
            Action::ContactPhone,
            Context::at(t("2021-06-01T09:00:00Z")),
        ),
        (
            PrincipalId::new(PrincipalKind::Processor, ids::P_MAILING),
            Action::Read,
            Context::at(t("2021-06-01T09:00:00Z")),
        ),
    ];
    let members: Vec<MemberRef> = bundled()
        .members
        .keys()
        .take(8)
        .map(|id| member(bundled(), id))
        .collect();
    let mut seen_some = false;
    for (principal, action, ctx) in &combos {
        for member in &members {
            let req = MemberRequest {
                principal,
                action: *action,
                member: *member,
                context: ctx,
            };
            let set = permitted_fields(e, dir, &req).expect("decided");
            seen_some |= !set.is_empty();
            for (id, info) in e.catalogue().iter() {
                let d = authorize(e, dir, &req.field(&info.name)).expect("decided");
                assert_eq!(
                    set.contains(id),
                    d.is_allowed(),
                    "{principal} {action} {} {}",
                    member.id,
                    info.name
                );
            }
        }
    }
    assert!(seen_some, "some field is permitted somewhere");
}

// ------------------------------------------------------------------ plain Cedar

fn uid(ty: &str, id: &str) -> serde_json::Value {
    json!({ "__entity": { "type": ty, "id": id } })
}

fn dt(s: &str) -> serde_json::Value {
    json!({ "__extn": { "fn": "datetime", "arg": s } })
}

fn entity(
    ty: &str,
    id: &str,
    attrs: serde_json::Value,
    parents: &[(&str, &str)],
) -> serde_json::Value {
    json!({
        "uid": { "type": ty, "id": id },
        "attrs": attrs,
        "parents": parents.iter().map(|(t, i)| json!({ "type": t, "id": i })).collect::<Vec<_>>(),
    })
}

/// The fixture's records that the requests below need, written out by hand as Cedar's
/// JSON entities, and the `Field` entities read from `fields.toml` directly.
fn hand_built_entities() -> cedar_policy::Entities {
    let member =
        |id: &str, clp: &str, status: &str, joined: &str, consents: &[&str], opt_outs: &[&str]| {
            entity(
                "Member",
                id,
                json!({
                    "status": status,
                    "joined": dt(joined),
                    "in_good_standing": true,
                    "consents": consents,
                    "opt_outs": opt_outs,
                }),
                &[("Clp", clp)],
            )
        };
    let all = ["phone", "email", "post"];
    let mut list = vec![
        entity("Region", "london", json!({}), &[]),
        entity("Region", "north-west", json!({}), &[]),
        entity("Clp", "islington-north", json!({}), &[("Region", "london")]),
        entity("Clp", "hackney-south", json!({}), &[("Region", "london")]),
        entity(
            "Clp",
            "manchester-central",
            json!({}),
            &[("Region", "north-west")],
        ),
        entity(
            "Election",
            "leader-2020",
            json!({
                "nominations_close": dt("2020-02-14T14:00:00Z"),
                "freeze_date": dt("2020-01-20T17:00:00Z"),
                "ballot_close": dt("2020-04-02T12:00:00Z"),
            }),
            &[],
        ),
        entity(
            "Candidate",
            "cand-cleared",
            json!({ "validly_nominated": true, "fee_paid": true, "data_agreement_signed": true }),
            &[],
        ),
        entity(
            "Candidate",
            "cand-fee-unpaid",
            json!({ "validly_nominated": true, "fee_paid": false, "data_agreement_signed": true }),
            &[],
        ),
        entity(
            "Campaign",
            "camp-a",
            json!({ "election": uid("Election", "leader-2020"), "candidate": uid("Candidate", "cand-cleared") }),
            &[],
        ),
        entity(
            "Campaign",
            "camp-b",
            json!({ "election": uid("Election", "leader-2020"), "candidate": uid("Candidate", "cand-fee-unpaid") }),
            &[],
        ),
        entity(
            "CampaignStaff",
            "cs-a",
            json!({ "campaign": uid("Campaign", "camp-a"), "role": "staff", "hourly_read_limit": 500 }),
            &[("Campaign", "camp-a")],
        ),
        entity(
            "CampaignStaff",
            "cs-a-left",
            json!({
                "campaign": uid("Campaign", "camp-a"),
                "role": "staff",
                "ended_at": dt("2020-03-01T00:00:00Z"),
                "hourly_read_limit": 500,
            }),
            &[("Campaign", "camp-a")],
        ),
        entity(
            "CampaignStaff",
            "cs-b",
            json!({ "campaign": uid("Campaign", "camp-b"), "role": "agent", "hourly_read_limit": 500 }),
            &[("Campaign", "camp-b")],
        ),
        entity(
            "Staff",
            "s-membership",
            json!({ "hourly_read_limit": 1000 }),
            &[("Team", "membership")],
        ),
        entity(
            "Staff",
            "s-dpo",
            json!({ "hourly_read_limit": 1000 }),
            &[("Team", "data_protection")],
        ),
        entity(
            "Staff",
            "s-regional",
            json!({ "region": uid("Region", "london"), "hourly_read_limit": 1000 }),
            &[("Team", "regional")],
        ),
        entity(
            "Officer",
            "o-secretary",
            json!({ "clp": uid("Clp", "islington-north"), "role": "secretary", "hourly_read_limit": 200 }),
            &[],
        ),
        member(
            "m-eligible",
            "islington-north",
            "member",
            "2015-03-01T00:00:00Z",
            &all,
            &[],
        ),
        member(
            "m-late",
            "islington-north",
            "member",
            "2020-01-25T00:00:00Z",
            &all,
            &[],
        ),
        member(
            "m-no-email",
            "islington-north",
            "member",
            "2012-01-10T00:00:00Z",
            &all,
            &["email"],
        ),
        member(
            "m-neighbour",
            "hackney-south",
            "member",
            "2012-05-01T00:00:00Z",
            &all,
            &[],
        ),
        member(
            "m-other-region",
            "manchester-central",
            "member",
            "2014-09-01T00:00:00Z",
            &all,
            &[],
        ),
    ];
    let catalogue: toml::Value = toml::from_str(
        &std::fs::read_to_string(policies_dir().join("fields.toml")).expect("read catalogue"),
    )
    .expect("catalogue parses");
    for field in catalogue["field"].as_array().expect("fields") {
        let name = field["name"].as_str().expect("name");
        let class = field["class"].as_str().expect("class");
        let mut parents = vec![("FieldClass", class)];
        if field.get("minimal").and_then(toml::Value::as_bool) == Some(true) {
            parents.push(("FieldClass", "minimal_record"));
        }
        list.push(entity("Field", name, json!({}), &parents));
    }
    cedar_policy::Entities::from_json_value(json!(list), Some(engine().schema()))
        .expect("hand-built entities fit the schema")
}

fn cedar_context(ask: &Ask) -> serde_json::Value {
    let mut ctx = json!({
        "now": dt(&ask.context.now.to_string()),
        "field": uid("Field", &ask.field),
        "reads_this_hour": ask.context.reads_this_hour,
    });
    if let Some(e) = &ask.context.election {
        ctx["election"] = uid("Election", e);
    }
    if let Some(r) = &ask.context.reason {
        ctx["reason"] = json!(r);
    }
    if let Some(p) = &ask.context.purpose {
        ctx["purpose"] = json!(p);
    }
    ctx
}

#[test]
fn decisions_equal_plain_cedar_on_hand_built_entities() {
    let e = engine();
    let entities = hand_built_entities();
    let ballot = || Context::at(t("2020-03-01T12:00:00Z")).election("leader-2020");
    let later = || Context::at(t("2021-06-01T09:00:00Z"));
    let ask = |principal, action, member, field, ctx| {
        Ask::new(fixture(), p(principal), action, member, field, ctx)
    };
    let asks = [
        ask(
            r#"CampaignStaff::"cs-a""#,
            Action::Read,
            "m-eligible",
            "phone",
            ballot(),
        ),
        ask(
            r#"CampaignStaff::"cs-a""#,
            Action::Read,
            "m-eligible",
            "political_views",
            ballot(),
        ),
        ask(
            r#"CampaignStaff::"cs-a""#,
            Action::Read,
            "m-late",
            "phone",
            ballot(),
        ),
        ask(
            r#"CampaignStaff::"cs-a""#,
            Action::Export,
            "m-eligible",
            "name",
            ballot(),
        ),
        ask(
            r#"CampaignStaff::"cs-a""#,
            Action::Read,
            "m-eligible",
            "phone",
            Context::at(t("2020-02-14T13:59:59.999Z")).election("leader-2020"),
        ),
        ask(
            r#"CampaignStaff::"cs-a-left""#,
            Action::Read,
            "m-eligible",
            "phone",
            ballot(),
        ),
        ask(
            r#"CampaignStaff::"cs-b""#,
            Action::Read,
            "m-eligible",
            "phone",
            ballot(),
        ),
        ask(
            r#"Officer::"o-secretary""#,
            Action::Read,
            "m-eligible",
            "status",
            later(),
        ),
        ask(
            r#"Officer::"o-secretary""#,
            Action::Read,
            "m-neighbour",
            "status",
            later(),
        ),
        ask(
            r#"Staff::"s-regional""#,
            Action::Read,
            "m-neighbour",
            "phone",
            later(),
        ),
        ask(
            r#"Staff::"s-regional""#,
            Action::Read,
            "m-other-region",
            "phone",
            later(),
        ),
        ask(
            r#"Staff::"s-dpo""#,
            Action::Read,
            "m-eligible",
            "political_views",
            later().reason("complaint 2021/4"),
        ),
        ask(
            r#"Staff::"s-dpo""#,
            Action::Read,
            "m-eligible",
            "political_views",
            later().reason("complaint 2021/4").reads_this_hour(1000),
        ),
        ask(
            r#"Staff::"s-membership""#,
            Action::Read,
            "m-eligible",
            "ethnicity",
            later().purpose("equality_monitoring"),
        ),
        ask(
            r#"Staff::"s-membership""#,
            Action::Read,
            "m-eligible",
            "ethnicity",
            later(),
        ),
        ask(
            r#"Staff::"s-membership""#,
            Action::ContactEmail,
            "m-eligible",
            "email",
            later(),
        ),
        ask(
            r#"Staff::"s-membership""#,
            Action::ContactEmail,
            "m-no-email",
            "email",
            later(),
        ),
        ask(
            r#"Staff::"s-membership""#,
            Action::ContactEmail,
            "m-eligible",
            "phone",
            later(),
        ),
    ];
    let authorizer = cedar_policy::Authorizer::new();
    let mut effects = BTreeSet::new();
    for a in &asks {
        let action = cedar_policy::EntityUid::from_str(&format!("Action::\"{}\"", a.action))
            .expect("action uid");
        let context =
            cedar_policy::Context::from_json_value(cedar_context(a), Some((e.schema(), &action)))
                .expect("context fits the schema");
        let request = cedar_policy::Request::new(
            cedar_policy::EntityUid::from_str(&a.principal.to_string()).expect("principal uid"),
            action,
            cedar_policy::EntityUid::from_str(&format!("Member::\"{}\"", a.member))
                .expect("member uid"),
            context,
            Some(e.schema()),
        )
        .expect("request fits the schema");
        let response = authorizer.is_authorized(&request, e.policies(), &entities);
        assert_eq!(response.diagnostics().errors().count(), 0);
        let cedar_effect = match response.decision() {
            cedar_policy::Decision::Allow => Effect::Allow,
            cedar_policy::Decision::Deny => Effect::Deny,
        };
        let cedar_reasons: BTreeSet<String> = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();

        // The engine, and its reference, on the directory of the fixture.
        let req = a.request();
        let d = authorize(e, fixture_directory(), &req).expect("decided");
        let ours: BTreeSet<String> = d.policies().iter().map(|p| p.to_string()).collect();
        assert_eq!(d.effect(), cedar_effect, "{req:?}");
        assert_eq!(ours, cedar_reasons, "{req:?}");
        assert!(d.errors().is_empty());
        effects.insert((d.effect() == Effect::Allow, ours.is_empty()));
    }
    // Allows, forbids and default denies all occur.
    assert_eq!(
        effects,
        BTreeSet::from([(true, false), (false, false), (false, true)])
    );
}

// ------------------------------------------------------------------ explain

#[test]
fn explain_a_default_deny() {
    let e = engine();
    // Compliance may update preferences only: updating a phone number is denied by default.
    let ask = Ask::new(
        fixture(),
        p(r#"Staff::"s-compliance""#),
        Action::Update,
        "m-eligible",
        "phone",
        Context::at(t("2021-06-01T09:00:00Z")),
    );
    let req = ask.request();
    // The engine's account, equal to the reference's.
    let why = explain(e, fixture_directory(), &req).expect("explained");
    assert_eq!(
        why.decision,
        authorize(e, fixture_directory(), &req).expect("decided")
    );
    assert_eq!(why.decision.effect(), Effect::Deny);
    assert!(why.decision.policies().is_empty());
    assert!(why
        .policies
        .iter()
        .all(|tr| tr.outcome == Outcome::ConditionFalse));
    let listed: BTreeSet<&str> = why.policies.iter().map(|tr| tr.id.as_str()).collect();
    // In scope, condition false: a compliance permit on update, and guardrails.
    for id in ["compliance-record-objection", "role-ended"] {
        assert!(listed.contains(id), "{id} not in {listed:?}");
    }
    // Out of scope (another principal type, team or action): counted, not listed.
    for id in [
        "campaign-read-contact",
        "membership-team-update",
        "officer-own-clp",
        "compliance-read",
        "dpo-break-glass",
    ] {
        assert!(!listed.contains(id), "{id} is out of scope");
    }
    let total = e.policy_ids().count();
    assert_eq!(why.out_of_scope + why.policies.len(), total);
    assert!(why.out_of_scope > 0);
    assert_eq!(
        (why.member.as_str(), why.field.as_str(), why.at),
        ("m-eligible", "phone", t("2021-06-01T09:00:00Z"))
    );
    assert_eq!(
        (&why.principal, why.action),
        (&ask.principal, Action::Update)
    );
    // Each trace names where its policy is.
    for tr in &why.policies {
        let src = e.policy_source(&tr.id).expect("source");
        assert_eq!((&tr.file, tr.line), (&src.file, src.line), "{}", tr.id);
        let policy = e
            .policies()
            .policy(&cedar_policy::PolicyId::new(&tr.id))
            .expect("policy");
        let effect = match policy.effect() {
            cedar_policy::Effect::Permit => Effect::Allow,
            cedar_policy::Effect::Forbid => Effect::Deny,
        };
        assert_eq!(tr.effect, effect, "{}", tr.id);
    }
    let text = why.to_string();
    assert!(text.contains("DENY"), "{text}");
    assert!(text.contains("denied by default"), "{text}");
    assert!(text.contains("compliance-record-objection"), "{text}");
    assert!(text.contains("role-ended"), "{text}");
    assert!(!text.contains("campaign-read-contact"), "{text}");
    assert!(
        text.contains(&format!("{} other policies do not apply", why.out_of_scope)),
        "{text}"
    );
}

#[test]
fn explain_a_forbid_names_it_and_the_overridden_permit() {
    let e = engine();
    // Campaign B has not paid the fee: its permit holds, the forbid overrides it.
    let ask = Ask::new(
        fixture(),
        p(r#"CampaignStaff::"cs-b""#),
        Action::Read,
        "m-eligible",
        "phone",
        Context::at(t("2020-03-01T12:00:00Z")).election("leader-2020"),
    );
    let req = ask.request();
    let why = explain(e, fixture_directory(), &req).expect("explained");
    assert_eq!(
        why.decision,
        authorize(e, fixture_directory(), &req).expect("decided")
    );
    assert_eq!(why.decision.policies(), ["campaign-candidate-not-cleared"]);
    let outcome = |id: &str| {
        why.policies
            .iter()
            .find(|tr| tr.id == id)
            .map(|tr| (tr.effect, tr.outcome.clone()))
    };
    assert_eq!(
        outcome("campaign-candidate-not-cleared"),
        Some((Effect::Deny, Outcome::Determining))
    );
    assert_eq!(
        outcome("campaign-read-contact"),
        Some((Effect::Allow, Outcome::Overridden))
    );
    assert_eq!(
        outcome("campaign-outside-contest"),
        Some((Effect::Deny, Outcome::ConditionFalse))
    );
    assert_eq!(outcome("officer-own-clp"), None);
    let determining: Vec<&str> = why
        .policies
        .iter()
        .filter(|tr| tr.outcome == Outcome::Determining)
        .map(|tr| tr.id.as_str())
        .collect();
    assert_eq!(determining, ["campaign-candidate-not-cleared"]);
    let rule = why
        .policies
        .iter()
        .find(|tr| tr.id == "campaign-candidate-not-cleared")
        .and_then(|tr| tr.rule.clone());
    assert_eq!(rule.as_deref(), Some("3"));

    let text = why.to_string();
    assert!(text.contains("DENY"), "{text}");
    assert!(!text.contains("denied by default"), "{text}");
    let decided = text.find("decided by").expect("decided section");
    let overridden = text
        .find("overridden by a forbid")
        .expect("overridden section");
    let forbid = text
        .find("forbid campaign-candidate-not-cleared")
        .expect("forbid listed");
    let permit = text
        .find("permit campaign-read-contact")
        .expect("permit listed");
    assert!(
        decided < forbid && forbid < overridden && overridden < permit,
        "{text}"
    );
}

#[test]
fn explain_an_allow_lists_the_permit_as_deciding() {
    let e = engine();
    let ask = Ask::new(
        fixture(),
        p(r#"CampaignStaff::"cs-a""#),
        Action::Read,
        "m-eligible",
        "phone",
        Context::at(t("2020-03-01T12:00:00Z")).election("leader-2020"),
    );
    let why = explain(e, fixture_directory(), &ask.request()).expect("explained");
    assert!(why.decision.is_allowed());
    let determining: Vec<(&str, Effect)> = why
        .policies
        .iter()
        .filter(|tr| tr.outcome == Outcome::Determining)
        .map(|tr| (tr.id.as_str(), tr.effect))
        .collect();
    assert_eq!(determining, [("campaign-read-contact", Effect::Allow)]);
    assert!(why.to_string().contains("ALLOW"));
}

// ------------------------------------------------------------------ flags

#[test]
fn break_glass_decisions_are_flagged_and_no_others() {
    let (e, dir) = (engine(), fixture_directory());
    let dpo = p(r#"Staff::"s-dpo""#);
    let glass = Context::at(t("2021-06-01T09:00:00Z")).reason("complaint 2021/4");
    let eligible = member(fixture(), "m-eligible");
    let asked = MemberRequest {
        principal: &dpo,
        action: Action::Read,
        member: eligible,
        context: &glass,
    };
    let req = asked.field("political_views");
    let d = authorize(e, dir, &req).expect("decided");
    assert!(d.is_allowed());
    assert_eq!(d.policies(), ["dpo-break-glass"]);
    assert_eq!(d.flags(), ["break_glass"]);
    let why = explain(e, dir, &req).expect("explained");
    assert!(why.to_string().contains("flagged: break_glass"), "{why}");
    // Every field the break-glass permit opens is flagged.
    for (_, info) in e.catalogue().iter() {
        let d = authorize(e, dir, &asked.field(&info.name)).expect("decided");
        assert!(d.is_allowed(), "{}", info.name);
        assert_eq!(d.flags(), ["break_glass"], "{}", info.name);
    }
    // Without a reason, nothing is opened and nothing is flagged.
    let plain_ctx = Context::at(t("2021-06-01T09:00:00Z"));
    let plain = MemberRequest {
        context: &plain_ctx,
        ..asked
    };
    let d = authorize(e, dir, &plain.field("political_views")).expect("decided");
    assert!(!d.is_allowed());
    assert!(d.flags().is_empty());
    // The same on the bundled sample.
    let dpo = PrincipalId::new(PrincipalKind::Staff, ids::S_DPO);
    let complaint = Context::at(t("2024-05-01T09:00:00Z")).reason("a subject access complaint");
    let req = Request {
        principal: &dpo,
        action: Action::Read,
        member: member(bundled(), ids::MEMBER_ELIGIBLE),
        field: "political_views",
        context: &complaint,
    };
    let d = every_question(e, directory(), &req).expect("decided");
    assert_eq!(d.flags(), ["break_glass"]);

    // A sample of other decisions: every principal of the fixture, some members, fields,
    // actions and contexts. None is flagged; both effects occur.
    let principals: Vec<PrincipalId> = fixture().principal_ids().collect();
    assert!(principals.len() > 20, "{} principals", principals.len());
    let contexts = [
        Context::at(t("2020-03-01T12:00:00Z"))
            .election("leader-2020")
            .session("session-a"),
        Context::at(t("2021-06-01T09:00:00Z")).purpose("subject_access"),
    ];
    let (mut allowed, mut denied) = (0, 0);
    for principal in &principals {
        for id in ["m-eligible", "m-former-2009", "m-neighbour"] {
            for field in [
                "name",
                "phone",
                "status",
                "payment_details",
                "political_views",
            ] {
                for (action, ctx) in [Action::Read, Action::Update, Action::Export]
                    .into_iter()
                    .zip(contexts.iter().cycle())
                {
                    let req = Request {
                        principal,
                        action,
                        member: member(fixture(), id),
                        field,
                        context: ctx,
                    };
                    let d = authorize(e, dir, &req).expect("decided");
                    assert!(d.flags().is_empty(), "{req:?} flagged {:?}", d.flags());
                    if d.is_allowed() {
                        allowed += 1;
                    } else {
                        denied += 1;
                    }
                }
            }
        }
    }
    assert!(
        allowed > 0 && denied > 0,
        "{allowed} allowed, {denied} denied"
    );
}

// ------------------------------------------------------------------ time

#[test]
fn time_is_what_the_caller_passes() {
    let e = engine();
    let election = &fixture().elections["leader-2020"];
    let staffer = p(r#"CampaignStaff::"cs-a""#);
    let ask = |now: Timestamp| {
        let ctx = Context::at(now).election("leader-2020");
        let req = Request {
            principal: &staffer,
            action: Action::Read,
            member: member(fixture(), "m-eligible"),
            field: "phone",
            context: &ctx,
        };
        authorize(e, fixture_directory(), &req).expect("decided")
    };
    let ms = SignedDuration::from_millis(1);
    let open = election.nominations_close;
    let close = election.ballot_close;

    let before = ask(open.checked_sub(ms).expect("time"));
    assert!(!before.is_allowed());
    assert_eq!(before.policies(), ["campaign-outside-contest"]);
    let at_open = ask(open);
    assert!(at_open.is_allowed());
    assert_eq!(at_open.policies(), ["campaign-read-contact"]);
    // Cedar keeps milliseconds: a nanosecond before is still before.
    let just_before = ask(open
        .checked_sub(SignedDuration::from_nanos(1))
        .expect("time"));
    assert!(!just_before.is_allowed());

    assert!(ask(close.checked_sub(ms).expect("time")).is_allowed());
    assert!(!ask(close).is_allowed());
    // The ballot closed years before this test runs: a request dated during the ballot is
    // still allowed, so nothing reads the clock. And the same request gives the same answer.
    assert!(Timestamp::now() > close);
    assert_eq!(ask(open), at_open);
}

// ------------------------------------------------------------------ FieldSet

#[test]
fn field_set_operations() {
    let cat = engine().catalogue();
    let id = |n: &str| cat.id(n).unwrap_or_else(|| panic!("no field {n}"));
    let (name, phone, views) = (id("name"), id("phone"), id("political_views"));

    assert!(FieldSet::EMPTY.is_empty());
    assert_eq!(FieldSet::EMPTY.len(), 0);
    assert_eq!(FieldSet::default(), FieldSet::EMPTY);

    let a = FieldSet::EMPTY.with(views).with(name).with(name);
    assert_eq!(a.len(), 2);
    assert!(a.contains(name) && a.contains(views) && !a.contains(phone));
    assert_eq!(a.bits(), (1 << name.index()) | (1 << views.index()));
    // Iteration and names go in catalogue order, whatever the order of insertion.
    assert_eq!(a.iter().collect::<Vec<_>>(), [name, views]);
    assert_eq!(cat.names(a), ["name", "political_views"]);

    let b: FieldSet = [phone, views].into_iter().collect();
    assert_eq!(cat.names(a.intersection(b)), ["political_views"]);
    assert_eq!(cat.names(a.difference(b)), ["name"]);
    assert_eq!(cat.names(b.difference(a)), ["phone"]);
    assert!(a.difference(a).is_empty());
    assert_eq!(
        format!("{a:?}"),
        format!("{{{}, {}}}", name.index(), views.index())
    );

    let all = cat.all();
    assert_eq!(all.len(), cat.len());
    assert_eq!(all.bits(), (1u64 << cat.len()) - 1);
    assert_eq!(all.intersection(a), a);
    let names: Vec<&str> = cat.iter().map(|(_, f)| f.name.as_str()).collect();
    assert_eq!(cat.names(all), names);
    assert_eq!(names.len(), cat.len());
    // Ids and names agree, in catalogue order.
    for (i, (fid, info)) in cat.iter().enumerate() {
        assert_eq!(fid.index(), i);
        assert_eq!(cat.id(&info.name), Some(fid));
        assert_eq!(
            cat.get(fid).map(|f| f.name.as_str()),
            Some(info.name.as_str())
        );
    }
    assert_eq!(cat.id("shoe_size"), None);
    assert_eq!(cat.id("contact"), None, "a class is not a field");
    // The catalogue's order is the file's.
    let file = std::fs::read_to_string(policies_dir().join("fields.toml")).expect("read");
    let in_file: Vec<&str> = file
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .collect();
    assert_eq!(names, in_file);
}

/// The reference builds each request's entities without asking Cedar to validate them
/// against the schema again; this checks that what it builds does conform, for every
/// principal of the bundled sample, with every optional part of the context present.
#[test]
fn the_entities_the_engine_builds_conform_to_the_schema() {
    let party = bundled();
    let principals: Vec<PrincipalId> = party.principal_ids().collect();
    let members: Vec<MemberRef> = party
        .members
        .keys()
        .step_by(97)
        .map(|id| member(party, id))
        .collect();
    let ctx = Context::at(t("2020-03-01T12:00:00Z"))
        .election(ids::LEADER_2020)
        .session(ids::SESSION_A)
        .purpose("complaint")
        .reason("audit of the call logs");
    let schema = engine().schema();
    let mut checked = 0;
    for (i, principal) in principals.iter().enumerate() {
        let req = Request {
            principal,
            action: Action::Read,
            member: members[i % members.len()],
            field: "phone",
            context: &ctx,
        };
        let (_, entities) = engine()
            .reference()
            .cedar_inputs(directory(), &req)
            .expect("inputs");
        // Cedar adds the schema's action entities itself when validating.
        let records = entities
            .iter()
            .filter(|e| e.uid().type_name().to_string() != "Action")
            .cloned();
        cedar_policy::Entities::from_entities(records, Some(schema))
            .unwrap_or_else(|e| panic!("entities for {principal} do not conform: {e}"));
        checked += 1;
    }
    assert!(checked > 100, "only {checked} principals checked");
}

#[test]
fn the_version_is_the_content_of_the_policy_files() {
    use crate::support::PolicyCopy;
    let bundled = Engine::from_dir("policies").expect("loads");
    // The same files elsewhere: the same version.
    let copy = PolicyCopy::new();
    let same = Engine::from_dir(copy.path()).expect("loads");
    assert_eq!(same.version(), bundled.version());
    // Files that neither decide nor gate (the test suites) do not change it.
    std::fs::write(copy.file("tests/extra.toml"), "").expect("write");
    assert_eq!(
        Engine::from_dir(copy.path()).expect("loads").version(),
        bundled.version()
    );
    // Any change to a policy, the schema, the catalogue or the invariants (which gate a
    // reload) does.
    let mut seen = vec![bundled.version().clone()];
    for (file, addition) in [
        ("staff.cedar", "\n// a comment\n"),
        ("schema.cedarschema", "\n// a comment\n"),
        ("fields.toml", "\n# a comment\n"),
        ("invariants.toml", "\n# a comment\n"),
    ] {
        let path = copy.file(file);
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::write(&path, format!("{text}{addition}")).expect("write");
        let version = Engine::from_dir(copy.path())
            .expect("loads")
            .version()
            .clone();
        assert!(
            !seen.contains(&version),
            "{file}: the version did not change"
        );
        assert_eq!(version.short().len(), 12);
        seen.push(version);
    }
}
