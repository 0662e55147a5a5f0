//! The engine's compiled policies, indexed by action, principal type and scope entity,
//! so that a decision touches only the policies that can apply and evaluates them with
//! the compiled evaluator of [`cedar_compiled`].
//!
//! For permitted fields, each policy's conditions are evaluated over every catalogue
//! field at once as bitsets (`FieldSet` masks): a condition that does not read
//! `context.field` is evaluated once per member (or once per page if it does not read the
//! member either), and atoms that read only the field (`context.field in
//! FieldClass::"contact"`) are folded into constant masks when the engine is built.
//!
//! Each principal's [`PrincipalRules`] for an action holds those policies specialised to it: what
//! its records determine (its teams, its campaign's candidate, an election's dates, a
//! contract) folded in, a policy that cannot hold for it left out. The directory keeps
//! the rules; [`asked`] runs the passes over them, [`member`] writes the member.

mod asked;
mod check;
mod member;
mod planner;

use cedar_compiled::lowlevel::{eval_bool, specialize_expr, BinOp, Expr, PolicyView, Scope, Var};
use cedar_compiled::{CompiledPolicies, Ctx, Query, Store, Value};
use cedar_policy::Entities;

pub(crate) use asked::Asked;
pub(crate) use check::ContextValues;
use check::{never_holds, Check, Cond};
pub(crate) use member::Subject;
use member::{member_rank, shared_code, SHARED_CODES};
pub(crate) use planner::{Places, Planner};

use crate::entities::{millis, Attr, Val};
use crate::fields::FieldCatalogue;
use crate::records::{Channel, MemberStatus, PrincipalKind};
use crate::request::Action;

/// The store's id maps and the policy index hash with `rustc-hash`'s Fx hasher: ids come
/// from the CRM and the policies, not from an adversary choosing collisions.
type FxMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// The action's position in [`Action::ALL`] (an exhaustive match: no silent default).
pub(crate) fn action_index(a: Action) -> usize {
    match a {
        Action::Read => 0,
        Action::Export => 1,
        Action::Update => 2,
        Action::Erase => 3,
        Action::BulkExport => 4,
        Action::ContactPhone => 5,
        Action::ContactEmail => 6,
        Action::ContactPost => 7,
    }
}

/// One `&&` operand of a policy's condition.
#[derive(Debug, Clone)]
pub(crate) struct Conj {
    pub(crate) expr: Expr,
    check: Check,
    /// Whether it reads `context.field`.
    pub(crate) field: bool,
    /// Whether it reads `resource` (the member).
    pub(crate) resource: bool,
}

/// A compiled policy with the scope constraints the index resolves taken out.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) forbid: bool,
    pub(crate) conjuncts: Vec<Conj>,
    /// The fields on which it certainly does not hold, nor fail ([`never_holds`]).
    pub(crate) never: u64,
    /// The conjuncts' checks as one condition, for one field's decision.
    pub(crate) cond: Cond,
    /// Its constant checks' masks (where each is true, where false, per field bit),
    /// `never` first: two fields alike in each are alike to it, for planning. `None` if
    /// it reads the field otherwise too.
    pub(crate) masks: Option<Box<[(u64, u64)]>>,
}

impl Rule {
    fn new(forbid: bool, conjuncts: Vec<Conj>, all: u64) -> Rule {
        let never = never_holds(conjuncts.iter().map(|c| &c.check), all);
        let cond = Cond::of(conjuncts.iter().map(|c| &c.check));
        let mut masks = vec![(never, 0)];
        let mut constant = true;
        for c in &conjuncts {
            constant &= c.check.constant_masks(&mut masks);
        }
        Rule {
            forbid,
            conjuncts,
            never,
            cond,
            masks: constant.then(|| masks.into_boxed_slice()),
        }
    }
}

