//! The `membergate` binary's `check`, `test`, `fields` and `plan` commands: exit codes,
//! the place of a problem, the pass and fail counts, usage errors, the JSON field list,
//! and plans with their SQL, values bound.

use std::fs;

use membergate::{Action, Context, Engine};

use crate::support::{
    directory, engine, fixture, fixture_directory, membergate, permitted_fields, policies_dir,
    principal, stderr, stdout, t, Ask, PolicyCopy, PER_MEMBER_POLICY, POLICY_SYNTAX,
};

/// The `N passed, M failed` counts of the last line of `membergate test`.
fn summary(out: &str) -> (usize, usize) {
    let last = out.lines().last().expect("output");
    let parsed = last.strip_suffix(" failed").and_then(|s| {
        let (passed, failed) = s.split_once(" passed, ")?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        (digits(passed) && digits(failed)).then(|| (passed.parse().ok(), failed.parse().ok()))
    });
    match parsed {
        Some((Some(p), Some(f))) => (p, f),
        _ => panic!("last line {last:?} is not `N passed, M failed`"),
    }
}

#[test]
fn cli_check_on_broken_policies_names_file_line_column() {
    let copy = PolicyCopy::new();
    let place = copy.mutate(&POLICY_SYNTAX);
    let dir = copy.path().to_str().expect("utf-8 path");
    let out = membergate(&["check", "--policies", dir]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    let want = format!("{}:{}:{}", place.file.display(), place.line, place.column);
    assert!(all.contains(&want), "no {want} in:\n{all}");
    assert!(all.contains("unexpected token `when`"), "{all}");
}

#[test]
fn cli_check_on_bundled_policies_succeeds() {
    let dir = policies_dir();
    let out = membergate(&["check", "--policies", dir.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("ok"), "{}", stdout(&out));
}

#[test]
fn cli_test_on_bundled_policies_passes() {
    let dir = policies_dir();
    let out = membergate(&["test", "--policies", dir.to_str().expect("utf-8")]);
    let text = stdout(&out);
    let (passed, failed) = summary(&text);
    let failures: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(failed, 0, "failing cases: {failures:#?}");
    assert!(passed > 100, "{passed} cases");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn cli_test_with_a_broken_policy_fails_with_counts() {
    let copy = PolicyCopy::new();
    // Ended roles keep their access (and live ones lose it): suites must catch it.
    copy.edit(
        "guardrails.cedar",
        "principal.ended_at <= context.now",
        "principal.ended_at > context.now",
    );
    Engine::from_dir(copy.path()).expect("the broken policy still validates");
    let out = membergate(&["test", "--policies", copy.path().to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    let (passed, failed) = summary(&text);
    assert!(failed > 0 && passed > 0, "{passed} passed, {failed} failed");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("FAIL")).count(),
        failed
    );
}

#[test]
fn cli_malformed_principal_is_a_usage_error() {
    let out = membergate(&[
        "fields",
        "--principal",
        r#"Nobody::"x""#,
        "--member",
        "m-00001",
        "--at",
        "2020-03-01T12:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("--principal"), "{err}");
    assert!(err.contains("unknown principal type `Nobody`"), "{err}");
}

#[test]
fn cli_unknown_member_is_an_error() {
    let out = membergate(&[
        "fields",
        "--principal",
        r#"Staff::"s-membership""#,
        "--member",
        "no-such-member",
        "--at",
        "2020-03-01T12:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("unknown member `no-such-member`"), "{err}");
    assert!(
        stdout(&out).is_empty(),
        "no partial answer: {}",
        stdout(&out)
    );
}

#[test]
fn cli_fields_json_lists_the_allowed_fields_as_permitted() {
    let fixture_path = policies_dir().join("tests/fixtures/party.toml");
    let out = membergate(&[
        "fields",
        "--principal",
        r#"CampaignStaff::"cs-a""#,
        "--member",
        "m-eligible",
        "--at",
        "2020-03-01T12:00:00Z",
        "--election",
        "leader-2020",
        "--data",
        fixture_path.to_str().expect("utf-8"),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let permitted: Vec<&str> = json["permitted"]
        .as_array()
        .expect("permitted")
        .iter()
        .map(|v| v.as_str().expect("name"))
        .collect();
    let rows = json["fields"].as_array().expect("fields");
    assert_eq!(rows.len(), engine().catalogue().len());
    let allowed: Vec<&str> = rows
        .iter()
        .filter(|r| r["decision"] == "allow")
        .map(|r| r["field"].as_str().expect("field"))
        .collect();
    assert_eq!(permitted, allowed);
    assert!(rows
        .iter()
        .all(|r| r["decision"] == "allow" || r["decision"] == "deny"));
    // The same answer as the library's (on both paths).
    let ask = Ask::new(
        fixture(),
        principal(r#"CampaignStaff::"cs-a""#),
        Action::Read,
        "m-eligible",
        "name",
        Context::at(t("2020-03-01T12:00:00Z")).election("leader-2020"),
    );
    let set = permitted_fields(engine(), fixture_directory(), &ask.all_fields()).expect("decided");
    assert_eq!(permitted, engine().catalogue().names(set));
    assert!(!permitted.is_empty() && permitted.len() < rows.len());
    assert_eq!(json["principal"], r#"CampaignStaff::"cs-a""#);
    assert_eq!(json["member"], "m-eligible");
}

#[test]
fn cli_malformed_membership_data_names_the_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("party.json");
    fs::write(
        &data,
        "{\n  \"members\": {\n    \"m-1\": { \"status\": \"membre\" }\n  }\n}\n",
    )
    .expect("write");
    let data_arg = data.to_string_lossy().into_owned();
    let out = membergate(&[
        "fields",
        "--principal",
        r#"Staff::"s-membership""#,
        "--member",
        "m-1",
        "--at",
        "2020-03-01T12:00:00Z",
        "--data",
        &data_arg,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("party.json"), "{err}");
    assert!(err.contains("membre") && err.contains("line 3"), "{err}");
    assert!(
        stdout(&out).is_empty(),
        "no partial answer: {}",
        stdout(&out)
    );
}

/// The arguments of `membergate plan` for the CLP secretary reading, then `extra`.
fn plan_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "plan",
        "--principal",
        r#"Officer::"o-secretary-001""#,
        "--action",
        "read",
        "--at",
        "2024-05-01T09:00:00Z",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn cli_plan_prints_each_fields_plan() {
    let out = membergate(&plan_args(&[]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let first = text.lines().next().expect("a header");
    assert!(
        first.contains(r#"Officer::"o-secretary-001""#)
            && first.contains("read")
            && first.contains("2024-05-01T09:00:00Z"),
        "{first}"
    );
    let line = |field: &str| {
        let prefix = format!("{field}: ");
        text.lines()
            .map(str::trim_start)
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{text}"))
            .to_string()
    };
    // Their own CLP's members, but for those who left more than two years ago.
    assert!(line("name").contains("clp in (clp-001)"), "{text}");
    assert!(
        line("name").contains("status in (former, expelled)"),
        "{text}"
    );
    assert_eq!(line("payment_details"), "no member");
    assert_eq!(line("any field"), line("name"));
    // One line per catalogue field, then "any field", after the header.
    assert_eq!(
        text.lines().count(),
        1 + engine().catalogue().len() + 1,
        "{text}"
    );
    // The same plans as the library's.
    let plan = engine()
        .plan(
            directory(),
            &principal(r#"Officer::"o-secretary-001""#),
            Action::Read,
            &Context::at(t("2024-05-01T09:00:00Z")),
        )
        .expect("a plan");
    for (field, p) in plan.fields() {
        assert_eq!(line(field), p.to_string(), "{field}");
    }
}

#[test]
fn cli_plan_sql_binds_every_value() {
    let out = membergate(&plan_args(&["--sql", "postgres"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let sql = text
        .lines()
        .find(|l| l.starts_with("SELECT "))
        .unwrap_or_else(|| panic!("no SELECT line in:\n{text}"));
    assert!(sql.contains("$1") && sql.contains("CASE WHEN"), "{sql}");
    assert!(sql.contains(r#"FROM "members" WHERE "#), "{sql}");
    assert!(sql.contains(r#"NULL AS "payment_details""#), "{sql}");
    // Request values are bound, never in the SQL text.
    for value in ["clp-001", "former", "expelled"] {
        assert!(!sql.contains(value), "`{value}` in the SQL: {sql}");
    }
    let values: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| l.trim_start().split_once(" = "))
        .filter(|(mark, _)| mark.starts_with('$'))
        .collect();
    assert!(values.contains(&("$4", "'clp-001'")), "{values:?}");
    // Every placeholder has its value, numbered from 1.
    for (i, (mark, _)) in values.iter().enumerate() {
        assert_eq!(*mark, format!("${}", i + 1));
        assert!(sql.contains(*mark), "{mark} not in the SQL");
    }
    assert!(!sql.contains(&format!("${}", values.len() + 1)), "{sql}");

    // JSON: the same query and values, and each field's plan.
    let out = membergate(&plan_args(&["--sql", "postgres", "--json"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["sql"], sql);
    assert_eq!(
        json["values"].as_array().expect("values").len(),
        values.len()
    );
    assert_eq!(json["principal"], r#"Officer::"o-secretary-001""#);
    let fields = json["fields"].as_array().expect("fields");
    assert_eq!(fields.len(), engine().catalogue().len());
    assert!(fields
        .iter()
        .any(|f| f["field"] == "payment_details" && f["plan"] == "no member"));
    assert!(fields.iter().all(|f| f["exact"] == true));
}

#[test]
fn cli_plan_for_an_unknown_principal_is_an_error() {
    let out = membergate(&[
        "plan",
        "--principal",
        r#"Officer::"o-nobody""#,
        "--at",
        "2024-05-01T09:00:00Z",
        "--sql",
        "sqlite",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(r#"unknown principal `Officer::"o-nobody"`"#),
        "{err}"
    );
    assert!(
        stdout(&out).is_empty(),
        "no partial answer: {}",
        stdout(&out)
    );
}

#[test]
fn cli_plan_with_per_member_parts_renders_the_upper_bound_and_says_so() {
    // Two of the member's dates compared: the planner leaves it to a per-member decision.
    let copy = PolicyCopy::new();
    fs::write(copy.file("per_member.cedar"), PER_MEMBER_POLICY).expect("write");
    let dir = copy.path().to_str().expect("utf-8");
    let args = [
        "plan",
        "--policies",
        dir,
        "--principal",
        r#"Staff::"s-membership""#,
        "--action",
        "export",
        "--at",
        "2024-05-01T09:00:00Z",
        "--sql",
        "sqlite",
    ];
    let out = membergate(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("per member: part 0 of `export-short-memberships`"),
        "{text}"
    );
    assert!(text.contains("need a per-member decision"), "{text}");
    let sql = text
        .lines()
        .find(|l| l.starts_with("SELECT "))
        .unwrap_or_else(|| panic!("no SELECT line in:\n{text}"));
    assert!(sql.contains("CASE WHEN") && sql.contains('?'), "{sql}");
    assert!(
        text.lines().any(|l| l.trim_start() == "?1 = 'member'"),
        "{text}"
    );

    let out = membergate(&[&args[..], &["--json"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["exact"], false);
    assert_eq!(json["sql"], sql);
    let fields = json["fields"].as_array().expect("fields");
    assert!(fields
        .iter()
        .any(|f| f["field"] == "name" && f["exact"] == false));
    assert!(fields
        .iter()
        .any(|f| f["field"] == "ethnicity" && f["plan"] == "no member" && f["exact"] == true));
}
