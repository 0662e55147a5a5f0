//! Every parser of the crate's inputs fed mutated inputs (characters inserted, deleted and
//! replaced at random places of the bundled files): each answers with its value or a
//! clear error, never a panic. The policy directory (schema, catalogue, policies,
//! invariants), the test suites and their fixture membership, and decision-log lines.
//!
//! Cases per test: `MEMBERGATE_PARSER_CASES` (default 96).

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};

use membergate::assurance::Invariants;
use membergate::audit::{self, DecisionRecord, DecisionSink, Durability, JsonlSink};
use membergate::testing::TestPlan;
use membergate::Engine;
use proptest::prelude::*;
use proptest::sample::select;

use crate::support::{edits, engine, mutate, parser_cases as cases, t, PolicyCopy};

/// `f` returns (its result is dropped) rather than panicking.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| TestCaseError::fail(format!("{what} panicked")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn a_mutated_policy_directory_loads_or_says_why(
        file in select(vec![
            "schema.cedarschema",
            "fields.toml",
            "guardrails.cedar",
            "campaigns.cedar",
            "invariants.toml",
            "tests/staff.toml",
            "tests/fixtures/party.toml",
        ]),
        edits in edits(),
    ) {
        let copy = PolicyCopy::new();
        let text = copy.read(file);
        fs::write(copy.file(file), mutate(&text, &edits)).expect("write");
        let loaded = no_panic("Engine::from_dir", || Engine::from_dir(copy.path()))?;
        match &loaded {
            Ok(e) => {
                let invariants =
                    no_panic("Invariants::load", || Invariants::load(copy.path(), e.schema()))?;
                if let Err(err) = invariants {
                    prop_assert!(!err.to_string().is_empty(), "{file}: an empty error");
                }
            }
            Err(err) => {
                let rendered = no_panic("LoadError::render", || err.render())?;
                prop_assert!(!rendered.is_empty(), "{file}: an empty error");
            }
        }
        let plan = no_panic("TestPlan::load", || TestPlan::load(copy.path()))?;
        if let (Ok(engine), Ok(plan)) = (&loaded, &plan) {
            for (suite, case) in plan.cases().take(20) {
                no_panic("TestPlan::run", || plan.run(engine, suite, case))?;
            }
        }
    }

    #[test]
    fn a_mutated_log_line_verifies_or_is_a_break(edits in edits(), line in 0..3usize) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.jsonl");
        let sink = JsonlSink::open(&path, Durability::Flush).expect("open");
        for i in 0..3 {
            let record = DecisionRecord::rejection(
                format!("req-{i}"),
                t("2020-03-01T12:00:00Z"),
                r#"Staff::"nobody""#,
                "read",
                "m-00001",
                "unknown principal",
                engine().version(),
            );
            sink.record(&record).expect("record");
        }
        drop(sink);
        let text = fs::read_to_string(&path).expect("read");
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let mutated = mutate(&lines[line], &edits);
        let changed = mutated != lines[line];
        lines[line] = mutated;
        fs::write(&path, lines.join("\n") + "\n").expect("write");
        let report = no_panic("audit::verify", || audit::verify(&path))?;
        if let Ok(report) = report {
            // A changed line never verifies: it is the break, or it is torn.
            if changed && !lines[line].contains('\n') {
                prop_assert!(!report.is_intact(), "a mutated line verified: {}", lines[line]);
            }
        }
        no_panic("audit::query", || audit::query(&path, &audit::Filter::default()).map(drop))?.ok();
    }
}
