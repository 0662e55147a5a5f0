//! The invariants file beside the policies: properties of the whole policy set, each a
//! Cedar condition over the request and its entities, parsed and validated against the
//! schema with positions in the file.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use cedar_policy::{Policy, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;
use serde::Deserialize;

use crate::error::{LoadError, Problem, ProblemKind};

/// The invariants file of a policy directory.
pub use crate::bundle::INVARIANTS_FILE;

/// What an invariant claims about the requests its condition holds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// No request satisfying the condition is ever allowed.
    Never,
    /// Every request satisfying the condition is allowed.
    Always,
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Claim::Never => "never",
            Claim::Always => "always",
        })
    }
}

/// One invariant: a claim about every request for which a Cedar condition holds.
#[derive(Debug, Clone)]
pub struct Invariant {
    /// Its name, unique in the file.
    pub id: String,
    /// What it says, in plain words.
    pub says: String,
    /// The rules of the domain notes it encodes (e.g. `"3"` or `"4, 11"`).
    pub rule: Option<String>,
    /// The breach scenario it rules out, if any.
    pub scenario: Option<String>,
    /// Whether matching requests are never or always allowed.
    pub claim: Claim,
    /// The condition, as written: a Cedar expression over `principal`, `action`,
    /// `resource` and `context`.
    pub condition: String,
    /// The 1-based line of the invariant's condition in the file.
    pub line: usize,
    /// The condition as a one-policy set `permit (principal, action, resource) when { .. }`
    /// whose id is the invariant's id: the set allows exactly the requests the condition
    /// holds for (without error).
    pub(crate) matcher: PolicySet,
}

