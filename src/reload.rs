//! A policy directory reloaded while requests are served: the new set is loaded and
//! checked beside the old one and swapped in atomically, with the [`Directory`] rebuilt
//! for it from the same records; a request decides entirely on the [`Serving`] snapshot
//! it started with, and reports that snapshot's version.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

#[cfg(feature = "assurance")]
use crate::assurance::{Invariants, Verdict, Verifier, VerifyError};
use crate::bundle::PolicyVersion;
use crate::directory::{Directory, DirectoryRecord};
use crate::engine::Engine;
use crate::error::{LoadError, RecordError};
use crate::records::Membership;

/// What a new policy set must pass, besides loading and validating, before it is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReloadCheck {
    /// Loading and strict validation only.
    #[default]
    Validate,
    /// Also invariants proved by the SMT solver ([`Verifier`]); without a solver the
    /// reload is refused. A new version must keep the invariants of the version being
    /// served as well as its own: deleting an invariant in the same change that breaks
    /// it does not pass. (Feature `assurance`, on by default.)
    #[cfg(feature = "assurance")]
    Invariants,
}

/// What one request decides on: an engine and the directory built for it.
#[derive(Debug)]
pub struct Serving {
    /// The engine.
    pub engine: Arc<Engine>,
    /// The principal side of the records, for this engine.
    pub directory: Directory,
}

/// An [`Engine`] and its [`Directory`] that can be replaced by a newer version of the
/// policy directory, or updated one record at a time, while requests are served.
///
/// ```
/// use membergate::{sample, ReloadableEngine};
/// let engine = ReloadableEngine::from_dir("policies", &sample::bundled())?;
/// let serving = engine.current();                 // one request decides on this snapshot...
/// let version = serving.engine.version().clone(); // ...and reports this version
/// // After an unchanged reload the same version is served.
/// assert!(!engine.reload()?.swapped());
/// assert_eq!(engine.current().engine.version(), &version);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ReloadableEngine {
    dir: PathBuf,
    check: ReloadCheck,
    current: ArcSwap<Serving>,
    /// One change at a time (a reload or an upsert): two racing could lose one. Under
    /// it, what the next reload compares with.
    reloading: Mutex<Served>,
}

/// What a reload knows of the version served.
#[derive(Debug, Default)]
struct Served {
    /// With [`ReloadCheck::Invariants`], its invariants file (path and text), which
    /// gates the next version.
    #[cfg_attr(not(feature = "assurance"), allow(dead_code))]
    gate: Option<(PathBuf, String)>,
    /// Its directory as it was read, if it could be listed.
    seen: Option<Fingerprint>,
    /// The last directory that did not load, and why: not read again until it changes
    /// (a broken 20,000-policy directory would cost seconds every tick).
    refused: Option<(Fingerprint, String)>,
}

/// A policy directory's resolved path and, per entry (links followed), its name, size
/// and modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    dir: PathBuf,
    entries: Vec<(std::ffi::OsString, u64, Option<std::time::SystemTime>)>,
}

impl Fingerprint {
    /// The fingerprint of `dir` (resolved); `None` if it cannot be listed (the directory
    /// is then read in full, and its errors reported).
    fn of(dir: &Path) -> Option<Fingerprint> {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir).ok()? {
            let entry = entry.ok()?;
            let meta = std::fs::metadata(entry.path()).ok()?;
            entries.push((entry.file_name(), meta.len(), meta.modified().ok()));
        }
        entries.sort();
        Some(Fingerprint {
            dir: dir.to_path_buf(),
            entries,
        })
    }
}

impl fmt::Debug for ReloadableEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableEngine")
            .field("dir", &self.dir)
            .field("check", &self.check)
            .field("version", &self.current.load().engine.version().short())
            .finish()
    }
}

/// What a successful [`ReloadableEngine::reload`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The directory's entries have the sizes and modification times they had when the
    /// served version was read: nothing was read again (a reload every tick of an
    /// unchanged directory costs one listing, not a parse and a validation).
    Untouched(PolicyVersion),
    /// The directory was read again and holds the version already served: nothing was
    /// swapped.
    Unchanged(PolicyVersion),
    /// The new version is served from now on; requests that started before finish on the
    /// old one.
    Swapped {
        /// The version served before.
        from: PolicyVersion,
        /// The version served now.
        to: PolicyVersion,
    },
}

impl ReloadOutcome {
    /// Whether a new version is now served.
    pub fn swapped(&self) -> bool {
        matches!(self, ReloadOutcome::Swapped { .. })
    }
}

