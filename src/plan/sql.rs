//! Plans as SQL, for SQLite and PostgreSQL (feature `sql`), built with
//! [`sea_query`]: a plan's condition becomes a `WHERE` condition, a field's plan a
//! `CASE` that gives the column's value only where the field is allowed.
//!
//! Identifiers come only from the declared mapping ([`MemberColumns`]), quoted by the
//! query builder; every value (a status, a time, a CLP's id) is a bound parameter. Times
//! are integer milliseconds since the epoch (what Cedar compares); a member's status is
//! stored as the policies spell it (`registered_supporter`).
//!
//! ```
//! use membergate::plan::sql::MemberColumns;
//! use membergate::plan::sql::sea_query::{Query, SqliteQueryBuilder};
//! use membergate::{sample, Action, Context, Directory, Engine, PrincipalId, PrincipalKind};
//!
//! let engine = Engine::from_dir("policies")?;
//! let party = sample::bundled();
//! let directory = Directory::from_membership(&engine, &party)?;
//! let officer = PrincipalId::new(PrincipalKind::Officer, sample::ids::O_SECRETARY_001);
//! let plan = engine.plan(&directory, &officer, Action::Read, &Context::at("2024-05-01T09:00:00Z".parse()?))?;
//! let columns = MemberColumns::default();
//! let (sql, values) = Query::select()
//!     .column("id")
//!     .from("members")
//!     .and_where(columns.filter(plan.any_field(), false))
//!     .build(SqliteQueryBuilder);
//! // Their own CLP's members, but for those who left more than two years ago.
//! assert_eq!(
//!     sql,
//!     r#"SELECT "id" FROM "members" WHERE (NOT ("members"."status" IN (?, ?) AND ("members"."left_ms" IS NOT NULL AND "members"."left_ms" <= ?))) AND "members"."clp" IN (?)"#
//! );
//! assert_eq!(values.0.len(), 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use sea_query;

use sea_query::{Alias, Expr, ExprTrait, Query};
use serde::{Deserialize, Serialize};

use super::{Atom, Comparison, Condition, FieldPlan};
use crate::entities::millis;
use crate::records::Channel;

/// Where the CRM keeps a member's attributes: one table, a row per member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemberColumns {
    /// The members' table (`members`).
    pub table: String,
    /// The member's id (`id`).
    pub id: String,
    /// The member's status, as the policies spell it (`status`).
    pub status: String,
    /// The id of the member's CLP (`clp`).
    pub clp: String,
    /// When the member joined, in milliseconds since the epoch (`joined_ms`).
    pub joined: String,
    /// When the member left, in milliseconds since the epoch, `NULL` if they have not
    /// (`left_ms`).
    pub left: String,
    /// Whether the member is in good standing, a boolean (`in_good_standing`).
    pub in_good_standing: String,
    /// The channels the member consented to.
    pub consents: Channels,
    /// The channels the member opted out of.
    pub opt_outs: Channels,
}

/// Where a set of channels (consents or opt-outs) is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Channels {
    /// A boolean column per channel in the members' table.
    Flags {
        /// Phone.
        phone: String,
        /// Email.
        email: String,
        /// Post.
        post: String,
    },
    /// A row per channel in a table of its own: `member` holds the member's id,
    /// `channel` the channel as the policies spell it (`phone`).
    Rows {
        /// The table.
        table: String,
        /// Its column holding the member's id.
        member: String,
        /// Its column holding the channel.
        channel: String,
    },
}

impl Channels {
    /// Boolean columns `{prefix}_phone`, `{prefix}_email` and `{prefix}_post`.
    pub fn flags(prefix: &str) -> Channels {
        Channels::Flags {
            phone: format!("{prefix}_phone"),
            email: format!("{prefix}_email"),
            post: format!("{prefix}_post"),
        }
    }
}

impl Default for MemberColumns {
    /// The example CRM's: `members(id, status, clp, joined_ms, left_ms,
    /// in_good_standing, consent_phone, consent_email, consent_post, opt_out_phone,
    /// opt_out_email, opt_out_post)`.
    fn default() -> Self {
        MemberColumns {
            table: "members".into(),
            id: "id".into(),
            status: "status".into(),
            clp: "clp".into(),
            joined: "joined_ms".into(),
            left: "left_ms".into(),
            in_good_standing: "in_good_standing".into(),
            consents: Channels::flags("consent"),
            opt_outs: Channels::flags("opt_out"),
        }
    }
}

