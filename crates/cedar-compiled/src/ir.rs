//! The compiled form of a policy and its translation from Cedar's JSON policy format
//! (the EST written by `Policy::to_json`).

use serde_json::{Map, Value as Json};

use super::store::{json_uid, Symbols};
use super::value::{ArithOp, ExtFn, PatElem, Value};

/// A variable of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// `principal`
    Principal,
    /// `action`
    Action,
    /// `resource`
    Resource,
    /// `context`
    Context,
}

/// A binary operator whose two operands are always both evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `==`
    Eq,
    /// `<` (strict) or `<=`; `>`/`>=` are compiled with the operands swapped.
    Less(bool),
    /// `+`, `-`, `*`
    Arith(ArithOp),
    /// `in`
    In,
    /// `.contains`
    Contains,
    /// `.containsAll`
    ContainsAll,
    /// `.containsAny`
    ContainsAny,
    /// `.getTag`
    GetTag,
    /// `.hasTag`
    HasTag,
}

/// A compiled expression: names interned, literals folded.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A constant.
    Lit(Value),
    /// An expression that always errors when evaluated (e.g. `decimal("x")`).
    Error,
    /// A variable of the request.
    Var(Var),
    /// `!e`
    Not(Box<Expr>),
    /// `-e`
    Neg(Box<Expr>),
    /// `e.isEmpty()`
    IsEmpty(Box<Expr>),
    /// A binary operator.
    Bin(BinOp, Box<Expr>, Box<Expr>),
    /// `a && b`
    And(Box<Expr>, Box<Expr>),
    /// `a || b`
    Or(Box<Expr>, Box<Expr>),
    /// `if c then t else f`
    If(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `e.attr`, by attribute id.
    GetAttr(Box<Expr>, u32),
    /// `e has a.b.c`: the chain of attribute ids.
    HasAttr(Box<Expr>, Box<[u32]>),
    /// `e like "pattern"`
    Like(Box<Expr>, Box<[PatElem]>),
    /// `e is T` and, with the third field, `e is T in r`.
    Is(Box<Expr>, u32, Option<Box<Expr>>),
    /// `[a, b, ...]`
    Set(Vec<Expr>),
    /// `{a: .., b: ..}`, by attribute id.
    Record(Vec<(u32, Expr)>),
    /// An extension function call.
    Call(ExtFn, Vec<Expr>),
}

/// Why a policy cannot be compiled exactly.
pub(crate) type Unsupported = String;

/// A scope constraint on the principal or the resource, for the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TypeKey {
    Any,
    Type(u32),
}

/// What the compiler learnt from a policy's scope, for indexing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScopeKey {
    pub(crate) principal: TypeKey,
    /// `None`: any action; otherwise the uids of which the action must be one or a
    /// descendant.
    pub(crate) actions: Option<Vec<u32>>,
    pub(crate) resource: TypeKey,
}

/// A principal or resource scope constraint, with its names interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// No constraint.
    Any,
    /// `== E`
    Eq(u32),
    /// `in E`
    In(u32),
    /// `is T`
    Is(u32),
    /// `is T in E`
    IsIn(u32, u32),
}

/// A policy's condition: its scope constraints and then its `when`/`unless` bodies, as
/// one `&&` chain.
#[derive(Debug, Clone)]
pub(crate) struct Body {
    pub(crate) conjuncts: Vec<Expr>,
    pub(crate) key: ScopeKey,
    /// The principal and resource constraints.
    pub(crate) scopes: (Scope, Scope),
    /// Which of `conjuncts` come from the scope (one per constrained part, in the order
    /// principal, action, resource), as (principal, action, resource) flags.
    pub(crate) scope_parts: (bool, bool, bool),
}

/// Whether `j` is a policy with template slots.
pub(crate) fn has_slot(j: &Json) -> bool {
    ["principal", "resource"].iter().any(|k| {
        j.get(*k)
            .and_then(|c| {
                c.get("slot")
                    .or_else(|| c.get("in").and_then(|i| i.get("slot")))
            })
            .is_some()
    })
}