/// The policies that can apply to one principal and one action whatever the member,
/// with what the principal determines folded in: its attributes and the records they
/// reach (a campaign's candidate, an election's dates, a contract), its teams. Built
/// once per principal and action and kept by the [`Directory`](crate::Directory) until
/// a record it read changes.
#[derive(Debug)]
pub(crate) struct PrincipalRules {
    /// `(policy, rule)` in the order the index lists them; a rule that cannot hold for
    /// this principal is left out.
    pub(crate) rules: Vec<(u32, Rule)>,
    /// The uids of the records the folding read, sorted.
    reads: Vec<u32>,
}

impl PrincipalRules {
    /// Whether the plan read the record `uid` (and must be rebuilt if it changes).
    pub(crate) fn reads(&self, uid: u32) -> bool {
        self.reads.binary_search(&uid).is_ok()
    }
}

/// The policies that can apply to one action and one principal kind.
#[derive(Debug, Clone, Default)]
struct Bucket {
    /// Policies without an entity in their principal or resource scope.
    open: Vec<u32>,
    /// `principal == E`, by E.
    principal_eq: FxMap<u32, Vec<u32>>,
    /// `principal in E` (or `is T in E`), by E.
    principal_in: FxMap<u32, Vec<u32>>,
    /// `resource == E`, by E (the principal scope has no entity).
    resource_eq: FxMap<u32, Vec<u32>>,
    /// `resource in E` (or `is T in E`), by E.
    resource_in: FxMap<u32, Vec<u32>>,
}

/// Per policy (in compiled order): the id, effect and `@flag`.
#[derive(Debug, Clone)]
struct Meta {
    id: String,
    flag: Option<String>,
}

/// The engine's compiled policies and their index, and what the compiled writers need
/// (attribute ids, the values of enumerations): built with the
/// [`Engine`](crate::Engine), shared with every [`Directory`](crate::Directory) built for
/// it.
#[derive(Debug)]
pub(crate) struct Index {
    compiled: CompiledPolicies,
    /// Per compiled policy; `None` for a policy that falls back to Cedar.
    rules: Vec<Option<Rule>>,
    meta: Vec<Meta>,
    /// `[action][kind]`.
    buckets: Vec<Bucket>,
    /// The field and action entities: every directory starts from a copy.
    base: Store,
    /// The id of each [`Attr`], by `Attr as usize`.
    attrs: [u32; Attr::ALL.len()],
    /// Each member status as a value, in [`MemberStatus::ALL`] order.
    statuses: [Value; 5],
    /// Each set of channels as a value, by bitmask (phone 1, email 2, post 4).
    channels: [Value; 8],
    /// The type id of `Member`.
    member_type: u32,
    /// Per [`Attr`], its place among a member's own attributes (those not in `shared`)
    /// sorted by id (`u8::MAX` for one a member does not have).
    member_rank: [u8; Attr::ALL.len()],
    /// Per [`Attr`] and [`shared_code`], the attribute with that value: what a member
    /// borrows instead of copying a status or a set of channels.
    shared: Vec<(u32, Value)>,
    catalogue: FieldCatalogue,
    /// The uid of each catalogue field, in catalogue order.
    field_uids: Vec<u32>,
    /// The uid of each action, in [`Action::ALL`] order.
    action_uids: Vec<u32>,
    all: u64,
}

/// Whether `e` reads `context.field` (or the whole context, which holds it).
fn reads_field(e: &Expr, field: u32) -> bool {
    match e {
        Expr::GetAttr(a, attr) if matches!(&**a, Expr::Var(Var::Context)) => *attr == field,
        Expr::HasAttr(a, chain) if matches!(&**a, Expr::Var(Var::Context)) => {
            // `context has field` holds for every field; `context has field.x` reads it.
            chain.first() == Some(&field) && chain.len() > 1
        }
        Expr::Var(Var::Context) => true,
        _ => any_child(e, |c| reads_field(c, field)),
    }
}

fn reads_var(e: &Expr, var: Var) -> bool {
    match e {
        Expr::Var(v) => *v == var,
        _ => any_child(e, |c| reads_var(c, var)),
    }
}

fn is_field(e: &Expr, field: u32) -> bool {
    matches!(e, Expr::GetAttr(a, attr) if *attr == field && matches!(&**a, Expr::Var(Var::Context)))
}

