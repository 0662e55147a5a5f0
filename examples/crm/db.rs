//! The CRM's database, SQLite (a file, the default) or PostgreSQL (`--db postgres://...`):
//! the party's records, each member's row, and each member's field values. Only this
//! module speaks SQL to the database: statements are built with sea-query (here, or the
//! listing's in `listing.rs`) and rendered in the backend's dialect
//! (`SqliteQueryBuilder` or `PostgresQueryBuilder`) and bound here; identifiers come only
//! from the code or the catalogue (validated), never from a request.
//!
//! - `records(kind, id, body)`: the principal side (staff, campaigns, CLPs, call
//!   sessions, ...) as JSON, `kind` naming its collection of `membergate::Membership`;
//!   loaded once into the engine's `Directory`.
//! - `members(id, status, clp, joined_ms, left_ms, in_good_standing, consent_phone,
//!   consent_email, consent_post, opt_out_phone, opt_out_email, opt_out_post)`: each
//!   member's policy-relevant attributes in the layout of
//!   `membergate::plan::sql::MemberColumns::default()`, read with the member's row for
//!   every request (a `membergate::Member`) and filtered on by a listing's plan. Times are
//!   milliseconds since the epoch (truncated toward the past; INTEGER in SQLite, BIGINT in
//!   PostgreSQL), a status is its policy spelling (`registered_supporter`), standing and
//!   channels are 0/1 INTEGERs in SQLite and BOOLEANs in PostgreSQL (a plan's `col = ?`
//!   binds `true`, which each binds as its own). Indexed by `(clp, id)` for a CLP's or a
//!   region's listing; the primary key serves the keyset on `id` (in PostgreSQL the ids
//!   are `COLLATE "C"`: byte order, as in SQLite).
//! - `member_values(member_id, "name", "email", ...)`: the field values, one nullable
//!   TEXT column per catalogue field (named only from the catalogue, validated and
//!   quoted), one row per member, so a query selects only the columns it may show.
//!
//! Reads go through a few connections ([`Pool`]); writes (an update, an erasure) through
//! one more, each in a transaction. SQLite is in WAL mode, so a write never makes a read
//! wait. PostgreSQL's connections are `postgres::Client`s (blocking, each with a runtime
//! of its own): they are opened before the server's runtime starts and used only from
//! tokio's blocking pool, never from an async task (the client refuses that).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use membergate::plan::sql::sea_query::{
    self, Alias, ColumnDef, Expr, ExprTrait, ForeignKey, Index, OnConflict, PostgresQueryBuilder,
    Query, QueryStatementWriter, SelectStatement, SqliteQueryBuilder, Table,
};
use membergate::sample::{self, SampleConfig};
use membergate::{Channel, Member, MemberStatus, Membership};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection, OpenFlags};
use sea_query_postgres::{PostgresValue, PostgresValues};

use crate::sqlite_bind::bound;

/// The errors of the database, as text for the operator.
pub type DbError = String;

fn sql(e: rusqlite::Error) -> DbError {
    format!("database: {e}")
}

fn pg(e: postgres::Error) -> DbError {
    format!("database: {e}")
}

/// Where the database is: `--db` (and `--db-schema`).
pub enum Target {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server: `conn` a `postgres://` or `postgresql://` URL, or a libpq
    /// `key=value` string starting with `host=`; the tables in `schema` if given (created
    /// when absent), else in the connection's default search path (`public`).
    Postgres {
        conn: String,
        schema: Option<String>,
    },
}

impl Target {
    /// `db` as a target: PostgreSQL for a `postgres://`, `postgresql://` or `host=...`
    /// string, else a SQLite file. `schema` only with PostgreSQL.
    pub fn parse(db: &str, schema: Option<&str>) -> Result<Target, DbError> {
        let postgres = ["postgres://", "postgresql://", "host="]
            .iter()
            .any(|p| db.starts_with(p));
        match (postgres, schema) {
            (true, schema) => {
                if let Some(s) = schema {
                    plain(s).map_err(|()| format!("--db-schema `{s}` is not a plain name"))?;
                }
                Ok(Target::Postgres {
                    conn: db.to_string(),
                    schema: schema.map(str::to_string),
                })
            }
            (false, None) => Ok(Target::Sqlite(PathBuf::from(db))),
            (false, Some(_)) => Err("--db-schema needs a PostgreSQL --db".into()),
        }
    }

    /// The target for the operator (never a PostgreSQL password).
    pub fn describe(&self) -> String {
        match self {
            Target::Sqlite(path) => path.display().to_string(),
            Target::Postgres { schema, .. } => match schema {
                Some(s) => format!("PostgreSQL schema {s}"),
                None => "PostgreSQL".into(),
            },
        }
    }
}

