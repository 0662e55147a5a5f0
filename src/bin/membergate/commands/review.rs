//! `membergate review OLD NEW`: a policy change as the people who sign it off read it.
//! Who sees what, when, before and after; what changed for every possible request, each
//! difference with an example a person can read; each version's invariants and tests.
//! Plain text on the terminal and, with `--out FILE`, one self-contained HTML page.

use std::path::PathBuf;
use std::process::ExitCode;

use membergate::assurance::Verifier;
use membergate::review;

use crate::common::data;

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

/// Prints the review; exit 0 if the change altered nothing, 1 if it did. Without a
/// solver, the sections that need one say so and the rest is reviewed.
pub fn exec(args: Args) -> Result<ExitCode, String> {
    let party = data(args.data.as_deref())?;
    let mut verifier = match Verifier::locate() {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!(
                "note: {e}\nthe differences for every request and the invariants are left out"
            );
            None
        }
    };
    let review = review::review(&args.old, &args.new, &party, verifier.as_mut())
        .map_err(|e| e.to_string())?;
    if let Some(out) = &args.out {
        let title = format!("Review: {} -> {}", args.old.display(), args.new.display());
        std::fs::write(out, review.to_html(&title))
            .map_err(|e| format!("cannot write `{}`: {e}", out.display()))?;
    }
    println!("{}", review.to_string().trim_end());
    Ok(if review.unchanged() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
