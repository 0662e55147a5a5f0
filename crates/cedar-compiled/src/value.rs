//! Runtime values of the compiled evaluator and Cedar's extension functions on them.
//!
//! Every operation here mirrors `cedar-policy-core` 4.14.1 (`evaluator.rs` and
//! `extensions/*.rs`): only whether an operation errors matters, not the message, so
//! errors are the unit struct [`EvalError`].

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

/// An evaluation error. Cedar's message is not reproduced: the compiled evaluator only
/// needs to know *that* a policy errored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalError;

/// The result of evaluating an expression.
pub type EvalResult<T = Value> = Result<T, EvalError>;

/// A Cedar value with entity uids and attribute names interned (see
/// [`Store`](super::Store)).
///
/// Sets are sorted and deduplicated and records are sorted by attribute id, so the
/// derived equality is Cedar's: values of different types are unequal, sets compare as
/// sets, extension values compare by value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer.
    Long(i64),
    /// A string.
    String(Arc<str>),
    /// An entity uid, by its interned id.
    Entity(u32),
    /// A set: sorted, without duplicates.
    Set(Arc<[Value]>),
    /// A record: `(attribute id, value)` pairs sorted by attribute id.
    Record(Arc<[(u32, Value)]>),
    /// A `decimal`, scaled by 10^4.
    Decimal(i64),
    /// An `ipaddr`: the address as written and its prefix length.
    Ip(IpAddr, u8),
    /// A `datetime`: milliseconds since the Unix epoch.
    DateTime(i64),
    /// A `duration` in milliseconds.
    Duration(i64),
}

impl Value {
    /// A set from values in any order, with duplicates.
    pub fn set(mut items: Vec<Value>) -> Value {
        items.sort_unstable();
        items.dedup();
        Value::Set(items.into())
    }

    /// A record from pairs in any order. A repeated key keeps its last value.
    pub fn record(mut pairs: Vec<(u32, Value)>) -> Value {
        pairs.reverse();
        pairs.sort_by_key(|(k, _)| *k);
        pairs.dedup_by_key(|(k, _)| *k);
        Value::Record(pairs.into())
    }

    pub(crate) fn as_bool(&self) -> EvalResult<bool> {
        match self {
            Value::Bool(b) => Ok(*b),
            _ => Err(EvalError),
        }
    }
    pub(crate) fn as_long(&self) -> EvalResult<i64> {
        match self {
            Value::Long(i) => Ok(*i),
            _ => Err(EvalError),
        }
    }
    pub(crate) fn as_str(&self) -> EvalResult<&str> {
        match self {
            Value::String(s) => Ok(s),
            _ => Err(EvalError),
        }
    }
    pub(crate) fn as_entity(&self) -> EvalResult<u32> {
        match self {
            Value::Entity(e) => Ok(*e),
            _ => Err(EvalError),
        }
    }
    pub(crate) fn as_set(&self) -> EvalResult<&[Value]> {
        match self {
            Value::Set(s) => Ok(s),
            _ => Err(EvalError),
        }
    }

    /// Whether a sorted set contains `v`: a small set is scanned with `==` (strings
    /// of another length, or the same shared string, are told apart without comparing
    /// bytes), a larger one searched.
    pub(crate) fn set_contains(set: &[Value], v: &Value) -> bool {
        if set.len() <= 8 {
            set.iter().any(|x| x == v)
        } else {
            set.binary_search(v).is_ok()
        }
    }
}

/// Looks up `attr` in a record's sorted pairs.
pub(crate) fn record_get(pairs: &[(u32, Value)], attr: u32) -> Option<&Value> {
    if pairs.len() <= 8 {
        return pairs.iter().find(|(k, _)| *k == attr).map(|(_, v)| v);
    }
    pairs
        .binary_search_by_key(&attr, |(k, _)| *k)
        .ok()
        .and_then(|i| pairs.get(i))
        .map(|(_, v)| v)
}

/// `<` (when `strict`) or `<=`: on two Longs, two datetimes or two durations; anything
/// else (decimals included: they do not overload operators) is a type error.
pub(crate) fn less(a: &Value, b: &Value, strict: bool) -> EvalResult<bool> {
    let (x, y) = match (a, b) {
        (Value::Long(x), Value::Long(y))
        | (Value::DateTime(x), Value::DateTime(y))
        | (Value::Duration(x), Value::Duration(y)) => (*x, *y),
        _ => return Err(EvalError),
    };
    Ok(if strict { x < y } else { x <= y })
}

