//! The conformance runner: Cedar's hand-written tests pass with the reference authorizer,
//! wrong engines and malformed files are caught with the file named, and the
//! known-disagreements list is read and honoured.

use std::fs;
use std::path::{Path, PathBuf};

use cedar_compiled::conformance::{
    discover, run_all, run_file, Answer, ConformanceError, Decider, KnownDisagreements, Mismatch,
    Outcome, Reference,
};
use cedar_policy::{Decision, Entities, PolicySet, Request, Schema};
use serde_json::{json, Value};
use tempfile::TempDir;

// ------------------------------------------------------------------ helpers

/// Cedar's corpus beside this repository (`../shared/cedar-corpus`), if it is there.
fn shared_corpus() -> Option<PathBuf> {
    let root = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/cedar-corpus"
    ));
    if root.join("tests").is_dir() {
        Some(root)
    } else {
        eprintln!(
            "note: {} is absent: skipping the test on Cedar's hand-written conformance tests",
            root.display()
        );
        None
    }
}

/// The reference with every decision flipped.
struct Flip;

impl Decider for Flip {
    fn name(&self) -> &str {
        "flip"
    }
    fn decide(
        &self,
        policies: &PolicySet,
        schema: Option<&Schema>,
        entities: &Entities,
        request: &Request,
    ) -> Outcome {
        let mut o = Reference::new().decide(policies, schema, entities, request);
        o.decision = match o.decision {
            Decision::Allow => Decision::Deny,
            Decision::Deny => Decision::Allow,
        };
        o
    }
}

/// The reference without the determining policies.
struct NoReasons;

impl Decider for NoReasons {
    fn name(&self) -> &str {
        "no-reasons"
    }
    fn decide(
        &self,
        policies: &PolicySet,
        schema: Option<&Schema>,
        entities: &Entities,
        request: &Request,
    ) -> Outcome {
        let mut o = Reference::new().decide(policies, schema, entities, request);
        o.reason.clear();
        o
    }
}

const SCHEMA: &str = r#"
entity Group;
entity User in [Group];
entity Photo { owner: User };
action view appliesTo { principal: User, resource: Photo, context: { level: Long } };
"#;

/// policy0 permits owners, policy1 forbids the banned group, policy2 overflows when
/// `context.level` is 2 or more (and never holds).
const POLICIES: &str = r#"
permit(principal, action == Action::"view", resource) when { resource.owner == principal };
forbid(principal in Group::"banned", action, resource);
permit(principal, action, resource) when { context.level * 9223372036854775807 > 9223372036854775807 };
"#;

fn entities() -> Value {
    json!([
        { "uid": { "type": "Group", "id": "banned" }, "attrs": {}, "parents": [] },
        { "uid": { "type": "User", "id": "alice" }, "attrs": {}, "parents": [] },
        { "uid": { "type": "User", "id": "bob" }, "attrs": {},
          "parents": [{ "type": "Group", "id": "banned" }] },
        { "uid": { "type": "User", "id": "carol" }, "attrs": {}, "parents": [] },
        { "uid": { "type": "Photo", "id": "p1" },
          "attrs": { "owner": { "__entity": { "type": "User", "id": "alice" } } }, "parents": [] }
    ])
}

fn request(who: &str, level: i64, decision: &str, reason: &[&str], errors: &[&str]) -> Value {
    json!({
        "description": format!("{who} views p1 at level {level}"),
        "principal": { "type": "User", "id": who },
        "action": { "type": "Action", "id": "view" },
        "resource": { "type": "Photo", "id": "p1" },
        "context": { "level": level },
        "validateRequest": true,
        "decision": decision,
        "reason": reason,
        "errors": errors
    })
}

/// A test whose expectations are Cedar's (allow, deny by forbid, an erroring policy,
/// default deny).
fn good_test() -> Value {
    json!({
        "policies": "data/policies.cedar",
        "entities": "data/entities.json",
        "schema": "data/schema.cedarschema",
        "shouldValidate": true,
        "requests": [
            request("alice", 1, "allow", &["policy0"], &[]),
            request("bob", 1, "deny", &["policy1"], &[]),
            request("alice", 2, "allow", &["policy0"], &["policy2"]),
            request("carol", 0, "deny", &[], &[]),
        ]
    })
}

/// A corpus root in a temporary directory: the data files, and `tests/<name>.json` for
/// each test given.
fn corpus(tests: &[(&str, Value)]) -> TempDir {
    let dir = TempDir::new().expect("temporary directory");
    let data = dir.path().join("data");
    fs::create_dir_all(&data).expect("create data");
    fs::write(data.join("schema.cedarschema"), SCHEMA).expect("write schema");
    fs::write(data.join("policies.cedar"), POLICIES).expect("write policies");
    fs::write(data.join("entities.json"), entities().to_string()).expect("write entities");
    fs::create_dir_all(dir.path().join("tests")).expect("create tests");
    for (name, test) in tests {
        let text = serde_json::to_string_pretty(test).expect("serialise");
        fs::write(dir.path().join("tests").join(format!("{name}.json")), text).expect("write test");
    }
    dir
}

