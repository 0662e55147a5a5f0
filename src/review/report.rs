//! A whole review of a policy change, each section for the people who sign it off: who
//! sees what, when ([`WhoSeesWhat`]); what changed for every possible request, each
//! difference with an example a person can read; the invariants proved or refuted under
//! each version; the policy tests and their coverage under each version; the record of
//! processing under the new version.

use std::fmt;
use std::path::Path;

use super::{data_examples, who_sees_what, DataExample, ReviewError, WhoSeesWhat};
use crate::assurance::{
    Counterexample, Difference, InvariantResult, Invariants, Verdict, Verifier, VerifyError,
};
use crate::processing::{ProcessingFacts, RecordOfProcessing};
use crate::records::Membership;
use crate::testing::{Coverage, TestPlan};
use crate::Engine;

/// A section of a review for the old and the new version of the policies.
#[derive(Debug, Clone)]
pub struct Versions<T> {
    /// Under the old policies.
    pub old: T,
    /// Under the new policies.
    pub new: T,
}

/// A policy change reviewed.
#[derive(Debug)]
pub struct Review {
    /// Who sees what, when, before and after.
    pub who_sees_what: WhoSeesWhat,
    /// What changed for every possible request, or why that was not asked (no solver).
    pub changes: Result<Changes, String>,
    /// Each version's invariants (its own `invariants.toml`), or why they were not proved.
    pub invariants: Versions<Result<Vec<InvariantVerdict>, String>>,
    /// Each version's policy tests (its own `tests/`), or why they did not run.
    pub tests: Versions<Result<TestOutcome, String>>,
    /// The record of processing under the new policies (with the new directory's
    /// `processing.toml`), or why it could not be made.
    pub record: Result<RecordOfProcessing, String>,
}

/// What changed for every possible request.
#[derive(Debug)]
pub struct Changes {
    /// Policy ids only in the new version.
    pub added: Vec<String>,
    /// Policy ids only in the old version.
    pub removed: Vec<String>,
    /// Policy ids in both whose text differs.
    pub changed: Vec<String>,
    /// Each difference the solver found, with an example.
    pub differences: Vec<Change>,
}

/// One difference and an example of it.
#[derive(Debug)]
pub struct Change {
    /// The solver's difference: its request type, direction and refinements.
    pub difference: Difference,
    /// An example a person can read.
    pub example: Example,
}

/// An example of a difference, the most readable found.
#[derive(Debug)]
pub enum Example {
    /// A request of the membership data (see [`data_examples`]).
    Data(Box<DataExample>),
    /// A request with plausible values from the solver
    /// ([`Verifier::plausible_difference`]): the new version's decision and the old's.
    Plausible {
        /// Decided by the new policies.
        after: Box<Counterexample>,
        /// Decided by the old policies.
        before: Box<Counterexample>,
    },
    /// No plausible request goes this way: it happens only at the edges of time or of
    /// numbers; the solver's own example is in [`Change::difference`].
    OnlyAtTheEdges,
}

/// One invariant's verdict.
#[derive(Debug)]
pub struct InvariantVerdict {
    /// The solver's result (its counterexample as the solver gave it).
    pub result: InvariantResult,
    /// For a refuted invariant, a counterexample with plausible values, if one exists.
    pub plausible: Option<Counterexample>,
}

/// A version's policy tests.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    /// Each suite: its name, cases passed, and each failing case with why.
    pub suites: Vec<SuiteOutcome>,
    /// The policies each case was determining in.
    pub coverage: Coverage,
}

/// A suite's outcome.
#[derive(Debug, Clone)]
pub struct SuiteOutcome {
    /// Its name (the file's stem).
    pub name: String,
    /// How many cases passed.
    pub passed: usize,
    /// Each failing case's name and why it failed.
    pub failed: Vec<(String, String)>,
}

impl TestOutcome {
    /// All cases passed.
    pub fn passed(&self) -> usize {
        self.suites.iter().map(|s| s.passed).sum()
    }

    /// All cases failed.
    pub fn failed(&self) -> usize {
        self.suites.iter().map(|s| s.failed.len()).sum()
    }
}

