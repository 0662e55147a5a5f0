//! Plans: a request's policies evaluated with everything known but the member, what is
//! left of each becoming a condition on the member's attributes ([`FieldPlan`]).
//!
//! Each policy's condition is read as Cedar evaluates it, short-circuits and errors
//! included: for every check, the members on which it evaluates to true (`T`) and those
//! on which it evaluates to false (`F`); a member in neither is one on which it fails.
//! `a && b` is true where both are and false where `a` is, or `a` is true and `b` false;
//! a policy holds where each of its conjuncts is true. A field is allowed where a
//! permit holds and no forbid does.

use std::cell::{Cell, RefCell};

use cedar_compiled::lowlevel::{specialize_for_context, BinOp, Expr, Var};
use cedar_compiled::Value;
use jiff::Timestamp;

use super::check::{Check, Cmp, Leaf, Num, Time};
use super::{channel_bit, reads_var, status_index, truth, Asked, Rule};
use crate::entities::millis;
use crate::plan::{Atom, Comparison, FieldPlan};
use crate::records::{Channel, MemberStatus};

/// The places and members the directory knows, by uid: what `resource in E` and
/// `resource == E` read.
pub(crate) trait Places {
    /// The ids of the CLPs whose members are within one of `uids` (the CLP is one, or
    /// one of its ancestors is).
    fn clps_within(&self, uids: &[u32]) -> Vec<String>;
    /// The ids of the members among `uids`.
    fn members_among(&self, uids: &[u32]) -> Vec<String>;
}

/// `(T, F)`: where a check evaluates to true, and where to false.
type Tf = (FieldPlan, FieldPlan);

/// The first and last millisecond a member's time can hold (the engine's check refuses
/// other members): within both Cedar's `datetime` years 0 to 9999 and `jiff`'s range.
fn member_times() -> (i64, i64) {
    const FIRST: i64 = -62_167_219_200_000;
    const AFTER_LAST: i64 = 253_402_300_800_000;
    (
        FIRST.max(millis(Timestamp::MIN)),
        (AFTER_LAST - 1).min(millis(Timestamp::MAX)),
    )
}

fn known((t, f): (bool, bool)) -> Tf {
    (FieldPlan::constant(t), FieldPlan::constant(f))
}

/// A check that evaluates to `b` (`None`: fails) on every member.
fn constant(b: Option<bool>) -> Tf {
    known((b == Some(true), b == Some(false)))
}

/// A check that is true where the atom holds and false elsewhere.
fn two_valued(a: Atom) -> Tf {
    let t = FieldPlan::atom(a);
    (t.clone(), t.not())
}

/// The planner of one request: its policies, one field at a time.
pub(crate) struct Planner<'p, 'a> {
    asked: &'p Asked<'a>,
    places: &'p dyn Places,
    /// The next [`Atom::PerMember`] part.
    parts: Cell<u32>,
    /// What each atom that does not read the field gave (by its address): the same on
    /// every field.
    leaves: RefCell<Vec<(usize, Tf)>>,
    /// Where each policy holds (by its place in [`Planner::rules`]), per pattern of its
    /// constant checks on a field: with the bit of a field it was planned for.
    held: RefCell<Vec<(usize, u64, FieldPlan)>>,
}

/// A policy that can apply, with the condition its scope puts on the member.
struct Applying<'p> {
    /// The policy's place in the index.
    id: u32,
    scope: FieldPlan,
    rule: &'p Rule,
}

impl Applying<'_> {
    /// Whether the policy's constant checks are alike on the fields of bits `a` and `b`
    /// (never, if it reads the field otherwise).
    fn alike(&self, a: u64, b: u64) -> bool {
        self.rule.masks.as_ref().is_some_and(|masks| {
            masks
                .iter()
                .all(|(t, f)| (t & a == 0) == (t & b == 0) && (f & a == 0) == (f & b == 0))
        })
    }
}

impl<'p, 'a> Planner<'p, 'a> {
    pub(crate) fn new(asked: &'p Asked<'a>, places: &'p dyn Places) -> Self {
        Planner {
            asked,
            places,
            parts: Cell::new(0),
            leaves: RefCell::new(Vec::new()),
            held: RefCell::new(Vec::new()),
        }
    }

