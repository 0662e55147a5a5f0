//! A policy change's impact: per request type, what the new policies allow that the old
//! denied and the reverse, decided by the symbolic compiler and refined by field class,
//! member status and election phase, each difference with one concrete example.

use std::fmt;

use cedar_policy::{Decision, Policy, PolicyId, PolicySet, RequestEnv, Schema};

use super::scope::Reach;
use super::verify::{compile, confirm, env_name, Counterexample, Verifier, VerifyError};
use crate::bundle::MINIMAL_CLASS;
use crate::{Engine, MemberStatus};

/// Which way a difference goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The new policies allow requests the old denied.
    Widened,
    /// The new policies deny requests the old allowed.
    Narrowed,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Widened => "the new policies allow what the old denied",
            Direction::Narrowed => "the new policies deny what the old allowed",
        })
    }
}

/// The requests of one request type on which the two policy sets decide differently.
#[derive(Debug, Clone)]
pub struct Difference {
    /// Which way it goes.
    pub direction: Direction,
    /// The request type: `Principal · Action::"a" · Resource`.
    pub request_type: String,
    /// Per refinement (`field class`, `member status`, `election phase`), the values for
    /// which the sets differ; a refinement that does not apply is left out.
    pub refinements: Vec<(String, Vec<String>)>,
    /// One request on which they differ, decided by the new policies.
    pub example: Counterexample,
    /// The same request decided by the old policies.
    pub before: Counterexample,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.request_type)?;
        for (name, values) in &self.refinements {
            writeln!(f, "  {name}: {}", values.join(", "))?;
        }
        writeln!(f, "  for example:")?;
        for line in self.example.describe().lines() {
            writeln!(f, "    {line}")?;
        }
        writeln!(f, "    old: {}", self.before.verdict())?;
        write!(f, "    new: {}", self.example.verdict())
    }
}

/// What changed between two policy directories.
#[derive(Debug, Clone, Default)]
pub struct PolicyDiff {
    /// Policy ids only in the new set.
    pub added: Vec<String>,
    /// Policy ids only in the old set.
    pub removed: Vec<String>,
    /// Policy ids in both whose text differs.
    pub changed: Vec<String>,
    /// The decisions that differ, widenings first.
    pub differences: Vec<Difference>,
}

impl PolicyDiff {
    /// Whether the two sets decide every request alike.
    pub fn equivalent(&self) -> bool {
        self.differences.is_empty()
    }
}

/// A refinement: named values, each a Cedar condition.
struct Refinement {
    name: &'static str,
    values: Vec<(String, String)>,
}

fn refinements(new: &Engine) -> Vec<Refinement> {
    // The catalogue puts each field in one class, and some in the minimal record too;
    // the symbolic store lets a field be in any classes, so each class value excludes
    // the others.
    let mut classes: Vec<String> = Vec::new();
    for (_, info) in new.catalogue().iter() {
        if !classes.contains(&info.class) {
            classes.push(info.class.clone());
        }
    }
    let mut class_values: Vec<(String, String)> = classes
        .iter()
        .map(|c| {
            let mut cond = format!("context.field in FieldClass::{c:?}");
            for other in classes.iter().filter(|o| *o != c) {
                cond.push_str(&format!(" && !(context.field in FieldClass::{other:?})"));
            }
            (c.clone(), cond)
        })
        .collect();
    let exactly_one: Vec<String> = class_values.iter().map(|(_, c)| format!("({c})")).collect();
    class_values.push((
        "fields in several classes or none (none such in fields.toml)".into(),
        format!("!({})", exactly_one.join(" || ")),
    ));
    let minimal = format!("context.field in FieldClass::{MINIMAL_CLASS:?}");
    let statuses: Vec<&str> = MemberStatus::ALL.iter().map(|s| s.as_str()).collect();
    let mut status_values: Vec<(String, String)> = statuses
        .iter()
        .map(|s| (s.to_string(), format!("resource.status == {s:?}")))
        .collect();
    status_values.push((
        "any other status".to_string(),
        format!("!{statuses:?}.contains(resource.status)"),
    ));
    let election = "principal.campaign.election";
    vec![
        Refinement {
            name: "field class",
            values: class_values,
        },
        Refinement {
            name: "minimal record",
            values: vec![
                ("fields in it".into(), minimal.clone()),
                ("fields not in it".into(), format!("!({minimal})")),
            ],
        },
        Refinement {
            name: "member status",
            values: status_values,
        },
        Refinement {
            name: "election phase",
            values: vec![
                (
                    "before nominations close".into(),
                    format!("context.now < {election}.nominations_close"),
                ),
                (
                    "contest (nominations closed, ballot open)".into(),
                    format!(
                        "context.now >= {election}.nominations_close && context.now < {election}.ballot_close"
                    ),
                ),
                (
                    "after the ballot closed".into(),
                    format!("context.now >= {election}.ballot_close"),
                ),
            ],
        },
    ]
}

