//! A listing's query, built with sea-query from the principal's plan: only the members
//! the plan may allow are read (`WHERE` its "any field" condition), and of each only the
//! columns the plan may reveal (`CASE ... THEN value ELSE NULL`). Backend-neutral: the
//! database module renders it in its backend's dialect and binds it (`db::Pool::list`).

use membergate::plan::sql::sea_query::{
    Alias, Expr, ExprTrait, Func, LikeExpr, Order, Query, SelectStatement,
};
use membergate::plan::sql::MemberColumns;
use membergate::plan::FieldPlan;
use membergate::Plan;

use crate::db;

/// Which members a listing covers.
pub(crate) enum Scope {
    /// Every member (that the plan allows).
    All,
    /// The members of these CLPs (`clp=ID`, or a region's CLPs).
    Clps(Vec<String>),
}

/// One page of a listing.
pub(crate) struct Listing<'a> {
    pub(crate) scope: &'a Scope,
    /// A name search: a case-insensitive substring of `name`.
    pub(crate) search: Option<&'a str>,
    /// The last id of the previous page (`""` for the first).
    pub(crate) after: &'a str,
    pub(crate) limit: usize,
}

const MEMBERS: &str = "members";
const VALUES: &str = "member_values";

/// `pattern` as a `LIKE` pattern for a substring, lowercased, its `%`, `_` and `\`
/// escaped with `\`.
fn substring(pattern: &str) -> String {
    let mut out = String::from("%");
    for c in pattern.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The query of a page: `members.id`, the member attribute columns
/// ([`db::MEMBER_COLUMNS`]), then for each of `fields` (catalogue fields, each a column
/// of `member_values`) its value where the plan may allow it (`NULL` elsewhere), of the
/// members the plan may allow any field of, in the listing's scope and search, after
/// `after`, in id order, at most `limit`. A search filters on `name` only where the plan
/// may allow `name`: hidden names are never probed. Plans that need a per-member decision
/// are rendered by their upper bound: the engine decides each row read.
pub(crate) fn query(plan: &Plan, fields: &[String], listing: &Listing<'_>) -> SelectStatement {
    let columns = MemberColumns::default();
    let member = |c: &str| Expr::col((Alias::new(MEMBERS), Alias::new(c)));
    let value = |c: &str| Expr::col((Alias::new(VALUES), Alias::new(c)));
    let mut q = Query::select();
    q.expr(member("id"));
    for c in db::MEMBER_COLUMNS {
        q.expr(member(c));
    }
    for f in fields {
        let p = plan.field(f).unwrap_or(&FieldPlan::Never);
        q.expr_as(columns.reveal(p, value(f), true), Alias::new(f.as_str()));
    }
    q.from(Alias::new(MEMBERS))
        .inner_join(
            Alias::new(VALUES),
            value("member_id").equals((Alias::new(MEMBERS), Alias::new("id"))),
        )
        .and_where(columns.filter(plan.any_field(), true));
    if let Scope::Clps(ids) = listing.scope {
        q.and_where(member("clp").is_in(ids.iter().cloned()));
    }
    if let Some(search) = listing.search {
        let name = plan.field("name").unwrap_or(&FieldPlan::Never);
        q.and_where(columns.filter(name, true)).and_where(
            Expr::expr(Func::lower(value("name")))
                .like(LikeExpr::new(substring(search)).escape('\\')),
        );
    }
    q.and_where(member("id").gt(listing.after))
        .order_by((Alias::new(MEMBERS), Alias::new("id")), Order::Asc)
        .limit(u64::try_from(listing.limit).unwrap_or(u64::MAX));
    q
}
