//! The engine's compiled path: an [`EntityStore`] the CRM keeps between requests, and
//! the policies of the [`Engine`] indexed by action, principal type and scope entity, so
//! that a decision touches only the policies that can apply and evaluates them with the
//! compiled evaluator of [`cedar_compiled`].
//!
//! For `permitted_fields`, each policy's conditions are evaluated over every catalogue
//! field at once as bitsets (`FieldSet` masks): a condition that does not read
//! `context.field` is evaluated once per member (or once per page if it does not read the
//! member either), and atoms that read only the field (`context.field in
//! FieldClass::"contact"`) are folded into constant masks when the engine is built.

use cedar_policy::Entities;
use jiff::Timestamp;

use crate::engine::{Decision, Effect, Engine};
use crate::entities::Slice;
use crate::error::RequestError;
use crate::fields::{FieldCatalogue, FieldId, FieldSet};
use crate::model::{
    Directory, Election, Member, Membership, PrincipalId, PrincipalKind, PrincipalRecord,
};
use crate::request::{Action, Context, Request};
use cedar_compiled::lowlevel::{eval_expr, Expr, PolicyView, Scope, Var};
use cedar_compiled::{CompiledPolicies, Ctx, Query, Store, Value};

/// The store's id maps and the policy index hash with `rustc-hash`'s Fx hasher: ids come
/// from the CRM and the policies, not from an adversary choosing collisions.
type FxMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// Milliseconds since the epoch, as Cedar reads the engine's `datetime` strings
/// (truncated to the millisecond, towards the past).
fn millis(ts: Timestamp) -> i64 {
    i64::try_from(ts.as_nanosecond().div_euclid(1_000_000)).unwrap_or(i64::MAX)
}

fn time(ts: Timestamp) -> Value {
    Value::DateTime(millis(ts))
}

fn strings<'a>(items: impl IntoIterator<Item = &'a str>) -> Value {
    Value::set(items.into_iter().map(|s| Value::String(s.into())).collect())
}

/// The kind's position in [`PrincipalKind::ALL`].
fn kind_index(k: PrincipalKind) -> usize {
    match k {
        PrincipalKind::Staff => 0,
        PrincipalKind::CampaignStaff => 1,
        PrincipalKind::Volunteer => 2,
        PrincipalKind::Officer => 3,
        PrincipalKind::Representative => 4,
        PrincipalKind::Processor => 5,
    }
}

/// The action's position in [`Action::ALL`] (an exhaustive match: no silent default).
fn action_index(a: Action) -> usize {
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

/// A boolean condition evaluated over every field at once: `(true, false)` masks; the
/// fields in neither errored.
#[derive(Debug, Clone)]
enum MNode {
    /// Masks known when the engine is built (the condition reads only the field).
    Const(u64, u64),
    /// An atom: evaluated once if it does not read the field, else once per field.
    Leaf {
        expr: Expr,
        field: bool,
    },
    Not(Box<MNode>),
    And(Box<MNode>, Box<MNode>),
    Or(Box<MNode>, Box<MNode>),
    If(Box<MNode>, Box<MNode>, Box<MNode>),
}

/// One `&&` operand of a policy's condition.
#[derive(Debug, Clone)]
struct Conj {
    expr: Expr,
    mask: MNode,
    /// Whether it reads `context.field`.
    field: bool,
    /// Whether it reads `resource` (the member).
    resource: bool,
}

/// A compiled policy with the scope constraints the index resolves taken out.
#[derive(Debug, Clone)]
struct Rule {
    forbid: bool,
    conjuncts: Vec<Conj>,
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

/// Attribute ids the store writes.
#[derive(Debug, Clone, Default)]
struct Attrs {
    field: u32,
    now: u32,
    reads_this_hour: u32,
    election: u32,
    session: u32,
    purpose: u32,
    reason: u32,
    status: u32,
    joined: u32,
    left: u32,
    in_good_standing: u32,
    consents: u32,
    opt_outs: u32,
    nominations_close: u32,
    freeze_date: u32,
    ballot_close: u32,
    validly_nominated: u32,
    fee_paid: u32,
    data_agreement_signed: u32,
    candidate: u32,
    ended_at: u32,
    region: u32,
    campaign: u32,
    role: u32,
    clp: u32,
    contract: u32,
    hourly_read_limit: u32,
    fields: u32,
    statuses: u32,
    starts: u32,
    ends: u32,
    volunteer: u32,
    members: u32,
    opens: u32,
    closes: u32,
    office: u32,
}

impl Attrs {
    fn new(store: &mut Store) -> Attrs {
        let mut a = |n: &str| store.intern_attr(n);
        Attrs {
            field: a("field"),
            now: a("now"),
            reads_this_hour: a("reads_this_hour"),
            election: a("election"),
            session: a("session"),
            purpose: a("purpose"),
            reason: a("reason"),
            status: a("status"),
            joined: a("joined"),
            left: a("left"),
            in_good_standing: a("in_good_standing"),
            consents: a("consents"),
            opt_outs: a("opt_outs"),
            nominations_close: a("nominations_close"),
            freeze_date: a("freeze_date"),
            ballot_close: a("ballot_close"),
            validly_nominated: a("validly_nominated"),
            fee_paid: a("fee_paid"),
            data_agreement_signed: a("data_agreement_signed"),
            candidate: a("candidate"),
            ended_at: a("ended_at"),
            region: a("region"),
            campaign: a("campaign"),
            role: a("role"),
            clp: a("clp"),
            contract: a("contract"),
            hourly_read_limit: a("hourly_read_limit"),
            fields: a("fields"),
            statuses: a("statuses"),
            starts: a("starts"),
            ends: a("ends"),
            volunteer: a("volunteer"),
            members: a("members"),
            opens: a("opens"),
            closes: a("closes"),
            office: a("office"),
        }
    }
}

/// The engine's compiled policies and their index, built with the [`Engine`].
#[derive(Debug)]
pub(crate) struct Fast {
    compiled: CompiledPolicies,
    /// Per compiled policy; `None` for a policy that falls back to Cedar.
    rules: Vec<Option<Rule>>,
    meta: Vec<Meta>,
    /// `[action][kind]`.
    buckets: Vec<Bucket>,
    /// The field and action entities, and the attribute ids: every [`EntityStore`]
    /// starts from a copy.
    base: Store,
    attrs: Attrs,
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
        _ => children(e).iter().any(|c| reads_field(c, field)),
    }
}

fn reads_var(e: &Expr, var: Var) -> bool {
    match e {
        Expr::Var(v) => *v == var,
        _ => children(e).iter().any(|c| reads_var(c, var)),
    }
}

fn is_field(e: &Expr, field: u32) -> bool {
    matches!(e, Expr::GetAttr(a, attr) if *attr == field && matches!(&**a, Expr::Var(Var::Context)))
}

/// Whether `e` depends on nothing but `context.field` and the field entities (their
/// ancestors): its value per field is then fixed when the engine is built.
fn field_only(e: &Expr, field: u32) -> bool {
    use cedar_compiled::lowlevel::BinOp;
    match e {
        Expr::Lit(_) | Expr::Error => true,
        _ if is_field(e, field) => true,
        Expr::Var(_) | Expr::GetAttr(..) | Expr::HasAttr(..) => false,
        Expr::Bin(BinOp::GetTag | BinOp::HasTag, _, _) => false,
        Expr::Bin(BinOp::In, l, r) => is_field(l, field) && field_only(r, field),
        Expr::Is(l, _, Some(r)) => is_field(l, field) && field_only(r, field),
        _ => children(e).iter().all(|c| field_only(c, field)),
    }
}

fn children(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::Lit(_) | Expr::Error | Expr::Var(_) => Vec::new(),
        Expr::Not(a)
        | Expr::Neg(a)
        | Expr::IsEmpty(a)
        | Expr::GetAttr(a, _)
        | Expr::HasAttr(a, _)
        | Expr::Like(a, _) => vec![a],
        Expr::Is(a, _, w) => {
            let mut v = vec![&**a];
            if let Some(w) = w {
                v.push(w);
            }
            v
        }
        Expr::Bin(_, a, b) | Expr::And(a, b) | Expr::Or(a, b) => vec![a, b],
        Expr::If(c, t, f) => vec![c, t, f],
        Expr::Set(items) | Expr::Call(_, items) => items.iter().collect(),
        Expr::Record(pairs) => pairs.iter().map(|(_, v)| v).collect(),
    }
}

