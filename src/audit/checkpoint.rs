//! Signed checkpoints: the log's record count, head hash and time, signed with an Ed25519
//! key the CRM holds and kept in a file of their own, so that cutting records off the end
//! of the log, emptying it or rebuilding its chain is found ([`verify_checkpoints`]).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read as _, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::chain::{self, Lines, ReadError, TornLine, VerifyReport, GENESIS};
use super::AuditError;

/// What a signature covers first, so a checkpoint's signature can sign nothing else.
const DOMAIN: &[u8] = b"membergate log checkpoint v1\n";

/// The most of a key file that is read: a key is 64 digits and a newline.
const KEY_FILE_LIMIT: u64 = 4096;

/// The Ed25519 key that signs a log's checkpoints: 32 secret bytes, kept in a file as 64
/// hexadecimal digits and a newline. Only the CRM that writes the log reads it; whoever
/// verifies needs only its [`PublicKey`]. Its `Debug` shows the public key alone.
///
/// # Example
/// ```
/// use membergate::audit::CheckpointKey;
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("checkpoint.key");
/// let key = CheckpointKey::generate()?;
/// key.write_new(&path)?;              // mode 0600; an existing file is never overwritten
/// assert!(key.write_new(&path).is_err());
///
/// let read = CheckpointKey::from_file(&path)?;
/// assert_eq!(read.public_key(), key.public_key());
/// assert_eq!(std::fs::read_to_string(&path)?.trim().len(), 64);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CheckpointKey(SigningKey);

impl CheckpointKey {
    /// A new key, its 32 secret bytes from the operating system's random source.
    ///
    /// # Errors
    /// [`CheckpointError::Random`] if the operating system gives no random bytes.
    ///
    /// # Example
    /// See [`CheckpointKey`].
    pub fn generate() -> Result<CheckpointKey, CheckpointError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(CheckpointError::Random)?;
        Ok(CheckpointKey(SigningKey::from_bytes(&secret)))
    }

    /// Reads the key from `path`: 64 hexadecimal digits, surrounding whitespace ignored.
    ///
    /// # Errors
    /// [`CheckpointError::Io`] if the file cannot be read, [`CheckpointError::Key`] if it
    /// does not hold a key.
    ///
    /// # Example
    /// See [`CheckpointKey`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<CheckpointKey, CheckpointError> {
        let path = path.as_ref();
        let secret = read_key_file(path, |text| unhex::<32>(text).ok_or(InvalidKey::NotHex))?;
        Ok(CheckpointKey(SigningKey::from_bytes(&secret)))
    }

    /// Writes the key to a new file at `path` (readable by its owner alone on Unix), as
    /// [`CheckpointKey::from_file`] reads it. An existing file is left as it is.
    ///
    /// # Errors
    /// [`CheckpointError::Io`] if the file exists or cannot be written.
    ///
    /// # Example
    /// See [`CheckpointKey`].
    pub fn write_new(&self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        let path = path.as_ref();
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let write = || {
            let mut file = options.open(path)?;
            file.write_all(format!("{}\n", chain::hex(self.0.as_bytes())).as_bytes())?;
            file.sync_all()
        };
        write().map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The public key that verifies this key's checkpoints.
    ///
    /// # Example
    /// ```
    /// use membergate::audit::{CheckpointKey, PublicKey};
    ///
    /// let key = CheckpointKey::generate()?;
    /// let hex = key.public_key().to_string();
    /// assert_eq!(hex.parse::<PublicKey>()?, key.public_key());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }
}

