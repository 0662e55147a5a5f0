//! `membergate::processing`: the record of processing of the bundled policies and sample,
//! and `membergate record`.

use std::collections::BTreeSet;

use membergate::processing::{ProcessingError, ProcessingFacts, RecordOfProcessing};
use membergate::{Action, Context, Directory, Engine, PrincipalKind, ProblemKind};

use crate::support::{
    bundled, chromium, engine, headless, line_col, membergate, policies_dir, stderr, stdout,
    PolicyCopy,
};

/// The bundled facts.
fn facts() -> ProcessingFacts {
    ProcessingFacts::load(policies_dir()).unwrap_or_else(|e| panic!("{}", e.render()))
}

/// The record of the bundled sample under `engine`.
fn record_of(engine: &Engine) -> RecordOfProcessing {
    RecordOfProcessing::build(engine, bundled(), &facts()).unwrap_or_else(|e| panic!("{e}"))
}

/// The record of the bundled sample under the bundled policies with `find` replaced by
/// `replace` in `file`.
fn edited(file: &str, find: &str, replace: &str) -> RecordOfProcessing {
    let copy = PolicyCopy::new();
    copy.edit(file, find, replace);
    record_of(&Engine::from_dir(copy.path()).expect("the edited policies load"))
}

#[test]
fn every_catalogue_field_is_under_one_category_and_the_special_class_is_flagged() {
    let record = record_of(engine());
    let listed: Vec<&str> = record
        .categories
        .iter()
        .flat_map(|c| c.fields.iter().map(|f| f.name.as_str()))
        .collect();
    let catalogue: Vec<&str> = engine()
        .catalogue()
        .iter()
        .map(|(_, f)| f.name.as_str())
        .collect();
    assert_eq!(listed, catalogue, "each field once, in catalogue order");
    for c in &record.categories {
        assert!(c.fields.iter().all(|f| f.class == c.class), "{}", c.class);
    }
    let special: Vec<&str> = record
        .categories
        .iter()
        .filter(|c| c.special)
        .map(|c| c.class.as_str())
        .collect();
    assert_eq!(special, ["special_category"]);
    let text = record.to_string();
    assert_eq!(text.matches("(special category, Article 9)").count(), 1);
    for field in catalogue {
        assert_eq!(
            text.matches(&format!("\n      {field}: ")).count(),
            1,
            "{field} under the categories"
        );
    }
}

#[test]
fn each_processor_reaches_what_its_plans_give_within_its_contract() {
    let record = record_of(engine());
    let directory = Directory::from_membership(engine(), bundled()).expect("records fit");
    let processors: Vec<_> = record
        .recipients
        .iter()
        .filter(|r| r.principal.kind == PrincipalKind::Processor)
        .collect();
    assert_eq!(processors.len(), bundled().processors.len());
    for r in processors {
        let contract = r.contract.as_ref().expect("a processor's contract");
        let reached = r.fields();
        assert!(!reached.is_empty(), "{}", r.label);
        let named: BTreeSet<&str> = contract.fields.iter().map(String::as_str).collect();
        assert!(reached.is_subset(&named), "{}: {reached:?}", r.label);
        // Planned again, halfway through the contract: every action.
        let half = contract.ends.duration_since(contract.starts) / 2;
        let ctx = Context::at(contract.starts.checked_add(half).expect("a time"));
        let mut planned = BTreeSet::new();
        for action in Action::ALL {
            let plan = engine()
                .plan(&directory, &r.principal, action, &ctx)
                .expect("a plan");
            planned.extend(
                plan.fields()
                    .filter(|(_, p)| **p != membergate::plan::FieldPlan::Never)
                    .map(|(name, _)| name.to_string()),
            );
        }
        let reached: BTreeSet<String> = reached.into_iter().map(String::from).collect();
        assert_eq!(reached, planned, "{}", r.label);
    }
}

