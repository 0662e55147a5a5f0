//! Cedar's conformance corpus, run against a [`Decider`].
//!
//! The corpus (`cedar-policy/cedar-integration-tests`) is a folder holding
//! `corpus-tests/<hash>.json` (fuzzer-generated) and/or `tests/**/<name>.json`
//! (hand-written). Each test JSON names a policy file, a schema (Cedar syntax) and an
//! entities file, all relative to that folder (the *root*), says whether the policies
//! validate against the schema (`shouldValidate`), and lists requests with the decision,
//! the determining policies (`reason`) and the erroring policies (`errors`) that Cedar
//! gives.
//!
//! # Semantics, as in Cedar's own harness
//!
//! This runner mirrors `cedar-testing/src/integration_testing.rs` of `cedar-policy/cedar`
//! (the version written against the public `cedar_policy` API), using the same calls:
//!
//! - the test JSON is read strictly (unknown fields are refused); a request's
//!   `validateRequest` defaults to `true`;
//! - paths in the test are relative to the root; absolute paths are used as they are;
//! - policies: [`PolicySet::from_str`], which names them `policy0`, `policy1`, ... in
//!   file order;
//! - schema: [`Schema::from_cedarschema_str`] (its warnings are ignored);
//! - entities: [`Entities::from_json_str`] **with** the schema, always (so the schema's
//!   action entities are added and the entities must conform to it);
//! - principal, action and resource: [`EntityUid::from_json`] (explicit or implicit
//!   `__entity` form);
//! - context: [`Context::from_json_value`] **with** the schema and the action, always
//!   (an action the schema does not declare is an error);
//! - request: [`Request::new`] with the schema when `validateRequest` is true, without it
//!   otherwise;
//! - `shouldValidate`: strict validation ([`ValidationMode::Strict`], the default) of the
//!   policies with the schema must pass (no errors; warnings do not count) exactly when
//!   `shouldValidate` is true;
//! - a request is compared on its decision, its reason *set* and its error *set* (sets of
//!   policy ids: order and repetition do not matter).
//!
//! Cedar's harness panics, failing the whole test file, when a request's inputs cannot be
//! built (a malformed uid, a context the schema refuses, a request the schema refuses when
//! `validateRequest` is true). Here such a request is a failed request: a
//! [`Mismatch::Request`] whose answer is [`Answer::Unbuildable`] with Cedar's message, and
//! the other requests of the file still run. A policy, schema or entities file that cannot
//! be read or parsed (also a panic in Cedar's harness) is a [`ConformanceError`] for the
//! file.
//!
//! Not mirrored: the harness's rejection of duplicate keys in the request JSON (here the
//! last one wins, as in `serde_json`), and its extra entity-manifest check (behind Cedar's
//! experimental `entity-manifest` feature, which compares Cedar with itself on a sliced
//! entity store, not with the expected output).
//!
//! # Known disagreements
//!
//! A [`KnownDisagreements`] file lists tests where the reference authorizer itself
//! disagrees with the expected output (e.g. data a newer Cedar reads differently). For
//! those tests the reference's own answers are the expectation, and how the reference
//! differs from the file is reported separately ([`Summary::known`]), not as failures.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use cedar_policy::{
    AuthorizationError, Authorizer, Context, Decision, Entities, EntityUid, PolicySet, Request,
    Schema, ValidationMode, Validator,
};
use serde::Deserialize;

/// The folder of fuzzer-generated tests under a corpus root.
pub const CORPUS_TESTS: &str = "corpus-tests";
/// The folder of hand-written tests under a corpus root.
pub const HAND_WRITTEN_TESTS: &str = "tests";

// ------------------------------------------------------------------ the file format

/// A conformance test file, as Cedar's harness reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestFile {
    /// The policy file (Cedar syntax), relative to the root.
    pub policies: String,
    /// The entities file (JSON), relative to the root.
    pub entities: String,
    /// The schema file (Cedar schema syntax), relative to the root.
    pub schema: String,
    /// Whether the policies validate strictly against the schema.
    pub should_validate: bool,
    /// The requests, with their expected answers.
    pub requests: Vec<TestRequest>,
}

