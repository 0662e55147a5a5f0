//! A counterexample written for a person: the request, its context, and only the
//! entities the request reaches (through attributes, transitively), with times as RFC 3339.

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write as _;

use cedar_policy::{Entities, EntityUid, EvalResult, Request};

/// Renders `request` and the entities it reaches in `entities`.
pub(crate) fn render(request: &Request, entities: &Entities) -> String {
    let mut out = String::new();
    let mut queue: VecDeque<EntityUid> = VecDeque::new();
    let name = |uid: Option<&EntityUid>| uid.map_or_else(|| "?".to_string(), |u| u.to_string());
    let _ = writeln!(
        out,
        "request:   {} · {} · {}",
        name(request.principal()),
        name(request.action()),
        name(request.resource())
    );
    queue.extend(request.principal().cloned());
    queue.extend(request.resource().cloned());
    if let Some(context) = request.context() {
        let keys: BTreeSet<String> = context.clone().into_iter().map(|(k, _)| k).collect();
        let fields: Vec<String> = keys
            .iter()
            .filter_map(|k| {
                let v = context.get(k)?;
                Some(format!("{k} = {}", value(&v, &mut queue)))
            })
            .collect();
        let _ = writeln!(out, "context:   {}", fields.join(", "));
    }
    let mut seen = BTreeSet::new();
    while let Some(uid) = queue.pop_front() {
        if uid.type_name().basename() == "Action" || !seen.insert(uid.clone()) {
            continue;
        }
        let mut line = uid.to_string();
        if let Some(ancestors) = entities.ancestors(&uid) {
            let mut names: Vec<String> = ancestors.map(ToString::to_string).collect();
            names.sort();
            if !names.is_empty() {
                let _ = write!(line, " in [{}]", names.join(", "));
            }
        }
        if let Some(entity) = entities.get(&uid) {
            let attrs: Vec<String> = entity
                .attrs()
                .map(|(k, v)| match v {
                    Ok(v) => format!("{k} = {}", value(&v, &mut queue)),
                    Err(_) => format!("{k} = ?"),
                })
                .collect();
            if !attrs.is_empty() {
                let _ = write!(line, " {{ {} }}", attrs.join(", "));
            }
        }
        let _ = writeln!(out, "entity:    {line}");
    }
    out.trim_end().to_string()
}

/// A value in Cedar syntax, times made readable; entity uids it holds are queued.
fn value(v: &EvalResult, queue: &mut VecDeque<EntityUid>) -> String {
    match v {
        EvalResult::Bool(b) => b.to_string(),
        EvalResult::Long(n) => n.to_string(),
        EvalResult::String(s) => format!("{s:?}"),
        EvalResult::EntityUid(uid) => {
            queue.push_back(uid.clone());
            uid.to_string()
        }
        EvalResult::Set(set) => {
            let items: Vec<String> = set.iter().map(|x| value(x, queue)).collect();
            format!("[{}]", items.join(", "))
        }
        EvalResult::Record(record) => {
            let items: Vec<String> = record
                .iter()
                .map(|(k, x)| format!("{k}: {}", value(x, queue)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        EvalResult::ExtensionValue(s) => readable_datetime(s).unwrap_or_else(|| s.clone()),
    }
}

/// `datetime("1970-01-01").offset(duration("-2ms"))` as `1969-12-31T23:59:59.998Z`
/// (`None` for other values, or times outside the years -9999 to 9999).
pub(super) fn readable_datetime(s: &str) -> Option<String> {
    let rest = s.strip_prefix("datetime(\"")?;
    let (base, rest) = rest.split_once("\")")?;
    let base: jiff::Timestamp = match base.parse::<jiff::civil::Date>() {
        Ok(date) if base.len() == 10 => date.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp(),
        _ => base.parse().ok()?,
    };
    let millis: i64 = if rest.is_empty() {
        0
    } else {
        rest.strip_prefix(".offset(duration(\"")?
            .strip_suffix("ms\"))")?
            .parse()
            .ok()?
    };
    let at = base
        .checked_add(jiff::SignedDuration::from_millis(millis))
        .ok()?;
    Some(at.to_string())
}

#[cfg(test)]
mod tests {
    use super::readable_datetime;

    #[test]
    fn datetimes_become_rfc3339() {
        assert_eq!(
            readable_datetime(r#"datetime("1970-01-01").offset(duration("-2ms"))"#).as_deref(),
            Some("1969-12-31T23:59:59.998Z")
        );
        assert_eq!(
            readable_datetime(r#"datetime("2020-02-14T00:00:00Z")"#).as_deref(),
            Some("2020-02-14T00:00:00Z")
        );
        let far = r#"datetime("1970-01-01").offset(duration("9223372036854775807ms"))"#;
        assert_eq!(readable_datetime(far), None);
        assert_eq!(readable_datetime(r#"decimal("1.0")"#), None);
    }
}
