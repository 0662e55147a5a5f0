//! Plans rendered as SQL ([`membergate::plan::sql`]) run in real databases, SQLite (in
//! memory, always) and PostgreSQL (`MEMBERGATE_POSTGRES_URL`, skipped if unset), against
//! the engine's per-member decisions over the whole sample membership: for every
//! principal, action and boundary context, the members the rendered `WHERE` selects are
//! those the engine allows some field of, and each field's `CASE` reveals exactly the
//! fields the engine allows, on those members and (`WHERE NOT`) on the others. Both mappings of the channels: boolean columns, and rows of
//! tables of their own.
//!
//! Locally, against a throw-away cluster (see the README):
//! `MEMBERGATE_POSTGRES_URL='host=127.0.0.1 port=55432 user=postgres' cargo test --release --test lib plans::sql`

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use membergate::plan::sql::sea_query::{
    Alias, Expr, ExprTrait, Func, InsertStatement, PostgresQueryBuilder, Query, SelectStatement,
    SqliteQueryBuilder, Value, Values,
};
use membergate::plan::sql::{Channels, MemberColumns};
use membergate::plan::Atom;
use membergate::{Action, Context, FieldSet, Member, MemberRef, PageRequest, Plan, PrincipalId};
use sea_query_postgres::{PostgresValue, PostgresValues};

use crate::support::{boundary_contexts, bundled, directory, engine, engine_sets};

// The example CRM's binder of sea-query's values in rusqlite: one for both.
#[path = "../../examples/crm/sqlite_bind.rs"]
mod sqlite_bind;
use sqlite_bind::bound;

/// Milliseconds since the epoch, floored as the engine floors them (jiff's
/// `as_millisecond` truncates toward zero, which differs before 1970).
fn millis(ts: Timestamp) -> i64 {
    ts.as_second() * 1000 + i64::from(ts.subsec_nanosecond().div_euclid(1_000_000))
}

/// The members' table and the two tables of channels for [`Channels::Rows`]: the same
/// statements in SQLite and PostgreSQL.
const SCHEMA: &str = "
CREATE TABLE members (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    clp TEXT NOT NULL,
    joined_ms BIGINT NOT NULL,
    left_ms BIGINT NULL,
    in_good_standing BOOLEAN NOT NULL,
    consent_phone BOOLEAN NOT NULL,
    consent_email BOOLEAN NOT NULL,
    consent_post BOOLEAN NOT NULL,
    opt_out_phone BOOLEAN NOT NULL,
    opt_out_email BOOLEAN NOT NULL,
    opt_out_post BOOLEAN NOT NULL
);
CREATE TABLE member_consents (
    member_id TEXT NOT NULL REFERENCES members (id),
    channel TEXT NOT NULL,
    PRIMARY KEY (member_id, channel)
);
CREATE TABLE member_opt_outs (
    member_id TEXT NOT NULL REFERENCES members (id),
    channel TEXT NOT NULL,
    PRIMARY KEY (member_id, channel)
);
";

/// The mapping with the channels as rows of `member_consents` and `member_opt_outs`.
fn rows_mapping() -> MemberColumns {
    let rows = |table: &str| Channels::Rows {
        table: table.into(),
        member: "member_id".into(),
        channel: "channel".into(),
    };
    MemberColumns {
        consents: rows("member_consents"),
        opt_outs: rows("member_opt_outs"),
        ..MemberColumns::default()
    }
}

/// A database holding the sample membership.
enum Db {
    Sqlite(rusqlite::Connection),
    Postgres {
        client: Box<postgres::Client>,
        /// The schema of this run, dropped with the connection.
        schema: String,
    },
}

/// A row of a plan's query: the member's id and each field's column (`NULL` where not
/// revealed).
type Row = (String, Vec<Option<String>>);

