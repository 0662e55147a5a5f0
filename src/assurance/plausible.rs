//! The solver's examples as a person would meet them: times between 1900 and 2100,
//! counts between 0 and a million, a field of the catalogue in its own classes, a member
//! status the party uses, and no empty id. The solver is asked again with those bounds
//! as a restriction of the side that must allow ([`Verifier::plausible`]); the example
//! it gives is re-decided by Cedar's authorizer like any other.
//!
//! The bounds are drawn from the example itself: each time or count it holds, reached
//! from the principal, the resource or the context through entity attributes, is bounded
//! along its path (`principal.campaign.election.ballot_close`), each step guarded by
//! `has`; an answer that holds a time or count on a path not bounded yet adds its path
//! and is asked again, a few times at most.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use cedar_policy::{
    Context, Entities, EntityUid, EvalResult, PolicySet, Request, RequestEnv, Schema,
};
use cedar_policy_symcc::Env;

use jiff::{SignedDuration, Timestamp};

use super::verify::{compile, Verifier, VerifyError};
use crate::bundle::MINIMAL_CLASS;
use crate::{FieldCatalogue, MemberStatus};

/// The earliest plausible time (inclusive).
pub const EARLIEST: &str = "1900-01-01";
/// The bounds asked for first: times between 2000 and 2030. The solver picks values at
/// the edge of what it is allowed, and `2000-01-01` reads better than `1900-01-01` (or
/// `1969-12-31T23:59:59.998Z`); the whole plausible range is asked only if nothing goes
/// the example's way within these. (Asking for times at noon too makes the solver three
/// times slower: [`rounded`] moves them there afterwards instead.)
const FIRST: Times = Times {
    from: "2000-01-01",
    to: "2030-01-01",
};

/// The plausible times: what [`is_plausible`] accepts.
const ANY: Times = Times {
    from: EARLIEST,
    to: LATEST,
};

/// Bounds on times.
#[derive(Debug, Clone, Copy)]
struct Times {
    /// The earliest (inclusive), `YYYY-MM-DD`.
    from: &'static str,
    /// The latest (exclusive).
    to: &'static str,
}

/// The latest plausible time (exclusive).
pub const LATEST: &str = "2100-01-01";
/// The largest plausible count (a read limit, reads this hour).
pub const MOST: i64 = 1_000_000;

/// How many times the solver is asked again when its answer holds a time or count on a
/// path not bounded yet.
const ROUNDS: usize = 4;

/// What a value on a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Time,
    Count,
}

/// The paths (`principal.campaign.ended_at`) of the times and counts an example holds,
/// with their values: a time as Cedar writes it, a count as a number.
fn values(request: &Request, entities: &Entities) -> BTreeMap<String, (Kind, EvalResult)> {
    let mut out = BTreeMap::new();
    let mut walk = Walk {
        entities,
        out: &mut out,
        on_path: Vec::new(),
    };
    if let Some(p) = request.principal() {
        walk.entity("principal", p);
    }
    if let Some(r) = request.resource() {
        walk.entity("resource", r);
    }
    if let Some(context) = request.context() {
        for (k, _) in context.clone() {
            if let Some(v) = context.get(&k) {
                walk.value(&format!("context.{k}"), &v);
            }
        }
    }
    out
}

struct Walk<'a> {
    entities: &'a Entities,
    out: &'a mut BTreeMap<String, (Kind, EvalResult)>,
    /// The entities on the way to here (no cycle is followed).
    on_path: Vec<EntityUid>,
}

impl Walk<'_> {
    fn entity(&mut self, path: &str, uid: &EntityUid) {
        if self.on_path.len() > 4 || self.on_path.contains(uid) {
            return;
        }
        let Some(entity) = self.entities.get(uid) else {
            return;
        };
        self.on_path.push(uid.clone());
        let attrs: Vec<(String, EvalResult)> = entity
            .attrs()
            .filter_map(|(k, v)| Some((k.to_string(), v.ok()?)))
            .collect();
        for (k, v) in attrs {
            self.value(&format!("{path}.{k}"), &v);
        }
        self.on_path.pop();
    }

    fn value(&mut self, path: &str, v: &EvalResult) {
        match v {
            EvalResult::Long(_) => {
                self.out.insert(path.to_string(), (Kind::Count, v.clone()));
            }
            EvalResult::ExtensionValue(s) if s.starts_with("datetime(") => {
                self.out.insert(path.to_string(), (Kind::Time, v.clone()));
            }
            EvalResult::EntityUid(uid) => self.entity(path, uid),
            EvalResult::Record(record) => {
                for (k, x) in record.iter() {
                    self.value(&format!("{path}.{k}"), x);
                }
            }
            _ => {}
        }
    }
}

