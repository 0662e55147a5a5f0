//! What several subcommands share: loading the engine and the membership data, the
//! request options of `fields` and `explain`, the exit code for "no verdict", and text
//! layout (indenting, tables).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use membergate::sample;
use membergate::{Action, Context, Directory, Engine, Member, MemberRef, Membership, PrincipalId};

/// The exit code when verification cannot run (no solver, or the solver failed) or an
/// audit log cannot be read.
pub const NO_VERDICT: u8 = 2;

/// One request's principal, action and context, for no member in particular (`plan`),
/// and the membership data to read.
#[derive(clap::Args)]
pub struct Asking {
    /// The principal, as a Cedar uid: `CampaignStaff::"cs-a-staff"`.
    #[arg(long)]
    pub principal: PrincipalId,
    /// read, export, update, erase, bulk_export, contact_phone, contact_email, contact_post.
    #[arg(long, default_value = "read")]
    pub action: Action,
    /// The time of the request (RFC 3339).
    #[arg(long)]
    pub at: Timestamp,
    /// The election the access is for.
    #[arg(long)]
    pub election: Option<String>,
    /// The call session a volunteer works in.
    #[arg(long)]
    pub session: Option<String>,
    /// The stated purpose.
    #[arg(long)]
    pub purpose: Option<String>,
    /// A break-glass reason.
    #[arg(long)]
    pub reason: Option<String>,
    /// Member reads the principal made in the past hour.
    #[arg(long, default_value_t = 0)]
    pub reads_this_hour: u64,
    /// Membership data (JSON or TOML) instead of the bundled sample.
    #[arg(long)]
    pub data: Option<PathBuf>,
}

impl Asking {
    pub fn context(&self) -> Context {
        Context {
            now: self.at,
            reads_this_hour: self.reads_this_hour,
            election: self.election.clone(),
            session: self.session.clone(),
            purpose: self.purpose.clone(),
            reason: self.reason.clone(),
        }
    }
}

/// One request's principal, member, action and context (`fields`, `explain`).
#[derive(clap::Args)]
pub struct Ask {
    /// The member id.
    #[arg(long)]
    pub member: String,
    #[command(flatten)]
    pub asking: Asking,
}

/// The engine of the policy directory `dir`; the error with its rendered diagnostics.
pub fn engine(dir: &Path) -> Result<Engine, String> {
    Engine::from_dir(dir).map_err(|e| format!("{e}\n\n{}", e.render()))
}

/// One member of a JSON-lines membership file (`membergate generate --out X.jsonl`).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberLine {
    /// The member's id.
    pub id: String,
    /// The member's attributes.
    pub member: Member,
    /// The member's field values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, String>,
}

/// The member lines of a JSON-lines membership file, read one at a time.
pub struct MemberLines {
    path: PathBuf,
    lines: std::io::Lines<std::io::BufReader<std::fs::File>>,
    number: usize,
}

impl Iterator for MemberLines {
    type Item = Result<MemberLine, String>;

    fn next(&mut self) -> Option<Self::Item> {
        let line = self.lines.next()?;
        self.number += 1;
        let at = |e: &dyn std::fmt::Display| {
            format!("`{}` line {}: {e}", self.path.display(), self.number)
        };
        Some(
            line.map_err(|e| at(&e))
                .and_then(|l| serde_json::from_str(&l).map_err(|e| at(&e))),
        )
    }
}

/// Whether `path` is a JSON-lines membership file.
pub fn is_jsonl(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "jsonl")
}

/// A JSON-lines membership file: its principal side (the first line) and its members,
/// to be read one at a time.
pub fn open_jsonl(path: &Path) -> Result<(Membership, MemberLines), String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let mut lines = std::io::BufReader::with_capacity(1 << 20, file).lines();
    let first = lines
        .next()
        .ok_or_else(|| format!("`{}` is empty", path.display()))?
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let principal_side: Membership =
        serde_json::from_str(&first).map_err(|e| format!("`{}` line 1: {e}", path.display()))?;
    Ok((
        principal_side,
        MemberLines {
            path: path.to_path_buf(),
            lines,
            number: 1,
        },
    ))
}

/// The membership data at `path` (TOML if it ends in `.toml`, JSON lines if `.jsonl`
/// (every member's attributes read, their values not), JSON otherwise), or the bundled
/// sample.
pub fn data(path: Option<&Path>) -> Result<Membership, String> {
    let Some(path) = path else {
        return Ok(sample::bundled());
    };
    if is_jsonl(path) {
        let (mut party, members) = open_jsonl(path)?;
        for line in members {
            let line = line?;
            party.members.insert(line.id, line.member);
        }
        return Ok(party);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    if path.extension().is_some_and(|x| x == "toml") {
        toml::from_str(&text).map_err(|e| format!("`{}`: {e}", path.display()))
    } else {
        serde_json::from_str(&text).map_err(|e| format!("`{}`: {e}", path.display()))
    }
}

/// The directory of `party`'s principal side, for `engine`.
pub fn directory(engine: &Engine, party: &Membership) -> Result<Directory, String> {
    Directory::from_membership(engine, party).map_err(|e| format!("the membership data: {e}"))
}

/// The member `id` of `party`, or the error a CRM gives for a member it lacks.
pub fn member<'p>(party: &'p Membership, id: &str) -> Result<MemberRef<'p>, String> {
    party
        .member(id)
        .ok_or_else(|| format!("unknown member `{id}`"))
}

/// `text` with every line indented by `n` spaces.
pub fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Prints rows of cells in columns as wide as their widest cell.
pub fn print_table(table: &[Vec<String>]) {
    let columns = table.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            table
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (i, row) in table.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join(" | ").trim_end());
        if i == 0 {
            println!(
                "{}",
                widths
                    .iter()
                    .map(|w| "-".repeat(*w))
                    .collect::<Vec<_>>()
                    .join("-+-")
            );
        }
    }
}
