//! Policy test coverage: which policies the suites make determining, through the library
//! (`testing::Coverage`) and the CLI (`membergate test --coverage`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use membergate::testing::{CaseReport, Coverage, Expectation, TestPlan};
use membergate::Engine;

use crate::support::{membergate, policies_dir as bundled, stderr, stdout, PolicyCopy};

/// A permit for a principal type and action no case asks about: processors erasing.
const UNTESTED_POLICY: &str = r#"@id("processor-erase")
@rule("test: a permit no case exercises")
permit (principal is Processor, action == Action::"erase", resource is Member);
"#;

/// Runs every case of the suites under `dir` on its policies; the coverage, and the
/// failures (none expected).
fn run(dir: &Path) -> (Engine, Coverage, Vec<String>) {
    let engine = Engine::from_dir(dir).expect("the policies load");
    let plan = TestPlan::load(dir).expect("the suites load");
    let mut coverage = Coverage::new(&engine);
    let mut failures = Vec::new();
    for (suite, case) in plan.cases() {
        let report = plan.run(&engine, suite, case);
        coverage.record(&report);
        failures.extend(report.failure);
    }
    (engine, coverage, failures)
}

/// The bundled policies plus [`UNTESTED_POLICY`] in `extra.cedar`.
fn with_untested_policy() -> PolicyCopy {
    let copy = PolicyCopy::new();
    fs::write(copy.file("extra.cedar"), UNTESTED_POLICY).expect("write extra.cedar");
    copy
}

#[test]
fn coverage_every_bundled_policy_is_determining_in_some_case() {
    let (engine, coverage, failures) = run(&bundled());
    assert!(failures.is_empty(), "{failures:#?}");
    let ids: BTreeSet<&str> = engine.policy_ids().collect();
    let listed: BTreeSet<&str> = coverage.iter().map(|(id, _)| id).collect();
    assert_eq!(listed, ids, "coverage lists exactly the engine's policies");
    assert!(ids.len() >= 30, "{} policies", ids.len());
    let zero: Vec<(&str, usize)> = coverage.iter().filter(|(_, n)| *n == 0).collect();
    assert!(zero.is_empty(), "policies no case determines: {zero:?}");
    assert_eq!(coverage.uncovered(), Vec::<&str>::new());
    assert_eq!(coverage.covered(), ids.len());
    assert_eq!(coverage.len(), ids.len());
    assert_eq!(coverage.cases("no-such-policy"), None);

    // Independently of the recorded decisions: every case that names its determining
    // policies counts for each of them, so each count is at least the number of cases
    // naming that policy.
    let plan = TestPlan::load(bundled()).expect("the suites load");
    let mut named: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, case) in plan.cases() {
        if let Expectation::Decision {
            policies: Some(p), ..
        } = &case.expect
        {
            for id in p {
                *named.entry(id.as_str()).or_default() += 1;
            }
        }
    }
    assert!(named.len() > 20, "{} policies named by cases", named.len());
    for (id, n) in named {
        let got = coverage.cases(id).expect("a named policy is the engine's");
        assert!(got >= n, "`{id}`: {got} cases recorded, {n} cases name it");
    }
}

#[test]
fn coverage_counts_cases_once_and_ignores_foreign_ids() {
    let engine = Engine::from_dir(bundled()).expect("the policies load");
    let mut coverage = Coverage::new(&engine);
    assert_eq!(coverage.covered(), 0);
    assert_eq!(coverage.uncovered().len(), engine.policy_ids().count());
    let report = CaseReport {
        failure: None,
        determining: ["role-ended", "not-a-policy"].map(String::from).into(),
    };
    coverage.record(&report);
    coverage.record(&report);
    assert_eq!(coverage.cases("role-ended"), Some(2));
    assert_eq!(coverage.cases("not-a-policy"), None);
    assert_eq!(coverage.covered(), 1);
    assert!(!coverage.uncovered().contains(&"role-ended"));
    assert_eq!(coverage.uncovered().len(), coverage.len() - 1);
}

