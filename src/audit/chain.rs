//! The log's line format and hash chain, and [`verify`].

use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::DecisionRecord;

/// The `prev` of the first record of a log: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What the hash covers first, so a record hash can never be mistaken for another hash.
const DOMAIN: &[u8] = b"membergate decision record v1\n";

/// The SHA-256 state after the record's fields: [`finish`] adds `prev`. Split so that
/// a writer hashes the record before taking the log's lock.
pub(crate) fn hash_record(r: &DecisionRecord) -> Sha256 {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    text(&mut h, &r.at.to_string());
    text(&mut h, &r.recorded_at.to_string());
    text(&mut h, &r.request_id);
    text(&mut h, &r.principal);
    text(&mut h, &r.action);
    text(&mut h, &r.member);
    for list in [&r.granted, &r.refused, &r.policies] {
        h.update((list.len() as u64).to_le_bytes());
        for item in list {
            text(&mut h, item);
        }
    }
    text(&mut h, &r.version);
    if let Some(why) = &r.rejected {
        // A tag byte no length prefix of `prev` (64) starts with: records without a
        // rejection hash exactly as before the field existed.
        h.update([1u8]);
        text(&mut h, why);
    }
    h
}

/// Adds a string to the hash, its length first: no two different records give the same
/// bytes.
fn text(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

/// The record's chain hash, from [`hash_record`]'s state and the previous record's hash.
pub(crate) fn finish(mut h: Sha256, prev: &str) -> String {
    text(&mut h, prev);
    hex(&h.finalize())
}

/// `bytes` as lowercase hexadecimal digits.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// The line of `record` in the log, with its `prev` and `hash` and the final newline:
/// the record's JSON object with the two fields added last.
pub(crate) fn line(record_json: &[u8], prev: &str, hash: &str) -> Vec<u8> {
    let body = record_json.strip_suffix(b"}").unwrap_or(record_json);
    let mut line = Vec::with_capacity(body.len() + 2 * 64 + 24);
    line.extend_from_slice(body);
    line.extend_from_slice(b",\"prev\":\"");
    line.extend_from_slice(prev.as_bytes());
    line.extend_from_slice(b"\",\"hash\":\"");
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    line
}

/// A parsed log line.
pub(crate) struct Chained {
    pub(crate) record: DecisionRecord,
    pub(crate) prev: String,
    pub(crate) hash: String,
}

/// Parses one complete line (without its newline).
pub(crate) fn parse(bytes: &[u8]) -> Result<Chained, BreakKind> {
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|e| BreakKind::BadJson(e.to_string()))?;
    let mut digest = |key: &str| match object.remove(key) {
        Some(serde_json::Value::String(s)) if is_digest(&s) => Ok(s),
        Some(_) => Err(BreakKind::BadRecord(format!(
            "`{key}` is not 64 lowercase hexadecimal digits"
        ))),
        None => Err(BreakKind::BadRecord(format!("missing field `{key}`"))),
    };
    let prev = digest("prev")?;
    let hash = digest("hash")?;
    let record = serde_json::from_value(serde_json::Value::Object(object))
        .map_err(|e| BreakKind::BadRecord(e.to_string()))?;
    Ok(Chained { record, prev, hash })
}

pub(crate) fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// One line of a log as read.
pub(crate) struct Line<'a> {
    /// 1-based.
    pub(crate) number: u64,
    /// Without the newline.
    pub(crate) bytes: &'a [u8],
    /// Whether it ended with a newline (only the last line of a file can lack one).
    pub(crate) complete: bool,
    /// The byte offset just after the line.
    pub(crate) end: u64,
}

/// Reads a log line by line.
pub(crate) struct Lines<R> {
    reader: R,
    buf: Vec<u8>,
    number: u64,
    offset: u64,
}

impl<R: BufRead> Lines<R> {
    pub(crate) fn new(reader: R) -> Self {
        Lines {
            reader,
            buf: Vec::new(),
            number: 0,
            offset: 0,
        }
    }

    pub(crate) fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let n = self.reader.read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        self.number += 1;
        self.offset += n as u64;
        let (bytes, complete) = match self.buf.strip_suffix(b"\n") {
            Some(b) => (b, true),
            None => (self.buf.as_slice(), false),
        };
        Ok(Some(Line {
            number: self.number,
            bytes,
            complete,
            end: self.offset,
        }))
    }
}

/// Where and how a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The 1-based line of the first record that does not verify.
    pub line: u64,
    /// Why.
    pub kind: BreakKind,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.kind)
    }
}