impl fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointKey")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// The public half of a [`CheckpointKey`]: verifies its checkpoints. Written and parsed
/// as 64 hexadecimal digits.
///
/// # Example
/// ```
/// use membergate::audit::{InvalidKey, PublicKey};
///
/// let key: PublicKey = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a".parse()?;
/// assert_eq!(key.to_string(), "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
/// assert_eq!("d75a98".parse::<PublicKey>(), Err(InvalidKey::NotHex));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Reads the public key from `path`: 64 hexadecimal digits, surrounding whitespace
    /// ignored (what `membergate audit keygen` prints).
    ///
    /// # Errors
    /// [`CheckpointError::Io`] if the file cannot be read, [`CheckpointError::Key`] if it
    /// does not hold a public key.
    ///
    /// # Example
    /// ```
    /// use membergate::audit::{CheckpointKey, PublicKey};
    ///
    /// let key = CheckpointKey::generate()?;
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("checkpoint.pub");
    /// std::fs::write(&path, format!("{}\n", key.public_key()))?;
    /// assert_eq!(PublicKey::from_file(&path)?, key.public_key());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_file(path: impl AsRef<Path>) -> Result<PublicKey, CheckpointError> {
        read_key_file(path.as_ref(), str::parse)
    }
}

impl FromStr for PublicKey {
    type Err = InvalidKey;

    fn from_str(s: &str) -> Result<PublicKey, InvalidKey> {
        let bytes = unhex::<32>(s.trim()).ok_or(InvalidKey::NotHex)?;
        match VerifyingKey::from_bytes(&bytes) {
            Ok(key) if !key.is_weak() => Ok(PublicKey(key)),
            _ => Err(InvalidKey::NotAKey),
        }
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&chain::hex(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// Why a text is not a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidKey {
    /// Not 64 hexadecimal digits.
    #[error("not 64 hexadecimal digits")]
    NotHex,
    /// 32 bytes that are not an Ed25519 public key (or a weak one, of small order).
    #[error("not an Ed25519 public key")]
    NotAKey,
}

/// Reads a key file (at most [`KEY_FILE_LIMIT`] bytes) and parses its text.
fn read_key_file<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, InvalidKey>,
) -> Result<T, CheckpointError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(KEY_FILE_LIMIT).read_to_end(&mut bytes))
        .map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| InvalidKey::NotHex);
    text.and_then(|t| parse(t.trim()))
        .map_err(|source| CheckpointError::Key {
            path: path.to_path_buf(),
            source,
        })
}

/// The bytes of `N` written as `2 * N` hexadecimal digits, if `s` is that.
fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let digits = s.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut bytes = [0u8; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        if !pair.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(bytes)
}

/// One line of a checkpoint file: the log had `records` records, the last with hash
/// `head`, at `at`; signed by `key`. Checkpoint N is line N of its file.
///
/// The signature (Ed25519, 64 bytes as 128 hexadecimal digits) is over
/// `membergate log checkpoint v1\n`, `records` (8 bytes, little-endian), `head` (its 64
/// digits), `at` as written (its UTF-8 length in 8 bytes, little-endian, then its bytes)
/// and the 32 bytes of the public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The records in the log when the checkpoint was made.
    pub records: u64,
    /// The `hash` of the last of them ([`GENESIS`] if none).
    pub head: String,
    /// The wall-clock time the checkpoint was made.
    pub at: Timestamp,
    /// The public key that signed it, 64 hexadecimal digits.
    pub key: String,
    /// The Ed25519 signature, 128 hexadecimal digits.
    pub signature: String,
}

impl Checkpoint {
    fn sign(key: &CheckpointKey, records: u64, head: &str, at: Timestamp) -> Checkpoint {
        let public = key.public_key();
        let signature = key.0.sign(&message(records, head, at, &public));
        Checkpoint {
            records,
            head: head.to_string(),
            at,
            key: public.to_string(),
            signature: chain::hex(&signature.to_bytes()),
        }
    }

