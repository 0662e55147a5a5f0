//! `membergate verify`: prove the invariants of `<policies>/invariants.toml` (and, with
//! `--baseline`, that nothing newly allowed) with Cedar's symbolic compiler and cvc5.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use membergate::assurance::{Invariants, Verdict, Verifier};

use crate::common::{engine, indent, NO_VERDICT};

#[derive(clap::Args)]
pub struct Args {
    /// Also prove that the policies allow nothing that the policies of this older
    /// directory denied (for a reviewed change).
    #[arg(long)]
    baseline: Option<PathBuf>,
}

/// Proves the invariants; prints each verdict with its counterexample.
pub fn exec(dir: &Path, args: Args) -> Result<ExitCode, String> {
    let baseline = args.baseline.as_deref();
    let engine = engine(dir)?;
    let invariants =
        Invariants::load(dir, engine.schema()).map_err(|e| format!("{e}\n\n{}", e.render()))?;
    let old = baseline
        .map(|dir| crate::common::engine(dir).map(|e| (dir, e)))
        .transpose()?;
    let mut verifier = match Verifier::locate() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(NO_VERDICT));
        }
    };
    println!(
        "verifying {} invariants of {} with {}",
        invariants.len(),
        invariants.file().display(),
        verifier.solver()
    );
    let started = Instant::now();
    let results = match verifier.verify(engine.schema(), engine.policies(), &invariants) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(NO_VERDICT));
        }
    };
    let mut refuted = 0;
    for r in &results {
        let inv = &r.invariant;
        let rule = inv
            .rule
            .as_deref()
            .map_or(String::new(), |r| format!(" (rule {r})"));
        match &r.verdict {
            Verdict::Proved => println!("proved   {}{rule}: {}", inv.id, inv.says),
            Verdict::Refuted(example) => {
                refuted += 1;
                println!("REFUTED  {}{rule}: {}", inv.id, inv.says);
                println!(
                    "  {}:{}: {}\n{}",
                    invariants.file().display(),
                    inv.line,
                    inv.claim,
                    indent(inv.condition.trim(), 4)
                );
                println!("  counterexample:\n{}", indent(&example.to_string(), 4));
            }
        }
    }
    let mut total = results.len();
    if let Some((old_dir, old)) = &old {
        total += 1;
        let what = format!("allows nothing that {} denied", old_dir.display());
        match verifier.find_widening(engine.schema(), old.policies(), engine.policies()) {
            Ok(None) => println!("proved   baseline: {what}"),
            Ok(Some(example)) => {
                refuted += 1;
                println!("REFUTED  baseline: {what}");
                println!(
                    "  counterexample (allowed now, denied by the baseline):\n{}",
                    indent(&example.to_string(), 4)
                );
            }
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(NO_VERDICT));
            }
        }
    }
    let request_types = results.iter().map(|r| r.request_types).max().unwrap_or(0);
    println!(
        "{total} invariants: {} proved, {refuted} refuted, over {request_types} request types, in {:.1} s",
        total - refuted,
        started.elapsed().as_secs_f64()
    );
    Ok(if refuted == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