/// Why a line breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakKind {
    /// The line is not a JSON object.
    BadJson(String),
    /// The line is JSON but not a decision record with `prev` and `hash`.
    BadRecord(String),
    /// The `hash` does not match the line's content: the record or its hash was changed.
    Edited,
    /// The record and its hash match, but the line is not the bytes the log's writer
    /// writes for it: a key repeated (a reader taking the first would read a forged
    /// value), keys reordered, a string escaped differently, a time in another form, a
    /// carriage return. Only the writer's exact bytes verify.
    NotCanonical,
    /// The `prev` is the hash of no record of the log: the record before this one was
    /// deleted (or changed and given a new hash).
    Missing,
    /// The `prev` is the hash of the record on another line: records were reordered or
    /// copied.
    Reordered {
        /// The line that holds the record `prev` names.
        predecessor: u64,
    },
}

impl fmt::Display for BreakKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakKind::BadJson(e) => write!(f, "not a JSON object ({e})"),
            BreakKind::BadRecord(e) => write!(f, "not a decision record ({e})"),
            BreakKind::Edited => f.write_str(
                "the record does not match its hash: its content or its hash was changed",
            ),
            BreakKind::NotCanonical => f.write_str(
                "the line is not written as the log writes its record (a key repeated or reordered, an escape, a time or a line ending changed)",
            ),
            BreakKind::Missing => f.write_str(
                "its `prev` names no record in the log: the record before it was deleted (or changed and re-hashed)",
            ),
            BreakKind::Reordered { predecessor } => write!(
                f,
                "its `prev` names the record on line {predecessor}, not the one before it: records were reordered or copied"
            ),
        }
    }
}

/// A last line without its newline: a write cut off by a crash. Not a break of the
/// chain: it was never acknowledged as recorded. Opening the log with
/// [`JsonlSink::open`](super::JsonlSink::open) removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornLine {
    /// Its 1-based line number.
    pub line: u64,
    /// Its length in bytes.
    pub bytes: u64,
}

impl fmt::Display for TornLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {} is torn ({} bytes without a newline: a write cut off by a crash)",
            self.line, self.bytes
        )
    }
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The records that verify, from the first line up to the first break.
    pub records: u64,
    /// The `hash` of the last of them ([`GENESIS`] if none): keep it elsewhere to detect
    /// later truncation of the log.
    pub head: String,
    /// The first record that does not verify, if any.
    pub broken: Option<Break>,
    /// A torn last line, if any.
    pub torn: Option<TornLine>,
}

impl VerifyReport {
    /// Whether every complete line verifies (a torn last line is allowed).
    pub fn is_intact(&self) -> bool {
        self.broken.is_none()
    }
}

/// The error of reading a decision log ([`verify`], [`query`](super::query)).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read.
    #[error("cannot read the decision log `{}`: {source}", path.display())]
    Io {
        /// The log file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A complete line is not a decision record.
    #[error("`{}` line {line}: {problem}", path.display())]
    BadLine {
        /// The log file.
        path: PathBuf,
        /// The 1-based line.
        line: u64,
        /// What is wrong with it.
        problem: BreakKind,
    },
}

/// Checks the decision log at `path`: every complete line is a record whose `hash`
/// matches its content and whose `prev` is the `hash` of the line before ([`GENESIS`] for
/// the first). Reports the first line that fails and why, and a torn last line apart.
///
/// The chain shows that no record was changed, removed from the middle, inserted or
/// reordered; it cannot show that records were cut from the end (compare
/// [`VerifyReport::head`] with a copy kept elsewhere for that).
///
/// # Errors
/// [`ReadError::Io`] if the file cannot be read. A broken chain is not an error: see
/// [`VerifyReport::broken`].
///
/// # Example
/// ```
/// use membergate::audit::{self, BreakKind, DecisionRecord, DecisionSink, Durability, JsonlSink};
/// use membergate::{sample, Action, Context, Engine, MemberRef, MemberRequest, PrincipalId, PrincipalKind};
///
/// let engine = Engine::from_dir("policies")?;
/// let party = sample::bundled();
/// let staffer = PrincipalId::new(PrincipalKind::Staff, sample::ids::S_MEMBERSHIP);
/// let ctx = Context::at("2024-05-01T09:00:00Z".parse()?);
/// let attrs = &party.members[sample::ids::MEMBER_ELIGIBLE];
/// let dir = tempfile::tempdir()?;
/// let log = dir.path().join("decisions.jsonl");
/// let sink = JsonlSink::open(&log, Durability::Flush)?;
/// for member in ["m-1", "m-2", "m-3"] {
///     let fields = engine.catalogue().all();
///     let req = MemberRequest { principal: &staffer, action: Action::Read, member: MemberRef { id: member, attrs }, context: &ctx };
///     sink.record(&DecisionRecord::for_fields(member, &engine, &req, fields))?;
/// }
/// drop(sink);
/// assert_eq!(audit::verify(&log)?.records, 3);
///
/// // Someone changes the member of the second record.
/// let text = std::fs::read_to_string(&log)?.replacen(r#""member":"m-2""#, r#""member":"m-9""#, 1);
/// std::fs::write(&log, text)?;
/// let report = audit::verify(&log)?;
/// let broken = report.broken.ok_or("not detected")?;
/// assert_eq!((broken.line, broken.kind), (2, BreakKind::Edited));
/// assert_eq!(report.records, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn verify(path: impl AsRef<Path>) -> Result<VerifyReport, ReadError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| io_error(path, source))?;
    scan(path, file).map(|s| s.report)
}

