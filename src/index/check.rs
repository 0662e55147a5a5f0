//! Checks: a plan's conditions compiled against the request's typed data.
//!
//! After a plan folds in what the principal determines, what is left of a condition
//! reads the member (its status, dates, standing, channels, CLP), the context (the
//! time, the reads this hour, the election) and the field. A [`Check`] reads those from
//! the request as the CRM gave them (a [`Member`], a [`Context`](crate::Context)),
//! without writing the member as an entity or the context as a record: a comparison of
//! times is two integers. What it does not recognise stays an [`Expr`] for the compiled
//! evaluator, which then gets the member and the context written on first use. Errors
//! are Cedar's: reading a `left` the member lacks, an `election` the context lacks, or
//! an `offset` that overflows makes the condition fail to evaluate.
//!
//! Checks are evaluated over every field at once (masks, for field sets); for one
//! field's decision a policy's conjuncts become one [`Cond`], and the fields on which
//! it certainly neither holds nor fails ([`never_holds`]) are passed over.

use cedar_compiled::lowlevel::{BinOp, Expr, ExtFn, Var};
use cedar_compiled::Value;

use super::{channel_bit, field_only, reads_field, status_index, truth, Index, Subject};
use crate::entities::Attr;
use crate::records::{Channel, MemberStatus};

/// A boolean condition: evaluated on one field, or on every field at once as
/// `(true, false)` masks (the fields in neither fail to evaluate).
#[derive(Debug, Clone)]
pub(crate) enum Check {
    /// Masks known when the engine is built: a constant, or an atom that reads only the
    /// field.
    Const(u64, u64),
    /// An atom on the request's data.
    Leaf(Leaf),
    /// `!a`
    Not(Box<Check>),
    /// `a && b`
    And(Box<Check>, Box<Check>),
    /// `a || b`
    Or(Box<Check>, Box<Check>),
    /// `if c then t else e`
    If(Box<Check>, Box<Check>, Box<Check>),
}

impl Check {
    /// Adds the masks of its constant checks (where each is true, where false, per
    /// field bit) to `masks`; `false` if it reads the field otherwise too.
    pub(crate) fn constant_masks(&self, masks: &mut Vec<(u64, u64)>) -> bool {
        match self {
            Check::Const(t, f) => {
                masks.push((*t, *f));
                true
            }
            Check::Leaf(Leaf::Expr { field: true, .. }) => false,
            Check::Leaf(_) => true,
            Check::Not(a) => a.constant_masks(masks),
            // Every operand's masks, even past one that reads the field.
            Check::And(a, b) | Check::Or(a, b) => a.constant_masks(masks) & b.constant_masks(masks),
            Check::If(a, b, d) => {
                a.constant_masks(masks) & b.constant_masks(masks) & d.constant_masks(masks)
            }
        }
    }

    /// Whether the check evaluates without error on every field of any member (given
    /// one) and context.
    pub(crate) fn infallible(&self, all: u64) -> bool {
        match self {
            Check::Const(t, f) => t | f == all,
            Check::Leaf(l) => match l {
                Leaf::Cmp(x, _, y) => x.infallible() && y.infallible(),
                Leaf::Status(_)
                | Leaf::Standing
                | Leaf::HasLeft
                | Leaf::Channels { .. }
                | Leaf::Within(_)
                | Leaf::Has(_) => true,
                Leaf::Is(..) | Leaf::Expr { .. } => false,
            },
            Check::Not(a) => a.infallible(all),
            Check::And(a, b) | Check::Or(a, b) => a.infallible(all) && b.infallible(all),
            Check::If(c, t, e) => c.infallible(all) && t.infallible(all) && e.infallible(all),
        }
    }
}

impl Num {
    fn infallible(self) -> bool {
        matches!(self, Num::Lit(_) | Num::Now | Num::Reads | Num::Joined)
    }
}

