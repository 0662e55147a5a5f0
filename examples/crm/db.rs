//! The CRM's SQLite database: the party's records, each member's row, and each member's
//! field values. Only this module speaks SQLite: queries built elsewhere (the listing's,
//! with sea-query) arrive as statements and are rendered and bound here, so that another
//! backend can be added beside it.
//!
//! - `records(kind, id, body)`: the principal side (staff, campaigns, CLPs, call
//!   sessions, ...) as JSON, `kind` naming its collection of `membergate::Membership`;
//!   loaded once into the engine's `Directory`.
//! - `members(id, status, clp, joined_ms, left_ms, in_good_standing, consent_phone,
//!   consent_email, consent_post, opt_out_phone, opt_out_email, opt_out_post)`: each
//!   member's policy-relevant attributes in the layout of
//!   `membergate::plan::sql::MemberColumns::default()`, read with the member's row for
//!   every request (a `membergate::Member`) and filtered on by a listing's plan. Times are
//!   INTEGER milliseconds since the epoch (truncated toward the past), a status is its
//!   policy spelling (`registered_supporter`), standing and channels are 0/1. Indexed by
//!   `(clp, id)` for a CLP's or a region's listing; the primary key serves the keyset on
//!   `id`.
//! - `member_values(member_id, "name", "email", ...)`: the field values, one nullable
//!   TEXT column per catalogue field (named only from the catalogue, validated and
//!   quoted), one row per member, so a query selects only the columns it may show.
//!
//! Reads go through a few read-only connections ([`Pool`]); writes (an update, an
//! erasure) through one read-write connection, each in a transaction. The database is in
//! WAL mode, so a write never makes a read wait.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use membergate::plan::sql::sea_query::{self, SelectStatement, SqliteQueryBuilder};
use membergate::{Channel, Member, MemberStatus, Membership};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OpenFlags, Row};

/// The errors of the database, as text for the operator.
pub type DbError = String;

fn sql(e: rusqlite::Error) -> DbError {
    format!("database: {e}")
}

const SCHEMA: &str = "
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

/// The columns a `Member` is read from, in the order [`member_of`] expects them (a macro,
/// so that each statement is one literal, prepared and cached without formatting).
macro_rules! member_columns {
    () => {
        "status, clp, joined_ms, left_ms, in_good_standing, consent_phone, consent_email, \
         consent_post, opt_out_phone, opt_out_email, opt_out_post"
    };
}

/// The columns of [`member_columns!`], for queries built with sea-query.
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

/// 0/1 per channel, phone, email, post.
fn flags(channels: &[Channel]) -> [bool; 3] {
    CHANNELS.map(|c| channels.contains(&c))
}

/// A time as the database keeps it: milliseconds since the epoch, truncated toward the
/// past (as membergate compares them).
pub fn millis(t: Timestamp) -> i64 {
    t.as_second() * 1000 + i64::from(t.subsec_nanosecond().div_euclid(1_000_000))
}

/// A catalogue field's name as a column of `member_values`, quoted; an error for a name
/// that is not a plain identifier (the catalogue's names are `snake_case`).
pub fn field_column(name: &str) -> Result<String, DbError> {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !plain || name == "member_id" {
        return Err(format!("the field `{name}` cannot be a column"));
    }
    Ok(format!("\"{name}\""))
}