fn test_path(dir: &TempDir, name: &str) -> PathBuf {
    dir.path().join("tests").join(format!("{name}.json"))
}

// ------------------------------------------------------------------ Cedar's own tests

#[test]
fn cedar_hand_written_tests_pass_with_the_reference() {
    let Some(root) = shared_corpus() else { return };
    let files = discover(&root).expect("discover");
    assert!(files.len() >= 20, "{} files", files.len());
    assert!(files.iter().all(|f| f.starts_with(root.join("tests"))));
    let summary = run_all(&root, &Reference::new(), &KnownDisagreements::none());
    let failures: Vec<String> = summary.failures.iter().map(|f| f.to_string()).collect();
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(summary.files, files.len());
    assert!(summary.requests >= 70, "{} requests", summary.requests);
    assert_eq!(summary.passed, summary.requests);
    assert_eq!(summary.failed, 0);
    assert!(summary.is_success());

    // One file alone finds its root from its own path.
    let one = run_file(&root.join("tests/multi/1.json"), &Reference::new()).expect("runs");
    assert!(one.passed(), "{one}");
    assert_eq!(one.requests, 4);
}

#[test]
fn cedar_hand_written_tests_catch_a_flipping_engine() {
    let Some(root) = shared_corpus() else { return };
    let summary = run_all(&root, &Flip, &KnownDisagreements::none());
    assert!(!summary.is_success());
    assert_eq!(summary.passed, 0);
    assert_eq!(summary.failed, summary.requests);
    assert_eq!(summary.failures.len(), summary.files);
    for report in &summary.failures {
        for m in &report.mismatches {
            assert_eq!(m.file(), report.file);
            assert!(m.to_string().contains(&report.file.display().to_string()));
        }
    }
}

// ------------------------------------------------------------------ our own corpus

#[test]
fn a_correct_test_passes_with_the_reference() {
    let dir = corpus(&[("good", good_test())]);
    let report = run_file(&test_path(&dir, "good"), &Reference::new()).expect("runs");
    assert!(report.passed(), "{report}");
    assert_eq!((report.requests, report.passed_requests()), (4, 4));
}

#[test]
fn a_flipping_engine_fails_every_request_naming_the_file() {
    let dir = corpus(&[("good", good_test())]);
    let path = test_path(&dir, "good");
    let report = run_file(&path, &Flip).expect("runs");
    assert_eq!(report.file, path);
    assert_eq!(report.failed_requests(), 4);
    let Some(Mismatch::Request {
        file,
        request,
        expected,
        got,
    }) = report.mismatches.first()
    else {
        panic!("expected a request mismatch: {report}");
    };
    assert_eq!(file, &path);
    assert_eq!(request.index, 0);
    let parsed = |text: &str| serde_json::from_str::<Value>(text).expect("JSON text");
    assert_eq!(
        parsed(&request.principal),
        json!({ "type": "User", "id": "alice" })
    );
    assert_eq!(parsed(&request.context), json!({ "level": 1 }));
    assert_eq!(expected.decision, Decision::Allow);
    let Answer::Decided(got) = got else {
        panic!("decided")
    };
    assert_eq!(got.decision, Decision::Deny);
    let text = report.mismatches[0].to_string();
    for part in [
        &path.display().to_string(),
        r#"principal User::"alice""#,
        r#"action Action::"view""#,
        r#"context {"level":1}"#,
        "expected: allow, reason [policy0], errors []",
        "got:      deny, reason [policy0], errors []",
        "differs:  decision",
    ] {
        assert!(text.contains(part), "`{part}` not in:\n{text}");
    }
}

#[test]
fn an_engine_dropping_reasons_fails_only_requests_with_reasons() {
    let dir = corpus(&[("good", good_test())]);
    let report = run_file(&test_path(&dir, "good"), &NoReasons).expect("runs");
    // Three requests have determining policies; carol's default deny has none.
    assert_eq!(report.failed_requests(), 3, "{report}");
    assert!(report
        .mismatches
        .iter()
        .all(|m| m.to_string().contains("differs:  reason\n")
            || m.to_string().ends_with("differs:  reason")));

    let summary = run_all(dir.path(), &NoReasons, &KnownDisagreements::none());
    assert_eq!((summary.passed, summary.failed), (1, 3));
    assert_eq!(summary.failures.len(), 1);
    assert_eq!(summary.failures[0].file, test_path(&dir, "good"));
}