/// `Ok` if `name` is a plain lowercase identifier (`snake_case`), safe to quote as one.
fn plain(name: &str) -> Result<(), ()> {
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.len() < 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(())
    }
}

const SQLITE_SCHEMA: &str = "
CREATE TABLE records (
  kind TEXT NOT NULL,
  id TEXT NOT NULL,
  body TEXT NOT NULL,
  PRIMARY KEY (kind, id)
) WITHOUT ROWID;
CREATE TABLE members (
  id TEXT PRIMARY KEY,
  status TEXT NOT NULL CHECK (status IN
    ('member', 'registered_supporter', 'affiliated_supporter', 'former', 'expelled')),
  clp TEXT NOT NULL,
  joined_ms INTEGER NOT NULL,
  left_ms INTEGER,
  in_good_standing INTEGER NOT NULL CHECK (in_good_standing IN (0, 1)),
  consent_phone INTEGER NOT NULL CHECK (consent_phone IN (0, 1)),
  consent_email INTEGER NOT NULL CHECK (consent_email IN (0, 1)),
  consent_post INTEGER NOT NULL CHECK (consent_post IN (0, 1)),
  opt_out_phone INTEGER NOT NULL CHECK (opt_out_phone IN (0, 1)),
  opt_out_email INTEGER NOT NULL CHECK (opt_out_email IN (0, 1)),
  opt_out_post INTEGER NOT NULL CHECK (opt_out_post IN (0, 1))
) WITHOUT ROWID;
CREATE INDEX members_by_clp ON members (clp, id);
";

/// The same tables in PostgreSQL (BIGINT times, BOOLEAN flags, ids in byte order), with
/// `member_values` a TEXT column per field of `columns` (checked names).
fn postgres_schema(columns: &[&str]) -> Vec<String> {
    let id = |name: &str| {
        let mut c = ColumnDef::new(Alias::new(name));
        c.text().extra("COLLATE \"C\"").not_null();
        c
    };
    let flag = |name: &str| {
        let mut c = ColumnDef::new(Alias::new(name));
        c.boolean().not_null();
        c
    };
    let mut records = Table::create();
    records
        .table("records")
        .col(ColumnDef::new("kind").text().not_null())
        .col(ColumnDef::new("id").text().not_null())
        .col(ColumnDef::new("body").text().not_null())
        .primary_key(Index::create().col("kind").col("id"));
    let mut members = Table::create();
    members
        .table("members")
        .col(id("id").primary_key())
        .col(
            ColumnDef::new("status")
                .text()
                .not_null()
                .check(Expr::col("status").is_in(MemberStatus::ALL.map(|s| s.as_str()))),
        )
        .col(ColumnDef::new("clp").text().not_null())
        .col(ColumnDef::new("joined_ms").big_integer().not_null())
        .col(ColumnDef::new("left_ms").big_integer().null());
    for c in &MEMBER_COLUMNS[4..] {
        members.col(flag(c));
    }
    let mut values = Table::create();
    values
        .table("member_values")
        .col(id("member_id").primary_key())
        .foreign_key(
            ForeignKey::create()
                .from("member_values", "member_id")
                .to("members", "id"),
        );
    for c in columns {
        values.col(ColumnDef::new(Alias::new(*c)).text().null());
    }
    let index = Index::create()
        .name("members_by_clp")
        .table("members")
        .col("clp")
        .col("id")
        .to_owned();
    vec![
        records.to_string(PostgresQueryBuilder),
        members.to_string(PostgresQueryBuilder),
        values.to_string(PostgresQueryBuilder),
        index.to_string(PostgresQueryBuilder),
    ]
}

/// The columns a `Member` is read from, in the order [`member_of`] expects them.
pub const MEMBER_COLUMNS: [&str; 11] = [
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
];

const CHANNELS: [Channel; 3] = [Channel::Phone, Channel::Email, Channel::Post];

/// The channel spelt `name` (`phone`), as the policies spell it.
fn channel(name: &str) -> Option<Channel> {
    CHANNELS.into_iter().find(|ch| ch.as_str() == name)
}

/// The member status spelt `name` (`registered_supporter`), as the policies spell it.
fn status(name: &str) -> Option<MemberStatus> {
    MemberStatus::ALL.into_iter().find(|s| s.as_str() == name)
}

/// A flag per channel, phone, email, post.
fn flags(channels: &[Channel]) -> [bool; 3] {
    CHANNELS.map(|c| channels.contains(&c))
}

/// A time as the database keeps it: milliseconds since the epoch, truncated toward the
/// past (as membergate compares them).
pub fn millis(t: Timestamp) -> i64 {
    t.as_second() * 1000 + i64::from(t.subsec_nanosecond().div_euclid(1_000_000))
}

/// A catalogue field's name as a column of `member_values`; an error for a name that is
/// not a plain identifier (the catalogue's names are `snake_case`).
fn checked(name: &str) -> Result<&str, DbError> {
    if plain(name).is_err() || name == "member_id" {
        return Err(format!("the field `{name}` cannot be a column"));
    }
    Ok(name)
}

