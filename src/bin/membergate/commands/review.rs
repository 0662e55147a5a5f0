//! `membergate review OLD NEW`: a policy change as the people who sign it off read it.
//! For now its first part, in plain text and, with `--out FILE`, as an HTML page: who
//! sees what, when, before and after.

use std::path::PathBuf;
use std::process::ExitCode;

use membergate::review;

use crate::common::{data, engine};

#[derive(clap::Args)]
pub struct Args {
    /// The old policy directory.
    old: PathBuf,
    /// The new policy directory.
    new: PathBuf,
    /// The membership data whose principals, elections and members the review takes
    /// (JSON, as `membergate generate` writes it); the bundled sample if absent.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Also write the review as one self-contained HTML page (no script, no network).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Prints what each kind of principal may read, class by class, across the phases of
/// the data's elections, under OLD and NEW, and explains each cell the change altered.
/// Exit 0 if no cell changed, 1 if some did.
pub fn exec(args: Args) -> Result<ExitCode, String> {
    let old = engine(&args.old)?;
    let new = engine(&args.new)?;
    let party = data(args.data.as_deref())?;
    let matrix = review::who_sees_what(&old, &new, &party).map_err(|e| e.to_string())?;
    if let Some(out) = &args.out {
        let title = format!("Review: {} -> {}", args.old.display(), args.new.display());
        std::fs::write(out, matrix.to_html(&title))
            .map_err(|e| format!("cannot write `{}`: {e}", out.display()))?;
    }
    println!("{}", matrix.to_string().trim_end());
    Ok(if matrix.changed().next().is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
