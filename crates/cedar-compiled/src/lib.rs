//! A compiled evaluator that decides exactly as [`cedar_policy::Authorizer`] does — the
//! same decision, the same determining policies, the same erroring policies — for any
//! static policy set, without walking Cedar's interpreter.
//!
//! - [`CompiledPolicies::compile`] reads each policy's JSON form (Cedar's EST) into an
//!   expression tree with entity uids, entity types and attribute names interned and
//!   constant subexpressions folded (an extension constructor on a bad literal becomes a
//!   node that errors when evaluated), and indexes the policies by action and by
//!   principal and resource type. A policy it cannot compile exactly is evaluated by
//!   Cedar alone ([`CompiledPolicies::fallbacks`] lists them and why).
//! - [`Store`]: the entities, interned, with each entity's ancestors precomputed; built
//!   for one compiled policy set and updated one entity at a time with
//!   [`Store::upsert`].
//! - [`Query`]: one request resolved against a store; [`CompiledPolicies::is_authorized`]
//!   answers it with an [`Outcome`].
//!
//! # Example
//! ```
//! use cedar_policy::{Context, Decision, Entities, EntityUid, PolicySet, Request};
//! use cedar_compiled::{CompiledPolicies, Query, Store};
//!
//! let policies: PolicySet = r#"
//!     permit(principal, action == Action::"read", resource)
//!     when { principal in resource.readers && context.time < datetime("2030-01-01") };
//! "#.parse()?;
//! let compiled = CompiledPolicies::compile(&policies)?;
//! assert!(compiled.fallbacks().is_empty());
//!
//! let entities = Entities::from_json_str(r#"[
//!     {"uid": {"type": "User", "id": "ann"}, "attrs": {}, "parents": [{"type": "Team", "id": "a"}]},
//!     {"uid": {"type": "Doc", "id": "d"}, "parents": [],
//!      "attrs": {"readers": {"__entity": {"type": "Team", "id": "a"}}}}
//! ]"#, None)?;
//! let store = Store::from_entities(&compiled, &entities)?;
//!
//! let context = Context::from_json_str(r#"{"time": {"__extn": {"fn": "datetime", "arg": "2025-06-01"}}}"#, None)?;
//! let request = Request::new(
//!     r#"User::"ann""#.parse::<EntityUid>()?,
//!     r#"Action::"read""#.parse::<EntityUid>()?,
//!     r#"Doc::"d""#.parse::<EntityUid>()?,
//!     context,
//!     None,
//! )?;
//! let outcome = compiled.is_authorized(&Query::from_request(&request, &store)?)?;
//! assert_eq!(outcome.decision, Decision::Allow);
//! assert_eq!(outcome.reason.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod conformance;
mod decider;
mod eval;
mod ir;
mod store;
mod value;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use cedar_policy::{Authorizer, Decision, PolicyId, PolicySet};

/// The compiled form, for engines that specialise it further (an index over a known
/// schema, conditions evaluated over many fields at once): the expression tree, each
/// policy's scope, and direct access to a store's interned entities.
pub mod lowlevel {
    pub use crate::ir::{BinOp, Expr, Scope, Var};
    pub use crate::value::{ArithOp, ExtFn, PatElem};
    pub use crate::{
        eval_bool, eval_expr, specialize_expr, specialize_for_context, PolicyView, Shape,
    };
}
use ir::{Expr, Scope, TypeKey};
use store::Symbols;

pub use decider::{CompiledDecider, COMPILED_NAME};
pub use store::{Ctx, EntityRef, Query, Store};
pub use value::Value;

/// Evaluates a compiled expression for a query.
pub fn eval_expr(e: &Expr, q: &Query<'_>) -> value::EvalResult {
    eval::eval(e, q)
}

/// Evaluates a compiled condition for a query: its boolean, or an error (for any
/// other value too), as Cedar evaluates a `when` clause.
pub fn eval_bool(e: &Expr, q: &Query<'_>) -> value::EvalResult<bool> {
    eval::eval_bool(e, q)
}

/// Partially evaluates a compiled expression for a query's principal and action: the
/// result evaluates, on any resource and context, as `e` does (errors included) while
/// the entities `known` accepted keep their data. `known` is asked about each entity
/// whose attributes, ancestors or tags would be read; one it refuses (data that comes
/// with each request, say) is left to be read when the result is evaluated.
pub fn specialize_expr(e: &Expr, q: &Query<'_>, known: &mut dyn FnMut(u32) -> bool) -> Expr {
    eval::specialize(e, q, known, false)
}