/// `+`, `-`, `*` on Longs, checked.
pub(crate) fn arith(op: ArithOp, a: &Value, b: &Value) -> EvalResult {
    let (x, y) = (a.as_long()?, b.as_long()?);
    match op {
        ArithOp::Add => x.checked_add(y),
        ArithOp::Sub => x.checked_sub(y),
        ArithOp::Mul => x.checked_mul(y),
    }
    .map(Value::Long)
    .ok_or(EvalError)
}

/// An arithmetic operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
}

/// One element of a `like` pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatElem {
    /// `*`
    Wildcard,
    /// One literal character.
    Char(char),
}

/// Cedar's `like`: `*` matches any sequence of characters (greedy with backtracking).
pub(crate) fn wildcard_match(text: &str, pattern: &[PatElem]) -> bool {
    let text: Vec<char> = text.chars().collect();
    let (mut t, mut p) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(PatElem::Wildcard) => {
                star = Some((p, t));
                p += 1;
            }
            Some(PatElem::Char(c)) if text.get(t) == Some(c) => {
                t += 1;
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|e| *e == PatElem::Wildcard))
}

/// The extension functions of Cedar 4.14.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtFn {
    /// The extension function of that name (`Decimal`).
    Decimal,
    /// The extension function of that name (`LessThan`).
    LessThan,
    /// The extension function of that name (`LessThanOrEqual`).
    LessThanOrEqual,
    /// The extension function of that name (`GreaterThan`).
    GreaterThan,
    /// The extension function of that name (`GreaterThanOrEqual`).
    GreaterThanOrEqual,
    /// The extension function of that name (`Ip`).
    Ip,
    /// The extension function of that name (`IsIpv4`).
    IsIpv4,
    /// The extension function of that name (`IsIpv6`).
    IsIpv6,
    /// The extension function of that name (`IsLoopback`).
    IsLoopback,
    /// The extension function of that name (`IsMulticast`).
    IsMulticast,
    /// The extension function of that name (`IsInRange`).
    IsInRange,
    /// The extension function of that name (`DateTime`).
    DateTime,
    /// The extension function of that name (`Duration`).
    Duration,
    /// The extension function of that name (`Offset`).
    Offset,
    /// The extension function of that name (`DurationSince`).
    DurationSince,
    /// The extension function of that name (`ToDate`).
    ToDate,
    /// The extension function of that name (`ToTime`).
    ToTime,
    /// The extension function of that name (`ToMilliseconds`).
    ToMilliseconds,
    /// The extension function of that name (`ToSeconds`).
    ToSeconds,
    /// The extension function of that name (`ToMinutes`).
    ToMinutes,
    /// The extension function of that name (`ToHours`).
    ToHours,
    /// The extension function of that name (`ToDays`).
    ToDays,
}

impl ExtFn {
    /// The function called `name`, if Cedar has one.
    pub(crate) fn from_name(name: &str) -> Option<ExtFn> {
        Some(match name {
            "decimal" => ExtFn::Decimal,
            "lessThan" => ExtFn::LessThan,
            "lessThanOrEqual" => ExtFn::LessThanOrEqual,
            "greaterThan" => ExtFn::GreaterThan,
            "greaterThanOrEqual" => ExtFn::GreaterThanOrEqual,
            "ip" => ExtFn::Ip,
            "isIpv4" => ExtFn::IsIpv4,
            "isIpv6" => ExtFn::IsIpv6,
            "isLoopback" => ExtFn::IsLoopback,
            "isMulticast" => ExtFn::IsMulticast,
            "isInRange" => ExtFn::IsInRange,
            "datetime" => ExtFn::DateTime,
            "duration" => ExtFn::Duration,
            "offset" => ExtFn::Offset,
            "durationSince" => ExtFn::DurationSince,
            "toDate" => ExtFn::ToDate,
            "toTime" => ExtFn::ToTime,
            "toMilliseconds" => ExtFn::ToMilliseconds,
            "toSeconds" => ExtFn::ToSeconds,
            "toMinutes" => ExtFn::ToMinutes,
            "toHours" => ExtFn::ToHours,
            "toDays" => ExtFn::ToDays,
            _ => return None,
        })
    }