/// Whether a value is within the plausible bounds.
fn plausible_value(kind: Kind, v: &EvalResult) -> bool {
    match (kind, v) {
        (Kind::Count, EvalResult::Long(n)) => (0..=MOST).contains(n),
        (Kind::Time, EvalResult::ExtensionValue(s)) => super::render::readable_datetime(s)
            .is_some_and(|t| t.as_str() >= EARLIEST && t.as_str() < LATEST),
        _ => false,
    }
}

/// The Cedar condition that bounds `paths`, the field and the member's status.
fn condition(
    times: Times,
    paths: &BTreeMap<String, Kind>,
    catalogue: &FieldCatalogue,
    has_field: bool,
    has_status: bool,
) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (path, kind) in paths {
        let mut steps = path.split('.');
        let mut prefix = steps.next().unwrap_or_default().to_string();
        let mut guards = Vec::new();
        for attr in steps {
            guards.push(format!("{prefix} has {attr}"));
            prefix = format!("{prefix}.{attr}");
        }
        let bound = match kind {
            Kind::Time => format!(
                "{path} >= datetime(\"{}\") && {path} < datetime(\"{}\")",
                times.from, times.to
            ),
            Kind::Count => format!("{path} >= 0 && {path} <= {MOST}"),
        };
        // `if`, not `!guards || bound`: the typechecker carries what `has` proved
        // into `then` only.
        parts.push(format!(
            "(if {} then {bound} else true)",
            guards.join(" && ")
        ));
    }
    if has_field {
        let mut classes: Vec<&str> = Vec::new();
        for (_, info) in catalogue.iter() {
            if !classes.contains(&info.class.as_str()) {
                classes.push(&info.class);
            }
        }
        let fields: Vec<String> = catalogue
            .iter()
            .map(|(_, info)| {
                let mut one = format!("context.field == Field::{:?}", info.name);
                for class in &classes {
                    let not = if *class == info.class { "" } else { "!" };
                    let _ = write!(one, " && {not}(context.field in FieldClass::{class:?})");
                }
                let not = if info.minimal { "" } else { "!" };
                let _ = write!(
                    one,
                    " && {not}(context.field in FieldClass::{MINIMAL_CLASS:?})"
                );
                format!("({one})")
            })
            .collect();
        parts.push(format!(
            "(if context has field then {} else true)",
            fields.join(" || ")
        ));
    }
    if has_status {
        let statuses: Vec<&str> = MemberStatus::ALL.iter().map(|s| s.as_str()).collect();
        parts.push(format!("{statuses:?}.contains(resource.status)"));
    }
    if parts.is_empty() {
        "true".to_string()
    } else {
        parts.join(" && ")
    }
}

/// Whether an example's times and counts are all plausible and its ids none empty.
pub(crate) fn is_plausible(request: &Request, entities: &Entities) -> bool {
    values(request, entities)
        .values()
        .all(|(kind, v)| plausible_value(*kind, v))
        && entities
            .iter()
            .all(|e| !e.uid().id().unescaped().is_empty())
        && [request.principal(), request.resource()]
            .into_iter()
            .flatten()
            .all(|uid| !uid.id().unescaped().is_empty())
}

/// The example with each empty id given a name (`campaign-staff-1`) that no policy of
/// `sets` names; `None` if it cannot be rebuilt.
fn named(env: &Env, sets: &[&PolicySet]) -> Option<Env> {
    let texts: Vec<String> = sets
        .iter()
        .flat_map(|s| s.policies().map(|p| p.to_string()))
        .collect();
    let mut renames: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut rename = |ty: &str, id: &str| -> Option<String> {
        if !id.is_empty() {
            return None;
        }
        let key = (ty.to_string(), id.to_string());
        if let Some(done) = renames.get(&key) {
            return Some(done.clone());
        }
        let base = kebab(ty.rsplit("::").next().unwrap_or(ty));
        let name = (1..).map(|n| format!("{base}-{n}")).find(|name| {
            !taken.contains(&format!("{ty}::{name}"))
                && !texts.iter().any(|t| t.contains(&format!("{ty}::{name:?}")))
        })?;
        taken.insert(format!("{ty}::{name}"));
        renames.insert(key, name.clone());
        Some(name)
    };
    let mut entities = env.entities.to_json_value().ok()?;
    rename_uids(&mut entities, &mut rename);
    let mut context = env.request.context()?.to_json_value().ok()?;
    rename_uids(&mut context, &mut rename);
    let mut uid = |uid: Option<&EntityUid>| -> Option<EntityUid> {
        let uid = uid?;
        let ty = uid.type_name().to_string();
        match rename(&ty, uid.id().unescaped()) {
            Some(name) => format!("{ty}::{name:?}").parse().ok(),
            None => Some(uid.clone()),
        }
    };
    let principal = uid(env.request.principal())?;
    let resource = uid(env.request.resource())?;
    let action = env.request.action()?.clone();
    rebuilt(entities, context, (principal, action, resource))
}