#[test]
fn a_kind_the_policies_give_nothing_is_listed_with_nothing() {
    let record = edited(
        "local.cedar",
        "permit (\n  principal is Representative,",
        "forbid (\n  principal is Representative,",
    );
    let mp = record
        .recipients
        .iter()
        .find(|r| r.principal.kind == PrincipalKind::Representative)
        .expect("the representative is listed");
    assert!(
        mp.reaches.is_empty() && mp.after_retention.is_empty(),
        "{mp:?}"
    );
    let text = record.to_string();
    assert!(
        text.contains(&format!(
            "* {}\n      nothing, at any moment planned",
            mp.label
        )),
        "{text}"
    );
    // Under the bundled policies the representative reaches its CLP's members.
    let bundled = record_of(engine());
    let before = bundled
        .recipients
        .iter()
        .find(|r| r.principal == mp.principal)
        .expect("listed");
    assert!(before.fields().contains("phone"), "{before:?}");
}

#[test]
fn granting_a_processor_one_more_field_changes_its_entry_and_no_other() {
    let before = record_of(engine());
    let after = edited(
        "processors.cedar",
        "@id(\"processor-contract-not-in-force\")",
        "@id(\"processor-mailing-phone\")\n@rule(\"13\")\npermit (principal == Processor::\"p-mailing\", action == Action::\"read\", resource is Member)\nwhen { context.field == Field::\"phone\" };\n\n@id(\"processor-contract-not-in-force\")",
    );
    assert_eq!(before.recipients.len(), after.recipients.len());
    for (b, a) in before.recipients.iter().zip(&after.recipients) {
        assert_eq!(b.principal, a.principal);
        if b.principal.id == "p-mailing" {
            let added: Vec<&str> = a.fields().difference(&b.fields()).copied().collect();
            assert_eq!(added, ["phone"]);
            let contract = a.contract.as_ref().expect("a contract");
            assert!(!contract.fields.iter().any(|f| f == "phone"), "beyond it");
        } else {
            assert_eq!(a, b, "{}", b.label);
        }
    }
}

/// Edits of `processing.toml` and the problem each must give, where the edit is.
const BAD_FACTS: &[(&str, &str, &str)] = &[
    ("transfers = ", "transfer = ", "unknown field `transfer`"),
    (
        "name = \"The Party\"",
        "name = 7",
        "invalid type: integer `7`, expected a string",
    ),
    (
        "status = \"expelled\"",
        "status = \"banned\"",
        "unknown member status `banned`",
    ),
    (
        "id = \"complaint\"",
        "id = \"subject_access\"",
        "purpose `subject_access` is empty or described twice",
    ),
];

#[test]
fn a_bad_facts_file_is_refused_at_its_line_and_column() {
    for (find, replace, message) in BAD_FACTS {
        let copy = PolicyCopy::new();
        let (text, at) = copy.edit("processing.toml", find, replace);
        let err = ProcessingFacts::load(copy.path()).expect_err(replace);
        let Some(p) = err.problems().first() else {
            panic!("{replace}: {err}")
        };
        assert_eq!(p.kind(), ProblemKind::Processing);
        assert_eq!(p.file(), copy.file("processing.toml"), "{replace}");
        assert!(p.message().contains(message), "{replace}: {}", p.message());
        // Placed at the edit: on its key or its value.
        let (line, column) = line_col(&text, at);
        assert_eq!(p.line(), line, "{replace}: {p}");
        let value = column + replace.find('=').map_or(0, |i| i + 2);
        assert!([column, value].contains(&p.column()), "{replace}: {p}");
        assert!(
            p.to_string().starts_with(&format!(
                "{}:{line}:",
                copy.file("processing.toml").display()
            )),
            "{p}"
        );
    }
}

#[test]
fn a_purpose_the_policies_name_must_be_described() {
    let copy = PolicyCopy::new();
    copy.edit(
        "processing.toml",
        "id = \"complaint\"",
        "id = \"complaints\"",
    );
    let facts = ProcessingFacts::load(copy.path()).expect("the file itself is sound");
    let err = RecordOfProcessing::build(engine(), bundled(), &facts).expect_err("complaint");
    let ProcessingError::Load(load) = &err else {
        panic!("{err}")
    };
    let [p] = load.problems() else {
        panic!("{err}")
    };
    assert_eq!(p.file(), copy.file("processing.toml"));
    assert!(p.message().contains("purpose `complaint`"), "{p}");
}

