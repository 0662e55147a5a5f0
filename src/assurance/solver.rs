//! Finding the SMT solver (cvc5 1.3 or newer) that Cedar's symbolic compiler drives.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

/// The wrapper that serves cvc5's SMT-LIB protocol from the PyPI package `cvc5`.
pub const PYTHON_WRAPPER: &str = include_str!("../../tools/cvc5-smt.py");

/// The oldest cvc5 whose SMT-LIB output the symbolic compiler reads.
const MIN_VERSION: (u32, u32) = (1, 3);

/// How to start an SMT solver that reads SMT-LIB on standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SolverCommand {
    program: OsString,
    args: Vec<OsString>,
    description: String,
}

/// No usable solver was found: verification cannot run, and nothing is reported proved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no SMT solver for verification (cvc5 1.3 or newer is needed): {tried}\n\
     install one with `python3 -m pip install cvc5==1.4.2`, or set CVC5 to a cvc5 executable"
)]
pub struct SolverMissing {
    /// What was tried, and why each failed.
    pub tried: String,
}

impl SolverCommand {
    /// Finds a solver: the executable named by the `CVC5` environment variable, else a
    /// `cvc5` 1.3+ on `PATH`, else `python3` with the PyPI package `cvc5` 1.3+ (through
    /// the wrapper [`PYTHON_WRAPPER`], run with `python3 -c`).
    ///
    /// ```no_run
    /// use membergate::assurance::SolverCommand;
    /// match SolverCommand::locate() {
    ///     Ok(solver) => println!("solver: {solver}"),
    ///     Err(missing) => eprintln!("{missing}"),
    /// }
    /// ```
    pub fn locate() -> Result<SolverCommand, SolverMissing> {
        let mut tried = Vec::new();
        if let Some(path) = std::env::var_os("CVC5") {
            let path = PathBuf::from(path);
            if path.is_file() {
                return Ok(SolverCommand::executable(path));
            }
            return Err(SolverMissing {
                tried: format!("CVC5={} is not a file", path.display()),
            });
        }
        match version_of(Command::new("cvc5").arg("--version")) {
            Some(v) if v >= MIN_VERSION => return Ok(SolverCommand::executable("cvc5".into())),
            Some((major, minor)) => tried.push(format!("`cvc5` on PATH is {major}.{minor}")),
            None => tried.push("no `cvc5` on PATH".to_string()),
        }
        let probe = "import cvc5; print('cvc5 version', cvc5.__version__)";
        match version_of(Command::new("python3").args(["-c", probe])) {
            Some(v) if v >= MIN_VERSION => {
                return Ok(SolverCommand {
                    program: "python3".into(),
                    args: vec!["-c".into(), PYTHON_WRAPPER.into()],
                    description: format!(
                        "python3 with the cvc5 package {}.{} (membergate's SMT-LIB wrapper)",
                        v.0, v.1
                    ),
                })
            }
            Some((major, minor)) => {
                tried.push(format!("the Python package cvc5 is {major}.{minor}"))
            }
            None => tried.push("python3 has no `cvc5` package".to_string()),
        }
        Err(SolverMissing {
            tried: tried.join("; "),
        })
    }

    /// A solver executable that takes cvc5's arguments (`--lang smt --tlimit=N`).
    pub fn executable(path: PathBuf) -> SolverCommand {
        SolverCommand {
            description: path.display().to_string(),
            program: path.into_os_string(),
            args: Vec::new(),
        }
    }

    /// The command to spawn, with a limit of `timeout_ms` per check.
    pub(crate) fn command(&self, timeout_ms: u64) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .args(["--lang", "smt"])
            .arg(format!("--tlimit={timeout_ms}"))
            .kill_on_drop(true);
        cmd
    }
}

impl std::fmt::Display for SolverCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

/// Runs `cmd` and reads `version X.Y` from its output.
fn version_of(cmd: &mut Command) -> Option<(u32, u32)> {
    let out = cmd.output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let rest = text.split("version").nth(1)?.trim_start();
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}