/// The request and entities from their JSON forms.
fn rebuilt(
    entities: serde_json::Value,
    context: serde_json::Value,
    (principal, action, resource): (EntityUid, EntityUid, EntityUid),
) -> Option<Env> {
    let entities = Entities::from_json_value(entities, None).ok()?;
    let context = Context::from_json_value(context, None).ok()?;
    let request = Request::new(principal, action, resource, context, None).ok()?;
    Some(Env { request, entities })
}

/// The example with its times made round, decided again by `keep`: first spread to
/// noon of distinct days in the same order (equal times kept equal, gaps of more than a
/// day kept to the day), then each moved to noon of its own day; the example as it is
/// if neither keeps its decisions.
fn rounded(env: Env, keep: impl Fn(&Env) -> bool) -> Env {
    let Some((mut entities, mut context)) = json_of(&env) else {
        return env;
    };
    // The example's times, read by the walk that rewrites them (here, to themselves).
    let mut distinct = Vec::new();
    for json in [&mut entities, &mut context] {
        retime(json, &mut |t| {
            distinct.push(t);
            t
        });
    }
    distinct.sort();
    distinct.dedup();
    let mut spread: Vec<(Timestamp, Timestamp)> = Vec::new();
    for t in &distinct {
        let next = match spread.last() {
            None => noon(*t),
            Some((was, at)) => {
                let days = (t.duration_since(*was).as_secs() + 43_200) / 86_400;
                let gap = SignedDuration::from_hours(24 * days.max(1));
                noon(*at).and_then(|at| at.checked_add(gap).ok())
            }
        };
        let Some(next) = next else { return env };
        spread.push((*t, next));
    }
    let spread_to = |t: Timestamp| {
        spread
            .iter()
            .find(|(from, _)| *from == t)
            .map_or(t, |(_, to)| *to)
    };
    let in_place = |t: Timestamp| noon(t).unwrap_or(t);
    for f in [&spread_to as &dyn Fn(Timestamp) -> Timestamp, &in_place] {
        if let Some(candidate) = retimed(&env, f).filter(|e| keep(e)) {
            return candidate;
        }
    }
    env
}

/// Noon (UTC) of `t`'s day.
fn noon(t: Timestamp) -> Option<Timestamp> {
    let day = t.to_zoned(jiff::tz::TimeZone::UTC).date();
    day.at(12, 0, 0, 0)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// The JSON forms of an example's entities and context.
fn json_of(env: &Env) -> Option<(serde_json::Value, serde_json::Value)> {
    Some((
        env.entities.to_json_value().ok()?,
        env.request.context()?.to_json_value().ok()?,
    ))
}

/// The example with each time `t` made `f(t)`; `None` if it cannot be rebuilt.
fn retimed(env: &Env, f: &dyn Fn(Timestamp) -> Timestamp) -> Option<Env> {
    let (mut entities, mut context) = json_of(env)?;
    retime(&mut entities, &mut |t| f(t));
    retime(&mut context, &mut |t| f(t));
    let uids = (
        env.request.principal()?.clone(),
        env.request.action()?.clone(),
        env.request.resource()?.clone(),
    );
    rebuilt(entities, context, uids)
}

/// The time a `__extn` escape of Cedar's JSON form holds, as Cedar writes it:
/// `datetime("...")` or `datetime("...").offset(duration("...ms"))`.
fn written(extn: &serde_json::Value) -> Option<String> {
    let arg = |v: &serde_json::Value| v.get("__extn")?.get("arg")?.as_str().map(str::to_string);
    match extn.get("fn")?.as_str()? {
        "datetime" => Some(format!("datetime({:?})", extn.get("arg")?.as_str()?)),
        "offset" => {
            let args = extn.get("args")?.as_array()?;
            let (base, by) = (args.first()?, args.get(1)?);
            if base.get("__extn")?.get("fn")?.as_str()? != "datetime" {
                return None;
            }
            Some(format!(
                "datetime({:?}).offset(duration({:?}))",
                arg(base)?,
                arg(by)?
            ))
        }
        _ => None,
    }
}

/// Makes each time `t` in Cedar's JSON form `f(t)` (written as RFC 3339).
fn retime(json: &mut serde_json::Value, f: &mut dyn FnMut(Timestamp) -> Timestamp) {
    use serde_json::Value;
    match json {
        Value::Object(map) => {
            let time = map
                .get("__extn")
                .and_then(written)
                .and_then(|w| super::render::readable_datetime(&w))
                .and_then(|t| t.parse::<Timestamp>().ok());
            if let Some(t) = time {
                *json = serde_json::json!({
                    "__extn": { "fn": "datetime", "arg": f(t).to_string() }
                });
                return;
            }
            for v in map.values_mut() {
                retime(v, f);
            }
        }
        Value::Array(items) => {
            for v in items {
                retime(v, f);
            }
        }
        _ => {}
    }
}

/// Renames, in Cedar's JSON form, every `{"type": T, "id": I}` that `rename` renames.
fn rename_uids(
    json: &mut serde_json::Value,
    rename: &mut impl FnMut(&str, &str) -> Option<String>,
) {
    match json {
        serde_json::Value::Object(map) => {
            let uid = match (map.get("type"), map.get("id")) {
                (Some(serde_json::Value::String(ty)), Some(serde_json::Value::String(id)))
                    if map.len() == 2 =>
                {
                    rename(ty, id)
                }
                _ => None,
            };
            if let Some(name) = uid {
                map.insert("id".into(), serde_json::Value::String(name));
                return;
            }
            for v in map.values_mut() {
                rename_uids(v, rename);
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                rename_uids(v, rename);
            }
        }
        _ => {}
    }
}

/// `CampaignStaff` as `campaign-staff`.
fn kebab(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('-');
        }
        out.extend(c.to_lowercase());
    }
    out
}

