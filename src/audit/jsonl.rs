//! [`JsonlSink`]: the decision log as a file of JSON lines chained by hashes.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::chain::{self, Break, ReadError, TornLine, GENESIS};
use super::checkpoint::{self, Checkpoint, CheckpointError, CheckpointKey, CheckpointPolicy};
use super::{AuditError, DecisionRecord, DecisionSink};

/// How far each record is pushed before [`DecisionSink::record`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Written to the operating system in one `write` of the whole line: it survives the
    /// process crashing or being killed, not the machine losing power. About 5 µs a
    /// record on the development machine.
    #[default]
    Flush,
    /// Also `fsync`ed (`File::sync_data`) before returning: it survives a power loss
    /// too, at the cost of one disk flush per record, about 3.4 ms on the development
    /// machine's disk. The flushes are serialised by the log's lock, so one log then
    /// takes at most a few hundred records a second, however many threads write.
    Fsync,
}

/// What [`JsonlSink::open`] found in an existing log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// The records already in the log (all verified).
    pub records: u64,
    /// The hash of the last of them ([`GENESIS`] if none): the next record's `prev`.
    pub head: String,
    /// A torn last line (a write cut off by a crash) that was removed, if any.
    pub repaired: Option<TornLine>,
}

/// The error of opening a decision log ([`JsonlSink::open`]).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file could not be created, opened, read or repaired.
    #[error("cannot open the decision log `{}`: {source}", path.display())]
    Io {
        /// The log file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Another [`JsonlSink`], in this process or another, has the log open.
    #[error("the decision log `{}` is already open for writing (another sink holds its lock)", path.display())]
    Locked {
        /// The log file.
        path: PathBuf,
    },
    /// A complete line of the log does not verify: the chain is not extended.
    #[error("the decision log `{}` is broken at {at}; refusing to extend a broken chain", path.display())]
    Broken {
        /// The log file.
        path: PathBuf,
        /// The first line that does not verify, and why.
        at: Break,
    },
}

/// A [`DecisionSink`] that appends each record to a file, one JSON object per line, each
/// line carrying `prev` (the previous line's `hash`, [`GENESIS`] for the first) and
/// `hash` (SHA-256 over the record's fields and `prev`): a tamper-evident chain that
/// [`verify`](super::verify) checks.
///
/// Each record is one `write` of its whole line, newline included, to a file opened for
/// appending, under a mutex: threads may share one sink, and a crash leaves at most a
/// torn last line. A failed write (disk full, read-only file) returns
/// [`AuditError::Write`]; whatever part of the line reached the file is cut off again
/// and the chain goes on from the last record written. One sink per file: the file is
/// locked while the sink is open.
///
/// # Example
/// ```
/// use membergate::audit::{self, DecisionRecord, DecisionSink, Durability, JsonlSink};
/// use membergate::{sample, Action, Context, Directory, Engine, MemberRequest, PrincipalId, PrincipalKind};
///
/// let engine = Engine::from_dir("policies")?;
/// let officer = PrincipalId::new(PrincipalKind::Officer, sample::ids::O_SECRETARY_001);
/// let ctx = Context::at("2024-05-01T09:00:00Z".parse()?);
/// let party = sample::bundled();
/// let directory = Directory::from_membership(&engine, &party)?;
/// let member = party.member(sample::ids::MEMBER_ELIGIBLE).ok_or("no member")?;
/// let req = MemberRequest { principal: &officer, action: Action::Read, member, context: &ctx };
/// let fields = engine.permitted_fields(&directory, &req)?;
/// let record = DecisionRecord::for_fields("req-1", &engine, &req, fields);
///
/// let dir = tempfile::tempdir()?;
/// let log = dir.path().join("decisions.jsonl");
/// let sink = JsonlSink::open(&log, Durability::Flush)?;
/// sink.record(&record)?;
/// sink.record(&record)?;
/// drop(sink);
///
/// // Reopened, the log continues its chain.
/// let sink = JsonlSink::open(&log, Durability::Flush)?;
/// assert_eq!(sink.opened().records, 2);
/// sink.record(&record)?;
/// assert_eq!(audit::verify(&log)?.records, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct JsonlSink {
    path: PathBuf,
    durability: Durability,
    opened: OpenReport,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    file: File,
    /// Whether the file is a regular file (not a device or pipe), so it can be truncated.
    regular: bool,
    /// The hash of the last record written.
    head: String,
    /// The records in the log.
    records: u64,
    /// The length of the log up to the end of the last record written.
    len: u64,
    /// A failed write may have left a partial line that is not yet removed.
    dirty: bool,
    /// The signed checkpoints, if the sink was given them.
    checkpoints: Option<checkpoint::Writer>,
}

