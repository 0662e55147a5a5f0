//! Policy directories, schemas, catalogues and suites that fail to load: each problem is
//! reported with its file, line and column, and every problem of every file is reported.
//!
//! Every load test works on a copy of `policies/` in a temporary directory, with one text
//! mutation per file. The expected line and column are computed from the mutated text
//! (the position of a marker inside the inserted text), never written down by hand.

use std::fs;

use membergate::sample::ids;
use membergate::testing::TestPlan;
use membergate::{
    Action, Context, Directory, Engine, LoadError, PrincipalId, PrincipalKind, Problem, ProblemKind,
};

use crate::support::{
    authorize, bundled, directory, engine, field_decisions, line_col, policies_dir, t, Ask,
    Mutation, Place, PolicyCopy, POLICY_SYNTAX,
};

// ------------------------------------------------------------------ helpers

// Loading a mutated copy, which must fail: only this module needs it.
impl PolicyCopy {
    /// The error of loading the copy's policies, schema and catalogue.
    fn load_error(&self) -> LoadError {
        match Engine::from_dir(self.path()) {
            Ok(_) => panic!("the mutated policy directory loaded"),
            Err(e) => e,
        }
    }

    /// The error of loading the copy's test suites.
    fn suite_error(&self) -> LoadError {
        match TestPlan::load(self.path()) {
            Ok(_) => panic!("the mutated test suites loaded"),
            Err(e) => e,
        }
    }
}

/// `problems`, one a line, for a failure message.
fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The problem of `problems` that `m` caused at `place`, checked in full.
fn find_problem<'a>(problems: &'a [Problem], m: &Mutation, place: &Place) -> &'a Problem {
    let found = problems.iter().find(|p| {
        p.file() == place.file
            && p.line() == place.line
            && p.column() == place.column
            && p.kind() == m.kind
            && m.message.iter().all(|f| p.message().contains(f))
    });
    found.unwrap_or_else(|| {
        panic!(
            "expected a {} at {}:{}:{} containing {:?}; got:\n{}",
            m.kind,
            place.file.display(),
            place.line,
            place.column,
            m.message,
            list(problems)
        )
    })
}

/// Which loader reads the mutated file.
#[derive(Clone, Copy)]
enum Loader {
    Engine,
    Suites,
}

/// Applies `m` to a fresh copy; the load must fail with exactly the one problem `m` causes.
fn assert_one_problem(m: &Mutation, loader: Loader) -> (PolicyCopy, Problem) {
    let copy = PolicyCopy::new();
    let place = copy.mutate(m);
    let err = match loader {
        Loader::Engine => copy.load_error(),
        Loader::Suites => copy.suite_error(),
    };
    let problems = err.problems();
    assert_eq!(
        problems.len(),
        1,
        "expected one problem, got:\n{}",
        list(problems)
    );
    let p = find_problem(problems, m, &place).clone();
    // The Display form names the place as `file:line:column`.
    let shown = p.to_string();
    let prefix = format!("{}:{}:{}: ", place.file.display(), place.line, place.column);
    assert!(
        shown.starts_with(&prefix),
        "{shown:?} should start {prefix:?}"
    );
    // The error's own message lists the problem too.
    assert!(err.to_string().contains(&shown), "{err}");
    (copy, p)
}

// ------------------------------------------------------------------ policy mutations

const UNKNOWN_ATTRIBUTE: Mutation = Mutation {
    file: "campaigns.cedar",
    find: "principal.campaign.candidate.fee_paid",
    replace: "principal.campaign.candidate.fee_payed",
    at: "principal",
    kind: ProblemKind::Validation,
    message: &["attribute `fee_payed`", "`Candidate`", "not found"],
};

/// A field the catalogue lacks: the schema cannot tell (fields are entities, not an
/// enumeration), and the forbid would never apply to any request.
const UNKNOWN_FIELD: Mutation = Mutation {
    file: "guardrails.cedar",
    find: "context.field == Field::\"email\"",
    replace: "context.field == Field::\"e-mail\"",
    at: "Field::",
    kind: ProblemKind::Validation,
    message: &[
        "contact-email-consent",
        "Field::\"e-mail\"",
        "not in fields.toml",
    ],
};