#[test]
fn wrong_expectations_and_shouldvalidate_are_reported() {
    let mut wrong = good_test();
    wrong["shouldValidate"] = json!(false);
    wrong["requests"][1]["errors"] = json!(["policy2"]);
    let dir = corpus(&[("wrong", wrong)]);
    let report = run_file(&test_path(&dir, "wrong"), &Reference::new()).expect("runs");
    assert_eq!(report.mismatches.len(), 2, "{report}");
    assert!(matches!(
        &report.mismatches[0],
        Mismatch::Validation { expected: false, errors, .. } if errors.is_empty()
    ));
    assert!(report.mismatches[0]
        .to_string()
        .contains("shouldValidate is false but strict validation passes"));
    assert!(report.mismatches[1]
        .to_string()
        .contains("differs:  errors"));
    assert_eq!(report.failed_requests(), 1);
}

#[test]
fn a_request_the_schema_refuses_is_a_failed_request() {
    let mut test = good_test();
    test["requests"][0]["context"] = json!({ "level": "high" });
    // Unknown to the schema as a principal of `view`: refused only when validated.
    test["requests"][1]["principal"] = json!({ "type": "Group", "id": "banned" });
    test["requests"][1]["validateRequest"] = json!(false);
    // (A group is in itself: the forbid holds, as expected.)
    test["requests"][3]["principal"] = json!({ "type": "Group", "id": "banned" });
    let dir = corpus(&[("refused", test)]);
    let report = run_file(&test_path(&dir, "refused"), &Reference::new()).expect("runs");
    let unbuildable: Vec<usize> = report
        .mismatches
        .iter()
        .filter_map(|m| match m {
            Mismatch::Request {
                request,
                got: Answer::Unbuildable(_),
                ..
            } => Some(request.index),
            _ => None,
        })
        .collect();
    assert_eq!(unbuildable, vec![0, 3], "{report}");
    assert_eq!(report.failed_requests(), 2, "{report}");
    assert!(report.mismatches[0]
        .to_string()
        .contains("no decision: the schema refuses the request: context"));
}

#[test]
fn malformed_tests_are_errors_naming_the_file() {
    let mut missing = good_test();
    missing["policies"] = json!("data/nowhere.cedar");
    let mut bad_policy = good_test();
    bad_policy["schema"] = json!("data/policies.cedar");
    let dir = corpus(&[
        ("a-not-json", json!("placeholder")),
        ("b-unknown-field", {
            let mut t = good_test();
            t["extra"] = json!(1);
            t
        }),
        ("c-missing", missing),
        ("d-bad-schema", bad_policy),
        ("e-good", good_test()),
    ]);
    fs::write(test_path(&dir, "a-not-json"), "{ \"policies\": ").expect("write");

    for (name, check) in [
        (
            "a-not-json",
            (|e: &ConformanceError| matches!(e, ConformanceError::Malformed { .. }))
                as fn(&ConformanceError) -> bool,
        ),
        (
            "b-unknown-field",
            |e| matches!(e, ConformanceError::Malformed { message, .. } if message.contains("extra")),
        ),
        ("c-missing", |e| {
            matches!(
                e,
                ConformanceError::MissingInput {
                    what: "policies",
                    ..
                }
            )
        }),
        ("d-bad-schema", |e| {
            matches!(e, ConformanceError::BadInput { what: "schema", .. })
        }),
    ] {
        let path = test_path(&dir, name);
        let err = run_file(&path, &Reference::new()).expect_err(name);
        assert!(check(&err), "{name}: {err:?}");
        assert_eq!(err.file(), Some(path.as_path()));
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    // The whole run goes on past them, and fails.
    let summary = run_all(dir.path(), &Reference::new(), &KnownDisagreements::none());
    assert_eq!(summary.files, 5);
    assert_eq!(summary.errors.len(), 4);
    assert_eq!((summary.passed, summary.failed), (4, 0));
    assert!(!summary.is_success());

    // A file outside any `tests/` or `corpus-tests/` folder cannot be resolved.
    let loose = dir.path().join("data/entities.json");
    assert!(matches!(
        run_file(&loose, &Reference::new()),
        Err(ConformanceError::NoRoot { file }) if file == loose
    ));
}

#[test]
fn discovery_sorts_and_skips_entity_files() {
    let dir = corpus(&[("b", good_test()), ("a", good_test())]);
    let corpus_tests = dir.path().join("corpus-tests");
    fs::create_dir_all(&corpus_tests).expect("create");
    fs::write(corpus_tests.join("ff.json"), "{}").expect("write");
    fs::write(corpus_tests.join("ff.entities.json"), "[]").expect("write");
    fs::write(corpus_tests.join("ff.cedar"), "").expect("write");
    let found: Vec<PathBuf> = discover(dir.path()).expect("discover");
    let rel: Vec<&Path> = found
        .iter()
        .map(|f| f.strip_prefix(dir.path()).expect("under root"))
        .collect();
    assert_eq!(
        rel,
        [
            Path::new("corpus-tests/ff.json"),
            Path::new("tests/a.json"),
            Path::new("tests/b.json")
        ]
    );

    let empty = TempDir::new().expect("temporary directory");
    assert!(matches!(
        discover(empty.path()),
        Err(ConformanceError::NoTests { .. })
    ));
    let summary = run_all(empty.path(), &Reference::new(), &KnownDisagreements::none());
    assert_eq!(summary.errors.len(), 1);
    assert!(!summary.is_success());
}

// ------------------------------------------------------------------ known disagreements

#[test]
fn a_known_disagreements_file_is_parsed() {
    let file = Path::new("known.txt");
    let known = KnownDisagreements::parse(
        "# tests where the reference disagrees\n\
         \n\
         corpus-tests/abc.json   shouldValidate differs since cedar#2545\n\
         \ttests/multi/1.json\tdecimal read differently  \n",
        file,
    )
    .expect("parses");
    assert_eq!(known.len(), 2);
    assert_eq!(
        known.reason("corpus-tests/abc.json"),
        Some("shouldValidate differs since cedar#2545")
    );
    assert_eq!(
        known.reason("tests/multi/1.json"),
        Some("decimal read differently")
    );
    assert_eq!(known.reason("tests/multi/2.json"), None);
    assert!(KnownDisagreements::none().is_empty());

    for (text, line, says) in [
        ("# c\ncorpus-tests/abc.json\n", 2, "no reason"),
        ("a.json r\n\n/abs/b.json r\n", 3, "relative path"),
        ("tests/../x.json r\n", 1, "relative path"),
        ("tests/x.cedar r\n", 1, ".json"),
        ("a.json r\na.json again\n", 2, "listed twice"),
    ] {
        let err = KnownDisagreements::parse(text, file).expect_err(text);
        let ConformanceError::KnownLine { line: l, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*l, line, "{text:?}: {err}");
        assert!(
            err.to_string().starts_with(&format!("known.txt:{line}: ")),
            "{err}"
        );
        assert!(err.to_string().contains(says), "{err}");
    }
}

#[test]
fn the_repository_known_disagreements_file_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance-known.txt");
    let known = KnownDisagreements::load(&path).expect("tests/conformance-known.txt parses");
    assert!(known
        .iter()
        .all(|(p, _)| p.starts_with("corpus-tests/") || p.starts_with("tests/")));
}

