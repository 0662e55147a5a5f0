//! The compiled evaluator as a [`Decider`] of the conformance runner.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use cedar_policy::{Decision, Entities, PolicySet, Request, Schema};

use super::{CompiledPolicies, Query, Store};
use crate::conformance::{Decider, Outcome, PreparedDecider};

/// The name [`CompiledDecider`] reports.
pub const COMPILED_NAME: &str = "compiled";

/// The compiled evaluator, for `membergate conformance --engine compiled`: compiles each
/// test file's policies once and builds a [`Store`] once per entity set.
///
/// A policy set it cannot compile (templates) or data it cannot read is decided by the
/// reference authorizer instead, and counted in [`CompiledDecider::refused`]; policies that fall
/// back to Cedar are counted in [`CompiledDecider::fallbacks`].
#[derive(Debug, Default)]
pub struct CompiledDecider {
    fallbacks: AtomicUsize,
    policies: AtomicUsize,
    refused: AtomicUsize,
}

impl CompiledDecider {
    /// The compiled engine.
    pub fn new() -> CompiledDecider {
        CompiledDecider::default()
    }
    /// How many policies (over all prepared policy sets) fell back to Cedar.
    pub fn fallbacks(&self) -> usize {
        self.fallbacks.load(Ordering::Relaxed)
    }
    /// How many policies were compiled or fell back, over all prepared policy sets.
    pub fn policies(&self) -> usize {
        self.policies.load(Ordering::Relaxed)
    }
    /// How many policy sets, entity sets or requests the compiled path refused (they were
    /// decided by the reference authorizer).
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Decider for CompiledDecider {
    fn name(&self) -> &str {
        COMPILED_NAME
    }

    fn decide(
        &self,
        policies: &PolicySet,
        schema: Option<&Schema>,
        entities: &Entities,
        request: &Request,
    ) -> Outcome {
        self.prepare(policies, schema).decide(entities, request)
    }

    fn prepare<'a>(
        &'a self,
        policies: &'a PolicySet,
        _schema: Option<&'a Schema>,
    ) -> Box<dyn PreparedDecider + 'a> {
        let compiled = CompiledPolicies::compile(policies).ok();
        match &compiled {
            Some(c) => {
                self.policies.fetch_add(c.len(), Ordering::Relaxed);
                self.fallbacks
                    .fetch_add(c.fallbacks().len(), Ordering::Relaxed);
            }
            None => {
                self.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
        Box::new(Prepared {
            engine: self,
            policies,
            compiled,
            store: RefCell::new(None),
        })
    }
}

struct Prepared<'a> {
    engine: &'a CompiledDecider,
    policies: &'a PolicySet,
    compiled: Option<CompiledPolicies>,
    /// The store of the last entity set seen, by its address.
    store: RefCell<Option<(usize, Store)>>,
}

impl Prepared<'_> {
    fn compiled_decide(&self, entities: &Entities, request: &Request) -> Option<Outcome> {
        let compiled = self.compiled.as_ref()?;
        let key = std::ptr::from_ref(entities) as usize;
        let mut cache = self.store.borrow_mut();
        if cache.as_ref().is_none_or(|(k, _)| *k != key) {
            *cache = Some((key, Store::from_entities(compiled, entities).ok()?));
        }
        let (_, store) = cache.as_ref()?;
        let query = Query::from_request(request, store).ok()?;
        let outcome = compiled.is_authorized(&query).ok()?;
        Some(Outcome {
            decision: outcome.decision,
            reason: outcome.reason.iter().map(ToString::to_string).collect(),
            errors: outcome.errors.iter().map(ToString::to_string).collect(),
        })
    }
}

impl PreparedDecider for Prepared<'_> {
    fn decide(&self, entities: &Entities, request: &Request) -> Outcome {
        if let Some(o) = self.compiled_decide(entities, request) {
            return o;
        }
        self.engine.refused.fetch_add(1, Ordering::Relaxed);
        let response =
            cedar_policy::Authorizer::new().is_authorized(request, self.policies, entities);
        let d = response.diagnostics();
        Outcome {
            decision: match response.decision() {
                Decision::Allow => Decision::Allow,
                Decision::Deny => Decision::Deny,
            },
            reason: d.reason().map(ToString::to_string).collect(),
            errors: d
                .errors()
                .map(|e| match e {
                    cedar_policy::AuthorizationError::PolicyEvaluationError(e) => {
                        e.policy_id().to_string()
                    }
                })
                .collect(),
        }
    }
}