/// The fields on which a policy whose condition is `conjuncts` (evaluated in order)
/// certainly does not hold, without an error on the way: a conjunct that reads only the
/// field is false there, and each one before it is true there or cannot fail. One field's
/// decision passes over the policy on those fields; the decision, errors included, is the
/// same.
pub(crate) fn never_holds<'c>(conjuncts: impl IntoIterator<Item = &'c Check>, all: u64) -> u64 {
    // The fields on which nothing before could have failed or been false on the field.
    let mut clear = all;
    let mut never = 0;
    for c in conjuncts {
        match c {
            Check::Const(t, f) => {
                never |= clear & f;
                clear &= t;
            }
            _ if c.infallible(all) => {}
            _ => break,
        }
    }
    never
}

/// A policy's condition for one field's decision: its conjuncts as one n-ary form with
/// each `!` pushed down to the atoms (De Morgan's laws hold under Cedar's
/// short-circuiting, failures included: `!(a && b)` fails where `!a || !b` fails), so
/// that deciding walks runs of atoms instead of a tree of boxes.
#[derive(Debug, Clone)]
pub(crate) enum Cond {
    /// Masks known when the engine is built, on the field's bit.
    Const(u64, u64),
    /// An atom, negated if `not`.
    Leaf { leaf: Leaf, not: bool },
    /// `&&`: the first that is not true is the result.
    All(Box<[Cond]>),
    /// `||`: the first that is not false is the result.
    Any(Box<[Cond]>),
    /// `if c then t else e`.
    If(Box<(Cond, Cond, Cond)>),
}

impl Cond {
    /// The condition of `conjuncts`.
    pub(crate) fn of<'c>(conjuncts: impl IntoIterator<Item = &'c Check>) -> Cond {
        let mut all = Vec::new();
        for c in conjuncts {
            Cond::push(c, false, true, &mut all);
        }
        Cond::All(all.into_boxed_slice())
    }

    /// Appends `c` (negated if `not`) to the operands of an `All` (`all`) or an `Any`,
    /// splicing in an operand of the same kind.
    fn push(c: &Check, not: bool, all: bool, into: &mut Vec<Cond>) {
        match c {
            Check::Const(t, f) => into.push(if not {
                Cond::Const(*f, *t)
            } else {
                Cond::Const(*t, *f)
            }),
            Check::Leaf(l) => into.push(Cond::Leaf {
                leaf: l.clone(),
                not,
            }),
            Check::Not(a) => Cond::push(a, !not, all, into),
            Check::And(a, b) | Check::Or(a, b) => {
                // `&&` stays an `All` unless negated; `||` is an `Any` unless negated.
                let is_all = matches!(c, Check::And(..)) != not;
                if is_all == all {
                    Cond::push(a, not, all, into);
                    Cond::push(b, not, all, into);
                } else {
                    let mut inner = Vec::new();
                    Cond::push(a, not, is_all, &mut inner);
                    Cond::push(b, not, is_all, &mut inner);
                    let inner = inner.into_boxed_slice();
                    into.push(if is_all {
                        Cond::All(inner)
                    } else {
                        Cond::Any(inner)
                    });
                }
            }
            Check::If(c, t, e) => {
                let one = |x: &Check, not: bool| {
                    let mut v = Vec::new();
                    Cond::push(x, not, true, &mut v);
                    match v.len() {
                        1 => v.pop().unwrap_or(Cond::Const(0, 0)),
                        _ => Cond::All(v.into_boxed_slice()),
                    }
                };
                into.push(Cond::If(Box::new((
                    one(c, false),
                    one(t, not),
                    one(e, not),
                ))));
            }
        }
    }
}

/// An atom read from the request's typed data, or left to the compiled evaluator.
#[derive(Debug, Clone)]
pub(crate) enum Leaf {
    /// Two times or two integers compared.
    Cmp(Num, Cmp, Num),
    /// The member's status is one of these (bit [`status_index`]).
    Status(u8),
    /// `resource.in_good_standing`
    Standing,
    /// `resource has left`
    HasLeft,
    /// The member's consents (or opt-outs) hold one of these channels (bit
    /// [`channel_bit`]).
    Channels { opt_outs: bool, any: u8 },
    /// `resource in E` (or in a set of entities): the member or one of its ancestors is
    /// one of these uids.
    Within(Box<[u32]>),
    /// `context has a` for an optional attribute of the context.
    Has(Optional),
    /// `context.a == E` for an optional entity attribute: fails if the context lacks it.
    Is(Optional, u32),
    /// Anything else, for the compiled evaluator; `field` if it reads the field.
    Expr { expr: Expr, field: bool },
}