impl JsonlSink {
    /// Opens the log at `path` for appending, creating it if needed, and locks it.
    ///
    /// An existing log is verified line by line (the whole file is read) and the chain
    /// continues from its last record. A torn last line (no newline: a crash mid-write)
    /// is cut off, never an earlier line, and reported in [`JsonlSink::opened`] and as a
    /// `tracing` warning. A device or pipe (such as `/dev/full`) is written without
    /// being read.
    ///
    /// # Errors
    /// [`OpenError::Broken`] naming the first line that does not verify;
    /// [`OpenError::Locked`] if another sink has the file open; [`OpenError::Io`] if it
    /// cannot be opened, read or repaired.
    ///
    /// # Example
    /// See [`JsonlSink`].
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> Result<JsonlSink, OpenError> {
        let path = path.as_ref();
        let io = |source| OpenError::Io {
            path: path.to_path_buf(),
            source,
        };
        let Some((file, regular)) = open_locked(path).map_err(io)? else {
            return Err(OpenError::Locked {
                path: path.to_path_buf(),
            });
        };
        let mut opened = OpenReport {
            records: 0,
            head: GENESIS.to_string(),
            repaired: None,
        };
        let mut len = 0;
        if regular {
            let scan = chain::scan(path, &file).map_err(|e| match e {
                ReadError::Io { source, .. } => io(source),
                ReadError::BadLine { line, problem, .. } => OpenError::Broken {
                    path: path.to_path_buf(),
                    at: Break {
                        line,
                        kind: problem,
                    },
                },
            })?;
            if let Some(at) = scan.report.broken {
                return Err(OpenError::Broken {
                    path: path.to_path_buf(),
                    at,
                });
            }
            if let Some(torn) = scan.report.torn {
                cut_torn(&file, path, scan.intact_len, torn).map_err(io)?;
                opened.repaired = Some(torn);
            }
            opened.records = scan.report.records;
            opened.head = scan.report.head;
            len = scan.intact_len;
        }
        if durability == Durability::Fsync {
            // The file's directory entry too, in case the file was just created. Best
            // effort: not every platform can open a directory.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
            }
        }
        Ok(JsonlSink {
            path: path.to_path_buf(),
            durability,
            state: Mutex::new(State {
                file,
                regular,
                head: opened.head.clone(),
                records: opened.records,
                len,
                dirty: false,
                checkpoints: None,
            }),
            opened,
        })
    }

    /// The sink, signing checkpoints of the log with `key` into the file at `checkpoints`
    /// (created if needed, locked like the log) when `policy` says: after the record that
    /// meets it, once that record's line is written, the log is `fsync`ed (whatever the
    /// [`Durability`]: no checkpoint outlives the records it signs) and the checkpoint
    /// line appended (and `fsync`ed with [`Durability::Fsync`]).
    /// [`verify_checkpoints`](super::verify_checkpoints) then finds records cut off the
    /// log below the last checkpoint, an emptied log and a rebuilt chain.
    ///
    /// The checkpoint file must be where whoever can write the log cannot (another host
    /// or volume, or shipped to a witness as it is written). The checkpoints already in
    /// it are checked with `key`'s public key, and the log against them (the log is read
    /// again): a sink does not extend a log its checkpoints do not anchor. A torn last
    /// line is cut off. One checkpoint file per log and key.
    ///
    /// A record whose checkpoint cannot be written returns [`AuditError::Checkpoint`]:
    /// the record is in the log, and the next record tries the checkpoint again.
    ///
    /// # Errors
    /// [`CheckpointError::Mismatch`] if a checkpoint in the file does not verify with
    /// `key` or the log does not pass through it; [`CheckpointError::Locked`] if another
    /// sink writes the file; [`CheckpointError::Io`] and [`CheckpointError::Log`] if the
    /// file or the log cannot be read or written.
    ///
    /// # Example
    /// See [`verify_checkpoints`](super::verify_checkpoints).
    pub fn with_checkpoints(
        mut self,
        checkpoints: impl AsRef<Path>,
        key: CheckpointKey,
        policy: CheckpointPolicy,
    ) -> Result<JsonlSink, CheckpointError> {
        let state = match self.state.get_mut() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        let writer = checkpoint::Writer::open(
            &self.path,
            state.regular,
            checkpoints.as_ref(),
            key,
            policy,
            self.durability == Durability::Fsync,
        )?;
        state.checkpoints = Some(writer);
        Ok(self)
    }

    /// Writes a checkpoint of the log now, if the sink has checkpoints
    /// ([`JsonlSink::with_checkpoints`]) and records the last checkpoint does not sign:
    /// the checkpoint written, if any. For a CRM to anchor its last records at shutdown,
    /// or from a timer when requests are few.
    ///
    /// # Errors
    /// [`AuditError::Checkpoint`] if the log cannot be `fsync`ed or the checkpoint
    /// written.
    ///
    /// # Example
    /// ```
    /// use membergate::audit::{self, CheckpointKey, CheckpointPolicy, DecisionRecord, DecisionSink, Durability, JsonlSink};
    /// use membergate::Engine;
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let record = DecisionRecord::rejection("req-1", "2020-03-01T12:00:00Z".parse()?,
    ///     r#"Staff::"nobody""#, "read", "m-00001", "unknown principal", engine.version());
    /// let dir = tempfile::tempdir()?;
    /// let (log, checkpoints) = (dir.path().join("decisions.jsonl"), dir.path().join("checkpoints.jsonl"));
    /// let key = CheckpointKey::generate()?;
    /// let public = key.public_key();
    /// let sink = JsonlSink::open(&log, Durability::Flush)?
    ///     .with_checkpoints(&checkpoints, key, CheckpointPolicy::default())?;
    /// sink.record(&record)?;
    /// sink.record(&record)?;
    /// assert_eq!(sink.checkpoint()?.map(|c| c.records), Some(2));
    /// assert_eq!(sink.checkpoint()?, None);   // nothing new to sign
    /// assert_eq!(audit::verify_checkpoints(&log, &checkpoints, &public)?.unanchored(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, AuditError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        match state.checkpoints.as_mut() {
            Some(writer) if writer.behind(state.records) => writer
                .write(
                    &self.path,
                    &state.file,
                    state.regular,
                    state.records,
                    &state.head,
                )
                .map(Some),
            _ => Ok(None),
        }
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What opening the log found.
    pub fn opened(&self) -> &OpenReport {
        &self.opened
    }

    /// The records in the log now.
    pub fn records(&self) -> u64 {
        self.lock().records
    }

    /// The hash of the last record in the log now: the next record's `prev`.
    pub fn head(&self) -> String {
        self.lock().head.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => {
                // A thread panicked while writing: the file may end with part of a line.
                self.state.clear_poison();
                let mut state = poisoned.into_inner();
                state.dirty = true;
                state
            }
        }
    }

    fn append(&self, file: &mut File, line: &[u8]) -> io::Result<()> {
        file.write_all(line)?;
        file.flush()?;
        if self.durability == Durability::Fsync {
            file.sync_data()?;
        }
        Ok(())
    }

    /// Cuts the file back to the end of the last record written.
    fn cut_back(state: &mut State) -> io::Result<()> {
        if state.regular && state.file.metadata()?.len() > state.len {
            state.file.set_len(state.len)?;
        }
        Ok(())
    }
}