    /// The distinct plans of the catalogue's fields, and each field's place among them.
    /// Fields on which every constant check of every policy is the same are planned
    /// once.
    pub(crate) fn fields(&self) -> (Vec<FieldPlan>, Vec<usize>) {
        let index = self.asked.index;
        let rules = self.rules();
        let per_field = rules.iter().any(|r| r.rule.masks.is_none());
        // Per distinct plan, a field it was planned for.
        let mut seen: Vec<u64> = Vec::new();
        let mut distinct: Vec<FieldPlan> = Vec::new();
        let mut slots = Vec::with_capacity(index.field_uids.len());
        for (i, uid) in index.field_uids.iter().enumerate() {
            let bit = 1u64 << i;
            if !per_field {
                let alike = |other: &u64| rules.iter().all(|r| r.alike(bit, *other));
                if let Some(at) = seen.iter().position(alike) {
                    slots.push(at);
                    continue;
                }
            }
            let p = self.field(&rules, (bit, *uid));
            // Two patterns of constant checks can still give the same plan.
            match distinct.iter().position(|d| *d == p) {
                Some(at) if per_field => slots.push(at),
                _ => {
                    seen.push(bit);
                    distinct.push(p);
                    slots.push(distinct.len() - 1);
                }
            }
        }
        (distinct, slots)
    }

