//! The engine's compiled path (`Engine::store`, `authorize_in`, `permitted_fields_in`,
//! `permitted_fields_page_in`, `field_decisions_in`, `field_decisions_page_in`) against its
//! reference path on the same records: the same decisions (effect, policies, errors,
//! flags), the same field sets and deciding policies per field, the same errors, and
//! updates through the store seen by the next decision.

use std::path::Path;

use jiff::{SignedDuration, Timestamp};
use membergate::sample::{self, ids};
use membergate::{
    Action, Context, Engine, EntityStore, FieldDecisions, FieldSet, MemberStatus, Membership,
    PrincipalId, PrincipalKind, PrincipalRecord, Request, RequestError,
};

use crate::support::t as ts;

fn engine() -> Engine {
    Engine::from_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"))
        .unwrap_or_else(|e| panic!("{}", e.render()))
}

fn principals(party: &Membership) -> Vec<(PrincipalId, u32)> {
    let mut out = Vec::new();
    for (id, r) in &party.staff {
        out.push((
            PrincipalId::new(PrincipalKind::Staff, id),
            r.hourly_read_limit,
        ));
    }
    for (id, r) in &party.campaign_staff {
        out.push((
            PrincipalId::new(PrincipalKind::CampaignStaff, id),
            r.hourly_read_limit,
        ));
    }
    for (id, r) in &party.volunteers {
        out.push((
            PrincipalId::new(PrincipalKind::Volunteer, id),
            r.hourly_read_limit,
        ));
    }
    for (id, r) in &party.officers {
        out.push((
            PrincipalId::new(PrincipalKind::Officer, id),
            r.hourly_read_limit,
        ));
    }
    for (id, r) in &party.representatives {
        out.push((
            PrincipalId::new(PrincipalKind::Representative, id),
            r.hourly_read_limit,
        ));
    }
    for (id, r) in &party.processors {
        out.push((
            PrincipalId::new(PrincipalKind::Processor, id),
            r.hourly_read_limit,
        ));
    }
    out
}