pub(crate) fn io_error(path: &Path, source: io::Error) -> ReadError {
    ReadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A verified log and the length of its intact part.
pub(crate) struct Scan {
    pub(crate) report: VerifyReport,
    /// The byte offset just after the last record that verifies.
    pub(crate) intact_len: u64,
}

/// Verifies the log read from `file` (the file at `path`, read again to place a `prev`
/// that names another line).
pub(crate) fn scan(path: &Path, file: impl Read) -> Result<Scan, ReadError> {
    scan_with(path, file, |_, _| {})
}

/// [`scan`], calling `on_record` with the count of records verified and their head
/// after each record that verifies.
pub(crate) fn scan_with(
    path: &Path,
    file: impl Read,
    mut on_record: impl FnMut(u64, &str),
) -> Result<Scan, ReadError> {
    let io = |source| io_error(path, source);
    let mut lines = Lines::new(BufReader::new(file));
    let mut head = GENESIS.to_string();
    let (mut records, mut intact_len) = (0, 0);
    let mut broken: Option<(u64, Unlinked)> = None;
    let mut torn = None;
    while let Some(line) = lines.next_line().map_err(io)? {
        if !line.complete {
            torn = Some(TornLine {
                line: line.number,
                bytes: line.bytes.len() as u64,
            });
        } else if broken.is_none() {
            match check(line.bytes, &head) {
                Ok(hash) => {
                    head = hash;
                    records += 1;
                    intact_len = line.end;
                    on_record(records, &head);
                }
                Err(why) => broken = Some((line.number, why)),
            }
        }
    }
    let broken = match broken {
        None => None,
        Some((line, Unlinked::Not(kind))) => Some(Break { line, kind }),
        Some((line, Unlinked::Prev(prev))) => {
            let kind = match find_hash(path, &prev)? {
                Some(predecessor) => BreakKind::Reordered { predecessor },
                None => BreakKind::Missing,
            };
            Some(Break { line, kind })
        }
    };
    Ok(Scan {
        report: VerifyReport {
            records,
            head,
            broken,
            torn,
        },
        intact_len,
    })
}

/// Why a line does not follow: a break, or a `prev` still to be placed.
enum Unlinked {
    Not(BreakKind),
    Prev(String),
}

/// Checks one complete line against the previous hash; its hash if it follows.
fn check(bytes: &[u8], prev: &str) -> Result<String, Unlinked> {
    let c = parse(bytes).map_err(Unlinked::Not)?;
    if finish(hash_record(&c.record), &c.prev) != c.hash {
        return Err(Unlinked::Not(BreakKind::Edited));
    }
    // The hash covers the record's values; the line must also be their one encoding.
    let json = serde_json::to_vec(&c.record)
        .map_err(|e| Unlinked::Not(BreakKind::BadRecord(e.to_string())))?;
    let canonical = line(&json, &c.prev, &c.hash);
    if canonical.strip_suffix(b"\n") != Some(bytes) {
        return Err(Unlinked::Not(BreakKind::NotCanonical));
    }
    if c.prev != prev {
        return Err(Unlinked::Prev(c.prev));
    }
    Ok(c.hash)
}

/// The line whose `hash` is `hash`, if any.
fn find_hash(path: &Path, hash: &str) -> Result<Option<u64>, ReadError> {
    #[derive(serde::Deserialize)]
    struct HashOnly {
        hash: String,
    }
    let io = |source| io_error(path, source);
    let mut lines = Lines::new(BufReader::new(File::open(path).map_err(io)?));
    while let Some(line) = lines.next_line().map_err(io)? {
        if let Ok(h) = serde_json::from_slice::<HashOnly>(line.bytes) {
            if h.hash == hash {
                return Ok(Some(line.number));
            }
        }
    }
    Ok(None)
}