/// [`specialize_expr`] with the query's context (and field) folded in as well: the
/// result evaluates, on any resource, exactly as `e` does on `q`'s principal, action and
/// context (errors included: an attribute the context lacks is an error).
pub fn specialize_for_context(e: &Expr, q: &Query<'_>, known: &mut dyn FnMut(u32) -> bool) -> Expr {
    eval::specialize(e, q, known, true)
}

/// A policy set that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The set holds templates or template-linked policies, which are out of scope.
    #[error("policy `{0}` is a template or a template link: only static policies are compiled")]
    Template(String),
}

/// Entity data or a request the compiled evaluator cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Cedar could not write its entities or context as JSON.
    #[error("cannot read Cedar data: {0}")]
    Cedar(String),
    /// A value that is not a valid Cedar value.
    #[error("invalid value: {0}")]
    Value(String),
    /// The request lacks its principal, action, resource or context.
    #[error("the request is partial: it lacks its principal, action, resource or context")]
    Partial,
    /// The store was built for another compiled policy set.
    #[error("the store was built for another compiled policy set")]
    WrongStore,
    /// A policy falls back to Cedar but the query was not built from a Cedar request.
    #[error("policy `{0}` needs Cedar's request and entities, which the query lacks")]
    NoCedarData(String),
}

/// A policy evaluated by Cedar rather than compiled, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// The policy's id.
    pub id: PolicyId,
    /// The construct the compiler could not translate exactly.
    pub reason: String,
}

/// The answer to a [`Query`]: what [`cedar_policy::Response`] says, as sets of ids (in
/// policy set order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Allow or deny.
    pub decision: Decision,
    /// The determining policies: the satisfied forbids on deny (none for Cedar's default
    /// deny), the satisfied permits on allow.
    pub reason: Vec<PolicyId>,
    /// The policies whose evaluation errored (they were skipped).
    pub errors: Vec<PolicyId>,
}

#[derive(Debug)]
enum Kind {
    Native(Vec<Expr>),
    Cedar(Box<PolicySet>),
}

#[derive(Debug)]
struct Compiled {
    id: PolicyId,
    forbid: bool,
    kind: Kind,
    /// The scope of a compiled policy: (principal, resource) constraints, the actions
    /// (`None`: any), and which leading conjuncts come from the principal, action and
    /// resource constraints.
    shape: Option<Shape>,
}

/// A compiled policy's scope, for indexes that resolve it without evaluating it.
#[derive(Debug, Clone)]
pub struct Shape {
    /// The principal constraint.
    pub principal: Scope,
    /// The resource constraint.
    pub resource: Scope,
    /// The action uids of which the action must be one or a descendant (`None`: any).
    pub actions: Option<Vec<u32>>,
    /// Whether the principal, action and resource constraints each put a conjunct at
    /// the front of the chain (in that order).
    pub parts: (bool, bool, bool),
}

/// A compiled policy, seen from the crate's engine.
#[derive(Debug, Clone, Copy)]
pub struct PolicyView<'a> {
    /// The policy's id.
    pub id: &'a PolicyId,
    /// Whether it is a forbid.
    pub forbid: bool,
    /// `None` for a policy that falls back to Cedar.
    pub native: Option<(&'a [Expr], &'a Shape)>,
}

/// One indexed policy: its position and the principal and resource types it needs.
#[derive(Debug, Clone, Copy)]
struct Entry {
    policy: u32,
    principal: TypeKey,
    resource: TypeKey,
}

/// A compiled policy set. See the [module documentation](self).
#[derive(Debug)]
pub struct CompiledPolicies {
    policies: Vec<Compiled>,
    pub(crate) symbols: Symbols,
    pub(crate) tag: u64,
    any_action: Vec<Entry>,
    by_action: HashMap<u32, Vec<Entry>>,
    fallbacks: Vec<Fallback>,
}

static NEXT_TAG: AtomicU64 = AtomicU64::new(1);