/// An optional attribute of the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Optional {
    Election,
    Session,
    Purpose,
    Reason,
}

/// A comparison of two [`Num`]s of the same type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Less,
    LessEq,
    Eq,
}

/// A time (milliseconds since the epoch) or an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Num {
    Lit(i64),
    /// `context.now`
    Now,
    /// `context.reads_this_hour`
    Reads,
    /// `resource.joined`
    Joined,
    /// `resource.left`: fails if the member has not left.
    Left,
    /// A time `.offset(duration)`: fails on overflow.
    Offset(Time, i64),
}

/// A time a [`Num::Offset`] starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Time {
    Now,
    Joined,
    Left,
}

/// The type of a [`Num`]: two of different types are not compared here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumType {
    DateTime,
    Long,
}

/// The context's values as checks read them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ContextValues {
    pub(crate) now: i64,
    pub(crate) reads: i64,
    pub(crate) election: Option<u32>,
    pub(crate) session: Option<u32>,
    pub(crate) purpose: bool,
    pub(crate) reason: bool,
}

impl Index {
    /// `e` as a check.
    pub(super) fn check(&self, e: &Expr) -> Check {
        let f = self.attr(Attr::Field);
        let all = self.all;
        let b = |x: &Expr| Box::new(self.check(x));
        match e {
            Expr::Lit(Value::Bool(true)) => Check::Const(all, 0),
            Expr::Lit(Value::Bool(false)) => Check::Const(0, all),
            Expr::Lit(_) | Expr::Error => Check::Const(0, 0),
            // Whole before split: an atom on the field alone, however composed, is one
            // pair of masks.
            _ if reads_field(e, f) && field_only(e, f) => {
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
                Check::Const(t, fl)
            }
            Expr::Not(a) => Check::Not(b(a)),
            Expr::And(x, y) => Check::And(b(x), b(y)),
            Expr::Or(x, y) => Check::Or(b(x), b(y)),
            Expr::If(c, t, x) => Check::If(b(c), b(t), b(x)),
            _ => Check::Leaf(self.leaf(e).unwrap_or_else(|| Leaf::Expr {
                expr: e.clone(),
                field: reads_field(e, f),
            })),
        }
    }

