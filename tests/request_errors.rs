//! Requests the engine must refuse rather than decide, each with the same error from both
//! paths (the engine and its reference) on every question: unknown records, a member whose
//! CLP the directory lacks or who left without a date, times Cedar cannot hold, a
//! directory built for another engine, several of these at once, pages with one bad
//! member. Records the directory refuses when they enter (dangling references, a
//! processor contract naming an unknown field, a time Cedar cannot hold). Malformed
//! principals and actions.
//!
//! "Unknown member" is no longer the library's to say: the member comes with the request,
//! so a CRM that lacks the row refuses the request itself.

use jiff::Timestamp;
use membergate::sample::ids;
use membergate::{
    Action, Context, Directory, DirectoryRecord, Engine, MemberRef, MemberStatus, Membership,
    PrincipalId, PrincipalKind, RecordError, Request, RequestError,
};

use crate::support::{
    bundled, directory, engine, every_question, fixture, fixture_directory, insert_record, member,
    page, policies_dir, principal, t, Ask,
};

// ------------------------------------------------------------------ requests

/// `req` must fail with `want` from every question, on the engine and on its reference
/// alike: `authorize`, `explain` and the reference's `cedar_inputs`; and, when the field
/// is known (the other questions name no field), `permitted_fields`, `field_decisions`
/// and their pages (of the member alone).
fn assert_refused(e: &Engine, dir: &Directory, req: &Request, want: &RequestError) {
    let r = e.reference();
    let want = Err(want);
    assert_eq!(
        e.authorize(dir, req).as_ref().map(drop),
        want,
        "authorize {req:?}"
    );
    assert_eq!(
        r.authorize(dir, req).as_ref().map(drop),
        want,
        "reference authorize {req:?}"
    );
    assert_eq!(
        e.explain(dir, req).as_ref().map(drop),
        want,
        "explain {req:?}"
    );
    assert_eq!(
        r.explain(dir, req).as_ref().map(drop),
        want,
        "reference explain {req:?}"
    );
    assert_eq!(
        r.cedar_inputs(dir, req).as_ref().map(drop),
        want,
        "cedar_inputs {req:?}"
    );
    if e.catalogue().id(req.field).is_none() {
        return;
    }
    let all = req.all_fields();
    let members = [req.member];
    let pg = page(&all, &members);
    for (question, got) in [
        ("permitted_fields", e.permitted_fields(dir, &all).map(drop)),
        (
            "reference permitted_fields",
            r.permitted_fields(dir, &all).map(drop),
        ),
        ("field_decisions", e.field_decisions(dir, &all).map(drop)),
        (
            "reference field_decisions",
            r.field_decisions(dir, &all).map(drop),
        ),
        (
            "permitted_fields_page",
            e.permitted_fields_page(dir, &pg).map(drop),
        ),
        (
            "reference permitted_fields_page",
            r.permitted_fields_page(dir, &pg).map(drop),
        ),
        (
            "field_decisions_page",
            e.field_decisions_page(dir, &pg).map(drop),
        ),
        (
            "reference field_decisions_page",
            r.field_decisions_page(dir, &pg).map(drop),
        ),
    ] {
        assert_eq!(got.as_ref().map(drop), want, "{question} {req:?}");
    }
}