#[test]
fn known_disagreements_are_reported_apart_and_judged_against_the_reference() {
    let mut wrong = good_test();
    wrong["requests"][0]["decision"] = json!("deny");
    wrong["requests"][0]["reason"] = json!([]);
    let dir = corpus(&[("good", good_test()), ("wrong", wrong)]);
    let known = KnownDisagreements::parse(
        "tests/wrong.json  expects a deny Cedar does not give\n\
         tests/gone.json  no such test\n\
         corpus-tests/elsewhere.json  under a folder not run here\n",
        Path::new("known.txt"),
    )
    .expect("parses");

    // Unlisted, the disagreement is a failure.
    let plain = run_all(dir.path(), &Reference::new(), &KnownDisagreements::none());
    assert_eq!((plain.passed, plain.failed), (7, 1));

    // Listed, the reference passes; how it differs from the file is reported apart.
    let summary = run_all(dir.path(), &Reference::new(), &known);
    assert!(summary.is_success(), "{:?}", summary.failures);
    assert_eq!((summary.passed, summary.failed), (8, 0));
    assert_eq!(summary.known.len(), 1);
    let k = &summary.known[0];
    assert_eq!(k.reason, "expects a deny Cedar does not give");
    assert_eq!(k.reference.file, test_path(&dir, "wrong"));
    assert_eq!(k.reference.failed_requests(), 1);
    assert!(!k.validation_differs());
    assert_eq!(summary.known_requests(), 1);
    assert_eq!(summary.unmatched_known, vec!["tests/gone.json".to_string()]);

    // Another engine is judged against the reference there, not against the file:
    // flipping every decision fails all 8 requests, including the listed one's request 0.
    let flipped = run_all(dir.path(), &Flip, &known);
    assert_eq!((flipped.passed, flipped.failed), (0, 8));
    let on_known = flipped
        .failures
        .iter()
        .find(|r| r.file == test_path(&dir, "wrong"))
        .expect("the listed file fails");
    let Mismatch::Request { expected, .. } = &on_known.mismatches[0] else {
        panic!("request mismatch")
    };
    assert_eq!(expected.decision, Decision::Allow, "the reference's answer");
}
