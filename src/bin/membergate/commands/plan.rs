//! `membergate plan`: for a principal, an action and a time, the members each field is
//! allowed on, as conditions on the members' own attributes, and optionally an example
//! listing query in SQL with its bound values.

use std::path::Path;
use std::process::ExitCode;

use membergate::plan::sql::sea_query::{
    Alias, Expr, PostgresQueryBuilder, Query, QueryBuilder, SqliteQueryBuilder,
};
use membergate::plan::sql::MemberColumns;
use membergate::Plan;

use crate::common::{data, directory, engine, Asking};

/// The SQL dialect of the example query.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Dialect {
    /// `?` placeholders.
    Sqlite,
    /// `$1` placeholders.
    Postgres,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    asking: Asking,
    /// Also print an example listing query in this dialect, then its bound values.
    #[arg(long, value_enum)]
    sql: Option<Dialect>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// An example listing: each field's value where the plan allows it, `NULL` elsewhere,
/// of the members on which at least one field is allowed; and its bound values, each
/// with its placeholder.
struct Listing {
    sql: String,
    values: Vec<(String, String)>,
}

fn listing(plan: &Plan, dialect: Dialect, per_member: bool) -> Listing {
    let columns = MemberColumns::default();
    let mut query = Query::select();
    query.column(Alias::new(columns.id.as_str()));
    for (name, p) in plan.fields() {
        let column = Expr::col((Alias::new(columns.table.as_str()), Alias::new(name)));
        query.expr_as(columns.reveal(p, column, per_member), Alias::new(name));
    }
    query
        .from(Alias::new(columns.table.as_str()))
        .and_where(columns.filter(plan.any_field(), per_member));
    match dialect {
        Dialect::Sqlite => built(&query, &SqliteQueryBuilder, "?"),
        Dialect::Postgres => built(&query, &PostgresQueryBuilder, "$"),
    }
}

fn built(
    query: &membergate::plan::sql::sea_query::SelectStatement,
    builder: &impl QueryBuilder,
    mark: &str,
) -> Listing {
    let (sql, values) = query.build_any(builder);
    let values = values
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("{mark}{}", i + 1), builder.value_to_string(v)))
        .collect();
    Listing { sql, values }
}

pub fn exec(policies: &Path, Args { asking, sql, json }: Args) -> Result<ExitCode, String> {
    let engine = engine(policies)?;
    let party = data(asking.data.as_deref())?;
    let dir = directory(&engine, &party)?;
    let ctx = asking.context();
    let plan = engine
        .plan(&dir, &asking.principal, asking.action, &ctx)
        .map_err(|e| e.to_string())?;
    let exact = plan.is_exact();
    // Not exact: render every row that may be allowed, to be decided one by one.
    let listing = sql.map(|d| listing(&plan, d, !exact));
    if json {
        let mut out = serde_json::json!({
            "principal": asking.principal.to_string(),
            "action": asking.action.as_str(),
            "at": asking.at.to_string(),
            "exact": exact,
            "fields": plan.fields().map(|(name, p)| serde_json::json!({
                "field": name,
                "plan": p.to_string(),
                "exact": !p.per_member(),
            })).collect::<Vec<_>>(),
            "any_field": plan.any_field().to_string(),
        });
        if let (Some(l), Some(obj)) = (&listing, out.as_object_mut()) {
            obj.insert("sql".into(), l.sql.clone().into());
            obj.insert(
                "values".into(),
                l.values.iter().map(|(_, v)| v.clone()).collect(),
            );
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} {} at {}: the members each field is allowed on",
        asking.principal, asking.action, asking.at
    );
    for (name, p) in plan.fields() {
        println!("  {name}: {p}");
    }
    println!("  any field: {}", plan.any_field());
    if let Some(l) = listing {
        println!();
        if !exact {
            println!(
                "Some rows need a per-member decision: the query lists every row that \
                 may be allowed (the upper bound), to be decided one by one."
            );
        }
        println!("{}", l.sql);
        for (mark, v) in &l.values {
            println!("  {mark} = {v}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
