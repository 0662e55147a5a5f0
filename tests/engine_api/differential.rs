//! The engine against its reference (`engine.reference()`, Cedar's authorizer) on the
//! same directory: every principal of the bundled sample, every action, a spread of
//! contexts and members, every question (the same decisions with their policies, errors
//! and flags, the same field sets and deciding policies per field, the same accounts);
//! policies scoped on entities; members changed by the caller; and directory upserts seen
//! by the next decision.

use jiff::{SignedDuration, Timestamp};
use membergate::sample::ids;
use membergate::{
    Action, Context, Directory, Engine, FieldDecisions, Member, MemberRef, MemberRequest,
    MemberStatus, Membership, PageRequest, PrincipalId, PrincipalKind, RecordError, Request,
    RequestError, Staff, Team,
};

use crate::support::{
    authorize, bundled, directory, engine, every_question, field_decisions_page, fixture,
    fixture_directory, granted, member, permitted_fields, policies_dir, principal, read_limit,
    t as ts, SPECIAL_MEMBERS,
};

/// Special members, members of the call sessions, and a spread of the rest.
fn members(party: &Membership) -> Vec<MemberRef<'_>> {
    let mut out: Vec<&str> = SPECIAL_MEMBERS.to_vec();
    for s in [ids::SESSION_A, ids::SESSION_OFFICE_LONDON] {
        out.extend(
            party.call_sessions[s]
                .members
                .iter()
                .skip(1)
                .take(1)
                .map(String::as_str),
        );
    }
    let mut statuses = std::collections::HashSet::new();
    for (id, m) in party.members.iter().step_by(5_003) {
        out.push(id);
        statuses.insert(m.status);
    }
    // One of each status.
    for (id, m) in &party.members {
        if statuses.insert(m.status) {
            out.push(id);
        }
    }
    out.sort();
    out.dedup();
    out.into_iter().map(|id| member(party, id)).collect()
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