/// One request of a [`TestFile`] and its expected answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestRequest {
    /// What the request is about.
    pub description: String,
    /// The principal's uid, in explicit or implicit `__entity` form.
    pub principal: serde_json::Value,
    /// The action's uid.
    pub action: serde_json::Value,
    /// The resource's uid.
    pub resource: serde_json::Value,
    /// The context, a JSON object read with the schema.
    pub context: serde_json::Value,
    /// Whether the request is validated against the schema (default `true`).
    #[serde(default = "always")]
    pub validate_request: bool,
    /// The expected decision.
    pub decision: Decision,
    /// The expected determining policies.
    pub reason: Vec<String>,
    /// The expected erroring policies.
    pub errors: Vec<String>,
}

fn always() -> bool {
    true
}

impl TestRequest {
    /// The expected answer.
    pub fn expected(&self) -> Outcome {
        Outcome {
            decision: self.decision,
            reason: self.reason.iter().cloned().collect(),
            errors: self.errors.iter().cloned().collect(),
        }
    }
}

// ------------------------------------------------------------------ deciders

/// An authorization answer, as the corpus compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Allow or deny.
    pub decision: Decision,
    /// The ids of the determining policies.
    pub reason: BTreeSet<String>,
    /// The ids of the policies whose evaluation errored.
    pub errors: BTreeSet<String>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, reason {}, errors {}",
            decision_name(self.decision),
            ids(&self.reason),
            ids(&self.errors)
        )
    }
}

fn decision_name(d: Decision) -> &'static str {
    match d {
        Decision::Allow => "allow",
        Decision::Deny => "deny",
    }
}

fn ids(set: &BTreeSet<String>) -> String {
    format!(
        "[{}]",
        set.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// An engine whose decisions are checked against the corpus.
///
/// Implement [`Decider::decide`]; an engine that compiles the policies once per test file
/// also overrides [`Decider::prepare`], which the runner calls once per file before
/// deciding that file's requests.
pub trait Decider: Sync {
    /// The engine's name, for reports.
    fn name(&self) -> &str;

    /// Decides `request` under `policies` with `entities`. `schema` is the test's schema
    /// (the entities and the request were already read and checked with it).
    fn decide(
        &self,
        policies: &PolicySet,
        schema: Option<&Schema>,
        entities: &Entities,
        request: &Request,
    ) -> Outcome;

    /// Prepares to decide many requests under `policies`. The default defers every
    /// request to [`Decider::decide`].
    fn prepare<'a>(
        &'a self,
        policies: &'a PolicySet,
        schema: Option<&'a Schema>,
    ) -> Box<dyn PreparedDecider + 'a> {
        Box::new(Unprepared {
            decider: self,
            policies,
            schema,
        })
    }
}

/// A [`Decider`] prepared for one test file's policies and schema.
pub trait PreparedDecider {
    /// Decides `request` with `entities`.
    fn decide(&self, entities: &Entities, request: &Request) -> Outcome;
}

/// The default [`Decider::prepare`]: every request goes to [`Decider::decide`].
struct Unprepared<'a, D: ?Sized> {
    decider: &'a D,
    policies: &'a PolicySet,
    schema: Option<&'a Schema>,
}

impl<D: Decider + ?Sized> PreparedDecider for Unprepared<'_, D> {
    fn decide(&self, entities: &Entities, request: &Request) -> Outcome {
        self.decider
            .decide(self.policies, self.schema, entities, request)
    }
}

/// The reference engine: [`cedar_policy::Authorizer`].
#[derive(Debug, Default)]
pub struct Reference {
    authorizer: Authorizer,
}

impl Reference {
    /// The reference engine.
    pub fn new() -> Reference {
        Reference::default()
    }
}

/// The name [`Reference`] reports.
pub const REFERENCE_NAME: &str = "reference";

