//! Policy assurance: the bundled invariants are proved; copies of the bundled policies
//! broken on purpose are refuted with counterexamples that Cedar's own authorizer
//! confirms, and `diff` reports each change. These run the SMT solver (cvc5 1.3+: see the
//! README); without one they fail, saying how to install it.

use std::fs;
use std::path::Path;

use cedar_policy::{Authorizer, Decision, PolicySet};
use membergate::assurance::{
    Claim, Counterexample, Direction, Invariants, SolverCommand, Verdict, Verifier, INVARIANTS_FILE,
};
use membergate::{Engine, ProblemKind};

use crate::support::{membergate, stderr, stdout, PolicyCopy};

fn verifier() -> Verifier {
    Verifier::locate().unwrap_or_else(|e| panic!("{e}"))
}

fn bundled() -> Engine {
    Engine::from_dir("policies").expect("bundled policies load")
}

/// The decision of Cedar's own authorizer on a counterexample.
fn cedar_decides(example: &Counterexample, policies: &PolicySet) -> Decision {
    Authorizer::new()
        .is_authorized(&example.request, policies, &example.entities)
        .decision()
}

#[test]
fn every_bundled_invariant_is_proved() {
    let engine = bundled();
    let invariants = Invariants::load("policies", engine.schema()).expect("invariants load");
    let results = verifier()
        .verify(engine.schema(), engine.policies(), &invariants)
        .expect("verification runs");
    assert_eq!(results.len(), invariants.len());
    for r in &results {
        assert!(
            matches!(r.verdict, Verdict::Proved),
            "{} refuted: {:?}",
            r.invariant.id,
            r.verdict
        );
        assert!(
            r.request_types > 0,
            "{} checked no request type",
            r.invariant.id
        );
    }
    // Every rule of the domain notes that is a property of the policy set has one.
    for rule in [
        "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14",
    ] {
        assert!(
            invariants.iter().any(|i| i
                .rule
                .as_deref()
                .is_some_and(|r| r.split(", ").any(|x| x == rule))),
            "no invariant for rule {rule}"
        );
    }
    // And both kinds of claim are used: the must-allow cases too.
    assert!(invariants.iter().any(|i| i.claim == Claim::Always));
}

/// A deliberate break of the bundled policies and what must catch it.
struct Break {
    name: &'static str,
    file: &'static str,
    find: &'static str,
    replace: &'static str,
    /// The invariant that must be refuted.
    refutes: &'static str,
    /// The policy `diff` must name as changed or removed.
    policy: &'static str,
    /// Which way the change goes.
    direction: Direction,
}

const BREAKS: &[Break] = &[
    Break {
        name: "drop the fee condition",
        file: "campaigns.cedar",
        find: "  principal.campaign.candidate.fee_paid &&\n",
        replace: "",
        refutes: "campaign-only-cleared-candidates",
        policy: "campaign-candidate-not-cleared",
        direction: Direction::Widened,
    },
    Break {
        name: "widen the campaign permit to all fields",
        file: "campaigns.cedar",
        find: "  context.field in FieldClass::\"identity\" || context.field in FieldClass::\"contact\"\n",
        replace: "  true\n",
        refutes: "campaign-only-identity-and-contact",
        policy: "campaign-read-contact",
        direction: Direction::Widened,
    },
    Break {
        name: "remove the revocation forbid",
        file: "guardrails.cedar",
        find: "@id(\"role-ended\")\n@rule(\"2\")\nforbid (principal, action, resource)\nwhen { principal has ended_at && principal.ended_at <= context.now };\n",
        replace: "",
        refutes: "role-ended-nothing",
        policy: "role-ended",
        direction: Direction::Widened,
    },
    Break {
        name: "drop financial fields from the campaign forbid",
        file: "campaigns.cedar",
        find: "  context.field in FieldClass::\"financial\" ||\n",
        replace: "",
        refutes: "campaign-no-financial-or-special",
        policy: "campaign-no-financial-or-special",
        direction: Direction::Widened,
    },
    Break {
        name: "let a phone-bank link work without an assignment",
        file: "volunteers.cedar",
        find: "  context.session.volunteer == principal &&\n",
        replace: "",
        refutes: "volunteer-needs-open-assigned-session",
        policy: "volunteer-needs-assignment",
        direction: Direction::Widened,
    },
    Break {
        name: "raise the read limit by one",
        file: "guardrails.cedar",
        find: "context.reads_this_hour >= principal.hourly_read_limit",
        replace: "context.reads_this_hour > principal.hourly_read_limit",
        refutes: "read-volume-limit",
        policy: "read-volume-limit",
        direction: Direction::Widened,
    },
    Break {
        name: "stop the data protection officer erasing",
        file: "staff.cedar",
        find: "(principal in Team::\"compliance\" || principal in Team::\"data_protection\") &&\n  [\"former\"",
        replace: "principal in Team::\"compliance\" &&\n  [\"former\"",
        refutes: "dpo-erases-former-member",
        policy: "erase-former-members",
        direction: Direction::Narrowed,
    },
];