    /// Applies the function to evaluated arguments (a method's receiver first).
    pub(crate) fn call(self, args: &[Value]) -> EvalResult {
        use ExtFn::*;
        match (self, args) {
            (Decimal, [s]) => parse_decimal(s.as_str()?).map(Value::Decimal),
            (LessThan | LessThanOrEqual | GreaterThan | GreaterThanOrEqual, [a, b]) => {
                let (Value::Decimal(x), Value::Decimal(y)) = (a, b) else {
                    return Err(EvalError);
                };
                Ok(Value::Bool(match self {
                    LessThan => x < y,
                    LessThanOrEqual => x <= y,
                    GreaterThan => x > y,
                    _ => x >= y,
                }))
            }
            (Ip, [s]) => parse_ip(s.as_str()?).map(|(a, p)| Value::Ip(a, p)),
            (IsIpv4 | IsIpv6 | IsLoopback | IsMulticast, [Value::Ip(addr, prefix)]) => {
                Ok(Value::Bool(match self {
                    IsIpv4 => addr.is_ipv4(),
                    IsIpv6 => addr.is_ipv6(),
                    IsLoopback => {
                        addr.is_loopback() && *prefix >= if addr.is_ipv4() { 8 } else { 128 }
                    }
                    _ => addr.is_multicast() && *prefix >= if addr.is_ipv4() { 4 } else { 8 },
                }))
            }
            (IsInRange, [child, parents @ ..])
                if parents.len() == 1 || (!parents.is_empty() && variadic_is_in_range()) =>
            {
                let Value::Ip(ca, cp) = child else {
                    return Err(EvalError);
                };
                let mut acc = false;
                for p in parents {
                    let Value::Ip(pa, pp) = p else {
                        return Err(EvalError);
                    };
                    acc = acc || ip_in_range((*ca, *cp), (*pa, *pp));
                }
                Ok(Value::Bool(acc))
            }
            (DateTime, [s]) => parse_datetime(s.as_str()?).map(Value::DateTime),
            (Duration, [s]) => parse_duration(s.as_str()?).map(Value::Duration),
            (Offset, [Value::DateTime(d), Value::Duration(o)]) => {
                d.checked_add(*o).map(Value::DateTime).ok_or(EvalError)
            }
            (DurationSince, [Value::DateTime(a), Value::DateTime(b)]) => {
                a.checked_sub(*b).map(Value::Duration).ok_or(EvalError)
            }
            (ToDate, [Value::DateTime(d)]) => d
                .checked_rem_euclid(DAY_MS)
                .and_then(|r| d.checked_sub(r))
                .map(Value::DateTime)
                .ok_or(EvalError),
            (ToTime, [Value::DateTime(d)]) => Ok(Value::Duration(if d.is_negative() {
                let rem = d % DAY_MS;
                if rem == 0 {
                    rem
                } else {
                    rem + DAY_MS
                }
            } else {
                d % DAY_MS
            })),
            (ToMilliseconds, [Value::Duration(d)]) => Ok(Value::Long(*d)),
            (ToSeconds, [Value::Duration(d)]) => Ok(Value::Long(d / 1000)),
            (ToMinutes, [Value::Duration(d)]) => Ok(Value::Long(d / 1000 / 60)),
            (ToHours, [Value::Duration(d)]) => Ok(Value::Long(d / 1000 / 60 / 60)),
            (ToDays, [Value::Duration(d)]) => Ok(Value::Long(d / 1000 / 60 / 60 / 24)),
            _ => Err(EvalError),
        }
    }
}

const DAY_MS: i64 = 1000 * 3600 * 24;

/// Whether this build of Cedar accepts `isInRange` with several ranges (its
/// `variadic-is-in-range` feature): asked of Cedar once.
fn variadic_is_in_range() -> bool {
    static VARIADIC: OnceLock<bool> = OnceLock::new();
    *VARIADIC.get_or_init(|| {
        let probe = || -> Option<bool> {
            let set: cedar_policy::PolicySet = r#"permit(principal, action, resource) when {
                ip("1.1.1.1").isInRange(ip("1.1.1.1"), ip("1.1.1.1")) };"#
                .parse()
                .ok()?;
            let uid: cedar_policy::EntityUid = r#"P::"p""#.parse().ok()?;
            let request = cedar_policy::Request::new(
                uid.clone(),
                uid.clone(),
                uid,
                cedar_policy::Context::empty(),
                None,
            )
            .ok()?;
            let response = cedar_policy::Authorizer::new().is_authorized(
                &request,
                &set,
                &cedar_policy::Entities::empty(),
            );
            Some(response.decision() == cedar_policy::Decision::Allow)
        };
        probe().unwrap_or(false)
    })
}