/// The result of evaluating a boolean atom: `Some(b)` or `None` on an error (or a value
/// that is not a boolean).
#[inline]
fn truth(e: &Expr, q: &Query<'_>) -> Option<bool> {
    match eval_expr(e, q) {
        Ok(Value::Bool(b)) => Some(b),
        _ => None,
    }
}

impl Fast {
    /// Compiles the engine's policies and indexes them; `None` if they cannot be compiled
    /// (templates) or the field and action entities cannot be read: the engine then
    /// answers every request on the reference path.
    pub(crate) fn build(
        policies: &cedar_policy::PolicySet,
        catalogue: &FieldCatalogue,
        field_entities: &[cedar_policy::Entity],
        action_entities: &[cedar_policy::Entity],
    ) -> Option<Fast> {
        let compiled = CompiledPolicies::compile(policies).ok()?;
        let entities = Entities::from_entities(
            field_entities.iter().chain(action_entities.iter()).cloned(),
            None,
        )
        .ok()?;
        let mut base = Store::from_entities(&compiled, &entities).ok()?;
        let attrs = Attrs::new(&mut base);
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

        let mut fast = Fast {
            rules: Vec::new(),
            meta: Vec::new(),
            buckets: vec![Bucket::default(); Action::ALL.len() * PrincipalKind::ALL.len()],
            base,
            attrs,
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
            let flag = policies.policy(v.id).and_then(|p| p.annotation("flag"));
            meta.push(Meta {
                id,
                flag: flag.map(str::to_string),
            });
            let Some((conjuncts, shape)) = v.native else {
                rules.push(None);
                continue;
            };
            let Ok(index) = u32::try_from(i) else {
                return None;
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
            rules.push(Some(Rule {
                forbid: v.forbid,
                conjuncts: residual,
            }));
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
        Some(fast)
    }

    fn conj(&self, e: &Expr) -> Conj {
        let f = self.attrs.field;
        Conj {
            expr: e.clone(),
            mask: self.mnode(e),
            field: reads_field(e, f),
            resource: reads_var(e, Var::Resource),
        }
    }

    fn mnode(&self, e: &Expr) -> MNode {
        let f = self.attrs.field;
        if !reads_field(e, f) {
            return MNode::Leaf {
                expr: e.clone(),
                field: false,
            };
        }
        match e {
            Expr::Not(a) => MNode::Not(Box::new(self.mnode(a))),
            Expr::And(a, b) => MNode::And(Box::new(self.mnode(a)), Box::new(self.mnode(b))),
            Expr::Or(a, b) => MNode::Or(Box::new(self.mnode(a)), Box::new(self.mnode(b))),
            Expr::If(c, t, x) => MNode::If(
                Box::new(self.mnode(c)),
                Box::new(self.mnode(t)),
                Box::new(self.mnode(x)),
            ),
            _ if field_only(e, f) => {
                let mut q = self.base_query();
                let (mut t, mut fl) = (0u64, 0u64);
                for (i, u) in self.field_uids.iter().enumerate() {
                    q.field = Some((f, *u));
                    match truth(e, &q) {
                        Some(true) => t |= 1 << i,
                        Some(false) => fl |= 1 << i,
                        None => {}
                    }
                }
                MNode::Const(t, fl)
            }
            _ => MNode::Leaf {
                expr: e.clone(),
                field: true,
            },
        }
    }

    fn base_query(&self) -> Query<'_> {
        Query::direct(&self.base, 0, 0, 0, Ctx::Pairs(&[]))
    }

    /// The compiled policies.
    pub(crate) fn compiled(&self) -> &CompiledPolicies {
        &self.compiled
    }

    /// `(T, F)` of `n` over every field.
    fn masks(&self, n: &MNode, q: &mut Query<'_>) -> (u64, u64) {
        match n {
            MNode::Const(t, f) => (*t, *f),
            MNode::Leaf { expr, field: false } => match truth(expr, q) {
                Some(true) => (self.all, 0),
                Some(false) => (0, self.all),
                None => (0, 0),
            },
            MNode::Leaf { expr, field: true } => {
                let (mut t, mut f) = (0u64, 0u64);
                let saved = q.field;
                for (i, u) in self.field_uids.iter().enumerate() {
                    q.field = Some((self.attrs.field, *u));
                    match truth(expr, q) {
                        Some(true) => t |= 1 << i,
                        Some(false) => f |= 1 << i,
                        None => {}
                    }
                }
                q.field = saved;
                (t, f)
            }
            MNode::Not(a) => {
                let (t, f) = self.masks(a, q);
                (f, t)
            }
            MNode::And(a, b) => {
                let (ta, fa) = self.masks(a, q);
                if ta == 0 {
                    return (0, fa);
                }
                let (tb, fb) = self.masks(b, q);
                (ta & tb, fa | (ta & fb))
            }
            MNode::Or(a, b) => {
                let (ta, fa) = self.masks(a, q);
                if fa == 0 {
                    return (ta, 0);
                }
                let (tb, fb) = self.masks(b, q);
                (ta | (fa & tb), fa & fb)
            }
            MNode::If(c, t, e) => {
                let (tc, fc) = self.masks(c, q);
                let (tt, ft) = if tc == 0 { (0, 0) } else { self.masks(t, q) };
                let (te, fe) = if fc == 0 { (0, 0) } else { self.masks(e, q) };
                ((tc & tt) | (fc & te), (tc & ft) | (fc & fe))
            }
        }
    }

    /// The fields on which `c` holds.
    #[inline]
    fn holds(&self, c: &Conj, q: &mut Query<'_>) -> u64 {
        if c.field {
            self.masks(&c.mask, q).0
        } else if truth(&c.expr, q) == Some(true) {
            self.all
        } else {
            0
        }
    }

    fn bucket(&self, action: Action, kind: PrincipalKind) -> Option<&Bucket> {
        self.buckets
            .get(action_index(action) * PrincipalKind::ALL.len() + kind_index(kind))
    }

    fn rule(&self, i: u32) -> Option<&Rule> {
        self.rules.get(i as usize).and_then(Option::as_ref)
    }

    /// The decisions given the policies that held: `(policy, forbid, fields on which it
    /// held)`. On each field the forbids that held there decide if any did, else the
    /// permits, as in Cedar.
    fn decisions(&self, held: &[(u32, bool, u64)]) -> FieldDecisions<'_> {
        let (mut permitted, mut forbidden) = (0u64, 0u64);
        for (_, forbid, fields) in held {
            if *forbid {
                forbidden |= fields;
            } else {
                permitted |= fields;
            }
        }
        let granted = permitted & !forbidden;
        let deciding = held
            .iter()
            .filter_map(|(i, forbid, fields)| {
                let decided = if *forbid { *fields } else { fields & granted };
                let meta = self.meta.get(*i as usize)?;
                (decided != 0).then_some((meta.id.as_str(), decided))
            })
            .collect();
        FieldDecisions::new(FieldSet::from_bits(granted), deciding)
    }
}

/// A member's or principal's place in the store.
#[derive(Debug, Clone, Copy)]
struct Session {
    uid: u32,
    volunteer: u32,
}