/// A library caller in async code: the verifier is started, used and dropped inside a
/// tokio runtime (both flavours) without the runtime's "cannot block" panic.
#[test]
fn the_verifier_works_inside_an_async_runtime() {
    let engine = bundled();
    let invariants = Invariants::load("policies", engine.schema()).expect("invariants load");
    for multi_thread in [false, true] {
        let runtime = if multi_thread {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
        } else {
            tokio::runtime::Builder::new_current_thread().build()
        }
        .expect("a runtime");
        let proved = runtime.block_on(async {
            let mut v = verifier();
            let results = v
                .verify(engine.schema(), engine.policies(), &invariants)
                .expect("verification runs");
            drop(v);
            results
                .iter()
                .filter(|r| matches!(r.verdict, Verdict::Proved))
                .count()
        });
        assert_eq!(proved, invariants.len(), "multi_thread: {multi_thread}");
    }
}

#[test]
fn broken_copies_are_refuted_and_diffed() {
    let original = bundled();
    let mut verifier = verifier();
    for b in BREAKS {
        let copy = PolicyCopy::new();
        copy.edit(b.file, b.find, b.replace);
        let broken = Engine::from_dir(copy.path()).unwrap_or_else(|e| {
            panic!(
                "{}: the broken copy must still load: {}",
                b.name,
                e.render()
            )
        });
        let mut invariants = Invariants::load(copy.path(), broken.schema()).expect("invariants");
        invariants.retain(|i| i.id == b.refutes);
        assert_eq!(
            invariants.len(),
            1,
            "{}: no invariant {}",
            b.name,
            b.refutes
        );

        // verify: refuted, with a counterexample Cedar itself decides as claimed.
        let results = verifier
            .verify(broken.schema(), broken.policies(), &invariants)
            .expect("verification runs");
        let Verdict::Refuted(example) = &results[0].verdict else {
            panic!("{}: `{}` was not refuted", b.name, b.refutes);
        };
        let invariant = &results[0].invariant;
        let expected = match invariant.claim {
            Claim::Never => Decision::Allow,
            Claim::Always => Decision::Deny,
        };
        assert_eq!(
            cedar_decides(example, broken.policies()),
            expected,
            "{}",
            b.name
        );
        // ... on a request the invariant speaks of (its condition holds) ...
        assert_eq!(
            cedar_decides(example, &invariant_as_permit(&invariant.condition)),
            Decision::Allow,
            "{}: the counterexample is outside the invariant",
            b.name
        );
        // ... which the unbroken policies decide the other way.
        assert_ne!(
            cedar_decides(example, original.policies()),
            expected,
            "{}",
            b.name
        );

        // diff: names the policy and reports a difference in the right direction, with an
        // example the two sets decide differently.
        let diff = verifier.diff(&original, &broken).expect("diff runs");
        assert!(
            diff.changed
                .iter()
                .chain(&diff.removed)
                .any(|id| id == b.policy),
            "{}: diff does not name `{}`: {:?}",
            b.name,
            b.policy,
            (&diff.changed, &diff.removed)
        );
        assert!(!diff.equivalent(), "{}", b.name);
        let d = diff
            .differences
            .iter()
            .find(|d| d.direction == b.direction)
            .unwrap_or_else(|| panic!("{}: no {:?} difference", b.name, b.direction));
        let (now, before) = match b.direction {
            Direction::Widened => (Decision::Allow, Decision::Deny),
            Direction::Narrowed => (Decision::Deny, Decision::Allow),
        };
        assert_eq!(
            cedar_decides(&d.example, broken.policies()),
            now,
            "{}",
            b.name
        );
        assert_eq!(
            cedar_decides(&d.example, original.policies()),
            before,
            "{}",
            b.name
        );
        assert!(
            d.refinements
                .iter()
                .any(|(name, values)| name == "field class" && !values.is_empty()),
            "{}: no field class in {:?}",
            b.name,
            d.refinements
        );
    }
}