/// A value read from either database.
#[derive(Debug)]
enum Cell {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
}

/// One connection, to either database; `open` while a transaction of
/// [`Link::transaction`] is (a panic midway leaves it open: the next one rolls it back).
struct Link {
    conn: Conn,
    open: bool,
}

enum Conn {
    Sqlite(Connection),
    Postgres(Box<postgres::Client>),
}

/// A PostgreSQL row's column as a [`Cell`], by its type.
fn pg_cell(row: &postgres::Row, i: usize) -> Result<Cell, DbError> {
    use postgres::types::Type;
    let ty = row.columns()[i].type_().clone();
    let got = |e: postgres::Error| pg(e);
    Ok(if ty == Type::BOOL {
        row.try_get::<_, Option<bool>>(i)
            .map_err(got)?
            .map_or(Cell::Null, Cell::Bool)
    } else if ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(i)
            .map_err(got)?
            .map_or(Cell::Null, Cell::Int)
    } else if ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(i)
            .map_err(got)?
            .map_or(Cell::Null, |v| Cell::Int(v.into()))
    } else if ty == Type::INT2 {
        row.try_get::<_, Option<i16>>(i)
            .map_err(got)?
            .map_or(Cell::Null, |v| Cell::Int(v.into()))
    } else if [Type::TEXT, Type::VARCHAR, Type::NAME, Type::BPCHAR].contains(&ty) {
        row.try_get::<_, Option<String>>(i)
            .map_err(got)?
            .map_or(Cell::Null, Cell::Text)
    } else {
        return Err(format!("database: a column of type {ty} is not read here"));
    })
}

/// A SQLite row's columns as [`Cell`]s.
fn sqlite_cells(row: &rusqlite::Row<'_>, n: usize) -> Result<Vec<Cell>, DbError> {
    (0..n)
        .map(|i| {
            Ok(match row.get::<_, SqlValue>(i).map_err(sql)? {
                SqlValue::Null => Cell::Null,
                SqlValue::Integer(v) => Cell::Int(v),
                SqlValue::Text(t) => Cell::Text(t),
                v => return Err(format!("database: a value {v:?} is not read here")),
            })
        })
        .collect()
}

impl Link {
    fn sqlite(conn: Connection) -> Link {
        Link {
            conn: Conn::Sqlite(conn),
            open: false,
        }
    }

    /// A connection to PostgreSQL, its search path set to `schema` if given.
    fn postgres(conn: &str, schema: Option<&str>) -> Result<Link, DbError> {
        let mut client = postgres::Client::connect(conn, postgres::NoTls)
            .map_err(|e| format!("connecting to PostgreSQL: {e}"))?;
        if let Some(s) = schema {
            // A plain name (checked by `Target::parse`), quoted.
            client
                .batch_execute(&format!("SET search_path TO \"{s}\""))
                .map_err(pg)?;
        }
        Ok(Link {
            conn: Conn::Postgres(Box::new(client)),
            open: false,
        })
    }

    fn open(target: &Target) -> Result<Link, DbError> {
        match target {
            Target::Sqlite(path) => {
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(sql)?;
                conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
                Ok(Link::sqlite(conn))
            }
            Target::Postgres { conn, schema } => Link::postgres(conn, schema.as_deref()),
        }
    }

    /// Runs `stmt`, each row as its cells.
    fn rows(&mut self, stmt: &impl QueryStatementWriter) -> Result<Vec<Vec<Cell>>, DbError> {
        match &mut self.conn {
            Conn::Sqlite(conn) => {
                let (text, values) = stmt.build(SqliteQueryBuilder);
                let values = bound(values)?;
                let mut stmt = conn.prepare_cached(&text).map_err(sql)?;
                let n = stmt.column_count();
                let mut rows = stmt.query(params_from_iter(values)).map_err(sql)?;
                let mut out = Vec::new();
                while let Some(row) = rows.next().map_err(sql)? {
                    out.push(sqlite_cells(row, n)?);
                }
                Ok(out)
            }
            Conn::Postgres(client) => {
                let (text, values) = stmt.build(PostgresQueryBuilder);
                let values = PostgresValues(values.into_iter().map(PostgresValue).collect());
                let rows = client
                    .query(text.as_str(), &values.as_params())
                    .map_err(pg)?;
                rows.iter()
                    .map(|row| (0..row.len()).map(|i| pg_cell(row, i)).collect())
                    .collect()
            }
        }
    }

