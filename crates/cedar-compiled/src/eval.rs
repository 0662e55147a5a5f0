//! The interpreter of compiled expressions, and constant folding with it.

use std::borrow::Cow;

use super::ir::{BinOp, Expr, Var};
use super::store::Query;
use super::value::{arith, less, record_get, wildcard_match, EvalError, EvalResult, Value};

/// Evaluates `e` for the request `q`, as Cedar's evaluator does.
pub(crate) fn eval(e: &Expr, q: &Query<'_>) -> EvalResult {
    ev(e, q).map(Cow::into_owned)
}

/// The boolean `e` evaluates to: an error for any other value. `!`, `&&` and `||`
/// stay booleans, without making values.
#[inline]
pub(crate) fn eval_bool(e: &Expr, q: &Query<'_>) -> EvalResult<bool> {
    match e {
        Expr::Lit(Value::Bool(b)) => Ok(*b),
        Expr::Not(a) => Ok(!eval_bool(a, q)?),
        Expr::And(a, b) => Ok(eval_bool(a, q)? && eval_bool(b, q)?),
        Expr::Or(a, b) => Ok(eval_bool(a, q)? || eval_bool(b, q)?),
        _ => operand(e, q)?.as_bool(),
    }
}

/// [`ev`] with its commonest operands read on the spot: a literal, an attribute of the
/// context or of the principal, action or resource.
#[inline(always)]
fn operand<'a>(e: &'a Expr, q: &'a Query<'_>) -> EvalResult<Cow<'a, Value>> {
    match e {
        Expr::Lit(v) => Ok(Cow::Borrowed(v)),
        Expr::GetAttr(a, attr) => match &**a {
            Expr::Var(Var::Context) => q.context_attr(*attr).ok_or(EvalError),
            Expr::Var(v) => var_uid(*v, q)
                .and_then(|u| q.entity(u))
                .and_then(|x| x.attr(*attr))
                .map(Cow::Borrowed)
                .ok_or(EvalError),
            _ => ev(e, q),
        },
        _ => ev(e, q),
    }
}

/// [`eval`], borrowing what it reads (literals, attributes of entities and of the
/// context) instead of copying it: only computed values are owned.
fn ev<'a>(e: &'a Expr, q: &'a Query<'_>) -> EvalResult<Cow<'a, Value>> {
    let owned = |v: Value| Ok(Cow::Owned(v));
    match e {
        Expr::Lit(v) => Ok(Cow::Borrowed(v)),
        Expr::Error => Err(EvalError),
        Expr::Not(_) | Expr::And(..) | Expr::Or(..) => owned(Value::Bool(eval_bool(e, q)?)),
        Expr::Bin(op, a, b) => {
            // Cedar evaluates both operands before applying any binary operator.
            if let (BinOp::Eq, Expr::Var(v), Expr::Lit(Value::Entity(u))) = (op, &**a, &**b) {
                return owned(Value::Bool(var_uid(*v, q) == Some(*u)));
            }
            if let (BinOp::In, Expr::Var(v), Expr::Lit(rhs)) = (op, &**a, &**b) {
                if let Some(uid) = var_uid(*v, q) {
                    return in_op(uid, rhs, q).map(|b| Cow::Owned(Value::Bool(b)));
                }
            }
            let x = operand(a, q)?;
            let y = operand(b, q)?;
            binary(*op, &x, &y, q)
        }
        Expr::If(c, t, f) => {
            if eval_bool(c, q)? {
                ev(t, q)
            } else {
                ev(f, q)
            }
        }
        Expr::GetAttr(a, attr) => {
            if let Expr::Var(Var::Context) = &**a {
                return q.context_attr(*attr).ok_or(EvalError);
            }
            let entity = |u: u32| {
                q.entity(u)
                    .and_then(|e| e.attr(*attr))
                    .map(Cow::Borrowed)
                    .ok_or(EvalError)
            };
            match ev(a, q)? {
                Cow::Borrowed(Value::Record(r)) => {
                    record_get(r, *attr).map(Cow::Borrowed).ok_or(EvalError)
                }
                Cow::Owned(Value::Record(r)) => record_get(&r, *attr)
                    .cloned()
                    .map(Cow::Owned)
                    .ok_or(EvalError),
                Cow::Borrowed(Value::Entity(u)) => entity(*u),
                Cow::Owned(Value::Entity(u)) => entity(u),
                _ => Err(EvalError),
            }
        }
        _ => ev_cold(e, q),
    }
}