fn invariant_as_permit(condition: &str) -> PolicySet {
    format!("permit (principal, action, resource) when {{ {condition} }};")
        .parse()
        .expect("the condition parses")
}

#[test]
fn diff_of_a_directory_with_itself_is_empty() {
    let engine = bundled();
    let diff = verifier().diff(&engine, &engine).expect("diff runs");
    assert!(diff.equivalent(), "{:?}", diff.differences);
    assert!(diff.changed.is_empty() && diff.added.is_empty() && diff.removed.is_empty());
}

/// `diff` asks the solver only about request types that an added, removed or changed
/// policy can reach (by its scope). Permits scoped each way a scope can be written
/// (`principal in` a group its type may be in, `==`, `is ... in` an ancestor two levels
/// up, an action group) are still found on every request type they reach, and only there.
#[test]
fn a_change_is_found_on_every_request_type_its_scope_reaches() {
    let original = bundled();
    let copy = PolicyCopy::new();
    fs::write(
        copy.file("extra.cedar"),
        "@id(\"extra-team-contact\")\n\
         permit (principal in Team::\"data_export\", action in Action::\"contact\", resource);\n\
         @id(\"extra-processor-erase\")\n\
         permit (principal == Processor::\"p\", action == Action::\"erase\", resource in Clp::\"c\");\n\
         @id(\"extra-volunteer-update\")\n\
         permit (principal is Volunteer, action in [Action::\"update\"], resource is Member in Region::\"r\");\n",
    )
    .expect("write extra.cedar");
    let changed = Engine::from_dir(copy.path()).unwrap_or_else(|e| panic!("{}", e.render()));
    let diff = verifier().diff(&original, &changed).expect("diff runs");
    let mut added = diff.added.clone();
    added.sort();
    assert_eq!(
        added,
        [
            "extra-processor-erase",
            "extra-team-contact",
            "extra-volunteer-update"
        ]
    );
    let mut widened: Vec<&str> = diff
        .differences
        .iter()
        .map(|d| {
            assert_eq!(d.direction, Direction::Widened, "{d}");
            d.request_type.as_str()
        })
        .collect();
    widened.sort();
    assert_eq!(
        widened,
        [
            "Processor · Action::\"erase\" · Member",
            "Staff · Action::\"contact_email\" · Member",
            "Staff · Action::\"contact_phone\" · Member",
            "Staff · Action::\"contact_post\" · Member",
            "Volunteer · Action::\"update\" · Member",
        ]
    );
}