    /// Runs `stmt` (an insert, update or delete); the rows it changed.
    fn execute(&mut self, stmt: &impl QueryStatementWriter) -> Result<u64, DbError> {
        match &mut self.conn {
            Conn::Sqlite(conn) => {
                let (text, values) = stmt.build(SqliteQueryBuilder);
                let values = bound(values)?;
                let mut stmt = conn.prepare_cached(&text).map_err(sql)?;
                let n = stmt.execute(params_from_iter(values)).map_err(sql)?;
                Ok(u64::try_from(n).unwrap_or(u64::MAX))
            }
            Conn::Postgres(client) => {
                let (text, values) = stmt.build(PostgresQueryBuilder);
                let values = PostgresValues(values.into_iter().map(PostgresValue).collect());
                client
                    .execute(text.as_str(), &values.as_params())
                    .map_err(pg)
            }
        }
    }

    /// Runs statements of fixed text (no value bound).
    fn batch(&mut self, text: &str) -> Result<(), DbError> {
        match &mut self.conn {
            Conn::Sqlite(conn) => conn.execute_batch(text).map_err(sql),
            Conn::Postgres(client) => client.batch_execute(text).map_err(pg),
        }
    }

    /// Runs `work` in a transaction: committed if it returns `Ok`, rolled back if not.
    fn transaction<T>(
        &mut self,
        work: impl FnOnce(&mut Link) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        if self.open {
            // One that a panic interrupted.
            self.batch("ROLLBACK")?;
            self.open = false;
        }
        self.batch("BEGIN")?;
        self.open = true;
        let done = work(self);
        let end = if done.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = self.batch(end);
        self.open = false;
        let value = done?;
        ended?;
        Ok(value)
    }

    /// The field columns of `member_values` (every column but `member_id`).
    fn value_columns(&mut self) -> Result<Vec<String>, DbError> {
        let names: Vec<String> = match &mut self.conn {
            Conn::Sqlite(conn) => {
                let mut stmt = conn
                    .prepare("SELECT name FROM pragma_table_info('member_values') ORDER BY cid")
                    .map_err(sql)?;
                let names = stmt
                    .query_map([], |row| row.get::<_, String>(0))
                    .map_err(sql)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(sql)?;
                names
            }
            Conn::Postgres(client) => client
                .query(
                    "SELECT attname::text FROM pg_attribute \
                     WHERE attrelid = 'member_values'::regclass AND attnum > 0 \
                     AND NOT attisdropped ORDER BY attnum",
                    &[],
                )
                .map_err(pg)?
                .iter()
                .map(|row| row.try_get::<_, String>(0).map_err(pg))
                .collect::<Result<_, _>>()?,
        };
        Ok(names.into_iter().filter(|n| n != "member_id").collect())
    }
}

/// Whether the database at `target` exists (a SQLite file; a PostgreSQL schema with a
/// `members` table).
pub fn exists(target: &Target) -> Result<bool, DbError> {
    match target {
        Target::Sqlite(path) => Ok(path.exists()),
        Target::Postgres { conn, schema } => {
            let mut link = Link::postgres(conn, schema.as_deref())?;
            let Conn::Postgres(client) = &mut link.conn else {
                unreachable!("a PostgreSQL link");
            };
            // `current_schema()` is NULL while the schema named does not exist.
            let row = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
                     WHERE table_schema = current_schema() AND table_name = 'members')",
                    &[],
                )
                .map_err(pg)?;
            row.try_get(0).map_err(pg)
        }
    }
}

/// Rows per multi-row INSERT when seeding (a member's values are a parameter per field).
const SEED_BATCH: usize = 500;

/// What a new database is seeded with.
pub enum Seed<'a> {
    /// A membership held whole (the bundled sample).
    Membership(&'a Membership),
    /// Members generated by `membergate::sample::generate_each` and written as they are
    /// made, [`SEED_BATCH`] at a time: whatever their number, at most a batch of them is
    /// held (the principal side is written last: its call sessions draw from the members).
    Generated(SampleConfig),
}

/// The members' rows of a seeding not yet written: at most [`SEED_BATCH`], as two
/// multi-row INSERTs (`members`, `member_values`).
struct SeedBatch<'f> {
    fields: &'f [&'f str],
    rows: sea_query::InsertStatement,
    values: sea_query::InsertStatement,
    held: usize,
    written: usize,
}