/// Whether `e` depends on nothing but `context.field` and the field entities (their
/// ancestors): its value per field is then fixed when the engine is built.
fn field_only(e: &Expr, field: u32) -> bool {
    match e {
        Expr::Lit(_) | Expr::Error => true,
        _ if is_field(e, field) => true,
        Expr::Var(_) | Expr::GetAttr(..) | Expr::HasAttr(..) => false,
        Expr::Bin(BinOp::GetTag | BinOp::HasTag, _, _) => false,
        Expr::Bin(BinOp::In, l, r) => is_field(l, field) && field_only(r, field),
        Expr::Is(l, _, Some(r)) => is_field(l, field) && field_only(r, field),
        _ => !any_child(e, |c| !field_only(c, field)),
    }
}

/// Whether one of the operands of `e` passes `f` (a walk that allocates nothing).
fn any_child(e: &Expr, mut f: impl FnMut(&Expr) -> bool) -> bool {
    match e {
        Expr::Lit(_) | Expr::Error | Expr::Var(_) => false,
        Expr::Not(a)
        | Expr::Neg(a)
        | Expr::IsEmpty(a)
        | Expr::GetAttr(a, _)
        | Expr::HasAttr(a, _)
        | Expr::Like(a, _) => f(a),
        Expr::Is(a, _, w) => f(a) || w.as_deref().is_some_and(f),
        Expr::Bin(_, a, b) | Expr::And(a, b) | Expr::Or(a, b) => f(a) || f(b),
        Expr::If(c, t, e) => f(c) || f(t) || f(e),
        Expr::Set(items) | Expr::Call(_, items) => items.iter().any(f),
        Expr::Record(pairs) => pairs.iter().any(|(_, v)| f(v)),
    }
}

/// The result of evaluating a boolean atom: `Some(b)` or `None` on an error (or a value
/// that is not a boolean).
#[inline]
fn truth(e: &Expr, q: &Query<'_>) -> Option<bool> {
    eval_bool(e, q).ok()
}

fn channel_bit(c: Channel) -> usize {
    match c {
        Channel::Phone => 1,
        Channel::Email => 2,
        Channel::Post => 4,
    }
}

fn status_index(s: MemberStatus) -> usize {
    match s {
        MemberStatus::Member => 0,
        MemberStatus::RegisteredSupporter => 1,
        MemberStatus::AffiliatedSupporter => 2,
        MemberStatus::Former => 3,
        MemberStatus::Expelled => 4,
    }
}

