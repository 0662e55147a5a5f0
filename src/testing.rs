//! Declarative policy tests: TOML suites beside the policies, run by `cargo test` and by
//! `membergate test`.
//!
//! A suite is a file `policies/tests/<topic>.toml` that names a fixture (a
//! [`Membership`] in `policies/tests/fixtures/<name>.toml`) and lists cases:
//!
//! ```toml
//! fixture = "party"
//!
//! [[case]]
//! name = "cleared campaign reads an eligible member's phone during the ballot"
//! checks = "rule 3"                  # the rule or breach scenario the case checks
//! principal = 'CampaignStaff::"cs-a"'
//! action = "read"
//! member = "m-eligible"
//! at = "2020-03-01T12:00:00Z"        # context.now
//! election = "leader-2020"           # optional: context.election
//! field = "phone"
//! expect = "allow"                   # or "deny"
//! policies = ["campaign-read-contact"]   # optional: the determining policies, exactly
//! ```
//!
//! Instead of `field` and `expect`, a case may give `fields = [...]`, the exact set
//! [`Engine::permitted_fields`] must return, or `expect = "error"` (with an optional
//! `error_contains`) for a request that must be refused as malformed. Optional context
//! keys: `session`, `purpose`, `reason`, `reads_this_hour`.
//!
//! [`Coverage`] counts, from the [`CaseReport`]s of a run, the cases each policy was
//! determining in, and lists the policies no case exercises (`membergate test --coverage`).
//!
//! # Example
//! ```
//! use membergate::{testing::TestPlan, Engine};
//! let engine = Engine::from_dir("policies")?;
//! let plan = TestPlan::load("policies")?;
//! let failed = plan
//!     .cases()
//!     .filter(|(suite, case)| plan.run(&engine, suite, case).failure.is_some())
//!     .count();
//! assert_eq!(failed, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::Deserialize;

use crate::decision::{Decision, Effect};
use crate::directory::Directory;
use crate::engine::Engine;
use crate::error::{LoadError, Problem, ProblemKind, RequestError};
use crate::fields::FieldSet;
use crate::records::{Membership, PrincipalId};
use crate::request::{Action, Context, MemberRequest, Request};

/// The folder of a policy directory that holds the suites.
pub const TESTS_DIR: &str = "tests";
/// The folder of [`TESTS_DIR`] that holds the fixtures.
pub const FIXTURES_DIR: &str = "fixtures";

/// What a case expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// One decision on one field.
    Decision {
        /// The catalogue field.
        field: String,
        /// Allow or deny.
        effect: Effect,
        /// The exact set of determining policies, if the case states it.
        policies: Option<BTreeSet<String>>,
    },
    /// The exact set of permitted fields.
    Fields(BTreeSet<String>),
    /// The request is refused as malformed (asked for `field`, or for every field if
    /// none is given); the message contains `contains`, if given.
    Error {
        /// The field asked for.
        field: Option<String>,
        /// Text the error message must contain.
        contains: Option<String>,
    },
}

/// One test case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The case's name, unique in its suite.
    pub name: String,
    /// The rule or breach scenario it checks.
    pub checks: String,
    /// The line the case starts on.
    pub line: usize,
    /// Who asks.
    pub principal: PrincipalId,
    /// What they ask to do.
    pub action: Action,
    /// The member record.
    pub member: String,
    /// The circumstances.
    pub context: Context,
    /// What must come out.
    pub expect: Expectation,
}

/// One suite file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suite {
    /// The file.
    pub file: PathBuf,
    /// The fixture the cases run against.
    pub fixture: String,
    /// The cases, in file order.
    pub cases: Vec<Case>,
}

impl Suite {
    /// The file's name, for naming cases (`campaigns.toml`).
    pub fn name(&self) -> String {
        self.file.file_name().map_or_else(
            || self.file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }
}

/// What running one case gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseReport {
    /// Why the case failed, or `None` if it passed.
    pub failure: Option<String>,
    /// The policies that were determining in any decision the case made (for a `fields`
    /// case, the decision on each field of the catalogue); see [`Coverage`].
    pub determining: BTreeSet<String>,
}