impl<'f> SeedBatch<'f> {
    fn new(fields: &'f [&'f str]) -> SeedBatch<'f> {
        let mut batch = SeedBatch {
            fields,
            rows: Query::insert(),
            values: Query::insert(),
            held: 0,
            written: 0,
        };
        batch.reset();
        batch
    }

    fn reset(&mut self) {
        let mut rows = Query::insert();
        rows.into_table("members")
            .columns(std::iter::once("id").chain(MEMBER_COLUMNS));
        let mut values = Query::insert();
        values.into_table("member_values").columns(
            std::iter::once(Alias::new("member_id"))
                .chain(self.fields.iter().map(|f| Alias::new(*f))),
        );
        self.rows = rows;
        self.values = values;
        self.held = 0;
    }

    /// Adds member `id`'s row and values; writes the batch once it is full.
    fn push(
        &mut self,
        link: &mut Link,
        id: &str,
        m: &Member,
        given: Option<&BTreeMap<String, String>>,
    ) -> Result<(), DbError> {
        let [cp, ce, cpost] = flags(&m.consents);
        let [op, oe, opost] = flags(&m.opt_outs);
        self.rows.values_panic([
            Expr::val(id),
            Expr::val(m.status.as_str()),
            Expr::val(m.clp.as_str()),
            Expr::val(millis(m.joined)),
            Expr::val(m.left.map(millis)),
            Expr::val(m.in_good_standing),
            Expr::val(cp),
            Expr::val(ce),
            Expr::val(cpost),
            Expr::val(op),
            Expr::val(oe),
            Expr::val(opost),
        ]);
        self.values.values_panic(
            std::iter::once(Expr::val(id)).chain(
                self.fields
                    .iter()
                    .map(|f| Expr::val(given.and_then(|v| v.get(*f)).map(String::as_str))),
            ),
        );
        self.held += 1;
        if self.held == SEED_BATCH {
            self.flush(link)?;
        }
        Ok(())
    }

    /// Writes the rows held.
    fn flush(&mut self, link: &mut Link) -> Result<(), DbError> {
        if self.held > 0 {
            link.execute(&self.rows)?;
            link.execute(&self.values)?;
            self.written += self.held;
            self.reset();
        }
        Ok(())
    }
}

/// Writes the principal side of `membership` (its members are not read) to `records`.
fn seed_records(link: &mut Link, membership: &Membership) -> Result<(), DbError> {
    let others = serde_json::to_value(membership.principal_side())
        .map_err(|e| format!("encoding the records: {e}"))?;
    let records: Vec<(&String, &String, String)> = others
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(kind, records)| {
            records
                .as_object()
                .into_iter()
                .flatten()
                .map(move |(id, body)| (kind, id, body.to_string()))
        })
        .collect();
    for batch in records.chunks(SEED_BATCH) {
        let mut insert = Query::insert();
        insert.into_table("records").columns(["kind", "id", "body"]);
        for (kind, id, body) in batch {
            insert.values_panic([
                Expr::val(kind.as_str()),
                Expr::val(id.as_str()),
                Expr::val(body.as_str()),
            ]);
        }
        link.execute(&insert)?;
    }
    Ok(())
}

/// Fills a new database's tables with `seed` (`member_values` with a column per field of
/// `fields`), a multi-row INSERT per [`SEED_BATCH`] rows; the members written.
fn seed(link: &mut Link, seed: &Seed<'_>, fields: &[&str]) -> Result<usize, DbError> {
    let mut batch = SeedBatch::new(fields);
    match seed {
        Seed::Membership(membership) => {
            for (id, m) in &membership.members {
                batch.push(link, id, m, membership.values.get(id))?;
            }
            seed_records(link, membership)?;
        }
        Seed::Generated(config) => {
            let mut failed = None;
            let principal_side = sample::generate_each(config, |id, m, values| {
                if failed.is_none() {
                    if let Err(e) = batch.push(link, id, &m, Some(&values)) {
                        failed = Some(e);
                    }
                }
            });
            if let Some(e) = failed {
                return Err(e);
            }
            seed_records(link, &principal_side)?;
        }
    }
    batch.flush(link)?;
    Ok(batch.written)
}

/// Creates the database at `target` and fills it with `seed`, `member_values` with
/// a column per field of `fields` (the catalogue's names), in one transaction: a crash
/// leaves no half-seeded database (SQLite: the file is written beside and renamed;
/// PostgreSQL: the schema, tables and rows are one transaction). Returns the members
/// written.
pub fn create(target: &Target, seed_with: &Seed<'_>, fields: &[&str]) -> Result<usize, DbError> {
    let columns = fields
        .iter()
        .map(|f| checked(f))
        .collect::<Result<Vec<_>, _>>()?;
    match target {
        Target::Sqlite(path) => {
            let partial = path.with_extension("seeding");
            let _ = std::fs::remove_file(&partial);
            let conn = Connection::open(&partial).map_err(sql)?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(sql)?;
            let mut link = Link::sqlite(conn);
            let values_table = format!(
                "CREATE TABLE member_values (\n  member_id TEXT PRIMARY KEY REFERENCES members (id){}\n) WITHOUT ROWID;",
                columns
                    .iter()
                    .map(|c| format!(",\n  \"{c}\" TEXT"))
                    .collect::<String>()
            );
            let written = link.transaction(|link| {
                link.batch(SQLITE_SCHEMA)?;
                link.batch(&values_table)?;
                seed(link, seed_with, &columns)
            })?;
            drop(link);
            std::fs::rename(&partial, path)
                .map_err(|e| format!("moving {} into place: {e}", partial.display()))?;
            Ok(written)
        }
        Target::Postgres { conn, schema } => {
            let mut link = Link::postgres(conn, schema.as_deref())?;
            let written = link.transaction(|link| {
                if let Some(s) = schema {
                    link.batch(&format!("CREATE SCHEMA IF NOT EXISTS \"{s}\""))?;
                }
                for statement in postgres_schema(&columns) {
                    link.batch(&statement)?;
                }
                seed(link, seed_with, &columns)
            })?;
            // Fresh statistics for the planner: autovacuum would gather them only later.
            link.batch("ANALYZE members, member_values")?;
            Ok(written)
        }
    }
}