/// Why a reload was refused. The version that was served before is still served.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new directory does not load or validate.
    #[error("the new policies were refused; still serving {}: {source}", serving.short())]
    Load {
        /// The version still served.
        serving: PolicyVersion,
        /// Every problem, with its file and position.
        source: LoadError,
    },
    /// The directory is as it was when it last failed to load ([`ReloadError::Load`]):
    /// it is not read again until a file in it changes.
    #[error("the new policies were refused and have not changed since; still serving {}: {reason}", serving.short())]
    StillRefused {
        /// The version still served.
        serving: PolicyVersion,
        /// The load error, as it was reported then.
        reason: String,
    },
    /// An invariant does not hold for the new policies.
    #[error(
        "the new policies break invariant `{invariant}`; still serving {}:\n{example}",
        serving.short()
    )]
    Refuted {
        /// The version still served.
        serving: PolicyVersion,
        /// The invariant refuted.
        invariant: String,
        /// The counterexample, rendered.
        example: String,
    },
    /// The invariants could not be checked (no solver, or it failed).
    #[cfg(feature = "assurance")]
    #[error("the new policies could not be verified; still serving {}: {source}", serving.short())]
    Unverified {
        /// The version still served.
        serving: PolicyVersion,
        /// Why.
        source: VerifyError,
    },
    /// The directory's records do not fit the new policies (a processor's contract names
    /// a field the new catalogue lacks, say).
    #[error("the records do not fit the new policies; still serving {}: {source}", serving.short())]
    Records {
        /// The version still served.
        serving: PolicyVersion,
        /// The record refused.
        source: RecordError,
    },
}

impl ReloadableEngine {
    /// Loads `dir` (see [`Engine::from_dir`]) and builds the directory of `records`'
    /// principal side for it; later reloads read `dir` again.
    ///
    /// # Errors
    /// [`ReloadStartError`] if the policies do not load or a record is refused.
    pub fn from_dir(
        dir: impl AsRef<Path>,
        records: &Membership,
    ) -> Result<ReloadableEngine, ReloadStartError> {
        ReloadableEngine::with_check(dir, records, ReloadCheck::Validate)
    }

    /// [`ReloadableEngine::from_dir`], checking every later version with `check` before
    /// serving it. The first version is checked too: an engine that would refuse its own
    /// start is refused.
    ///
    /// # Errors
    /// As [`ReloadableEngine::from_dir`], or the first version fails `check`.
    pub fn with_check(
        dir: impl AsRef<Path>,
        records: &Membership,
        check: ReloadCheck,
    ) -> Result<ReloadableEngine, ReloadStartError> {
        let dir = dir.as_ref().to_path_buf();
        // Taken before reading, so that a change made while loading is seen next time.
        let seen = std::fs::canonicalize(&dir)
            .ok()
            .and_then(|d| Fingerprint::of(&d));
        let engine = Engine::from_dir(&dir)?;
        #[allow(unused_mut)]
        let mut served = Served {
            gate: None,
            seen,
            refused: None,
        };
        #[cfg(feature = "assurance")]
        if check == ReloadCheck::Invariants {
            served.gate = Some(verify(&dir, &engine, None).map_err(ReloadStartError::Check)?);
        }
        let directory = Directory::from_membership(&engine, records)?;
        Ok(ReloadableEngine {
            dir,
            check,
            current: ArcSwap::from_pointee(Serving {
                engine: Arc::new(engine),
                directory,
            }),
            reloading: Mutex::new(served),
        })
    }

    /// The engine and directory to decide one request (or one page) on. Keep the `Arc`
    /// for the whole request: a reload or an upsert meanwhile does not change the
    /// answer, and the version reported is that of the policies that decided.
    pub fn current(&self) -> Arc<Serving> {
        self.current.load_full()
    }

