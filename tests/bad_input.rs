//! Malformed policies, schema, catalogue, suites, data and requests: clear errors.
//!
//! Every load test works on a copy of `policies/` in a temporary directory, with one text
//! mutation per file. The expected line and column are computed from the mutated text
//! (the position of a marker inside the inserted text), never written down by hand.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use jiff::Timestamp;
use membergate::testing::TestPlan;
use membergate::{
    Action, Context, Engine, LoadError, Membership, PrincipalId, PrincipalKind, Problem,
    ProblemKind, Request, RequestError,
};
use tempfile::TempDir;

// ------------------------------------------------------------------ helpers

/// The bundled policy directory.
pub(crate) fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// The engine on the bundled policies, loaded once for every test module.
pub(crate) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        Engine::from_dir(policies_dir()).unwrap_or_else(|e| panic!("{}", e.render()))
    })
}

/// The bundled sample membership (12,000 members), built once for every test module.
pub(crate) fn bundled() -> &'static Membership {
    static BUNDLED: OnceLock<Membership> = OnceLock::new();
    BUNDLED.get_or_init(membergate::sample::bundled)
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create directory");
    for entry in fs::read_dir(from).expect("read directory") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let last = before.rsplit('\n').next().unwrap_or("");
    (line, last.chars().count() + 1)
}

/// A text mutation of one file of a policy directory, and the problem it must cause.
#[derive(Clone, Copy)]
struct Mutation {
    /// The file, relative to the policy directory.
    file: &'static str,
    /// Text of the file whose first occurrence is replaced.
    find: &'static str,
    /// What replaces it.
    replace: &'static str,
    /// The problem is reported at the first occurrence of this inside `replace`.
    at: &'static str,
    /// What kind of problem it is.
    kind: ProblemKind,
    /// Fragments the problem's message contains.
    message: &'static [&'static str],
}

/// Where a problem is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    file: PathBuf,
    line: usize,
    column: usize,
}

/// A copy of the bundled policy directory in a temporary directory.
pub(crate) struct PolicyCopy {
    dir: TempDir,
}

impl PolicyCopy {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        copy_dir(&policies_dir(), dir.path());
        PolicyCopy { dir }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn file(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.file(rel)).expect("read file")
    }

    /// Replaces the first `find` with `replace` in `rel`; returns the new text and the
    /// byte offset where `replace` starts.
    pub(crate) fn edit(&self, rel: &str, find: &str, replace: &str) -> (String, usize) {
        let text = self.read(rel);
        let at = text
            .find(find)
            .unwrap_or_else(|| panic!("`{find}` is not in {rel}: the fixture changed"));
        let new = format!("{}{replace}{}", &text[..at], &text[at + find.len()..]);
        fs::write(self.file(rel), &new).expect("write file");
        (new, at)
    }

    /// Applies `m` and returns where its problem must be reported.
    fn mutate(&self, m: &Mutation) -> Place {
        let (text, at) = self.edit(m.file, m.find, m.replace);
        let within = m
            .replace
            .find(m.at)
            .unwrap_or_else(|| panic!("`{}` is not in the replacement `{}`", m.at, m.replace));
        let (line, column) = line_col(&text, at + within);
        Place {
            file: self.file(m.file),
            line,
            column,
        }
    }

    fn load_error(&self) -> LoadError {
        match Engine::from_dir(self.path()) {
            Ok(_) => panic!("the mutated policy directory loaded"),
            Err(e) => e,
        }
    }

    fn suite_error(&self) -> LoadError {
        match TestPlan::load(self.path()) {
            Ok(_) => panic!("the mutated test suites loaded"),
            Err(e) => e,
        }
    }
}

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

const POLICY_SYNTAX: Mutation = Mutation {
    file: "guardrails.cedar",
    find: "forbid (principal, action, resource)\nwhen { principal has ended_at",
    replace: "forbid (principal, action, resource\nwhen { principal has ended_at",
    at: "when",
    kind: ProblemKind::Policy,
    message: &["unexpected token `when`"],
};

const UNKNOWN_ATTRIBUTE: Mutation = Mutation {
    file: "campaigns.cedar",
    find: "principal.campaign.candidate.fee_paid",
    replace: "principal.campaign.candidate.fee_payed",
    at: "principal",
    kind: ProblemKind::Validation,
    message: &["attribute `fee_payed`", "`Candidate`", "not found"],
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

// ------------------------------------------------------------------ requests

/// The policy suites' fixture, `policies/tests/fixtures/party.toml`.
pub(crate) fn fixture() -> &'static Membership {
    static PARTY: OnceLock<Membership> = OnceLock::new();
    PARTY.get_or_init(|| {
        let path = policies_dir().join("tests/fixtures/party.toml");
        let text = fs::read_to_string(path).expect("read fixture");
        toml::from_str(&text).expect("fixture parses")
    })
}

fn t(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn principal(s: &str) -> PrincipalId {
    s.parse().expect("principal")
}

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

// ------------------------------------------------------------------ the CLI

pub(crate) fn membergate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_membergate"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run membergate")
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

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
    // The same answer as the library's.
    let set = engine()
        .permitted_fields(
            fixture(),
            &principal(r#"CampaignStaff::"cs-a""#),
            Action::Read,
            "m-eligible",
            &Context::at(t("2020-03-01T12:00:00Z")).election("leader-2020"),
        )
        .expect("decided");
    assert_eq!(permitted, engine().catalogue().names(set));
    assert!(!permitted.is_empty() && permitted.len() < rows.len());
    assert_eq!(json["principal"], r#"CampaignStaff::"cs-a""#);
    assert_eq!(json["member"], "m-eligible");
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