impl Decider for Reference {
    fn name(&self) -> &str {
        REFERENCE_NAME
    }

    fn decide(
        &self,
        policies: &PolicySet,
        _schema: Option<&Schema>,
        entities: &Entities,
        request: &Request,
    ) -> Outcome {
        let response = self.authorizer.is_authorized(request, policies, entities);
        let diagnostics = response.diagnostics();
        Outcome {
            decision: response.decision(),
            reason: diagnostics.reason().map(ToString::to_string).collect(),
            errors: diagnostics
                .errors()
                .map(|e| match e {
                    AuthorizationError::PolicyEvaluationError(e) => e.policy_id().to_string(),
                })
                .collect(),
        }
    }
}

// ------------------------------------------------------------------ errors

/// Why a test file (or a known-disagreements file) could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    /// A file or folder could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The root holds neither `corpus-tests/` nor `tests/`.
    #[error("`{}` holds neither `corpus-tests/` nor `tests/`: not a conformance corpus", root.display())]
    NoTests {
        /// The root given.
        root: PathBuf,
    },
    /// A test file is not inside a `corpus-tests/` or `tests/` folder, so the paths it
    /// names cannot be resolved.
    #[error("`{}` is not inside a `corpus-tests/` or `tests/` folder: its paths cannot be resolved", file.display())]
    NoRoot {
        /// The test file.
        file: PathBuf,
    },
    /// A test file is not a conformance test (bad JSON, missing or unknown fields).
    #[error("`{}`: not a conformance test: {message}", file.display())]
    Malformed {
        /// The test file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A file the test names cannot be read.
    #[error("`{}`: cannot read its {what} `{}`: {source}", file.display(), path.display())]
    MissingInput {
        /// The test file.
        file: PathBuf,
        /// `policies`, `schema` or `entities`.
        what: &'static str,
        /// The file named.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file the test names does not parse (or, for entities, does not fit the schema).
    #[error("`{}`: its {what} `{}` are invalid: {message}", file.display(), path.display())]
    BadInput {
        /// The test file.
        file: PathBuf,
        /// `policies`, `schema` or `entities`.
        what: &'static str,
        /// The file named.
        path: PathBuf,
        /// Cedar's message.
        message: String,
    },
    /// The engine panicked on a test file.
    #[error("`{}`: the engine panicked: {message}", file.display())]
    Panicked {
        /// The test file.
        file: PathBuf,
        /// The panic's message.
        message: String,
    },
    /// A line of a known-disagreements file is malformed.
    #[error("{}:{line}: {message}", file.display())]
    KnownLine {
        /// The known-disagreements file.
        file: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl ConformanceError {
    /// The test file (or known-disagreements file) the error is about, if any.
    pub fn file(&self) -> Option<&Path> {
        match self {
            ConformanceError::Io { path, .. } => Some(path),
            ConformanceError::NoTests { .. } => None,
            ConformanceError::NoRoot { file }
            | ConformanceError::Malformed { file, .. }
            | ConformanceError::MissingInput { file, .. }
            | ConformanceError::BadInput { file, .. }
            | ConformanceError::Panicked { file, .. }
            | ConformanceError::KnownLine { file, .. } => Some(file),
        }
    }
}

// ------------------------------------------------------------------ discovery and loading

/// Every test file under `root/corpus-tests/` and `root/tests/` (either may be absent,
/// not both), recursively, sorted; `*.entities.json` files are not tests.
///
/// # Errors
/// [`ConformanceError::NoTests`] if neither folder exists, [`ConformanceError::Io`] if a
/// folder cannot be read.
pub fn discover(root: &Path) -> Result<Vec<PathBuf>, ConformanceError> {
    let mut found = Vec::new();
    let mut any = false;
    for folder in [CORPUS_TESTS, HAND_WRITTEN_TESTS] {
        let dir = root.join(folder);
        if dir.is_dir() {
            any = true;
            walk(&dir, &mut found)?;
        }
    }
    if !any {
        return Err(ConformanceError::NoTests {
            root: root.to_path_buf(),
        });
    }
    found.sort();
    Ok(found)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), ConformanceError> {
    let io = |source| ConformanceError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            walk(&path, found)?;
        } else if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            if name.ends_with(".json") && !name.ends_with(".entities.json") {
                found.push(path);
            }
        }
    }
    Ok(())
}

