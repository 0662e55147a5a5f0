//! The CRM's SQLite database: the party's records, and each member's field values.
//!
//! - `records(kind, id, body)`: every record but the members (staff, campaigns, CLPs, call
//!   sessions, ...) as JSON, `kind` naming its collection of `membergate::Membership`.
//! - `members(id, clp, body)`: each member's standing (status, CLP, dates, consents) as
//!   JSON, without the field values.
//! - `member_values(member_id, field, value)`: the field values, one row per field, read
//!   only for the fields a request was granted.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use membergate::{Member, Membership};
use rusqlite::{params, Connection, OpenFlags};

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
  body TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX members_by_clp ON members (clp, id);
CREATE TABLE member_values (
  member_id TEXT NOT NULL REFERENCES members (id),
  field TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (member_id, field)
) WITHOUT ROWID;
";

/// Creates the database at `path` and fills it with `membership`, in one transaction:
/// a crash leaves no half-seeded database (the file is written beside and renamed).
pub fn create(path: &Path, membership: &Membership) -> Result<(), DbError> {
    let partial = path.with_extension("seeding");
    let _ = std::fs::remove_file(&partial);
    let mut conn = Connection::open(&partial).map_err(sql)?;
    let tx = conn.transaction().map_err(sql)?;
    tx.execute_batch(SCHEMA).map_err(sql)?;
    {
        let mut others = serde_json::to_value(Membership {
            members: BTreeMap::new(),
            ..membership.clone()
        })
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
            .prepare("INSERT INTO members (id, clp, body) VALUES (?1, ?2, ?3)")
            .map_err(sql)?;
        let mut value = tx
            .prepare("INSERT INTO member_values (member_id, field, value) VALUES (?1, ?2, ?3)")
            .map_err(sql)?;
        for (id, m) in &membership.members {
            let standing = Member {
                values: BTreeMap::new(),
                ..m.clone()
            };
            let body = serde_json::to_string(&standing)
                .map_err(|e| format!("encoding member {id}: {e}"))?;
            member.execute(params![id, m.clp, body]).map_err(sql)?;
            for (field, v) in &m.values {
                value.execute(params![id, field, v]).map_err(sql)?;
            }
        }
    }
    tx.commit().map_err(sql)?;
    drop(conn);
    std::fs::rename(&partial, path)
        .map_err(|e| format!("moving {} into place: {e}", partial.display()))
}

/// Reads every record but the field values: what the engine decides on.
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
    let mut membership: Membership = serde_json::from_value(serde_json::Value::Object(collections))
        .map_err(|e| format!("the records do not make a membership: {e}"))?;
    let mut stmt = conn
        .prepare("SELECT id, body FROM members ORDER BY id")
        .map_err(sql)?;
    let mut rows = stmt.query([]).map_err(sql)?;
    while let Some(row) = rows.next().map_err(sql)? {
        let (id, body): (String, String) = (row.get(0).map_err(sql)?, row.get(1).map_err(sql)?);
        let member: Member =
            serde_json::from_str(&body).map_err(|e| format!("member {id}: {e}"))?;
        membership.members.insert(id, member);
    }
    Ok(membership)
}

/// A few read-only connections, handed out in turn (a connection serves one request at a
/// time).
pub struct Pool {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl Pool {
    /// `size` read-only connections to the database at `path`.
    pub fn open(path: &Path, size: usize) -> Result<Pool, DbError> {
        let conns = (0..size.max(1))
            .map(|_| {
                Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map(Mutex::new)
                .map_err(sql)
            })
            .collect::<Result<_, _>>()?;
        Ok(Pool {
            conns,
            next: AtomicUsize::new(0),
        })
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

/// The ids of a CLP's members after `after`, in id order, at most `limit`.
pub fn page(
    conn: &Connection,
    clp: &str,
    after: &str,
    limit: usize,
) -> Result<Vec<String>, DbError> {
    let mut stmt = conn
        .prepare_cached("SELECT id FROM members WHERE clp = ?1 AND id > ?2 ORDER BY id LIMIT ?3")
        .map_err(sql)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let ids = stmt
        .query_map(params![clp, after, limit], |row| row.get(0))
        .map_err(sql)?
        .collect::<Result<Vec<String>, _>>()
        .map_err(sql)?;
    Ok(ids)
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