#[test]
fn the_record_names_the_policies_purposes_and_plans_with_them() {
    let record = record_of(engine());
    assert_eq!(
        record.policy_purposes,
        ["complaint", "equality_monitoring", "subject_access"]
    );
    // The membership team reads special-category fields only for a stated purpose; the
    // data protection officer reads anything only with a break-glass reason.
    let membership = record
        .recipients
        .iter()
        .find(|r| r.label.starts_with("staff, membership"))
        .expect("the membership team");
    let (_, read) = membership
        .reaches
        .iter()
        .find(|(a, _)| *a == Action::Read)
        .expect("reads");
    let views = read
        .iter()
        .find(|f| f.field == "political_views")
        .expect("political views");
    assert_eq!(views.only_with.len(), 3, "{views:?}");
    // After retention: the minimal record only, and erasure by compliance and the DPO.
    for r in &record.recipients {
        for (action, fields) in &r.after_retention {
            let minimal = fields.iter().all(|f| {
                engine()
                    .catalogue()
                    .iter()
                    .any(|(_, i)| &i.name == f && i.minimal)
            });
            assert!(
                *action == Action::Erase || minimal,
                "{}: {action} {fields:?}",
                r.label
            );
            assert_eq!(r.principal.kind, PrincipalKind::Staff, "{}", r.label);
        }
    }
    assert_eq!(
        record.members.iter().map(|(_, n)| n).sum::<usize>(),
        bundled().members.len()
    );
    let s = &record.safeguards;
    assert_eq!(s.volume_policies, ["read-volume-limit"]);
    assert!(s.guardrails.iter().any(|g| g.id == "retention-expired"
        && g.rule.as_deref() == Some("12")
        && g.comment
            .as_deref()
            .is_some_and(|c| c.starts_with("Rule 12: two years"))));
    assert_eq!(
        s.read_limits.iter().map(|l| l.principals).sum::<usize>(),
        bundled().principal_ids().count()
    );
    assert!(s.decision_log.iter().any(|k| k == "policies"));
    let invariants = s.invariants.as_ref().expect("the invariants");
    assert!(invariants
        .iter()
        .any(|(id, _)| id == "processor-contract-only"));
}

#[test]
fn cli_record_prints_the_record_and_writes_a_page_without_a_script() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let page = dir.path().join("record.html");
    let page_arg = page.to_str().expect("a UTF-8 path");
    let out = membergate(&["record", "--out", page_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("Record of processing (UK GDPR Article 30)\n"));
    assert!(text.contains("\n5. Recipients\n"), "{text}");
    let html = std::fs::read_to_string(&page).expect("the page is written");
    assert!(html.starts_with("<!DOCTYPE html>"));
    for banned in ["<script", "http://", "https://", "<link", "@import"] {
        assert!(!html.contains(banned), "{banned} in the page");
    }
    assert!(html.contains("<h2 id=\"record\">Record of processing</h2>"));
    assert!(html.contains("<h3 id=\"record-recipients\">5. Recipients</h3>"));

    // A bad facts file: exit 1 naming its line and column.
    let copy = PolicyCopy::new();
    copy.edit("processing.toml", "transfers = ", "transfer = ");
    let facts = copy.file("processing.toml");
    let bad = membergate(&["record", "--facts", facts.to_str().expect("a UTF-8 path")]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains(&format!("{}:", facts.display())),
        "{}",
        stderr(&bad)
    );
}

/// The page opened in a real browser holds every section and every recipient.
#[test]
fn the_record_renders_in_a_browser() {
    let Some(chromium) = chromium() else { return };
    let record = record_of(engine());
    let dir = tempfile::tempdir().expect("a temporary directory");
    let page = dir.path().join("record.html");
    std::fs::write(&page, record.to_html("Record of processing")).expect("write the page");
    let dom = headless(&chromium, &page, &["--dump-dom"]);
    for id in [
        "record",
        "record-controller",
        "record-purposes",
        "record-subjects",
        "record-categories",
        "record-recipients",
        "record-transfers",
        "record-retention",
        "record-safeguards",
    ] {
        assert!(dom.contains(&format!("id=\"{id}\"")), "{id} in\n{dom}");
    }
    for r in &record.recipients {
        assert!(
            dom.contains(&format!("<strong>{}</strong>", r.label)),
            "{}",
            r.label
        );
    }
}
