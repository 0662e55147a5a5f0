//! Helpers shared by the test modules: the bundled policies, engine, sample and fixture,
//! copies of the policy directory with text mutations, parsing of test literals, and
//! running the `membergate` binary.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use jiff::Timestamp;
use membergate::{Engine, Membership, PrincipalId, ProblemKind};
use tempfile::TempDir;

// ------------------------------------------------------------------ bundled data

/// The bundled policy directory.
pub(crate) fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// The engine on the bundled policies, loaded once for every test module.
pub(crate) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        Engine::from_dir(policies_dir()).unwrap_or_else(|e| panic!("{}", e.render()))
    })
}

/// The bundled sample membership (12,000 members), built once for every test module.
pub(crate) fn bundled() -> &'static Membership {
    static BUNDLED: OnceLock<Membership> = OnceLock::new();
    BUNDLED.get_or_init(membergate::sample::bundled)
}

/// The policy suites' fixture, `policies/tests/fixtures/party.toml`.
pub(crate) fn fixture() -> &'static Membership {
    static PARTY: OnceLock<Membership> = OnceLock::new();
    PARTY.get_or_init(|| {
        let path = policies_dir().join("tests/fixtures/party.toml");
        let text = fs::read_to_string(path).expect("read fixture");
        toml::from_str(&text).expect("fixture parses")
    })
}

// ------------------------------------------------------------------ literals

/// The timestamp `s` (RFC 3339), which must parse.
pub(crate) fn t(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

/// The principal `s` (`Type::"id"`), which must parse.
pub(crate) fn principal(s: &str) -> PrincipalId {
    s.parse().expect("principal")
}

// ------------------------------------------------------------------ policy copies

/// Copies the directory tree `from` to `to`, creating `to`.
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create directory");
    for entry in fs::read_dir(from).expect("read directory") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let last = before.rsplit('\n').next().unwrap_or("");
    (line, last.chars().count() + 1)
}

/// A text mutation of one file of a policy directory, and the problem it must cause.
#[derive(Clone, Copy)]
pub(crate) struct Mutation {
    /// The file, relative to the policy directory.
    pub(crate) file: &'static str,
    /// Text of the file whose first occurrence is replaced.
    pub(crate) find: &'static str,
    /// What replaces it.
    pub(crate) replace: &'static str,
    /// The problem is reported at the first occurrence of this inside `replace`.
    pub(crate) at: &'static str,
    /// What kind of problem it is.
    pub(crate) kind: ProblemKind,
    /// Fragments the problem's message contains.
    pub(crate) message: &'static [&'static str],
}

/// Where a problem is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Place {
    /// The file the problem names.
    pub(crate) file: PathBuf,
    /// Its 1-based line.
    pub(crate) line: usize,
    /// Its 1-based column, in characters.
    pub(crate) column: usize,
}

/// A syntax error in a policy of guardrails.cedar: a missing `)`.
pub(crate) const POLICY_SYNTAX: Mutation = Mutation {
    file: "guardrails.cedar",
    find: "forbid (principal, action, resource)\nwhen { principal has ended_at",
    replace: "forbid (principal, action, resource\nwhen { principal has ended_at",
    at: "when",
    kind: ProblemKind::Policy,
    message: &["unexpected token `when`"],
};

/// A copy of the bundled policy directory in a temporary directory.
pub(crate) struct PolicyCopy {
    dir: TempDir,
}

impl PolicyCopy {
    /// A fresh copy of the bundled policies.
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        copy_dir(&policies_dir(), dir.path());
        PolicyCopy { dir }
    }

    /// The copy's directory.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The path of `rel` (relative to the policy directory) in the copy.
    pub(crate) fn file(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }

    /// The text of `rel` in the copy.
    pub(crate) fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.file(rel)).expect("read file")
    }

    /// Replaces the first `find` with `replace` in `rel`; returns the new text and the
    /// byte offset where `replace` starts.
    pub(crate) fn edit(&self, rel: &str, find: &str, replace: &str) -> (String, usize) {
        let text = self.read(rel);
        let at = text
            .find(find)
            .unwrap_or_else(|| panic!("`{find}` is not in {rel}: the fixture changed"));
        let new = format!("{}{replace}{}", &text[..at], &text[at + find.len()..]);
        fs::write(self.file(rel), &new).expect("write file");
        (new, at)
    }

    /// Applies `m` and returns where its problem must be reported.
    pub(crate) fn mutate(&self, m: &Mutation) -> Place {
        let (text, at) = self.edit(m.file, m.find, m.replace);
        let within = m
            .replace
            .find(m.at)
            .unwrap_or_else(|| panic!("`{}` is not in the replacement `{}`", m.at, m.replace));
        let (line, column) = line_col(&text, at + within);
        Place {
            file: self.file(m.file),
            line,
            column,
        }
    }
}

// ------------------------------------------------------------------ the CLI

/// Runs the `membergate` binary with `args` in the crate's directory.
pub(crate) fn membergate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_membergate"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run membergate")
}

/// The standard output of `o`, lossily decoded.
pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The standard error of `o`, lossily decoded.
pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