/// `decimal("...")`: `-?digits.digits`, 1 to 4 fractional digits, in i64 range once
/// scaled by 10^4.
pub(crate) fn parse_decimal(s: &str) -> EvalResult<i64> {
    let (l_str, r_str) = s.split_once('.').ok_or(EvalError)?;
    let l_digits = l_str.strip_prefix('-').unwrap_or(l_str);
    let all_digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(l_digits) || !all_digits(r_str) {
        return Err(EvalError);
    }
    let l: i64 = l_str.parse().map_err(|_| EvalError)?;
    let l = l.checked_mul(10_000).ok_or(EvalError)?;
    let len = u32::try_from(r_str.len()).map_err(|_| EvalError)?;
    if len > 4 {
        return Err(EvalError);
    }
    let r: i64 = r_str.parse().map_err(|_| EvalError)?;
    let r = r.checked_mul(10_i64.pow(4 - len)).ok_or(EvalError)?;
    if l_str.starts_with('-') {
        l.checked_sub(r)
    } else {
        l.checked_add(r)
    }
    .ok_or(EvalError)
}

fn contains_at_least_two(s: &str, c: char) -> bool {
    s.matches(c).nth(1).is_some()
}

fn parse_prefix(s: &str, max: u8, max_len: usize) -> EvalResult<u8> {
    if s.len() > max_len
        || s.chars().any(|c| !c.is_ascii_digit())
        || (s.starts_with('0') && s != "0")
    {
        return Err(EvalError);
    }
    let res: u8 = s.parse().map_err(|_| EvalError)?;
    if res > max {
        return Err(EvalError);
    }
    Ok(res)
}

/// `ip("...")`: an IPv4 or IPv6 address with an optional `/prefix`, as Cedar reads it.
pub(crate) fn parse_ip(s: &str) -> EvalResult<(IpAddr, u8)> {
    if s.len() > 43 || (contains_at_least_two(s, ':') && contains_at_least_two(s, '.')) {
        return Err(EvalError);
    }
    match s.split_once('/') {
        Some((addr_str, prefix_str)) => {
            let addr: IpAddr = addr_str.parse().map_err(|_| EvalError)?;
            let prefix = match addr {
                IpAddr::V4(_) => parse_prefix(prefix_str, 32, 2)?,
                IpAddr::V6(_) => parse_prefix(prefix_str, 128, 3)?,
            };
            Ok((addr, prefix))
        }
        None => {
            let addr: IpAddr = s.parse().map_err(|_| EvalError)?;
            Ok((addr, if addr.is_ipv4() { 32 } else { 128 }))
        }
    }
}

fn ip_in_range(child: (IpAddr, u8), parent: (IpAddr, u8)) -> bool {
    match (child.0, parent.0) {
        (IpAddr::V4(c), IpAddr::V4(p)) => {
            let netmask = |prefix: u8| u32::MAX.checked_shl((32 - prefix).into()).unwrap_or(0);
            let hostmask = |prefix: u8| u32::MAX.checked_shr(prefix.into()).unwrap_or(0);
            let (c, p) = (u32::from(c), u32::from(p));
            (p & netmask(parent.1)) <= (c & netmask(child.1))
                && (c | hostmask(child.1)) <= (p | hostmask(parent.1))
        }
        (IpAddr::V6(c), IpAddr::V6(p)) => {
            let netmask = |prefix: u8| u128::MAX.checked_shl((128 - prefix).into()).unwrap_or(0);
            let hostmask = |prefix: u8| u128::MAX.checked_shr(prefix.into()).unwrap_or(0);
            let (c, p) = (u128::from(c), u128::from(p));
            (p & netmask(parent.1)) <= (c & netmask(child.1))
                && (c | hostmask(child.1)) <= (p | hostmask(parent.1))
        }
        _ => false,
    }
}