/// Every suite of a policy directory with its fixtures, loaded and checked.
#[derive(Debug, Clone)]
pub struct TestPlan {
    suites: Vec<Suite>,
    fixtures: BTreeMap<String, Membership>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    fixture: toml::Spanned<String>,
    #[serde(default)]
    case: Vec<toml::Spanned<RawCase>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    checks: String,
    principal: toml::Spanned<String>,
    action: toml::Spanned<String>,
    member: String,
    at: toml::Spanned<String>,
    election: Option<String>,
    session: Option<String>,
    purpose: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    reads_this_hour: u64,
    field: Option<String>,
    expect: Option<toml::Spanned<String>>,
    policies: Option<Vec<String>>,
    fields: Option<Vec<String>>,
    error_contains: Option<String>,
}

impl TestPlan {
    /// Loads every `*.toml` suite under `policy_dir/tests/` and the fixtures they name.
    ///
    /// # Errors
    /// [`LoadError`] with every malformed suite or fixture, each problem at its file,
    /// line and column (bad TOML, unknown keys, a malformed principal, action or time,
    /// a case with both `field` and `fields`, a missing fixture, a repeated case name).
    pub fn load(policy_dir: impl AsRef<Path>) -> Result<TestPlan, LoadError> {
        let dir = policy_dir.as_ref().join(TESTS_DIR);
        let entries = fs::read_dir(&dir).map_err(|source| LoadError::Io {
            path: dir.clone(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        files.sort();
        let mut problems = Vec::new();
        let mut suites = Vec::new();
        let mut fixtures = BTreeMap::new();
        for file in files {
            let text = fs::read_to_string(&file).map_err(|source| LoadError::Io {
                path: file.clone(),
                source,
            })?;
            let Some((suite, fixture_at)) = parse_suite(&file, &text, &mut problems) else {
                continue;
            };
            if !fixtures.contains_key(&suite.fixture) {
                match load_fixture(&dir, &suite.fixture) {
                    Ok(m) => {
                        fixtures.insert(suite.fixture.clone(), m);
                    }
                    Err(FixtureError::Unreadable(path, e)) => problems.push(Problem::at(
                        ProblemKind::TestSuite,
                        &file,
                        &text,
                        Some(fixture_at),
                        format!(
                            "cannot read fixture `{}` ({}): {e}",
                            suite.fixture,
                            path.display()
                        ),
                    )),
                    Err(FixtureError::Malformed(p)) => problems.push(p),
                }
            }
            suites.push(suite);
        }
        if problems.is_empty() {
            Ok(TestPlan { suites, fixtures })
        } else {
            Err(LoadError::Invalid { problems })
        }
    }

    /// The suites.
    pub fn suites(&self) -> &[Suite] {
        &self.suites
    }

    /// Every case with its suite.
    pub fn cases(&self) -> impl Iterator<Item = (&Suite, &Case)> {
        self.suites
            .iter()
            .flat_map(|s| s.cases.iter().map(move |c| (s, c)))
    }

    /// Runs one case against `engine`.
    pub fn run(&self, engine: &Engine, suite: &Suite, case: &Case) -> CaseReport {
        let mut determining = BTreeSet::new();
        let failure = match self.fixtures.get(&suite.fixture) {
            None => Some(format!("fixture `{}` is not loaded", suite.fixture)),
            Some(fixture) => match Directory::from_membership(engine, fixture) {
                Ok(dir) => check(engine, &dir, fixture, case, &mut determining).err(),
                Err(e) => Some(format!("fixture `{}` does not load: {e}", suite.fixture)),
            },
        };
        CaseReport {
            failure: failure.map(|f| {
                format!(
                    "{}:{}: case `{}` (checks {}): {f}",
                    suite.file.display(),
                    case.line,
                    case.name,
                    case.checks
                )
            }),
            determining,
        }
    }
}

/// Policy test coverage: for every policy of an [`Engine`], how many test cases made it
/// *determining* (a permit that allowed, or a forbid that forbade, in a decision the case
/// made), and so which policies no case exercises.
///
/// Built from the [`CaseReport`]s a test run already has, so no case is run twice: start
/// with [`Coverage::new`] and [`record`](Coverage::record) each report. Every report
/// counts, passed or failed (a failing case fails the run anyway). A case counts once per
/// policy however many of its decisions that policy determined. A case expecting `fields`
/// contributes its decision on every field of the catalogue (the permits of the permitted
/// fields, the forbids of the forbidden ones); a case expecting an error contributes none.
///
/// # Example
/// ```
/// use membergate::testing::{Coverage, TestPlan};
/// use membergate::Engine;
///
/// let engine = Engine::from_dir("policies")?;
/// let plan = TestPlan::load("policies")?;
/// let mut coverage = Coverage::new(&engine);
/// for (suite, case) in plan.cases() {
///     let report = plan.run(&engine, suite, case);
///     assert_eq!(report.failure, None);
///     coverage.record(&report);
/// }
/// assert_eq!(coverage.covered(), engine.policy_ids().count());
/// assert!(coverage.uncovered().is_empty());
/// assert!(coverage.cases("campaign-read-contact").is_some_and(|n| n > 0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    /// Every policy id of the engine, with the number of cases it was determining in.
    cases: BTreeMap<String, usize>,
}

impl Coverage {
    /// Coverage of `engine`'s policies before any case is recorded: every policy at zero.
    pub fn new(engine: &Engine) -> Coverage {
        Coverage {
            cases: engine.policy_ids().map(|id| (id.to_string(), 0)).collect(),
        }
    }

    /// Counts one case: each policy determining in any of its decisions gains one case.
    /// Ids that are not the engine's (a report from another engine) are ignored.
    pub fn record(&mut self, report: &CaseReport) {
        for id in &report.determining {
            if let Some(n) = self.cases.get_mut(id) {
                *n += 1;
            }
        }
    }

    /// The number of cases in which policy `id` was determining, or `None` if the engine
    /// has no such policy.
    pub fn cases(&self, id: &str) -> Option<usize> {
        self.cases.get(id).copied()
    }

    /// Every policy id, sorted, with the number of cases it was determining in.
    pub fn iter(&self) -> impl Iterator<Item = (&str, usize)> {
        self.cases.iter().map(|(id, n)| (id.as_str(), *n))
    }

    /// The number of policies.
    pub fn len(&self) -> usize {
        self.cases.len()
    }

    /// Whether the engine has no policies.
    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
    }

    /// The number of policies determining in at least one case.
    pub fn covered(&self) -> usize {
        self.cases.values().filter(|n| **n > 0).count()
    }

    /// The policies no case made determining, sorted.
    pub fn uncovered(&self) -> Vec<&str> {
        self.iter()
            .filter(|(_, n)| *n == 0)
            .map(|(id, _)| id)
            .collect()
    }
}

/// Both decision paths' answers when they agree; an error naming both when they do not
/// (a suite checks what the CRM runs, and that Cedar's authorizer agrees).
fn agreed<T: PartialEq + std::fmt::Debug>(
    engine: Result<T, RequestError>,
    oracle: Result<T, RequestError>,
) -> Result<Result<T, RequestError>, String> {
    if engine == oracle {
        Ok(engine)
    } else {
        Err(format!(
            "the engine and Cedar's authorizer disagree: the engine gives {engine:?}, Cedar {oracle:?}"
        ))
    }
}

fn check(
    engine: &Engine,
    dir: &Directory,
    fixture: &Membership,
    case: &Case,
    determining: &mut BTreeSet<String>,
) -> Result<(), String> {
    let unknown: Vec<&String> = match &case.expect {
        Expectation::Decision {
            policies: Some(p), ..
        } => p
            .iter()
            .filter(|id| engine.policy_source(id).is_none())
            .collect(),
        _ => Vec::new(),
    };
    if !unknown.is_empty() {
        return Err(format!("the case names unknown policies {unknown:?}"));
    }
    // The member as the CRM would read it with its row; a member the fixture lacks is
    // the CRM's "unknown member".
    let member = fixture
        .member(&case.member)
        .ok_or_else(|| format!("unknown member `{}` (not in the fixture)", case.member));
    let asked = |m| MemberRequest {
        principal: &case.principal,
        action: case.action,
        member: m,
        context: &case.context,
    };
    let decide = |field: &str| -> Result<Result<Decision<'_>, RequestError>, String> {
        let req: Request<'_> = asked(member.clone()?).field(field);
        agreed(
            engine.authorize(dir, &req),
            engine.reference().authorize(dir, &req),
        )
    };
    let fields = || -> Result<Result<FieldSet, RequestError>, String> {
        let req = asked(member.clone()?);
        agreed(
            engine.permitted_fields(dir, &req),
            engine.reference().permitted_fields(dir, &req),
        )
    };
    match &case.expect {
        Expectation::Decision {
            field,
            effect,
            policies,
        } => {
            let d = decide(field)?.map_err(|e| format!("expected {effect}, got an error: {e}"))?;
            determining.extend(d.policies().iter().map(|p| p.to_string()));
            let got: BTreeSet<String> = d.policies().iter().map(|p| p.to_string()).collect();
            if d.effect() != *effect {
                return Err(format!(
                    "expected {effect}, got {} (policies {got:?})",
                    d.effect()
                ));
            }
            match policies {
                Some(want) if *want != got => Err(format!(
                    "{effect} as expected, but decided by {got:?}, expected {want:?}"
                )),
                _ => Ok(()),
            }
        }
        Expectation::Fields(want) => {
            let set =
                fields()?.map_err(|e| format!("expected fields {want:?}, got an error: {e}"))?;
            let got: BTreeSet<String> = engine
                .catalogue()
                .names(set)
                .into_iter()
                .map(str::to_string)
                .collect();
            let unknown: Vec<_> = want
                .iter()
                .filter(|f| engine.catalogue().id(f).is_none())
                .collect();
            if !unknown.is_empty() {
                return Err(format!("the case names unknown fields {unknown:?}"));
            }
            // Every field's decision, denials included: a forbid that removed a field is
            // determining in this case too (for [`Coverage`]).
            for (_, info) in engine.catalogue().iter() {
                if let Ok(d) = decide(&info.name)? {
                    determining.extend(d.policies().iter().map(|p| p.to_string()));
                }
            }
            if got == *want {
                Ok(())
            } else {
                let missing: Vec<_> = want.difference(&got).collect();
                let extra: Vec<_> = got.difference(want).collect();
                Err(format!(
                    "permitted fields {got:?}; missing {missing:?}, not expected {extra:?}"
                ))
            }
        }
        Expectation::Error { field, contains } => {
            let result: Result<String, String> = match field {
                Some(f) => match decide(f) {
                    Err(e) if member.is_err() => Err(e),
                    Err(disagree) => return Err(disagree),
                    Ok(r) => r
                        .map(|d| format!("{}", d.effect()))
                        .map_err(|e| e.to_string()),
                },
                None => match fields() {
                    Err(e) if member.is_err() => Err(e),
                    Err(disagree) => return Err(disagree),
                    Ok(r) => r
                        .map(|set| format!("fields {:?}", engine.catalogue().names(set)))
                        .map_err(|e| e.to_string()),
                },
            };
            match result {
                Ok(got) => Err(format!("expected an error, got {got}")),
                Err(e) => match contains {
                    Some(c) if !e.to_string().contains(c.as_str()) => {
                        Err(format!("expected an error containing `{c}`, got: {e}"))
                    }
                    _ => Ok(()),
                },
            }
        }
    }
}

