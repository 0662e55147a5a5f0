//! A policy directory reloaded while requests are served: the new set is loaded and
//! checked beside the old one and swapped in atomically; a request decides entirely on the
//! set it started with, and reports that set's version.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::assurance::{Invariants, Verdict, Verifier, VerifyError};
use crate::bundle::PolicyVersion;
use crate::engine::Engine;
use crate::error::LoadError;

/// What a new policy set must pass, besides loading and validating, before it is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReloadCheck {
    /// Loading and strict validation only.
    #[default]
    Validate,
    /// Also every invariant of the new directory's `invariants.toml`, proved by the SMT
    /// solver ([`Verifier`]); without a solver the reload is refused.
    Invariants,
}

/// An [`Engine`] that can be replaced by a newer version of its policy directory.
///
/// ```
/// use membergate::ReloadableEngine;
/// let engine = ReloadableEngine::from_dir("policies")?;
/// let serving = engine.current();          // one request decides on this snapshot...
/// let version = serving.version().clone(); // ...and reports this version
/// // After an unchanged reload the same version is served.
/// assert!(!engine.reload()?.swapped());
/// assert_eq!(engine.current().version(), &version);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ReloadableEngine {
    dir: PathBuf,
    check: ReloadCheck,
    current: ArcSwap<Engine>,
    /// One reload at a time: two reloads racing could serve the older directory last.
    reloading: Mutex<()>,
}

impl fmt::Debug for ReloadableEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableEngine")
            .field("dir", &self.dir)
            .field("check", &self.check)
            .field("version", &self.current.load().version().short())
            .finish()
    }
}

/// What a successful [`ReloadableEngine::reload`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The directory holds the version already served: nothing was swapped.
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
    #[error("the new policies could not be verified; still serving {}: {source}", serving.short())]
    Unverified {
        /// The version still served.
        serving: PolicyVersion,
        /// Why.
        source: VerifyError,
    },
}

impl ReloadableEngine {
    /// Loads `dir` (see [`Engine::from_dir`]); later reloads read it again.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<ReloadableEngine, LoadError> {
        let dir = dir.as_ref().to_path_buf();
        let engine = Engine::from_dir(&dir)?;
        Ok(ReloadableEngine::serving(
            dir,
            ReloadCheck::Validate,
            engine,
        ))
    }

    fn serving(dir: PathBuf, check: ReloadCheck, engine: Engine) -> ReloadableEngine {
        ReloadableEngine {
            dir,
            check,
            current: ArcSwap::from_pointee(engine),
            reloading: Mutex::new(()),
        }
    }

    /// Loads `dir`, and checks every later version with `check` before serving it. The
    /// first version is checked too: an engine that would refuse its own start is refused.
    pub fn with_check(
        dir: impl AsRef<Path>,
        check: ReloadCheck,
    ) -> Result<ReloadableEngine, ReloadStartError> {
        let dir = dir.as_ref().to_path_buf();
        let engine = Engine::from_dir(&dir)?;
        if check == ReloadCheck::Invariants {
            verify(&dir, &engine).map_err(ReloadStartError::Check)?;
        }
        Ok(ReloadableEngine::serving(dir, check, engine))
    }

    /// The engine to decide one request (or one page) on. Keep the `Arc` for the whole
    /// request: a reload meanwhile does not change the answer, and the version reported
    /// is that of the policies that decided.
    pub fn current(&self) -> Arc<Engine> {
        self.current.load_full()
    }

    /// The directory reloaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the directory again and, if it holds a new version that loads, validates
    /// and passes the check, serves it from now on. On any error the old version is
    /// still served, and the error says which.
    ///
    /// The directory's path is resolved once per reload, so a deployment that writes the
    /// new version beside the old and then swaps a symbolic link is never read half old,
    /// half new.
    pub fn reload(&self) -> Result<ReloadOutcome, ReloadError> {
        // A poisoned lock only means an earlier reload panicked; the swap is atomic, so
        // the served engine is whole either way.
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let serving = self.current.load().version().clone();
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
        let engine = Engine::from_dir(&resolved).map_err(refused)?;
        if engine.version() == &serving {
            return Ok(ReloadOutcome::Unchanged(serving));
        }
        if self.check == ReloadCheck::Invariants {
            verify(&resolved, &engine).map_err(|e| e.refusing(serving.clone()))?;
        }
        let to = engine.version().clone();
        self.current.store(Arc::new(engine));
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
    #[error("{0}")]
    Check(CheckFailure),
}

/// An invariant check that did not pass.
#[derive(Debug)]
pub enum CheckFailure {
    /// The invariants file does not load.
    Invariants(LoadError),
    /// An invariant is refuted: its id and counterexample.
    Refuted(String, String),
    /// No verdict (no solver, or it failed).
    Unverified(VerifyError),
}

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

/// Proves the invariants of `dir` for `engine`; the first refuted one fails.
fn verify(dir: &Path, engine: &Engine) -> Result<(), CheckFailure> {
    let invariants = Invariants::load(dir, engine.schema()).map_err(CheckFailure::Invariants)?;
    let mut verifier = Verifier::locate().map_err(CheckFailure::Unverified)?;
    let results = verifier
        .verify(engine.schema(), engine.policies(), &invariants)
        .map_err(CheckFailure::Unverified)?;
    for r in results {
        if let Verdict::Refuted(example) = r.verdict {
            return Err(CheckFailure::Refuted(r.invariant.id, example.to_string()));
        }
    }
    Ok(())
}