const UNKNOWN_FIELD_CLASS: Mutation = Mutation {
    file: "campaigns.cedar",
    find: "FieldClass::\"financial\"",
    replace: "FieldClass::\"finanical\"",
    at: "FieldClass",
    kind: ProblemKind::Validation,
    message: &[
        "campaign-no-financial-or-special",
        "`FieldClass::\"finanical\"`",
    ],
};

const DATETIME_VS_STRING: Mutation = Mutation {
    file: "guardrails.cedar",
    find: "principal.ended_at <= context.now",
    replace: "principal.ended_at <= \"2020-01-01\"",
    at: "\"2020-01-01\"",
    kind: ProblemKind::Validation,
    message: &["role-ended", "expected datetime but saw String"],
};

const NO_ID: Mutation = Mutation {
    file: "guardrails.cedar",
    find: "@id(\"role-ended\")\n@rule(\"2\")",
    replace: "@rule(\"2\")",
    at: "@rule",
    kind: ProblemKind::Policy,
    message: &["no `@id(\"...\")` annotation"],
};

/// `membership-team-read` in staff.cedar renamed to the id of a guardrails.cedar policy.
const DUPLICATE_ID: Mutation = Mutation {
    file: "staff.cedar",
    find: "@id(\"membership-team-read\")",
    replace: "@id(\"role-ended\")",
    at: "@id",
    kind: ProblemKind::Policy,
    message: &["duplicate policy id `role-ended`: first used at "],
};

const TEMPLATE: Mutation = Mutation {
    file: "staff.cedar",
    find: "@id(\"membership-team-read\")",
    replace: "@id(\"tmpl\")\npermit (principal == ?principal, action, resource);\n\n@id(\"membership-team-read\")",
    at: "@id(\"tmpl\")",
    kind: ProblemKind::Policy,
    message: &["templates", "not supported"],
};

const SCHEMA_SYNTAX: Mutation = Mutation {
    file: "schema.cedarschema",
    find: "entity Clp in [Region];",
    replace: "entity Clp in [Region;",
    at: ";",
    kind: ProblemKind::Schema,
    message: &["unexpected token `;`"],
};

// ------------------------------------------------------------------ catalogue mutations

const CATALOGUE_TOML: Mutation = Mutation {
    file: "fields.toml",
    find: "name = \"email\"\n",
    replace: "name = \"email\n",
    at: "\n",
    kind: ProblemKind::Catalogue,
    message: &["invalid basic string"],
};

const CATALOGUE_UNKNOWN_CLASS: Mutation = Mutation {
    file: "fields.toml",
    find: "name = \"email\"\nclass = \"contact\"",
    replace: "name = \"email\"\nclass = \"contacts\"",
    at: "\"contacts\"",
    kind: ProblemKind::Catalogue,
    message: &["field `email` does not fit the schema", "\"contacts\""],
};

const CATALOGUE_DUPLICATE: Mutation = Mutation {
    file: "fields.toml",
    find: "name = \"phone\"",
    replace: "name = \"email\"",
    at: "\"email\"",
    kind: ProblemKind::Catalogue,
    message: &["duplicate field `email`"],
};

const CATALOGUE_UNKNOWN_KEY: Mutation = Mutation {
    file: "fields.toml",
    find: "name = \"phone\"\n",
    replace: "name = \"phone\"\ncolour = \"red\"\n",
    at: "colour",
    kind: ProblemKind::Catalogue,
    message: &["unknown field `colour`"],
};

/// Columns count characters, not bytes: `é` is two bytes and one column.
const CATALOGUE_AFTER_MULTIBYTE: Mutation = Mutation {
    file: "fields.toml",
    find: "name = \"email\"\n",
    replace: "name = \"émail\" oops\n",
    at: "oops",
    kind: ProblemKind::Catalogue,
    message: &["expected newline"],
};

// ------------------------------------------------------------------ suite mutations

const SUITE_TOML: Mutation = Mutation {
    file: "tests/errors.toml",
    find: "name = \"unknown member\"\n",
    replace: "name = \"unknown member\n",
    at: "\n",
    kind: ProblemKind::TestSuite,
    message: &["invalid basic string"],
};