/// The corpus root of a test file: the folder holding the nearest enclosing
/// `corpus-tests/` or `tests/` folder.
fn root_of(file: &Path) -> Option<&Path> {
    file.ancestors()
        .skip(1)
        .find(|a| {
            a.file_name()
                .is_some_and(|n| n == CORPUS_TESTS || n == HAND_WRITTEN_TESTS)
        })
        .and_then(Path::parent)
}

/// A test file loaded: its policies, schema and entities parsed as Cedar's harness does.
pub struct Test {
    /// The test file.
    pub file: PathBuf,
    /// Its contents.
    pub spec: TestFile,
    /// The policies, `policy0`, `policy1`, ... in file order.
    pub policies: PolicySet,
    /// The schema.
    pub schema: Schema,
    /// The entities, read with the schema.
    pub entities: Entities,
}

impl fmt::Debug for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Test")
            .field("file", &self.file)
            .field("requests", &self.spec.requests.len())
            .finish_non_exhaustive()
    }
}

impl Test {
    /// Loads the test `file`, resolving the paths it names against `root`.
    ///
    /// # Errors
    /// [`ConformanceError`] naming the file if it, or a file it names, cannot be read or
    /// parsed.
    pub fn load(root: &Path, file: &Path) -> Result<Test, ConformanceError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConformanceError::Io {
            path: file.to_path_buf(),
            source,
        })?;
        let spec: TestFile =
            serde_json::from_str(&text).map_err(|e| ConformanceError::Malformed {
                file: file.to_path_buf(),
                message: e.to_string(),
            })?;
        let read = |what: &'static str, name: &str| {
            let path = root.join(name);
            std::fs::read_to_string(&path)
                .map(|text| (path.clone(), text))
                .map_err(|source| ConformanceError::MissingInput {
                    file: file.to_path_buf(),
                    what,
                    path,
                    source,
                })
        };
        let bad = |what: &'static str, path: &Path, message: String| ConformanceError::BadInput {
            file: file.to_path_buf(),
            what,
            path: path.to_path_buf(),
            message,
        };
        let (path, text) = read("policies", &spec.policies)?;
        let policies =
            PolicySet::from_str(&text).map_err(|e| bad("policies", &path, e.to_string()))?;
        let (path, text) = read("schema", &spec.schema)?;
        let (schema, _warnings) =
            Schema::from_cedarschema_str(&text).map_err(|e| bad("schema", &path, e.to_string()))?;
        let (path, text) = read("entities", &spec.entities)?;
        let entities = Entities::from_json_str(&text, Some(&schema))
            .map_err(|e| bad("entities", &path, e.to_string()))?;
        Ok(Test {
            file: file.to_path_buf(),
            spec,
            policies,
            schema,
            entities,
        })
    }

    /// Strict validation of the policies against the schema: the errors and the
    /// warnings, each as `policy-id: message`. Validation passes when there are no errors.
    pub fn validate(&self) -> (Vec<String>, Vec<String>) {
        let result =
            Validator::new(self.schema.clone()).validate(&self.policies, ValidationMode::Strict);
        let errors = result
            .validation_errors()
            .map(|e| format!("{}: {e}", e.policy_id()))
            .collect();
        let warnings = result
            .validation_warnings()
            .map(|w| format!("{}: {w}", w.policy_id()))
            .collect();
        (errors, warnings)
    }

    /// Builds request `spec` as Cedar's harness does.
    ///
    /// # Errors
    /// Cedar's message if a uid is malformed, the schema refuses the context (or does
    /// not declare the action), or, when `validateRequest` is true, refuses the request.
    pub fn request(&self, spec: &TestRequest) -> Result<Request, String> {
        let uid = |what: &str, json: &serde_json::Value| {
            EntityUid::from_json(json.clone()).map_err(|e| format!("bad {what}: {e}"))
        };
        let principal = uid("principal", &spec.principal)?;
        let action = uid("action", &spec.action)?;
        let resource = uid("resource", &spec.resource)?;
        let context = Context::from_json_value(spec.context.clone(), Some((&self.schema, &action)))
            .map_err(|e| format!("bad context: {e}"))?;
        Request::new(
            principal,
            action,
            resource,
            context,
            spec.validate_request.then_some(&self.schema),
        )
        .map_err(|e| format!("the schema refuses the request: {e}"))
    }
}

