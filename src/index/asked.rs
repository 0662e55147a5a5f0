//! A request resolved against a directory ([`Asked`]) and the passes that decide it:
//! one field, every field of a page of members, each policy's part.

use std::cell::OnceCell;

use cedar_compiled::lowlevel::Expr;
use cedar_compiled::{Ctx, Query, Store, Value};
use smallvec::SmallVec;

use super::check::{Check, Cond, Leaf};
use super::{truth, Bucket, Conj, ContextValues, Index, PrincipalRules, Rule, Subject};
use crate::entities::{millis, Attr};
use crate::error::RequestError;
use crate::fields::FieldSet;
use crate::records::PrincipalKind;
use crate::request::{Action, Context};

/// A request's context as the compiled evaluator reads it: `(attribute id, value)`
/// pairs sorted by attribute id, on the stack (the field asked for is given apart).
pub(crate) struct ContextPairs {
    pairs: [(u32, Value); 6],
    len: usize,
}

impl ContextPairs {
    fn as_slice(&self) -> &[(u32, Value)] {
        self.pairs.get(..self.len).unwrap_or(&[])
    }
}

/// A request resolved against a directory: who, what, when; the member comes apart.
pub(crate) struct Asked<'a> {
    pub(super) index: &'a Index,
    pub(super) store: &'a Store,
    principal: u32,
    action: u32,
    pub(super) plan: &'a PrincipalRules,
    /// For the policies scoped on the member.
    pub(super) bucket: Option<&'a Bucket>,
    context: &'a Context,
    /// The uids of the context's election and call session.
    uids: (Option<u32>, Option<u32>),
    /// The context as checks read it.
    pub(super) values: ContextValues,
    /// The context as the compiled evaluator reads it, written on first use.
    pairs: OnceCell<ContextPairs>,
}

/// The policies that held for one field so far, and whether one failed to evaluate.
#[derive(Default)]
struct Tally {
    permits: SmallVec<[u32; 4]>,
    forbids: SmallVec<[u32; 4]>,
    errored: bool,
}

/// The policies that held for one field: their indices, and whether forbids decided.
pub(crate) struct Held {
    pub(crate) forbid: bool,
    pub(crate) policies: SmallVec<[u32; 4]>,
}

impl Index {
    /// The context's pairs, with the uids of its election and session.
    fn context(
        &self,
        ctx: &Context,
        (election, session): (Option<u32>, Option<u32>),
    ) -> ContextPairs {
        let mut pairs: [(u32, Value); 6] = std::array::from_fn(|_| (0, Value::Bool(false)));
        let mut len = 0;
        let mut push = |a: Attr, v: Value| {
            if let Some(slot) = pairs.get_mut(len) {
                *slot = (self.attr(a), v);
                len += 1;
            }
        };
        push(Attr::Now, Value::DateTime(millis(ctx.now)));
        push(
            Attr::ReadsThisHour,
            Value::Long(i64::try_from(ctx.reads_this_hour).unwrap_or(i64::MAX)),
        );
        if let Some(e) = election {
            push(Attr::Election, Value::Entity(e));
        }
        if let Some(s) = session {
            push(Attr::Session, Value::Entity(s));
        }
        if let Some(p) = &ctx.purpose {
            push(Attr::Purpose, Value::String(p.as_str().into()));
        }
        if let Some(r) = &ctx.reason {
            push(Attr::Reason, Value::String(r.as_str().into()));
        }
        if let Some(used) = pairs.get_mut(..len) {
            used.sort_unstable_by_key(|(a, _)| *a);
        }
        ContextPairs { pairs, len }
    }

    /// Who asks what, when: `plan` is the principal's [`Index::plan`] for `action`,
    /// `uids` those of the context's election and call session.
    pub(crate) fn asked<'a>(
        &'a self,
        store: &'a Store,
        (principal, kind): (u32, PrincipalKind),
        (action, plan): (Action, &'a PrincipalRules),
        context: &'a Context,
        uids: (Option<u32>, Option<u32>),
    ) -> Asked<'a> {
        Asked {
            index: self,
            store,
            principal,
            action: self.action_uid(action),
            plan,
            bucket: self.bucket(action, kind),
            context,
            uids,
            values: ContextValues {
                now: millis(context.now),
                reads: i64::try_from(context.reads_this_hour).unwrap_or(i64::MAX),
                election: uids.0,
                session: uids.1,
                purpose: context.purpose.is_some(),
                reason: context.reason.is_some(),
            },
            pairs: OnceCell::new(),
        }
    }
}

