//! The interpreter of compiled expressions, and constant folding with it.

use super::ir::{BinOp, Expr, Var};
use super::store::Query;
use super::value::{arith, less, record_get, wildcard_match, EvalError, EvalResult, Value};

/// Evaluates `e` for the request `q`, as Cedar's evaluator does.
pub(crate) fn eval(e: &Expr, q: &Query<'_>) -> EvalResult {
    match e {
        Expr::Lit(v) => Ok(v.clone()),
        Expr::Error => Err(EvalError),
        Expr::Var(v) => Ok(match v {
            Var::Principal => Value::Entity(q.principal),
            Var::Action => Value::Entity(q.action),
            Var::Resource => Value::Entity(q.resource),
            Var::Context => q.context_value(),
        }),
        Expr::Not(a) => Ok(Value::Bool(!eval(a, q)?.as_bool()?)),
        Expr::Neg(a) => eval(a, q)?
            .as_long()?
            .checked_neg()
            .map(Value::Long)
            .ok_or(EvalError),
        Expr::IsEmpty(a) => Ok(Value::Bool(eval(a, q)?.as_set()?.is_empty())),
        Expr::Bin(op, a, b) => {
            // Cedar evaluates both operands before applying any binary operator.
            if let (BinOp::Eq, Expr::Var(v), Expr::Lit(Value::Entity(u))) = (op, &**a, &**b) {
                return Ok(Value::Bool(var_uid(*v, q) == Some(*u)));
            }
            if let (BinOp::In, Expr::Var(v), Expr::Lit(rhs)) = (op, &**a, &**b) {
                if let Some(uid) = var_uid(*v, q) {
                    return in_op(uid, rhs, q).map(Value::Bool);
                }
            }
            let x = eval(a, q)?;
            let y = eval(b, q)?;
            binary(*op, &x, &y, q)
        }
        Expr::And(a, b) => Ok(Value::Bool(
            eval(a, q)?.as_bool()? && eval(b, q)?.as_bool()?,
        )),
        Expr::Or(a, b) => Ok(Value::Bool(
            eval(a, q)?.as_bool()? || eval(b, q)?.as_bool()?,
        )),
        Expr::If(c, t, f) => {
            if eval(c, q)?.as_bool()? {
                eval(t, q)
            } else {
                eval(f, q)
            }
        }
        Expr::GetAttr(a, attr) => {
            if let Expr::Var(Var::Context) = &**a {
                return q.context_attr(*attr).ok_or(EvalError);
            }
            match eval(a, q)? {
                Value::Record(r) => record_get(&r, *attr).cloned().ok_or(EvalError),
                Value::Entity(u) => q
                    .entity(u)
                    .and_then(|e| record_get(e.attrs, *attr))
                    .cloned()
                    .ok_or(EvalError),
                _ => Err(EvalError),
            }
        }
        Expr::HasAttr(a, chain) => {
            let mut rest: &[u32] = chain;
            let mut cur = match (&**a, chain.split_first()) {
                (Expr::Var(Var::Context), Some((first, tail))) => {
                    rest = tail;
                    match q.context_attr(*first) {
                        Some(v) => v,
                        None => return Ok(Value::Bool(false)),
                    }
                }
                _ => eval(a, q)?,
            };
            for attr in rest {
                let next = match &cur {
                    Value::Record(r) => record_get(r, *attr).cloned(),
                    Value::Entity(u) => q
                        .entity(*u)
                        .and_then(|e| record_get(e.attrs, *attr))
                        .cloned(),
                    _ => return Err(EvalError),
                };
                match next {
                    Some(n) => cur = n,
                    None => return Ok(Value::Bool(false)),
                }
            }
            Ok(Value::Bool(true))
        }
        Expr::Like(a, pat) => Ok(Value::Bool(wildcard_match(eval(a, q)?.as_str()?, pat))),
        Expr::Is(a, t, within) => {
            let u = eval(a, q)?.as_entity()?;
            if q.type_of(u) != *t {
                return Ok(Value::Bool(false));
            }
            match within {
                Some(r) => in_op(u, &eval(r, q)?, q).map(Value::Bool),
                None => Ok(Value::Bool(true)),
            }
        }
        Expr::Set(items) => Ok(Value::set(
            items
                .iter()
                .map(|i| eval(i, q))
                .collect::<EvalResult<Vec<_>>>()?,
        )),
        Expr::Record(pairs) => Ok(Value::record(
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
        },
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

fn binary(op: BinOp, x: &Value, y: &Value, q: &Query<'_>) -> EvalResult {
    Ok(Value::Bool(match op {
        BinOp::Eq => x == y,
        BinOp::Less(strict) => less(x, y, strict)?,
        BinOp::Arith(a) => return arith(a, x, y),
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
            return e.tag(tag).cloned().ok_or(EvalError);
        }
        BinOp::HasTag => {
            let (u, tag) = (x.as_entity()?, y.as_str()?);
            q.entity(u).is_some_and(|e| e.tag(tag).is_some())
        }
    }))
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