/// The rest of [`ev`]: the forms policies use less, kept apart so that the common ones
/// stay small.
#[inline(never)]
fn ev_cold<'a>(e: &'a Expr, q: &'a Query<'_>) -> EvalResult<Cow<'a, Value>> {
    let owned = |v: Value| Ok(Cow::Owned(v));
    match e {
        Expr::Var(v) => owned(match v {
            Var::Principal => Value::Entity(q.principal),
            Var::Action => Value::Entity(q.action),
            Var::Resource => Value::Entity(q.resource),
            Var::Context => q.context_value(),
        }),
        Expr::Neg(a) => ev(a, q)?
            .as_long()?
            .checked_neg()
            .map(|n| Cow::Owned(Value::Long(n)))
            .ok_or(EvalError),
        Expr::IsEmpty(a) => owned(Value::Bool(ev(a, q)?.as_set()?.is_empty())),
        Expr::HasAttr(a, chain) => {
            let mut rest: &[u32] = chain;
            let mut cur = match (&**a, chain.split_first()) {
                (Expr::Var(Var::Context), Some((first, tail))) => {
                    rest = tail;
                    match q.context_attr(*first) {
                        Some(v) => v,
                        None => return owned(Value::Bool(false)),
                    }
                }
                _ => ev(a, q)?,
            };
            for attr in rest {
                let next = match &*cur {
                    Value::Record(r) => record_get(r, *attr).cloned(),
                    Value::Entity(u) => q.entity(*u).and_then(|e| e.attr(*attr)).cloned(),
                    _ => return Err(EvalError),
                };
                match next {
                    Some(n) => cur = Cow::Owned(n),
                    None => return owned(Value::Bool(false)),
                }
            }
            owned(Value::Bool(true))
        }
        Expr::Like(a, pat) => owned(Value::Bool(wildcard_match(ev(a, q)?.as_str()?, pat))),
        Expr::Is(a, t, within) => {
            let u = ev(a, q)?.as_entity()?;
            if q.type_of(u) != *t {
                return owned(Value::Bool(false));
            }
            match within {
                Some(r) => in_op(u, &*ev(r, q)?, q).map(|b| Cow::Owned(Value::Bool(b))),
                None => owned(Value::Bool(true)),
            }
        }
        Expr::Set(items) => owned(Value::set(
            items
                .iter()
                .map(|i| eval(i, q))
                .collect::<EvalResult<Vec<_>>>()?,
        )),
        Expr::Record(pairs) => owned(Value::record(
            pairs
                .iter()
                .map(|(k, v)| Ok((*k, eval(v, q)?)))
                .collect::<EvalResult<Vec<_>>>()?,
        )),
        Expr::Call(f, args) => match args.as_slice() {
            // The usual arities need no allocation.
            [] => f.call(&[]),
            [a] => f.call(&[eval(a, q)?]),
            [a, b] => {
                let x = eval(a, q)?;
                f.call(&[x, eval(b, q)?])
            }
            _ => {
                let args = args
                    .iter()
                    .map(|i| eval(i, q))
                    .collect::<EvalResult<Vec<_>>>()?;
                f.call(&args)
            }
        }
        .map(Cow::Owned),
        // The common forms, should they come here.
        Expr::Lit(_)
        | Expr::Error
        | Expr::Not(_)
        | Expr::And(..)
        | Expr::Or(..)
        | Expr::Bin(..)
        | Expr::If(..)
        | Expr::GetAttr(..) => ev(e, q),
    }
}

fn var_uid(v: Var, q: &Query<'_>) -> Option<u32> {
    match v {
        Var::Principal => Some(q.principal),
        Var::Action => Some(q.action),
        Var::Resource => Some(q.resource),
        Var::Context => None,
    }
}

/// `uid in rhs`: `rhs` an entity or a set of entities (every element must be one).
fn in_op(uid: u32, rhs: &Value, q: &Query<'_>) -> EvalResult<bool> {
    let ancestors: &[u32] = q.entity(uid).map_or(&[], |e| e.ancestors);
    let within = |p: u32| p == uid || ancestors.binary_search(&p).is_ok();
    match rhs {
        Value::Entity(p) => Ok(within(*p)),
        Value::Set(items) => {
            let mut found = false;
            for i in items.iter() {
                found |= within(i.as_entity()?);
            }
            Ok(found)
        }
        _ => Err(EvalError),
    }
}

fn binary<'a>(op: BinOp, x: &Value, y: &Value, q: &Query<'_>) -> EvalResult<Cow<'a, Value>> {
    Ok(Cow::Owned(Value::Bool(match op {
        BinOp::Eq => x == y,
        BinOp::Less(strict) => less(x, y, strict)?,
        BinOp::Arith(a) => return arith(a, x, y).map(Cow::Owned),
        BinOp::In => in_op(x.as_entity()?, y, q)?,
        BinOp::Contains => Value::set_contains(x.as_set()?, y),
        BinOp::ContainsAll => {
            let (a, b) = (x.as_set()?, y.as_set()?);
            b.iter().all(|v| Value::set_contains(a, v))
        }
        BinOp::ContainsAny => {
            let (a, b) = (x.as_set()?, y.as_set()?);
            b.iter().any(|v| Value::set_contains(a, v))
        }
        BinOp::GetTag => {
            let (u, tag) = (x.as_entity()?, y.as_str()?);
            let e = q.entity(u).ok_or(EvalError)?;
            return e.tag(tag).cloned().map(Cow::Owned).ok_or(EvalError);
        }
        BinOp::HasTag => {
            let (u, tag) = (x.as_entity()?, y.as_str()?);
            q.entity(u).is_some_and(|e| e.tag(tag).is_some())
        }
    })))
}