/// Special members, members of the call sessions, and a spread of the rest.
fn members(party: &Membership) -> Vec<String> {
    let mut out: Vec<String> = [
        ids::MEMBER_ELIGIBLE,
        ids::MEMBER_OTHER_CLP,
        ids::MEMBER_LEFT_2009,
        ids::MEMBER_LEFT_2023,
        ids::MEMBER_JOINED_AFTER_FREEZE,
        ids::MEMBER_EMAIL_OPT_OUT,
    ]
    .map(String::from)
    .to_vec();
    for s in [ids::SESSION_A, ids::SESSION_OFFICE_LONDON] {
        out.extend(
            party.call_sessions[s]
                .members
                .iter()
                .skip(1)
                .take(1)
                .cloned(),
        );
    }
    let mut statuses = std::collections::HashSet::new();
    for (id, m) in party.members.iter().step_by(5_003) {
        out.push(id.clone());
        statuses.insert(m.status);
    }
    // One of each status.
    for (id, m) in &party.members {
        if statuses.insert(m.status) {
            out.push(id.clone());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Contexts across the 2020 election's phases, the sessions, purposes, reasons, read
/// counts around `limit` and the retention boundary of the member who left in 2023.
fn contexts(party: &Membership, limit: u32) -> Vec<Context> {
    let left_2023 = party.members[ids::MEMBER_LEFT_2023].left.unwrap();
    let retention = left_2023 + SignedDuration::from_hours(730 * 24);
    let e = &party.elections[ids::LEADER_2020];
    let at = |t: Timestamp| Context::at(t);
    let ms = SignedDuration::from_millis(1);
    let limit = u64::from(limit);
    vec![
        at(ts("2019-02-19T09:00:00Z")),
        at(e.nominations_close - ms).election(ids::LEADER_2020),
        at(e.nominations_close).election(ids::LEADER_2020),
        at(ts("2020-02-20T18:00:00Z"))
            .election(ids::LEADER_2020)
            .session(ids::SESSION_A),
        at(ts("2020-02-20T18:00:00Z")).session(ids::SESSION_A),
        at(ts("2020-03-01T12:00:00Z"))
            .election(ids::LEADER_2016)
            .reads_this_hour(limit.saturating_sub(1)),
        at(ts("2020-03-01T12:00:00Z"))
            .election(ids::LEADER_2020)
            .reads_this_hour(limit),
        at(e.ballot_close - ms).election(ids::LEADER_2020),
        at(e.ballot_close).election(ids::LEADER_2020),
        at(ts("2021-04-10T12:00:00Z")).session(ids::SESSION_OFFICE_LONDON),
        at(ts("2024-05-01T09:00:00Z")).purpose("equality_monitoring"),
        at(ts("2024-05-01T09:00:00Z")).purpose("subject_access"),
        at(ts("2024-05-01T09:00:00Z"))
            .purpose("marketing")
            .reason(""),
        at(retention - ms).reason("a complaint to the regulator"),
        at(retention).purpose("complaint"),
        at(retention + ms).reads_this_hour(limit + 1),
    ]
}

/// Compares both paths for every principal, action and context on `members`.
fn compare_all(
    engine: &Engine,
    party: &Membership,
    store: &EntityStore,
    members: &[String],
) -> usize {
    let fields: Vec<String> = engine
        .catalogue()
        .iter()
        .map(|(_, f)| f.name.clone())
        .collect();
    let page: Vec<&str> = members.iter().map(String::as_str).collect();
    let principals = principals(party);
    let chunks: Vec<_> = principals.chunks(principals.len().div_ceil(2)).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let (fields, page) = (&fields, &page);
                s.spawn(move || {
                    let mut n = 0usize;
                    for (pi, (p, limit)) in chunk.iter().enumerate() {
                        // Two of the contexts per principal, rotating, so that every
                        // context meets principals of every kind.
                        let all = contexts(party, *limit);
                        let picked = (0..2).map(|k| (pi * 5 + k * 8) % all.len());
                        for (ci, ctx) in picked.map(|i| (i, &all[i])) {
                            for (ai, action) in Action::ALL.into_iter().enumerate() {
                                let reference =
                                    engine.permitted_fields_page(party, p, action, page, ctx);
                                let compiled =
                                    engine.permitted_fields_page_in(store, p, action, page, ctx);
                                assert_eq!(
                                    compiled, reference,
                                    "permitted fields of {p} {action} in {ctx:?}"
                                );
                                let one =
                                    engine.permitted_fields_in(store, p, action, page[0], ctx);
                                assert_eq!(one, reference.clone().map(|r| r[0]));
                                let decisions =
                                    engine.field_decisions_page_in(store, p, action, page, ctx);
                                assert_eq!(
                                    granted(&decisions),
                                    reference,
                                    "field decisions of {p} {action} in {ctx:?}"
                                );
                                // Every field of every member as `authorize_in` decides it,
                                // and every field of one member, in rotation, as the
                                // reference decides it.
                                let by_reference = (pi + ci + ai) % page.len();
                                if let Ok(ds) = &decisions {
                                    for (mi, (m, d)) in page.iter().zip(ds).enumerate() {
                                        n += same_decisions(
                                            engine,
                                            (party, store),
                                            (p, action, m, ctx),
                                            d,
                                            mi == by_reference,
                                        );
                                    }
                                } else {
                                    let alone = engine
                                        .field_decisions_in(store, p, action, page[0], ctx)
                                        .map(|d| d.granted());
                                    assert_eq!(alone, one);
                                }
                                // Full decisions on a rotating pair of fields per member.
                                for (mi, m) in page.iter().enumerate() {
                                    for k in 0..2 {
                                        let f = &fields
                                            [(ci * 7 + ai * 3 + mi * 5 + k * 11) % fields.len()];
                                        let req =
                                            Request::new(p.clone(), action, *m, f, ctx.clone());
                                        let want = engine.authorize(party, &req);
                                        assert_eq!(
                                            engine.authorize_in(store, &req),
                                            want,
                                            "{req:?}"
                                        );
                                        if let (Ok(ds), Ok(want)) = (&decisions, &want) {
                                            let field = engine.catalogue().id(f).unwrap();
                                            assert_eq!(
                                                ds[mi].policies(field),
                                                want.policies(),
                                                "{req:?}"
                                            );
                                        }
                                        n += 1;
                                    }
                                }
                                n += page.len() * fields.len();
                            }
                        }
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

/// The granted sets of field decisions.
fn granted(
    decisions: &Result<Vec<FieldDecisions<'_>>, RequestError>,
) -> Result<Vec<FieldSet>, RequestError> {
    decisions
        .as_ref()
        .map(|ds| ds.iter().map(FieldDecisions::granted).collect())
        .map_err(Clone::clone)
}

/// Checks a member's field decisions `d` from a page: the same as `field_decisions_in`
/// on the member alone, and on every field the effect and determining policies of
/// `authorize_in`, and of `authorize` too if `by_reference`. Returns the number of field
/// decisions compared.
fn same_decisions(
    engine: &Engine,
    (party, store): (&Membership, &EntityStore),
    (p, action, member, ctx): (&PrincipalId, Action, &str, &Context),
    d: &FieldDecisions<'_>,
    by_reference: bool,
) -> usize {
    let alone = engine.field_decisions_in(store, p, action, member, ctx);
    assert_eq!(alone.as_ref(), Ok(d), "{p} {action} {member} in {ctx:?}");
    let mut all = Vec::new();
    for (field, info) in engine.catalogue().iter() {
        let req = Request::new(p.clone(), action, member, &info.name, ctx.clone());
        let mut paths = vec![engine.authorize_in(store, &req).unwrap()];
        if by_reference {
            paths.push(engine.authorize(party, &req).unwrap());
        }
        for want in paths {
            assert_eq!(d.granted().contains(field), want.is_allowed(), "{req:?}");
            assert_eq!(d.policies(field), want.policies(), "{req:?}");
        }
        all.extend(d.policies(field));
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(d.all_policies(), all, "{p} {action} {member} in {ctx:?}");
    engine.catalogue().len() * (1 + usize::from(by_reference))
}

#[test]
fn compiled_path_decides_as_the_reference() {
    let engine = engine();
    let compiled = engine.compiled().expect("the bundled policies compile");
    assert!(compiled.fallbacks().is_empty());
    let party = sample::bundled();
    let store = engine.store(&party).unwrap();
    assert_eq!(store.member_count(), party.members.len());
    let members = members(&party);
    let n = compare_all(&engine, &party, &store, &members);
    assert!(n > 100_000, "{n} field decisions compared");
}

#[test]
fn flags_and_break_glass_match() {
    let engine = engine();
    let party = sample::bundled();
    let store = engine.store(&party).unwrap();
    let dpo = PrincipalId::new(PrincipalKind::Staff, ids::S_DPO);
    let req = Request::new(
        dpo,
        Action::Read,
        ids::MEMBER_ELIGIBLE,
        "political_views",
        Context::at(ts("2024-05-01T09:00:00Z")).reason("a subject access complaint"),
    );
    let d = engine.authorize_in(&store, &req).unwrap();
    assert_eq!(d, engine.authorize(&party, &req).unwrap());
    assert_eq!(d.flags(), ["break_glass"]);
}

fn requests(party: &Membership) -> Vec<Request> {
    let mut out = Vec::new();
    let people = [
        PrincipalId::new(PrincipalKind::CampaignStaff, ids::CS_A_STAFF),
        PrincipalId::new(PrincipalKind::Staff, ids::S_MEMBERSHIP),
        PrincipalId::new(PrincipalKind::Staff, ids::S_COMPLIANCE),
        PrincipalId::new(PrincipalKind::Staff, ids::S_REGIONAL_LONDON),
        PrincipalId::new(PrincipalKind::Processor, ids::P_MAILING),
        PrincipalId::new(PrincipalKind::Volunteer, ids::V_PHONEBANK),
        PrincipalId::new(PrincipalKind::Officer, ids::O_SECRETARY_001),
    ];
    for p in &people {
        for ctx in contexts(party, 100) {
            for action in [
                Action::Read,
                Action::Update,
                Action::Erase,
                Action::ContactPhone,
            ] {
                for f in ["name", "phone", "address", "political_views", "email"] {
                    out.push(Request::new(
                        p.clone(),
                        action,
                        ids::MEMBER_ELIGIBLE,
                        f,
                        ctx.clone(),
                    ));
                }
            }
        }
    }
    out
}

fn same_everywhere(engine: &Engine, party: &Membership, store: &EntityStore) {
    for req in requests(party) {
        assert_eq!(
            engine.authorize_in(store, &req),
            engine.authorize(party, &req),
            "{req:?}"
        );
    }
    let members = members(party);
    let page: Vec<&str> = members.iter().map(String::as_str).collect();
    for p in principals(party).iter().map(|(p, _)| p) {
        let ctx = Context::at(ts("2020-03-01T12:00:00Z")).election(ids::LEADER_2020);
        let reference = engine.permitted_fields_page(party, p, Action::Read, &page, &ctx);
        assert_eq!(
            engine.permitted_fields_page_in(store, p, Action::Read, &page, &ctx),
            reference,
            "{p}"
        );
        let decisions = engine.field_decisions_page_in(store, p, Action::Read, &page, &ctx);
        assert_eq!(granted(&decisions), reference, "{p}");
        let eligible = page
            .iter()
            .position(|m| *m == ids::MEMBER_ELIGIBLE)
            .unwrap();
        if let Ok(ds) = &decisions {
            same_decisions(
                engine,
                (party, store),
                (p, Action::Read, ids::MEMBER_ELIGIBLE, &ctx),
                &ds[eligible],
                false,
            );
        }
    }
}

#[test]
fn updates_are_seen_by_the_next_decision() {
    let engine = engine();
    let mut party = sample::bundled();
    let mut store = engine.store(&party).unwrap();

    // A member falls into arrears, then leaves, then moves CLP.
    let mut m = party.members[ids::MEMBER_ELIGIBLE].clone();
    m.in_good_standing = false;
    store
        .upsert_member(&engine, ids::MEMBER_ELIGIBLE, m.clone())
        .unwrap();
    party.members.insert(ids::MEMBER_ELIGIBLE.into(), m.clone());
    same_everywhere(&engine, &party, &store);

    m.status = MemberStatus::Former;
    m.left = Some(ts("2020-01-01T00:00:00Z"));
    m.clp = ids::CLP_OTHER.into();
    m.consents.clear();
    store
        .upsert_member(&engine, ids::MEMBER_ELIGIBLE, m.clone())
        .unwrap();
    party.members.insert(ids::MEMBER_ELIGIBLE.into(), m.clone());
    same_everywhere(&engine, &party, &store);

    // A new member.
    store.upsert_member(&engine, "m-new", m.clone()).unwrap();
    party.members.insert("m-new".into(), m.clone());
    let team = PrincipalId::new(PrincipalKind::Staff, ids::S_MEMBERSHIP);
    let ctx = Context::at(ts("2021-01-01T00:00:00Z"));
    assert_eq!(
        engine.permitted_fields_in(&store, &team, Action::Read, "m-new", &ctx),
        engine.permitted_fields(&party, &team, Action::Read, "m-new", &ctx)
    );

    // A member referring to an unknown CLP is refused as the reference refuses it, and
    // the store keeps the old record.
    let mut bad = m.clone();
    bad.clp = "clp-nowhere".into();
    let err = store
        .upsert_member(&engine, ids::MEMBER_ELIGIBLE, bad.clone())
        .unwrap_err();
    let mut broken = party.clone();
    broken.members.insert(ids::MEMBER_ELIGIBLE.into(), bad);
    let req = Request::new(
        team.clone(),
        Action::Read,
        ids::MEMBER_ELIGIBLE,
        "name",
        ctx.clone(),
    );
    assert_eq!(Err(err), engine.authorize(&broken, &req));
    assert_eq!(
        engine.authorize_in(&store, &req),
        engine.authorize(&party, &req)
    );

    // A former member without a leaving date too.
    let mut no_date = m.clone();
    no_date.left = None;
    let err = store
        .upsert_member(&engine, ids::MEMBER_ELIGIBLE, no_date.clone())
        .unwrap_err();
    broken.members.insert(ids::MEMBER_ELIGIBLE.into(), no_date);
    assert_eq!(Err(err), engine.authorize(&broken, &req));

    // Staff leave; a campaign staffer changes campaign; a processor's contract changes.
    let mut s = party.staff[ids::S_MEMBERSHIP].clone();
    s.ended_at = Some(ts("2020-02-01T00:00:00Z"));
    store
        .upsert_principal(&engine, ids::S_MEMBERSHIP, PrincipalRecord::Staff(&s))
        .unwrap();
    party.staff.insert(ids::S_MEMBERSHIP.into(), s);
    let mut cs = party.campaign_staff[ids::CS_A_STAFF].clone();
    cs.campaign = ids::CAMP_B.into();
    store
        .upsert_principal(
            &engine,
            ids::CS_A_STAFF,
            PrincipalRecord::CampaignStaff(&cs),
        )
        .unwrap();
    party
        .campaign_staff
        .insert(ids::CS_A_STAFF.into(), cs.clone());
    let mut p = party.processors[ids::P_MAILING].clone();
    p.contract.fields.push("phone".into());
    store
        .upsert_principal(&engine, ids::P_MAILING, PrincipalRecord::Processor(&p))
        .unwrap();
    party.processors.insert(ids::P_MAILING.into(), p.clone());
    same_everywhere(&engine, &party, &store);

    // Refused updates: an unknown campaign, an unknown contract field.
    let mut lost = cs.clone();
    lost.campaign = "camp-nowhere".into();
    let err = store
        .upsert_principal(
            &engine,
            ids::CS_A_STAFF,
            PrincipalRecord::CampaignStaff(&lost),
        )
        .unwrap_err();
    let mut broken = party.clone();
    broken.campaign_staff.insert(ids::CS_A_STAFF.into(), lost);
    let cs_req = Request::new(
        PrincipalId::new(PrincipalKind::CampaignStaff, ids::CS_A_STAFF),
        Action::Read,
        ids::MEMBER_ELIGIBLE,
        "name",
        ctx.clone(),
    );
    assert_eq!(Err(err), engine.authorize(&broken, &cs_req));
    p.contract.fields.push("shoe_size".into());
    let err = store
        .upsert_principal(&engine, ids::P_MAILING, PrincipalRecord::Processor(&p))
        .unwrap_err();
    let mut broken = party.clone();
    broken.processors.insert(ids::P_MAILING.into(), p);
    let p_req = Request::new(
        PrincipalId::new(PrincipalKind::Processor, ids::P_MAILING),
        Action::Read,
        ids::MEMBER_ELIGIBLE,
        "name",
        ctx.clone(),
    );
    assert_eq!(Err(err), engine.authorize(&broken, &p_req));
    same_everywhere(&engine, &party, &store);

    // The election's timetable moves.
    let mut e = party.elections[ids::LEADER_2020].clone();
    e.ballot_close = ts("2020-02-25T00:00:00Z");
    store
        .upsert_election(&engine, ids::LEADER_2020, e.clone())
        .unwrap();
    party.elections.insert(ids::LEADER_2020.into(), e);
    same_everywhere(&engine, &party, &store);

    // An erased member is unknown.
    assert!(store.remove_member("m-new"));
    party.members.remove("m-new");
    let gone = Request::new(team, Action::Read, "m-new", "name", ctx);
    assert_eq!(
        engine.authorize_in(&store, &gone),
        engine.authorize(&party, &gone)
    );
    assert!(engine.authorize_in(&store, &gone).is_err());
}

#[test]
fn unknown_ids_are_the_same_errors() {
    let engine = engine();
    let party = sample::bundled();
    let store = engine.store(&party).unwrap();
    let team = PrincipalId::new(PrincipalKind::Staff, ids::S_MEMBERSHIP);
    let ctx = Context::at(ts("2021-03-01T09:00:00Z"));
    let base = Request::new(
        team.clone(),
        Action::Read,
        ids::MEMBER_ELIGIBLE,
        "name",
        ctx.clone(),
    );
    let cases = [
        Request {
            principal: PrincipalId::new(PrincipalKind::Staff, "s-nobody"),
            ..base.clone()
        },
        Request {
            principal: PrincipalId::new(PrincipalKind::Officer, ids::S_MEMBERSHIP),
            ..base.clone()
        },
        Request {
            member: "m-nobody".into(),
            ..base.clone()
        },
        Request {
            field: "shoe_size".into(),
            ..base.clone()
        },
        Request {
            field: "minimal_record".into(),
            ..base.clone()
        },
        Request {
            context: ctx.clone().election("election-nobody"),
            ..base.clone()
        },
        Request {
            context: ctx.clone().session("session-nobody"),
            ..base.clone()
        },
        // Several unknowns: the reference's order decides which is reported.
        Request {
            member: "m-nobody".into(),
            field: "shoe_size".into(),
            context: ctx.clone().election("election-nobody"),
            ..base.clone()
        },
        Request {
            principal: PrincipalId::new(PrincipalKind::Volunteer, "v-nobody"),
            member: "m-nobody".into(),
            context: ctx.clone().session("session-nobody"),
            ..base.clone()
        },
        Request {
            member: "m-nobody".into(),
            context: ctx
                .clone()
                .election("election-nobody")
                .session("session-nobody"),
            ..base.clone()
        },
    ];
    for req in &cases {
        let reference = engine.authorize(&party, req);
        assert!(reference.is_err(), "{req:?}");
        assert_eq!(engine.authorize_in(&store, req), reference, "{req:?}");
        assert_eq!(
            engine.permitted_fields_in(
                &store,
                &req.principal,
                req.action,
                &req.member,
                &req.context
            ),
            engine.permitted_fields(
                &party,
                &req.principal,
                req.action,
                &req.member,
                &req.context
            ),
            "{req:?}"
        );
        let page = [ids::MEMBER_ELIGIBLE, req.member.as_str(), "m-other-nobody"];
        assert_eq!(
            engine.permitted_fields_page_in(
                &store,
                &req.principal,
                req.action,
                &page,
                &req.context
            ),
            engine.permitted_fields_page(&party, &req.principal, req.action, &page, &req.context),
            "{req:?}"
        );
        let (p, action, ctx) = (&req.principal, req.action, &req.context);
        assert_eq!(
            engine
                .field_decisions_in(&store, p, action, &req.member, ctx)
                .map(|d| d.granted()),
            engine.permitted_fields(&party, p, action, &req.member, ctx),
            "{req:?}"
        );
        assert_eq!(
            granted(&engine.field_decisions_page_in(&store, p, action, &page, ctx)),
            engine.permitted_fields_page(&party, p, action, &page, ctx),
            "{req:?}"
        );
    }
    // A store of another engine is refused.
    let other = self::engine();
    assert!(other.authorize_in(&store, &base).is_err());
    let refused = other.field_decisions_in(&store, &team, Action::Read, ids::MEMBER_ELIGIBLE, &ctx);
    assert_eq!(
        refused.map(|d| d.granted()),
        other.permitted_fields_in(&store, &team, Action::Read, ids::MEMBER_ELIGIBLE, &ctx)
    );
    assert!(other
        .field_decisions_page_in(&store, &team, Action::Read, &[ids::MEMBER_ELIGIBLE], &ctx)
        .is_err());
}

/// Policies scoped on entities (`principal in`, `principal ==`, `resource in`,
/// `resource ==`, `is .. in`) beside the bundled ones: the scope index gives the same
/// decisions as the reference.
#[test]
fn scope_index_decides_as_the_reference() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let extra = format!(
        r#"
@id("x-campaign-a-read")
permit (principal in Campaign::"{camp_a}", action in [Action::"read", Action::"contact"], resource in Region::"{london}")
when {{ context.field in FieldClass::"membership" }};

@id("x-staff-eq")
@flag("watched")
permit (principal == Staff::"{dpo}", action == Action::"read", resource)
when {{ context.field == Field::"phone" && resource.in_good_standing }};

@id("x-member-eq")
forbid (principal, action, resource == Member::"{other}")
when {{ context.field in FieldClass::"contact" }};

@id("x-london")
permit (principal is Officer, action, resource in Clp::"{clp}")
when {{ context.field in FieldClass::"financial" || context.field in principal.clp.nothing }};

@id("x-team-in")
forbid (principal is Staff in Team::"regional", action == Action::"update", resource in Region::"{london}")
when {{ context.reads_this_hour > 3 }};

@id("x-errors")
forbid (principal is Processor, action, resource)
when {{ context.reads_this_hour * 9223372036854775807 > 0 && context.field == Field::"name" }};
"#,
        camp_a = ids::CAMP_A,
        london = ids::REGION_LONDON,
        dpo = ids::S_DPO,
        other = ids::MEMBER_OTHER_CLP,
        clp = ids::CLP_LONDON,
    );
    std::fs::write(dir.path().join("extra.cedar"), extra).unwrap();
    let engine = match Engine::from_dir(dir.path()) {
        Ok(e) => e,
        Err(e) => {
            // `principal.clp.nothing` does not validate: drop that disjunct.
            let _ = e;
            let text = std::fs::read_to_string(dir.path().join("extra.cedar"))
                .unwrap()
                .replace(" || context.field in principal.clp.nothing", "");
            std::fs::write(dir.path().join("extra.cedar"), text).unwrap();
            Engine::from_dir(dir.path()).unwrap_or_else(|e| panic!("{}", e.render()))
        }
    };
    assert!(engine.compiled().unwrap().fallbacks().is_empty());
    let party = sample::bundled();
    let store = engine.store(&party).unwrap();
    let mut members = members(&party);
    members.truncate(8);
    compare_all(&engine, &party, &store, &members);
}