// ------------------------------------------------------------------ reports

/// A request as written in the test file, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestText {
    /// The 0-based position of the request in the file.
    pub index: usize,
    /// Its description.
    pub description: String,
    /// The principal, as JSON text.
    pub principal: String,
    /// The action, as JSON text.
    pub action: String,
    /// The resource, as JSON text.
    pub resource: String,
    /// The context, as JSON text.
    pub context: String,
}

impl RequestText {
    fn new(index: usize, spec: &TestRequest) -> RequestText {
        RequestText {
            index,
            description: spec.description.clone(),
            principal: spec.principal.to_string(),
            action: spec.action.to_string(),
            resource: spec.resource.to_string(),
            context: spec.context.to_string(),
        }
    }
}

/// A uid's JSON text in Cedar syntax (`User::"alice"`) when it parses, else as it is.
fn uid_text(json: &str) -> String {
    serde_json::from_str(json)
        .ok()
        .and_then(|v| EntityUid::from_json(v).ok())
        .map_or_else(|| json.to_string(), |u| u.to_string())
}

impl fmt::Display for RequestText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request {} ({:?}): principal {}, action {}, resource {}, context {}",
            self.index,
            self.description,
            uid_text(&self.principal),
            uid_text(&self.action),
            uid_text(&self.resource),
            self.context
        )
    }
}

/// What the engine answered to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The engine decided.
    Decided(Outcome),
    /// The request's inputs could not be built (Cedar's harness fails the test there).
    Unbuildable(String),
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Decided(o) => o.fmt(f),
            Answer::Unbuildable(why) => write!(f, "no decision: {why}"),
        }
    }
}

/// A difference between what a test expects and what the engine gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// Strict validation of the policies disagrees with `shouldValidate`.
    Validation {
        /// The test file.
        file: PathBuf,
        /// `shouldValidate`.
        expected: bool,
        /// The validation errors found (empty if validation passed).
        errors: Vec<String>,
        /// The validation warnings (which do not make validation fail).
        warnings: Vec<String>,
    },
    /// A request's answer differs.
    Request {
        /// The test file.
        file: PathBuf,
        /// The request.
        request: RequestText,
        /// The expected answer.
        expected: Outcome,
        /// The answer given.
        got: Answer,
    },
}

impl Mismatch {
    /// The test file.
    pub fn file(&self) -> &Path {
        match self {
            Mismatch::Validation { file, .. } | Mismatch::Request { file, .. } => file,
        }
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Validation {
                file,
                expected,
                errors,
                warnings,
            } => {
                if *expected {
                    write!(
                        f,
                        "{}: shouldValidate is true but strict validation fails:",
                        file.display()
                    )?;
                    for e in errors {
                        write!(f, "\n    {e}")?;
                    }
                    Ok(())
                } else {
                    write!(
                        f,
                        "{}: shouldValidate is false but strict validation passes",
                        file.display()
                    )?;
                    if !warnings.is_empty() {
                        write!(f, " (with warnings)")?;
                    }
                    for w in warnings {
                        write!(f, "\n    warning: {w}")?;
                    }
                    Ok(())
                }
            }
            Mismatch::Request {
                file,
                request,
                expected,
                got,
            } => {
                let differs = match got {
                    Answer::Decided(o) => {
                        let mut d = Vec::new();
                        if o.decision != expected.decision {
                            d.push("decision");
                        }
                        if o.reason != expected.reason {
                            d.push("reason");
                        }
                        if o.errors != expected.errors {
                            d.push("errors");
                        }
                        d.join(", ")
                    }
                    Answer::Unbuildable(_) => "no decision".to_string(),
                };
                write!(
                    f,
                    "{}: {request}\n    expected: {expected}\n    got:      {got}\n    differs:  {differs}",
                    file.display()
                )
            }
        }
    }
}