impl MemberColumns {
    /// `plan` as a boolean SQL expression on the members' table. A plan with
    /// [`Atom::PerMember`] parts is rendered as its bound
    /// ([`Condition::bound`]): with `per_member` false, the members on which it
    /// certainly holds; with `true`, every member on which it may (to be decided one
    /// by one). Never `NULL`.
    pub fn filter(&self, plan: &FieldPlan, per_member: bool) -> Expr {
        match plan {
            FieldPlan::Always => Expr::val(true),
            FieldPlan::Never => Expr::val(false),
            FieldPlan::When(c) if c.per_member() => match c.bound(per_member) {
                FieldPlan::When(b) => self.condition(&b),
                other => self.filter(&other, per_member),
            },
            FieldPlan::When(c) => self.condition(c),
        }
    }

    /// The value of `column` where `plan` allows the field, `NULL` elsewhere (with
    /// `per_member` as in [`MemberColumns::filter`]).
    pub fn reveal(&self, plan: &FieldPlan, column: Expr, per_member: bool) -> Expr {
        match plan {
            FieldPlan::Always => column,
            FieldPlan::Never => Expr::null(),
            p => Expr::case(self.filter(p, per_member), column)
                .finally(Expr::null())
                .into(),
        }
    }

    fn col(&self, name: &str) -> Expr {
        Expr::col((Alias::new(self.table.as_str()), Alias::new(name)))
    }

    fn condition(&self, c: &Condition) -> Expr {
        match c {
            Condition::Atom(a) => self.atom(a),
            Condition::Not(c) => self.condition(c).not(),
            Condition::All(cs) | Condition::Any(cs) => {
                let all = matches!(c, Condition::All(_));
                let mut parts = cs.iter().map(|c| self.condition(c));
                let first = parts.next().unwrap_or_else(|| Expr::val(all));
                parts.fold(first, |acc, p| if all { acc.and(p) } else { acc.or(p) })
            }
        }
    }

    fn atom(&self, a: &Atom) -> Expr {
        match a {
            Atom::Status(s) => self
                .col(&self.status)
                .is_in(s.iter().map(|s| s.as_str().to_string())),
            Atom::InGoodStanding => self.col(&self.in_good_standing).eq(true),
            Atom::HasLeft => self.col(&self.left).is_not_null(),
            Atom::Joined(op, t) => compare(self.col(&self.joined), *op, millis(*t)),
            Atom::Left(op, t) => self.col(&self.left).is_not_null().and(compare(
                self.col(&self.left),
                *op,
                millis(*t),
            )),
            Atom::Consents(cs) => self.channels(&self.consents, cs),
            Atom::OptOuts(cs) => self.channels(&self.opt_outs, cs),
            Atom::Clp(ids) => self.col(&self.clp).is_in(ids.iter().cloned()),
            Atom::Member(ids) => self.col(&self.id).is_in(ids.iter().cloned()),
            // Read by its bound before rendering: never reached.
            Atom::PerMember { holds, .. } => Expr::val(*holds),
        }
    }

    fn channels(&self, store: &Channels, cs: &[Channel]) -> Expr {
        match store {
            Channels::Flags { phone, email, post } => {
                let mut parts = cs.iter().map(|c| {
                    let col = match c {
                        Channel::Phone => phone,
                        Channel::Email => email,
                        Channel::Post => post,
                    };
                    self.col(col).eq(true)
                });
                let first = parts.next().unwrap_or_else(|| Expr::val(false));
                parts.fold(first, ExprTrait::or)
            }
            Channels::Rows {
                table,
                member,
                channel,
            } => {
                let t = Alias::new(table.as_str());
                let member = Expr::col((t.clone(), Alias::new(member.as_str())));
                Expr::exists(
                    Query::select()
                        // A column, not a bound `1`: PostgreSQL would take an untyped
                        // parameter in the select list for text and refuse the 64-bit
                        // integer sent for it.
                        .expr(member.clone())
                        .from(t.clone())
                        .and_where(member.equals((
                            Alias::new(self.table.as_str()),
                            Alias::new(self.id.as_str()),
                        )))
                        .and_where(
                            Expr::col((t, Alias::new(channel.as_str())))
                                .is_in(cs.iter().map(|c| c.as_str().to_string())),
                        )
                        .to_owned(),
                )
            }
        }
    }
}

/// `column op ms`, the time bound as a 64-bit integer (PostgreSQL's `bigint`).
fn compare(column: Expr, op: Comparison, ms: i64) -> Expr {
    let v = Expr::val(ms);
    match op {
        Comparison::Less => column.lt(v),
        Comparison::LessEq => column.lte(v),
        Comparison::Eq => column.eq(v),
        Comparison::NotEq => column.ne(v),
        Comparison::GreaterEq => column.gte(v),
        Comparison::Greater => column.gt(v),
    }
}