    /// Whether `key` signed this checkpoint; `number` is its line.
    fn check(&self, number: u64, key: &PublicKey) -> Result<(), CheckpointProblem> {
        if self.key != key.to_string() {
            return Err(CheckpointProblem::OtherKey {
                checkpoint: number,
                key: self.key.clone(),
            });
        }
        let malformed = |problem: &str| CheckpointProblem::Malformed {
            checkpoint: number,
            problem: problem.to_string(),
        };
        if !chain::is_digest(&self.head) {
            return Err(malformed("`head` is not 64 lowercase hexadecimal digits"));
        }
        let signature = unhex::<64>(&self.signature)
            .ok_or_else(|| malformed("`signature` is not 128 hexadecimal digits"))?;
        key.0
            .verify_strict(
                &message(self.records, &self.head, self.at, key),
                &Signature::from_bytes(&signature),
            )
            .map_err(|_| CheckpointProblem::Forged { checkpoint: number })
    }
}

/// The bytes a checkpoint's signature covers (see [`Checkpoint`]).
fn message(records: u64, head: &str, at: Timestamp, key: &PublicKey) -> Vec<u8> {
    let at = at.to_string();
    let mut m = Vec::with_capacity(DOMAIN.len() + 8 + head.len() + 8 + at.len() + 32);
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(&records.to_le_bytes());
    m.extend_from_slice(head.as_bytes());
    m.extend_from_slice(&(at.len() as u64).to_le_bytes());
    m.extend_from_slice(at.as_bytes());
    m.extend_from_slice(key.0.as_bytes());
    m
}

/// When a [`JsonlSink`](super::JsonlSink) given checkpoints
/// ([`JsonlSink::with_checkpoints`](super::JsonlSink::with_checkpoints)) writes one: after
/// the record that meets either condition set. Neither set: only when asked
/// ([`JsonlSink::checkpoint`](super::JsonlSink::checkpoint)).
///
/// The interval is checked when a record is made: a log that takes no record takes no
/// checkpoint (ask for one from a timer or at shutdown to anchor a quiet log's last
/// records).
///
/// # Example
/// ```
/// use std::time::Duration;
/// use membergate::audit::CheckpointPolicy;
///
/// // After every 1,000th record, or the first record a minute after the last checkpoint.
/// let policy = CheckpointPolicy { records: Some(1_000), interval: Some(Duration::from_secs(60)) };
/// assert_ne!(policy, CheckpointPolicy::default());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckpointPolicy {
    /// A checkpoint after the record that makes this many records since the last
    /// checkpoint (`Some(1)`: after every record).
    pub records: Option<u64>,
    /// A checkpoint after the first record made this long or longer after the last
    /// checkpoint (or after the sink was given its checkpoints).
    pub interval: Option<Duration>,
}

/// Why a log's checkpoints do not anchor it. Checkpoint N is line N of the checkpoint
/// file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointProblem {
    /// The line is not a checkpoint.
    Malformed {
        /// The checkpoint's line.
        checkpoint: u64,
        /// What is wrong with it.
        problem: String,
    },
    /// The checkpoint names another key than the one it is verified with.
    OtherKey {
        /// The checkpoint's line.
        checkpoint: u64,
        /// The key it names.
        key: String,
    },
    /// The signature does not verify: the checkpoint was forged or changed.
    Forged {
        /// The checkpoint's line.
        checkpoint: u64,
    },
    /// The checkpoint signs no more records than the one before it: checkpoints were
    /// reordered or copied.
    OutOfOrder {
        /// The checkpoint's line.
        checkpoint: u64,
        /// The records it signs.
        records: u64,
        /// The records the checkpoint before it signs.
        previous: u64,
    },
    /// The log has fewer records (that verify) than the checkpoint signs: records were
    /// cut off its end, or it was emptied.
    Truncated {
        /// The checkpoint's line.
        checkpoint: u64,
        /// The records it signs.
        signed: u64,
        /// The records of the log that verify.
        log: u64,
    },
    /// The log's hash at the checkpoint's record is not the one signed: the chain was
    /// rebuilt from other records.
    Rewritten {
        /// The checkpoint's line.
        checkpoint: u64,
        /// The record (1-based) whose hash differs.
        record: u64,
    },
}