/// Reviews the change from the policies of directory `old` to those of `new` on the
/// membership data `party`: who sees what (see [`who_sees_what`]); with `verifier`, what
/// changed for every possible request (each difference with an example from the data,
/// else one with plausible values) and each version's invariants; each version's tests.
///
/// ```no_run
/// use membergate::{review, sample, assurance::Verifier};
///
/// let mut verifier = Verifier::locate().ok();
/// let review = review::review("policies", "policies-changed", &sample::bundled(), verifier.as_mut())?;
/// std::fs::write("review.html", review.to_html("Review of the change"))?;
/// println!("{review}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn review(
    old_dir: impl AsRef<Path>,
    new_dir: impl AsRef<Path>,
    party: &Membership,
    mut verifier: Option<&mut Verifier>,
) -> Result<Review, ReviewError> {
    let dirs = (old_dir.as_ref(), new_dir.as_ref());
    let load = |dir: &Path, which| {
        Engine::from_dir(dir).map_err(|source| ReviewError::Load {
            which,
            source: Box::new(source),
        })
    };
    let (old, new) = (load(dirs.0, "old")?, load(dirs.1, "new")?);
    let who_sees_what = who_sees_what(&old, &new, party)?;
    let no_solver = || "no SMT solver: not asked".to_string();
    let changes = match verifier.as_deref_mut() {
        Some(v) => changes(v, &old, &new, party).map_err(|e| e.to_string()),
        None => Err(no_solver()),
    };
    let mut invariants = |dir: &Path, engine: &Engine| match verifier.as_deref_mut() {
        Some(v) => invariants(v, dir, engine),
        None => Err(no_solver()),
    };
    let invariants = Versions {
        old: invariants(dirs.0, &old),
        new: invariants(dirs.1, &new),
    };
    let tests = Versions {
        old: tests(dirs.0, &old),
        new: tests(dirs.1, &new),
    };
    let record = ProcessingFacts::load(dirs.1)
        .map_err(|e| e.to_string())
        .and_then(|facts| {
            RecordOfProcessing::build(&new, party, &facts).map_err(|e| e.to_string())
        });
    Ok(Review {
        who_sees_what,
        changes,
        invariants,
        tests,
        record,
    })
}

/// `diff`'s differences, each with the most readable example found.
fn changes(
    v: &mut Verifier,
    old: &Engine,
    new: &Engine,
    party: &Membership,
) -> Result<Changes, VerifyError> {
    let diff = v.diff(old, new)?;
    let from_data = data_examples(old, new, party, &diff.differences);
    let mut differences = Vec::with_capacity(diff.differences.len());
    for (difference, data) in diff.differences.into_iter().zip(from_data) {
        let example = match data {
            Some(e) => Example::Data(Box::new(e)),
            None => match v.plausible_difference(old, new, &difference)? {
                Some(p) => Example::Plausible {
                    after: Box::new(p.example),
                    before: Box::new(p.before),
                },
                None => Example::OnlyAtTheEdges,
            },
        };
        differences.push(Change {
            difference,
            example,
        });
    }
    Ok(Changes {
        added: diff.added,
        removed: diff.removed,
        changed: diff.changed,
        differences,
    })
}

/// The invariants of `dir`, proved or refuted for `engine`, each refuted one with a
/// plausible counterexample where one exists.
fn invariants(
    v: &mut Verifier,
    dir: &Path,
    engine: &Engine,
) -> Result<Vec<InvariantVerdict>, String> {
    let invariants = Invariants::load(dir, engine.schema()).map_err(|e| e.to_string())?;
    let results = v
        .verify(engine.schema(), engine.policies(), &invariants)
        .map_err(|e| e.to_string())?;
    results
        .into_iter()
        .map(|result| {
            let plausible = v
                .plausible_counterexample(engine, &result)
                .map_err(|e| e.to_string())?;
            Ok(InvariantVerdict { result, plausible })
        })
        .collect()
}

/// The policy tests of `dir` run on `engine`, with coverage.
fn tests(dir: &Path, engine: &Engine) -> Result<TestOutcome, String> {
    let plan = TestPlan::load(dir).map_err(|e| e.to_string())?;
    let mut coverage = Coverage::new(engine);
    let mut suites: Vec<SuiteOutcome> = Vec::new();
    for (suite, case) in plan.cases() {
        let report = plan.run(engine, suite, case);
        coverage.record(&report);
        let name = suite.name();
        if suites.last().is_none_or(|s| s.name != name) {
            suites.push(SuiteOutcome {
                name,
                passed: 0,
                failed: Vec::new(),
            });
        }
        if let Some(s) = suites.last_mut() {
            match report.failure {
                None => s.passed += 1,
                Some(why) => s.failed.push((case.name.clone(), why)),
            }
        }
    }
    Ok(TestOutcome { suites, coverage })
}