impl Index {
    /// Compiles the engine's policies (each from its EST, given by `ests`) and indexes them.
    ///
    /// # Errors
    /// A message if the policies cannot be compiled (templates, which loading refuses
    /// first) or the field and action entities cannot be read.
    pub(crate) fn build(
        policies: &cedar_policy::PolicySet,
        ests: impl FnMut(&cedar_policy::Policy) -> Result<serde_json::Value, String>,
        catalogue: &FieldCatalogue,
        field_entities: &[cedar_policy::Entity],
        action_entities: &[cedar_policy::Entity],
    ) -> Result<Index, String> {
        let compiled = CompiledPolicies::compile_with(policies, ests).map_err(|e| e.to_string())?;
        let entities = Entities::from_entities(
            field_entities.iter().chain(action_entities.iter()).cloned(),
            None,
        )
        .map_err(|e| e.to_string())?;
        let mut base = Store::from_entities(&compiled, &entities).map_err(|e| e.to_string())?;
        let attrs = Attr::ALL.map(|a| base.intern_attr(a.name()));
        let statuses = MemberStatus::ALL.map(|s| Value::String(s.as_str().into()));
        let channels = std::array::from_fn(|bits| {
            let items = [Channel::Phone, Channel::Email, Channel::Post]
                .into_iter()
                .filter(|c| bits & channel_bit(*c) != 0)
                .map(|c| Value::String(c.as_str().into()))
                .collect();
            Value::set(items)
        });
        let field_uids: Vec<u32> = catalogue
            .iter()
            .map(|(_, f)| base.intern_uid("Field", &f.name))
            .collect();
        let action_uids: Vec<u32> = Action::ALL
            .iter()
            .map(|a| base.intern_uid("Action", a.as_str()))
            .collect();
        let all = catalogue.all().bits();
        let kind_types: Vec<Option<u32>> = PrincipalKind::ALL
            .iter()
            .map(|k| base.type_id(k.type_name()))
            .collect();
        let member_type = base.type_id("Member");
        let member_rank = member_rank(&attrs);
        let shared = attrs
            .iter()
            .flat_map(|a| {
                statuses
                    .iter()
                    .chain(channels.iter())
                    .map(move |v| (*a, v.clone()))
            })
            .collect();

        let mut fast = Index {
            rules: Vec::new(),
            meta: Vec::new(),
            buckets: vec![Bucket::default(); Action::ALL.len() * PrincipalKind::ALL.len()],
            base,
            attrs,
            statuses,
            channels,
            member_type: member_type.unwrap_or(u32::MAX),
            member_rank,
            shared,
            catalogue: catalogue.clone(),
            field_uids,
            action_uids,
            all,
            compiled,
        };
        let views: Vec<PolicyView<'_>> = fast.compiled.views().collect();
        let mut rules = Vec::with_capacity(views.len());
        let mut meta = Vec::with_capacity(views.len());
        let mut placements = Vec::new();
        for (i, v) in views.iter().enumerate() {
            let id = v.id.to_string();
            let flag = policies
                .policy(v.id)
                .and_then(|p| crate::bundle::annotation(p, "flag"));
            meta.push(Meta {
                id,
                flag: flag.map(str::to_string),
            });
            let Some((conjuncts, shape)) = v.native else {
                rules.push(None);
                continue;
            };
            let Ok(index) = u32::try_from(i) else {
                return Err("too many policies".into());
            };
            // Which scope constraints the index resolves.
            let principal_entity = matches!(
                shape.principal,
                Scope::Eq(_) | Scope::In(_) | Scope::IsIn(..)
            );
            let resource_indexed = !principal_entity
                && matches!(
                    shape.resource,
                    Scope::Eq(_) | Scope::In(_) | Scope::IsIn(..)
                );
            let (has_p, has_a, has_r) = shape.parts;
            // The leading scope conjuncts, in order principal, action, resource, and
            // whether the index resolves each (the principal by type or entity, the
            // action by bucket, the resource by type or entity unless the principal's
            // entity indexes the policy).
            let resource_resolved =
                resource_indexed || matches!(shape.resource, Scope::Any | Scope::Is(_));
            let lead: Vec<bool> = [(has_p, true), (has_a, true), (has_r, resource_resolved)]
                .into_iter()
                .filter(|(present, _)| *present)
                .map(|(_, resolved)| resolved)
                .collect();
            let mut residual = Vec::new();
            for (pos, c) in conjuncts.iter().enumerate() {
                if lead.get(pos).copied().unwrap_or(false) {
                    continue;
                }
                residual.push(fast.conj(c));
            }
            rules.push(Some(Rule::new(v.forbid, residual, fast.all)));
            placements.push((index, shape.clone(), principal_entity, resource_indexed));
        }
        drop(views);
        fast.rules = rules;
        fast.meta = meta;
        for (index, shape, principal_entity, resource_indexed) in placements {
            for (ai, a_uid) in fast.action_uids.clone().into_iter().enumerate() {
                let action_ok = match &shape.actions {
                    None => true,
                    Some(list) => {
                        let anc = fast.base.entity_ancestors(a_uid);
                        list.iter()
                            .any(|u| *u == a_uid || anc.binary_search(u).is_ok())
                    }
                };
                if !action_ok {
                    continue;
                }
                for (ki, kt) in kind_types.iter().enumerate() {
                    let type_ok = |s: Scope, t: Option<u32>, base: &Store| match s {
                        Scope::Any | Scope::In(_) => true,
                        Scope::Is(x) | Scope::IsIn(x, _) => Some(x) == t,
                        Scope::Eq(u) => base.type_of_uid(u).is_some() && base.type_of_uid(u) == t,
                    };
                    if !type_ok(shape.principal, *kt, &fast.base)
                        || !type_ok(shape.resource, member_type, &fast.base)
                    {
                        continue;
                    }
                    let Some(b) = fast.buckets.get_mut(ai * PrincipalKind::ALL.len() + ki) else {
                        continue;
                    };
                    if principal_entity {
                        match shape.principal {
                            Scope::Eq(u) => b.principal_eq.entry(u).or_default().push(index),
                            Scope::In(u) | Scope::IsIn(_, u) => {
                                b.principal_in.entry(u).or_default().push(index)
                            }
                            _ => {}
                        }
                    } else if resource_indexed {
                        match shape.resource {
                            Scope::Eq(u) => b.resource_eq.entry(u).or_default().push(index),
                            Scope::In(u) | Scope::IsIn(_, u) => {
                                b.resource_in.entry(u).or_default().push(index)
                            }
                            _ => {}
                        }
                    } else {
                        b.open.push(index);
                    }
                }
            }
        }
        Ok(fast)
    }