impl CheckpointProblem {
    /// The checkpoint (its line) that fails.
    pub fn checkpoint(&self) -> u64 {
        match self {
            CheckpointProblem::Malformed { checkpoint, .. }
            | CheckpointProblem::OtherKey { checkpoint, .. }
            | CheckpointProblem::Forged { checkpoint }
            | CheckpointProblem::OutOfOrder { checkpoint, .. }
            | CheckpointProblem::Truncated { checkpoint, .. }
            | CheckpointProblem::Rewritten { checkpoint, .. } => *checkpoint,
        }
    }
}

impl fmt::Display for CheckpointProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointProblem::Malformed {
                checkpoint,
                problem,
            } => write!(f, "checkpoint {checkpoint} is not a checkpoint ({problem})"),
            CheckpointProblem::OtherKey { checkpoint, key } => write!(
                f,
                "checkpoint {checkpoint} is signed by another key ({key}) than the one given"
            ),
            CheckpointProblem::Forged { checkpoint } => write!(
                f,
                "checkpoint {checkpoint}'s signature does not verify: it was forged or changed"
            ),
            CheckpointProblem::OutOfOrder {
                checkpoint,
                records,
                previous,
            } => write!(
                f,
                "checkpoint {checkpoint} signs {} records, no more than the {} of the one before: checkpoints were reordered or copied",
                grouped(*records),
                grouped(*previous)
            ),
            CheckpointProblem::Truncated {
                checkpoint,
                signed,
                log,
            } => write!(
                f,
                "log truncated: checkpoint {checkpoint} signs {} records, the log has {}",
                grouped(*signed),
                grouped(*log)
            ),
            CheckpointProblem::Rewritten { checkpoint, record } => write!(
                f,
                "record {}'s hash differs from checkpoint {checkpoint}: the chain was rewritten",
                grouped(*record)
            ),
        }
    }
}

/// `n` with its thousands separated by commas: `1,200`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The error of reading or writing checkpoints or their keys.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A key or checkpoint file could not be created, read or written.
    #[error("cannot read or write `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A key file does not hold a key.
    #[error("`{}` does not hold a checkpoint key: {source}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        source: InvalidKey,
    },
    /// The operating system gave no random bytes for a new key.
    #[error("no random bytes for a new checkpoint key: {0}")]
    Random(#[source] getrandom::Error),
    /// Another sink, in this process or another, writes the checkpoint file.
    #[error("the checkpoint file `{}` is already open for writing (another sink holds its lock)", path.display())]
    Locked {
        /// The checkpoint file.
        path: PathBuf,
    },
    /// The decision log could not be read.
    #[error(transparent)]
    Log(#[from] ReadError),
    /// The checkpoint file does not anchor the log: a sink refuses to extend it.
    #[error("the checkpoints `{}` do not anchor the decision log `{}`: {problem}; refusing to extend it", checkpoints.display(), log.display())]
    Mismatch {
        /// The checkpoint file.
        checkpoints: PathBuf,
        /// The log file.
        log: PathBuf,
        /// The first checkpoint that fails, and why.
        problem: CheckpointProblem,
    },
}

/// The result of [`verify_checkpoints`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointReport {
    /// The log's own chain, as [`verify`](super::verify) reports it.
    pub log: VerifyReport,
    /// The checkpoints that verify and anchor the log, from the first line up to the
    /// first that does not.
    pub checkpoints: u64,
    /// The last of them.
    pub last: Option<Checkpoint>,
    /// The first checkpoint that does not verify or does not anchor the log, and why.
    pub problem: Option<CheckpointProblem>,
    /// A torn last line of the checkpoint file (a write cut off by a crash), if any.
    pub torn: Option<TornLine>,
}

impl CheckpointReport {
    /// Whether the log's chain is intact and every checkpoint verifies and anchors it.
    pub fn is_intact(&self) -> bool {
        self.log.is_intact() && self.problem.is_none()
    }

