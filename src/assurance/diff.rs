//! A policy change's impact: per request type, what the new policies allow that the old
//! denied and the reverse, decided by the symbolic compiler and refined by field class,
//! member status and election phase, each difference with one concrete example.

use std::fmt;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Decision, Entities, Entity, EntityUid, EvalResult, Policy, PolicyId, PolicySet,
    Request, RequestEnv, RestrictedExpression, Schema,
};
use cedar_policy_symcc::{CompiledPolicy, CompiledPolicySet};

use super::plausible::{ask_restricted, decision, env_of};
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
    /// For each value, how to turn a request of another value into one of it.
    variants: Vec<Variant>,
}

/// A change to a request's entities that may make it one of a refinement's values: a
/// guess, tried before asking the solver, whose result Cedar's authorizer decides.
#[derive(Debug, Clone)]
enum Variant {
    /// The field in this class of the catalogue and no other (`None`: in none of them),
    /// its place in the minimal record kept.
    Class(Option<String>),
    /// The field in none of these classes, or in one more of them.
    Several(Vec<String>),
    /// The field in this class too.
    Also(String),
    /// The field in the minimal record or not.
    Minimal(bool),
    /// The member's status (and, in the sets of strings of other entities that hold the
    /// old status, the new one too: a contract's statuses).
    Status(String),
    /// The principal's campaign's election moved so that the request's time is before
    /// nominations close (`0`), in the contest (`1`) or after the ballot closed (`2`).
    Phase(u8),
}

/// The earliest and latest times an election is moved to by [`Variant::Phase`].
const EARLY: &str = "0001-01-01";
const LATE: &str = "9999-12-31";

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
    let mut class_variants: Vec<Variant> = classes
        .iter()
        .map(|c| Variant::Class(Some(c.clone())))
        .collect();
    class_variants.push(Variant::Several(classes.clone()));
    let mut status_variants: Vec<Variant> = statuses
        .iter()
        .map(|s| Variant::Status(s.to_string()))
        .collect();
    status_variants.push(Variant::Status("other".into()));
    vec![
        Refinement {
            name: "field class",
            values: class_values,
            variants: class_variants,
        },
        Refinement {
            name: "minimal record",
            values: vec![
                ("fields in it".into(), minimal.clone()),
                ("fields not in it".into(), format!("!({minimal})")),
            ],
            variants: vec![Variant::Minimal(true), Variant::Minimal(false)],
        },
        Refinement {
            name: "member status",
            values: status_values,
            variants: status_variants,
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
            variants: vec![Variant::Phase(0), Variant::Phase(1), Variant::Phase(2)],
        },
    ]
}

/// The policy that forbids the requests for which `condition` does not hold.
fn restriction(condition: &str) -> Option<Policy> {
    let text = format!("forbid (principal, action, resource) unless {{ {condition} }};");
    Policy::parse(Some(PolicyId::new("membergate-diff-refinement")), text).ok()
}