fn constant(e: &Expr) -> bool {
    matches!(e, Expr::Lit(_) | Expr::Error)
}

/// Folds constant subexpressions bottom-up. `q` is a query over an empty store: only
/// operators that do not read entity data are folded.
pub(crate) fn fold(e: Expr, q: &Query<'_>) -> Expr {
    let b = |x: Box<Expr>| Box::new(fold(*x, q));
    let e = match e {
        Expr::Not(a) => Expr::Not(b(a)),
        Expr::Neg(a) => Expr::Neg(b(a)),
        Expr::IsEmpty(a) => Expr::IsEmpty(b(a)),
        Expr::Bin(op, x, y) => Expr::Bin(op, b(x), b(y)),
        Expr::And(x, y) => Expr::And(b(x), b(y)),
        Expr::Or(x, y) => Expr::Or(b(x), b(y)),
        Expr::If(c, t, f) => Expr::If(b(c), b(t), b(f)),
        Expr::GetAttr(a, attr) => Expr::GetAttr(b(a), attr),
        Expr::HasAttr(a, chain) => Expr::HasAttr(b(a), chain),
        Expr::Like(a, p) => Expr::Like(b(a), p),
        Expr::Is(a, t, w) => Expr::Is(b(a), t, w.map(b)),
        Expr::Set(items) => Expr::Set(items.into_iter().map(|i| fold(i, q)).collect()),
        Expr::Record(pairs) => {
            Expr::Record(pairs.into_iter().map(|(k, v)| (k, fold(v, q))).collect())
        }
        Expr::Call(f, args) => Expr::Call(f, args.into_iter().map(|i| fold(i, q)).collect()),
        other => other,
    };
    let foldable = match &e {
        Expr::Lit(_) | Expr::Error | Expr::Var(_) => false,
        Expr::Not(a) | Expr::Neg(a) | Expr::IsEmpty(a) | Expr::Like(a, _) => constant(a),
        Expr::Bin(BinOp::In | BinOp::GetTag | BinOp::HasTag, _, _) => false,
        Expr::Bin(_, x, y) => constant(x) && constant(y),
        Expr::And(x, y) | Expr::Or(x, y) => {
            constant(x)
                && (constant(y)
                    || matches!(
                        (&e, &**x),
                        (Expr::And(..), Expr::Lit(Value::Bool(false)))
                            | (Expr::Or(..), Expr::Lit(Value::Bool(true)))
                    ))
        }
        Expr::If(c, t, f) => constant(c) && constant(t) && constant(f),
        Expr::GetAttr(a, _) => constant(a) && !matches!(&**a, Expr::Lit(Value::Entity(_))),
        Expr::HasAttr(a, chain) => {
            chain.len() == 1 && constant(a) && !matches!(&**a, Expr::Lit(Value::Entity(_)))
        }
        Expr::Is(a, _, w) => constant(a) && w.is_none(),
        Expr::Set(items) => items.iter().all(constant),
        Expr::Record(pairs) => pairs.iter().all(|(_, v)| constant(v)),
        Expr::Call(_, args) => args.iter().all(constant),
    };
    if !foldable {
        return e;
    }
    match eval(&e, q) {
        Ok(v) => Expr::Lit(v),
        Err(EvalError) => Expr::Error,
    }
}