    /// The policies that can apply: the principal's, then those scoped on a member or
    /// a place, each with the condition its scope puts on the member.
    fn rules(&self) -> Vec<Applying<'p>> {
        let asked = self.asked;
        let mut out: Vec<Applying> = asked
            .plan
            .rules
            .iter()
            .map(|(i, r)| Applying {
                id: *i,
                scope: FieldPlan::Always,
                rule: r,
            })
            .collect();
        if let Some(b) = asked.bucket {
            for (u, list) in &b.resource_eq {
                let on = FieldPlan::atom(Atom::Member(self.places.members_among(&[*u]).into()));
                for i in list {
                    if let Some(r) = asked.index.rule(*i) {
                        out.push(Applying {
                            id: *i,
                            scope: on.clone(),
                            rule: r,
                        });
                    }
                }
            }
            for (u, list) in &b.resource_in {
                let on = self.within(&[*u]);
                for i in list {
                    if let Some(r) = asked.index.rule(*i) {
                        out.push(Applying {
                            id: *i,
                            scope: on.clone(),
                            rule: r,
                        });
                    }
                }
            }
        }
        out
    }

    /// One field's plan: a permit holds and no forbid does (the forbids are planned
    /// only where some permit may hold).
    fn field(&self, rules: &[Applying<'p>], on: (u64, u32)) -> FieldPlan {
        let applies = |forbid: bool| {
            rules.iter().enumerate().filter(move |(_, r)| {
                r.rule.forbid == forbid && r.rule.never & on.0 == 0 && r.scope != FieldPlan::Never
            })
        };
        let permitted = FieldPlan::any(applies(false).map(|(at, r)| self.holds(at, r, on)));
        if permitted == FieldPlan::Never {
            return permitted;
        }
        let mut unforbidden = vec![permitted];
        for (at, r) in applies(true) {
            match self.holds(at, r, on) {
                FieldPlan::Always => return FieldPlan::Never,
                FieldPlan::Never => {}
                p => unforbidden.push(p.not()),
            }
        }
        FieldPlan::all(unforbidden)
    }

    /// Where the policy `r` (at `at` among the rules) holds on the field `on`. A
    /// policy's plan differs between fields only where its constant checks do: planned
    /// once per pattern of them (always, for one that reads the field otherwise).
    fn holds(&self, at: usize, r: &Applying<'p>, on: (u64, u32)) -> FieldPlan {
        if r.rule.masks.is_some() {
            let held = self.held.borrow();
            if let Some((_, _, p)) = held
                .iter()
                .find(|(a, bit, _)| *a == at && r.alike(on.0, *bit))
            {
                return p.clone();
            }
        }
        let mut holds = r.scope.clone();
        for c in &r.rule.conjuncts {
            if holds == FieldPlan::Never {
                break;
            }
            holds = holds.and(self.evaluates_to(&c.check, true, on, r.id));
        }
        if r.rule.masks.is_some() {
            self.held.borrow_mut().push((at, on.0, holds.clone()));
        }
        holds
    }

    /// Where `c` is true and where false, on the field `(bit, uid)`, for policy `i`.
    fn check(&self, c: &Check, on: (u64, u32), i: u32) -> Tf {
        (
            self.evaluates_to(c, true, on, i),
            self.evaluates_to(c, false, on, i),
        )
    }

    /// Where `c` evaluates to `want` (only that side is built).
    fn evaluates_to(&self, c: &Check, want: bool, on: (u64, u32), i: u32) -> FieldPlan {
        let side = |x: &Check, w: bool| self.evaluates_to(x, w, on, i);
        match c {
            Check::Const(t, f) => FieldPlan::constant(if want { t } else { f } & on.0 != 0),
            Check::Leaf(l) => {
                let (t, f) = self.leaf(l, on, i);
                if want {
                    t
                } else {
                    f
                }
            }
            Check::Not(a) => side(a, !want),
            // `a && b` is true where both are, false where `a` is or where `a` is true
            // and `b` false; `a || b` the other way round.
            Check::And(a, b) | Check::Or(a, b) => {
                // The value that decides alone (false for `&&`), and whether it is wanted.
                let stop = matches!(c, Check::Or(..));
                if want == stop {
                    let first = side(a, stop);
                    if first == FieldPlan::Always {
                        return first;
                    }
                    let go_on = side(a, !stop);
                    if go_on == FieldPlan::Never {
                        return first;
                    }
                    first.or(go_on.and(side(b, stop)))
                } else {
                    let first = side(a, !stop);
                    if first == FieldPlan::Never {
                        return first;
                    }
                    first.and(side(b, !stop))
                }
            }
            Check::If(x, t, e) => side(x, true)
                .and(side(t, want))
                .or(side(x, false).and(side(e, want))),
        }
    }

    fn leaf(&self, l: &Leaf, on: (u64, u32), i: u32) -> Tf {
        if matches!(l, Leaf::Expr { field: true, .. }) {
            return self.read_leaf(l, on, i);
        }
        let key = std::ptr::from_ref(l) as usize;
        if let Some((_, tf)) = self.leaves.borrow().iter().find(|(k, _)| *k == key) {
            return tf.clone();
        }
        let tf = self.read_leaf(l, on, i);
        self.leaves.borrow_mut().push((key, tf.clone()));
        tf
    }

    fn read_leaf(&self, l: &Leaf, on: (u64, u32), i: u32) -> Tf {
        match l {
            Leaf::Cmp(x, op, y) => self.compare(*x, *op, *y, i),
            Leaf::Status(mask) => two_valued(Atom::Status(
                MemberStatus::ALL
                    .into_iter()
                    .filter(|s| mask & (1 << status_index(*s)) != 0)
                    .collect(),
            )),
            Leaf::Standing => two_valued(Atom::InGoodStanding),
            Leaf::HasLeft => two_valued(Atom::HasLeft),
            Leaf::Channels { opt_outs, any } => {
                let cs: Vec<Channel> = [Channel::Phone, Channel::Email, Channel::Post]
                    .into_iter()
                    .filter(|c| usize::from(*any) & channel_bit(*c) != 0)
                    .collect();
                two_valued(if *opt_outs {
                    Atom::OptOuts(cs)
                } else {
                    Atom::Consents(cs)
                })
            }
            Leaf::Within(uids) => {
                let w = self.within(uids);
                (w.clone(), w.not())
            }
            Leaf::Has(_) | Leaf::Is(..) => constant(self.asked.values.leaf(l, None)),
            Leaf::Expr { expr, field } => self.expr(expr, field.then_some(on.1), on, i),
        }
    }

    /// `resource in` one of `uids`: the member is one, or its CLP or region is.
    fn within(&self, uids: &[u32]) -> FieldPlan {
        let clps = Atom::Clp(self.places.clps_within(uids).into());
        let members = Atom::Member(self.places.members_among(uids).into());
        FieldPlan::atom(clps).or(FieldPlan::atom(members))
    }

    /// `x op y` on times or integers.
    fn compare(&self, x: Num, op: Cmp, y: Num, i: u32) -> Tf {
        let op = match op {
            Cmp::Less => Comparison::Less,
            Cmp::LessEq => Comparison::LessEq,
            Cmp::Eq => Comparison::Eq,
        };
        match (self.side(x), self.side(y)) {
            (Side::Known(None), _) | (_, Side::Known(None)) => constant(None),
            (Side::Known(Some(a)), Side::Known(Some(b))) => constant(Some(op.holds(a, b))),
            (Side::Member(t, d), Side::Known(Some(k))) => self.member_time(t, d, op, k, i),
            (Side::Known(Some(k)), Side::Member(t, d)) => {
                self.member_time(t, d, op.flipped(), k, i)
            }
            (Side::Member(..), Side::Member(..)) => self.per_member(i),
        }
    }

    fn side(&self, n: Num) -> Side {
        let v = &self.asked.values;
        match n {
            Num::Lit(x) => Side::Known(Some(x)),
            Num::Now => Side::Known(Some(v.now)),
            Num::Reads => Side::Known(Some(v.reads)),
            Num::Joined => Side::Member(Time::Joined, 0),
            Num::Left => Side::Member(Time::Left, 0),
            Num::Offset(Time::Now, d) => Side::Known(v.now.checked_add(d)),
            Num::Offset(t, d) => Side::Member(t, d),
        }
    }

    /// `member's t + d op k`, which is `t op k - d` where `t + d` cannot overflow.
    fn member_time(&self, t: Time, d: i64, op: Comparison, k: i64, i: u32) -> Tf {
        let (first, last) = member_times();
        let (lo, hi) = (i128::from(first), i128::from(last));
        let d128 = i128::from(d);
        if lo + d128 < i128::from(i64::MIN) || hi + d128 > i128::from(i64::MAX) {
            // Some member's time would overflow: which is the member's to say.
            return self.per_member(i);
        }
        let c = i128::from(k) - d128;
        // Beyond every member's time: the comparison is the same on every member.
        let same = if c > hi {
            Some(op.holds(0, 1))
        } else if c < lo {
            Some(op.holds(1, 0))
        } else {
            None
        };
        let at = i64::try_from(c)
            .ok()
            .and_then(|ms| Timestamp::from_millisecond(ms).ok());
        match t {
            Time::Joined => match (same, at) {
                (Some(b), _) => constant(Some(b)),
                (None, Some(at)) => two_valued(Atom::Joined(op, at)),
                (None, None) => self.per_member(i),
            },
            // A member without a date they left fails `resource.left`.
            Time::Left => match (same, at) {
                (Some(b), _) => {
                    let has = FieldPlan::atom(Atom::HasLeft);
                    if b {
                        (has, FieldPlan::Never)
                    } else {
                        (FieldPlan::Never, has)
                    }
                }
                (None, Some(at)) => (
                    FieldPlan::atom(Atom::Left(op, at)),
                    FieldPlan::atom(Atom::Left(op.negated(), at)),
                ),
                (None, None) => self.per_member(i),
            },
            Time::Now => self.per_member(i),
        }
    }

    /// An atom the checks left to the compiled evaluator: the context (and the field,
    /// if it reads it) folded in, then read again.
    fn expr(&self, e: &Expr, field: Option<u32>, on: (u64, u32), i: u32) -> Tf {
        let asked = self.asked;
        let q = asked.query(None, field);
        if !reads_var(e, Var::Resource) {
            return constant(truth(e, &q));
        }
        let store = asked.store;
        let member = asked.index.member_type();
        let e = specialize_for_context(e, &q, &mut |u| store.type_of_uid(u) != Some(member));
        match &e {
            Expr::Lit(Value::Bool(b)) => constant(Some(*b)),
            Expr::Lit(_) | Expr::Error => constant(None),
            _ if !reads_var(&e, Var::Resource) => constant(truth(&e, &q)),
            _ => {
                if let Some(uids) = member_among(&e) {
                    return two_valued(Atom::Member(self.places.members_among(&uids).into()));
                }
                let c = asked.index.check(&e);
                if only_known(&c) {
                    self.check(&c, on, i)
                } else {
                    self.per_member(i)
                }
            }
        }
    }

    /// A part of policy `i` the planner cannot express.
    fn per_member(&self, i: u32) -> Tf {
        let part = self.parts.get();
        self.parts.set(part + 1);
        let policy = self
            .asked
            .index
            .policy(i)
            .map(|(id, _)| id.to_string())
            .unwrap_or_default();
        let atom = |holds| {
            FieldPlan::atom(Atom::PerMember {
                policy: policy.clone(),
                part,
                holds,
            })
        };
        (atom(true), atom(false))
    }
}

