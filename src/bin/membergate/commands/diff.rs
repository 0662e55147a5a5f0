//! `membergate diff`: what the policies of NEW allow that those of OLD denied, and the
//! reverse, per request type, with an example each (symbolic compiler and cvc5).

use std::path::PathBuf;
use std::process::ExitCode;

use membergate::assurance::{Direction, Verifier};

use crate::common::{engine, indent, NO_VERDICT};

#[derive(clap::Args)]
pub struct Args {
    /// The old policy directory.
    old: PathBuf,
    /// The new policy directory.
    new: PathBuf,
}

/// Compares two policy directories; prints the changed policies and each difference.
pub fn exec(args: Args) -> Result<ExitCode, String> {
    // The solver is found and started (a Python process importing cvc5, ~0.2 s) while
    // the two directories load.
    let (old, new, verifier) = std::thread::scope(|s| {
        let verifier = s.spawn(Verifier::locate);
        let old = engine(&args.old);
        let new = engine(&args.new);
        let verifier = verifier
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        (old, new, verifier)
    });
    let (old, new) = (old?, new?);
    let result = verifier.and_then(|mut v| v.diff(&old, &new));
    let diff = match result {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(NO_VERDICT));
        }
    };
    let list = |ids: &[String]| {
        if ids.is_empty() {
            "none".to_string()
        } else {
            ids.join(", ")
        }
    };
    println!(
        "policies changed: {}; added: {}; removed: {}",
        list(&diff.changed),
        list(&diff.added),
        list(&diff.removed)
    );
    for direction in [Direction::Widened, Direction::Narrowed] {
        let found: Vec<_> = diff
            .differences
            .iter()
            .filter(|d| d.direction == direction)
            .collect();
        if found.is_empty() {
            println!("\n{direction}: nothing");
            continue;
        }
        println!("\n{direction}: {} request types", found.len());
        for d in found {
            println!("{}", indent(&d.to_string(), 2));
        }
    }
    if diff.equivalent() {
        println!("\nequivalent: every request is decided alike");
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}