/// `set` restricted to the requests for which `condition` holds (see [`restriction`]).
pub(crate) fn restricted(set: &PolicySet, condition: &str) -> Option<PolicySet> {
    let mut out = set.clone();
    out.add(restriction(condition)?).ok()?;
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
                let sides = Sides {
                    allows: allows.policies(),
                    denies: denies.policies(),
                    denies_c,
                };
                found.push(Difference {
                    direction,
                    request_type: env_name(env),
                    refinements: v.refine(env, schema, &sides, &refinements, &example)?,
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

    /// `d` with its example (and the old policies' decision of it) replaced by one with
    /// plausible values: times between 1900 and 2100, counts between 0 and a million, a
    /// field of the catalogue in its own classes, a member status the party uses, no
    /// empty id; re-decided by Cedar's authorizer under both versions. `None` if no
    /// plausible request goes `d`'s way (the difference is only at the edges of time or
    /// of numbers) or none was found in a few rounds.
    ///
    /// ```no_run
    /// use membergate::{Engine, assurance::Verifier};
    /// let old = Engine::from_dir("policies")?;
    /// let new = Engine::from_dir("policies-changed")?;
    /// let mut verifier = Verifier::locate()?;
    /// for d in verifier.diff(&old, &new)?.differences {
    ///     if let Some(readable) = verifier.plausible_difference(&old, &new, &d)? {
    ///         println!("{}", readable.example.describe());
    ///     }
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn plausible_difference(
        &mut self,
        old: &Engine,
        new: &Engine,
        d: &Difference,
    ) -> Result<Option<Difference>, VerifyError> {
        let schema = new.schema();
        let Some(env) = env_of(schema, &d.example.request) else {
            return Ok(None);
        };
        let (allows, denies, now, then) = match d.direction {
            Direction::Widened => (
                new.policies(),
                old.policies(),
                Decision::Allow,
                Decision::Deny,
            ),
            Direction::Narrowed => (
                old.policies(),
                new.policies(),
                Decision::Deny,
                Decision::Allow,
            ),
        };
        let denies_c = compile(denies, &env, schema, "the denying policies")?;
        let first = (&d.example.request, &d.example.entities);
        let found = self.plausible(
            new.catalogue(),
            first,
            &[allows, denies],
            |v, cond| {
                ask_restricted(v, allows, cond, &env, schema, |v, a| {
                    v.implies(a, &denies_c)
                })
            },
            |e| decision(allows, e) == Decision::Allow && decision(denies, e) == Decision::Deny,
        )?;
        let Some(found) = found else {
            return Ok(None);
        };
        let what = format!("a plausible difference ({})", d.direction);
        let confirmed = confirm(found, new.policies(), now, &what)
            .and_then(|e| Ok((e.decided_on(old.policies(), then, &what)?, e)));
        match confirmed {
            Ok((before, example)) => Ok(Some(Difference {
                example,
                before,
                ..d.clone()
            })),
            // Naming its ids changed a decision: no plausible example.
            Err(VerifyError::Unconfirmed { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// For each refinement, the values for which some request is allowed by
    /// `sides.allows` and denied by `sides.denies`; `witness` is one such request.
    ///
    /// A value is found either by a concrete request that Cedar's authorizer allows with
    /// the value's restriction of `allows` and denies with `denies` (the witness, then
    /// the solver's answers to "some request of any value not yet found"), or by the
    /// solver alone; the values left when the solver finds no request of any of them are
    /// proved absent. The result is the same as checking each value on its own.
    fn refine(
        &mut self,
        env: &RequestEnv,
        schema: &Schema,
        sides: &Sides<'_>,
        refinements: &[Refinement],
        witness: &Counterexample,
    ) -> Result<Vec<(String, Vec<String>)>, VerifyError> {
        let mut values = Vec::new();
        for (r, refinement) in refinements.iter().enumerate() {
            for ((label, condition), variant) in refinement.values.iter().zip(&refinement.variants)
            {
                // A condition that does not type-check for this request type is skipped.
                let Some(policy) = restriction(condition) else {
                    continue;
                };
                if CompiledPolicy::compile(&policy, env, schema).is_err() {
                    continue;
                }
                let Some(set) = restricted(sides.allows, condition) else {
                    continue;
                };
                values.push(Value {
                    refinement: r,
                    label,
                    condition,
                    variant,
                    set,
                    found: false,
                });
            }
        }
        found_by(
            &mut values,
            &witness.request,
            &witness.entities,
            sides.denies,
        );
        loop {
            let pending: Vec<&str> = values
                .iter()
                .filter(|v| !v.found)
                .map(|v| v.condition)
                .collect();
            let newly = match pending.as_slice() {
                [] => break,
                // One value left: the plain check, no example needed.
                [_] => 0,
                _ => {
                    let any: Vec<String> = pending.iter().map(|c| format!("({c})")).collect();
                    let union = restricted(sides.allows, &any.join(" || "))
                        .and_then(|set| compile(&set, env, schema, "a refinement").ok());
                    match union {
                        Some(union) => match self.implies(&union, sides.denies_c)? {
                            // No request of any value left: none of them is found.
                            None => break,
                            Some(e) => found_by(&mut values, &e.request, &e.entities, sides.denies),
                        },
                        None => 0,
                    }
                }
            };
            if newly == 0 {
                // One value left, or the solver's request is not one of theirs by Cedar's
                // authorizer, or the union does not compile: each value left on its own.
                for value in values.iter_mut().filter(|v| !v.found) {
                    let compiled = compile(&value.set, env, schema, "a refinement")?;
                    value.found = !self.implies_only(&compiled, sides.denies_c)?;
                }
                break;
            }
        }
        // A refinement none of whose values type-checks here does not apply.
        let mut out = Vec::new();
        for (r, refinement) in refinements.iter().enumerate() {
            let mine = || values.iter().filter(|v| v.refinement == r);
            if mine().next().is_some() {
                let hits = mine()
                    .filter(|v| v.found)
                    .map(|v| v.label.to_string())
                    .collect();
                out.push((refinement.name.to_string(), hits));
            }
        }
        Ok(out)
    }
}

/// The set that allows and the set that denies the requests of a difference.
struct Sides<'a> {
    allows: &'a PolicySet,
    denies: &'a PolicySet,
    denies_c: &'a CompiledPolicySet,
}

/// A refinement value that type-checks for a request type.
struct Value<'r> {
    /// The index of its refinement.
    refinement: usize,
    label: &'r str,
    condition: &'r str,
    variant: &'r Variant,
    /// The allowing set restricted to it.
    set: PolicySet,
    /// Whether some request of it is allowed by the one set and denied by the other.
    found: bool,
}

/// Marks the values not yet found of which `request` on `entities` is an instance, then
/// those of which one of its variants is (see [`Variant`]); how many.
fn found_by(
    values: &mut [Value<'_>],
    request: &Request,
    entities: &Entities,
    denies: &PolicySet,
) -> usize {
    let mut newly = mark(values, request, entities, denies);
    let variants: Vec<&Variant> = values
        .iter()
        .filter(|v| !v.found)
        .map(|v| v.variant)
        .collect();
    for variant in variants {
        let several;
        let tries: &[Variant] = match variant {
            Variant::Several(classes) => {
                several = std::iter::once(Variant::Class(None))
                    .chain(classes.iter().map(|c| Variant::Also(c.clone())))
                    .collect::<Vec<_>>();
                &several
            }
            one => std::slice::from_ref(one),
        };
        for one in tries {
            if let Some(varied) = vary(request, entities, one) {
                newly += mark(values, request, &varied, denies);
            }
        }
    }
    newly
}

/// `entities` changed as `variant` says for `request`'s field or member, if it applies.
fn vary(request: &Request, entities: &Entities, variant: &Variant) -> Option<Entities> {
    let target = match variant {
        Variant::Status(_) => request.resource()?.clone(),
        Variant::Several(_) => return None,
        Variant::Class(_) | Variant::Minimal(_) | Variant::Also(_) => {
            match request.context()?.get("field")? {
                EvalResult::EntityUid(field) => field,
                _ => return None,
            }
        }
        Variant::Phase(_) => {
            let principal = entities.get(request.principal()?)?;
            let Ok(EvalResult::EntityUid(campaign)) = principal.attr("campaign")? else {
                return None;
            };
            match entities.get(&campaign)?.attr("election")? {
                Ok(EvalResult::EntityUid(election)) => election,
                _ => return None,
            }
        }
    };
    let (uid, mut attrs, mut parents) = match entities.get(&target) {
        Some(e) => e.clone().into_inner(),
        None => (target.clone(), Attrs::new(), Parents::new()),
    };
    let minimal = class_uid(MINIMAL_CLASS)?;
    let mut others: Vec<Entity> = entities
        .iter()
        .filter(|e| e.uid() != target)
        .cloned()
        .collect();
    match variant {
        Variant::Several(_) => return None,
        Variant::Status(status) => {
            let old = match entities.get(&target).and_then(|e| e.attr("status")) {
                Some(Ok(EvalResult::String(old))) => Some(old),
                _ => None,
            };
            attrs.insert(
                "status".into(),
                RestrictedExpression::new_string(status.clone()),
            );
            if let Some(old) = old {
                others = others
                    .into_iter()
                    .map(|e| with_status(e, &old, status))
                    .collect();
            }
        }
        Variant::Also(class) => {
            parents.insert(class_uid(class)?);
        }
        Variant::Class(class) => {
            parents.retain(|p| p.type_name() != minimal.type_name() || p == &minimal);
            if let Some(class) = class {
                parents.insert(class_uid(class)?);
            }
        }
        Variant::Minimal(in_it) => {
            parents.remove(&minimal);
            if *in_it {
                parents.insert(minimal);
            }
        }
        Variant::Phase(phase) => {
            let (close, ballot) = match phase {
                0 => (LATE, LATE),
                1 => (EARLY, LATE),
                _ => (EARLY, EARLY),
            };
            for (attr, at) in [("nominations_close", close), ("ballot_close", ballot)] {
                attrs.insert(attr.into(), RestrictedExpression::new_datetime(at));
            }
        }
    }
    let changed = Entity::new(uid, attrs, parents).ok()?;
    Entities::from_entities(others.into_iter().chain([changed]), None).ok()
}

/// `entity` with `new` added to each of its sets of strings that holds `old`.
fn with_status(entity: Entity, old: &str, new: &str) -> Entity {
    let old = EvalResult::String(old.to_string());
    let mut grown = Vec::new();
    for (name, _) in entity.clone().into_inner().1 {
        let Some(Ok(EvalResult::Set(set))) = entity.attr(&name) else {
            continue;
        };
        if !set.iter().any(|v| v == &old) {
            continue;
        }
        let strings: Option<Vec<RestrictedExpression>> = set
            .iter()
            .map(|v| match v {
                EvalResult::String(s) => Some(RestrictedExpression::new_string(s.clone())),
                _ => None,
            })
            .collect();
        if let Some(mut strings) = strings {
            strings.push(RestrictedExpression::new_string(new.to_string()));
            grown.push((name, RestrictedExpression::new_set(strings)));
        }
    }
    if grown.is_empty() {
        return entity;
    }
    let (uid, mut attrs, parents) = entity.clone().into_inner();
    attrs.extend(grown);
    Entity::new(uid, attrs, parents).unwrap_or(entity)
}

type Attrs = HashMap<String, RestrictedExpression>;
type Parents = HashSet<EntityUid>;

/// `FieldClass::"class"`.
fn class_uid(class: &str) -> Option<EntityUid> {
    EntityUid::from_str(&format!("FieldClass::{class:?}")).ok()
}

/// Marks the values not yet found of which `request` is an instance by Cedar's own
/// authorizer (allowed by the value's restricted set, denied by `denies`); how many.
fn mark(
    values: &mut [Value<'_>],
    request: &Request,
    entities: &Entities,
    denies: &PolicySet,
) -> usize {
    let authorizer = Authorizer::new();
    if authorizer
        .is_authorized(request, denies, entities)
        .decision()
        != Decision::Deny
    {
        return 0;
    }
    let mut newly = 0;
    for value in values.iter_mut().filter(|v| !v.found) {
        if authorizer
            .is_authorized(request, &value.set, entities)
            .decision()
            == Decision::Allow
        {
            value.found = true;
            newly += 1;
        }
    }
    newly
}