/// Compiles one policy's EST.
pub(crate) fn compile_policy(j: &Json, sym: &mut Symbols) -> Result<Body, Unsupported> {
    let mut conjuncts = Vec::new();
    let (principal, pscope) = scope(j.get("principal"), Var::Principal, sym, &mut conjuncts)?;
    let has_principal = !conjuncts.is_empty();
    let action = j.get("action").ok_or("no action constraint")?;
    let actions = match op(action)? {
        "All" | "all" => None,
        "==" => {
            let u = entity(action.get("entity"), sym)?;
            conjuncts.push(bin(
                BinOp::Eq,
                Expr::Var(Var::Action),
                Expr::Lit(Value::Entity(u)),
            ));
            Some(vec![u])
        }
        "in" => {
            if let Some(list) = action.get("entities") {
                let list = list.as_array().ok_or("`entities` is not a list")?;
                let uids = list
                    .iter()
                    .map(|e| entity(Some(e), sym))
                    .collect::<Result<Vec<_>, _>>()?;
                let set = Value::set(uids.iter().map(|u| Value::Entity(*u)).collect());
                conjuncts.push(bin(BinOp::In, Expr::Var(Var::Action), Expr::Lit(set)));
                Some(uids)
            } else {
                let u = entity(action.get("entity"), sym)?;
                conjuncts.push(bin(
                    BinOp::In,
                    Expr::Var(Var::Action),
                    Expr::Lit(Value::Entity(u)),
                ));
                Some(vec![u])
            }
        }
        other => return Err(format!("action constraint `{other}`")),
    };
    let has_action = conjuncts.len() > usize::from(has_principal);
    let before = conjuncts.len();
    let (resource, rscope) = scope(j.get("resource"), Var::Resource, sym, &mut conjuncts)?;
    let has_resource = conjuncts.len() > before;
    if let Some(conds) = j.get("conditions") {
        for c in conds.as_array().ok_or("`conditions` is not a list")? {
            let body = expr(c.get("body").ok_or("condition without body")?, sym)?;
            match c.get("kind").and_then(Json::as_str) {
                Some("when") => conjuncts.push(body),
                Some("unless") => conjuncts.push(Expr::Not(Box::new(body))),
                other => return Err(format!("condition kind {other:?}")),
            }
        }
    }
    Ok(Body {
        conjuncts,
        key: ScopeKey {
            principal,
            actions,
            resource,
        },
        scopes: (pscope, rscope),
        scope_parts: (has_principal, has_action, has_resource),
    })
}

fn op(c: &Json) -> Result<&str, Unsupported> {
    c.get("op")
        .and_then(Json::as_str)
        .ok_or_else(|| format!("scope constraint without `op`: {c}"))
}

fn entity(j: Option<&Json>, sym: &mut Symbols) -> Result<u32, Unsupported> {
    let j = j.ok_or("missing entity")?;
    if j.get("slot").is_some() {
        return Err("template slot".into());
    }
    let (ty, id) = json_uid(j).ok_or_else(|| format!("not an entity uid: {j}"))?;
    Ok(sym.uid(ty, id))
}

fn scope(
    c: Option<&Json>,
    var: Var,
    sym: &mut Symbols,
    out: &mut Vec<Expr>,
) -> Result<(TypeKey, Scope), Unsupported> {
    let c = c.ok_or("missing scope constraint")?;
    let v = || Expr::Var(var);
    Ok(match op(c)? {
        "All" | "all" => (TypeKey::Any, Scope::Any),
        "==" => {
            let u = entity(c.get("entity"), sym)?;
            out.push(bin(BinOp::Eq, v(), Expr::Lit(Value::Entity(u))));
            (
                sym.type_of(u).map_or(TypeKey::Any, TypeKey::Type),
                Scope::Eq(u),
            )
        }
        "in" => {
            let u = entity(c.get("entity"), sym)?;
            out.push(bin(BinOp::In, v(), Expr::Lit(Value::Entity(u))));
            (TypeKey::Any, Scope::In(u))
        }
        "is" => {
            let ty = c
                .get("entity_type")
                .and_then(Json::as_str)
                .ok_or("`is` without entity_type")?;
            let t = sym.types.intern(ty);
            let within = match c.get("in") {
                Some(i) => Some(entity(i.get("entity").or(Some(i)), sym)?),
                None => None,
            };
            out.push(Expr::Is(
                Box::new(v()),
                t,
                within.map(|u| Box::new(Expr::Lit(Value::Entity(u)))),
            ));
            let s = match within {
                Some(u) => Scope::IsIn(t, u),
                None => Scope::Is(t),
            };
            (TypeKey::Type(t), s)
        }
        other => return Err(format!("scope constraint `{other}`")),
    })
}