/// Two sets that differ in layout and comments only are equivalent without a solver: a
/// verifier whose "solver" answers nothing (`/bin/false`) still gives the answer.
#[test]
fn equivalent_sets_are_compared_without_the_solver() {
    let original = bundled();
    let copy = PolicyCopy::new();
    copy.edit(
        "guardrails.cedar",
        "forbid (principal, action, resource)\nwhen { principal has ended_at",
        "// reformatted\nforbid(principal,action,resource)\n  when {principal has ended_at",
    );
    let reformatted = Engine::from_dir(copy.path()).expect("loads");
    let mut mute =
        Verifier::new(SolverCommand::executable("/bin/false".into())).expect("/bin/false starts");
    for new in [&original, &reformatted] {
        let diff = mute.diff(&original, new).expect("no solver is needed");
        assert!(diff.equivalent(), "{:?}", diff.differences);
        let found = mute
            .find_widening(new.schema(), original.policies(), new.policies())
            .expect("no solver is needed");
        assert!(found.is_none());
    }
    // A real difference does need it: the mute solver gives no answer, not "equivalent".
    let removed = PolicyCopy::new();
    removed.edit(BREAKS[2].file, BREAKS[2].find, BREAKS[2].replace);
    let removed = Engine::from_dir(removed.path()).expect("loads");
    assert!(mute.diff(&original, &removed).is_err());
}

#[test]
fn baseline_catches_a_widening_and_accepts_a_narrowing() {
    let original = bundled();
    let mut verifier = verifier();
    // A narrowing (the DPO no longer erases) widens nothing.
    let narrowed = PolicyCopy::new();
    let b = BREAKS
        .iter()
        .find(|b| b.direction == Direction::Narrowed)
        .expect("a narrowing");
    narrowed.edit(b.file, b.find, b.replace);
    let narrowed = Engine::from_dir(narrowed.path()).expect("loads");
    let found = verifier
        .find_widening(narrowed.schema(), original.policies(), narrowed.policies())
        .expect("runs");
    assert!(found.is_none(), "{found:?}");
    // The fee condition dropped: a request allowed now that was denied.
    let widened = PolicyCopy::new();
    widened.edit(BREAKS[0].file, BREAKS[0].find, BREAKS[0].replace);
    let widened = Engine::from_dir(widened.path()).expect("loads");
    let example = verifier
        .find_widening(widened.schema(), original.policies(), widened.policies())
        .expect("runs")
        .expect("a widening");
    assert_eq!(cedar_decides(&example, widened.policies()), Decision::Allow);
    assert_eq!(cedar_decides(&example, original.policies()), Decision::Deny);
}

// ------------------------------------------------------------------ the CLI