/// The invariants of a policy directory, in file order.
#[derive(Debug, Clone)]
pub struct Invariants {
    file: PathBuf,
    invariants: Vec<Invariant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    invariant: Vec<RawInvariant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInvariant {
    id: toml::Spanned<String>,
    says: String,
    rule: Option<String>,
    scenario: Option<String>,
    never: Option<toml::Spanned<String>>,
    always: Option<toml::Spanned<String>>,
}

/// Text put before and after a condition to make it a policy.
const PREFIX: &str = "permit (principal, action, resource) when {\n";
const SUFFIX: &str = "\n};";

impl Invariants {
    /// Loads `dir/invariants.toml` and validates every condition against `schema`
    /// (strictly: warnings refuse too). Every problem names the file, line and column.
    ///
    /// ```
    /// use membergate::{Engine, assurance::Invariants};
    /// let engine = Engine::from_dir("policies")?;
    /// let invariants = Invariants::load("policies", engine.schema())?;
    /// assert!(invariants.iter().any(|i| i.id == "role-ended-nothing"));
    /// # Ok::<(), membergate::LoadError>(())
    /// ```
    pub fn load(dir: impl AsRef<Path>, schema: &Schema) -> Result<Invariants, LoadError> {
        let file = dir.as_ref().join(INVARIANTS_FILE);
        let text = fs::read_to_string(&file).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                Invariants::missing(file.clone())
            } else {
                LoadError::Io {
                    path: file.clone(),
                    source,
                }
            }
        })?;
        Invariants::parse(&file, &text, schema)
    }

    /// The error for a policy directory without `file`, its invariants file.
    pub(crate) fn missing(file: PathBuf) -> LoadError {
        LoadError::Missing {
            path: file,
            what: "an invariants file `invariants.toml` to verify",
        }
    }

    /// Parses invariants from `text`, reporting problems as in `file`.
    pub fn parse(file: &Path, text: &str, schema: &Schema) -> Result<Invariants, LoadError> {
        let problem = |offset: Option<usize>, message: String| {
            Problem::at(ProblemKind::Invariant, file, text, offset, message)
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| LoadError::Invalid {
            problems: vec![problem(e.span().map(|s| s.start), e.message().to_string())],
        })?;
        let mut problems = Vec::new();
        let mut invariants: Vec<Invariant> = Vec::new();
        let validator = Validator::new(schema.clone());
        for r in raw.invariant {
            let id_at = r.id.span().start;
            let id = r.id.into_inner();
            if id.is_empty() || invariants.iter().any(|i| i.id == id) {
                problems.push(problem(
                    Some(id_at),
                    format!("invariant id `{id}` is empty or used twice"),
                ));
                continue;
            }
            let (claim, condition) = match (r.never, r.always) {
                (Some(c), None) => (Claim::Never, c),
                (None, Some(c)) => (Claim::Always, c),
                _ => {
                    problems.push(problem(
                        Some(id_at),
                        format!("invariant `{id}` needs exactly one of `never` or `always`"),
                    ));
                    continue;
                }
            };
            let start = content_start(text, condition.span().start);
            let condition = condition.into_inner();
            // Maps an offset in the generated policy text back into the file.
            let at = |offset: Option<usize>| {
                Some(start + offset.map_or(0, |o| o.saturating_sub(PREFIX.len())))
            };
            let policy_text = format!("{PREFIX}{condition}{SUFFIX}");
            let policy = match Policy::parse(Some(PolicyId::new(id.clone())), policy_text.as_str())
            {
                Ok(p) => p,
                Err(e) => {
                    problems.push(problem(at(first_offset(&e)), condition_message(&id, &e)));
                    continue;
                }
            };
            let mut matcher = PolicySet::new();
            if let Err(e) = matcher.add(policy) {
                problems.push(problem(at(None), condition_message(&id, &e)));
                continue;
            }
            let result = validator.validate(&matcher, ValidationMode::Strict);
            let mut valid = true;
            for e in result.validation_errors() {
                problems.push(problem(at(first_offset(e)), condition_message(&id, e)));
                valid = false;
            }
            for w in result.validation_warnings() {
                problems.push(problem(at(first_offset(w)), condition_message(&id, w)));
                valid = false;
            }
            if valid {
                invariants.push(Invariant {
                    id,
                    says: r.says,
                    rule: r.rule,
                    scenario: r.scenario,
                    claim,
                    condition,
                    line: crate::error::line_column(text, start).0,
                    matcher,
                });
            }
        }
        if problems.is_empty() {
            Ok(Invariants {
                file: file.to_path_buf(),
                invariants,
            })
        } else {
            Err(LoadError::Invalid { problems })
        }
    }

    /// The file the invariants came from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The invariants, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &Invariant> {
        self.invariants.iter()
    }

    /// Keeps only the invariants for which `keep` is true (e.g. to check one).
    pub fn retain(&mut self, keep: impl FnMut(&Invariant) -> bool) {
        self.invariants.retain(keep);
    }

    /// How many invariants there are.
    pub fn len(&self) -> usize {
        self.invariants.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.invariants.is_empty()
    }
}

/// The byte offset where a TOML string's content starts, given where its value starts.
fn content_start(text: &str, value_start: usize) -> usize {
    let rest = text.get(value_start..).unwrap_or("");
    let (skip, multi) = if rest.starts_with("'''") || rest.starts_with("\"\"\"") {
        (3, true)
    } else {
        (1, false)
    };
    let mut start = value_start + skip;
    if multi {
        let after = text.get(start..).unwrap_or("");
        if after.starts_with("\r\n") {
            start += 2;
        } else if after.starts_with('\n') {
            start += 1;
        }
    }
    start
}

fn first_offset(diag: &dyn Diagnostic) -> Option<usize> {
    diag.labels()
        .and_then(|mut labels| labels.next())
        .map(|l| l.offset())
}

fn condition_message(id: &str, diag: &dyn Diagnostic) -> String {
    let mut message = format!("invariant `{id}`: {diag}");
    if let Some(help) = diag.help() {
        message.push_str(&format!(" (help: {help})"));
    }
    message
}