    /// `e` as an atom on the request's data, if it is one of those recognised.
    fn leaf(&self, e: &Expr) -> Option<Leaf> {
        let resource = |a: &Expr, attr: Attr| matches!(a, Expr::GetAttr(v, x) if **v == Expr::Var(Var::Resource) && *x == self.attr(attr));
        match e {
            Expr::GetAttr(..) if resource(e, Attr::InGoodStanding) => Some(Leaf::Standing),
            Expr::HasAttr(v, chain) if **v == Expr::Var(Var::Resource) => {
                (**chain == [self.attr(Attr::Left)]).then_some(Leaf::HasLeft)
            }
            Expr::HasAttr(v, chain) if **v == Expr::Var(Var::Context) => match **chain {
                [a] => self.optional(a).map(Leaf::Has),
                _ => None,
            },
            Expr::Bin(BinOp::Less(strict), x, y) => {
                let (x, y) = self.nums(x, y)?;
                Some(Leaf::Cmp(
                    x,
                    if *strict { Cmp::Less } else { Cmp::LessEq },
                    y,
                ))
            }
            Expr::Bin(BinOp::Eq, x, y) => {
                if let Some((x, y)) = self.nums(x, y) {
                    return Some(Leaf::Cmp(x, Cmp::Eq, y));
                }
                // `resource.status == "s"`, `context.election == E`, either way round.
                let (attr, lit) = match (&**x, &**y) {
                    (a, Expr::Lit(v)) | (Expr::Lit(v), a) => (a, v),
                    _ => return None,
                };
                if resource(attr, Attr::Status) {
                    return Some(Leaf::Status(status_mask(|s| *lit == status_value(s))));
                }
                match (attr, lit) {
                    (Expr::GetAttr(v, a), Value::Entity(u)) if **v == Expr::Var(Var::Context) => {
                        let o = self.optional(*a)?;
                        matches!(o, Optional::Election | Optional::Session)
                            .then_some(Leaf::Is(o, *u))
                    }
                    _ => None,
                }
            }
            Expr::Bin(BinOp::Contains, x, y) => match (&**x, &**y) {
                // `["s", ...].contains(resource.status)`
                (Expr::Lit(Value::Set(items)), a) if resource(a, Attr::Status) => {
                    Some(Leaf::Status(status_mask(|s| {
                        items.contains(&status_value(s))
                    })))
                }
                // `resource.consents.contains("phone")`
                (a, Expr::Lit(v)) => {
                    let opt_outs = self.channels(a)?;
                    Some(Leaf::Channels {
                        opt_outs,
                        any: channel_mask(|c| *v == Value::String(c.as_str().into())),
                    })
                }
                _ => None,
            },
            Expr::Bin(BinOp::ContainsAny, x, y) => match (&**x, &**y) {
                (a, Expr::Lit(Value::Set(items))) => {
                    let opt_outs = self.channels(a)?;
                    Some(Leaf::Channels {
                        opt_outs,
                        any: channel_mask(|c| items.contains(&Value::String(c.as_str().into()))),
                    })
                }
                _ => None,
            },
            Expr::Bin(BinOp::In, x, y) if **x == Expr::Var(Var::Resource) => match &**y {
                Expr::Lit(Value::Entity(u)) => Some(Leaf::Within(Box::new([*u]))),
                Expr::Lit(Value::Set(items)) => items
                    .iter()
                    .map(|v| match v {
                        Value::Entity(u) => Some(*u),
                        _ => None,
                    })
                    .collect::<Option<Box<[u32]>>>()
                    .map(Leaf::Within),
                _ => None,
            },
            _ => None,
        }
    }