    /// The records the last good checkpoint signs: no one without the key can remove or
    /// change them unseen.
    pub fn anchored(&self) -> u64 {
        self.last.as_ref().map_or(0, |c| c.records)
    }

    /// The records of the log after the last good checkpoint: not yet anchored.
    pub fn unanchored(&self) -> u64 {
        self.log.records.saturating_sub(self.anchored())
    }
}

/// Checks the decision log at `log` against the checkpoints in the file at `checkpoints`
/// with the public key `key`: every checkpoint is signed by `key`, signs more records than
/// the one before, and the log's chain at the count each signs has exactly the signed
/// hash. Records after the last checkpoint are reported
/// ([`CheckpointReport::unanchored`]), not a failure.
///
/// So records cut off the log's end below a checkpoint, an emptied log and a chain
/// rebuilt from other records are found, and so is a checkpoint forged or changed by
/// anyone without the key. Not found: changes after the last checkpoint that the chain
/// cannot show (records cut from the end), and anything done by someone who holds the
/// key or can rewrite the checkpoint file.
///
/// # Errors
/// [`CheckpointError::Io`] if the checkpoint file cannot be read,
/// [`CheckpointError::Log`] if the log cannot be. A log or checkpoint that does not
/// verify is not an error: see [`CheckpointReport::problem`] and
/// [`CheckpointReport::log`].
///
/// # Example
/// ```
/// use membergate::audit::{self, CheckpointKey, CheckpointPolicy, CheckpointProblem, DecisionRecord, DecisionSink, Durability, JsonlSink};
/// use membergate::Engine;
///
/// let engine = Engine::from_dir("policies")?;
/// let record = DecisionRecord::rejection("req-1", "2020-03-01T12:00:00Z".parse()?,
///     r#"Staff::"nobody""#, "read", "m-00001", "unknown principal", engine.version());
/// let dir = tempfile::tempdir()?;
/// let (log, checkpoints) = (dir.path().join("decisions.jsonl"), dir.path().join("checkpoints.jsonl"));
/// let key = CheckpointKey::generate()?;
/// let public = key.public_key();
///
/// // A checkpoint after every 10th record.
/// let every_10 = CheckpointPolicy { records: Some(10), interval: None };
/// let sink = JsonlSink::open(&log, Durability::Flush)?.with_checkpoints(&checkpoints, key, every_10)?;
/// for _ in 0..25 {
///     sink.record(&record)?;
/// }
/// drop(sink);
/// let report = audit::verify_checkpoints(&log, &checkpoints, &public)?;
/// assert!(report.is_intact());
/// assert_eq!((report.checkpoints, report.anchored(), report.unanchored()), (2, 20, 5));
///
/// // Someone cuts the last 10 records off: the chain still verifies, the checkpoints do not.
/// let text = std::fs::read_to_string(&log)?;
/// let kept: String = text.lines().take(15).map(|l| format!("{l}\n")).collect();
/// std::fs::write(&log, kept)?;
/// assert!(audit::verify(&log)?.is_intact());
/// let report = audit::verify_checkpoints(&log, &checkpoints, &public)?;
/// assert_eq!(report.problem, Some(CheckpointProblem::Truncated { checkpoint: 2, signed: 20, log: 15 }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn verify_checkpoints(
    log: impl AsRef<Path>,
    checkpoints: impl AsRef<Path>,
    key: &PublicKey,
) -> Result<CheckpointReport, CheckpointError> {
    let path = checkpoints.as_ref();
    let file = File::open(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let read = read(path, file, key)?;
    let (report, unanchored) = anchor(log.as_ref(), &read.checkpoints)?;
    // Anchoring checks only the checkpoints read before any problem: its own comes first.
    let problem = unanchored.or(read.problem);
    let good = problem
        .as_ref()
        .map_or(read.checkpoints.len(), |p| (p.checkpoint() - 1) as usize);
    let last = good
        .checked_sub(1)
        .and_then(|i| read.checkpoints.get(i))
        .cloned();
    Ok(CheckpointReport {
        log: report,
        checkpoints: good as u64,
        last,
        problem,
        torn: read.torn,
    })
}

/// A checkpoint file as read: its checkpoints up to the first that fails.
struct ReadCheckpoints {
    checkpoints: Vec<Checkpoint>,
    problem: Option<CheckpointProblem>,
    torn: Option<TornLine>,
    /// The byte offset just after the last checkpoint that verifies.
    intact_len: u64,
}

/// Reads the checkpoints of `file` (at `path`), checking each one's signature with `key`
/// and their order, up to the first that fails.
fn read(
    path: &Path,
    file: impl io::Read,
    key: &PublicKey,
) -> Result<ReadCheckpoints, CheckpointError> {
    let mut lines = Lines::new(BufReader::new(file));
    let mut read = ReadCheckpoints {
        checkpoints: Vec::new(),
        problem: None,
        torn: None,
        intact_len: 0,
    };
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    while let Some(line) = lines.next_line().map_err(io)? {
        if !line.complete {
            read.torn = Some(TornLine {
                line: line.number,
                bytes: line.bytes.len() as u64,
            });
            break;
        }
        let checkpoint = serde_json::from_slice::<Checkpoint>(line.bytes)
            .map_err(|e| CheckpointProblem::Malformed {
                checkpoint: line.number,
                problem: e.to_string(),
            })
            .and_then(|c| c.check(line.number, key).map(|()| c));
        let previous = read.checkpoints.last().map(|c| c.records);
        match checkpoint {
            Ok(c) if previous.is_some_and(|p| c.records <= p) => {
                read.problem = Some(CheckpointProblem::OutOfOrder {
                    checkpoint: line.number,
                    records: c.records,
                    previous: previous.unwrap_or_default(),
                });
            }
            Ok(c) => {
                read.checkpoints.push(c);
                read.intact_len = line.end;
                continue;
            }
            Err(problem) => read.problem = Some(problem),
        }
        break;
    }
    Ok(read)
}

/// Verifies the log at `path` and checks that its chain passes through each checkpoint's
/// head (checkpoints in increasing order of records): the log's report and the first
/// checkpoint it does not pass through.
fn anchor(
    path: &Path,
    checkpoints: &[Checkpoint],
) -> Result<(VerifyReport, Option<CheckpointProblem>), ReadError> {
    let mut next = 0;
    let mut problem = None;
    let mut passes = |records: u64, head: &str| {
        while let Some(c) = checkpoints.get(next).filter(|c| c.records == records) {
            if c.head != head {
                problem = Some(CheckpointProblem::Rewritten {
                    checkpoint: next as u64 + 1,
                    record: records,
                });
                return;
            }
            next += 1;
        }
    };
    passes(0, GENESIS);
    let file = File::open(path).map_err(|source| chain::io_error(path, source))?;
    let report = chain::scan_with(path, file, &mut passes)?.report;
    if problem.is_none() {
        problem = checkpoints.get(next).map(|c| CheckpointProblem::Truncated {
            checkpoint: next as u64 + 1,
            signed: c.records,
            log: report.records,
        });
    }
    Ok((report, problem))
}

/// The checkpoint file a [`JsonlSink`](super::JsonlSink) writes, under the sink's lock.
#[derive(Debug)]
pub(crate) struct Writer {
    path: PathBuf,
    file: File,
    /// Whether the file is a regular file, so it can be read and truncated.
    regular: bool,
    /// The length of the file up to the end of the last checkpoint written.
    len: u64,
    /// A failed write may have left a partial line that is not yet removed.
    dirty: bool,
    key: CheckpointKey,
    policy: CheckpointPolicy,
    fsync: bool,
    /// The records the last checkpoint signs.
    records: u64,
    /// When the last checkpoint was written (or the writer opened).
    since: Instant,
}

impl Writer {
    /// Opens the checkpoint file at `path` for appending, creating it if needed, and
    /// locks it; checks its checkpoints with `key`'s public key and that the log at
    /// `log` (if a regular file) passes through each. A torn last line is cut off.
    pub(crate) fn open(
        log: &Path,
        log_regular: bool,
        path: &Path,
        key: CheckpointKey,
        policy: CheckpointPolicy,
        fsync: bool,
    ) -> Result<Writer, CheckpointError> {
        let io = |source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mismatch = |problem| CheckpointError::Mismatch {
            checkpoints: path.to_path_buf(),
            log: log.to_path_buf(),
            problem,
        };
        let Some((file, regular)) = super::jsonl::open_locked(path).map_err(io)? else {
            return Err(CheckpointError::Locked {
                path: path.to_path_buf(),
            });
        };
        let (mut checkpoints, mut len) = (Vec::new(), 0);
        if regular {
            let read = read(path, &file, &key.public_key())?;
            if let Some(problem) = read.problem {
                return Err(mismatch(problem));
            }
            if let Some(torn) = read.torn {
                super::jsonl::cut_torn(&file, path, read.intact_len, torn).map_err(io)?;
            }
            (checkpoints, len) = (read.checkpoints, read.intact_len);
        }
        if log_regular {
            if let (_, Some(problem)) = anchor(log, &checkpoints)? {
                return Err(mismatch(problem));
            }
        }
        Ok(Writer {
            path: path.to_path_buf(),
            file,
            regular,
            len,
            dirty: false,
            key,
            policy,
            fsync,
            records: checkpoints.last().map_or(0, |c| c.records),
            since: Instant::now(),
        })
    }

    /// Whether the policy asks for a checkpoint now that the log has `records` records.
    pub(crate) fn due(&self, records: u64) -> bool {
        records > self.records
            && (self
                .policy
                .records
                .is_some_and(|n| records - self.records >= n)
                || self
                    .policy
                    .interval
                    .is_some_and(|t| self.since.elapsed() >= t))
    }

    /// Whether the log has records the last checkpoint does not sign.
    pub(crate) fn behind(&self, records: u64) -> bool {
        records > self.records
    }

    /// Signs and appends a checkpoint of the log `log_file` (at `log`): `records`
    /// records, the last with hash `head`. The log is first `fsync`ed (if a regular
    /// file), so that no checkpoint outlives the records it signs; the checkpoint file is
    /// `fsync`ed too if the sink's durability asks.
    pub(crate) fn write(
        &mut self,
        log: &Path,
        log_file: &File,
        log_regular: bool,
        records: u64,
        head: &str,
    ) -> Result<Checkpoint, AuditError> {
        if log_regular {
            log_file
                .sync_data()
                .map_err(|source| AuditError::Checkpoint {
                    path: log.to_path_buf(),
                    source,
                })?;
        }
        let failed = |path: &Path, source| AuditError::Checkpoint {
            path: path.to_path_buf(),
            source,
        };
        if self.dirty {
            self.cut_back().map_err(|e| failed(&self.path, e))?;
            self.dirty = false;
        }
        let checkpoint = Checkpoint::sign(&self.key, records, head, Timestamp::now());
        let mut line = serde_json::to_vec(&checkpoint)?;
        line.push(b'\n');
        let appended = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .and_then(|()| match self.fsync {
                true => self.file.sync_data(),
                false => Ok(()),
            });
        if let Err(source) = appended {
            self.dirty = self.cut_back().is_err();
            return Err(failed(&self.path, source));
        }
        self.len += line.len() as u64;
        self.records = records;
        self.since = Instant::now();
        Ok(checkpoint)
    }

    /// Cuts the file back to the end of the last checkpoint written.
    fn cut_back(&mut self) -> io::Result<()> {
        if self.regular && self.file.metadata()?.len() > self.len {
            self.file.set_len(self.len)?;
        }
        Ok(())
    }
}