/// Text of a cell, else an error naming `what`.
fn text(id: &str, what: &str, cell: &Cell) -> Result<String, DbError> {
    match cell {
        Cell::Text(t) => Ok(t.clone()),
        v => Err(format!("member {id}: {what} `{v:?}` is not valid")),
    }
}

/// The member attributes of a row's cells in the order of [`MEMBER_COLUMNS`].
fn member_of(id: &str, cells: &[Cell]) -> Result<Member, DbError> {
    let bad = |what: &str, value: &dyn std::fmt::Debug| {
        format!("member {id}: {what} `{value:?}` is not valid")
    };
    let cell = |i: usize| cells.get(i).unwrap_or(&Cell::Null);
    let time = |i: usize, what: &str| -> Result<Option<Timestamp>, DbError> {
        match cell(i) {
            Cell::Null => Ok(None),
            Cell::Int(ms) => Timestamp::from_millisecond(*ms)
                .map(Some)
                .map_err(|_| bad(what, ms)),
            Cell::Text(t) => Err(format!("member {id}: {what} `{t}` is not valid")),
            v => Err(bad(what, v)),
        }
    };
    let flag = |i: usize, what: &str| -> Result<bool, DbError> {
        match cell(i) {
            Cell::Int(0) | Cell::Bool(false) => Ok(false),
            Cell::Int(1) | Cell::Bool(true) => Ok(true),
            v => Err(bad(what, v)),
        }
    };
    let channels = |from: usize, what: &str| -> Result<Vec<Channel>, DbError> {
        let mut out = Vec::new();
        for (i, c) in CHANNELS.into_iter().enumerate() {
            if flag(from + i, what)? {
                out.push(c);
            }
        }
        Ok(out)
    };
    let spelt = text(id, "status", cell(0))?;
    Ok(Member {
        status: status(&spelt).ok_or_else(|| bad("status", &spelt))?,
        clp: text(id, "clp", cell(1))?,
        joined: time(2, "joined_ms")?.ok_or_else(|| bad("joined_ms", &"NULL"))?,
        left: time(3, "left_ms")?,
        in_good_standing: flag(4, "in_good_standing")?,
        consents: channels(5, "consents")?,
        opt_outs: channels(8, "opt_outs")?,
    })
}

/// A row of a listing: the member's id, attributes, and the values its query revealed
/// (`None`: hidden by the plan, or no value).
pub struct Listed {
    pub id: String,
    pub attrs: Member,
    pub values: Vec<Option<String>>,
}

/// How long a SQLite statement waits for a lock another connection holds before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// A few connections for reads, handed out in turn (a connection serves one request at a
/// time), and the one connection that writes; the app's functions on the database.
pub struct Pool {
    /// The fields `member_values` has a column for, by name.
    pub fields: Vec<String>,
    conns: Vec<Mutex<Link>>,
    next: AtomicUsize,
    writer: Mutex<Link>,
    /// PostgreSQL's connection string and schema, to reopen a connection the server
    /// closed (a restart, an administrator's kill): the request that finds it closed
    /// fails (500), the next one on it gets a new connection.
    reopen: Option<(String, Option<String>)>,
}