    /// `a` is the member's consents (`false`) or opt-outs (`true`).
    fn channels(&self, a: &Expr) -> Option<bool> {
        match a {
            Expr::GetAttr(v, x) if **v == Expr::Var(Var::Resource) => {
                if *x == self.attr(Attr::Consents) {
                    Some(false)
                } else if *x == self.attr(Attr::OptOuts) {
                    Some(true)
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    fn optional(&self, attr: u32) -> Option<Optional> {
        [
            (Attr::Election, Optional::Election),
            (Attr::Session, Optional::Session),
            (Attr::Purpose, Optional::Purpose),
            (Attr::Reason, Optional::Reason),
        ]
        .into_iter()
        .find(|(a, _)| self.attr(*a) == attr)
        .map(|(_, o)| o)
    }

    /// Two operands as numbers of the same type.
    fn nums(&self, x: &Expr, y: &Expr) -> Option<(Num, Num)> {
        let (x, tx) = self.num(x)?;
        let (y, ty) = self.num(y)?;
        (tx == ty).then_some((x, y))
    }

    fn num(&self, e: &Expr) -> Option<(Num, NumType)> {
        let time = |a: &Expr| -> Option<Time> {
            match a {
                Expr::GetAttr(v, x) => match **v {
                    Expr::Var(Var::Context) if *x == self.attr(Attr::Now) => Some(Time::Now),
                    Expr::Var(Var::Resource) if *x == self.attr(Attr::Joined) => Some(Time::Joined),
                    Expr::Var(Var::Resource) if *x == self.attr(Attr::Left) => Some(Time::Left),
                    _ => None,
                },
                _ => None,
            }
        };
        match e {
            Expr::Lit(Value::DateTime(t)) => Some((Num::Lit(*t), NumType::DateTime)),
            Expr::Lit(Value::Long(n)) => Some((Num::Lit(*n), NumType::Long)),
            Expr::GetAttr(v, x)
                if **v == Expr::Var(Var::Context) && *x == self.attr(Attr::ReadsThisHour) =>
            {
                Some((Num::Reads, NumType::Long))
            }
            Expr::Call(ExtFn::Offset, args) => match args.as_slice() {
                [a, Expr::Lit(Value::Duration(d))] => {
                    Some((Num::Offset(time(a)?, *d), NumType::DateTime))
                }
                _ => None,
            },
            _ => {
                let t = time(e)?;
                let n = match t {
                    Time::Now => Num::Now,
                    Time::Joined => Num::Joined,
                    Time::Left => Num::Left,
                };
                Some((n, NumType::DateTime))
            }
        }
    }
}

fn status_value(s: MemberStatus) -> Value {
    Value::String(s.as_str().into())
}

fn status_mask(holds: impl Fn(MemberStatus) -> bool) -> u8 {
    MemberStatus::ALL
        .iter()
        .filter(|s| holds(**s))
        .fold(0, |m, s| m | 1 << status_index(*s))
}

fn channel_mask(holds: impl Fn(Channel) -> bool) -> u8 {
    [Channel::Phone, Channel::Email, Channel::Post]
        .into_iter()
        .filter(|c| holds(*c))
        .fold(0, |m, c| m | channel_bit(c) as u8)
}

impl ContextValues {
    #[inline]
    fn time(&self, t: Time, subject: Option<&Subject<'_>>) -> Option<i64> {
        match t {
            Time::Now => Some(self.now),
            Time::Joined => subject.map(|s| s.joined),
            Time::Left => subject.and_then(|s| s.left),
        }
    }

    #[inline]
    fn num(&self, n: Num, subject: Option<&Subject<'_>>) -> Option<i64> {
        match n {
            Num::Lit(v) => Some(v),
            Num::Now => Some(self.now),
            Num::Reads => Some(self.reads),
            Num::Joined => self.time(Time::Joined, subject),
            Num::Left => self.time(Time::Left, subject),
            Num::Offset(t, d) => self.time(t, subject)?.checked_add(d),
        }
    }

    fn optional(&self, o: Optional) -> bool {
        match o {
            Optional::Election => self.election.is_some(),
            Optional::Session => self.session.is_some(),
            Optional::Purpose => self.purpose,
            Optional::Reason => self.reason,
        }
    }

    /// The atom `l` on the context and `subject` (`None` if it fails to evaluate); not
    /// for [`Leaf::Expr`], which fails here.
    #[inline(always)]
    pub(crate) fn leaf(&self, l: &Leaf, subject: Option<&Subject<'_>>) -> Option<bool> {
        match l {
            Leaf::Cmp(x, op, y) => {
                let (x, y) = (self.num(*x, subject)?, self.num(*y, subject)?);
                Some(match op {
                    Cmp::Less => x < y,
                    Cmp::LessEq => x <= y,
                    Cmp::Eq => x == y,
                })
            }
            Leaf::Status(mask) => subject.map(|s| mask & s.status != 0),
            Leaf::Standing => subject.map(|s| s.member.in_good_standing),
            Leaf::HasLeft => subject.map(|s| s.left.is_some()),
            Leaf::Channels { opt_outs, any } => subject.map(|s| {
                let set = if *opt_outs {
                    &s.member.opt_outs
                } else {
                    &s.member.consents
                };
                set.iter().any(|c| usize::from(*any) & channel_bit(*c) != 0)
            }),
            Leaf::Within(uids) => subject.map(|s| {
                uids.iter()
                    .any(|u| s.ancestors.binary_search(u).is_ok() || *u == s.uid())
            }),
            Leaf::Has(o) => Some(self.optional(*o)),
            Leaf::Is(o, u) => match o {
                Optional::Election => self.election.map(|e| e == *u),
                Optional::Session => self.session.map(|s| s == *u),
                Optional::Purpose | Optional::Reason => None,
            },
            Leaf::Expr { .. } => None,
        }
    }
}