impl CompiledPolicies {
    /// Compiles every policy of `set`.
    ///
    /// # Errors
    /// [`CompileError::Template`] if the set holds templates or linked policies.
    pub fn compile(set: &PolicySet) -> Result<CompiledPolicies, CompileError> {
        CompiledPolicies::compile_with(set, |p| p.to_json().map_err(|e| e.to_string()))
    }

    /// [`CompiledPolicies::compile`], with each policy's JSON form (its EST, what
    /// `Policy::to_json` gives) from `json`: for a caller that has it already. For a
    /// policy parsed from text, `to_json` parses that text again, on its own, and Cedar's
    /// parser pays a fixed cost per parse: that is most of the time a large set takes to
    /// compile. `json` must give the policy's own EST (an error makes the policy fall
    /// back to Cedar).
    ///
    /// # Errors
    /// As [`CompiledPolicies::compile`].
    ///
    /// # Example
    /// ```
    /// use cedar_compiled::CompiledPolicies;
    /// let set: cedar_policy::PolicySet = "permit(principal, action, resource);".parse()?;
    /// let compiled = CompiledPolicies::compile_with(&set, |p| p.to_json().map_err(|e| e.to_string()))?;
    /// assert_eq!(compiled.len(), 1);
    /// assert!(compiled.fallbacks().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn compile_with(
        set: &PolicySet,
        mut json: impl FnMut(&cedar_policy::Policy) -> Result<serde_json::Value, String>,
    ) -> Result<CompiledPolicies, CompileError> {
        if let Some(t) = set.templates().next() {
            return Err(CompileError::Template(t.id().to_string()));
        }
        let mut symbols = Symbols::default();
        let mut policies = Vec::new();
        let mut keys = Vec::new();
        let mut fallbacks = Vec::new();
        for p in set.policies() {
            if p.template_id().is_some() {
                return Err(CompileError::Template(p.id().to_string()));
            }
            let compiled = json(p).and_then(|j| {
                if ir::has_slot(&j) {
                    return Err("template slot".to_string());
                }
                ir::compile_policy(&j, &mut symbols)
            });
            let (kind, key, shape) = match compiled {
                Ok(body) => {
                    let shape = Shape {
                        principal: body.scopes.0,
                        resource: body.scopes.1,
                        actions: body.key.actions.clone(),
                        parts: body.scope_parts,
                    };
                    (Kind::Native(body.conjuncts), Some(body.key), Some(shape))
                }
                Err(reason) => {
                    fallbacks.push(Fallback {
                        id: p.id().clone(),
                        reason,
                    });
                    let mut alone = PolicySet::new();
                    // A policy of a valid set is valid alone.
                    let _ = alone.add(p.clone());
                    (Kind::Cedar(Box::new(alone)), None, None)
                }
            };
            policies.push(Compiled {
                id: p.id().clone(),
                forbid: p.effect() == cedar_policy::Effect::Forbid,
                kind,
                shape,
            });
            keys.push(key);
        }
        let mut compiled = CompiledPolicies {
            policies,
            symbols,
            tag: NEXT_TAG.fetch_add(1, Ordering::Relaxed),
            any_action: Vec::new(),
            by_action: HashMap::new(),
            fallbacks,
        };
        compiled.fold_constants();
        for (i, key) in keys.into_iter().enumerate() {
            let policy = u32::try_from(i).unwrap_or(u32::MAX);
            let (principal, resource, actions) = match key {
                Some(k) => (k.principal, k.resource, k.actions),
                None => (TypeKey::Any, TypeKey::Any, None),
            };
            let entry = Entry {
                policy,
                principal,
                resource,
            };
            match actions {
                None => compiled.any_action.push(entry),
                Some(list) => {
                    for a in list {
                        compiled.by_action.entry(a).or_default().push(entry);
                    }
                }
            }
        }
        Ok(compiled)
    }

    fn fold_constants(&mut self) {
        let empty = Store::new(self);
        let q = Query {
            store: &empty,
            principal: 0,
            action: 0,
            resource: 0,
            context: store::Ctx::Pairs(&[]),
            local: None,
            local_types: Vec::new(),
            request: None,
            field: None,
            hidden: None,
        };
        for p in &mut self.policies {
            if let Kind::Native(conjuncts) = &mut p.kind {
                let mut folded = Vec::with_capacity(conjuncts.len());
                for c in conjuncts.drain(..) {
                    let c = eval::fold(c, &q);
                    match c {
                        Expr::Lit(Value::Bool(true)) => continue,
                        Expr::Lit(Value::Bool(false)) | Expr::Lit(_) | Expr::Error => {
                            // Nothing after a constant false or error is evaluated.
                            folded.push(c);
                            break;
                        }
                        c => folded.push(c),
                    }
                }
                *conjuncts = folded;
            }
        }
    }

    /// The policies Cedar evaluates alone, because the compiler could not translate them
    /// exactly, with the reason. Empty for every policy set of the conformance corpus.
    pub fn fallbacks(&self) -> &[Fallback] {
        &self.fallbacks
    }

    /// The tag that ties stores to this policy set.
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// Every policy, in policy set order.
    pub fn views(&self) -> impl Iterator<Item = PolicyView<'_>> {
        self.policies.iter().map(|p| PolicyView {
            id: &p.id,
            forbid: p.forbid,
            native: match (&p.kind, &p.shape) {
                (Kind::Native(c), Some(s)) => Some((c.as_slice(), s)),
                _ => None,
            },
        })
    }

    /// The number of policies.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Decides `query` as [`cedar_policy::Authorizer::is_authorized`] would.
    ///
    /// # Errors
    /// [`StoreError::WrongStore`] if the query's store was built for another policy set;
    /// [`StoreError::NoCedarData`] if a fallback policy applies and the query was not
    /// built from a Cedar request.
    pub fn is_authorized(&self, query: &Query<'_>) -> Result<Outcome, StoreError> {
        if query.store.owner != self.tag {
            return Err(StoreError::WrongStore);
        }
        let ptype = query.type_of(query.principal);
        let rtype = query.type_of(query.resource);
        let applies = |e: &Entry| {
            matches!(e.principal, TypeKey::Type(t) if t != ptype)
                || matches!(e.resource, TypeKey::Type(t) if t != rtype)
        };
        let mut candidates: Vec<u32> = Vec::new();
        let mut push = |list: &[Entry]| {
            candidates.extend(list.iter().filter(|e| !applies(e)).map(|e| e.policy));
        };
        push(&self.any_action);
        if let Some(l) = self.by_action.get(&query.action) {
            push(l);
        }
        let mut several = false;
        if let Some(a) = query.entity(query.action) {
            for anc in a.ancestors {
                if let Some(l) = self.by_action.get(anc) {
                    push(l);
                    several = true;
                }
            }
        }
        if several {
            candidates.sort_unstable();
            candidates.dedup();
        }
        let mut permits = Vec::new();
        let mut forbids = Vec::new();
        let mut errors = Vec::new();
        for i in candidates {
            let Some(p) = self.policies.get(i as usize) else {
                continue;
            };
            match self.satisfied(p, query) {
                Ok(true) if p.forbid => forbids.push(p.id.clone()),
                Ok(true) => permits.push(p.id.clone()),
                Ok(false) => {}
                Err(None) => errors.push(p.id.clone()),
                Err(Some(e)) => return Err(e),
            }
        }
        Ok(if !forbids.is_empty() {
            Outcome {
                decision: Decision::Deny,
                reason: forbids,
                errors,
            }
        } else if !permits.is_empty() {
            Outcome {
                decision: Decision::Allow,
                reason: permits,
                errors,
            }
        } else {
            Outcome {
                decision: Decision::Deny,
                reason: Vec::new(),
                errors,
            }
        })
    }

    /// Whether `p` is satisfied; `Err(None)` if its evaluation errors.
    fn satisfied(&self, p: &Compiled, q: &Query<'_>) -> Result<bool, Option<StoreError>> {
        match &p.kind {
            Kind::Native(conjuncts) => {
                for c in conjuncts {
                    match eval::eval(c, q) {
                        Ok(Value::Bool(true)) => {}
                        Ok(Value::Bool(false)) => return Ok(false),
                        _ => return Err(None),
                    }
                }
                Ok(true)
            }
            Kind::Cedar(alone) => {
                let (Some(request), Some(entities)) = (q.request, q.store.cedar.as_ref()) else {
                    return Err(Some(StoreError::NoCedarData(p.id.to_string())));
                };
                let r = Authorizer::new().is_authorized(request, alone, entities);
                if r.diagnostics().errors().next().is_some() {
                    Err(None)
                } else {
                    Ok(r.diagnostics().reason().next().is_some())
                }
            }
        }
    }
}