#[test]
fn unknown_records_in_a_request_are_errors_not_decisions() {
    let during = || Context::at(t("2020-03-01T12:00:00Z"));
    let ask = |who: &str, member: &str, field: &str, ctx: Context| {
        Ask::new(fixture(), principal(who), Action::Read, member, field, ctx)
    };
    let mut no_clp = ask(r#"Staff::"s-membership""#, "m-eligible", "name", during());
    no_clp.attrs.clp = "no-such-clp".into();
    let cases = [
        (
            ask(r#"Staff::"s-nobody""#, "m-eligible", "name", during()),
            RequestError::UnknownPrincipal(r#"Staff::"s-nobody""#.into()),
        ),
        (
            // A known id under another principal type is unknown too.
            ask(r#"Officer::"s-membership""#, "m-eligible", "name", during()),
            RequestError::UnknownPrincipal(r#"Officer::"s-membership""#.into()),
        ),
        (
            ask(
                r#"Staff::"s-membership""#,
                "m-eligible",
                "shoe_size",
                during(),
            ),
            RequestError::UnknownField("shoe_size".into()),
        ),
        (
            // A field class is not a field.
            ask(
                r#"Staff::"s-membership""#,
                "m-eligible",
                "contact",
                during(),
            ),
            RequestError::UnknownField("contact".into()),
        ),
        (
            ask(
                r#"CampaignStaff::"cs-a""#,
                "m-eligible",
                "phone",
                during().election("leader-2099"),
            ),
            RequestError::UnknownElection("leader-2099".into()),
        ),
        (
            ask(
                r#"Volunteer::"v-assigned""#,
                "m-eligible",
                "phone",
                during().session("session-nope"),
            ),
            RequestError::UnknownSession("session-nope".into()),
        ),
        (
            // The member's CLP is checked against the directory at request time (members
            // are not in the directory).
            no_clp,
            RequestError::DanglingReference {
                from: r#"Member::"m-eligible""#.into(),
                kind: "CLP",
                id: "no-such-clp".into(),
            },
        ),
        (
            // The fixture's deliberately malformed member.
            ask(
                r#"Staff::"s-membership""#,
                "m-former-undated",
                "name",
                during(),
            ),
            RequestError::InvalidData {
                what: "member `m-former-undated`".into(),
                message: "a former member needs the date they left (`left`)".into(),
            },
        ),
    ];
    for (ask, want) in &cases {
        assert_refused(engine(), fixture_directory(), &ask.request(), want);
    }
    // An expelled member without a date is refused the same way.
    let mut expelled = ask(r#"Staff::"s-membership""#, "m-expelled", "name", during());
    expelled.attrs.left = None;
    assert_eq!(expelled.attrs.status, MemberStatus::Expelled);
    assert_refused(
        engine(),
        fixture_directory(),
        &expelled.request(),
        &RequestError::InvalidData {
            what: "member `m-expelled`".into(),
            message: "a expelled member needs the date they left (`left`)".into(),
        },
    );
}

/// Several unknowns at once, on the bundled sample: every question on both paths reports
/// the same one, the first in the order the library checks them: the field (of a one-field
/// request), the directory's engine, the principal, the context's election, then its
/// session, then each member.
/// A break-glass reason must be one a person wrote (issue: `" "` and `"-"` passed):
/// anything else is refused as malformed by both paths, on every question; a reason in
/// words is decided (the data protection officer's break-glass read).
#[test]
fn break_glass_reasons_no_person_wrote_are_refused() {
    let at = |reason: &str| Context::at(t("2021-03-01T09:00:00Z")).reason(reason);
    let ask = |ctx: Context| {
        Ask::new(
            fixture(),
            principal(r#"Staff::"s-dpo""#),
            Action::Read,
            "m-eligible",
            "phone",
            ctx,
        )
    };
    let too_long = "a reason in words ".repeat(30);
    for bad in [
        "",
        " ",
        "-",
        "n/a",
        "          .",
        "xxxxxxxxxxxx",
        "a b c d e f g",
        "2021 0042 17",
        too_long.as_str(),
    ] {
        let a = ask(at(bad));
        let err = engine()
            .authorize(fixture_directory(), &a.request())
            .expect_err(bad);
        assert!(
            matches!(&err, RequestError::InvalidContext(message) if message.contains("break-glass reason")),
            "{bad:?}: {err}"
        );
        assert_refused(engine(), fixture_directory(), &a.request(), &err);
    }
    for good in [
        "ICO inquiry 2021-0042",
        "court order 17",
        "complaint 2020/17",
        "  subject access request from the member  ",
    ] {
        let a = ask(at(good));
        let d = every_question(engine(), fixture_directory(), &a.request()).expect(good);
        assert!(d.is_allowed(), "{good:?}");
        assert_eq!(d.policies(), ["dpo-break-glass"], "{good:?}");
    }
}

#[test]
fn unknown_ids_are_the_same_errors() {
    let (e, dir) = (engine(), directory());
    let eligible = member(bundled(), ids::MEMBER_ELIGIBLE);
    let mut lost = eligible.attrs.clone();
    lost.clp = "clp-nowhere".into();
    let lost = MemberRef {
        id: ids::MEMBER_ELIGIBLE,
        attrs: &lost,
    };
    let mut undated = member(bundled(), ids::MEMBER_LEFT_2009).attrs.clone();
    undated.left = None;
    let undated = MemberRef {
        id: ids::MEMBER_LEFT_2009,
        attrs: &undated,
    };
    let team = PrincipalId::new(PrincipalKind::Staff, ids::S_MEMBERSHIP);
    let nobody = PrincipalId::new(PrincipalKind::Staff, "s-nobody");
    let misfiled = PrincipalId::new(PrincipalKind::Officer, ids::S_MEMBERSHIP);
    let v_nobody = PrincipalId::new(PrincipalKind::Volunteer, "v-nobody");
    let ctx = Context::at(t("2021-03-01T09:00:00Z"));
    let election = ctx.clone().election("election-nobody");
    let session = ctx.clone().session("session-nobody");
    let both = ctx
        .clone()
        .election("election-nobody")
        .session("session-nobody");
    let base = Request {
        principal: &team,
        action: Action::Read,
        member: eligible,
        field: "name",
        context: &ctx,
    };
    let unknown_principal = |p: &PrincipalId| RequestError::UnknownPrincipal(p.to_string());
    let dangling = RequestError::DanglingReference {
        from: format!("Member::{:?}", ids::MEMBER_ELIGIBLE),
        kind: "CLP",
        id: "clp-nowhere".into(),
    };
    let unknown_election = RequestError::UnknownElection("election-nobody".into());
    // Each case: the request, its error, and the error of the questions on every field
    // (which name no field).
    let cases: Vec<(Request, RequestError, Option<RequestError>)> = vec![
        (
            Request {
                principal: &nobody,
                ..base
            },
            unknown_principal(&nobody),
            None,
        ),
        (
            Request {
                principal: &misfiled,
                ..base
            },
            unknown_principal(&misfiled),
            None,
        ),
        (
            Request {
                member: lost,
                ..base
            },
            dangling,
            None,
        ),
        (
            Request {
                field: "shoe_size",
                ..base
            },
            RequestError::UnknownField("shoe_size".into()),
            None,
        ),
        (
            Request {
                field: "minimal_record",
                ..base
            },
            RequestError::UnknownField("minimal_record".into()),
            None,
        ),
        (
            Request {
                context: &election,
                ..base
            },
            unknown_election.clone(),
            None,
        ),
        (
            Request {
                context: &session,
                ..base
            },
            RequestError::UnknownSession("session-nobody".into()),
            None,
        ),
        (
            Request {
                member: lost,
                field: "shoe_size",
                context: &election,
                ..base
            },
            RequestError::UnknownField("shoe_size".into()),
            Some(unknown_election.clone()),
        ),
        (
            Request {
                principal: &v_nobody,
                member: lost,
                context: &session,
                ..base
            },
            unknown_principal(&v_nobody),
            None,
        ),
        (
            Request {
                member: lost,
                context: &both,
                ..base
            },
            unknown_election.clone(),
            None,
        ),
        (
            Request {
                member: lost,
                context: &session,
                ..base
            },
            RequestError::UnknownSession("session-nobody".into()),
            None,
        ),
        (
            Request {
                context: &both,
                ..base
            },
            unknown_election,
            None,
        ),
    ];
    for (req, want, want_all_fields) in &cases {
        assert_refused(e, dir, req, want);
        if let Some(want) = want_all_fields {
            assert_refused(
                e,
                dir,
                &Request {
                    field: "name",
                    ..*req
                },
                want,
            );
        }
        // Both paths agree on a page of the member between a good and another bad one.
        let all = req.all_fields();
        let members = [eligible, req.member, undated];
        let pg = page(&all, &members);
        let r = e.reference();
        let got = e.field_decisions_page(dir, &pg);
        assert!(got.is_err(), "{req:?}");
        assert_eq!(got, r.field_decisions_page(dir, &pg), "{req:?}");
        assert_eq!(
            e.permitted_fields_page(dir, &pg),
            r.permitted_fields_page(dir, &pg),
            "{req:?}"
        );
    }
}

/// A directory is compiled for one engine: another engine (even of the same policies)
/// refuses it, on every question and both paths, before looking at the request (but for
/// its field); rebuilt for that engine, it is decided.
#[test]
fn a_directory_built_for_another_engine_is_refused() {
    let other = Engine::from_dir(policies_dir()).expect("load");
    let ask = Ask::new(
        fixture(),
        principal(r#"Staff::"s-membership""#),
        Action::Read,
        "m-eligible",
        "name",
        Context::at(t("2021-03-01T09:00:00Z")),
    );
    let dir = fixture_directory();
    assert_refused(&other, dir, &ask.request(), &RequestError::ForeignDirectory);
    // An unknown principal or election is not looked for in a foreign directory.
    let mut unknown = ask.clone();
    unknown.principal = principal(r#"Staff::"s-nobody""#);
    unknown.context = unknown.context.election("election-nobody");
    assert_refused(
        &other,
        dir,
        &unknown.request(),
        &RequestError::ForeignDirectory,
    );
    // The field is checked first.
    let mut no_field = ask.clone();
    no_field.field = "shoe_size".into();
    assert_refused(
        &other,
        dir,
        &no_field.request(),
        &RequestError::UnknownField("shoe_size".into()),
    );
    // Rebuilt for the other engine: the same records, decided as on the first.
    let rebuilt = dir.for_engine(&other).expect("the same records");
    assert_eq!(rebuilt.records(), dir.records());
    assert_eq!(
        every_question(&other, &rebuilt, &ask.request()),
        every_question(engine(), dir, &ask.request())
    );
    // And the first engine refuses the rebuilt one.
    assert_refused(
        engine(),
        &rebuilt,
        &ask.request(),
        &RequestError::ForeignDirectory,
    );
}

// ------------------------------------------------------------------ records

/// `record` under `id` must be refused with `want`, whether it enters an existing
/// directory of the fixture (which is then left unchanged) or is part of the records a
/// directory is built from.
fn assert_record_refused(id: &str, record: DirectoryRecord, want: &RecordError) {
    let mut dir = fixture_directory().clone();
    assert_eq!(
        dir.upsert(id, record.clone()).as_ref(),
        Err(want),
        "upsert {id}"
    );
    assert_eq!(dir.records(), fixture_directory().records(), "{id}");
    let mut party = fixture().clone();
    insert_record(&mut party, id, record);
    assert_eq!(
        Directory::from_membership(engine(), &party)
            .map(drop)
            .as_ref(),
        Err(want),
        "from_membership {id}"
    );
}

/// A reference from a principal-side record to a record the directory lacks used to fail
/// each request that read it; it is now refused when the record enters the directory
/// (`Directory::from_membership` or `upsert`). The unbroken records decide the requests
/// that read them.
#[test]
fn dangling_references_are_refused_when_the_records_enter() {
    type Break = fn(&Membership) -> (&'static str, DirectoryRecord);
    let read = |p: &str, member: &str, ctx: Context| {
        Ask::new(fixture(), principal(p), Action::Read, member, "name", ctx)
    };
    let at = || Context::at(t("2020-03-01T12:00:00Z"));
    let cases: Vec<(Break, Ask, &str, &str, &str)> = vec![
        (
            |m| {
                let mut r = m.clps["islington-north"].clone();
                r.region = "atlantis".into();
                ("islington-north", r.into())
            },
            read(r#"Staff::"s-membership""#, "m-eligible", at()),
            r#"Clp::"islington-north""#,
            "region",
            "atlantis",
        ),
        (
            |m| {
                let mut r = m.staff["s-regional"].clone();
                r.region = Some("atlantis".into());
                ("s-regional", r.into())
            },
            read(r#"Staff::"s-regional""#, "m-eligible", at()),
            r#"Staff::"s-regional""#,
            "region",
            "atlantis",
        ),
        (
            |m| {
                let mut r = m.officers["o-secretary"].clone();
                r.clp = "no-such-clp".into();
                ("o-secretary", r.into())
            },
            read(r#"Officer::"o-secretary""#, "m-eligible", at()),
            r#"Officer::"o-secretary""#,
            "CLP",
            "no-such-clp",
        ),
        (
            |m| {
                let mut r = m.campaign_staff["cs-a"].clone();
                r.campaign = "camp-ghost".into();
                ("cs-a", r.into())
            },
            read(
                r#"CampaignStaff::"cs-a""#,
                "m-eligible",
                at().election("leader-2020"),
            ),
            r#"CampaignStaff::"cs-a""#,
            "campaign",
            "camp-ghost",
        ),
        (
            |m| {
                let mut r = m.campaigns["camp-a"].clone();
                r.candidate = "cand-ghost".into();
                ("camp-a", r.into())
            },
            read(
                r#"CampaignStaff::"cs-a""#,
                "m-eligible",
                at().election("leader-2020"),
            ),
            r#"Campaign::"camp-a""#,
            "candidate",
            "cand-ghost",
        ),
        (
            |m| {
                let mut r = m.campaigns["camp-a"].clone();
                r.election = "election-ghost".into();
                ("camp-a", r.into())
            },
            read(r#"CampaignStaff::"cs-a""#, "m-eligible", at()),
            r#"Campaign::"camp-a""#,
            "election",
            "election-ghost",
        ),
        (
            |m| {
                let mut r = m.call_sessions["session-a"].clone();
                r.volunteer = "v-ghost".into();
                ("session-a", r.into())
            },
            read(
                r#"Volunteer::"v-assigned""#,
                "m-eligible",
                at().session("session-a"),
            ),
            r#"CallSession::"session-a""#,
            "volunteer",
            "v-ghost",
        ),
    ];
    for (brk, ask, from, kind, id) in cases {
        let (key, record) = brk(fixture());
        let want = RecordError::Dangling {
            from: from.into(),
            kind,
            id: id.into(),
        };
        assert_record_refused(key, record, &want);
        // The unbroken records decide the same request, on both paths.
        every_question(engine(), fixture_directory(), &ask.request())
            .unwrap_or_else(|e| panic!("{ask:?}: {e}"));
    }
}

#[test]
fn a_processor_contract_naming_an_unknown_field_is_refused_when_it_enters() {
    let (id, processor) = fixture()
        .processors
        .iter()
        .next()
        .expect("the fixture has a processor");
    let mut processor = processor.clone();
    processor.contract.fields.push("nmae".into());
    let want = RecordError::UnknownField {
        what: format!("Processor::{id:?}"),
        field: "nmae".into(),
    };
    assert!(want.to_string().contains("nmae"), "{want}");
    assert_record_refused(id, processor.into(), &want);
}

/// A principal-side time Cedar's datetime cannot hold is refused when the record enters.
#[test]
fn a_record_time_cedar_cannot_hold_is_refused_when_it_enters() {
    let mut staffer = fixture().staff["s-membership"].clone();
    staffer.ended_at = Some(Timestamp::MIN);
    let mut dir = fixture_directory().clone();
    let err = dir.upsert("s-membership", staffer.clone()).unwrap_err();
    match &err {
        RecordError::Invalid { what, message } => {
            assert_eq!(what, r#"Staff::"s-membership""#);
            assert!(message.contains("datetime"), "{message}");
        }
        other => panic!("expected an invalid record, got {other:?}"),
    }
    assert_record_refused("s-membership", staffer.into(), &err);
    let mut election = fixture().elections["leader-2020"].clone();
    election.ballot_close = t("-000001-12-31T23:59:59Z");
    let mut dir = fixture_directory().clone();
    let err = dir.upsert("leader-2020", election.clone()).unwrap_err();
    assert!(
        matches!(&err, RecordError::Invalid { what, .. } if what == r#"Election::"leader-2020""#),
        "{err:?}"
    );
    assert_record_refused("leader-2020", election.into(), &err);
}

// ------------------------------------------------------------------ times

#[test]
fn a_member_joined_before_year_0_is_invalid_data_not_a_panic() {
    let mut ask = Ask::new(
        fixture(),
        principal(r#"Staff::"s-membership""#),
        Action::Read,
        "m-eligible",
        "phone",
        Context::at(t("2021-03-01T09:00:00Z")),
    );
    let neighbour = member(fixture(), "m-neighbour");
    // jiff holds years -9999..=9999; Cedar's datetime holds four-digit years only.
    for joined in [Timestamp::MIN, t("-000001-12-31T23:59:59Z")] {
        ask.attrs.joined = joined;
        let req = ask.request();
        let err = engine()
            .authorize(fixture_directory(), &req)
            .expect_err("not decided");
        match &err {
            RequestError::InvalidData { what, message } => {
                assert!(what.contains("m-eligible"), "{what}");
                assert!(message.contains("datetime"), "{message}");
                assert!(message.contains(&joined.to_string()), "{message}");
            }
            other => panic!("joined {joined}: expected InvalidData, got {other:?}"),
        }
        assert_refused(engine(), fixture_directory(), &req, &err);
        // A page with the member fails whole, on both paths.
        let all = req.all_fields();
        let members = [neighbour, req.member];
        let pg = page(&all, &members);
        assert_eq!(
            engine().permitted_fields_page(fixture_directory(), &pg),
            Err(err.clone())
        );
        assert_eq!(
            engine()
                .reference()
                .permitted_fields_page(fixture_directory(), &pg),
            Err(err.clone())
        );
    }
}

#[test]
fn a_member_joined_at_the_edges_cedar_holds_is_decided() {
    let mut ask = Ask::new(
        fixture(),
        principal(r#"Staff::"s-membership""#),
        Action::Read,
        "m-eligible",
        "phone",
        Context::at(t("2021-03-01T09:00:00Z")),
    );
    let usual = every_question(engine(), fixture_directory(), &ask.request()).expect("decided");
    assert!(usual.is_allowed());
    // Year 0 and jiff's last instant (9999-12-30) both fit Cedar's datetime.
    for joined in [t("0000-01-01T00:00:00Z"), Timestamp::MAX] {
        ask.attrs.joined = joined;
        assert_eq!(
            every_question(engine(), fixture_directory(), &ask.request()),
            Ok(usual.clone()),
            "{joined}"
        );
    }
}

#[test]
fn a_request_time_cedar_cannot_hold_is_an_error() {
    let ask = Ask::new(
        fixture(),
        principal(r#"Staff::"s-membership""#),
        Action::Read,
        "m-eligible",
        "phone",
        Context::at(Timestamp::MIN),
    );
    let req = ask.request();
    let err = engine()
        .reference()
        .authorize(fixture_directory(), &req)
        .expect_err("not decided");
    match &err {
        RequestError::InvalidContext(m) => assert!(m.contains("datetime"), "{m}"),
        other => panic!("expected an error about the time, got {other:?}"),
    }
    assert_refused(engine(), fixture_directory(), &req, &err);
}

#[test]
fn a_page_with_one_bad_member_fails_whole() {
    let p = principal(r#"Staff::"s-membership""#);
    let ctx = Context::at(t("2021-03-01T09:00:00Z"));
    // Well-formed records (the fixture also holds a deliberately malformed one).
    let known: Vec<MemberRef> = [
        "m-eligible",
        "m-late",
        "m-former-2009",
        "m-neighbour",
        "m-no-email",
    ]
    .into_iter()
    .map(|id| member(fixture(), id))
    .collect();
    // Once an unknown member; now the caller holds every member it asks about, and a
    // member the directory cannot place (its CLP is unknown) is the bad one.
    let mut lost = fixture().members["m-arrears"].clone();
    lost.clp = "no-such-clp".into();
    let bad = MemberRef {
        id: "m-arrears",
        attrs: &lost,
    };
    let want = RequestError::DanglingReference {
        from: r#"Member::"m-arrears""#.into(),
        kind: "CLP",
        id: "no-such-clp".into(),
    };
    let (e, dir) = (engine(), fixture_directory());
    let r = e.reference();
    for at in [0, known.len() / 2, known.len()] {
        let mut members = known.clone();
        members.insert(at, bad);
        let req = membergate::PageRequest {
            principal: &p,
            action: Action::Read,
            members: &members,
            context: &ctx,
        };
        let want = Err(want.clone());
        assert_eq!(
            e.permitted_fields_page(dir, &req),
            want,
            "bad member at {at}"
        );
        assert_eq!(
            r.permitted_fields_page(dir, &req),
            want,
            "bad member at {at}"
        );
        assert_eq!(
            e.field_decisions_page(dir, &req).map(drop),
            want.clone().map(drop),
            "bad member at {at}"
        );
        assert_eq!(
            r.field_decisions_page(dir, &req).map(drop),
            want.map(drop),
            "bad member at {at}"
        );
    }
    // Without it the page is answered.
    let req = membergate::PageRequest {
        principal: &p,
        action: Action::Read,
        members: &known,
        context: &ctx,
    };
    let sets = crate::support::field_decisions_page(e, dir, &req).expect("known members");
    assert_eq!(sets.len(), known.len());
}

// ------------------------------------------------------------------ parsing

#[test]
fn malformed_principals_are_errors_naming_the_input() {
    let cases = [
        (r#"Staff:"x""#, "expected `Type::\"id\"`"),
        (r#"Nobody::"x""#, "unknown principal type `Nobody`"),
        ("", "expected `Type::\"id\"`"),
        ("Staff::x", "expected `Type::\"id\"`"),
        (r#"Action::"read""#, "unknown principal type `Action`"),
        (r#"Member::"m-1""#, "unknown principal type `Member`"),
    ];
    for (input, why) in cases {
        let err = input
            .parse::<PrincipalId>()
            .expect_err(&format!("`{input}` parsed"));
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("`{input}` is not a principal")),
            "{msg}"
        );
        assert!(msg.contains(why), "{msg}");
    }
}

#[test]
fn unknown_actions_are_errors_naming_the_input() {
    for input in ["peek", "Read", "Action::\"peek\"", "", "contact"] {
        let err = input
            .parse::<Action>()
            .expect_err(&format!("`{input}` parsed"));
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("unknown action `{input}`")),
            "{msg}"
        );
        assert!(msg.contains("contact_phone"), "lists the actions: {msg}");
    }
    // Both spellings of a known action parse.
    assert_eq!("read".parse::<Action>(), Ok(Action::Read));
    assert_eq!(
        "Action::\"bulk_export\"".parse::<Action>(),
        Ok(Action::BulkExport)
    );
}

#[test]
fn principal_ids_round_trip_through_display() {
    for id in ["s-1", "a\"b", "back\\slash", "é\t", "\u{1}x\u{7f}", ""] {
        for kind in PrincipalKind::ALL {
            let p = PrincipalId::new(kind, id);
            assert_eq!(p.to_string().parse::<PrincipalId>(), Ok(p.clone()), "{p}");
        }
    }
}