impl Verifier {
    /// A plausible example like `first` (which `ask` gave with no restriction), if there
    /// is one: `ask` is called with a Cedar condition that the side of the check that
    /// must allow is restricted to (see the module's notes), until its answer is
    /// plausible; then its empty ids are named. `None` if no plausible request goes
    /// that way, or the bounds could not be made to hold in a few rounds.
    pub(crate) fn plausible(
        &mut self,
        catalogue: &FieldCatalogue,
        (request, entities): (&Request, &Entities),
        sets: &[&PolicySet],
        mut ask: impl FnMut(&mut Verifier, &str) -> Result<Option<Env>, VerifyError>,
        keep: impl Fn(&Env) -> bool,
    ) -> Result<Option<Env>, VerifyError> {
        let has_field = request.context().is_some_and(|c| c.get("field").is_some());
        let has_status = request
            .resource()
            .and_then(|r| entities.get(r))
            .is_some_and(|e| e.attr("status").is_some());
        let mut paths: BTreeMap<String, Kind> = values(request, entities)
            .into_iter()
            .map(|(p, (k, _))| (p, k))
            .collect();
        let mut tiers = [FIRST, ANY].into_iter();
        let mut times = tiers.next().unwrap_or(ANY);
        for _ in 0..ROUNDS {
            let cond = condition(times, &paths, catalogue, has_field, has_status);
            let Some(env) = ask(self, &cond)? else {
                // Nothing within the first bounds: the whole plausible range, else nothing.
                match tiers.next() {
                    Some(wider) => {
                        times = wider;
                        continue;
                    }
                    None => return Ok(None),
                }
            };
            let found = values(&env.request, &env.entities);
            let new_paths: Vec<(String, Kind)> = found
                .iter()
                .filter(|(p, (kind, v))| !paths.contains_key(*p) && !plausible_value(*kind, v))
                .map(|(p, (k, _))| (p.clone(), *k))
                .collect();
            if new_paths.is_empty() {
                let Some(env) = named(&env, sets).filter(|e| keep(e)) else {
                    return Ok(None);
                };
                let round = rounded(env, &keep);
                return Ok(Some(round).filter(|e| is_plausible(&e.request, &e.entities)));
            }
            paths.extend(new_paths);
        }
        Ok(None)
    }
}

/// Cedar's authorizer's decision of the example `e` under `set`.
pub(crate) fn decision(set: &PolicySet, e: &Env) -> cedar_policy::Decision {
    cedar_policy::Authorizer::new()
        .is_authorized(&e.request, set, &e.entities)
        .decision()
}

/// The request type of `request` in `schema`.
pub(crate) fn env_of(schema: &Schema, request: &Request) -> Option<RequestEnv> {
    let principal = request.principal()?.type_name();
    let action = request.action()?;
    let resource = request.resource()?.type_name();
    schema
        .request_envs()
        .find(|e| e.principal() == principal && e.action() == action && e.resource() == resource)
}

/// What `ask` gives on `set` restricted to `condition`, compiled for `env`; `None` where
/// the restriction does not compile for it (a bound on an attribute of another type).
pub(crate) fn ask_restricted(
    v: &mut Verifier,
    set: &PolicySet,
    condition: &str,
    env: &RequestEnv,
    schema: &Schema,
    ask: impl FnOnce(
        &mut Verifier,
        &cedar_policy_symcc::CompiledPolicySet,
    ) -> Result<Option<Env>, VerifyError>,
) -> Result<Option<Env>, VerifyError> {
    let Some(set) = super::diff::restricted(set, condition) else {
        return Ok(None);
    };
    match compile(&set, env, schema, "the plausible requests") {
        Ok(compiled) => ask(v, &compiled),
        Err(VerifyError::Compile { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