/// One side of a comparison: a known number (`None`: it fails), or a member's time
/// plus an offset.
enum Side {
    Known(Option<i64>),
    Member(Time, i64),
}

/// Whether every atom of `c` is one the planner reads without the evaluator.
fn only_known(c: &Check) -> bool {
    match c {
        Check::Const(..) => true,
        Check::Leaf(l) => !matches!(l, Leaf::Expr { .. }),
        Check::Not(a) => only_known(a),
        Check::And(a, b) | Check::Or(a, b) => only_known(a) && only_known(b),
        Check::If(a, b, d) => only_known(a) && only_known(b) && only_known(d),
    }
}

/// `resource == E` or `[E, ...].contains(resource)` (either way round): the uids.
fn member_among(e: &Expr) -> Option<Vec<u32>> {
    let resource = |x: &Expr| matches!(x, Expr::Var(Var::Resource));
    match e {
        Expr::Bin(BinOp::Eq, x, y) => match (&**x, &**y) {
            (r, Expr::Lit(v)) | (Expr::Lit(v), r) if resource(r) => Some(match v {
                Value::Entity(u) => vec![*u],
                _ => Vec::new(),
            }),
            _ => None,
        },
        Expr::Bin(BinOp::Contains, x, y) if resource(y) => match &**x {
            Expr::Lit(Value::Set(items)) => Some(
                items
                    .iter()
                    .filter_map(|v| match v {
                        Value::Entity(u) => Some(*u),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => None,
        },
        _ => None,
    }
}