const SUITE_UNKNOWN_KEY: Mutation = Mutation {
    file: "tests/errors.toml",
    find: "name = \"unknown member\"\n",
    replace: "name = \"unknown member\"\ncolour = \"red\"\n",
    at: "colour",
    kind: ProblemKind::TestSuite,
    message: &["unknown field `colour`"],
};

const SUITE_BAD_PRINCIPAL: Mutation = Mutation {
    file: "tests/errors.toml",
    find: "principal = 'Staff::\"s-nobody\"'",
    replace: "principal = 'Staf:\"s-nobody\"'",
    at: "'Staf",
    kind: ProblemKind::TestSuite,
    message: &["`Staf:\"s-nobody\"` is not a principal"],
};

const SUITE_UNKNOWN_ACTION: Mutation = Mutation {
    file: "tests/errors.toml",
    find: "principal = 'Officer::\"s-membership\"'\naction = \"read\"",
    replace: "principal = 'Officer::\"s-membership\"'\naction = \"peek\"",
    at: "\"peek\"",
    kind: ProblemKind::TestSuite,
    message: &["unknown action `peek`"],
};

const SUITE_BAD_TIME: Mutation = Mutation {
    file: "tests/errors.toml",
    find: "at = \"2021-03-01T09:00:00Z\"",
    replace: "at = \"2021-13-01T09:00:00Z\"",
    at: "\"2021-13",
    kind: ProblemKind::TestSuite,
    message: &["`at` is not an RFC 3339 time"],
};

/// A case with both `field` and `fields` is reported at its `[[case]]` header.
const SUITE_FIELD_AND_FIELDS: Mutation = Mutation {
    file: "tests/errors.toml",
    find: "[[case]]\nname = \"unknown field\"\n",
    replace: "[[case]]\nname = \"unknown field\"\nfields = [\"name\"]\n",
    at: "[[case]]",
    kind: ProblemKind::TestSuite,
    message: &["case `unknown field` has both `field` and `fields`"],
};

const SUITE_DUPLICATE_CASE: Mutation = Mutation {
    file: "tests/errors.toml",
    find: "[[case]]\nname = \"unknown member\"",
    replace: "[[case]]\nname = \"unknown principal\"",
    at: "[[case]]",
    kind: ProblemKind::TestSuite,
    message: &["duplicate case name `unknown principal`"],
};

const SUITE_UNKNOWN_ACTION_CAMPAIGNS: Mutation = Mutation {
    file: "tests/campaigns.toml",
    find: "action = \"read\"",
    replace: "action = \"peek\"",
    at: "\"peek\"",
    kind: ProblemKind::TestSuite,
    message: &["unknown action `peek`"],
};