impl Db {
    fn name(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "SQLite",
            Db::Postgres { .. } => "PostgreSQL",
        }
    }

    /// An empty SQLite database in memory, with the tables.
    fn sqlite() -> Db {
        let conn = rusqlite::Connection::open_in_memory().expect("SQLite in memory");
        conn.execute_batch(SCHEMA).expect("the tables");
        Db::Sqlite(conn)
    }

    /// A schema of its own (named after the process, dropped with the connection) in the
    /// PostgreSQL database `url` names, with the tables.
    fn postgres(url: &str) -> Db {
        let mut client = postgres::Client::connect(url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("PostgreSQL at `{url}` (MEMBERGATE_POSTGRES_URL): {e}"));
        let schema = format!("membergate_plans_{}", std::process::id());
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; \
                 SET search_path TO {schema}; {SCHEMA}"
            ))
            .expect("the schema and tables");
        Db::Postgres {
            client: Box::new(client),
            schema,
        }
    }

    fn execute(&mut self, stmt: &InsertStatement) {
        match self {
            Db::Sqlite(conn) => {
                let (sql, values) = stmt.build(SqliteQueryBuilder);
                let params = bound(values).unwrap_or_else(|e| panic!("{e}: {sql}"));
                conn.execute(&sql, rusqlite::params_from_iter(params.iter()))
                    .unwrap_or_else(|e| panic!("{e}: {sql}"));
            }
            Db::Postgres { client, .. } => {
                let (sql, values) = stmt.build(PostgresQueryBuilder);
                let values = pg_values(values);
                client
                    .execute(sql.as_str(), &values.as_params())
                    .unwrap_or_else(|e| panic!("{e:?}: {sql}"));
            }
        }
    }

    fn transaction(&mut self, what: &str) {
        let sql = format!("{what} TRANSACTION");
        match self {
            Db::Sqlite(conn) => conn.execute_batch(&sql).expect("transaction"),
            Db::Postgres { client, .. } => client.batch_execute(&sql).expect("transaction"),
        }
    }

    /// Loads `members` in one transaction, a statement per 500 members.
    fn load(&mut self, members: &BTreeMap<String, Member>) {
        self.transaction("BEGIN");
        let all: Vec<(&String, &Member)> = members.iter().collect();
        for batch in all.chunks(500) {
            let mut rows = Query::insert();
            rows.into_table("members").columns([
                "id",
                "status",
                "clp",
                "joined_ms",
                "left_ms",
                "in_good_standing",
                "consent_phone",
                "consent_email",
                "consent_post",
                "opt_out_phone",
                "opt_out_email",
                "opt_out_post",
            ]);
            let mut consents = Query::insert();
            consents
                .into_table("member_consents")
                .columns(["member_id", "channel"]);
            let mut opt_outs = Query::insert();
            opt_outs
                .into_table("member_opt_outs")
                .columns(["member_id", "channel"]);
            let (mut any_consent, mut any_opt_out) = (false, false);
            for (id, m) in batch {
                let has = |cs: &[membergate::Channel], c| Expr::val(cs.contains(&c));
                rows.values_panic([
                    Expr::val(id.as_str()),
                    Expr::val(m.status.as_str()),
                    Expr::val(m.clp.as_str()),
                    Expr::val(millis(m.joined)),
                    Expr::val(m.left.map(millis)),
                    Expr::val(m.in_good_standing),
                    has(&m.consents, membergate::Channel::Phone),
                    has(&m.consents, membergate::Channel::Email),
                    has(&m.consents, membergate::Channel::Post),
                    has(&m.opt_outs, membergate::Channel::Phone),
                    has(&m.opt_outs, membergate::Channel::Email),
                    has(&m.opt_outs, membergate::Channel::Post),
                ]);
                for c in &m.consents {
                    consents.values_panic([Expr::val(id.as_str()), Expr::val(c.as_str())]);
                    any_consent = true;
                }
                for c in &m.opt_outs {
                    opt_outs.values_panic([Expr::val(id.as_str()), Expr::val(c.as_str())]);
                    any_opt_out = true;
                }
            }
            self.execute(&rows);
            if any_consent {
                self.execute(&consents);
            }
            if any_opt_out {
                self.execute(&opt_outs);
            }
        }
        self.transaction("COMMIT");
    }

    /// Runs `q`, whose columns are the member's id then `columns` nullable texts.
    fn select(&mut self, q: &SelectStatement, columns: usize) -> Vec<Row> {
        match self {
            Db::Sqlite(conn) => {
                let (sql, values) = q.build(SqliteQueryBuilder);
                let params = bound(values).unwrap_or_else(|e| panic!("{e}: {sql}"));
                let mut stmt = conn.prepare(&sql).unwrap_or_else(|e| panic!("{e}: {sql}"));
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(params.iter()), |r| {
                        let id: String = r.get(0)?;
                        let cols = (1..=columns)
                            .map(|i| r.get::<_, Option<String>>(i))
                            .collect::<rusqlite::Result<Vec<_>>>()?;
                        Ok((id, cols))
                    })
                    .unwrap_or_else(|e| panic!("{e}: {sql}"));
                rows.collect::<rusqlite::Result<Vec<Row>>>()
                    .unwrap_or_else(|e| panic!("{e}: {sql}"))
            }
            Db::Postgres { client, .. } => {
                let (sql, values) = q.build(PostgresQueryBuilder);
                let values = pg_values(values);
                client
                    .query(sql.as_str(), &values.as_params())
                    .unwrap_or_else(|e| panic!("{e:?}: {sql}"))
                    .iter()
                    .map(|r| {
                        let id: String = r.get(0);
                        let cols = (1..=columns).map(|i| r.get(i)).collect();
                        (id, cols)
                    })
                    .collect()
            }
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Db::Postgres { client, schema } = self {
            if let Err(e) = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            {
                eprintln!("plans::sql: dropping the schema {schema}: {e}");
            }
        }
    }
}