/// The membership, converted once into the compiled evaluator's entity store (interned
/// ids, attributes by id, ancestors precomputed), for the compiled-path requests of the
/// [`Engine`] that built it: [`Engine::authorize_in`], [`Engine::permitted_fields_in`]
/// and [`Engine::permitted_fields_page_in`]. Keep it between requests and update single
/// records with [`EntityStore::upsert_member`], [`EntityStore::upsert_principal`] and
/// the like.
///
/// Every record is checked when it enters the store as the reference path checks the
/// records of a request (a record that refers to a missing one is an error), so the
/// compiled path answers exactly as [`Engine::authorize`] does on the same
/// [`Membership`] ([`EntityStore::membership`]).
///
/// # Example
/// ```
/// use membergate::{sample, Action, Context, Engine, PrincipalId, PrincipalKind, Request};
///
/// let engine = Engine::from_dir("policies")?;
/// let party = sample::bundled();
/// let mut store = engine.store(&party)?;
/// let staffer = PrincipalId::new(PrincipalKind::CampaignStaff, sample::ids::CS_A_STAFF);
/// let req = Request::new(staffer, Action::Read, sample::ids::MEMBER_ELIGIBLE, "phone",
///     Context::at("2020-03-01T12:00:00Z".parse()?).election(sample::ids::LEADER_2020));
/// assert_eq!(engine.authorize_in(&store, &req)?, engine.authorize(&party, &req)?);
///
/// // The member falls into arrears: the next decision sees it.
/// let mut member = party.members[sample::ids::MEMBER_ELIGIBLE].clone();
/// member.in_good_standing = false;
/// store.upsert_member(&engine, sample::ids::MEMBER_ELIGIBLE, member)?;
/// assert!(!engine.authorize_in(&store, &req)?.is_allowed());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct EntityStore {
    store: Store,
    records: Membership,
    members: FxMap<Box<str>, u32>,
    principals: Vec<FxMap<Box<str>, u32>>,
    elections: FxMap<Box<str>, u32>,
    sessions: FxMap<Box<str>, Session>,
}

impl EntityStore {
    /// The records the store holds, as the reference path would read them.
    pub fn membership(&self) -> &Membership {
        &self.records
    }

    /// The number of members.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Inserts or replaces the member `id`.
    ///
    /// # Errors
    /// As the reference path would for a request on this member: a CLP or region it
    /// refers to is missing, or a former member lacks the date they left. The store is
    /// then unchanged.
    pub fn upsert_member(
        &mut self,
        engine: &Engine,
        id: &str,
        member: Member,
    ) -> Result<(), RequestError> {
        let fast = engine.fast_index().ok_or_else(no_compiled)?;
        self.owned_by(fast)?;
        let old = self.records.members.insert(id.to_string(), member);
        let checked = Slice::new(engine.catalogue())
            .member(&self.records, id)
            .map(|_| ());
        if let Err(e) = checked {
            match old {
                Some(m) => self.records.members.insert(id.to_string(), m),
                None => self.records.members.remove(id),
            };
            return Err(e);
        }
        let uid = self.put_member(fast, id, true);
        self.members.insert(id.into(), uid);
        Ok(())
    }

    /// Removes the member `id` (after erasure): requests on it are then unknown-member
    /// errors. Returns whether it was there.
    pub fn remove_member(&mut self, id: &str) -> bool {
        let Some(uid) = self.members.remove(id) else {
            return false;
        };
        self.records.members.remove(id);
        self.store.remove_entity(uid);
        true
    }

    /// Inserts or replaces the principal `id` (of the record's kind).
    ///
    /// # Errors
    /// As the reference path would for a request by this principal: a region, CLP,
    /// campaign, candidate or election it refers to is missing, or its processor contract
    /// names an unknown field. The store is then unchanged.
    pub fn upsert_principal(
        &mut self,
        engine: &Engine,
        id: &str,
        record: PrincipalRecord<'_>,
    ) -> Result<(), RequestError> {
        let fast = engine.fast_index().ok_or_else(no_compiled)?;
        self.owned_by(fast)?;
        let pid = PrincipalId::new(record_kind(record), id);
        // Checked against the records with the new one in place, before any change.
        let overlay = WithPrincipal {
            base: &self.records,
            id: &pid,
            record,
        };
        Slice::new(engine.catalogue()).principal(&overlay, &pid)?;
        set_principal(&mut self.records, id, record);
        let uid = self.put_principal(fast, &pid);
        if let Some(m) = self.principals.get_mut(kind_index(pid.kind)) {
            m.insert(pid.id.as_str().into(), uid);
        }
        Ok(())
    }

    /// Inserts or replaces the election `id`.
    ///
    /// # Errors
    /// None today (an election refers to no other record); kept for symmetry with the
    /// other updates.
    pub fn upsert_election(
        &mut self,
        engine: &Engine,
        id: &str,
        election: Election,
    ) -> Result<(), RequestError> {
        let fast = engine.fast_index().ok_or_else(no_compiled)?;
        self.owned_by(fast)?;
        self.records.elections.insert(id.to_string(), election);
        let uid = self.put_election(fast, id, true);
        self.elections.insert(id.into(), uid);
        Ok(())
    }

    fn owned_by(&self, fast: &Fast) -> Result<(), RequestError> {
        if self.store.owner_tag() == fast.compiled.tag() {
            Ok(())
        } else {
            Err(RequestError::Invalid(
                "the entity store was built by another engine".into(),
            ))
        }
    }

    fn put_region(&mut self, id: &str, close: bool) -> u32 {
        let uid = self.store.intern_uid("Region", id);
        if self.records.regions.contains_key(id) {
            self.store.set_entity(uid, Vec::new(), Vec::new(), close);
        }
        uid
    }

    fn put_clp(&mut self, id: &str, close: bool) -> u32 {
        let uid = self.store.intern_uid("Clp", id);
        if let Some(region) = self.records.clps.get(id).map(|c| c.region.clone()) {
            let r = self.put_region(&region, close);
            self.store.set_entity(uid, Vec::new(), vec![r], close);
        }
        uid
    }

    fn put_election(&mut self, fast: &Fast, id: &str, close: bool) -> u32 {
        let uid = self.store.intern_uid("Election", id);
        if let Some(e) = self.records.elections.get(id) {
            let a = &fast.attrs;
            let attrs = vec![
                (a.nominations_close, time(e.nominations_close)),
                (a.freeze_date, time(e.freeze_date)),
                (a.ballot_close, time(e.ballot_close)),
            ];
            self.store.set_entity(uid, attrs, Vec::new(), close);
        }
        uid
    }

    fn put_campaign(&mut self, fast: &Fast, id: &str, close: bool) -> u32 {
        let uid = self.store.intern_uid("Campaign", id);
        let Some(c) = self.records.campaigns.get(id).cloned() else {
            return uid;
        };
        let a = &fast.attrs;
        let election = self.put_election(fast, &c.election, close);
        let cand = self.store.intern_uid("Candidate", &c.candidate);
        if let Some(k) = self.records.candidates.get(&c.candidate) {
            let attrs = vec![
                (a.validly_nominated, Value::Bool(k.validly_nominated)),
                (a.fee_paid, Value::Bool(k.fee_paid)),
                (
                    a.data_agreement_signed,
                    Value::Bool(k.data_agreement_signed),
                ),
            ];
            self.store.set_entity(cand, attrs, Vec::new(), close);
        }
        let mut attrs = vec![
            (a.election, Value::Entity(election)),
            (a.candidate, Value::Entity(cand)),
        ];
        if let Some(t) = c.ended_at {
            attrs.push((a.ended_at, time(t)));
        }
        self.store.set_entity(uid, attrs, Vec::new(), close);
        uid
    }

    fn put_member(&mut self, fast: &Fast, id: &str, close: bool) -> u32 {
        let uid = self.store.intern_uid("Member", id);
        let Some(m) = self.records.members.get(id).cloned() else {
            return uid;
        };
        let a = &fast.attrs;
        let clp = self.put_clp(&m.clp, close);
        let mut attrs = vec![
            (a.status, Value::String(m.status.as_str().into())),
            (a.joined, time(m.joined)),
            (a.in_good_standing, Value::Bool(m.in_good_standing)),
            (a.consents, strings(m.consents.iter().map(|c| c.as_str()))),
            (a.opt_outs, strings(m.opt_outs.iter().map(|c| c.as_str()))),
        ];
        if let Some(t) = m.left {
            attrs.push((a.left, time(t)));
        }
        self.store.set_entity(uid, attrs, vec![clp], close);
        uid
    }