/// A lock's guard even if poisoned: a panic while holding a connection only means another
/// request panicked (a transaction it left open is rolled back before the next one).
fn locked(m: &Mutex<Link>) -> MutexGuard<'_, Link> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Pool {
    /// `size` connections for reads to the database at `target`, and one that writes.
    pub fn open(target: &Target, size: usize) -> Result<Pool, DbError> {
        // The writer first: it puts a SQLite database made before WAL mode into it, which
        // the readers then open.
        let mut writer = Link::open(target)?;
        let conns = match target {
            Target::Sqlite(path) => {
                writer.batch("PRAGMA journal_mode = WAL")?;
                (0..size.max(1))
                    .map(|_| {
                        let conn = Connection::open_with_flags(
                            path,
                            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                        )
                        .map_err(sql)?;
                        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
                        Ok(Mutex::new(Link::sqlite(conn)))
                    })
                    .collect::<Result<_, DbError>>()?
            }
            Target::Postgres { .. } => (0..size.max(1))
                .map(|_| Link::open(target).map(Mutex::new))
                .collect::<Result<_, DbError>>()?,
        };
        let fields = writer.value_columns()?;
        let reopen = match target {
            Target::Sqlite(_) => None,
            Target::Postgres { conn, schema } => Some((conn.clone(), schema.clone())),
        };
        Ok(Pool {
            fields,
            conns,
            next: AtomicUsize::new(0),
            writer: Mutex::new(writer),
            reopen,
        })
    }

    /// `link`, reopened first if it is a PostgreSQL connection the server closed (if that
    /// fails, the closed one stays and its statements fail: the request gets a 500).
    fn live<'a>(&self, mut link: MutexGuard<'a, Link>) -> MutexGuard<'a, Link> {
        if let (Conn::Postgres(client), Some((conn, schema))) = (&link.conn, &self.reopen) {
            if client.is_closed() {
                match Link::postgres(conn, schema.as_deref()) {
                    Ok(new) => *link = new,
                    Err(e) => eprintln!("crm: reopening a database connection: {e}"),
                }
            }
        }
        link
    }

    /// The connection that writes (one write at a time).
    fn writer(&self) -> MutexGuard<'_, Link> {
        self.live(locked(&self.writer))
    }

    /// A connection for reads: the first free one, else the next in turn once it is free.
    fn get(&self) -> MutexGuard<'_, Link> {
        for c in &self.conns {
            if let Ok(guard) = c.try_lock() {
                return self.live(guard);
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.live(locked(&self.conns[i]))
    }

    /// Reads the principal side of the records (no members): what the engine's directory
    /// holds.
    pub fn load(&self) -> Result<Membership, DbError> {
        let mut q = Query::select();
        q.columns(["kind", "id", "body"])
            .from("records")
            .order_by("kind", sea_query::Order::Asc)
            .order_by("id", sea_query::Order::Asc);
        let mut collections = serde_json::Map::new();
        for row in self.get().rows(&q)? {
            let [kind, id, body] = [0, 1, 2].map(|i| text("-", "record", &row[i]));
            let (kind, id, body) = (kind?, id?, body?);
            let body: serde_json::Value =
                serde_json::from_str(&body).map_err(|e| format!("record {kind}/{id}: {e}"))?;
            if let Some(map) = collections
                .entry(kind)
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()))
                .as_object_mut()
            {
                map.insert(id, body);
            }
        }
        serde_json::from_value(serde_json::Value::Object(collections))
            .map_err(|e| format!("the records do not make a membership: {e}"))
    }

    /// How many members the database holds.
    pub fn member_count(&self) -> Result<i64, DbError> {
        let mut q = Query::select();
        q.expr(Expr::col(sea_query::Asterisk).count())
            .from("members");
        match self.get().rows(&q)?.first().and_then(|r| r.first()) {
            Some(Cell::Int(n)) => Ok(*n),
            other => Err(format!("database: a count of {other:?}")),
        }
    }

    /// Member `id`'s policy-relevant attributes, read with its row; `None` if there is no
    /// such member.
    pub fn member(&self, id: &str) -> Result<Option<Member>, DbError> {
        let mut q = Query::select();
        q.columns(MEMBER_COLUMNS)
            .from("members")
            .and_where(Expr::col("id").eq(id));
        self.get()
            .rows(&q)?
            .first()
            .map(|row| member_of(id, row))
            .transpose()
    }

    /// Runs a listing's query: its columns must be `id`, the [`MEMBER_COLUMNS`], then
    /// `fields` text columns. Returns its rows, in the query's order.
    pub fn list(&self, query: &SelectStatement, fields: usize) -> Result<Vec<Listed>, DbError> {
        let first = 1 + MEMBER_COLUMNS.len();
        self.get()
            .rows(query)?
            .into_iter()
            .map(|row| {
                let id = text("?", "id", &row[0])?;
                let attrs = member_of(&id, &row[1..first])?;
                let values = (first..first + fields)
                    .map(|i| match row.get(i) {
                        Some(Cell::Text(t)) => Ok(Some(t.clone())),
                        Some(Cell::Null) => Ok(None),
                        v => Err(format!("member {id}: a value {v:?} is not text")),
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Listed { id, attrs, values })
            })
            .collect()
    }

    /// The values of `member`'s fields among `fields` (names), by field name: only their
    /// columns are selected. A field the table has no column for has no value.
    pub fn values(
        &self,
        member: &str,
        fields: &[&str],
    ) -> Result<BTreeMap<String, String>, DbError> {
        let wanted: Vec<&str> = fields
            .iter()
            .copied()
            .filter(|f| self.fields.iter().any(|k| k == f))
            .collect();
        if wanted.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut q = Query::select();
        for f in &wanted {
            q.column(Alias::new(checked(f)?));
        }
        q.from("member_values")
            .and_where(Expr::col("member_id").eq(member));
        let mut out = BTreeMap::new();
        if let Some(row) = self.get().rows(&q)?.into_iter().next() {
            for (f, cell) in wanted.iter().zip(row) {
                if let Cell::Text(v) = cell {
                    out.insert((*f).to_string(), v);
                }
            }
        }
        Ok(out)
    }

    /// Writes `values` (field name to value) to member `id`, with the attributes they
    /// mirror, in one transaction: all or nothing. `Ok(false)` if there is no such member.
    pub fn update(&self, id: &str, values: &BTreeMap<String, String>) -> Result<bool, DbError> {
        self.writer().transaction(|tx| {
            let mut exists = Query::select();
            exists
                .column("id")
                .from("members")
                .and_where(Expr::col("id").eq(id));
            if tx.rows(&exists)?.is_empty() {
                return Ok(false);
            }
            let mut row = Query::insert();
            row.into_table("member_values")
                .columns(["member_id"])
                .values_panic([Expr::val(id)])
                .on_conflict(OnConflict::column("member_id").do_nothing().to_owned());
            tx.execute(&row)?;
            for (field, value) in values {
                // The column is a catalogue field's name (the caller checked it),
                // validated and quoted: never a request's text as such.
                let mut set = Query::update();
                set.table("member_values")
                    .value(Alias::new(checked(field)?), value.as_str())
                    .and_where(Expr::col("member_id").eq(id));
                tx.execute(&set)?;
                let mirrored: Vec<(&str, Expr)> = match mirrored(field, value)? {
                    None => continue,
                    Some(Mirrored::Status(s)) => vec![("status", Expr::val(s.as_str()))],
                    Some(Mirrored::Consents(c)) => {
                        let [p, e, post] = flags(&c);
                        vec![
                            ("consent_phone", Expr::val(p)),
                            ("consent_email", Expr::val(e)),
                            ("consent_post", Expr::val(post)),
                        ]
                    }
                    Some(Mirrored::OptOuts(c)) => {
                        let [p, e, post] = flags(&c);
                        vec![
                            ("opt_out_phone", Expr::val(p)),
                            ("opt_out_email", Expr::val(e)),
                            ("opt_out_post", Expr::val(post)),
                        ]
                    }
                };
                let mut set = Query::update();
                set.table("members")
                    .values(mirrored)
                    .and_where(Expr::col("id").eq(id));
                tx.execute(&set)?;
            }
            Ok(true)
        })
    }

    /// Erases member `id`: its row and every value, in one transaction. `Ok(false)` if
    /// there is no such member.
    pub fn erase(&self, id: &str) -> Result<bool, DbError> {
        self.writer().transaction(|tx| {
            let mut values = Query::delete();
            values
                .from_table("member_values")
                .and_where(Expr::col("member_id").eq(id));
            tx.execute(&values)?;
            let mut row = Query::delete();
            row.from_table("members").and_where(Expr::col("id").eq(id));
            Ok(tx.execute(&row)? == 1)
        })
    }
}