/// One test file's run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The test file.
    pub file: PathBuf,
    /// The number of requests compared.
    pub requests: usize,
    /// The differences found (empty: the file passed).
    pub mismatches: Vec<Mismatch>,
}

impl FileReport {
    /// The number of requests that differ.
    pub fn failed_requests(&self) -> usize {
        self.mismatches
            .iter()
            .filter(|m| matches!(m, Mismatch::Request { .. }))
            .count()
    }

    /// The number of requests that agree.
    pub fn passed_requests(&self) -> usize {
        self.requests.saturating_sub(self.failed_requests())
    }

    /// Whether everything agreed.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

impl fmt::Display for FileReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} of {} requests passed",
            self.file.display(),
            self.passed_requests(),
            self.requests
        )?;
        for m in &self.mismatches {
            write!(f, "\n{m}")?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------------ running

/// Runs one test file with `decider`, comparing with the file's expected answers. The
/// corpus root is the folder holding the nearest enclosing `corpus-tests/` or `tests/`.
///
/// # Errors
/// [`ConformanceError`] naming the file if it is not inside such a folder, or if it, or
/// a file it names, cannot be read or parsed.
pub fn run_file(path: &Path, decider: &dyn Decider) -> Result<FileReport, ConformanceError> {
    let root = root_of(path).ok_or_else(|| ConformanceError::NoRoot {
        file: path.to_path_buf(),
    })?;
    let test = Test::load(root, path)?;
    Ok(compare(&test, decider, None))
}

/// Compares `decider` on every request of `test` with the file's expectations
/// (`against` is `None`; then `shouldValidate` is checked too) or with another engine's
/// answers (requests whose inputs cannot be built are then skipped).
fn compare(test: &Test, decider: &dyn Decider, against: Option<&dyn Decider>) -> FileReport {
    let mut mismatches = Vec::new();
    if against.is_none() {
        let (errors, warnings) = test.validate();
        if errors.is_empty() != test.spec.should_validate {
            mismatches.push(Mismatch::Validation {
                file: test.file.clone(),
                expected: test.spec.should_validate,
                errors,
                warnings,
            });
        }
    }
    let prepared = decider.prepare(&test.policies, Some(&test.schema));
    let reference = against.map(|r| r.prepare(&test.policies, Some(&test.schema)));
    let mut requests = 0;
    for (index, spec) in test.spec.requests.iter().enumerate() {
        let (expected, got) = match (test.request(spec), &reference) {
            (Ok(request), None) => (
                spec.expected(),
                Answer::Decided(prepared.decide(&test.entities, &request)),
            ),
            (Ok(request), Some(reference)) => (
                reference.decide(&test.entities, &request),
                Answer::Decided(prepared.decide(&test.entities, &request)),
            ),
            (Err(why), None) => (spec.expected(), Answer::Unbuildable(why)),
            (Err(_), Some(_)) => continue,
        };
        requests += 1;
        if got != Answer::Decided(expected.clone()) {
            mismatches.push(Mismatch::Request {
                file: test.file.clone(),
                request: RequestText::new(index, spec),
                expected,
                got,
            });
        }
    }
    FileReport {
        file: test.file.clone(),
        requests,
        mismatches,
    }
}

/// Tests where the reference authorizer itself disagrees with the expected output.
///
/// Read from a text file: one `relative/path.json  reason` per line (the path relative to
/// the corpus root, with `/`; then whitespace; then the reason, required); blank lines
/// and lines starting with `#` are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownDisagreements {
    entries: BTreeMap<String, String>,
}

