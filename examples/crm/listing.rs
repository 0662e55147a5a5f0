//! A listing's query, built with sea-query from the principal's plan: only the members
//! the plan may allow are read (`WHERE` its "any field" condition), and of each only the
//! columns the plan may reveal (`CASE ... THEN value ELSE NULL`). Backend-neutral: the
//! database module renders it in its backend's dialect and binds it (`db::Pool::list`).

use std::collections::BTreeSet;

use membergate::plan::sql::sea_query::{
    Alias, Asterisk, Expr, ExprTrait, Func, LikeExpr, Order, Query, SelectStatement, UnionType,
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

/// The most CLPs a page is read from CLP by CLP (see [`query`]); past them, one query
/// over all (the database may then sort every member of those CLPs).
const MAX_CLP_BRANCHES: usize = 64;

fn member(c: &str) -> Expr {
    Expr::col((Alias::new(MEMBERS), Alias::new(c)))
}

fn value(c: &str) -> Expr {
    Expr::col((Alias::new(VALUES), Alias::new(c)))
}

/// The query of a page: `members.id`, the member attribute columns
/// ([`db::MEMBER_COLUMNS`]), then for each of `fields` (catalogue fields, each a column
/// of `member_values`) its value where the plan may allow it (`NULL` elsewhere), of the
/// members the plan may allow any field of, in the listing's scope and search, after
/// `after`, in id order, at most `limit`. A search filters on `name` only where the plan
/// may allow `name`: hidden names are never probed. Plans that need a per-member decision
/// are rendered by their upper bound: the engine decides each row read.
///
/// When the members are in a few CLPs (2 to [`MAX_CLP_BRANCHES`]: the plan allows only
/// members of those, as a regional office's does, or the scope is a region), the page's
/// ids are found CLP by CLP: a `UNION ALL` of one query per CLP (`clp = ?` added to the
/// plan's condition), each the CLP's first `limit` ids after `after` in id order (the
/// `(clp, id)` index gives them in order), of which the first `limit` in id order are the
/// page's, then read with their columns. The same rows as one query with `clp IN (...)`,
/// which the database answers by sorting every member of those CLPs (0.3 to 0.6 s for a
/// region of a million members in SQLite), where this reads at most `limit` ids per CLP.
pub(crate) fn query(plan: &Plan, fields: &[String], listing: &Listing<'_>) -> SelectStatement {
    let scope = match listing.scope {
        Scope::All => None,
        Scope::Clps(ids) => Some(ids.iter().cloned().collect::<BTreeSet<_>>()),
    };
    let clps = match (scope, plan.any_field().clps().map(BTreeSet::from_iter)) {
        (Some(a), Some(b)) => Some(a.intersection(&b).cloned().collect()),
        (a, b) => a.or(b),
    };
    let limit = u64::try_from(listing.limit).unwrap_or(u64::MAX);
    let Some(clps) = clps.filter(|c: &BTreeSet<String>| (2..=MAX_CLP_BRANCHES).contains(&c.len()))
    else {
        let mut q = select(plan, fields);
        q.from(Alias::new(MEMBERS)).inner_join(
            Alias::new(VALUES),
            value("member_id").equals((Alias::new(MEMBERS), Alias::new("id"))),
        );
        where_(&mut q, plan, listing);
        if let Scope::Clps(ids) = listing.scope {
            q.and_where(member("clp").is_in(ids.iter().cloned()));
        }
        keyset(&mut q, listing);
        q.order_by((Alias::new(MEMBERS), Alias::new("id")), Order::Asc)
            .limit(limit);
        return q;
    };
    // Per CLP, its first ids (`SELECT * FROM (...)`: a member of a compound select takes
    // no ORDER BY or LIMIT of its own in SQLite).
    let mut branches = clps.iter().enumerate().map(|(i, clp)| {
        let mut ids = Query::select();
        ids.expr(member("id")).from(Alias::new(MEMBERS));
        if listing.search.is_some() {
            ids.inner_join(
                Alias::new(VALUES),
                value("member_id").equals((Alias::new(MEMBERS), Alias::new("id"))),
            );
        }
        where_(&mut ids, plan, listing);
        ids.and_where(member("clp").eq(clp.as_str()));
        if listing.search.is_some() {
            keyset(&mut ids, listing);
        } else {
            ids.and_where(member("id").gt(listing.after));
        }
        ids.order_by((Alias::new(MEMBERS), Alias::new("id")), Order::Asc)
            .limit(limit);
        let mut branch = Query::select();
        branch
            .column(Asterisk)
            .from_subquery(ids, Alias::new(format!("clp_{i}")));
        branch
    });
    let mut union = branches.next().expect("two CLPs or more");
    for branch in branches {
        union.union(UnionType::All, branch);
    }
    let mut page = Query::select();
    page.column(Asterisk)
        .from_subquery(union, Alias::new("ids"))
        .order_by(Alias::new("id"), Order::Asc)
        .limit(limit);
    let on_page = |t: &str, c: &str| {
        Expr::col((Alias::new(t), Alias::new(c))).equals((Alias::new("page"), Alias::new("id")))
    };
    let mut q = select(plan, fields);
    q.from_subquery(page, Alias::new("page"))
        .inner_join(Alias::new(MEMBERS), on_page(MEMBERS, "id"))
        .inner_join(Alias::new(VALUES), on_page(VALUES, "member_id"))
        .order_by((Alias::new("page"), Alias::new("id")), Order::Asc);
    q
}

/// A page's columns: `members.id`, the member's, and each field's where the plan may
/// reveal it (no `FROM` yet).
fn select(plan: &Plan, fields: &[String]) -> SelectStatement {
    let columns = MemberColumns::default();
    let mut q = Query::select();
    q.expr(member("id"));
    for c in db::MEMBER_COLUMNS {
        q.expr(member(c));
    }
    for f in fields {
        let p = plan.field(f).unwrap_or(&FieldPlan::Never);
        q.expr_as(columns.reveal(p, value(f), true), Alias::new(f.as_str()));
    }
    q
}

/// The plan's condition on the members a page may hold, and the search's on names
/// (which needs `member_values` joined).
fn where_(q: &mut SelectStatement, plan: &Plan, listing: &Listing<'_>) {
    let columns = MemberColumns::default();
    q.and_where(columns.filter(plan.any_field(), true));
    if let Some(search) = listing.search {
        let name = plan.field("name").unwrap_or(&FieldPlan::Never);
        q.and_where(columns.filter(name, true)).and_where(
            Expr::expr(Func::lower(value("name")))
                .like(LikeExpr::new(substring(search)).escape('\\')),
        );
    }
}

/// `members.id > after`, and the same of `member_values.member_id`: PostgreSQL does not
/// carry an inequality across the join, and would merge-join `member_values` from its
/// first row (a later page of a million members: 450,000 rows read, 270 ms).
fn keyset(q: &mut SelectStatement, listing: &Listing<'_>) {
    q.and_where(member("id").gt(listing.after))
        .and_where(value("member_id").gt(listing.after));
}

/// The query of the scan baseline (`App::scan_page`, for `--measure-listing` only): the
/// columns of [`query`], every value read (no plan), of every member in the listing's
/// scope after `after`, in id order, at most `limit`. The listing's search is not read.
pub(crate) fn scan(fields: &[String], listing: &Listing<'_>) -> SelectStatement {
    let mut q = Query::select();
    q.expr(member("id"));
    for c in db::MEMBER_COLUMNS {
        q.expr(member(c));
    }
    for f in fields {
        q.expr_as(value(f), Alias::new(f.as_str()));
    }
    q.from(Alias::new(MEMBERS)).inner_join(
        Alias::new(VALUES),
        value("member_id").equals((Alias::new(MEMBERS), Alias::new("id"))),
    );
    if let Scope::Clps(ids) = listing.scope {
        q.and_where(member("clp").is_in(ids.iter().cloned()));
    }
    keyset(&mut q, listing);
    q.order_by((Alias::new(MEMBERS), Alias::new("id")), Order::Asc)
        .limit(u64::try_from(listing.limit).unwrap_or(u64::MAX));
    q
}