/// A field the policies also read as a member attribute: a write to it must change the
/// attribute too, or the next decision would be made on the old one.
pub enum Mirrored {
    /// `status`: the member's status, in its policy spelling (`former`).
    Status(MemberStatus),
    /// `contact_consents`: the channels consented to (`phone, email`, or `none`).
    Consents(Vec<Channel>),
    /// `opt_outs`: the channels opted out of.
    OptOuts(Vec<Channel>),
}

/// The fields the example cannot change by an update: they decide who reaches the member
/// (its CLP and region) or its history (`joined_on`, `left_on`), which a membership
/// process changes, not a field edit.
pub const NOT_UPDATABLE: [&str; 4] = ["clp", "region", "joined_on", "left_on"];

/// What writing `value` to `field` changes in the member's row, if the field mirrors an
/// attribute; an error naming the field if the value is not one the attribute can hold.
pub fn mirrored(field: &str, value: &str) -> Result<Option<Mirrored>, String> {
    let channels = || -> Result<Vec<Channel>, String> {
        let list = value.trim();
        if list == "none" || list.is_empty() {
            return Ok(Vec::new());
        }
        list.split(',')
            .map(|c| {
                let c = c.trim();
                channel(c).ok_or_else(|| {
                    format!("{field}: `{c}` is not a channel (phone, email, post, or none)")
                })
            })
            .collect()
    };
    Ok(match field {
        "status" => {
            Some(Mirrored::Status(status(value).ok_or_else(|| {
                format!("status: `{value}` is not a member status")
            })?))
        }
        "contact_consents" => Some(Mirrored::Consents(channels()?)),
        "opt_outs" => Some(Mirrored::OptOuts(channels()?)),
        _ => None,
    })
}