fn parse_suite(file: &Path, text: &str, problems: &mut Vec<Problem>) -> Option<(Suite, usize)> {
    let problem =
        |at: Option<usize>, msg: String| Problem::at(ProblemKind::TestSuite, file, text, at, msg);
    let raw: RawSuite = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            problems.push(problem(e.span().map(|s| s.start), e.message().to_string()));
            return None;
        }
    };
    let before = problems.len();
    let mut cases: Vec<Case> = Vec::new();
    for spanned in raw.case {
        let at = spanned.span().start;
        let raw = spanned.into_inner();
        if cases.iter().any(|c| c.name == raw.name) {
            problems.push(problem(
                Some(at),
                format!("duplicate case name `{}`", raw.name),
            ));
        }
        if raw.checks.trim().is_empty() {
            problems.push(problem(
                Some(at),
                format!(
                    "case `{}` must say which rule or scenario it checks",
                    raw.name
                ),
            ));
        }
        let principal = raw.principal.get_ref().parse::<PrincipalId>();
        let action = raw.action.get_ref().parse::<Action>();
        let now = raw.at.get_ref().parse::<Timestamp>();
        let (principal, action, now) = match (principal, action, now) {
            (Ok(p), Ok(a), Ok(n)) => (p, a, n),
            (p, a, n) => {
                if let Err(e) = p {
                    problems.push(problem(Some(raw.principal.span().start), e.to_string()));
                }
                if let Err(e) = a {
                    problems.push(problem(Some(raw.action.span().start), e.to_string()));
                }
                if let Err(e) = n {
                    problems.push(problem(
                        Some(raw.at.span().start),
                        format!("`at` is not an RFC 3339 time: {e}"),
                    ));
                }
                continue;
            }
        };
        let expect_word = raw
            .expect
            .as_ref()
            .map(|e| (e.get_ref().as_str(), e.span().start));
        let expect = match (raw.field, raw.fields, expect_word) {
            (Some(field), None, Some((word @ ("allow" | "deny"), _))) => Expectation::Decision {
                field,
                effect: if word == "allow" {
                    Effect::Allow
                } else {
                    Effect::Deny
                },
                policies: raw.policies.map(|p| p.into_iter().collect()),
            },
            (None, Some(fields), None) => Expectation::Fields(fields.into_iter().collect()),
            (field, None, Some(("error", _))) => Expectation::Error {
                field,
                contains: raw.error_contains,
            },
            (Some(_), Some(_), _) => {
                problems.push(problem(
                    Some(at),
                    format!(
                        "case `{}` has both `field` and `fields`: give one field with `expect`, or the whole set with `fields`",
                        raw.name
                    ),
                ));
                continue;
            }
            (_, _, Some((word, pos))) if !matches!(word, "allow" | "deny" | "error") => {
                problems.push(problem(
                    Some(pos),
                    format!("`expect` must be \"allow\", \"deny\" or \"error\", not `{word}`"),
                ));
                continue;
            }
            _ => {
                problems.push(problem(
                    Some(at),
                    format!(
                        "case `{}` needs `field` with `expect = \"allow\"|\"deny\"`, or `fields = [...]`, or `expect = \"error\"`",
                        raw.name
                    ),
                ));
                continue;
            }
        };
        let context = Context {
            now,
            reads_this_hour: raw.reads_this_hour,
            election: raw.election,
            session: raw.session,
            purpose: raw.purpose,
            reason: raw.reason,
        };
        cases.push(Case {
            name: raw.name,
            checks: raw.checks,
            line: crate::error::line_column(text, at).0,
            principal,
            action,
            member: raw.member,
            context,
            expect,
        });
    }
    let fixture_at = raw.fixture.span().start;
    (problems.len() == before).then(|| {
        let suite = Suite {
            file: file.to_path_buf(),
            fixture: raw.fixture.into_inner(),
            cases,
        };
        (suite, fixture_at)
    })
}

enum FixtureError {
    Unreadable(PathBuf, std::io::Error),
    Malformed(Problem),
}

fn load_fixture(tests_dir: &Path, name: &str) -> Result<Membership, FixtureError> {
    let path = tests_dir.join(FIXTURES_DIR).join(format!("{name}.toml"));
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => return Err(FixtureError::Unreadable(path, e)),
    };
    toml::from_str(&text).map_err(|e| {
        FixtureError::Malformed(Problem::at(
            ProblemKind::TestSuite,
            &path,
            &text,
            e.span().map(|s| s.start),
            e.message().to_string(),
        ))
    })
}