#[test]
fn coverage_of_a_fields_case_includes_the_forbids_that_removed_fields() {
    // One suite, one case: the membership team without a purpose gets every field but the
    // special-category ones, which `special-category-restricted` forbids.
    let copy = PolicyCopy::new();
    let tests = copy.file("tests");
    for entry in fs::read_dir(&tests).expect("read tests/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|x| x == "toml") {
            fs::remove_file(path).expect("remove suite");
        }
    }
    fs::write(
        tests.join("one.toml"),
        r#"fixture = "party"

[[case]]
name = "membership team without a purpose"
checks = "rule 11"
principal = 'Staff::"s-membership"'
action = "read"
member = "m-eligible"
at = "2021-03-01T09:00:00Z"
fields = ["name", "membership_number", "email", "phone", "address", "status", "clp", "region", "joined_on", "left_on", "payment_details", "arrears", "contact_consents", "opt_outs"]
"#,
    )
    .expect("write suite");
    let (_, coverage, failures) = run(copy.path());
    assert!(failures.is_empty(), "{failures:#?}");
    let covered: BTreeMap<&str, usize> = coverage.iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(
        covered,
        BTreeMap::from([
            ("membership-team-read", 1),
            ("special-category-restricted", 1)
        ])
    );
}

#[test]
fn coverage_reports_exactly_a_policy_no_case_exercises() {
    let copy = with_untested_policy();
    let (engine, coverage, failures) = run(copy.path());
    assert!(
        failures.is_empty(),
        "the new permit changes no case: {failures:#?}"
    );
    assert!(engine.policy_source("processor-erase").is_some());
    assert_eq!(coverage.uncovered(), ["processor-erase"]);
    assert_eq!(coverage.cases("processor-erase"), Some(0));
    assert_eq!(coverage.covered(), coverage.len() - 1);
    assert_eq!(coverage.len(), engine.policy_ids().count());
}

#[test]
fn cli_test_coverage_on_bundled_policies_lists_every_policy_and_passes() {
    let engine = Engine::from_dir(bundled()).expect("the policies load");
    let n = engine.policy_ids().count();
    let out = membergate(&["test", "--coverage"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    assert!(
        text.lines().any(|l| l.ends_with(" passed, 0 failed")),
        "{text}"
    );
    let last = text.lines().last().expect("output");
    assert_eq!(
        last,
        format!("coverage: {n} of {n} policies determining in at least one case")
    );
    for id in engine.policy_ids() {
        let row = text
            .lines()
            .find(|l| l.split(" | ").next().map(str::trim) == Some(id))
            .unwrap_or_else(|| panic!("no row for `{id}`:\n{text}"));
        let cells: Vec<&str> = row.split(" | ").map(str::trim).collect();
        let file = engine
            .policy_source(id)
            .and_then(|s| s.file.file_name())
            .expect("a source file")
            .to_string_lossy()
            .into_owned();
        assert!(cells[1].starts_with(&format!("{file}:")), "{row}");
        let cases: usize = cells[2].parse().expect("a count");
        assert!(cases > 0, "{row}");
    }
}

#[test]
fn cli_test_coverage_fails_and_names_an_uncovered_policy() {
    let copy = with_untested_policy();
    let dir = copy.path().to_str().expect("utf-8");
    let engine = Engine::from_dir(copy.path()).expect("the policies load");
    let n = engine.policy_ids().count();

    // Without --coverage the run passes: every case still passes.
    let plain = membergate(&["test", "--policies", dir]);
    assert_eq!(plain.status.code(), Some(0), "{}", stdout(&plain));

    let out = membergate(&["test", "--coverage", "--policies", dir]);
    let (text, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{text}\n{err}");
    assert!(
        text.lines().any(|l| l.ends_with(" passed, 0 failed")),
        "{text}"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[lines.len() - 2..],
        [
            format!(
                "coverage: {} of {n} policies determining in at least one case",
                n - 1
            ),
            "uncovered: processor-erase (extra.cedar:1)".to_string(),
        ]
    );
    assert!(
        err.contains("incomplete coverage") && err.contains("processor-erase"),
        "{err}"
    );
}