    fn put_principal(&mut self, fast: &Fast, id: &PrincipalId) -> u32 {
        let uid = self.store.intern_uid(id.kind.type_name(), &id.id);
        let a = fast.attrs.clone();
        let mut attrs = Vec::new();
        let mut parents = Vec::new();
        let (ended_at, limit) = match self.records.principal(id) {
            None => return uid,
            Some(PrincipalRecord::Staff(s)) => {
                let s = s.clone();
                for t in &s.teams {
                    parents.push(self.store.intern_uid("Team", t.as_str()));
                }
                if let Some(r) = &s.region {
                    let region = self.put_region(r, true);
                    attrs.push((a.region, Value::Entity(region)));
                }
                (s.ended_at, s.hourly_read_limit)
            }
            Some(PrincipalRecord::CampaignStaff(s)) => {
                let s = s.clone();
                let campaign = self.put_campaign(fast, &s.campaign, true);
                parents.push(campaign);
                attrs.push((a.campaign, Value::Entity(campaign)));
                attrs.push((a.role, Value::String(s.role.as_str().into())));
                (s.ended_at, s.hourly_read_limit)
            }
            Some(PrincipalRecord::Volunteer(v)) => (v.ended_at, v.hourly_read_limit),
            Some(PrincipalRecord::Officer(o)) => {
                let o = o.clone();
                let clp = self.put_clp(&o.clp, true);
                attrs.push((a.clp, Value::Entity(clp)));
                attrs.push((a.role, Value::String(o.role.as_str().into())));
                (o.ended_at, o.hourly_read_limit)
            }
            Some(PrincipalRecord::Representative(r)) => {
                let r = r.clone();
                let clp = self.put_clp(&r.clp, true);
                attrs.push((a.clp, Value::Entity(clp)));
                (r.ended_at, r.hourly_read_limit)
            }
            Some(PrincipalRecord::Processor(p)) => {
                let p = p.clone();
                let contract = self.store.intern_uid("Contract", &id.id);
                let fields = p
                    .contract
                    .fields
                    .iter()
                    .map(|f| Value::Entity(self.store.intern_uid("Field", f)))
                    .collect();
                let c_attrs = vec![
                    (a.fields, Value::set(fields)),
                    (
                        a.statuses,
                        strings(p.contract.statuses.iter().map(|s| s.as_str())),
                    ),
                    (a.starts, time(p.contract.starts)),
                    (a.ends, time(p.contract.ends)),
                ];
                self.store.set_entity(contract, c_attrs, Vec::new(), true);
                attrs.push((a.contract, Value::Entity(contract)));
                (p.ended_at, p.hourly_read_limit)
            }
        };
        if let Some(t) = ended_at {
            attrs.push((a.ended_at, time(t)));
        }
        attrs.push((a.hourly_read_limit, Value::Long(i64::from(limit))));
        self.store.set_entity(uid, attrs, parents, true);
        uid
    }

    fn put_session(&mut self, fast: &Fast, id: &str) -> Option<Session> {
        let s = self.records.call_sessions.get(id)?.clone();
        let uid = self.store.intern_uid("CallSession", id);
        let a = &fast.attrs;
        let volunteer = self.store.intern_uid("Volunteer", &s.volunteer);
        let members = s
            .members
            .iter()
            .map(|m| Value::Entity(self.store.intern_uid("Member", m)))
            .collect();
        let mut attrs = vec![
            (a.volunteer, Value::Entity(volunteer)),
            (a.members, Value::set(members)),
            (a.opens, time(s.opens)),
            (a.closes, time(s.closes)),
        ];
        if let Some(c) = &s.campaign {
            let c = self.put_campaign(fast, c, true);
            attrs.push((a.campaign, Value::Entity(c)));
        }
        if let Some(r) = &s.office {
            let r = self.put_region(r, true);
            attrs.push((a.office, Value::Entity(r)));
        }
        self.store.set_entity(uid, attrs, Vec::new(), true);
        Some(Session { uid, volunteer })
    }
}

/// The records with one principal replaced: for checking an update before making it.
struct WithPrincipal<'a> {
    base: &'a Membership,
    id: &'a PrincipalId,
    record: PrincipalRecord<'a>,
}

impl Directory for WithPrincipal<'_> {
    fn principal(&self, id: &PrincipalId) -> Option<PrincipalRecord<'_>> {
        if id == self.id {
            Some(self.record)
        } else {
            self.base.principal(id)
        }
    }
    fn member(&self, id: &str) -> Option<&Member> {
        self.base.member(id)
    }
    fn clp(&self, id: &str) -> Option<&crate::model::Clp> {
        self.base.clp(id)
    }
    fn region(&self, id: &str) -> Option<&crate::model::Region> {
        self.base.region(id)
    }
    fn election(&self, id: &str) -> Option<&Election> {
        self.base.election(id)
    }
    fn candidate(&self, id: &str) -> Option<&crate::model::Candidate> {
        self.base.candidate(id)
    }
    fn campaign(&self, id: &str) -> Option<&crate::model::Campaign> {
        self.base.campaign(id)
    }
    fn call_session(&self, id: &str) -> Option<&crate::model::CallSession> {
        self.base.call_session(id)
    }
}

fn record_kind(record: PrincipalRecord<'_>) -> PrincipalKind {
    match record {
        PrincipalRecord::Staff(_) => PrincipalKind::Staff,
        PrincipalRecord::CampaignStaff(_) => PrincipalKind::CampaignStaff,
        PrincipalRecord::Volunteer(_) => PrincipalKind::Volunteer,
        PrincipalRecord::Officer(_) => PrincipalKind::Officer,
        PrincipalRecord::Representative(_) => PrincipalKind::Representative,
        PrincipalRecord::Processor(_) => PrincipalKind::Processor,
    }
}

fn no_compiled() -> RequestError {
    RequestError::Invalid("the engine's policies could not be compiled".into())
}

/// Puts `record` under `id` in `m`; returns its principal id.
fn set_principal(m: &mut Membership, id: &str, record: PrincipalRecord<'_>) -> PrincipalId {
    let key = id.to_string();
    let kind = match record {
        PrincipalRecord::Staff(r) => {
            m.staff.insert(key, r.clone());
            PrincipalKind::Staff
        }
        PrincipalRecord::CampaignStaff(r) => {
            m.campaign_staff.insert(key, r.clone());
            PrincipalKind::CampaignStaff
        }
        PrincipalRecord::Volunteer(r) => {
            m.volunteers.insert(key, r.clone());
            PrincipalKind::Volunteer
        }
        PrincipalRecord::Officer(r) => {
            m.officers.insert(key, r.clone());
            PrincipalKind::Officer
        }
        PrincipalRecord::Representative(r) => {
            m.representatives.insert(key, r.clone());
            PrincipalKind::Representative
        }
        PrincipalRecord::Processor(r) => {
            m.processors.insert(key, r.clone());
            PrincipalKind::Processor
        }
    };
    PrincipalId::new(kind, id)
}

/// A resolved request, before the member.
struct Prepared<'s> {
    query: Query<'s>,
    kind: PrincipalKind,
}

/// The decisions on every catalogue field of one member, with the policies that decided
/// each: [`Engine::field_decisions_in`] and [`Engine::field_decisions_page_in`]. The
/// policy ids are borrowed from the engine.
///
/// # Example
/// ```
/// use membergate::{sample, Action, Context, Engine, PrincipalId, PrincipalKind, Request};
///
/// let engine = Engine::from_dir("policies")?;
/// let party = sample::bundled();
/// let store = engine.store(&party)?;
/// let dpo = PrincipalId::new(PrincipalKind::Staff, sample::ids::S_DPO);
/// let ctx = Context::at("2024-05-01T09:00:00Z".parse()?).reason("a subject access complaint");
/// let member = sample::ids::MEMBER_ELIGIBLE;
/// let decisions = engine.field_decisions_in(&store, &dpo, Action::Read, member, &ctx)?;
///
/// // Each field as `authorize` decides it alone.
/// for (field, info) in engine.catalogue().iter() {
///     let req = Request::new(dpo.clone(), Action::Read, member, &info.name, ctx.clone());
///     let decision = engine.authorize(&party, &req)?;
///     assert_eq!(decisions.granted().contains(field), decision.is_allowed());
///     assert_eq!(decisions.policies(field), decision.policies());
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldDecisions<'e> {
    granted: FieldSet,
    /// Each determining policy once, sorted by id, with the fields it decided.
    deciding: Vec<(&'e str, u64)>,
}