macro_rules! one_problem {
    ($($(#[$attr:meta])* $name:ident: $loader:ident, $m:expr;)*) => {
        $(
            $(#[$attr])*
            #[test]
            fn $name() {
                assert_one_problem(&$m, Loader::$loader);
            }
        )*
    };
}

one_problem! {
    policy_unknown_attribute_is_a_validation_error: Engine, UNKNOWN_ATTRIBUTE;
    policy_unknown_enumerated_field_class_is_a_validation_error: Engine, UNKNOWN_FIELD_CLASS;
    policy_naming_a_field_the_catalogue_lacks_is_refused: Engine, UNKNOWN_FIELD;
    policy_comparing_datetime_with_string_is_a_validation_error: Engine, DATETIME_VS_STRING;
    policy_without_id_is_refused: Engine, NO_ID;
    policy_template_is_refused: Engine, TEMPLATE;
    schema_syntax_error_is_reported_at_its_token: Engine, SCHEMA_SYNTAX;
    catalogue_malformed_toml_is_reported_where_it_breaks: Engine, CATALOGUE_TOML;
    catalogue_unknown_class_is_reported_at_the_class: Engine, CATALOGUE_UNKNOWN_CLASS;
    catalogue_duplicate_field_is_reported_at_the_second_name: Engine, CATALOGUE_DUPLICATE;
    catalogue_unknown_key_is_reported_at_the_key: Engine, CATALOGUE_UNKNOWN_KEY;
    catalogue_column_counts_characters: Engine, CATALOGUE_AFTER_MULTIBYTE;
    suite_malformed_toml_is_reported_where_it_breaks: Suites, SUITE_TOML;
    suite_unknown_key_is_reported_at_the_key: Suites, SUITE_UNKNOWN_KEY;
    suite_bad_principal_uid_is_reported_at_the_value: Suites, SUITE_BAD_PRINCIPAL;
    suite_unknown_action_is_reported_at_the_value: Suites, SUITE_UNKNOWN_ACTION;
    suite_bad_time_is_reported_at_the_value: Suites, SUITE_BAD_TIME;
    suite_case_with_field_and_fields_is_reported_at_the_case: Suites, SUITE_FIELD_AND_FIELDS;
    suite_duplicate_case_name_is_reported_at_the_second_case: Suites, SUITE_DUPLICATE_CASE;
}

#[test]
fn policy_syntax_error_is_reported_with_its_source_line() {
    let (copy, p) = assert_one_problem(&POLICY_SYNTAX, Loader::Engine);
    // The rendering shows the file and the offending lines of source.
    let text = copy.read("guardrails.cedar");
    let at = text
        .find("forbid (principal, action, resource\n")
        .expect("mutated");
    let (line, _) = line_col(&text, at);
    let broken = text.lines().nth(line - 1).expect("line");
    assert_eq!(broken, "forbid (principal, action, resource");
    let rendered = p.rendered();
    assert!(rendered.contains(broken), "{rendered}");
    assert!(
        rendered.contains("when { principal has ended_at"),
        "{rendered}"
    );
    let file = copy.file("guardrails.cedar").display().to_string();
    assert!(rendered.contains(&file), "{rendered}");
    // And so does the error's rendering for a person.
    let all = copy.load_error().render();
    assert!(all.contains(broken) && all.contains(&file), "{all}");
}

#[test]
fn policy_duplicate_id_across_files_names_the_first_place() {
    let (copy, p) = assert_one_problem(&DUPLICATE_ID, Loader::Engine);
    let first = copy.file("guardrails.cedar");
    let text = copy.read("guardrails.cedar");
    let at = text
        .find("@id(\"role-ended\")")
        .expect("role-ended is in guardrails");
    let (line, _) = line_col(&text, at);
    let want = format!("first used at {}:{line}", first.display());
    assert!(
        p.message().ends_with(&want),
        "{:?} should end {want:?}",
        p.message()
    );
}

#[test]

fn policy_every_template_of_a_file_is_refused() {
    let copy = PolicyCopy::new();
    let (text, _) = copy.edit(
        "staff.cedar",
        "@id(\"membership-team-read\")",
        "@id(\"tmpl-1\")\npermit (principal == ?principal, action, resource);\n\n\
         @id(\"tmpl-2\")\npermit (principal, action, resource in ?resource);\n\n\
         @id(\"membership-team-read\")",
    );
    let err = copy.load_error();
    let mut got: Vec<(usize, usize)> = err
        .problems()
        .iter()
        .filter(|p| p.message().contains("templates"))
        .map(|p| (p.line(), p.column()))
        .collect();
    got.sort();
    let want: Vec<(usize, usize)> = ["@id(\"tmpl-1\")", "@id(\"tmpl-2\")"]
        .iter()
        .map(|t| line_col(&text, text.find(t).expect("inserted")))
        .collect();
    assert_eq!(got, want, "\n{}", list(err.problems()));
}

#[test]
fn policy_identical_duplicate_in_one_file_is_reported_at_the_copy() {
    let copy = PolicyCopy::new();
    let policy = "@id(\"dup\")\npermit (principal, action, resource);\n\n";
    let (text, at) = copy.edit(
        "staff.cedar",
        "@id(\"membership-team-read\")",
        &format!("{policy}{policy}@id(\"membership-team-read\")"),
    );
    let (first, _) = line_col(&text, at);
    let (second, column) = line_col(&text, at + policy.len());
    let err = copy.load_error();
    let p = find_problem(
        err.problems(),
        &Mutation {
            file: "staff.cedar",
            find: "",
            replace: "",
            at: "",
            kind: ProblemKind::Policy,
            message: &["duplicate policy id `dup`"],
        },
        &Place {
            file: copy.file("staff.cedar"),
            line: second,
            column,
        },
    );
    let want = format!(
        "first used at {}:{first}",
        copy.file("staff.cedar").display()
    );
    assert!(p.message().ends_with(&want), "{}", p.message());
}

// ------------------------------------------------------------------ missing files

#[test]
fn missing_schema_is_load_error_missing() {
    let copy = PolicyCopy::new();
    fs::remove_file(copy.file("schema.cedarschema")).expect("remove");
    match copy.load_error() {
        LoadError::Missing { path, what } => {
            assert_eq!(path, copy.file("schema.cedarschema"));
            assert!(what.contains("schema.cedarschema"), "{what}");
        }
        other => panic!("expected Missing, got {other:?}"),
    }
    let err = copy.load_error();
    assert!(err.problems().is_empty());
    assert!(err
        .to_string()
        .contains(&copy.file("schema.cedarschema").display().to_string()));
}

#[test]
fn missing_catalogue_is_load_error_missing() {
    let copy = PolicyCopy::new();
    fs::remove_file(copy.file("fields.toml")).expect("remove");
    match copy.load_error() {
        LoadError::Missing { path, what } => {
            assert_eq!(path, copy.file("fields.toml"));
            assert!(what.contains("fields.toml"), "{what}");
        }
        other => panic!("expected Missing, got {other:?}"),
    }
}

#[test]
fn directory_that_does_not_exist_is_load_error_io() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = tmp.path().join("no-such-policies");
    let err = Engine::from_dir(&dir).expect_err("loaded a missing directory");
    match &err {
        LoadError::Io { path, source } => {
            assert_eq!(path, &dir);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(err.problems().is_empty());
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_file_instead_of_a_directory_is_load_error_io() {
    let copy = PolicyCopy::new();
    let file = copy.file("fields.toml");
    match Engine::from_dir(&file) {
        Err(LoadError::Io { path, .. }) => assert_eq!(path, file),
        other => panic!("expected Io, got {other:?}"),
    }
}

/// A `*.cedar` entry that is not a readable regular file once links are followed (a
/// dangling link, a loop of links, a directory) refuses the directory, naming the entry:
/// it is never skipped with its policies left out (`guardrails.cedar` replaced by a
/// dangling link must not load as a directory without the guardrails).
#[cfg(unix)]
#[test]
fn a_policy_file_that_cannot_be_read_refuses_the_directory() {
    use std::os::unix::fs::symlink;
    type Break = fn(&PolicyCopy) -> std::path::PathBuf;
    let breaks: [(&str, Break); 4] = [
        ("a dangling link", |c| {
            let p = c.file("guardrails.cedar");
            fs::remove_file(&p).expect("remove");
            symlink(c.file("moved-away.cedar.orig"), &p).expect("symlink");
            p
        }),
        ("a loop of links", |c| {
            let (a, b) = (c.file("loop-a.cedar"), c.file("loop-b.cedar"));
            symlink(&b, &a).expect("symlink");
            symlink(&a, &b).expect("symlink");
            a
        }),
        ("a directory", |c| {
            let p = c.file("extra.cedar");
            fs::create_dir(&p).expect("mkdir");
            p
        }),
        ("a link to a directory", |c| {
            let p = c.file("linked.cedar");
            symlink(c.file("tests"), &p).expect("symlink");
            p
        }),
    ];
    for (what, make) in breaks {
        let copy = PolicyCopy::new();
        let bad = make(&copy);
        match copy.load_error() {
            LoadError::Io { path, .. } => assert_eq!(path, bad, "{what}"),
            other => panic!("{what}: expected Io naming the entry, got {other:?}"),
        }
    }
    // A link to a readable regular file is a policy file like any other.
    let copy = PolicyCopy::new();
    let moved = copy.file("guardrails.cedar.orig");
    fs::rename(copy.file("guardrails.cedar"), &moved).expect("rename");
    symlink(&moved, copy.file("guardrails.cedar")).expect("symlink");
    let engine = Engine::from_dir(copy.path()).expect("a link to a policy file loads");
    assert!(engine.policy_ids().any(|id| id == "role-ended"));
}

/// A directory over the limits (`LoadError::LIMITS`) stops with `TooLarge`, naming what
/// is over which limit: too many `.cedar` files, a file too long, too many policies.
#[test]
fn a_directory_over_the_limits_is_refused_before_parsing() {
    let (max_files, max_bytes, max_policies) = LoadError::LIMITS;
    let too_large = |copy: &PolicyCopy, path: &std::path::Path, what: &str| match copy.load_error()
    {
        LoadError::TooLarge { path: p, what: w } => {
            assert_eq!(p, path);
            assert!(w.contains(what), "{w}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    };
    let copy = PolicyCopy::new();
    for i in 0..=max_files {
        fs::write(copy.file(&format!("extra-{i:04}.cedar")), "").expect("write");
    }
    too_large(
        &copy,
        copy.path(),
        &format!("over {max_files} `.cedar` files"),
    );

    let copy = PolicyCopy::new();
    let long = copy.file("long.cedar");
    let size = usize::try_from(max_bytes).expect("fits") + 1;
    fs::write(&long, "/".repeat(size)).expect("write");
    too_large(&copy, &long, "bytes, over");

    let copy = PolicyCopy::new();
    let one = "@id(\"p{}\")\nforbid (principal, action, resource) when { false };\n";
    let many: String = (0..=max_policies)
        .map(|i| one.replace("{}", &i.to_string()))
        .collect();
    fs::write(copy.file("many.cedar"), many).expect("write");
    too_large(&copy, copy.path(), &format!("over {max_policies} policies"));
}

/// A directory at the policy limit (the bundled policies and generated ones beside them,
/// 20,000 in all, 1,000 a file) loads, places each policy at its line, and decides as
/// Cedar's authorizer on the same policies; the generated policies name campaigns and
/// regions the sample does not hold, so it decides as the bundled policies alone.
#[test]
fn a_directory_at_the_policy_limit_loads_and_decides_as_cedar() {
    let (_, _, max_policies) = LoadError::LIMITS;
    let copy = PolicyCopy::new();
    let generated = max_policies - engine().policy_ids().count();
    membergate::sample::write_generated_policies(copy.path(), generated).expect("write");
    let big = Engine::from_dir(copy.path()).unwrap_or_else(|e| panic!("{}", e.render()));
    assert_eq!(big.policy_ids().count(), max_policies);
    // Each policy of the last file at the line of its text.
    let last = copy.file(&format!("generated-{:04}.cedar", generated / 1_000));
    let text = fs::read_to_string(&last).expect("read");
    let mut placed = 0;
    for source in big.policy_ids().filter_map(|id| big.policy_source(id)) {
        if source.file == last {
            let at = text
                .find(&source.text)
                .expect("the policy's text is in its file");
            assert_eq!(source.line, line_col(&text, at).0, "{}", source.text);
            placed += 1;
        }
    }
    assert_eq!(placed, generated % 1_000);

    let big_directory = Directory::from_membership(&big, bundled()).expect("the sample fits");
    let at = |s: &str| Context::at(t(s));
    let asks = [
        (
            PrincipalKind::CampaignStaff,
            ids::CS_A_STAFF,
            Action::Read,
            "phone",
            at("2020-03-01T12:00:00Z").election(ids::LEADER_2020),
        ),
        (
            PrincipalKind::Staff,
            ids::S_REGIONAL_LONDON,
            Action::Read,
            "status",
            at("2024-05-01T09:00:00Z"),
        ),
        (
            PrincipalKind::Staff,
            ids::S_EXPORT,
            Action::BulkExport,
            "name",
            at("2024-05-01T09:00:00Z").reads_this_hour(5_000),
        ),
        (
            PrincipalKind::Staff,
            ids::S_MEMBERSHIP,
            Action::Update,
            "address",
            at("2024-05-01T09:00:00Z"),
        ),
    ];
    for (kind, id, action, field, context) in asks {
        let ask = Ask::new(
            bundled(),
            PrincipalId::new(kind, id),
            action,
            ids::MEMBER_ELIGIBLE,
            field,
            context,
        );
        // Both paths, on the field and on every field (Cedar's `explain`, each of the
        // 20,000 policies alone, is left to the smaller sets).
        let decision = authorize(&big, &big_directory, &ask.request());
        let fields = field_decisions(&big, &big_directory, &ask.all_fields());
        assert_eq!(
            decision,
            engine().authorize(directory(), &ask.request()),
            "{ask:?}"
        );
        assert_eq!(
            fields,
            engine().field_decisions(directory(), &ask.all_fields()),
            "{ask:?}"
        );
    }
}

/// A long file is parsed a run of statements at a time: the validation problems of its
/// policies are each at their own line and column, in every run.
#[test]
fn validation_problems_in_a_long_file_are_each_at_their_place() {
    let copy = PolicyCopy::new();
    let bad = "principal.campaign.candidate.fee_payed";
    let mut text = String::from("// Many policies; some do not validate.\n");
    let mut expected = Vec::new();
    for i in 0..450 {
        let condition = if i % 7 == 3 {
            expected.push(text.len());
            bad
        } else {
            "principal.campaign.candidate.fee_paid"
        };
        text.push_str(&format!(
            "@id(\"long-{i}\")\nforbid (principal is CampaignStaff, action, resource)\n\
             when {{ {condition} }};\n\n"
        ));
        if let Some(at) = expected.last_mut().filter(|_| i % 7 == 3) {
            *at += text[*at..].find(bad).expect("the condition");
        }
    }
    fs::write(copy.file("long.cedar"), &text).expect("write");
    let err = copy.load_error();
    let places: Vec<(usize, usize)> = err
        .problems()
        .iter()
        .filter(|p| p.file() == copy.file("long.cedar"))
        .map(|p| {
            assert_eq!(p.kind(), ProblemKind::Validation, "{p}");
            assert!(p.message().contains("fee_payed"), "{p}");
            assert!(p.rendered().contains(bad), "{}", p.rendered());
            (p.line(), p.column())
        })
        .collect();
    let want: Vec<(usize, usize)> = expected.iter().map(|at| line_col(&text, *at)).collect();
    assert_eq!(places, want, "{}", list(err.problems()));
}

#[test]
fn directory_without_cedar_files_is_refused() {
    let copy = PolicyCopy::new();
    for entry in fs::read_dir(copy.path()).expect("read") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|x| x == "cedar") {
            fs::remove_file(path).expect("remove");
        }
    }
    let err = copy.load_error();
    let problems = err.problems();
    assert_eq!(problems.len(), 1, "{}", list(problems));
    let p = &problems[0];
    assert_eq!(p.kind(), ProblemKind::Policy);
    assert_eq!(p.file(), copy.path());
    assert_eq!((p.line(), p.column()), (1, 1));
    assert!(p.message().contains("no `.cedar` policy files"), "{p}");
}

// ------------------------------------------------------------------ catalogue size

/// Appends fields named `extra_1`.. until the catalogue has `total`; returns the text.
fn grow_catalogue(copy: &PolicyCopy, total: usize) -> String {
    let mut text = copy.read("fields.toml");
    let have = text.matches("[[field]]").count();
    for i in 1..=total.saturating_sub(have) {
        text.push_str(&format!(
            "\n[[field]]\nname = \"extra_{i}\"\nclass = \"preferences\"\n"
        ));
    }
    fs::write(copy.file("fields.toml"), &text).expect("write");
    text
}

#[test]
fn catalogue_of_64_fields_loads() {
    let copy = PolicyCopy::new();
    grow_catalogue(&copy, 64);
    let engine = Engine::from_dir(copy.path()).expect("64 fields fit a FieldSet");
    assert_eq!(engine.catalogue().len(), 64);
    assert_eq!(engine.catalogue().all().bits(), u64::MAX);
}

#[test]
fn catalogue_of_more_than_64_fields_is_refused() {
    let copy = PolicyCopy::new();
    grow_catalogue(&copy, 65);
    let err = copy.load_error();
    let problems = err.problems();
    assert_eq!(problems.len(), 1, "{}", list(problems));
    let p = &problems[0];
    assert_eq!(p.kind(), ProblemKind::Catalogue);
    assert_eq!(p.file(), copy.file("fields.toml"));
    assert!(p.message().contains("65 fields"), "{p}");
    assert!(p.message().contains("at most 64"), "{p}");
}

#[test]

fn catalogue_of_more_than_64_fields_is_reported_at_the_65th_field() {
    let copy = PolicyCopy::new();
    let text = grow_catalogue(&copy, 65);
    let name = text
        .match_indices("[[field]]")
        .nth(64)
        .map(|(at, _)| at + text[at..].find("name = ").expect("name") + "name = ".len())
        .expect("65 fields");
    let (line, column) = line_col(&text, name);
    let err = copy.load_error();
    let p = &err.problems()[0];
    assert_eq!((p.line(), p.column()), (line, column), "{p}");
}

// ------------------------------------------------------------------ several problems

#[test]
fn every_problem_of_every_file_is_reported() {
    let copy = PolicyCopy::new();
    let mutations = [
        POLICY_SYNTAX,
        UNKNOWN_ATTRIBUTE,
        TEMPLATE,
        CATALOGUE_DUPLICATE,
    ];
    let places: Vec<Place> = mutations.iter().map(|m| copy.mutate(m)).collect();
    let err = copy.load_error();
    assert_eq!(
        err.problems().len(),
        mutations.len(),
        "{}",
        list(err.problems())
    );
    for (m, place) in mutations.iter().zip(&places) {
        find_problem(err.problems(), m, place);
    }
    assert!(err.to_string().starts_with("4 problems"), "{err}");
}

#[test]
fn a_broken_schema_does_not_hide_problems_in_other_files() {
    let copy = PolicyCopy::new();
    let mutations = [SCHEMA_SYNTAX, POLICY_SYNTAX, CATALOGUE_DUPLICATE];
    let places: Vec<Place> = mutations.iter().map(|m| copy.mutate(m)).collect();
    let err = copy.load_error();
    assert_eq!(err.problems().len(), 3, "{}", list(err.problems()));
    for (m, place) in mutations.iter().zip(&places) {
        find_problem(err.problems(), m, place);
    }
}

#[test]
fn every_problem_of_every_suite_is_reported() {
    let copy = PolicyCopy::new();
    let mutations = [SUITE_BAD_PRINCIPAL, SUITE_UNKNOWN_ACTION_CAMPAIGNS];
    let places: Vec<Place> = mutations.iter().map(|m| copy.mutate(m)).collect();
    // A bad time in the same case as the bad principal is reported too.
    let time = copy.mutate(&Mutation {
        find: "at = \"2021-03-01T09:00:00Z\"",
        replace: "at = \"yesterday\"",
        at: "\"yesterday\"",
        ..SUITE_BAD_TIME
    });
    let err = copy.suite_error();
    assert_eq!(err.problems().len(), 3, "{}", list(err.problems()));
    for (m, place) in mutations.iter().zip(&places) {
        find_problem(err.problems(), m, place);
    }
    find_problem(err.problems(), &SUITE_BAD_TIME, &time);
}

// ------------------------------------------------------------------ suites: missing fixture

const SUITE_MISSING_FIXTURE: Mutation = Mutation {
    file: "tests/errors.toml",
    find: "fixture = \"party\"",
    replace: "fixture = \"nonesuch\"",
    at: "\"nonesuch\"",
    kind: ProblemKind::TestSuite,
    message: &["nonesuch"],
};

#[test]
fn suite_missing_fixture_is_refused() {
    let copy = PolicyCopy::new();
    copy.mutate(&SUITE_MISSING_FIXTURE);
    let err = copy.suite_error();
    let problems = err.problems();
    assert_eq!(problems.len(), 1, "{}", list(problems));
    assert_eq!(problems[0].kind(), ProblemKind::TestSuite);
    assert!(
        problems[0].message().contains("fixture `nonesuch`"),
        "{}",
        problems[0]
    );
}

#[test]
fn suite_missing_fixture_is_reported_where_the_suite_names_it() {
    let copy = PolicyCopy::new();
    let place = copy.mutate(&SUITE_MISSING_FIXTURE);
    let err = copy.suite_error();
    find_problem(err.problems(), &SUITE_MISSING_FIXTURE, &place);
}

#[test]
fn suites_of_the_bundled_policies_load() {
    let plan = TestPlan::load(policies_dir()).expect("bundled suites load");
    assert!(plan.cases().count() > 100);
    // Each case knows the line of its `[[case]]` header.
    for (suite, case) in plan.cases() {
        let text = fs::read_to_string(&suite.file).expect("read suite");
        let header = text.lines().nth(case.line - 1).expect("line");
        assert_eq!(header.trim(), "[[case]]", "{}:{}", suite.name(), case.line);
    }
}