impl Review {
    /// Whether the change altered nothing: no cell, no difference for any request, the
    /// same invariants refuted and the same test failures under both versions.
    pub fn unchanged(&self) -> bool {
        let refuted = |r: &Result<Vec<InvariantVerdict>, String>| -> Option<Vec<String>> {
            let all = r.as_ref().ok()?;
            Some(
                all.iter()
                    .filter(|i| matches!(i.result.verdict, Verdict::Refuted(_)))
                    .map(|i| i.result.invariant.id.clone())
                    .collect(),
            )
        };
        let failing = |t: &Result<TestOutcome, String>| t.as_ref().map(TestOutcome::failed).ok();
        self.who_sees_what.changed().next().is_none()
            && self
                .changes
                .as_ref()
                .is_ok_and(|c| c.differences.is_empty())
            && refuted(&self.invariants.old) == refuted(&self.invariants.new)
            && failing(&self.tests.old) == failing(&self.tests.new)
    }

    /// The review as one self-contained HTML page titled `title`: every section, no
    /// script, no network.
    pub fn to_html(&self, title: &str) -> String {
        super::html::review_page(title, self)
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.difference;
        writeln!(f, "* {}: {}", d.direction, d.request_type)?;
        for (name, values) in &d.refinements {
            writeln!(f, "    {name}: {}", values.join(", "))?;
        }
        match &self.example {
            Example::Data(e) => writeln!(f, "    for example, from the data: {e}"),
            Example::Plausible { after, before } => {
                writeln!(f, "    no request of the data goes this way; for example:")?;
                for line in after.describe().lines() {
                    writeln!(f, "      {line}")?;
                }
                writeln!(
                    f,
                    "    before, {}; after, {}",
                    before.verdict(),
                    after.verdict()
                )
            }
            Example::OnlyAtTheEdges => {
                writeln!(
                    f,
                    "    only at the edges of time or of numbers; the solver's example:"
                )?;
                for line in d.example.describe().lines() {
                    writeln!(f, "      {line}")?;
                }
                writeln!(
                    f,
                    "    before, {}; after, {}",
                    d.before.verdict(),
                    d.example.verdict()
                )
            }
        }
    }
}

impl fmt::Display for Review {
    /// The matrix, what changed for every request, the invariants and the tests.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.who_sees_what.to_string().trim_end())?;
        writeln!(f, "\nwhat changed for every possible request:")?;
        match &self.changes {
            Err(why) => writeln!(f, "  {why}")?,
            Ok(c) if c.differences.is_empty() => {
                writeln!(f, "  nothing: every request is decided alike")?
            }
            Ok(c) => {
                for change in &c.differences {
                    write!(f, "{change}")?;
                }
            }
        }
        for (which, invariants) in [("old", &self.invariants.old), ("new", &self.invariants.new)] {
            writeln!(f, "\ninvariants of the {which} policies:")?;
            match invariants {
                Err(why) => writeln!(f, "  {why}")?,
                Ok(all) => {
                    for i in all {
                        let inv = &i.result.invariant;
                        match &i.result.verdict {
                            Verdict::Proved => writeln!(f, "  proved   {}: {}", inv.id, inv.says)?,
                            Verdict::Refuted(raw) => {
                                writeln!(f, "  REFUTED  {}: {}", inv.id, inv.says)?;
                                let example = i.plausible.as_ref().unwrap_or(raw);
                                for line in example.to_string().lines() {
                                    writeln!(f, "    {line}")?;
                                }
                            }
                        }
                    }
                }
            }
        }
        for (which, tests) in [("old", &self.tests.old), ("new", &self.tests.new)] {
            writeln!(f, "\ntests of the {which} policies:")?;
            match tests {
                Err(why) => writeln!(f, "  {why}")?,
                Ok(t) => {
                    for s in &t.suites {
                        writeln!(
                            f,
                            "  {}: {} passed, {} failed",
                            s.name,
                            s.passed,
                            s.failed.len()
                        )?;
                        for (case, why) in &s.failed {
                            writeln!(f, "    FAIL {case}: {why}")?;
                        }
                    }
                    let uncovered = t.coverage.uncovered();
                    writeln!(
                        f,
                        "  coverage: {} of {} policies determining in some case{}",
                        t.coverage.covered(),
                        t.coverage.len(),
                        if uncovered.is_empty() {
                            String::new()
                        } else {
                            format!("; none: {}", uncovered.join(", "))
                        }
                    )?;
                }
            }
        }
        writeln!(f)?;
        match &self.record {
            Ok(record) => write!(f, "{record}"),
            Err(why) => writeln!(f, "record of processing: {why}"),
        }
    }
}