impl<'e> FieldDecisions<'e> {
    /// Sorts `deciding` by policy id and merges the fields of each policy.
    fn new(granted: FieldSet, mut deciding: Vec<(&'e str, u64)>) -> FieldDecisions<'e> {
        deciding.sort_unstable_by(|a, b| a.0.cmp(b.0));
        deciding.dedup_by(|next, kept| {
            let same = next.0 == kept.0;
            if same {
                kept.1 |= next.1;
            }
            same
        });
        FieldDecisions { granted, deciding }
    }

    /// The fields allowed: [`Engine::permitted_fields_in`].
    ///
    /// # Example
    /// ```
    /// use membergate::{sample, Action, Context, Engine, PrincipalId, PrincipalKind};
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let store = engine.store(&sample::bundled())?;
    /// let team = PrincipalId::new(PrincipalKind::Staff, sample::ids::S_MEMBERSHIP);
    /// let ctx = Context::at("2024-05-01T09:00:00Z".parse()?);
    /// let member = sample::ids::MEMBER_LEFT_2009;
    /// let decisions = engine.field_decisions_in(&store, &team, Action::Read, member, &ctx)?;
    /// assert_eq!(decisions.granted(), engine.permitted_fields_in(&store, &team, Action::Read, member, &ctx)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn granted(&self) -> FieldSet {
        self.granted
    }

    /// The ids of the policies that decided `field`, sorted, as
    /// [`Decision::policies`] gives them for the field alone: the forbids that held if
    /// any did, else the permits that held (none when nothing permitted). Empty for a
    /// field not in the engine's catalogue.
    ///
    /// # Example
    /// ```
    /// use membergate::{sample, Action, Context, Engine, PrincipalId, PrincipalKind};
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let store = engine.store(&sample::bundled())?;
    /// let resigned = PrincipalId::new(PrincipalKind::Representative, sample::ids::MP_RESIGNED);
    /// let ctx = Context::at("2019-02-19T09:00:00Z".parse()?);
    /// let decisions = engine.field_decisions_in(&store, &resigned, Action::Read, sample::ids::MEMBER_OTHER_CLP, &ctx)?;
    /// let phone = engine.catalogue().id("phone").ok_or("no phone field")?;
    /// assert!(!decisions.granted().contains(phone));
    /// assert_eq!(decisions.policies(phone), ["role-ended"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn policies(&self, field: FieldId) -> Vec<&'e str> {
        let bit = FieldSet::EMPTY.with(field).bits();
        self.deciding
            .iter()
            .filter(|(_, fields)| fields & bit != 0)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The ids of the policies that decided any field, sorted and deduplicated: the
    /// union of [`FieldDecisions::policies`] over the catalogue, for a decision record
    /// ([`crate::audit::DecisionRecord::for_field_decisions`]).
    ///
    /// # Example
    /// ```
    /// use membergate::{sample, Action, Context, Engine, PrincipalId, PrincipalKind};
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let store = engine.store(&sample::bundled())?;
    /// let staffer = PrincipalId::new(PrincipalKind::CampaignStaff, sample::ids::CS_A_STAFF);
    /// let ctx = Context::at("2020-03-01T12:00:00Z".parse()?).election(sample::ids::LEADER_2020);
    /// let decisions = engine.field_decisions_in(&store, &staffer, Action::Read, sample::ids::MEMBER_ELIGIBLE, &ctx)?;
    /// let all = decisions.all_policies();
    /// for (field, _) in engine.catalogue().iter() {
    ///     assert!(decisions.policies(field).iter().all(|id| all.contains(id)));
    /// }
    /// assert!(all.windows(2).all(|w| w[0] < w[1]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn all_policies(&self) -> Vec<&'e str> {
        self.deciding.iter().map(|(id, _)| *id).collect()
    }
}

impl Engine {
    /// Converts every record of `membership` once into an [`EntityStore`] for the
    /// compiled-path requests ([`Engine::authorize_in`] and the like).
    ///
    /// # Errors
    /// The first record that the reference path would refuse in a request (principals,
    /// then members, then call sessions): a reference to a missing record, a former
    /// member without the date they left, a processor contract naming an unknown field.
    ///
    /// # Example
    /// See [`EntityStore`].
    pub fn store(&self, membership: &Membership) -> Result<EntityStore, RequestError> {
        let fast = self.fast_index().ok_or_else(no_compiled)?;
        let mut es = EntityStore {
            store: fast.base.clone(),
            records: membership.clone(),
            members: FxMap::default(),
            principals: vec![FxMap::default(); PrincipalKind::ALL.len()],
            elections: FxMap::default(),
            sessions: FxMap::default(),
        };
        let mut check = Slice::new(self.catalogue());
        let ids: Vec<PrincipalId> = PrincipalKind::ALL
            .iter()
            .flat_map(|k| {
                let keys: Vec<&String> = match k {
                    PrincipalKind::Staff => membership.staff.keys().collect(),
                    PrincipalKind::CampaignStaff => membership.campaign_staff.keys().collect(),
                    PrincipalKind::Volunteer => membership.volunteers.keys().collect(),
                    PrincipalKind::Officer => membership.officers.keys().collect(),
                    PrincipalKind::Representative => membership.representatives.keys().collect(),
                    PrincipalKind::Processor => membership.processors.keys().collect(),
                };
                keys.into_iter()
                    .map(move |id| PrincipalId::new(*k, id.clone()))
            })
            .collect();
        for pid in &ids {
            check.principal(membership, pid)?;
            let uid = es.put_principal(fast, pid);
            if let Some(m) = es.principals.get_mut(kind_index(pid.kind)) {
                m.insert(pid.id.as_str().into(), uid);
            }
        }
        for id in membership.members.keys() {
            check.member(membership, id)?;
            let uid = es.put_member(fast, id, false);
            es.members.insert(id.as_str().into(), uid);
        }
        for id in membership.elections.keys() {
            let uid = es.put_election(fast, id, false);
            es.elections.insert(id.as_str().into(), uid);
        }
        for id in membership.call_sessions.keys() {
            let ctx = Context {
                session: Some(id.clone()),
                ..Context::at(Timestamp::UNIX_EPOCH)
            };
            check.context(membership, &ctx)?;
            if let Some(s) = es.put_session(fast, id) {
                es.sessions.insert(id.as_str().into(), s);
            }
        }
        es.store.close();
        Ok(es)
    }