/// Folds into `e` what `q`'s principal and action determine: `principal` and `action`
/// become their uids, and every subexpression that then reads nothing but constants
/// and the data of entities `known` accepts is evaluated (to its value, or to
/// [`Expr::Error`]). `known` is called with each entity whose attributes, ancestors or
/// tags a folded subexpression reads; `resource`, `context` and what reads them stay.
///
/// The result evaluates, for every resource and context, exactly as `e` does on `q`'s
/// principal and action (errors included) as long as the entities `known` accepted
/// are unchanged.
///
/// With `context`, the context is folded in too (`q`'s context and field): reading an
/// attribute it lacks is an error, as in Cedar; only `resource` and what reads it stay.
pub(crate) fn specialize(
    e: &Expr,
    q: &Query<'_>,
    known: &mut dyn FnMut(u32) -> bool,
    context: bool,
) -> Expr {
    let mut s = |x: &Expr| Box::new(specialize(x, q, known, context));
    let e = match e {
        Expr::Var(Var::Principal) => return Expr::Lit(Value::Entity(q.principal)),
        Expr::Var(Var::Action) => return Expr::Lit(Value::Entity(q.action)),
        Expr::Var(Var::Context) if context => return Expr::Lit(q.context_value()),
        Expr::GetAttr(a, attr) if context && matches!(**a, Expr::Var(Var::Context)) => {
            return q
                .context_attr(*attr)
                .map_or(Expr::Error, |v| Expr::Lit(v.into_owned()));
        }
        Expr::HasAttr(a, chain)
            if context && chain.len() == 1 && matches!(**a, Expr::Var(Var::Context)) =>
        {
            return evaluated(e, q);
        }
        Expr::Lit(_) | Expr::Error | Expr::Var(_) => return e.clone(),
        Expr::Not(a) => Expr::Not(s(a)),
        Expr::Neg(a) => Expr::Neg(s(a)),
        Expr::IsEmpty(a) => Expr::IsEmpty(s(a)),
        Expr::Bin(op, x, y) => Expr::Bin(*op, s(x), s(y)),
        Expr::And(x, y) => Expr::And(s(x), s(y)),
        Expr::Or(x, y) => Expr::Or(s(x), s(y)),
        Expr::If(c, t, f) => Expr::If(s(c), s(t), s(f)),
        Expr::GetAttr(a, attr) => Expr::GetAttr(s(a), *attr),
        Expr::HasAttr(a, chain) => Expr::HasAttr(s(a), chain.clone()),
        Expr::Like(a, p) => Expr::Like(s(a), p.clone()),
        Expr::Is(a, t, w) => Expr::Is(s(a), *t, w.as_deref().map(&mut s)),
        Expr::Set(items) => Expr::Set(
            items
                .iter()
                .map(|i| specialize(i, q, known, context))
                .collect(),
        ),
        Expr::Record(pairs) => Expr::Record(
            pairs
                .iter()
                .map(|(k, v)| (*k, specialize(v, q, known, context)))
                .collect(),
        ),
        Expr::Call(f, args) => Expr::Call(
            *f,
            args.iter()
                .map(|i| specialize(i, q, known, context))
                .collect(),
        ),
    };
    // The short-circuiting forms fold on their first operand alone.
    match &e {
        Expr::And(x, y) | Expr::Or(x, y) if constant(x) => {
            let stop = matches!(e, Expr::Or(..));
            return match &**x {
                Expr::Lit(Value::Bool(b)) if *b == stop => Expr::Lit(Value::Bool(stop)),
                Expr::Lit(Value::Bool(_)) if constant(y) => evaluated(&e, q),
                Expr::Lit(Value::Bool(_)) => e,
                _ => Expr::Error,
            };
        }
        Expr::If(c, t, f) if constant(c) => {
            return match &**c {
                Expr::Lit(Value::Bool(true)) => (**t).clone(),
                Expr::Lit(Value::Bool(false)) => (**f).clone(),
                _ => Expr::Error,
            };
        }
        _ => {}
    }
    // The entity whose data the operator reads, if any.
    let reads = |a: &Expr| match a {
        Expr::Lit(Value::Entity(u)) => Some(*u),
        _ => None,
    };
    let foldable = match &e {
        Expr::Not(a) | Expr::Neg(a) | Expr::IsEmpty(a) | Expr::Like(a, _) => constant(a),
        Expr::Is(a, _, None) => constant(a),
        Expr::Is(a, _, Some(w)) => constant(a) && constant(w) && reads(a).is_none_or(&mut *known),
        Expr::Bin(BinOp::In | BinOp::GetTag | BinOp::HasTag, x, y) => {
            constant(x) && constant(y) && reads(x).is_none_or(&mut *known)
        }
        Expr::Bin(_, x, y) => constant(x) && constant(y),
        Expr::GetAttr(a, _) => constant(a) && reads(a).is_none_or(&mut *known),
        // A longer chain may step through entities `known` has not seen.
        Expr::HasAttr(a, chain) => {
            chain.len() == 1 && constant(a) && reads(a).is_none_or(&mut *known)
        }
        Expr::Set(items) => items.iter().all(constant),
        Expr::Record(pairs) => pairs.iter().all(|(_, v)| constant(v)),
        Expr::Call(_, args) => args.iter().all(constant),
        _ => false,
    };
    if foldable {
        evaluated(&e, q)
    } else {
        e
    }
}

fn evaluated(e: &Expr, q: &Query<'_>) -> Expr {
    match eval(e, q) {
        Ok(v) => Expr::Lit(v),
        Err(EvalError) => Expr::Error,
    }
}
