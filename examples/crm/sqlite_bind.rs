//! sea-query's values bound in rusqlite 0.43 (no release of `sea-query-rusqlite` supports
//! it). Shared by the example CRM (`db.rs`) and the plans' SQL test
//! (`tests/plans/sql.rs`, through `#[path]`): one binder for both.

use membergate::plan::sql::sea_query::Value;
use rusqlite::types::Value as SqlValue;

/// The statement's values as SQLite's, in order; an error names a value SQLite is not
/// given here (only integers, booleans and text are).
pub fn bound(values: impl IntoIterator<Item = Value>) -> Result<Vec<SqlValue>, String> {
    values.into_iter().map(one).collect()
}

fn one(v: Value) -> Result<SqlValue, String> {
    let int = |i: Option<i64>| i.map_or(SqlValue::Null, SqlValue::Integer);
    Ok(match v {
        Value::Bool(b) => int(b.map(i64::from)),
        Value::TinyInt(i) => int(i.map(i64::from)),
        Value::SmallInt(i) => int(i.map(i64::from)),
        Value::Int(i) => int(i.map(i64::from)),
        Value::BigInt(i) => int(i),
        Value::TinyUnsigned(i) => int(i.map(i64::from)),
        Value::SmallUnsigned(i) => int(i.map(i64::from)),
        Value::Unsigned(i) => int(i.map(i64::from)),
        Value::BigUnsigned(None) => SqlValue::Null,
        Value::BigUnsigned(Some(u)) => SqlValue::Integer(
            i64::try_from(u).map_err(|_| format!("the value {u} does not fit SQLite"))?,
        ),
        Value::String(s) => s.map_or(SqlValue::Null, SqlValue::Text),
        other => return Err(format!("a value SQLite is not given here: {other:?}")),
    })
}