    /// The rules of `principal` (of `kind`, in `store`) for `action`.
    pub(crate) fn principal_rules(
        &self,
        store: &Store,
        principal: u32,
        kind: PrincipalKind,
        action: Action,
    ) -> PrincipalRules {
        let mut reads = vec![principal];
        reads.extend_from_slice(store.entity_ancestors(principal));
        let mut rules = Vec::new();
        if let Some(bucket) = self.bucket(action, kind) {
            let q = Query::direct(
                store,
                principal,
                self.action_uid(action),
                u32::MAX,
                Ctx::Pairs(&[]),
            );
            let member_type = self.member_type;
            let mut known = |u: u32| {
                // A member's data comes with each request.
                if store.type_of_uid(u) == Some(member_type) {
                    return false;
                }
                reads.push(u);
                reads.extend_from_slice(store.entity_ancestors(u));
                true
            };
            let mut add = |i: u32| {
                let Some(rule) = self.rule(i) else { return };
                let mut conjuncts = Vec::with_capacity(rule.conjuncts.len());
                for c in &rule.conjuncts {
                    match specialize_expr(&c.expr, &q, &mut known) {
                        Expr::Lit(Value::Bool(true)) => {}
                        // Never holds: left out if nothing before it can error.
                        e @ Expr::Lit(Value::Bool(false)) => {
                            if conjuncts.is_empty() {
                                return;
                            }
                            conjuncts.push(self.conj(&e));
                            break;
                        }
                        e => conjuncts.push(self.conj(&e)),
                    }
                }
                rules.push((i, Rule::new(rule.forbid, conjuncts, self.all)));
            };
            bucket.open.iter().for_each(|i| add(*i));
            for_each_principal(store, bucket, principal, add);
        }
        reads.sort_unstable();
        reads.dedup();
        PrincipalRules { rules, reads }
    }

    fn action_uid(&self, action: Action) -> u32 {
        self.action_uids
            .get(action_index(action))
            .copied()
            .unwrap_or(u32::MAX)
    }

    /// The policy `i`'s id and `@flag`.
    pub(crate) fn policy(&self, i: u32) -> Option<(&str, Option<&str>)> {
        self.meta
            .get(i as usize)
            .map(|m| (m.id.as_str(), m.flag.as_deref()))
    }

    /// The uid of the catalogue field at `index`.
    pub(crate) fn field_uid(&self, index: usize) -> Option<u32> {
        self.field_uids.get(index).copied()
    }

    /// Whether every policy was compiled (none falls back to Cedar).
    pub(crate) fn complete(&self) -> bool {
        self.compiled.fallbacks().is_empty()
    }

    fn conj(&self, e: &Expr) -> Conj {
        let f = self.attr(Attr::Field);
        Conj {
            expr: e.clone(),
            check: self.check(e),
            field: reads_field(e, f),
            resource: reads_var(e, Var::Resource),
        }
    }