    /// [`Engine::authorize`] on the compiled path, reading the records from `store`:
    /// the same [`Decision`] (effect, policies, errors, flags) as the reference.
    ///
    /// # Errors
    /// As [`Engine::authorize`] (unknown principal, member, field, election or call
    /// session), or if `store` was built by another engine.
    ///
    /// # Example
    /// ```
    /// use membergate::{sample, Action, Context, Engine, PrincipalId, PrincipalKind, Request};
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let party = sample::bundled();
    /// let store = engine.store(&party)?;
    /// let resigned = PrincipalId::new(PrincipalKind::Representative, sample::ids::MP_RESIGNED);
    /// let req = Request::new(resigned, Action::Read, sample::ids::MEMBER_OTHER_CLP, "phone",
    ///     Context::at("2019-02-19T09:00:00Z".parse()?));
    /// let decision = engine.authorize_in(&store, &req)?;
    /// assert_eq!(decision.policies(), ["role-ended"]);
    /// assert!(engine.authorize_in(&store, &Request { member: "m-nobody".into(), ..req }).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn authorize_in(
        &self,
        store: &EntityStore,
        req: &Request,
    ) -> Result<Decision, RequestError> {
        let Some(fast) = self.usable(store)? else {
            return self.authorize(&store.records, req);
        };
        let field = self
            .catalogue()
            .id(&req.field)
            .ok_or_else(|| RequestError::UnknownField(req.field.clone()))?;
        let (principal, kind) = store.principal(&req.principal)?;
        let member = store.member(&req.member)?;
        let mut p = self.prepare_in(fast, store, principal, kind, req.action, &req.context)?;
        let q = &mut p.query;
        q.resource = member;
        q.field = fast
            .field_uids
            .get(field.index())
            .map(|u| (fast.attrs.field, *u));
        let Some(bucket) = fast.bucket(req.action, p.kind) else {
            return self.authorize(&store.records, req);
        };
        let mut permits: Vec<u32> = Vec::new();
        let mut forbids: Vec<u32> = Vec::new();
        let mut errored = false;
        let mut decide = |i: u32, q: &Query<'_>| {
            let Some(rule) = fast.rule(i) else { return };
            let mut ok = true;
            for c in &rule.conjuncts {
                match truth(&c.expr, q) {
                    Some(true) => {}
                    Some(false) => {
                        ok = false;
                        break;
                    }
                    None => {
                        errored = true;
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                if rule.forbid {
                    forbids.push(i);
                } else {
                    permits.push(i);
                }
            }
        };
        for i in &bucket.open {
            decide(*i, q);
        }
        for_each_scoped(store, bucket, principal, member, |i| decide(i, q));
        if errored {
            // Cedar's error messages come from Cedar: the reference path gives them.
            return self.authorize(&store.records, req);
        }
        let (effect, determining) = if !forbids.is_empty() {
            (Effect::Deny, forbids)
        } else if !permits.is_empty() {
            (Effect::Allow, permits)
        } else {
            (Effect::Deny, Vec::new())
        };
        let mut policies: Vec<String> = Vec::with_capacity(determining.len());
        let mut flags: Vec<String> = Vec::new();
        for i in determining {
            if let Some(m) = fast.meta.get(i as usize) {
                policies.push(m.id.clone());
                if let Some(f) = &m.flag {
                    flags.push(f.clone());
                }
            }
        }
        policies.sort();
        flags.sort();
        flags.dedup();
        Ok(Decision::new(effect, policies, Vec::new(), flags))
    }

    /// [`Engine::permitted_fields`] on the compiled path: every field of the member in
    /// one pass.
    ///
    /// # Errors
    /// As [`Engine::authorize_in`].
    ///
    /// # Example
    /// ```
    /// use membergate::{sample, Action, Context, Engine, PrincipalId};
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let party = sample::bundled();
    /// let store = engine.store(&party)?;
    /// let staffer: PrincipalId = format!("CampaignStaff::{:?}", sample::ids::CS_A_STAFF).parse()?;
    /// let ctx = Context::at("2020-03-01T12:00:00Z".parse()?).election(sample::ids::LEADER_2020);
    /// let fields = engine.permitted_fields_in(&store, &staffer, Action::Read, sample::ids::MEMBER_ELIGIBLE, &ctx)?;
    /// assert_eq!(fields, engine.permitted_fields(&party, &staffer, Action::Read, sample::ids::MEMBER_ELIGIBLE, &ctx)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn permitted_fields_in(
        &self,
        store: &EntityStore,
        principal: &PrincipalId,
        action: Action,
        member: &str,
        ctx: &Context,
    ) -> Result<FieldSet, RequestError> {
        let mut out = FieldSet::EMPTY;
        self.fields_pass(store, principal, action, &[member], ctx, |_, s| out = s)?;
        Ok(out)
    }

    /// [`Engine::permitted_fields_page`] on the compiled path: the same sets, in the
    /// order given.
    ///
    /// # Errors
    /// As [`Engine::permitted_fields_page`].
    ///
    /// # Example
    /// ```
    /// use membergate::{sample, Action, Context, Engine, PrincipalId, PrincipalKind};
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let party = sample::bundled();
    /// let store = engine.store(&party)?;
    /// let team = PrincipalId::new(PrincipalKind::Staff, sample::ids::S_MEMBERSHIP);
    /// let page: Vec<&str> = party.members.keys().take(100).map(String::as_str).collect();
    /// let ctx = Context::at("2024-05-01T09:00:00Z".parse()?);
    /// let sets = engine.permitted_fields_page_in(&store, &team, Action::Read, &page, &ctx)?;
    /// assert_eq!(sets, engine.permitted_fields_page(&party, &team, Action::Read, &page, &ctx)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn permitted_fields_page_in(
        &self,
        store: &EntityStore,
        principal: &PrincipalId,
        action: Action,
        members: &[&str],
        ctx: &Context,
    ) -> Result<Vec<FieldSet>, RequestError> {
        let mut out = Vec::with_capacity(members.len());
        self.fields_pass(store, principal, action, members, ctx, |_, s| out.push(s))?;
        Ok(out)
    }

    /// [`Engine::permitted_fields_in`] with the policies that decided each field: for
    /// every catalogue field, the effect and [`Decision::policies`] that
    /// [`Engine::authorize`] gives for that field alone, in one pass over the member
    /// (for a decision log that names the policies).
    ///
    /// # Errors
    /// As [`Engine::permitted_fields_in`].
    ///
    /// # Example
    /// ```
    /// use membergate::{sample, Action, Context, Engine, PrincipalId, PrincipalKind, Request};
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let party = sample::bundled();
    /// let store = engine.store(&party)?;
    /// let staffer = PrincipalId::new(PrincipalKind::CampaignStaff, sample::ids::CS_A_STAFF);
    /// let ctx = Context::at("2020-03-01T12:00:00Z".parse()?).election(sample::ids::LEADER_2020);
    /// let member = sample::ids::MEMBER_ELIGIBLE;
    /// let decisions = engine.field_decisions_in(&store, &staffer, Action::Read, member, &ctx)?;
    /// assert_eq!(decisions.granted(), engine.permitted_fields_in(&store, &staffer, Action::Read, member, &ctx)?);
    /// let phone = engine.catalogue().id("phone").ok_or("no phone field")?;
    /// let req = Request::new(staffer.clone(), Action::Read, member, "phone", ctx.clone());
    /// assert_eq!(decisions.policies(phone), engine.authorize(&party, &req)?.policies());
    /// assert!(engine.field_decisions_in(&store, &staffer, Action::Read, "m-nobody", &ctx).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn field_decisions_in<'e>(
        &'e self,
        store: &EntityStore,
        principal: &PrincipalId,
        action: Action,
        member: &str,
        ctx: &Context,
    ) -> Result<FieldDecisions<'e>, RequestError> {
        let mut out = FieldDecisions::default();
        self.decisions_pass(store, principal, action, &[member], ctx, |d| out = d)?;
        Ok(out)
    }

    /// [`Engine::field_decisions_in`] for a page of members, in the order given: the
    /// principal and the context are resolved, and what does not read the member
    /// evaluated, once for the page.
    ///
    /// # Errors
    /// As [`Engine::permitted_fields_page_in`]: an unknown member fails the whole page.
    ///
    /// # Example
    /// ```
    /// use membergate::{sample, Action, Context, Engine, PrincipalId, PrincipalKind};
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let party = sample::bundled();
    /// let store = engine.store(&party)?;
    /// let team = PrincipalId::new(PrincipalKind::Staff, sample::ids::S_MEMBERSHIP);
    /// let page: Vec<&str> = party.members.keys().take(100).map(String::as_str).collect();
    /// let ctx = Context::at("2024-05-01T09:00:00Z".parse()?);
    /// let decisions = engine.field_decisions_page_in(&store, &team, Action::Read, &page, &ctx)?;
    /// let sets = engine.permitted_fields_page_in(&store, &team, Action::Read, &page, &ctx)?;
    /// assert!(decisions.iter().map(|d| d.granted()).eq(sets));
    /// assert_eq!(decisions[7], engine.field_decisions_in(&store, &team, Action::Read, page[7], &ctx)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn field_decisions_page_in<'e>(
        &'e self,
        store: &EntityStore,
        principal: &PrincipalId,
        action: Action,
        members: &[&str],
        ctx: &Context,
    ) -> Result<Vec<FieldDecisions<'e>>, RequestError> {
        let mut out = Vec::with_capacity(members.len());
        self.decisions_pass(store, principal, action, members, ctx, |d| out.push(d))?;
        Ok(out)
    }

    /// The compiled index, if the store is this engine's; `Ok(None)` when the policies
    /// need the reference path (some fall back to Cedar).
    fn usable<'a>(&'a self, store: &EntityStore) -> Result<Option<&'a Fast>, RequestError> {
        let Some(fast) = self.fast_index() else {
            return Ok(None);
        };
        store.owned_by(fast)?;
        Ok(fast.compiled.fallbacks().is_empty().then_some(fast))
    }

    fn prepare_in<'s>(
        &self,
        fast: &Fast,
        store: &'s EntityStore,
        principal: u32,
        kind: PrincipalKind,
        action: Action,
        ctx: &Context,
    ) -> Result<Prepared<'s>, RequestError> {
        let a = &fast.attrs;
        let mut pairs = Vec::with_capacity(6);
        pairs.push((a.now, time(ctx.now)));
        pairs.push((
            a.reads_this_hour,
            Value::Long(i64::try_from(ctx.reads_this_hour).unwrap_or(i64::MAX)),
        ));
        if let Some(e) = &ctx.election {
            let uid = store
                .elections
                .get(e.as_str())
                .ok_or_else(|| RequestError::UnknownElection(e.clone()))?;
            pairs.push((a.election, Value::Entity(*uid)));
        }
        let mut hidden = None;
        if let Some(s) = &ctx.session {
            let session = store
                .sessions
                .get(s.as_str())
                .ok_or_else(|| RequestError::UnknownSession(s.clone()))?;
            pairs.push((a.session, Value::Entity(session.uid)));
            // The reference path does not hold the session's volunteer unless it is the
            // principal: the volunteer's attributes are then out of reach.
            if session.volunteer != principal {
                hidden = Some(session.volunteer);
            }
        }
        if let Some(p) = &ctx.purpose {
            pairs.push((a.purpose, Value::String(p.as_str().into())));
        }
        if let Some(r) = &ctx.reason {
            pairs.push((a.reason, Value::String(r.as_str().into())));
        }
        let action_uid = fast
            .action_uids
            .get(action_index(action))
            .copied()
            .unwrap_or(0);
        let mut query = Query::direct(
            &store.store,
            principal,
            action_uid,
            u32::MAX,
            Ctx::Value(Value::record(pairs)),
        );
        query.hidden = hidden;
        Ok(Prepared { query, kind })
    }

    /// The principal's uid and the request prepared for a page on the compiled path (its
    /// resource not yet set), with the reference's errors: an unknown principal, then an
    /// unknown member, then an unknown election or session.
    fn page_query<'s>(
        &self,
        fast: &Fast,
        store: &'s EntityStore,
        principal: &PrincipalId,
        action: Action,
        members: &[&str],
        ctx: &Context,
    ) -> Result<(u32, Prepared<'s>), RequestError> {
        let (puid, kind) = store.principal(principal)?;
        match self.prepare_in(fast, store, puid, kind, action, ctx) {
            Ok(p) => Ok((puid, p)),
            Err(e) => {
                // The reference reports an unknown member before the context.
                for m in members {
                    store.member(m)?;
                }
                Err(e)
            }
        }
    }

    fn fields_pass(
        &self,
        store: &EntityStore,
        principal: &PrincipalId,
        action: Action,
        members: &[&str],
        ctx: &Context,
        mut emit: impl FnMut(usize, FieldSet),
    ) -> Result<(), RequestError> {
        let Some(fast) = self.usable(store)? else {
            let sets =
                self.permitted_fields_page(&store.records, principal, action, members, ctx)?;
            for (i, s) in sets.into_iter().enumerate() {
                emit(i, s);
            }
            return Ok(());
        };
        let (puid, mut p) = self.page_query(fast, store, principal, action, members, ctx)?;
        let all = fast.all;
        let Some(bucket) = fast.bucket(action, p.kind) else {
            return Ok(());
        };
        // Page level: what does not read the member.
        let (mut p0, mut f0) = (0u64, 0u64);
        with_page_list(|list| {
            let q = &mut p.query;
            page_pass(
                fast,
                store,
                bucket,
                puid,
                q,
                |_, forbid, m| {
                    if forbid {
                        f0 |= m;
                    } else {
                        p0 |= m;
                    }
                },
                |i, m| list.push((i, m)),
            );
            let scoped = !bucket.resource_eq.is_empty() || !bucket.resource_in.is_empty();
            for (n, m) in members.iter().enumerate() {
                let muid = store.member(m)?;
                q.resource = muid;
                let (mut p, mut f) = (p0, f0);
                for (i, mask) in list.iter() {
                    let Some(rule) = fast.rule(*i) else { continue };
                    if rule.forbid {
                        continue;
                    }
                    let want = mask & !p;
                    if want != 0 {
                        p |= member_pass(fast, rule, q, want, true);
                    }
                }
                if scoped {
                    for_each_resource(store, bucket, muid, |i| {
                        if let Some(rule) = fast.rule(i) {
                            if !rule.forbid && all & !p != 0 {
                                p |= member_pass(fast, rule, q, all & !p, false);
                            }
                        }
                    });
                }
                for (i, mask) in list.iter() {
                    let Some(rule) = fast.rule(*i) else { continue };
                    if !rule.forbid {
                        continue;
                    }
                    let want = mask & p & !f;
                    if want != 0 {
                        f |= member_pass(fast, rule, q, want, true);
                    }
                }
                if scoped {
                    for_each_resource(store, bucket, muid, |i| {
                        if let Some(rule) = fast.rule(i) {
                            if rule.forbid && p & !f != 0 {
                                f |= member_pass(fast, rule, q, p & !f, false);
                            }
                        }
                    });
                }
                emit(n, FieldSet::from_bits(p & !f));
            }
            Ok(())
        })
    }
}