/// Compares both paths for every principal of `party`, every action and, per principal,
/// two of the contexts (rotating) on the page `members`. Returns the number of field
/// decisions compared.
fn compare_all(engine: &Engine, party: &Membership, dir: &Directory, page: &[MemberRef]) -> usize {
    let fields: Vec<&str> = engine
        .catalogue()
        .iter()
        .map(|(_, f)| f.name.as_str())
        .collect();
    let principals: Vec<PrincipalId> = party.principal_ids().collect();
    let chunks: Vec<_> = principals.chunks(principals.len().div_ceil(2)).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let fields = &fields;
                s.spawn(move || {
                    let mut n = 0usize;
                    for (pi, p) in chunk.iter().enumerate() {
                        // Two of the contexts per principal, rotating, so that every
                        // context meets principals of every kind.
                        let all = contexts(party, read_limit(party, p));
                        let picked = (0..2).map(|k| (pi * 5 + k * 8) % all.len());
                        for (ci, ctx) in picked.map(|i| (i, &all[i])) {
                            for (ai, action) in Action::ALL.into_iter().enumerate() {
                                n += compare_one(
                                    engine,
                                    dir,
                                    PageRequest {
                                        principal: p,
                                        action,
                                        members: page,
                                        context: ctx,
                                    },
                                    fields,
                                    pi + ci + ai,
                                    ci * 7 + ai * 3,
                                );
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

/// Both paths on one page request: the page's field decisions and field sets, the first
/// member alone, every member's field decisions against its decisions field by field (by
/// the reference too for one member, chosen by `rotation`), full decisions on two fields
/// per member and one explanation (chosen by `spin`). Returns the number of field
/// decisions compared.
fn compare_one(
    engine: &Engine,
    dir: &Directory,
    req: PageRequest<'_>,
    fields: &[&str],
    rotation: usize,
    spin: usize,
) -> usize {
    let (p, action, ctx, page) = (req.principal, req.action, req.context, req.members);
    let mut n = 0;
    let reference = engine.reference().field_decisions_page(dir, &req);
    let decisions = engine.field_decisions_page(dir, &req);
    assert_eq!(
        decisions, reference,
        "field decisions of {p} {action} in {ctx:?}"
    );
    let sets = granted(&reference);
    assert_eq!(
        engine.permitted_fields_page(dir, &req),
        sets,
        "permitted fields of {p} {action} in {ctx:?}"
    );
    let first = MemberRequest {
        principal: p,
        action,
        member: page[0],
        context: ctx,
    };
    let one = permitted_fields(engine, dir, &first);
    assert_eq!(one, sets.clone().map(|r| r[0]));
    // Every field of every member as `authorize` decides it, and every field of one
    // member, in rotation, as the reference decides it.
    let by_reference = rotation % page.len();
    if let Ok(ds) = &decisions {
        for (mi, (m, d)) in page.iter().zip(ds).enumerate() {
            let req = MemberRequest {
                member: *m,
                ..first
            };
            n += same_decisions(engine, dir, &req, d, mi == by_reference);
        }
    } else {
        let alone = engine.field_decisions(dir, &first).map(|d| d.granted());
        assert_eq!(alone, one);
    }
    // Full decisions on a rotating pair of fields per member, and one account.
    for (mi, m) in page.iter().enumerate() {
        for k in 0..2 {
            let f = fields[(spin + mi * 5 + k * 11) % fields.len()];
            let req = MemberRequest {
                member: *m,
                ..first
            }
            .field(f);
            let want = authorize(engine, dir, &req);
            if let (Ok(ds), Ok(want)) = (&decisions, &want) {
                let field = engine.catalogue().id(f).unwrap();
                assert_eq!(
                    ds[mi].policies(field).collect::<Vec<_>>(),
                    want.policies(),
                    "{req:?}"
                );
            }
            if mi == by_reference && k == 0 {
                assert_eq!(
                    engine.explain(dir, &req),
                    engine.reference().explain(dir, &req),
                    "{req:?}"
                );
            }
            n += 1;
        }
    }
    n + page.len() * fields.len()
}

/// Checks a member's field decisions `d` from a page: the same as `field_decisions` on
/// the member alone, and on every field the effect and determining policies of
/// `authorize`; and if `by_reference` the reference's field decisions and its decision on
/// every field too. Returns the number of field decisions compared.
fn same_decisions<'e>(
    engine: &'e Engine,
    dir: &Directory,
    req: &MemberRequest<'_>,
    d: &FieldDecisions<'e>,
    by_reference: bool,
) -> usize {
    let alone = engine.field_decisions(dir, req);
    assert_eq!(alone.as_ref(), Ok(d), "{req:?}");
    if by_reference {
        let alone = engine.reference().field_decisions(dir, req);
        assert_eq!(alone.as_ref(), Ok(d), "{req:?}");
    }
    let mut all = Vec::new();
    for (field, info) in engine.catalogue().iter() {
        let req = req.field(&info.name);
        let mut paths = vec![engine.authorize(dir, &req).unwrap()];
        if by_reference {
            paths.push(engine.reference().authorize(dir, &req).unwrap());
        }
        for want in paths {
            assert_eq!(d.granted().contains(field), want.is_allowed(), "{req:?}");
            assert_eq!(
                d.policies(field).collect::<Vec<_>>(),
                want.policies(),
                "{req:?}"
            );
        }
        all.extend(d.policies(field));
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(d.all_policies().collect::<Vec<_>>(), all, "{req:?}");
    engine.catalogue().len() * (1 + usize::from(by_reference))
}

#[test]
fn engine_decides_as_the_reference_on_the_bundled_sample() {
    let engine = engine();
    assert!(engine.compiled().fallbacks().is_empty());
    let party = bundled();
    let dir = directory();
    // The directory holds the principal side only: members come with each request.
    assert!(dir.records().members.is_empty());
    assert_eq!(dir.records().staff, party.staff);
    let members = members(party);
    let n = compare_all(engine, party, dir, &members);
    assert!(n > 100_000, "{n} field decisions compared");
}

// ------------------------------------------------------------------ changed records

/// Requests by a few principals in every context on `member`.
fn requests<'a>(
    people: &'a [PrincipalId],
    contexts: &'a [Context],
    member: MemberRef<'a>,
) -> Vec<Request<'a>> {
    let mut out = Vec::new();
    for principal in people {
        for context in contexts {
            for action in [
                Action::Read,
                Action::Update,
                Action::Erase,
                Action::ContactPhone,
            ] {
                for field in ["name", "phone", "address", "political_views", "email"] {
                    out.push(Request {
                        principal,
                        action,
                        member,
                        field,
                        context,
                    });
                }
            }
        }
    }
    out
}

/// A few principals of every kind of the bundled sample.
fn people() -> Vec<PrincipalId> {
    vec![
        PrincipalId::new(PrincipalKind::CampaignStaff, ids::CS_A_STAFF),
        PrincipalId::new(PrincipalKind::Staff, ids::S_MEMBERSHIP),
        PrincipalId::new(PrincipalKind::Staff, ids::S_COMPLIANCE),
        PrincipalId::new(PrincipalKind::Staff, ids::S_REGIONAL_LONDON),
        PrincipalId::new(PrincipalKind::Processor, ids::P_MAILING),
        PrincipalId::new(PrincipalKind::Volunteer, ids::V_PHONEBANK),
        PrincipalId::new(PrincipalKind::Officer, ids::O_SECRETARY_001),
    ]
}

/// Both paths agree on `dir` for requests on `focus` and, for every principal of `party`,
/// on the page `page`; and if `rebuilt` is given, it (a directory built from scratch of
/// the records `dir` should hold) gives the same answers as `dir`.
fn same_everywhere(
    engine: &Engine,
    party: &Membership,
    dir: &Directory,
    rebuilt: Option<&Directory>,
    page: &[MemberRef<'_>],
    focus: MemberRef<'_>,
) {
    let people = people();
    let contexts = contexts(party, 100);
    for req in requests(&people, &contexts, focus) {
        let d = authorize(engine, dir, &req);
        if let Some(rebuilt) = rebuilt {
            assert_eq!(d, engine.authorize(rebuilt, &req), "rebuilt {req:?}");
        }
    }
    let ctx = Context::at(ts("2020-03-01T12:00:00Z")).election(ids::LEADER_2020);
    for p in party.principal_ids() {
        let req = PageRequest {
            principal: &p,
            action: Action::Read,
            members: page,
            context: &ctx,
        };
        let decisions = field_decisions_page(engine, dir, &req);
        if let Some(rebuilt) = rebuilt {
            assert_eq!(
                decisions,
                engine.field_decisions_page(rebuilt, &req),
                "rebuilt {p}"
            );
        }
        let at = page.iter().position(|m| m.id == focus.id).unwrap();
        if let Ok(ds) = &decisions {
            let one = MemberRequest {
                principal: &p,
                action: Action::Read,
                member: focus,
                context: &ctx,
            };
            same_decisions(engine, dir, &one, &ds[at], false);
        }
    }
}

/// The bundled sample's page of [`members`] with `changed` in place of the member of the
/// same id (or added).
fn with_member<'a>(party: &'a Membership, changed: MemberRef<'a>) -> Vec<MemberRef<'a>> {
    let mut page: Vec<MemberRef> = members(party)
        .into_iter()
        .filter(|m| m.id != changed.id)
        .collect();
    page.push(changed);
    page
}

/// The member comes with each request: a record the CRM changed is decided as given,
/// with nothing to update in the engine or the directory.
#[test]
fn a_member_record_changed_by_the_caller_is_decided_as_given() {
    let (engine, party, dir) = (engine(), bundled(), directory());
    let team = PrincipalId::new(PrincipalKind::Staff, ids::S_MEMBERSHIP);
    let ctx = Context::at(ts("2021-01-01T00:00:00Z"));
    // The membership team emails the member.
    let email = |m: MemberRef<'_>| {
        let req = Request {
            principal: &team,
            action: Action::ContactEmail,
            member: m,
            field: "email",
            context: &ctx,
        };
        every_question(engine, dir, &req)
    };
    let as_given = |attrs: &Member| {
        let changed = MemberRef {
            id: ids::MEMBER_ELIGIBLE,
            attrs,
        };
        same_everywhere(
            engine,
            party,
            dir,
            None,
            &with_member(party, changed),
            changed,
        );
    };

    // A member falls into arrears, then leaves, then moves CLP.
    let mut m = party.members[ids::MEMBER_ELIGIBLE].clone();
    m.in_good_standing = false;
    as_given(&m);
    m.status = MemberStatus::Former;
    m.left = Some(ts("2020-01-01T00:00:00Z"));
    m.clp = ids::CLP_OTHER.into();
    m.consents.clear();
    as_given(&m);
    // The change is seen: the same id emailed as it was, and not as it is now (a former
    // member who withdrew every consent).
    let before = email(member(party, ids::MEMBER_ELIGIBLE)).expect("decided");
    assert!(before.is_allowed(), "{before:?}");
    let now = email(MemberRef {
        id: ids::MEMBER_ELIGIBLE,
        attrs: &m,
    })
    .expect("decided");
    assert!(!now.is_allowed(), "{now:?}");

    // A new member: an id no record of the directory names.
    let new = MemberRef {
        id: "m-new",
        attrs: &m,
    };
    assert!(party.member("m-new").is_none());
    same_everywhere(engine, party, dir, None, &with_member(party, new), new);

    // A member whose CLP the directory lacks is refused by both paths (request time:
    // members are not in the directory) and so is a former member without a leaving date.
    let mut bad = m.clone();
    bad.clp = "clp-nowhere".into();
    assert_eq!(
        email(MemberRef {
            id: ids::MEMBER_ELIGIBLE,
            attrs: &bad
        }),
        Err(RequestError::DanglingReference {
            from: format!("Member::{:?}", ids::MEMBER_ELIGIBLE),
            kind: "CLP",
            id: "clp-nowhere".into(),
        })
    );
    let mut no_date = m.clone();
    no_date.left = None;
    assert!(matches!(
        email(MemberRef {
            id: ids::MEMBER_ELIGIBLE,
            attrs: &no_date
        }),
        Err(RequestError::InvalidData { .. })
    ));
}

/// A principal-side change is an upsert into the directory: the next decision sees it,
/// on both paths, as a directory built from scratch of the same records; a refused
/// upsert leaves the directory unchanged.
#[test]
fn directory_upserts_are_seen_by_the_next_decision() {
    let engine = engine();
    // The records the directory should hold: the sample's principal side.
    let mut party = bundled().principal_side();
    let sample = bundled();
    let mut dir = directory().clone();
    let page = members(sample);
    let eligible = member(sample, ids::MEMBER_ELIGIBLE);
    let check = |dir: &Directory, party: &Membership| {
        assert!(
            dir.records() == party,
            "the records the directory holds differ"
        );
        let rebuilt = Directory::from_membership(engine, party).expect("valid records");
        same_everywhere(engine, sample, dir, Some(&rebuilt), &page, eligible);
    };
    let team = PrincipalId::new(PrincipalKind::Staff, ids::S_MEMBERSHIP);
    let ctx = Context::at(ts("2021-01-01T00:00:00Z"));
    let read = |dir: &Directory, p: &PrincipalId| {
        let req = Request {
            principal: p,
            action: Action::Read,
            member: eligible,
            field: "name",
            context: &ctx,
        };
        every_question(engine, dir, &req)
    };
    assert!(read(&dir, &team).expect("decided").is_allowed());
    // Every principal decided once first: what the directory keeps from a decision (a
    // principal's plan, folded from the records it read) must not outlive the records.
    check(&dir, &party);

    // Staff leave; a campaign staffer changes campaign; a processor's contract changes.
    let mut s = party.staff[ids::S_MEMBERSHIP].clone();
    s.ended_at = Some(ts("2020-02-01T00:00:00Z"));
    dir.upsert(ids::S_MEMBERSHIP, s.clone()).unwrap();
    party.staff.insert(ids::S_MEMBERSHIP.into(), s);
    let d = read(&dir, &team).expect("decided");
    assert!(!d.is_allowed());
    assert_eq!(d.policies(), ["role-ended"]);
    let mut cs = party.campaign_staff[ids::CS_A_STAFF].clone();
    cs.campaign = ids::CAMP_B.into();
    dir.upsert(ids::CS_A_STAFF, cs.clone()).unwrap();
    party
        .campaign_staff
        .insert(ids::CS_A_STAFF.into(), cs.clone());
    let mut p = party.processors[ids::P_MAILING].clone();
    p.contract.fields.push("phone".into());
    dir.upsert(ids::P_MAILING, p.clone()).unwrap();
    party.processors.insert(ids::P_MAILING.into(), p.clone());
    check(&dir, &party);

    // Records a principal reaches through others: a candidate stops being cleared, an
    // election's ballot closes earlier, a CLP moves region.
    let contest = Context::at(ts("2020-03-01T12:00:00Z")).election(ids::LEADER_2020);
    let candidate_staff = PrincipalId::new(PrincipalKind::CampaignStaff, ids::CS_A_CANDIDATE);
    let campaign_read = |dir: &Directory| {
        let req = Request {
            principal: &candidate_staff,
            action: Action::Read,
            member: eligible,
            field: "phone",
            context: &contest,
        };
        every_question(engine, dir, &req).expect("decided")
    };
    assert!(campaign_read(&dir).is_allowed());
    let mut cand = party.candidates[ids::CAND_A].clone();
    cand.fee_paid = false;
    dir.upsert(ids::CAND_A, cand.clone()).unwrap();
    party.candidates.insert(ids::CAND_A.into(), cand.clone());
    assert_eq!(
        campaign_read(&dir).policies(),
        ["campaign-candidate-not-cleared"]
    );
    cand.fee_paid = true;
    dir.upsert(ids::CAND_A, cand.clone()).unwrap();
    party.candidates.insert(ids::CAND_A.into(), cand);
    assert!(campaign_read(&dir).is_allowed());
    let mut election = party.elections[ids::LEADER_2020].clone();
    election.ballot_close = ts("2020-02-20T00:00:00Z");
    dir.upsert(ids::LEADER_2020, election.clone()).unwrap();
    party.elections.insert(ids::LEADER_2020.into(), election);
    assert_eq!(campaign_read(&dir).policies(), ["campaign-outside-contest"]);
    let mut clp = party.clps[ids::CLP_OTHER].clone();
    clp.region = ids::REGION_LONDON.into();
    dir.upsert(ids::CLP_OTHER, clp.clone()).unwrap();
    party.clps.insert(ids::CLP_OTHER.into(), clp);
    check(&dir, &party);

    // Refused upserts: an unknown campaign, an unknown contract field, an officer's
    // unknown CLP, a time Cedar cannot hold. Each is the error building a directory of
    // the same records gives, and the directory is left as it was.
    let before = dir.clone();
    let refused = |dir: &Directory, id: &str, err: RecordError, broken: &Membership| {
        assert_eq!(
            Directory::from_membership(engine, broken).map(drop),
            Err(err),
            "{id}"
        );
        assert!(
            dir.records() == before.records(),
            "{id}: the records changed"
        );
    };
    let mut lost = cs.clone();
    lost.campaign = "camp-nowhere".into();
    let err = dir.upsert(ids::CS_A_STAFF, lost.clone()).unwrap_err();
    assert_eq!(
        err,
        RecordError::Dangling {
            from: format!("CampaignStaff::{:?}", ids::CS_A_STAFF),
            kind: "campaign",
            id: "camp-nowhere".into(),
        }
    );
    let mut broken = party.clone();
    broken.campaign_staff.insert(ids::CS_A_STAFF.into(), lost);
    refused(&dir, ids::CS_A_STAFF, err, &broken);
    p.contract.fields.push("shoe_size".into());
    let err = dir.upsert(ids::P_MAILING, p.clone()).unwrap_err();
    assert_eq!(
        err,
        RecordError::UnknownField {
            what: format!("Processor::{:?}", ids::P_MAILING),
            field: "shoe_size".into(),
        }
    );
    let mut broken = party.clone();
    broken.processors.insert(ids::P_MAILING.into(), p);
    refused(&dir, ids::P_MAILING, err, &broken);
    let mut o = party.officers[ids::O_SECRETARY_001].clone();
    o.clp = "clp-nowhere".into();
    let err = dir.upsert(ids::O_SECRETARY_001, o.clone()).unwrap_err();
    assert_eq!(
        err,
        RecordError::Dangling {
            from: format!("Officer::{:?}", ids::O_SECRETARY_001),
            kind: "CLP",
            id: "clp-nowhere".into(),
        }
    );
    let mut broken = party.clone();
    broken.officers.insert(ids::O_SECRETARY_001.into(), o);
    refused(&dir, ids::O_SECRETARY_001, err, &broken);
    let mut s = party.staff[ids::S_DPO].clone();
    s.ended_at = Some(Timestamp::MIN);
    let err = dir.upsert(ids::S_DPO, s.clone()).unwrap_err();
    assert!(
        matches!(&err, RecordError::Invalid { what, .. } if *what == format!("Staff::{:?}", ids::S_DPO)),
        "{err:?}"
    );
    let mut broken = party.clone();
    broken.staff.insert(ids::S_DPO.into(), s);
    refused(&dir, ids::S_DPO, err, &broken);
    // The refusals were made on `dir` itself, which still decides as before them.
    check(&dir, &party);

    // The election's timetable moves.
    let mut e = party.elections[ids::LEADER_2020].clone();
    e.ballot_close = ts("2020-02-25T00:00:00Z");
    dir.upsert(ids::LEADER_2020, e.clone()).unwrap();
    party.elections.insert(ids::LEADER_2020.into(), e);
    check(&dir, &party);

    // A new staffer is unknown until upserted, then decided.
    let starter = PrincipalId::new(PrincipalKind::Staff, "s-new");
    assert_eq!(
        read(&dir, &starter),
        Err(RequestError::UnknownPrincipal(starter.to_string()))
    );
    let record = Staff {
        name: "A new starter".into(),
        teams: vec![Team::Membership],
        region: None,
        ended_at: None,
        hourly_read_limit: 500,
    };
    dir.upsert("s-new", record.clone()).unwrap();
    party.staff.insert("s-new".into(), record);
    assert!(read(&dir, &starter).expect("decided").is_allowed());
    check(&dir, &party);
}

/// A page that names one member twice, with two different records (as a CRM reading rows
/// at two moments could): each entry is decided on its own record, on both paths.
#[test]
fn a_page_naming_one_member_twice_is_decided_alike() {
    let (engine, dir) = (engine(), fixture_directory());
    let staffer = principal(r#"CampaignStaff::"cs-a""#);
    let ctx = Context::at(ts("2020-03-01T12:00:00Z")).election("leader-2020");
    let eligible = member(fixture(), "m-eligible");
    // The same member, joined after the 2020 freeze date: not eligible to be contacted.
    let mut late = eligible.attrs.clone();
    late.joined = ts("2020-01-25T00:00:00Z");
    let members = [
        eligible,
        MemberRef {
            id: eligible.id,
            attrs: &late,
        },
    ];
    let req = PageRequest {
        principal: &staffer,
        action: Action::Read,
        members: &members,
        context: &ctx,
    };
    let one = |m: MemberRef<'_>| {
        let req = MemberRequest {
            principal: &staffer,
            action: Action::Read,
            member: m,
            context: &ctx,
        };
        permitted_fields(engine, dir, &req).unwrap()
    };
    let alone = [one(members[0]), one(members[1])];
    assert_ne!(alone[0], alone[1], "the two records are decided apart");
    assert_eq!(engine.permitted_fields_page(dir, &req).unwrap(), alone);
    assert_eq!(
        engine.reference().permitted_fields_page(dir, &req).unwrap(),
        alone
    );
    field_decisions_page(engine, dir, &req).unwrap();
}

/// Policies scoped on entities (`principal in`, `principal ==`, `resource in`,
/// `resource ==`, `is .. in`) beside the bundled ones: the scope index gives the same
/// decisions as the reference.
#[test]
fn scope_index_decides_as_the_reference() {
    let src = policies_dir();
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
    assert!(engine.compiled().fallbacks().is_empty());
    let party = bundled();
    // The bundled directory, rebuilt for this engine.
    let directory = directory().for_engine(&engine).unwrap();
    assert_eq!(directory.records(), self::directory().records());
    let mut members = members(party);
    members.truncate(8);
    compare_all(&engine, party, &directory, &members);
}