/// Creates the database at `path` and fills it with `membership`, `member_values` with
/// a column per field of `fields` (the catalogue's names), in one transaction: a crash
/// leaves no half-seeded database (the file is written beside and renamed).
pub fn create(path: &Path, membership: &Membership, fields: &[&str]) -> Result<(), DbError> {
    let columns = fields
        .iter()
        .map(|f| field_column(f))
        .collect::<Result<Vec<_>, _>>()?;
    let partial = path.with_extension("seeding");
    let _ = std::fs::remove_file(&partial);
    let mut conn = Connection::open(&partial).map_err(sql)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sql)?;
    let tx = conn.transaction().map_err(sql)?;
    tx.execute_batch(SCHEMA).map_err(sql)?;
    let values_table = format!(
        "CREATE TABLE member_values (\n  member_id TEXT PRIMARY KEY REFERENCES members (id){}\n) WITHOUT ROWID;",
        columns
            .iter()
            .map(|c| format!(",\n  {c} TEXT"))
            .collect::<String>()
    );
    tx.execute_batch(&values_table).map_err(sql)?;
    {
        let mut principal_side = membership.clone();
        principal_side.members.clear();
        principal_side.values.clear();
        let mut others = serde_json::to_value(principal_side)
            .map_err(|e| format!("encoding the records: {e}"))?;
        let mut put = tx
            .prepare("INSERT INTO records (kind, id, body) VALUES (?1, ?2, ?3)")
            .map_err(sql)?;
        if let Some(collections) = others.as_object_mut() {
            for (kind, records) in collections.iter() {
                for (id, body) in records.as_object().into_iter().flatten() {
                    put.execute(params![kind, id, body.to_string()])
                        .map_err(sql)?;
                }
            }
        }
        let mut member = tx
            .prepare(concat!(
                "INSERT INTO members (id, ",
                member_columns!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ))
            .map_err(sql)?;
        let insert_values = format!(
            "INSERT INTO member_values (member_id{}) VALUES (?1{})",
            columns.iter().map(|c| format!(", {c}")).collect::<String>(),
            (2..=columns.len() + 1)
                .map(|i| format!(", ?{i}"))
                .collect::<String>()
        );
        let mut value = tx.prepare(&insert_values).map_err(sql)?;
        for (id, m) in &membership.members {
            let [cp, ce, cpost] = flags(&m.consents);
            let [op, oe, opost] = flags(&m.opt_outs);
            member
                .execute(params![
                    id,
                    m.status.as_str(),
                    m.clp,
                    millis(m.joined),
                    m.left.map(millis),
                    m.in_good_standing,
                    cp,
                    ce,
                    cpost,
                    op,
                    oe,
                    opost,
                ])
                .map_err(sql)?;
            let values = membership.values.get(id);
            let row = std::iter::once(SqlValue::Text(id.clone())).chain(fields.iter().map(|f| {
                values
                    .and_then(|v| v.get(*f))
                    .map_or(SqlValue::Null, |v| SqlValue::Text(v.clone()))
            }));
            value.execute(params_from_iter(row)).map_err(sql)?;
        }
    }
    tx.commit().map_err(sql)?;
    drop(conn);
    std::fs::rename(&partial, path)
        .map_err(|e| format!("moving {} into place: {e}", partial.display()))
}