fn bin(op: BinOp, a: Expr, b: Expr) -> Expr {
    Expr::Bin(op, Box::new(a), Box::new(b))
}

fn field<'j>(m: &'j Json, k: &str) -> Result<&'j Json, Unsupported> {
    m.get(k).ok_or_else(|| format!("missing `{k}` in {m}"))
}

fn sub(m: &Json, k: &str, sym: &mut Symbols) -> Result<Box<Expr>, Unsupported> {
    Ok(Box::new(expr(field(m, k)?, sym)?))
}

/// A literal in Cedar's JSON value format, as an expression (an extension escape is a
/// call, evaluated — and possibly erroring — like one).
fn value_expr(j: &Json, sym: &mut Symbols) -> Result<Expr, Unsupported> {
    Ok(match j {
        Json::Bool(b) => Expr::Lit(Value::Bool(*b)),
        Json::Number(n) => Expr::Lit(Value::Long(
            n.as_i64()
                .ok_or_else(|| format!("number {n} out of range"))?,
        )),
        Json::String(s) => Expr::Lit(Value::String(s.as_str().into())),
        Json::Array(a) => Expr::Set(
            a.iter()
                .map(|i| value_expr(i, sym))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(m) => {
            if let (Some(e), 1) = (m.get("__entity"), m.len()) {
                return Ok(Expr::Lit(Value::Entity(entity(Some(e), sym)?)));
            }
            if let (Some(x), 1) = (m.get("__extn"), m.len()) {
                let name = x.get("fn").and_then(Json::as_str).ok_or("bad __extn")?;
                let f = ExtFn::from_name(name).ok_or_else(|| format!("function `{name}`"))?;
                let args = match (x.get("arg"), x.get("args")) {
                    (Some(a), None) => vec![value_expr(a, sym)?],
                    (None, Some(Json::Array(a))) => a
                        .iter()
                        .map(|i| value_expr(i, sym))
                        .collect::<Result<_, _>>()?,
                    _ => return Err("bad __extn".into()),
                };
                return Ok(Expr::Call(f, args));
            }
            if m.contains_key("__expr") {
                return Err("`__expr` escape".into());
            }
            Expr::Record(
                m.iter()
                    .map(|(k, v)| Ok((sym.attrs.intern(k), value_expr(v, sym)?)))
                    .collect::<Result<_, Unsupported>>()?,
            )
        }
        Json::Null => return Err("null literal".into()),
    })
}

/// Compiles one EST expression.
pub(crate) fn expr(j: &Json, sym: &mut Symbols) -> Result<Expr, Unsupported> {
    let m: &Map<String, Json> = j
        .as_object()
        .ok_or_else(|| format!("not an expression: {j}"))?;
    let mut it = m.iter();
    let (Some((k, a)), None) = (it.next(), it.next()) else {
        return Err(format!("not one operator: {j}"));
    };
    let b2 = |op: BinOp, sym: &mut Symbols| -> Result<Expr, Unsupported> {
        Ok(Expr::Bin(op, sub(a, "left", sym)?, sub(a, "right", sym)?))
    };
    Ok(match k.as_str() {
        "Value" => value_expr(a, sym)?,
        "Var" => Expr::Var(match a.as_str() {
            Some("principal") => Var::Principal,
            Some("action") => Var::Action,
            Some("resource") => Var::Resource,
            Some("context") => Var::Context,
            _ => return Err(format!("variable {a}")),
        }),
        "Slot" => return Err("template slot".into()),
        "!" => Expr::Not(sub(a, "arg", sym)?),
        "neg" => Expr::Neg(sub(a, "arg", sym)?),
        "isEmpty" => Expr::IsEmpty(sub(a, "arg", sym)?),
        "==" => b2(BinOp::Eq, sym)?,
        "!=" => Expr::Not(Box::new(b2(BinOp::Eq, sym)?)),
        "<" => b2(BinOp::Less(true), sym)?,
        "<=" => b2(BinOp::Less(false), sym)?,
        ">" | ">=" => {
            let (l, r) = (sub(a, "left", sym)?, sub(a, "right", sym)?);
            Expr::Bin(BinOp::Less(k == ">"), r, l)
        }
        "+" => b2(BinOp::Arith(ArithOp::Add), sym)?,
        "-" => b2(BinOp::Arith(ArithOp::Sub), sym)?,
        "*" => b2(BinOp::Arith(ArithOp::Mul), sym)?,
        "in" => b2(BinOp::In, sym)?,
        "contains" => b2(BinOp::Contains, sym)?,
        "containsAll" => b2(BinOp::ContainsAll, sym)?,
        "containsAny" => b2(BinOp::ContainsAny, sym)?,
        "getTag" => b2(BinOp::GetTag, sym)?,
        "hasTag" => b2(BinOp::HasTag, sym)?,
        "&&" => Expr::And(sub(a, "left", sym)?, sub(a, "right", sym)?),
        "||" => Expr::Or(sub(a, "left", sym)?, sub(a, "right", sym)?),
        "." => {
            let attr = field(a, "attr")?.as_str().ok_or("attr is not a string")?;
            Expr::GetAttr(sub(a, "left", sym)?, sym.attrs.intern(attr))
        }
        "has" => {
            let attrs: Vec<u32> = match field(a, "attr")? {
                Json::String(s) => vec![sym.attrs.intern(s)],
                Json::Array(list) if !list.is_empty() => list
                    .iter()
                    .map(|s| s.as_str().map(|s| sym.attrs.intern(s)).ok_or("bad attr"))
                    .collect::<Result<_, _>>()?,
                other => return Err(format!("has attr {other}")),
            };
            Expr::HasAttr(sub(a, "left", sym)?, attrs.into())
        }
        "like" => {
            let mut pat = Vec::new();
            for p in field(a, "pattern")?.as_array().ok_or("pattern")? {
                match p {
                    Json::String(w) if w == "Wildcard" => pat.push(PatElem::Wildcard),
                    _ => {
                        let lit = p
                            .get("Literal")
                            .and_then(Json::as_str)
                            .ok_or_else(|| format!("pattern element {p}"))?;
                        pat.extend(lit.chars().map(PatElem::Char));
                    }
                }
            }
            Expr::Like(sub(a, "left", sym)?, pat.into())
        }
        "is" => {
            let ty = field(a, "entity_type")?.as_str().ok_or("entity_type")?;
            let t = sym.types.intern(ty);
            let within = match a.get("in") {
                Some(i) => Some(Box::new(expr(i, sym)?)),
                None => None,
            };
            Expr::Is(sub(a, "left", sym)?, t, within)
        }
        "if-then-else" => Expr::If(
            sub(a, "if", sym)?,
            sub(a, "then", sym)?,
            sub(a, "else", sym)?,
        ),
        "Set" => Expr::Set(
            a.as_array()
                .ok_or("Set is not a list")?
                .iter()
                .map(|i| expr(i, sym))
                .collect::<Result<_, _>>()?,
        ),
        "Record" => Expr::Record(
            a.as_object()
                .ok_or("Record is not an object")?
                .iter()
                .map(|(k, v)| Ok((sym.attrs.intern(k), expr(v, sym)?)))
                .collect::<Result<_, Unsupported>>()?,
        ),
        name => {
            let f = ExtFn::from_name(name).ok_or_else(|| format!("unknown operator `{name}`"))?;
            let args = a
                .as_array()
                .ok_or_else(|| format!("arguments of `{name}`"))?
                .iter()
                .map(|i| expr(i, sym))
                .collect::<Result<_, _>>()?;
            Expr::Call(f, args)
        }
    })
}
