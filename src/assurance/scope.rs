//! Which request types a policy change can reach, and which way. A policy whose scope
//! (`principal is T`, `action == A`, `resource in E`, ...) excludes a request type decides
//! nothing there, so where every added, removed or changed policy is excluded the old and
//! new sets decide alike. And Cedar's decision is monotone: a request is allowed when
//! some permit is satisfied and no forbid is, each policy evaluated on its own, so taking
//! a forbid out or putting a permit in can only widen, and the reverse only narrow. Both
//! hold for every request, so a check they rule out needs no solver.

use cedar_policy::{
    ActionConstraint, Effect, Entities, EntityTypeName, EntityUid, Policy, PolicySet,
    PrincipalConstraint, RequestEnv, ResourceConstraint, Schema,
};

/// A policy in one set and not, with the same id and the same abstract syntax, in the
/// other (a change of layout or comments alone is none); a changed policy is the old
/// version taken out and the new one put in.
struct Change<'a> {
    policy: &'a Policy,
    /// Whether it was put in (it is in the new set), else taken out.
    put_in: bool,
}

/// Which ways the sets may differ on a request type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ways {
    /// The new set may allow a request the old denied.
    pub(crate) widen: bool,
    /// The new set may deny a request the old allowed.
    pub(crate) narrow: bool,
}

/// The request types a policy change can reach.
pub(crate) struct Reach<'a> {
    changes: Vec<Change<'a>>,
    schema: &'a Schema,
    /// The schema's actions and their groups; `None` when they cannot be built (then any
    /// `action in [...]` is taken to reach every action).
    actions: Option<Entities>,
}

impl<'a> Reach<'a> {
    /// The reach of what changed between `old` and `new`, read against `schema`.
    pub(crate) fn new(old: &'a PolicySet, new: &'a PolicySet, schema: &'a Schema) -> Self {
        let only_in = |a: &'a PolicySet, b: &'a PolicySet, put_in: bool| {
            a.policies()
                .filter(move |p| b.policy(p.id()).is_none_or(|q| q != *p))
                .map(move |policy| Change { policy, put_in })
        };
        Reach {
            changes: only_in(old, new, false)
                .chain(only_in(new, old, true))
                .collect(),
            schema,
            actions: schema.action_entities().ok(),
        }
    }

    /// Which ways the sets may differ on requests of type `env`: a way that is `false`
    /// is proved not to happen (both `false`: they decide every such request alike).
    pub(crate) fn ways(&self, env: &RequestEnv) -> Ways {
        let mut ways = Ways {
            widen: false,
            narrow: false,
        };
        for change in self
            .changes
            .iter()
            .filter(|c| self.may_apply(c.policy, env))
        {
            // A permit put in or a forbid taken out widens; the others narrow.
            if change.put_in == (change.policy.effect() == Effect::Permit) {
                ways.widen = true;
            } else {
                ways.narrow = true;
            }
        }
        ways
    }

    /// Whether `policy`'s scope admits some request of type `env` (conservative: `true`
    /// unless the scope rules the type out).
    fn may_apply(&self, policy: &Policy, env: &RequestEnv) -> bool {
        let principal = match policy.principal_constraint() {
            PrincipalConstraint::Any => true,
            PrincipalConstraint::In(e) => self.may_be_in(env.principal(), &e),
            PrincipalConstraint::Eq(e) => e.type_name() == env.principal(),
            PrincipalConstraint::Is(t) => &t == env.principal(),
            PrincipalConstraint::IsIn(t, e) => {
                &t == env.principal() && self.may_be_in(env.principal(), &e)
            }
        };
        let resource = match policy.resource_constraint() {
            ResourceConstraint::Any => true,
            ResourceConstraint::In(e) => self.may_be_in(env.resource(), &e),
            ResourceConstraint::Eq(e) => e.type_name() == env.resource(),
            ResourceConstraint::Is(t) => &t == env.resource(),
            ResourceConstraint::IsIn(t, e) => {
                &t == env.resource() && self.may_be_in(env.resource(), &e)
            }
        };
        let action = match policy.action_constraint() {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(a) => &a == env.action(),
            ActionConstraint::In(groups) => groups.iter().any(|g| {
                g == env.action()
                    || self
                        .actions
                        .as_ref()
                        .is_none_or(|actions| actions.is_ancestor_of(g, env.action()))
            }),
        };
        principal && action && resource
    }

    /// Whether an entity of type `ty` may be `in` the entity `e`: it is `e`'s type, or the
    /// schema lets `e`'s type be an ancestor of `ty` (or `ty` is unknown to it).
    fn may_be_in(&self, ty: &EntityTypeName, e: &EntityUid) -> bool {
        let target = e.type_name();
        target == ty
            || self
                .schema
                .ancestors(ty)
                .is_none_or(|mut up| up.any(|a| a == target))
    }
}