    fn base_query(&self) -> Query<'_> {
        Query::direct(&self.base, 0, 0, 0, Ctx::Pairs(&[]))
    }

    /// The compiled policies.
    pub(crate) fn compiled(&self) -> &CompiledPolicies {
        &self.compiled
    }

    /// The id of `attr`.
    #[inline]
    pub(crate) fn attr(&self, attr: Attr) -> u32 {
        self.attrs.get(attr as usize).copied().unwrap_or(u32::MAX)
    }

    /// The store every directory starts from.
    pub(crate) fn base_store(&self) -> &Store {
        &self.base
    }

    /// The type id of `Member`.
    pub(crate) fn member_type(&self) -> u32 {
        self.member_type
    }

    /// `attr` with the value `v`, from the table of shared values, if `v` is a status or
    /// a set of channels.
    #[inline]
    fn shared(&self, attr: Attr, v: &Val<'_>) -> Option<&(u32, Value)> {
        let code = shared_code(v)?;
        self.shared.get(attr as usize * SHARED_CODES + code)
    }

    /// The place of `attr` among a member's own attributes sorted by id, if a member has
    /// it.
    #[inline]
    pub(crate) fn member_rank(&self, attr: Attr) -> Option<usize> {
        self.member_rank
            .get(attr as usize)
            .filter(|r| **r != u8::MAX)
            .map(|r| usize::from(*r))
    }

    /// The catalogue field `name`'s uid, if the catalogue has it.
    pub(crate) fn field(&self, name: &str) -> Option<u32> {
        let id = self.catalogue.id(name)?;
        self.field_uids.get(id.index()).copied()
    }

    /// A described value as the compiled evaluator holds it; `uid` interns references.
    #[inline]
    pub(crate) fn value(&self, v: Val<'_>, uid: &mut dyn FnMut(&str, &str) -> u32) -> Value {
        match v {
            Val::Bool(b) => Value::Bool(b),
            Val::Long(n) => Value::Long(n),
            Val::Str(s) => Value::String(s.into()),
            Val::Time(t) => Value::DateTime(millis(t)),
            Val::Status(s) => self
                .statuses
                .get(status_index(s))
                .cloned()
                .unwrap_or(Value::Bool(false)),
            Val::Ref(ty, id) => Value::Entity(uid(ty, id)),
            Val::Channels(cs) => {
                let bits = cs.iter().fold(0, |b, c| b | channel_bit(*c));
                self.channels
                    .get(bits)
                    .cloned()
                    .unwrap_or(Value::Bool(false))
            }
            Val::Statuses(ss) => Value::set(
                ss.iter()
                    .filter_map(|s| self.statuses.get(status_index(*s)).cloned())
                    .collect(),
            ),
            Val::Refs(ty, ids) => {
                Value::set(ids.iter().map(|id| Value::Entity(uid(ty, id))).collect())
            }
        }
    }

    fn bucket(&self, action: Action, kind: PrincipalKind) -> Option<&Bucket> {
        self.buckets
            .get(action_index(action) * PrincipalKind::ALL.len() + kind_index(kind))
    }

    fn rule(&self, i: u32) -> Option<&Rule> {
        self.rules.get(i as usize).and_then(Option::as_ref)
    }
}

/// Calls `f` on each policy indexed under the principal's scope entities.
fn for_each_principal(store: &Store, bucket: &Bucket, principal: u32, mut f: impl FnMut(u32)) {
    if let Some(l) = bucket.principal_eq.get(&principal) {
        l.iter().for_each(|i| f(*i));
    }
    if !bucket.principal_in.is_empty() {
        let anc = store.entity_ancestors(principal);
        for e in std::iter::once(&principal).chain(anc.iter()) {
            if let Some(l) = bucket.principal_in.get(e) {
                l.iter().for_each(|i| f(*i));
            }
        }
    }
}

/// The position of a kind in [`PrincipalKind::ALL`].
pub(crate) fn kind_index(k: PrincipalKind) -> usize {
    match k {
        PrincipalKind::Staff => 0,
        PrincipalKind::CampaignStaff => 1,
        PrincipalKind::Volunteer => 2,
        PrincipalKind::Officer => 3,
        PrincipalKind::Representative => 4,
        PrincipalKind::Processor => 5,
    }
}
