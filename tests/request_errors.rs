//! Requests the engine must refuse rather than decide: unknown records, dangling
//! references in the records, times Cedar cannot hold, pages with an unknown member, a
//! processor contract naming an unknown field; and malformed principals and actions.

use jiff::Timestamp;
use membergate::{Action, Context, Membership, PrincipalId, PrincipalKind, Request, RequestError};

use crate::support::{engine, fixture, principal, t};

// ------------------------------------------------------------------ requests

/// `req` must fail with `want` from `authorize`, `explain` and `permitted_fields` alike.
fn assert_refused(dir: &Membership, req: &Request, want: &RequestError) {
    let e = engine();
    assert_eq!(
        e.authorize(dir, req).as_ref(),
        Err(want),
        "authorize {req:?}"
    );
    assert_eq!(
        e.explain(dir, req).map(|x| x.decision).as_ref(),
        Err(want),
        "explain {req:?}"
    );
    if e.catalogue().id(&req.field).is_some() {
        assert_eq!(
            e.permitted_fields(dir, &req.principal, req.action, &req.member, &req.context)
                .as_ref(),
            Err(want),
            "permitted_fields {req:?}"
        );
        let page = [req.member.as_str()];
        assert_eq!(
            e.permitted_fields_page(dir, &req.principal, req.action, &page, &req.context)
                .as_ref(),
            Err(want),
            "permitted_fields_page {req:?}"
        );
    }
}