/// Reads the principal side of the records (no members): what the engine's directory
/// holds.
pub fn load(conn: &Connection) -> Result<Membership, DbError> {
    let mut collections = serde_json::Map::new();
    let mut stmt = conn
        .prepare("SELECT kind, id, body FROM records ORDER BY kind, id")
        .map_err(sql)?;
    let mut rows = stmt.query([]).map_err(sql)?;
    while let Some(row) = rows.next().map_err(sql)? {
        let (kind, id, body): (String, String, String) = (
            row.get(0).map_err(sql)?,
            row.get(1).map_err(sql)?,
            row.get(2).map_err(sql)?,
        );
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
pub fn member_count(conn: &Connection) -> Result<i64, DbError> {
    conn.query_row("SELECT COUNT(*) FROM members", [], |row| row.get(0))
        .map_err(sql)
}

/// The member attributes of a row whose `member_columns!()` start at column `at`.
fn member_of(id: &str, row: &Row<'_>, at: usize) -> Result<Member, DbError> {
    let bad = |what: &str, value: &dyn std::fmt::Debug| {
        format!("member {id}: {what} `{value:?}` is not valid")
    };
    let value = |i: usize| -> Result<SqlValue, DbError> { row.get(at + i).map_err(sql) };
    let text = |i: usize, what: &str| -> Result<String, DbError> {
        match value(i)? {
            SqlValue::Text(t) => Ok(t),
            v => Err(bad(what, &v)),
        }
    };
    let time = |i: usize, what: &str| -> Result<Option<Timestamp>, DbError> {
        match value(i)? {
            SqlValue::Null => Ok(None),
            SqlValue::Integer(ms) => Timestamp::from_millisecond(ms)
                .map(Some)
                .map_err(|_| bad(what, &ms)),
            SqlValue::Text(t) => Err(format!("member {id}: {what} `{t}` is not valid")),
            v => Err(bad(what, &v)),
        }
    };
    let flag = |i: usize, what: &str| -> Result<bool, DbError> {
        match value(i)? {
            SqlValue::Integer(0) => Ok(false),
            SqlValue::Integer(1) => Ok(true),
            v => Err(bad(what, &v)),
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
    let spelt = text(0, "status")?;
    Ok(Member {
        status: status(&spelt).ok_or_else(|| bad("status", &spelt))?,
        clp: text(1, "clp")?,
        joined: time(2, "joined_ms")?.ok_or_else(|| bad("joined_ms", &"NULL"))?,
        left: time(3, "left_ms")?,
        in_good_standing: flag(4, "in_good_standing")?,
        consents: channels(5, "consents")?,
        opt_outs: channels(8, "opt_outs")?,
    })
}

/// Member `id`'s policy-relevant attributes, read with its row; `None` if there is no
/// such member.
pub fn member(conn: &Connection, id: &str) -> Result<Option<Member>, DbError> {
    let mut stmt = conn
        .prepare_cached(concat!(
            "SELECT ",
            member_columns!(),
            " FROM members WHERE id = ?1"
        ))
        .map_err(sql)?;
    let mut rows = stmt.query([id]).map_err(sql)?;
    rows.next()
        .map_err(sql)?
        .map(|row| member_of(id, row, 0))
        .transpose()
}

/// A row of a listing: the member's id, attributes, and the values its query revealed
/// (`None`: hidden by the plan, or no value).
pub struct Listed {
    pub id: String,
    pub attrs: Member,
    pub values: Vec<Option<String>>,
}

/// A `sea_query::Value` bound as SQLite's (rusqlite has no binder for sea-query's values).
fn bound(v: sea_query::Value) -> Result<SqlValue, DbError> {
    use sea_query::Value as V;
    let int = |i: Option<i64>| i.map_or(SqlValue::Null, SqlValue::Integer);
    Ok(match v {
        V::Bool(b) => int(b.map(i64::from)),
        V::TinyInt(i) => int(i.map(i64::from)),
        V::SmallInt(i) => int(i.map(i64::from)),
        V::Int(i) => int(i.map(i64::from)),
        V::BigInt(i) => int(i),
        V::TinyUnsigned(i) => int(i.map(i64::from)),
        V::SmallUnsigned(i) => int(i.map(i64::from)),
        V::Unsigned(i) => int(i.map(i64::from)),
        V::BigUnsigned(None) => SqlValue::Null,
        V::BigUnsigned(Some(u)) => SqlValue::Integer(
            i64::try_from(u).map_err(|_| format!("the value {u} does not fit SQLite"))?,
        ),
        V::String(s) => s.map_or(SqlValue::Null, SqlValue::Text),
        other => return Err(format!("a value SQLite is not given here: {other:?}")),
    })
}

/// Runs a listing's query: its columns must be `id`, the [`MEMBER_COLUMNS`], then
/// `fields` text columns. Returns its rows, in the query's order.
pub fn list(
    conn: &Connection,
    query: &SelectStatement,
    fields: usize,
) -> Result<Vec<Listed>, DbError> {
    let (text, values) = query.build(SqliteQueryBuilder);
    let values = values
        .into_iter()
        .map(bound)
        .collect::<Result<Vec<_>, _>>()?;
    let mut stmt = conn.prepare_cached(&text).map_err(sql)?;
    let mut rows = stmt.query(params_from_iter(values)).map_err(sql)?;
    let first = 1 + MEMBER_COLUMNS.len();
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql)? {
        let id: String = row.get(0).map_err(sql)?;
        let attrs = member_of(&id, row, 1)?;
        let values = (first..first + fields)
            .map(|i| row.get::<_, Option<String>>(i).map_err(sql))
            .collect::<Result<_, _>>()?;
        out.push(Listed { id, attrs, values });
    }
    Ok(out)
}

/// How long a statement waits for a lock another connection holds before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// A few read-only connections, handed out in turn (a connection serves one request at a
/// time), and the one connection that writes.
pub struct Pool {
    /// The fields `member_values` has a column for, by name.
    pub fields: Vec<String>,
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
    writer: Mutex<Connection>,
}

impl Pool {
    /// `size` read-only connections to the database at `path`, and one that writes.
    pub fn open(path: &Path, size: usize) -> Result<Pool, DbError> {
        // The writer first: it puts a database made before WAL mode into it, which the
        // readers then open.
        let writer = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql)?;
        writer.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
        writer
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        let conns = (0..size.max(1))
            .map(|_| {
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(sql)?;
                conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
                Ok(Mutex::new(conn))
            })
            .collect::<Result<_, DbError>>()?;
        let fields = value_columns(&writer)?;
        Ok(Pool {
            fields,
            conns,
            next: AtomicUsize::new(0),
            writer: Mutex::new(writer),
        })
    }

    /// The connection that writes (one write at a time).
    pub fn writer(&self) -> MutexGuard<'_, Connection> {
        // As for readers: a panic while holding it rolled its transaction back.
        match self.writer.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A connection: the first free one, else the next in turn once it is free.
    pub fn get(&self) -> MutexGuard<'_, Connection> {
        for c in &self.conns {
            if let Ok(guard) = c.try_lock() {
                return guard;
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        // A poisoned lock only means another request panicked holding it: the connection
        // itself is still usable for reads.
        match self.conns[i].lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// The field columns of `member_values` (every column but `member_id`).
fn value_columns(conn: &Connection) -> Result<Vec<String>, DbError> {
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_info('member_values') ORDER BY cid")
        .map_err(sql)?;
    let names = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(sql)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql)?;
    Ok(names.into_iter().filter(|n| n != "member_id").collect())
}

/// The values of `member`'s fields among `fields` (names), by field name: only their
/// columns are selected. A field the table has no column for has no value.
pub fn values(
    conn: &Connection,
    known: &[String],
    member: &str,
    fields: &[&str],
) -> Result<BTreeMap<String, String>, DbError> {
    let wanted: Vec<&str> = fields
        .iter()
        .copied()
        .filter(|f| known.iter().any(|k| k == f))
        .collect();
    if wanted.is_empty() {
        return Ok(BTreeMap::new());
    }
    let columns = wanted
        .iter()
        .map(|f| field_column(f))
        .collect::<Result<Vec<_>, _>>()?
        .join(", ");
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {columns} FROM member_values WHERE member_id = ?1"
        ))
        .map_err(sql)?;
    let mut rows = stmt.query([member]).map_err(sql)?;
    let mut out = BTreeMap::new();
    if let Some(row) = rows.next().map_err(sql)? {
        for (i, f) in wanted.iter().enumerate() {
            if let Some(v) = row.get::<_, Option<String>>(i).map_err(sql)? {
                out.insert((*f).to_string(), v);
            }
        }
    }
    Ok(out)
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

/// Writes `values` (field name to value) to member `id`, with the attributes they mirror,
/// in one transaction: all or nothing. `Ok(false)` if there is no such member.
pub fn update(
    conn: &mut Connection,
    id: &str,
    values: &BTreeMap<String, String>,
) -> Result<bool, DbError> {
    let tx = conn.transaction().map_err(sql)?;
    let exists = tx
        .query_row("SELECT 1 FROM members WHERE id = ?1", [id], |_| Ok(()))
        .map(|()| true)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(false),
            e => Err(sql(e)),
        })?;
    if !exists {
        return Ok(false);
    }
    tx.execute(
        "INSERT INTO member_values (member_id) VALUES (?1) ON CONFLICT (member_id) DO NOTHING",
        [id],
    )
    .map_err(sql)?;
    for (field, value) in values {
        // The column is a catalogue field's name (the caller checked it), validated and
        // quoted: never a request's text as such.
        let column = field_column(field)?;
        tx.execute(
            &format!("UPDATE member_values SET {column} = ?1 WHERE member_id = ?2"),
            params![value, id],
        )
        .map_err(sql)?;
        match mirrored(field, value)? {
            None => {}
            Some(Mirrored::Status(s)) => {
                tx.execute(
                    "UPDATE members SET status = ?1 WHERE id = ?2",
                    params![s.as_str(), id],
                )
                .map_err(sql)?;
            }
            Some(Mirrored::Consents(c)) => {
                let [p, e, post] = flags(&c);
                tx.execute(
                    "UPDATE members SET consent_phone = ?1, consent_email = ?2, \
                     consent_post = ?3 WHERE id = ?4",
                    params![p, e, post, id],
                )
                .map_err(sql)?;
            }
            Some(Mirrored::OptOuts(c)) => {
                let [p, e, post] = flags(&c);
                tx.execute(
                    "UPDATE members SET opt_out_phone = ?1, opt_out_email = ?2, \
                     opt_out_post = ?3 WHERE id = ?4",
                    params![p, e, post, id],
                )
                .map_err(sql)?;
            }
        }
    }
    tx.commit().map_err(sql)?;
    Ok(true)
}

/// Erases member `id`: its row and every value, in one transaction. `Ok(false)` if there
/// is no such member.
pub fn erase(conn: &mut Connection, id: &str) -> Result<bool, DbError> {
    let tx = conn.transaction().map_err(sql)?;
    tx.execute("DELETE FROM member_values WHERE member_id = ?1", [id])
        .map_err(sql)?;
    let erased = tx
        .execute("DELETE FROM members WHERE id = ?1", [id])
        .map_err(sql)?;
    tx.commit().map_err(sql)?;
    Ok(erased == 1)
}
