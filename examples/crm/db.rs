//! The CRM's SQLite database: the party's records, each member's row, and each member's
//! field values.
//!
//! - `records(kind, id, body)`: the principal side (staff, campaigns, CLPs, call
//!   sessions, ...) as JSON, `kind` naming its collection of `membergate::Membership`;
//!   loaded once into the engine's `Directory`.
//! - `members(id, clp, status, joined, left_at, in_good_standing, consents, opt_outs)`:
//!   each member's policy-relevant attributes, one column each, read with the member's
//!   row for every request (a `membergate::Member`). Times are RFC 3339 text, a status
//!   is its policy spelling (`registered_supporter`), channels are comma-separated
//!   (`phone,email`, empty for none).
//! - `member_values(member_id, field, value)`: the field values, one row per field, read
//!   only for the fields a request was granted.
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
use membergate::{Channel, Member, MemberStatus, Membership};
use rusqlite::{params, Connection, OpenFlags, Row};

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
  clp TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN
    ('member', 'registered_supporter', 'affiliated_supporter', 'former', 'expelled')),
  joined TEXT NOT NULL,
  left_at TEXT,
  in_good_standing INTEGER NOT NULL CHECK (in_good_standing IN (0, 1)),
  consents TEXT NOT NULL,
  opt_outs TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX members_by_clp ON members (clp, id);
CREATE TABLE member_values (
  member_id TEXT NOT NULL REFERENCES members (id),
  field TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (member_id, field)
) WITHOUT ROWID;
";

/// The columns a `Member` is read from, in the order [`member_of`] expects them (a macro,
/// so that each statement is one literal, prepared and cached without formatting).
macro_rules! member_columns {
    () => {
        "status, clp, joined, left_at, in_good_standing, consents, opt_outs"
    };
}

const CHANNELS: [Channel; 3] = [Channel::Phone, Channel::Email, Channel::Post];

/// The channel spelt `name` (`phone`), as the policies spell it.
fn channel(name: &str) -> Option<Channel> {
    CHANNELS.into_iter().find(|ch| ch.as_str() == name)
}

/// The member status spelt `name` (`registered_supporter`), as the policies spell it.
fn status(name: &str) -> Option<MemberStatus> {
    MemberStatus::ALL.into_iter().find(|s| s.as_str() == name)
}

fn channels_text(channels: &[Channel]) -> String {
    channels
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Creates the database at `path` and fills it with `membership`, in one transaction:
/// a crash leaves no half-seeded database (the file is written beside and renamed).
pub fn create(path: &Path, membership: &Membership) -> Result<(), DbError> {
    let partial = path.with_extension("seeding");
    let _ = std::fs::remove_file(&partial);
    let mut conn = Connection::open(&partial).map_err(sql)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sql)?;
    let tx = conn.transaction().map_err(sql)?;
    tx.execute_batch(SCHEMA).map_err(sql)?;
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
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))
            .map_err(sql)?;
        let mut value = tx
            .prepare("INSERT INTO member_values (member_id, field, value) VALUES (?1, ?2, ?3)")
            .map_err(sql)?;
        for (id, m) in &membership.members {
            member
                .execute(params![
                    id,
                    m.status.as_str(),
                    m.clp,
                    m.joined.to_string(),
                    m.left.map(|t| t.to_string()),
                    m.in_good_standing,
                    channels_text(&m.consents),
                    channels_text(&m.opt_outs),
                ])
                .map_err(sql)?;
            for (field, v) in membership.values.get(id).into_iter().flatten() {
                value.execute(params![id, field, v]).map_err(sql)?;
            }
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
    let text = |i: usize| -> Result<String, DbError> { row.get(at + i).map_err(sql) };
    let bad = |what: &str, value: &str| format!("member {id}: {what} `{value}` is not valid");
    let time = |what: &str, value: &str| -> Result<Timestamp, DbError> {
        value.parse().map_err(|_| bad(what, value))
    };
    let channels = |what: &str, value: &str| -> Result<Vec<Channel>, DbError> {
        value
            .split(',')
            .filter(|c| !c.is_empty())
            .map(|c| channel(c).ok_or_else(|| bad(what, value)))
            .collect()
    };
    let spelt = text(0)?;
    let left: Option<String> = row.get(at + 3).map_err(sql)?;
    Ok(Member {
        status: status(&spelt).ok_or_else(|| bad("status", &spelt))?,
        clp: text(1)?,
        joined: time("joined", &text(2)?)?,
        left: left.map(|l| time("left_at", &l)).transpose()?,
        in_good_standing: row.get(at + 4).map_err(sql)?,
        consents: channels("consents", &text(5)?)?,
        opt_outs: channels("opt_outs", &text(6)?)?,
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

/// The members of a CLP after `after`, in id order, at most `limit`, each with its
/// attributes.
pub fn page(
    conn: &Connection,
    clp: &str,
    after: &str,
    limit: usize,
) -> Result<Vec<(String, Member)>, DbError> {
    let mut stmt = conn
        .prepare_cached(concat!(
            "SELECT id, ",
            member_columns!(),
            " FROM members WHERE clp = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
        ))
        .map_err(sql)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = stmt.query(params![clp, after, limit]).map_err(sql)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql)? {
        let id: String = row.get(0).map_err(sql)?;
        let attrs = member_of(&id, row, 1)?;
        out.push((id, attrs));
    }
    Ok(out)
}

/// How long a statement waits for a lock another connection holds before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// A few read-only connections, handed out in turn (a connection serves one request at a
/// time), and the one connection that writes.
pub struct Pool {
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
        Ok(Pool {
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

/// The values of `member`'s fields among `fields` (names), by field name.
pub fn values(
    conn: &Connection,
    member: &str,
    fields: &[&str],
) -> Result<BTreeMap<String, String>, DbError> {
    let mut stmt = conn
        .prepare_cached("SELECT field, value FROM member_values WHERE member_id = ?1")
        .map_err(sql)?;
    let mut rows = stmt.query([member]).map_err(sql)?;
    let mut out = BTreeMap::new();
    while let Some(row) = rows.next().map_err(sql)? {
        let field: String = row.get(0).map_err(sql)?;
        // Only the granted fields leave this function: the others are never copied out.
        if fields.contains(&field.as_str()) {
            out.insert(field, row.get(1).map_err(sql)?);
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
    for (field, value) in values {
        tx.execute(
            "INSERT INTO member_values (member_id, field, value) VALUES (?1, ?2, ?3) \
             ON CONFLICT (member_id, field) DO UPDATE SET value = excluded.value",
            params![id, field, value],
        )
        .map_err(sql)?;
        let (column, text) = match mirrored(field, value)? {
            None => continue,
            Some(Mirrored::Status(s)) => ("status", s.as_str().to_string()),
            Some(Mirrored::Consents(c)) => ("consents", channels_text(&c)),
            Some(Mirrored::OptOuts(c)) => ("opt_outs", channels_text(&c)),
        };
        // `column` is one of three literals above, never a request's text.
        tx.execute(
            &format!("UPDATE members SET {column} = ?1 WHERE id = ?2"),
            params![text, id],
        )
        .map_err(sql)?;
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