    /// The directory reloaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Inserts or replaces one record of the directory (see [`Directory::upsert`]):
    /// requests that start after it see it.
    ///
    /// # Errors
    /// [`RecordError`] if the directory refuses the record; nothing changes then.
    pub fn upsert(&self, id: &str, record: impl Into<DirectoryRecord>) -> Result<(), RecordError> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = self.current.load_full();
        let mut directory = now.directory.clone();
        directory.upsert(id, record)?;
        self.current.store(Arc::new(Serving {
            engine: now.engine.clone(),
            directory,
        }));
        Ok(())
    }

    /// Reads the directory again and, if it holds a new version that loads, validates
    /// and passes the check, serves it from now on, with the directory rebuilt for it
    /// from the same records. On any error the old version is still served, and the
    /// error says which.
    ///
    /// The directory's path is resolved once per reload, so a deployment that writes the
    /// new version beside the old and then swaps a symbolic link is never read half old,
    /// half new.
    ///
    /// # Errors
    /// [`ReloadError`], naming the version still served.
    pub fn reload(&self) -> Result<ReloadOutcome, ReloadError> {
        // A poisoned lock only means an earlier reload panicked; the swap is atomic, so
        // the served engine is whole either way.
        let mut held = self
            .reloading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = self.current.load_full();
        let serving = now.engine.version().clone();
        let refused = |source: LoadError| ReloadError::Load {
            serving: serving.clone(),
            source,
        };
        let resolved = std::fs::canonicalize(&self.dir).map_err(|source| {
            refused(LoadError::Io {
                path: self.dir.clone(),
                source,
            })
        })?;
        let print = Fingerprint::of(&resolved);
        if print.is_some() && print == held.seen {
            return Ok(ReloadOutcome::Untouched(serving));
        }
        if let (Some(now), Some((then, reason))) = (&print, &held.refused) {
            if now == then {
                return Err(ReloadError::StillRefused {
                    serving,
                    reason: reason.clone(),
                });
            }
        }
        let engine = match Engine::from_dir(&resolved) {
            Ok(engine) => engine,
            Err(e) => {
                held.refused = print.map(|p| (p, e.to_string()));
                return Err(refused(e));
            }
        };
        held.refused = None;
        if engine.version() == &serving {
            held.seen = print;
            return Ok(ReloadOutcome::Unchanged(serving));
        }
        #[cfg(feature = "assurance")]
        let next_gate = if self.check == ReloadCheck::Invariants {
            Some(
                verify(&resolved, &engine, held.gate.as_ref())
                    .map_err(|e| e.refusing(serving.clone()))?,
            )
        } else {
            None
        };
        let directory =
            now.directory
                .for_engine(&engine)
                .map_err(|source| ReloadError::Records {
                    serving: serving.clone(),
                    source,
                })?;
        let to = engine.version().clone();
        self.current.store(Arc::new(Serving {
            engine: Arc::new(engine),
            directory,
        }));
        #[cfg(feature = "assurance")]
        if next_gate.is_some() {
            held.gate = next_gate;
        }
        held.seen = print;
        Ok(ReloadOutcome::Swapped { from: serving, to })
    }
}

/// Why a [`ReloadableEngine`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReloadStartError {
    /// The directory does not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The check failed.
    #[cfg(feature = "assurance")]
    #[error("{0}")]
    Check(CheckFailure),
    /// A record of the directory was refused.
    #[error(transparent)]
    Records(#[from] RecordError),
}

/// An invariant check that did not pass.
#[cfg(feature = "assurance")]
#[derive(Debug)]
pub enum CheckFailure {
    /// The invariants file does not load.
    Invariants(LoadError),
    /// An invariant is refuted: its id and counterexample.
    Refuted(String, String),
    /// No verdict (no solver, or it failed).
    Unverified(VerifyError),
}

#[cfg(feature = "assurance")]
impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckFailure::Invariants(e) => write!(f, "the invariants do not load: {e}"),
            CheckFailure::Refuted(id, example) => {
                write!(f, "invariant `{id}` is refuted:\n{example}")
            }
            CheckFailure::Unverified(e) => write!(f, "the invariants could not be verified: {e}"),
        }
    }
}

#[cfg(feature = "assurance")]
impl CheckFailure {
    fn refusing(self, serving: PolicyVersion) -> ReloadError {
        match self {
            CheckFailure::Invariants(source) => ReloadError::Load { serving, source },
            CheckFailure::Refuted(invariant, example) => ReloadError::Refuted {
                serving,
                invariant,
                example,
            },
            CheckFailure::Unverified(source) => ReloadError::Unverified { serving, source },
        }
    }
}

/// Proves for `engine` the invariants of `served` (the served version's file: its path
/// and text), if any, and its own (the `invariants.toml` of `dir` it was loaded with); the
/// first refuted one fails. Its own invariants file on success: the gate of the version
/// after.
#[cfg(feature = "assurance")]
fn verify(
    dir: &Path,
    engine: &Engine,
    served: Option<&(PathBuf, String)>,
) -> Result<(PathBuf, String), CheckFailure> {
    // The text read with the version (and covered by it), not the file read again.
    let file = dir.join(crate::assurance::INVARIANTS_FILE);
    let own = match engine.invariants_text() {
        Some(text) => (file, text.to_string()),
        None => return Err(CheckFailure::Invariants(Invariants::missing(file))),
    };
    let mut verifier = Verifier::locate().map_err(CheckFailure::Unverified)?;
    // The served version's invariants first (unless the text is the same).
    for (file, text) in served.into_iter().filter(|s| s.1 != own.1).chain([&own]) {
        let invariants =
            Invariants::parse(file, text, engine.schema()).map_err(CheckFailure::Invariants)?;
        let results = verifier
            .verify(engine.schema(), engine.policies(), &invariants)
            .map_err(CheckFailure::Unverified)?;
        for r in results {
            if let Verdict::Refuted(example) = r.verdict {
                return Err(CheckFailure::Refuted(r.invariant.id, example.to_string()));
            }
        }
    }
    Ok(own)
}