impl KnownDisagreements {
    /// No known disagreements.
    pub fn none() -> KnownDisagreements {
        KnownDisagreements::default()
    }

    /// Reads the file `path`.
    ///
    /// # Errors
    /// [`ConformanceError::Io`] if it cannot be read; [`ConformanceError::KnownLine`] as
    /// for [`KnownDisagreements::parse`].
    pub fn load(path: &Path) -> Result<KnownDisagreements, ConformanceError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConformanceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        KnownDisagreements::parse(&text, path)
    }

    /// Parses `text`, read from `file` (named in errors).
    ///
    /// # Errors
    /// [`ConformanceError::KnownLine`] naming the line if it has no reason, its path is
    /// not a relative `.json` path inside the root, or the path is listed twice.
    pub fn parse(text: &str, file: &Path) -> Result<KnownDisagreements, ConformanceError> {
        let mut entries = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String| ConformanceError::KnownLine {
                file: file.to_path_buf(),
                line: i + 1,
                message,
            };
            let (path, reason) = line
                .split_once(char::is_whitespace)
                .map(|(p, r)| (p, r.trim()))
                .unwrap_or((line, ""));
            if reason.is_empty() {
                return Err(err(format!(
                    "`{path}` has no reason: write `relative/path.json  reason`"
                )));
            }
            let p = Path::new(path);
            if !path.ends_with(".json")
                || path.contains('\\')
                || !p.components().all(|c| matches!(c, Component::Normal(_)))
            {
                return Err(err(format!(
                    "`{path}` is not a relative path to a test `.json` file inside the corpus root"
                )));
            }
            if entries
                .insert(path.to_string(), reason.to_string())
                .is_some()
            {
                return Err(err(format!("`{path}` is listed twice")));
            }
        }
        Ok(KnownDisagreements { entries })
    }

    /// The reason given for the test at `relative` (a `/`-separated path relative to the
    /// corpus root), if it is listed.
    pub fn reason(&self, relative: &str) -> Option<&str> {
        self.entries.get(relative).map(String::as_str)
    }

    /// The listed tests and their reasons, sorted by path.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(p, r)| (p.as_str(), r.as_str()))
    }

    /// The number of listed tests.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no test is listed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A listed test: how the reference differs from the file's expectations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownReport {
    /// The reason given in the known-disagreements file.
    pub reason: String,
    /// The reference authorizer compared with the file (its mismatches are the
    /// disagreements; none means the entry is stale).
    pub reference: FileReport,
}

impl KnownReport {
    /// Whether the reference's strict validation disagrees with `shouldValidate`.
    pub fn validation_differs(&self) -> bool {
        self.reference
            .mismatches
            .iter()
            .any(|m| matches!(m, Mismatch::Validation { .. }))
    }
}

/// The result of [`run_all`].
#[derive(Debug, Default)]
pub struct Summary {
    /// The engine's name.
    pub decider: String,
    /// The number of test files found.
    pub files: usize,
    /// The number of requests compared (`passed + failed`).
    pub requests: usize,
    /// The requests that agreed.
    pub passed: usize,
    /// The requests that differed.
    pub failed: usize,
    /// The files with a mismatch, in path order.
    pub failures: Vec<FileReport>,
    /// The files that could not be run (or the root, if it holds no tests).
    pub errors: Vec<ConformanceError>,
    /// The listed known disagreements that were run, in path order.
    pub known: Vec<KnownReport>,
    /// Listed tests under a folder that was run but not found there.
    pub unmatched_known: Vec<String>,
}

impl Summary {
    /// Whether every file ran and agreed (known disagreements aside).
    pub fn is_success(&self) -> bool {
        self.failures.is_empty() && self.errors.is_empty()
    }