fn pg_values(values: Values) -> PostgresValues {
    PostgresValues(values.into_iter().map(PostgresValue).collect())
}

/// `SELECT id, <CASE of field 0> AS f0, ... FROM members WHERE <any field>`, each `CASE`
/// revealing the member's id; with `rest`, `SELECT id, COALESCE(<every CASE>) ... WHERE
/// NOT <any field>`: the other members, on which every `CASE` must reveal nothing (and
/// the filter is never `NULL`, or a member would be in neither).
fn plan_query(plan: &Plan, columns: &MemberColumns, rest: bool) -> SelectStatement {
    let id = || Expr::col((Alias::new("members"), Alias::new("id")));
    let mut q = Query::select();
    q.expr(id());
    let cases = plan.fields().map(|(_, p)| columns.reveal(p, id(), false));
    if rest {
        q.expr_as(Func::coalesce(cases), Alias::new("revealed"));
    } else {
        for (i, case) in cases.enumerate() {
            q.expr_as(case, Alias::new(format!("f{i}")));
        }
    }
    let filter = columns.filter(plan.any_field(), false);
    q.from("members")
        .and_where(if rest { filter.not() } else { filter });
    q
}

/// The SQL's rows against the engine's field sets (`sets[i]` for `members[i]`): the
/// members allowed some field (those allowed none with `rest`), each with the same
/// fields. Returns the rows compared.
fn agree(
    db: &str,
    (rows, rest): (&[Row], bool),
    members: &[MemberRef<'_>],
    sets: &[FieldSet],
    fields: &[membergate::FieldId],
    what: &dyn Fn() -> String,
) -> usize {
    let index: HashMap<&str, usize> = members.iter().enumerate().map(|(i, m)| (m.id, i)).collect();
    let mut selected = vec![false; members.len()];
    for (id, cols) in rows {
        let i = *index
            .get(id.as_str())
            .unwrap_or_else(|| panic!("{db}: unknown member {id}\n{}", what()));
        assert!(!selected[i], "{db}: member {id} twice\n{}", what());
        selected[i] = true;
        if rest {
            assert_eq!(
                cols,
                &[None],
                "{db}: a CASE reveals a field of member {id}, which the WHERE leaves out\n{}",
                what()
            );
            continue;
        }
        let revealed: FieldSet = fields
            .iter()
            .zip(cols)
            .filter_map(|(f, c)| {
                c.as_ref().map(|c| {
                    assert_eq!(c, id, "{db}: a CASE reveals the row's own id");
                    *f
                })
            })
            .collect();
        assert_eq!(
            revealed,
            sets[i],
            "{db}: the CASEs reveal other fields than the engine allows on member {id} {:?}\n{}",
            members[i].attrs,
            what()
        );
    }
    for (i, m) in members.iter().enumerate() {
        assert_eq!(
            selected[i],
            sets[i].is_empty() == rest,
            "{db}: the WHERE{} {} member {} {:?}, the engine allows {:?}\n{}",
            if rest { " NOT" } else { "" },
            if selected[i] { "selects" } else { "leaves out" },
            m.id,
            m.attrs,
            sets[i],
            what()
        );
    }
    rows.len()
}

/// What one database did.
#[derive(Default)]
struct Run {
    queries: usize,
    rows: usize,
    time: Duration,
}

/// Every principal, every action, every boundary context; each distinct plan run once in
/// SQLite (and PostgreSQL if `MEMBERGATE_POSTGRES_URL` is set) over the 12,000 members.
#[test]
fn plans_select_in_sqlite_and_postgresql_what_the_engine_decides() {
    let (e, dir, party) = (engine(), directory(), bundled());
    let started = Instant::now();
    let members: Vec<MemberRef> = party.member_refs().collect();
    let fields: Vec<membergate::FieldId> = e.catalogue().iter().map(|(id, _)| id).collect();

    // Distinct plans, each with the first (principal, action, context) that gave it. Two
    // plans with the same fields' plans render the same SQL (the action is not part of
    // it), so they are one. `plans::plans_decide_every_member_as_the_engine` proves that
    // every (principal, action, context) is decided by the engine as its plan says, so
    // comparing the SQL of a plan with the engine's decisions for one of them covers
    // every other with an equal plan.
    let mut distinct: Vec<(Plan, (PrincipalId, Action, Context))> = Vec::new();
    let mut by_text: HashMap<String, Vec<usize>> = HashMap::new();
    let (mut covered, mut refused) = (0usize, 0usize);
    for p in party.principal_ids() {
        for ctx in boundary_contexts(party, &p) {
            for action in Action::ALL {
                let Ok(plan) = e.plan(dir, &p, action, &ctx) else {
                    // Refused with the engine's error: checked by the Rust test.
                    refused += 1;
                    continue;
                };
                covered += 1;
                let same = |a: &Plan, b: &Plan| {
                    a.any_field() == b.any_field() && a.fields().eq(b.fields())
                };
                let slot = by_text.entry(plan.to_string()).or_default();
                if !slot.iter().any(|&i| same(&distinct[i].0, &plan)) {
                    slot.push(distinct.len());
                    distinct.push((plan, (p.clone(), action, ctx.clone())));
                }
            }
        }
    }
    let planned = started.elapsed();

    let mut dbs: Vec<(Db, Run)> = vec![(Db::sqlite(), Run::default())];
    match std::env::var("MEMBERGATE_POSTGRES_URL") {
        Ok(url) if !url.trim().is_empty() => dbs.push((Db::postgres(&url), Run::default())),
        _ => eprintln!(
            "plans::sql: MEMBERGATE_POSTGRES_URL is unset: the PostgreSQL part is skipped \
             (SQLite only)"
        ),
    }
    for (db, run) in &mut dbs {
        let t = Instant::now();
        db.load(&party.members);
        run.time += t.elapsed();
    }

    let (flags, rows) = (MemberColumns::default(), rows_mapping());
    let mut engine_time = Duration::ZERO;
    for (n, (plan, (p, action, ctx))) in distinct.iter().enumerate() {
        assert!(plan.is_exact(), "the bundled policies are planned exactly");
        let t = Instant::now();
        let page = PageRequest {
            principal: p,
            action: *action,
            members: &members,
            context: ctx,
        };
        // A plan is refused exactly where every member is (tests/plans.rs); a page
        // refused for one member would leave that member out: none in the sample.
        let sets: Vec<FieldSet> = engine_sets(e, dir, &page)
            .into_iter()
            .zip(&members)
            .map(|(set, m)| set.unwrap_or_else(|e| panic!("{p} {action} {ctx:?} on {}: {e}", m.id)))
            .collect();
        engine_time += t.elapsed();
        // Every plan with the boolean columns, every third also with rows of channels.
        let mappings: &[(&str, &MemberColumns)] = if n % 3 == 0 {
            &[("flags", &flags), ("rows", &rows)]
        } else {
            &[("flags", &flags)]
        };
        for ((mapping, columns), rest) in mappings.iter().flat_map(|m| [(m, false), (m, true)]) {
            let q = plan_query(plan, columns, rest);
            for (db, run) in &mut dbs {
                let t = Instant::now();
                let got = db.select(&q, if rest { 1 } else { fields.len() });
                let what = || {
                    format!(
                        "plan of {p} {action} at {ctx:?}, channels as {mapping}:\n{plan}\nSQL: {}",
                        q.to_string(SqliteQueryBuilder)
                    )
                };
                run.rows += agree(db.name(), (&got, rest), &members, &sets, &fields, &what);
                run.queries += 1;
                run.time += t.elapsed();
            }
        }
    }
    eprintln!(
        "plans::sql: {} distinct plans of {covered} (principal x action x context) planned \
         ({refused} refused), in {planned:.1?}; engine decisions on {} members each in \
         {engine_time:.1?}",
        distinct.len(),
        members.len()
    );
    for (db, run) in &dbs {
        eprintln!(
            "plans::sql: {}: {} queries (WHERE and WHERE NOT of every plan with flag \
             columns, of every third also with rows of channels), {} rows compared; load \
             and queries in {:.1?}",
            db.name(),
            run.queries,
            run.rows,
            run.time
        );
    }
    assert!(distinct.len() > 10 && covered > 1000);
}

/// Every value of a plan's SQL is bound: the CLP's id and the times are among the
/// values, never in the SQL's text, in both dialects and both mappings.
#[test]
fn the_sql_of_a_plan_splices_in_no_value() {
    let (e, dir) = (engine(), directory());
    let officer = PrincipalId::new(
        membergate::PrincipalKind::Officer,
        membergate::sample::ids::O_SECRETARY_001,
    );
    let at = crate::support::t("2024-05-01T09:00:00Z");
    let plan = e
        .plan(dir, &officer, Action::Read, &Context::at(at))
        .expect("a plan");
    let any = plan.any_field().condition().expect("a condition");
    let clps: Vec<&String> = any
        .atoms()
        .filter_map(|a| match a {
            Atom::Clp(ids) => Some(ids.iter()),
            _ => None,
        })
        .flatten()
        .collect();
    let times: Vec<i64> = any
        .atoms()
        .filter_map(|a| match a {
            Atom::Joined(_, t) | Atom::Left(_, t) => Some(millis(*t)),
            _ => None,
        })
        .collect();
    assert!(!clps.is_empty() && !times.is_empty(), "{plan}");
    for columns in [MemberColumns::default(), rows_mapping()] {
        let q = plan_query(&plan, &columns, false);
        for (sql, values) in [q.build(SqliteQueryBuilder), q.build(PostgresQueryBuilder)] {
            for clp in &clps {
                assert!(!sql.contains(clp.as_str()), "{clp} in {sql}");
                assert!(
                    values.0.contains(&Value::String(Some(clp.to_string()))),
                    "{clp} not among {values:?}"
                );
            }
            for t in &times {
                assert!(!sql.contains(&t.to_string()), "{t} in {sql}");
                assert!(
                    values.0.contains(&Value::BigInt(Some(*t))),
                    "{t} not among {values:?}"
                );
            }
            // No literal at all: no quote but the identifiers' double quotes, no digit
            // outside the placeholders ($1) and the aliases (f0).
            assert!(!sql.contains('\''), "{sql}");
        }
    }
}