/// `set` restricted to the requests for which `condition` holds, or `None` when the
/// condition does not apply to the request type (it does not type-check there).
fn restricted(set: &PolicySet, condition: &str) -> Option<PolicySet> {
    let text = format!("forbid (principal, action, resource) unless {{ {condition} }};");
    let policy = Policy::parse(Some(PolicyId::new("membergate-diff-refinement")), text).ok()?;
    let mut out = set.clone();
    out.add(policy).ok()?;
    Some(out)
}

impl Verifier {
    /// Compares two policy directories over the new one's schema: for each request type,
    /// whether the new set allows requests the old denied, and the reverse, refined by
    /// field class, member status and (for campaign principals) election phase.
    ///
    /// ```no_run
    /// use membergate::{Engine, assurance::Verifier};
    /// let old = Engine::from_dir("policies")?;
    /// let new = Engine::from_dir("policies")?;
    /// let diff = Verifier::locate()?.diff(&old, &new)?;
    /// assert!(diff.equivalent());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn diff(&mut self, old: &Engine, new: &Engine) -> Result<PolicyDiff, VerifyError> {
        let mut diff = PolicyDiff::default();
        for id in new.policy_ids() {
            match (old.policy_source(id), new.policy_source(id)) {
                (None, _) => diff.added.push(id.to_string()),
                (Some(a), Some(b)) if a.text.trim() != b.text.trim() => {
                    diff.changed.push(id.to_string())
                }
                _ => {}
            }
        }
        diff.removed = old
            .policy_ids()
            .filter(|id| new.policy_source(id).is_none())
            .map(str::to_string)
            .collect();
        let schema = new.schema();
        let refinements = refinements(new);
        let reach = Reach::new(old.policies(), new.policies(), schema);
        let per_env = self.each_env(schema, |v, _, env| {
            let old_c = compile(old.policies(), env, schema, "the old policies")?;
            let new_c = compile(new.policies(), env, schema, "the new policies")?;
            // The ways no added, removed or changed policy can go here (by its scope and
            // effect) are not asked of the solver.
            let ways = reach.ways(env);
            let directions = [
                (ways.widen, Direction::Widened, new, &new_c, old, &old_c),
                (ways.narrow, Direction::Narrowed, old, &old_c, new, &new_c),
            ];
            let mut found = Vec::new();
            for (may, direction, allows, allows_c, denies, denies_c) in directions {
                if !may {
                    continue;
                }
                let Some(example) = v.implies(allows_c, denies_c)? else {
                    continue;
                };
                let (now, then) = match direction {
                    Direction::Widened => (Decision::Allow, Decision::Deny),
                    Direction::Narrowed => (Decision::Deny, Decision::Allow),
                };
                let what = format!("a difference ({direction})");
                let example = confirm(example, new.policies(), now, &what)?;
                let before = example.decided_on(old.policies(), then, &what)?;
                found.push(Difference {
                    direction,
                    request_type: env_name(env),
                    refinements: v.refine(env, schema, allows, denies, &refinements)?,
                    example,
                    before,
                });
            }
            Ok(found)
        })?;
        diff.differences = per_env.into_iter().flatten().collect();
        // Widenings first: they are what a reviewer must not miss.
        diff.differences
            .sort_by_key(|d| d.direction == Direction::Narrowed);
        Ok(diff)
    }

    /// For each refinement, the values for which some request is allowed by `allows` and
    /// denied by `denies`.
    fn refine(
        &mut self,
        env: &RequestEnv,
        schema: &Schema,
        allows: &Engine,
        denies: &Engine,
        refinements: &[Refinement],
    ) -> Result<Vec<(String, Vec<String>)>, VerifyError> {
        let denies_c = compile(denies.policies(), env, schema, "the policies")?;
        let mut out = Vec::new();
        for r in refinements {
            let mut hits = Vec::new();
            let mut applies = false;
            for (label, condition) in &r.values {
                let Some(narrow) = restricted(allows.policies(), condition) else {
                    continue;
                };
                // A condition that does not type-check for this request type is skipped.
                let Ok(narrow_c) = compile(&narrow, env, schema, "a refinement") else {
                    continue;
                };
                applies = true;
                if !self.implies_only(&narrow_c, &denies_c)? {
                    hits.push(label.clone());
                }
            }
            if applies {
                out.push((r.name.to_string(), hits));
            }
        }
        Ok(out)
    }
}