    /// The number of (unlisted) files where strict validation differs from
    /// `shouldValidate`.
    pub fn validation_failures(&self) -> usize {
        self.failures
            .iter()
            .filter(|r| {
                r.mismatches
                    .iter()
                    .any(|m| matches!(m, Mismatch::Validation { .. }))
            })
            .count()
    }

    /// The number of listed tests where the reference's validation differs from
    /// `shouldValidate`.
    pub fn known_validation(&self) -> usize {
        self.known.iter().filter(|k| k.validation_differs()).count()
    }

    /// The number of requests where the reference differs from the listed tests' files.
    pub fn known_requests(&self) -> usize {
        self.known
            .iter()
            .map(|k| k.reference.failed_requests())
            .sum()
    }
}

/// The result of one file in [`run_all`].
enum FileRun {
    Ran(FileReport),
    Known(FileReport, KnownReport),
    Failed(ConformanceError),
}

/// `path` relative to `root`, with `/`.
fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn run_one(root: &Path, file: &Path, decider: &dyn Decider, known: &KnownDisagreements) -> FileRun {
    let test = match Test::load(root, file) {
        Ok(t) => t,
        Err(e) => return FileRun::Failed(e),
    };
    match known.reason(&relative(root, file)) {
        None => FileRun::Ran(compare(&test, decider, None)),
        Some(reason) => {
            let reference = Reference::new();
            let theirs = compare(&test, &reference, None);
            let ours = compare(&test, decider, Some(&reference));
            FileRun::Known(
                ours,
                KnownReport {
                    reason: reason.to_string(),
                    reference: theirs,
                },
            )
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

/// Runs every test under `root` (see [`discover`]) with `decider`, on all cores.
///
/// Tests listed in `known` are compared with the reference authorizer's answers instead
/// of the file's, and how the reference differs from the file is reported in
/// [`Summary::known`]. A file that cannot be run (or an engine panic) is recorded in
/// [`Summary::errors`] and the run goes on.
pub fn run_all(root: &Path, decider: &dyn Decider, known: &KnownDisagreements) -> Summary {
    let mut summary = Summary {
        decider: decider.name().to_string(),
        ..Summary::default()
    };
    let files = match discover(root) {
        Ok(f) => f,
        Err(e) => {
            summary.errors.push(e);
            return summary;
        }
    };
    summary.files = files.len();
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, files.len().max(1));
    let mut results: Vec<(usize, FileRun)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(file) = files.get(i) else { break };
                        let run =
                            catch_unwind(AssertUnwindSafe(|| run_one(root, file, decider, known)))
                                .unwrap_or_else(|payload| {
                                    FileRun::Failed(ConformanceError::Panicked {
                                        file: file.clone(),
                                        message: panic_message(payload.as_ref()),
                                    })
                                });
                        done.push((i, run));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    if results.len() < files.len() {
        // Only a panic outside `catch_unwind` (i.e. in this runner) loses results.
        for (i, file) in files.iter().enumerate() {
            if results.binary_search_by_key(&i, |(j, _)| *j).is_err() {
                summary.errors.push(ConformanceError::Panicked {
                    file: file.clone(),
                    message: "the runner's thread stopped".to_string(),
                });
            }
        }
    }
    for (_, run) in results {
        let report = match run {
            FileRun::Ran(r) => r,
            FileRun::Known(r, k) => {
                summary.known.push(k);
                r
            }
            FileRun::Failed(e) => {
                summary.errors.push(e);
                continue;
            }
        };
        summary.requests += report.requests;
        summary.passed += report.passed_requests();
        summary.failed += report.failed_requests();
        if !report.passed() {
            summary.failures.push(report);
        }
    }
    let found: BTreeSet<String> = files.iter().map(|f| relative(root, f)).collect();
    summary.unmatched_known = known
        .iter()
        .map(|(p, _)| p)
        .filter(|p| {
            let folder = p.split('/').next().unwrap_or("");
            root.join(folder).is_dir() && !found.contains(*p)
        })
        .map(str::to_string)
        .collect();
    summary
}