impl DecisionSink for JsonlSink {
    fn record(&self, record: &DecisionRecord) -> Result<(), AuditError> {
        // Encoded and hashed before the lock; only the link to `prev` is made under it.
        let json = serde_json::to_vec(record)?;
        let hashed = chain::hash_record(record);
        let mut state = self.lock();
        if state.dirty {
            JsonlSink::cut_back(&mut state).map_err(|source| AuditError::Repair {
                path: self.path.clone(),
                source,
            })?;
            state.dirty = false;
        }
        let hash = chain::finish(hashed, &state.head);
        let line = chain::line(&json, &state.head, &hash);
        if let Err(source) = self.append(&mut state.file, &line) {
            state.dirty = JsonlSink::cut_back(&mut state).is_err();
            return Err(AuditError::Write {
                path: self.path.clone(),
                source,
            });
        }
        state.head = hash;
        state.records += 1;
        state.len += line.len() as u64;
        let state = &mut *state;
        if let Some(writer) = state.checkpoints.as_mut() {
            if writer.due(state.records) {
                writer.write(
                    &self.path,
                    &state.file,
                    state.regular,
                    state.records,
                    &state.head,
                )?;
            }
        }
        Ok(())
    }
}

/// Cuts the torn last line `torn` off `file` (at `path`), keeping its first `intact_len`
/// bytes, and says so as a `tracing` warning.
pub(crate) fn cut_torn(
    file: &File,
    path: &Path,
    intact_len: u64,
    torn: TornLine,
) -> io::Result<()> {
    file.set_len(intact_len)?;
    file.sync_all()?;
    tracing::warn!(
        target: "membergate::audit",
        path = %path.display(),
        line = torn.line,
        bytes = torn.bytes,
        "removed a torn last line (a write cut off by a crash)"
    );
    Ok(())
}

/// Opens the file at `path` for reading and appending, creating it if needed, and takes
/// its exclusive lock without waiting (a file system without locks lets it be): the file
/// and whether it is a regular file (not a device or pipe), or `None` if another holder
/// has the lock.
pub(crate) fn open_locked(path: &Path) -> io::Result<Option<(File, bool)>> {
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(None),
        Err(TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => {}
        Err(TryLockError::Error(e)) => return Err(e),
    }
    let regular = file.metadata()?.is_file();
    Ok(Some((file, regular)))
}