#[test]
fn unknown_records_in_a_request_are_errors_not_decisions() {
    let during = || Context::at(t("2020-03-01T12:00:00Z"));
    let cases = [
        (
            Request::new(
                principal(r#"Staff::"s-nobody""#),
                Action::Read,
                "m-eligible",
                "name",
                during(),
            ),
            RequestError::UnknownPrincipal(r#"Staff::"s-nobody""#.into()),
        ),
        (
            // A known id under another principal type is unknown too.
            Request::new(
                principal(r#"Officer::"s-membership""#),
                Action::Read,
                "m-eligible",
                "name",
                during(),
            ),
            RequestError::UnknownPrincipal(r#"Officer::"s-membership""#.into()),
        ),
        (
            Request::new(
                principal(r#"Staff::"s-membership""#),
                Action::Read,
                "m-nobody",
                "name",
                during(),
            ),
            RequestError::UnknownMember("m-nobody".into()),
        ),
        (
            Request::new(
                principal(r#"Staff::"s-membership""#),
                Action::Read,
                "m-eligible",
                "shoe_size",
                during(),
            ),
            RequestError::UnknownField("shoe_size".into()),
        ),
        (
            // A field class is not a field.
            Request::new(
                principal(r#"Staff::"s-membership""#),
                Action::Read,
                "m-eligible",
                "contact",
                during(),
            ),
            RequestError::UnknownField("contact".into()),
        ),
        (
            Request::new(
                principal(r#"CampaignStaff::"cs-a""#),
                Action::Read,
                "m-eligible",
                "phone",
                during().election("leader-2099"),
            ),
            RequestError::UnknownElection("leader-2099".into()),
        ),
        (
            Request::new(
                principal(r#"Volunteer::"v-assigned""#),
                Action::Read,
                "m-eligible",
                "phone",
                during().session("session-nope"),
            ),
            RequestError::UnknownSession("session-nope".into()),
        ),
    ];
    for (req, want) in &cases {
        assert_refused(fixture(), req, want);
    }
}

#[test]
fn dangling_references_in_the_records_are_errors() {
    type Break = fn(&mut Membership);
    let read = |p: &str, member: &str, ctx: Context| {
        Request::new(principal(p), Action::Read, member, "name", ctx)
    };
    let at = || Context::at(t("2020-03-01T12:00:00Z"));
    let cases: Vec<(Break, Request, &str, &str, &str)> = vec![
        (
            |m| m.members.get_mut("m-eligible").expect("m").clp = "no-such-clp".into(),
            read(r#"Staff::"s-membership""#, "m-eligible", at()),
            r#"Member::"m-eligible""#,
            "CLP",
            "no-such-clp",
        ),
        (
            |m| m.clps.get_mut("islington-north").expect("clp").region = "atlantis".into(),
            read(r#"Staff::"s-membership""#, "m-eligible", at()),
            r#"Clp::"islington-north""#,
            "region",
            "atlantis",
        ),
        (
            |m| m.staff.get_mut("s-regional").expect("s").region = Some("atlantis".into()),
            read(r#"Staff::"s-regional""#, "m-eligible", at()),
            r#"Staff::"s-regional""#,
            "region",
            "atlantis",
        ),
        (
            |m| m.officers.get_mut("o-secretary").expect("o").clp = "no-such-clp".into(),
            read(r#"Officer::"o-secretary""#, "m-eligible", at()),
            r#"Officer::"o-secretary""#,
            "CLP",
            "no-such-clp",
        ),
        (
            |m| m.campaign_staff.get_mut("cs-a").expect("cs").campaign = "camp-ghost".into(),
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
            |m| m.campaigns.get_mut("camp-a").expect("c").candidate = "cand-ghost".into(),
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
            |m| m.campaigns.get_mut("camp-a").expect("c").election = "election-ghost".into(),
            read(r#"CampaignStaff::"cs-a""#, "m-eligible", at()),
            r#"Campaign::"camp-a""#,
            "election",
            "election-ghost",
        ),
        (
            |m| m.call_sessions.get_mut("session-a").expect("s").volunteer = "v-ghost".into(),
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
    for (brk, req, from, kind, id) in cases {
        let mut party = fixture().clone();
        brk(&mut party);
        let want = RequestError::DanglingReference {
            from: from.into(),
            kind,
            id: id.into(),
        };
        assert_refused(&party, &req, &want);
        // The unbroken records decide the same request.
        assert!(engine().authorize(fixture(), &req).is_ok(), "{req:?}");
    }
}

#[test]
fn a_member_joined_before_year_0_is_invalid_data_not_a_panic() {
    let ctx = Context::at(t("2021-03-01T09:00:00Z"));
    let req = Request::new(
        principal(r#"Staff::"s-membership""#),
        Action::Read,
        "m-eligible",
        "phone",
        ctx,
    );
    // jiff holds years -9999..=9999; Cedar's datetime holds four-digit years only.
    for joined in [Timestamp::MIN, t("-000001-12-31T23:59:59Z")] {
        let mut party = fixture().clone();
        party.members.get_mut("m-eligible").expect("m").joined = joined;
        match engine().authorize(&party, &req) {
            Err(RequestError::InvalidData { what, message }) => {
                assert_eq!(what, r#"Member::"m-eligible""#);
                assert!(message.contains("joined"), "{message}");
            }
            other => panic!("joined {joined}: expected InvalidData, got {other:?}"),
        }
        let page = ["m-neighbour", "m-eligible"];
        assert!(engine()
            .permitted_fields_page(&party, &req.principal, Action::Read, &page, &req.context)
            .is_err());
    }
}

#[test]
fn a_member_joined_at_the_edges_cedar_holds_is_decided() {
    let req = Request::new(
        principal(r#"Staff::"s-membership""#),
        Action::Read,
        "m-eligible",
        "phone",
        Context::at(t("2021-03-01T09:00:00Z")),
    );
    let usual = engine().authorize(fixture(), &req).expect("decided");
    assert!(usual.is_allowed());
    // Year 0 and jiff's last instant (9999-12-30) both fit Cedar's datetime.
    for joined in [t("0000-01-01T00:00:00Z"), Timestamp::MAX] {
        let mut party = fixture().clone();
        party.members.get_mut("m-eligible").expect("m").joined = joined;
        assert_eq!(
            engine().authorize(&party, &req),
            Ok(usual.clone()),
            "{joined}"
        );
    }
}

#[test]
fn a_request_time_cedar_cannot_hold_is_an_error() {
    let req = Request::new(
        principal(r#"Staff::"s-membership""#),
        Action::Read,
        "m-eligible",
        "phone",
        Context::at(Timestamp::MIN),
    );
    for result in [
        engine().authorize(fixture(), &req).map(|_| ()),
        engine().explain(fixture(), &req).map(|_| ()),
        engine()
            .permitted_fields(
                fixture(),
                &req.principal,
                req.action,
                &req.member,
                &req.context,
            )
            .map(|_| ()),
    ] {
        match result {
            Err(RequestError::Invalid(m)) | Err(RequestError::InvalidData { message: m, .. }) => {
                assert!(m.contains("datetime"), "{m}")
            }
            other => panic!("expected an error about the time, got {other:?}"),
        }
    }
}

#[test]
fn a_page_with_one_unknown_member_fails_whole() {
    let p = principal(r#"Staff::"s-membership""#);
    let ctx = Context::at(t("2021-03-01T09:00:00Z"));
    // Well-formed records (the fixture also holds a deliberately malformed one).
    let known = vec![
        "m-eligible",
        "m-late",
        "m-former-2009",
        "m-neighbour",
        "m-no-email",
    ];
    for at in [0, known.len() / 2, known.len()] {
        let mut page = known.clone();
        page.insert(at, "m-nobody");
        assert_eq!(
            engine().permitted_fields_page(fixture(), &p, Action::Read, &page, &ctx),
            Err(RequestError::UnknownMember("m-nobody".into())),
            "unknown member at {at}"
        );
    }
    // Without it the page is answered.
    let sets = engine()
        .permitted_fields_page(fixture(), &p, Action::Read, &known, &ctx)
        .expect("known members");
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

#[test]
fn a_processor_contract_naming_an_unknown_field_is_an_error() {
    let mut party = fixture().clone();
    let processor = party
        .processors
        .values_mut()
        .next()
        .expect("the fixture has a processor");
    processor.contract.fields.push("nmae".into());
    let id = party.processors.keys().next().expect("processor").clone();
    let req = Request::new(
        PrincipalId::new(PrincipalKind::Processor, id),
        Action::Read,
        "m-eligible",
        "name",
        Context::at(t("2021-03-01T12:00:00Z")),
    );
    match engine().authorize(&party, &req) {
        Err(RequestError::UnknownField(msg)) => assert!(msg.contains("nmae"), "{msg}"),
        other => panic!("expected an unknown-field error, got {other:?}"),
    }
}
