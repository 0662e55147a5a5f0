//! `membergate review OLD NEW`: a policy change as the people who sign it off read it.
//! Who sees what, when, before and after (in plain text and, with `--out FILE`, as an
//! HTML page), then what changed for every possible request (`diff`'s differences, with
//! the solver if one runs), each with an example from the data where one goes its way.

use std::path::PathBuf;
use std::process::ExitCode;

use membergate::assurance::Verifier;
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
    // What the solver finds, each difference with an example from the data.
    let mut verifier = match Verifier::locate() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("note: {e}\nthe differences for every possible request are left out");
            return Ok(exit(matrix.changed().next().is_none()));
        }
    };
    let diff = match verifier.diff(&old, &new) {
        Ok(diff) => diff,
        Err(e) => {
            eprintln!("note: {e}\nthe differences for every possible request are left out");
            return Ok(exit(matrix.changed().next().is_none()));
        }
    };
    println!("\nwhat changed for every possible request (symbolic compiler and cvc5):");
    if diff.differences.is_empty() {
        println!("  nothing: every request is decided alike");
    }
    let examples = review::data_examples(&old, &new, &party, &diff.differences);
    for (d, example) in diff.differences.iter().zip(examples) {
        println!("* {}: {}", d.direction, d.request_type);
        for (name, values) in &d.refinements {
            println!("    {name}: {}", values.join(", "));
        }
        match example {
            Some(e) => println!("    for example, from the data: {e}"),
            None => {
                let readable = verifier
                    .plausible_difference(&old, &new, d)
                    .map_err(|e| e.to_string())?;
                let (d, said) = match &readable {
                    Some(p) => (p, "an example with plausible values"),
                    None => (
                        d,
                        "only at the edges of time or numbers; the solver's example",
                    ),
                };
                println!("    no request of the data goes this way; {said}:");
                for line in d.example.describe().lines() {
                    println!("      {line}");
                }
            }
        }
    }
    Ok(exit(matrix.changed().next().is_none() && diff.equivalent()))
}

/// 0 if nothing changed, 1 if something did.
fn exit(unchanged: bool) -> ExitCode {
    if unchanged {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