#[test]
fn cli_verify_proves_the_bundle_and_refutes_a_broken_copy() {
    let out = membergate(&["verify"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(!text.contains("REFUTED"), "{text}");
    let invariants = Invariants::load("policies", bundled().schema()).expect("load");
    assert!(
        text.contains(&format!(
            "{n} invariants: {n} proved, 0 refuted, over 48 request types",
            n = invariants.len()
        )),
        "{text}"
    );

    let copy = PolicyCopy::new();
    copy.edit(BREAKS[0].file, BREAKS[0].find, BREAKS[0].replace);
    let dir = copy.path().to_str().expect("utf-8 path");
    let out = membergate(&["--policies", dir, "verify"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("REFUTED  campaign-only-cleared-candidates"),
        "{text}"
    );
    assert!(
        text.contains("fee_paid = false"),
        "the counterexample is shown: {text}"
    );
    assert!(text.contains("allowed by campaign-read-contact"), "{text}");

    // The broken copy, reviewed against the bundle as its baseline: it widens.
    let out = membergate(&["--policies", dir, "verify", "--baseline", "policies"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("REFUTED  baseline: allows nothing that policies denied"),
        "{text}"
    );
    // The bundle against itself: nothing widens.
    let out = membergate(&["verify", "--baseline", "policies"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("proved   baseline"),
        "{}",
        stdout(&out)
    );

    let out = membergate(&["diff", "policies", dir]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("policies changed: campaign-candidate-not-cleared"),
        "{text}"
    );
    assert!(
        text.contains("old: denied by campaign-candidate-not-cleared"),
        "{text}"
    );
    assert!(
        text.contains("new: allowed by campaign-read-contact"),
        "{text}"
    );

    let out = membergate(&["diff", "policies", "policies"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("equivalent"));
}

#[test]
fn cli_verify_without_a_working_solver_exits_2_and_proves_nothing() {
    for solver in ["/nonexistent/cvc5", "/bin/false", "/bin/true"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_membergate"))
            .args(["verify"])
            .env("CVC5", solver)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run membergate");
        assert_eq!(
            out.status.code(),
            Some(2),
            "CVC5={solver}: {}",
            stdout(&out)
        );
        assert!(
            !stdout(&out).contains("proved"),
            "CVC5={solver}: {}",
            stdout(&out)
        );
        assert!(
            stderr(&out).contains("error"),
            "CVC5={solver}: {}",
            stderr(&out)
        );
    }
}

// ------------------------------------------------------------------ a bad invariants file

/// Writes `text` as the invariants of a copy of the bundle and loads it.
fn load_invariants(text: &str) -> (PolicyCopy, Result<Invariants, membergate::LoadError>) {
    let copy = PolicyCopy::new();
    fs::write(copy.file(INVARIANTS_FILE), text).expect("write");
    let engine = bundled();
    let result = Invariants::load(copy.path(), engine.schema());
    (copy, result)
}

#[test]
fn bad_invariants_are_refused_with_file_line_and_column() {
    let cases: &[(&str, &str, usize, usize, &str)] = &[
        (
            "a Cedar syntax error in a condition",
            "[[invariant]]\nid = \"x\"\nsays = \"s\"\nnever = '''\nprincipal is &&\n'''\n",
            5,
            14,
            "invariant `x`",
        ),
        (
            "an attribute the principal type may not have",
            "[[invariant]]\nid = \"x\"\nsays = \"s\"\nnever = '''\nprincipal.campaign has ended_at\n'''\n",
            5,
            1,
            "campaign",
        ),
        (
            "an unknown entity type",
            "[[invariant]]\nid = \"x\"\nsays = \"s\"\nnever = \"principal is Nobody\"\n",
            4,
            23,
            "Nobody",
        ),
        (
            "neither never nor always",
            "[[invariant]]\nid = \"x\"\nsays = \"s\"\n",
            2,
            6,
            "exactly one of `never` or `always`",
        ),
        (
            "both never and always",
            "[[invariant]]\nid = \"x\"\nsays = \"s\"\nnever = \"true\"\nalways = \"true\"\n",
            2,
            6,
            "exactly one of `never` or `always`",
        ),
        (
            "a repeated id",
            "[[invariant]]\nid = \"x\"\nsays = \"s\"\nnever = \"true\"\n\n[[invariant]]\nid = \"x\"\nsays = \"t\"\nnever = \"false\"\n",
            7,
            6,
            "used twice",
        ),
        (
            "an unknown key",
            "[[invariant]]\nid = \"x\"\nsays = \"s\"\nnevr = \"true\"\n",
            4,
            1,
            "nevr",
        ),
    ];
    for (name, text, line, column, message) in cases {
        let (copy, result) = load_invariants(text);
        let err = result.expect_err(name);
        let problems = err.problems();
        assert!(!problems.is_empty(), "{name}: {err}");
        let p = &problems[0];
        assert_eq!(p.kind(), ProblemKind::Invariant, "{name}");
        assert_eq!(p.file(), copy.file(INVARIANTS_FILE), "{name}");
        assert_eq!((p.line(), p.column()), (*line, *column), "{name}: {p}");
        assert!(p.message().contains(message), "{name}: {p}");
    }
}

#[test]
fn a_missing_invariants_file_is_named() {
    let copy = PolicyCopy::new();
    fs::remove_file(copy.file(INVARIANTS_FILE)).expect("remove");
    let err = Invariants::load(copy.path(), bundled().schema()).expect_err("missing");
    assert!(err.to_string().contains("invariants.toml"), "{err}");
    let out = membergate(&["--policies", copy.path().to_str().expect("utf-8"), "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("invariants.toml"), "{}", stderr(&out));
    assert!(Path::new("policies").join(INVARIANTS_FILE).is_file());
}