impl Engine {
    /// [`Engine::fields_pass`] for [`FieldDecisions`]: every policy that can apply is
    /// evaluated on every field (no field is settled early), and the ones that held kept
    /// with their fields. A policy whose evaluation fails holds on no field, as Cedar
    /// skips it.
    fn decisions_pass<'e>(
        &'e self,
        store: &EntityStore,
        principal: &PrincipalId,
        action: Action,
        members: &[&str],
        ctx: &Context,
        mut emit: impl FnMut(FieldDecisions<'e>),
    ) -> Result<(), RequestError> {
        let compiled = match self.usable(store)? {
            Some(fast) => {
                let (puid, p) = self.page_query(fast, store, principal, action, members, ctx)?;
                fast.bucket(action, p.kind).map(|b| (fast, b, puid, p))
            }
            None => None,
        };
        let Some((fast, bucket, puid, mut p)) = compiled else {
            return self.decisions_reference(&store.records, principal, action, members, ctx, emit);
        };
        let q = &mut p.query;
        // `(policy, forbid, fields on which it held)`: first the policies settled for the
        // whole page, then the member's.
        let mut held: Vec<(u32, bool, u64)> = Vec::new();
        with_page_list(|list| {
            page_pass(
                fast,
                store,
                bucket,
                puid,
                q,
                |i, forbid, m| held.push((i, forbid, m)),
                |i, m| list.push((i, m)),
            );
            let whole = held.len();
            for m in members {
                let muid = store.member(m)?;
                q.resource = muid;
                held.truncate(whole);
                for (i, mask) in list.iter() {
                    if let Some(rule) = fast.rule(*i) {
                        let m = member_pass(fast, rule, q, *mask, true);
                        if m != 0 {
                            held.push((*i, rule.forbid, m));
                        }
                    }
                }
                for_each_resource(store, bucket, muid, |i| {
                    if let Some(rule) = fast.rule(i) {
                        let m = member_pass(fast, rule, q, fast.all, false);
                        if m != 0 {
                            held.push((i, rule.forbid, m));
                        }
                    }
                });
                emit(fast.decisions(&held));
            }
            Ok(())
        })
    }

