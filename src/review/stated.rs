//! What a principal states beyond the moment it asks at: nothing, a purpose the policies
//! name, or a break-glass reason. A review's matrix and the record of processing ask in
//! each, so that what is reached only for a stated purpose is not shown as unreached.
//!
//! The purposes are read from the policies' JSON form ([`policy_purposes`]); [`visit`] and
//! [`is_context_attr`], which read it, serve the record's other questions of the policies
//! too (which of them read `context.reads_this_hour`).

use std::collections::BTreeSet;

use crate::request::Context;
use crate::Engine;

/// The break-glass reason asked with (what a data protection officer states).
const BREAK_GLASS: &str = "review: break-glass access";

/// One context a principal is asked in, and what it states beyond the moment.
#[derive(Debug, Clone)]
pub(crate) struct Stated {
    /// The context.
    pub ctx: Context,
    /// `None` for no purpose or reason; else `purpose X` or `a break-glass reason`.
    pub with: Option<String>,
}

/// `ctx` as it is, then with each of `purposes`, then with a break-glass reason.
pub(crate) fn stated(ctx: Context, purposes: &[String]) -> Vec<Stated> {
    let mut out = vec![Stated {
        ctx: ctx.clone(),
        with: None,
    }];
    for p in purposes {
        out.push(Stated {
            ctx: ctx.clone().purpose(p.clone()),
            with: Some(format!("purpose {p}")),
        });
    }
    out.push(Stated {
        ctx: ctx.reason(BREAK_GLASS),
        with: Some("a break-glass reason".to_string()),
    });
    out
}

/// The purposes the policies compare `context.purpose` with: every string on the other
/// side of an operator (`==`, `contains`, `in`, ...) from `context.purpose`, sorted.
pub(crate) fn policy_purposes(engine: &Engine) -> Vec<String> {
    let mut out = BTreeSet::new();
    for policy in engine.policies().policies() {
        let Ok(est) = policy.to_json() else { continue };
        visit(&est, &mut |node| {
            let Some(obj) = node.as_object() else { return };
            for operands in obj.values() {
                let (Some(left), Some(right)) = (operands.get("left"), operands.get("right"))
                else {
                    continue;
                };
                for (a, b) in [(left, right), (right, left)] {
                    if is_context_attr(a, "purpose") {
                        visit(b, &mut |v| {
                            if let Some(s) = v.get("Value").and_then(|s| s.as_str()) {
                                out.insert(s.to_string());
                            }
                        });
                    }
                }
            }
        });
    }
    out.into_iter().collect()
}

/// Calls `f` on `v` and every value inside it.
pub(crate) fn visit(v: &serde_json::Value, f: &mut dyn FnMut(&serde_json::Value)) {
    f(v);
    match v {
        serde_json::Value::Array(items) => items.iter().for_each(|i| visit(i, f)),
        serde_json::Value::Object(map) => map.values().for_each(|i| visit(i, f)),
        _ => {}
    }
}

/// Whether `v` is the expression `context.<attr>` (Cedar's JSON form).
pub(crate) fn is_context_attr(v: &serde_json::Value, attr: &str) -> bool {
    v.get(".").is_some_and(|dot| {
        dot.get("left")
            .and_then(|l| l.get("Var"))
            .and_then(|v| v.as_str())
            == Some("context")
            && dot.get("attr").and_then(|a| a.as_str()) == Some(attr)
    })
}