/// `duration("...")`: an optional `-` then quantity-unit pairs in the order `d h m s ms`,
/// each at most once, at least one; the total in milliseconds must fit an i64.
pub(crate) fn parse_duration(s: &str) -> EvalResult<i64> {
    let negative = s.starts_with('-');
    let body = s.strip_prefix('-').unwrap_or(s);
    if body.is_empty() {
        return Err(EvalError);
    }
    // quantities for d, h, m, s, ms
    let mut q: [Option<&str>; 5] = [None; 5];
    let bytes = body.as_bytes();
    let mut i = 0usize;
    let mut last: Option<usize> = None;
    while i < bytes.len() {
        let start = i;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return Err(EvalError);
        }
        let digits = body.get(start..i).ok_or(EvalError)?;
        let unit = match bytes.get(i) {
            Some(b'd') => 0,
            Some(b'h') => 1,
            Some(b'm') if bytes.get(i + 1) == Some(&b's') => {
                i += 1;
                4
            }
            Some(b'm') => 2,
            Some(b's') => 3,
            _ => return Err(EvalError),
        };
        i += 1;
        if last.is_some_and(|l| l >= unit) {
            return Err(EvalError);
        }
        last = Some(unit);
        if let Some(slot) = q.get_mut(unit) {
            *slot = Some(digits);
        }
    }
    let num = |d: Option<&str>| -> EvalResult<u64> {
        d.map_or(Ok(0), |d| d.parse::<u64>().map_err(|_| EvalError))
    };
    let [d, h, m, sec, ms] = q;
    let (d, h, m, sec, ms) = (num(d)?, num(h)?, num(m)?, num(sec)?, num(ms)?);
    let step = |acc: i64, y: u64, mul: i64| -> EvalResult<i64> {
        let y = i64::try_from(y).map_err(|_| EvalError)?;
        let y = y.checked_mul(mul).ok_or(EvalError)?;
        if negative {
            acc.checked_sub(y)
        } else {
            acc.checked_add(y)
        }
        .ok_or(EvalError)
    };
    let mut total = if negative {
        i64::try_from(-i128::from(ms)).map_err(|_| EvalError)?
    } else {
        i64::try_from(ms).map_err(|_| EvalError)?
    };
    total = step(total, sec, 1000)?;
    total = step(total, m, 1000 * 60)?;
    total = step(total, h, 1000 * 60 * 60)?;
    total = step(total, d, 1000 * 60 * 60 * 24)?;
    Ok(total)
}

fn digits(b: &[u8]) -> Option<i64> {
    let mut n = 0i64;
    for c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(c - b'0');
    }
    Some(n)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `datetime("...")`: `YYYY-MM-DD`, optionally followed by `THH:MM:SS` and then `Z`,
/// `.SSSZ`, `(+|-)hhmm` or `.SSS(+|-)hhmm`; milliseconds since the epoch.
pub(crate) fn parse_datetime(s: &str) -> EvalResult<i64> {
    let b = s.as_bytes();
    let field = |r: std::ops::Range<usize>| b.get(r).and_then(digits).ok_or(EvalError);
    let (y, mo, d) = (field(0..4)?, field(5..7)?, field(8..10)?);
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return Err(EvalError);
    }
    let month_len = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => return Err(EvalError),
    };
    if d < 1 || d > month_len {
        return Err(EvalError);
    }
    let day_ms = days_from_civil(y, mo, d) * DAY_MS;
    if b.len() == 10 {
        return Ok(day_ms);
    }
    if b.get(10) != Some(&b'T') || b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return Err(EvalError);
    }
    let (h, mi, sec) = (field(11..13)?, field(14..16)?, field(17..19)?);
    let rest = b.get(19..).ok_or(EvalError)?;
    let (ms, rest) = match rest.first() {
        Some(b'.') => (
            rest.get(1..4).and_then(digits).ok_or(EvalError)?,
            rest.get(4..).ok_or(EvalError)?,
        ),
        _ => (0, rest),
    };
    let offset_secs = match rest {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), hh @ ..] if hh.len() == 4 => {
            let oh = hh.get(0..2).and_then(digits).ok_or(EvalError)?;
            let om = hh.get(2..4).and_then(digits).ok_or(EvalError)?;
            if oh >= 24 || om >= 60 {
                return Err(EvalError);
            }
            let secs = oh * 3600 + om * 60;
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return Err(EvalError),
    };
    if h >= 24 || mi >= 60 || sec >= 60 {
        return Err(EvalError);
    }
    Ok(day_ms + h * 3_600_000 + mi * 60_000 + sec * 1000 + ms - offset_secs * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        assert_eq!(parse_decimal("1.5"), Ok(15000));
        assert_eq!(parse_decimal("-0.0001"), Ok(-1));
        assert!(parse_decimal("1.").is_err());
        assert!(parse_decimal("1.12345").is_err());
        assert_eq!(parse_duration("1d2h3m4s5ms"), Ok(93_784_005));
        assert_eq!(parse_duration("-1ms"), Ok(-1));
        assert!(parse_duration("1h1d").is_err());
        assert!(parse_duration("-").is_err());
        assert_eq!(parse_datetime("1970-01-02"), Ok(DAY_MS));
        assert_eq!(parse_datetime("1970-01-01T00:00:01.001+0000"), Ok(1001));
        assert_eq!(parse_datetime("1970-01-01T01:00:00+0100"), Ok(0));
        assert!(parse_datetime("1970-02-30").is_err());
        assert!(parse_datetime("1970-01-01T24:00:00Z").is_err());
        assert!(parse_datetime("1970-01-01T00:00:00").is_err());
        assert!(wildcard_match(
            "abc",
            &[PatElem::Char('a'), PatElem::Wildcard]
        ));
    }
}