    /// [`Engine::decisions_pass`] on the reference path: one Cedar decision per field.
    fn decisions_reference<'e>(
        &'e self,
        dir: &Membership,
        principal: &PrincipalId,
        action: Action,
        members: &[&str],
        ctx: &Context,
        mut emit: impl FnMut(FieldDecisions<'e>),
    ) -> Result<(), RequestError> {
        let mut page: Vec<(FieldSet, Vec<(&'e str, u64)>)> =
            vec![(FieldSet::EMPTY, Vec::new()); members.len()];
        self.page_responses(
            dir,
            principal,
            action,
            members,
            ctx,
            |n, field, response| {
                let Some((granted, deciding)) = page.get_mut(n) else {
                    return;
                };
                if response.decision() == cedar_policy::Decision::Allow {
                    *granted = granted.with(field);
                }
                let bit = FieldSet::EMPTY.with(field).bits();
                deciding.extend(
                    response
                        .diagnostics()
                        .reason()
                        .filter_map(|id| self.policy_id(id))
                        .map(|id| (id, bit)),
                );
            },
        )?;
        for (granted, deciding) in page {
            emit(FieldDecisions::new(granted, deciding));
        }
        Ok(())
    }
}

thread_local! {
    /// The per-page list of policies that read the member, reused between pages.
    static PAGE: std::cell::Cell<Vec<(u32, u64)>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` on this thread's page list, emptied: the list's memory is kept for the next
/// page.
fn with_page_list<T>(f: impl FnOnce(&mut Vec<(u32, u64)>) -> T) -> T {
    PAGE.with(|cell| {
        let mut list = cell.take();
        list.clear();
        let out = f(&mut list);
        cell.set(list);
        out
    })
}

/// The fields among `want` on which every conjunct of `rule` holds (only those that read
/// the member if `member_only`, the others having been folded into `want`).
#[inline]
fn member_pass(fast: &Fast, rule: &Rule, q: &mut Query<'_>, want: u64, member_only: bool) -> u64 {
    let mut alive = want;
    for c in &rule.conjuncts {
        if member_only && !c.resource {
            continue;
        }
        alive &= fast.holds(c, q);
        if alive == 0 {
            break;
        }
    }
    alive
}

/// Evaluates once for a page, on every field, the conjuncts that do not read the member
/// of the bucket's policies that apply whatever the member (open, or scoped on the
/// principal). A policy that holds on no field is left out; `whole(i, forbid, fields)`
/// gets one none of whose conjuncts reads the member, with the fields on which it holds;
/// `partial(i, fields)` the others, with the fields on which the conjuncts that do not
/// read the member hold (see [`member_pass`] for the rest).
fn page_pass(
    fast: &Fast,
    store: &EntityStore,
    bucket: &Bucket,
    principal: u32,
    q: &mut Query<'_>,
    mut whole: impl FnMut(u32, bool, u64),
    mut partial: impl FnMut(u32, u64),
) {
    let mut page = |i: u32| {
        let Some(rule) = fast.rule(i) else { return };
        let mut m = fast.all;
        let mut per_member = false;
        for c in &rule.conjuncts {
            if c.resource {
                per_member = true;
                continue;
            }
            m &= fast.holds(c, q);
            if m == 0 {
                return;
            }
        }
        if per_member {
            partial(i, m);
        } else {
            whole(i, rule.forbid, m);
        }
    };
    bucket.open.iter().for_each(|i| page(*i));
    for_each_principal(store, bucket, principal, page);
}

/// Calls `f` on each policy indexed under the principal's or the member's scope entities.
fn for_each_scoped(
    store: &EntityStore,
    bucket: &Bucket,
    principal: u32,
    member: u32,
    mut f: impl FnMut(u32),
) {
    for_each_principal(store, bucket, principal, &mut f);
    for_each_resource(store, bucket, member, f);
}

/// Calls `f` on each policy indexed under the principal's scope entities.
fn for_each_principal(
    store: &EntityStore,
    bucket: &Bucket,
    principal: u32,
    mut f: impl FnMut(u32),
) {
    if let Some(l) = bucket.principal_eq.get(&principal) {
        l.iter().for_each(|i| f(*i));
    }
    if !bucket.principal_in.is_empty() {
        let anc = store.store.entity_ancestors(principal);
        for e in std::iter::once(&principal).chain(anc.iter()) {
            if let Some(l) = bucket.principal_in.get(e) {
                l.iter().for_each(|i| f(*i));
            }
        }
    }
}

fn for_each_resource(store: &EntityStore, bucket: &Bucket, member: u32, mut f: impl FnMut(u32)) {
    if let Some(l) = bucket.resource_eq.get(&member) {
        l.iter().for_each(|i| f(*i));
    }
    if !bucket.resource_in.is_empty() {
        let anc = store.store.entity_ancestors(member);
        for e in std::iter::once(&member).chain(anc.iter()) {
            if let Some(l) = bucket.resource_in.get(e) {
                l.iter().for_each(|i| f(*i));
            }
        }
    }
}

impl EntityStore {
    fn principal(&self, id: &PrincipalId) -> Result<(u32, PrincipalKind), RequestError> {
        self.principals
            .get(kind_index(id.kind))
            .and_then(|m| m.get(id.id.as_str()))
            .map(|u| (*u, id.kind))
            .ok_or_else(|| RequestError::UnknownPrincipal(id.to_string()))
    }

    #[inline]
    fn member(&self, id: &str) -> Result<u32, RequestError> {
        self.members
            .get(id)
            .copied()
            .ok_or_else(|| RequestError::UnknownMember(id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference fallback of `field_decisions_*` (taken when some policies fall back
    /// to Cedar, which the bundled ones never do) answers as the compiled pass.
    #[test]
    fn decisions_reference_matches_the_compiled_pass() {
        use crate::sample::{self, ids};
        let engine = Engine::from_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/policies")).unwrap();
        let party = sample::bundled();
        let store = engine.store(&party).unwrap();
        let mut page: Vec<&str> = party
            .members
            .keys()
            .step_by(1_499)
            .map(String::as_str)
            .collect();
        page.extend([
            ids::MEMBER_ELIGIBLE,
            ids::MEMBER_OTHER_CLP,
            ids::MEMBER_LEFT_2023,
        ]);
        let at = |t: &str| Context::at(t.parse().unwrap());
        let contexts = [
            at("2019-02-19T09:00:00Z"),
            at("2020-03-01T12:00:00Z").election(ids::LEADER_2020),
            at("2020-02-20T18:00:00Z").session(ids::SESSION_A),
            at("2024-05-01T09:00:00Z").reason("a subject access complaint"),
        ];
        let people = [
            PrincipalId::new(PrincipalKind::CampaignStaff, ids::CS_A_STAFF),
            PrincipalId::new(PrincipalKind::Staff, ids::S_DPO),
            PrincipalId::new(PrincipalKind::Staff, ids::S_MEMBERSHIP),
            PrincipalId::new(PrincipalKind::Volunteer, ids::V_PHONEBANK),
            PrincipalId::new(PrincipalKind::Officer, ids::O_SECRETARY_001),
            PrincipalId::new(PrincipalKind::Representative, ids::MP_RESIGNED),
            PrincipalId::new(PrincipalKind::Processor, ids::P_MAILING),
        ];
        let (mut permits, mut forbids) = (0, 0);
        for p in &people {
            for action in Action::ALL {
                for ctx in &contexts {
                    let compiled = engine.field_decisions_page_in(&store, p, action, &page, ctx);
                    let mut reference = Vec::new();
                    let done = engine
                        .decisions_reference(&party, p, action, &page, ctx, |d| reference.push(d));
                    assert_eq!(compiled, done.map(|()| reference), "{p} {action} {ctx:?}");
                    for d in compiled.unwrap() {
                        for (field, _) in engine.catalogue().iter() {
                            match (d.granted().contains(field), d.policies(field).is_empty()) {
                                (true, false) => permits += 1,
                                (false, false) => forbids += 1,
                                _ => {}
                            }
                        }
                    }
                }
            }
        }
        assert!(
            permits > 1_000 && forbids > 1_000,
            "{permits} permitted, {forbids} forbidden"
        );
        // The errors too.
        let p = &people[0];
        let bad_page = [ids::MEMBER_ELIGIBLE, "m-nobody"];
        for ctx in [
            contexts[0].clone(),
            contexts[0].clone().election("election-nobody"),
        ] {
            let mut reference = Vec::new();
            let done = engine.decisions_reference(&party, p, Action::Read, &bad_page, &ctx, |d| {
                reference.push(d)
            });
            assert!(done.is_err());
            assert_eq!(
                engine.field_decisions_page_in(&store, p, Action::Read, &bad_page, &ctx),
                done.map(|()| reference)
            );
        }
    }

    #[test]
    fn indexes_follow_the_all_arrays() {
        for (i, a) in Action::ALL.into_iter().enumerate() {
            assert_eq!(action_index(a), i, "{a}");
        }
        for (i, k) in PrincipalKind::ALL.into_iter().enumerate() {
            assert_eq!(kind_index(k), i, "{k:?}");
        }
    }
}