impl<'a> Asked<'a> {
    /// The query the compiled evaluator reads: the context written on first use, the
    /// member's entity too if there is one, and the field if given.
    pub(super) fn query<'q>(
        &'q self,
        subject: Option<&'q Subject<'_>>,
        field: Option<u32>,
    ) -> Query<'q> {
        let pairs = self
            .pairs
            .get_or_init(|| self.index.context(self.context, self.uids));
        let mut q = Query::direct(
            self.store,
            self.principal,
            self.action,
            u32::MAX,
            Ctx::Pairs(pairs.as_slice()),
        );
        if let Some(s) = subject {
            q.resource = s.uid();
            q = q.with_entity(s.uid(), self.index.member_type(), s.entity().view());
        }
        q.field = field.map(|u| (self.index.attr(Attr::Field), u));
        q
    }

    /// `c`, a check that does not read the field (one field's checks are [`Cond`]s):
    /// `None` if it fails to evaluate, as Cedar's `&&`, `||`, `!` and `if` evaluate it.
    fn test(&self, c: &Check, s: Option<&Subject<'_>>) -> Option<bool> {
        match c {
            Check::Const(t, f) => on_bit((*t, *f), self.index.all),
            Check::Leaf(Leaf::Expr { expr, .. }) => self.general(expr, s, None),
            Check::Leaf(l) => self.values.leaf(l, s),
            Check::Not(a) => self.test(a, s).map(|b| !b),
            Check::And(a, b) => match self.test(a, s)? {
                false => Some(false),
                true => self.test(b, s),
            },
            Check::Or(a, b) => match self.test(a, s)? {
                true => Some(true),
                false => self.test(b, s),
            },
            Check::If(c, t, e) => match self.test(c, s)? {
                true => self.test(t, s),
                false => self.test(e, s),
            },
        }
    }

    /// `c` on one field (`(bit, uid)`) of `member`: `None` if it fails to evaluate.
    fn one_field(&self, c: &Cond, member: &Subject<'_>, on: (u64, u32)) -> Option<bool> {
        match c {
            Cond::Const(..) | Cond::Leaf { .. } => self.flat(c, member, on),
            Cond::All(items) | Cond::Any(items) => {
                // `All` goes on while true, `Any` while false; anything else is the result.
                let go_on = matches!(c, Cond::All(_));
                for i in items.iter() {
                    // Atoms here, without a call per atom.
                    let r = match i {
                        Cond::Const(..) | Cond::Leaf { .. } => self.flat(i, member, on),
                        _ => self.one_field(i, member, on),
                    };
                    match r {
                        Some(b) if b == go_on => {}
                        other => return other,
                    }
                }
                Some(go_on)
            }
            Cond::If(b) => {
                let (c, t, e) = &**b;
                match self.one_field(c, member, on)? {
                    true => self.one_field(t, member, on),
                    false => self.one_field(e, member, on),
                }
            }
        }
    }

    /// A [`Cond::Const`] or [`Cond::Leaf`]; `None` for the others (not called on them).
    #[inline(always)]
    fn flat(&self, c: &Cond, member: &Subject<'_>, (bit, uid): (u64, u32)) -> Option<bool> {
        match c {
            Cond::Const(t, f) => on_bit((*t, *f), bit),
            Cond::Leaf { leaf, not } => self.atom(leaf, member, uid).map(|b| b != *not),
            Cond::All(_) | Cond::Any(_) | Cond::If(_) => None,
        }
    }

    /// An atom on the field `uid` of `member`.
    #[inline(always)]
    fn atom(&self, l: &Leaf, member: &Subject<'_>, uid: u32) -> Option<bool> {
        match l {
            Leaf::Expr { expr, .. } => self.general(expr, Some(member), Some(uid)),
            l => self.values.leaf(l, Some(member)),
        }
    }

    /// `e`, for the compiled evaluator (kept out of [`Asked::test`], whose atoms are
    /// read in place).
    #[inline(never)]
    fn general(&self, e: &Expr, s: Option<&Subject<'_>>, field: Option<u32>) -> Option<bool> {
        truth(e, &self.query(s, field))
    }

    /// `(T, F)` of `c` over every field.
    fn masks(&self, c: &Check, s: Option<&Subject<'_>>) -> (u64, u64) {
        let all = self.index.all;
        match c {
            Check::Const(t, f) => (*t, *f),
            Check::Leaf(Leaf::Expr { expr, field: true }) => {
                let (mut t, mut f) = (0u64, 0u64);
                for (i, u) in self.index.field_uids.iter().enumerate() {
                    match truth(expr, &self.query(s, Some(*u))) {
                        Some(true) => t |= 1 << i,
                        Some(false) => f |= 1 << i,
                        None => {}
                    }
                }
                (t, f)
            }
            Check::Leaf(_) => match self.test(c, s) {
                Some(true) => (all, 0),
                Some(false) => (0, all),
                None => (0, 0),
            },
            Check::Not(a) => {
                let (t, f) = self.masks(a, s);
                (f, t)
            }
            Check::And(a, b) => {
                let (ta, fa) = self.masks(a, s);
                if ta == 0 {
                    return (0, fa);
                }
                let (tb, fb) = self.masks(b, s);
                (ta & tb, fa | (ta & fb))
            }
            Check::Or(a, b) => {
                let (ta, fa) = self.masks(a, s);
                if fa == 0 {
                    return (ta, 0);
                }
                let (tb, fb) = self.masks(b, s);
                (ta | (fa & tb), fa & fb)
            }
            Check::If(c, t, e) => {
                let (tc, fc) = self.masks(c, s);
                let (tt, ft) = if tc == 0 { (0, 0) } else { self.masks(t, s) };
                let (te, fe) = if fc == 0 { (0, 0) } else { self.masks(e, s) };
                ((tc & tt) | (fc & te), (tc & ft) | (fc & fe))
            }
        }
    }

    /// The fields on which `c` holds.
    #[inline]
    fn holds(&self, c: &Conj, s: Option<&Subject<'_>>) -> u64 {
        if c.field {
            self.masks(&c.check, s).0
        } else if self.test(&c.check, s) == Some(true) {
            self.index.all
        } else {
            0
        }
    }

    /// The policies that held for `field` of `member`, or `None` if one failed to
    /// evaluate (the caller then asks Cedar, whose messages the decision carries).
    pub(crate) fn authorize(&self, member: &Subject<'_>, field: usize) -> Option<Held> {
        let index = self.index;
        let mut held = Held {
            forbid: false,
            policies: SmallVec::new(),
        };
        let (Some(uid), Some(bit)) = (
            index.field_uids.get(field),
            1u64.checked_shl(u32::try_from(field).ok()?),
        ) else {
            return None;
        };
        let on = (bit, *uid);
        let mut tally = Tally::default();
        for (i, r) in &self.plan.rules {
            self.tally(*i, r, member, on, &mut tally);
        }
        for_each_resource(self.bucket, member, |i| {
            if let Some(r) = index.rule(i) {
                self.tally(i, r, member, on, &mut tally);
            }
        });
        let Tally {
            permits,
            forbids,
            errored,
        } = tally;
        if errored {
            return None;
        }
        if forbids.is_empty() {
            held.policies = permits;
        } else {
            held.forbid = true;
            held.policies = forbids;
        }
        Some(held)
    }

    /// Counts policy `i` (`rule`) in `tally` if it holds on one field (`(bit, uid)`) of
    /// `member`.
    #[inline(always)]
    fn tally(&self, i: u32, rule: &Rule, member: &Subject<'_>, on: (u64, u32), tally: &mut Tally) {
        if rule.never & on.0 != 0 {
            return;
        }
        match self.one_field(&rule.cond, member, on) {
            Some(true) if rule.forbid => tally.forbids.push(i),
            Some(true) => tally.permits.push(i),
            Some(false) => {}
            None => tally.errored = true,
        }
    }

    /// Each policy's part in the decision on `field` of `member`, in compiled order:
    /// `None` out of scope, else whether its condition held; `None` overall if a policy
    /// failed to evaluate (Cedar then gives the account, with its message).
    pub(crate) fn trace(
        &self,
        member: &Subject<'_>,
        field: u32,
    ) -> Option<Vec<(u32, Option<bool>)>> {
        let q = self.query(Some(member), Some(field));
        let mut out = Vec::new();
        for (i, v) in self.index.compiled.views().enumerate() {
            let (conjuncts, shape) = v.native?;
            let (p, a, r) = shape.parts;
            let scope = usize::from(p) + usize::from(a) + usize::from(r);
            let mut in_scope = true;
            let mut held = true;
            for (n, c) in conjuncts.iter().enumerate() {
                match truth(c, &q)? {
                    true => {}
                    false if n < scope => {
                        in_scope = false;
                        break;
                    }
                    false => {
                        held = false;
                        break;
                    }
                }
            }
            out.push((u32::try_from(i).ok()?, in_scope.then_some(held)));
        }
        Some(out)
    }

    /// The fields of each member on which the request is allowed, in order.
    pub(crate) fn fields<'m>(
        &self,
        members: impl Iterator<Item = Result<Subject<'m>, RequestError>>,
        mut emit: impl FnMut(FieldSet),
    ) -> Result<(), RequestError> {
        let index = self.index;
        let all = index.all;
        // Page level: what does not read the member.
        let (mut p0, mut f0) = (0u64, 0u64);
        with_page_list(|list| {
            self.page_pass(
                |_, forbid, m| {
                    if forbid {
                        f0 |= m;
                    } else {
                        p0 |= m;
                    }
                },
                |i, m| list.push((i, m)),
            );
            let scoped = self
                .bucket
                .is_some_and(|b| !b.resource_eq.is_empty() || !b.resource_in.is_empty());
            for member in members {
                let member = member?;
                let (mut p, mut f) = (p0, f0);
                for (at, mask) in list.iter() {
                    let Some((_, rule)) = self.plan.rules.get(*at as usize) else {
                        continue;
                    };
                    if rule.forbid {
                        continue;
                    }
                    let want = mask & !p;
                    if want != 0 {
                        p |= self.member_pass(rule, &member, want, true);
                    }
                }
                if scoped {
                    for_each_resource(self.bucket, &member, |i| {
                        if let Some(rule) = index.rule(i) {
                            if !rule.forbid && all & !p != 0 {
                                p |= self.member_pass(rule, &member, all & !p, false);
                            }
                        }
                    });
                }
                for (at, mask) in list.iter() {
                    let Some((_, rule)) = self.plan.rules.get(*at as usize) else {
                        continue;
                    };
                    if !rule.forbid {
                        continue;
                    }
                    let want = mask & p & !f;
                    if want != 0 {
                        f |= self.member_pass(rule, &member, want, true);
                    }
                }
                if scoped {
                    for_each_resource(self.bucket, &member, |i| {
                        if let Some(rule) = index.rule(i) {
                            if rule.forbid && p & !f != 0 {
                                f |= self.member_pass(rule, &member, p & !f, false);
                            }
                        }
                    });
                }
                emit(FieldSet::from_bits(p & !f));
            }
            Ok(())
        })
    }

    /// For each member, every policy that held and the fields on which it held:
    /// `emit(granted, [(policy, fields it decided)])`. Every policy that can apply is
    /// evaluated on every field (none is settled early); one whose evaluation fails
    /// holds on no field, as Cedar skips it.
    pub(crate) fn decisions<'m>(
        &self,
        members: impl Iterator<Item = Result<Subject<'m>, RequestError>>,
        mut emit: impl FnMut(FieldSet, &[(u32, u64)]),
    ) -> Result<(), RequestError> {
        let index = self.index;
        // `(policy, forbid, fields on which it held)`: first the policies settled for the
        // whole page, then the member's.
        let mut held: SmallVec<[(u32, bool, u64); 16]> = SmallVec::new();
        let mut deciding: SmallVec<[(u32, u64); 16]> = SmallVec::new();
        with_page_list(|list| {
            self.page_pass(
                |i, forbid, m| held.push((i, forbid, m)),
                |i, m| list.push((i, m)),
            );
            let whole = held.len();
            for member in members {
                let member = member?;
                held.truncate(whole);
                for (at, mask) in list.iter() {
                    if let Some((i, rule)) = self.plan.rules.get(*at as usize) {
                        let m = self.member_pass(rule, &member, *mask, true);
                        if m != 0 {
                            held.push((*i, rule.forbid, m));
                        }
                    }
                }
                for_each_resource(self.bucket, &member, |i| {
                    if let Some(rule) = index.rule(i) {
                        let m = self.member_pass(rule, &member, index.all, false);
                        if m != 0 {
                            held.push((i, rule.forbid, m));
                        }
                    }
                });
                let (mut permitted, mut forbidden) = (0u64, 0u64);
                for (_, forbid, fields) in &held {
                    if *forbid {
                        forbidden |= fields;
                    } else {
                        permitted |= fields;
                    }
                }
                let granted = permitted & !forbidden;
                deciding.clear();
                deciding.extend(held.iter().filter_map(|(i, forbid, fields)| {
                    let decided = if *forbid { *fields } else { fields & granted };
                    (decided != 0).then_some((*i, decided))
                }));
                emit(FieldSet::from_bits(granted), &deciding);
            }
            Ok(())
        })
    }

    /// The fields among `want` on which every conjunct of `rule` holds (only those that read
    /// the member if `member_only`, the others having been folded into `want`).
    #[inline]
    fn member_pass(&self, rule: &Rule, member: &Subject<'_>, want: u64, member_only: bool) -> u64 {
        let mut alive = want;
        for c in &rule.conjuncts {
            if member_only && !c.resource {
                continue;
            }
            alive &= self.holds(c, Some(member));
            if alive == 0 {
                break;
            }
        }
        alive
    }

    /// Evaluates once for a page, on every field, the conjuncts that do not read the member
    /// of the plan's policies (those that apply whatever the member). A policy that holds
    /// on no field is left out; `whole(policy, forbid, fields)` gets one none of whose
    /// conjuncts reads the member, with the fields on which it holds; `partial(at, fields)`
    /// the others, by their position in the plan, with the fields on which the conjuncts
    /// that do not read the member hold (see [`member_pass`] for the rest).
    fn page_pass(&self, mut whole: impl FnMut(u32, bool, u64), mut partial: impl FnMut(u32, u64)) {
        for (at, (i, rule)) in self.plan.rules.iter().enumerate() {
            let mut m = self.index.all;
            let mut per_member = false;
            for c in &rule.conjuncts {
                if c.resource {
                    per_member = true;
                    continue;
                }
                m &= self.holds(c, None);
                if m == 0 {
                    break;
                }
            }
            if m == 0 {
                continue;
            }
            if per_member {
                partial(u32::try_from(at).unwrap_or(u32::MAX), m);
            } else {
                whole(*i, rule.forbid, m);
            }
        }
    }
}

/// Masks `(true, false)` read on one field's `bit`: `None` where it fails.
#[inline]
fn on_bit((t, f): (u64, u64), bit: u64) -> Option<bool> {
    if t & bit != 0 {
        Some(true)
    } else if f & bit != 0 {
        Some(false)
    } else {
        None
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

/// Calls `f` on each policy indexed under the member's scope entities.
fn for_each_resource(bucket: Option<&Bucket>, member: &Subject<'_>, mut f: impl FnMut(u32)) {
    let Some(bucket) = bucket else { return };
    if !bucket.resource_eq.is_empty() {
        if let Some(l) = bucket.resource_eq.get(&member.uid()) {
            l.iter().for_each(|i| f(*i));
        }
    }
    if !bucket.resource_in.is_empty() {
        let uid = member.uid();
        for e in std::iter::once(&uid).chain(member.ancestors.iter()) {
            if let Some(l) = bucket.resource_in.get(e) {
                l.iter().for_each(|i| f(*i));
            }
        }
    }
}
