//! `membergate conformance`: run Cedar's conformance tests and compare an engine's
//! decisions with Cedar's expected ones.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use cedar_compiled::conformance::{self, KnownDisagreements, Reference};

#[derive(clap::Args)]
pub struct Args {
    /// The corpus root: the folder holding `corpus-tests/` (the unpacked corpus)
    /// and/or `tests/` (the hand-written tests).
    root: PathBuf,
    /// The engine to check.
    #[arg(long, value_enum, default_value_t = ConformanceEngine::Reference)]
    engine: ConformanceEngine,
    /// Tests where the reference itself disagrees with the expected output
    /// (default: `crates/cedar-compiled/tests/conformance-known.txt` if it exists).
    #[arg(long)]
    known: Option<PathBuf>,
}

/// The engines `membergate conformance` can check.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ConformanceEngine {
    /// `cedar_policy::Authorizer`.
    Reference,
    /// The compiled evaluator (`cedar_compiled`).
    Compiled,
}

/// Runs the conformance tests under `root`; prints each mismatch, then the counts.
pub fn exec(args: Args) -> Result<ExitCode, String> {
    let (root, engine, known) = (args.root.as_path(), args.engine, args.known.as_deref());
    let default_known = Path::new("crates/cedar-compiled/tests/conformance-known.txt");
    let known = match known {
        Some(path) => KnownDisagreements::load(path).map_err(|e| e.to_string())?,
        None if default_known.is_file() => {
            KnownDisagreements::load(default_known).map_err(|e| e.to_string())?
        }
        None => KnownDisagreements::none(),
    };
    let reference = Reference::new();
    let compiled = cedar_compiled::CompiledDecider::new();
    let decider: &dyn conformance::Decider = match engine {
        ConformanceEngine::Reference => &reference,
        ConformanceEngine::Compiled => &compiled,
    };
    let start = Instant::now();
    let summary = conformance::run_all(root, decider, &known);
    let elapsed = start.elapsed();
    for report in &summary.failures {
        println!(
            "FAIL {}: {} of {} requests failed",
            report.file.display(),
            report.failed_requests(),
            report.requests
        );
        for m in &report.mismatches {
            println!("  {}", m.to_string().replace('\n', "\n  "));
        }
    }
    for k in &summary.known {
        if k.reference.passed() {
            println!(
                "known, stale (the reference now agrees: remove it from the list) {}: {}",
                k.reference.file.display(),
                k.reason
            );
        } else {
            // One line each: the reasons are in the list; `differs` says where.
            let mut differs = Vec::new();
            if k.validation_differs() {
                differs.push("shouldValidate".to_string());
            }
            if k.reference.failed_requests() > 0 {
                differs.push(format!("{} requests", k.reference.failed_requests()));
            }
            println!(
                "known {} (the reference differs on {}): {}",
                k.reference.file.display(),
                differs.join(" and "),
                k.reason
            );
        }
    }
    for p in &summary.unmatched_known {
        println!(
            "note: the known disagreement `{p}` names no test under {}",
            root.display()
        );
    }
    for e in &summary.errors {
        println!("ERROR {e}");
    }
    println!(
        "{} files, {} requests, engine {}, {:.2} s; {} known disagreement{} (the reference differs from the file on shouldValidate in {} and on {} request{}); {} unreadable file{}; {} shouldValidate mismatch{}",
        summary.files,
        summary.requests,
        summary.decider,
        elapsed.as_secs_f64(),
        summary.known.len(),
        if summary.known.len() == 1 { "" } else { "s" },
        summary.known_validation(),
        summary.known_requests(),
        if summary.known_requests() == 1 { "" } else { "s" },
        summary.errors.len(),
        if summary.errors.len() == 1 { "" } else { "s" },
        summary.validation_failures(),
        if summary.validation_failures() == 1 {
            ""
        } else {
            "es"
        },
    );
    if let ConformanceEngine::Compiled = engine {
        println!(
            "compiled: {} policies, {} fell back to Cedar; {} refused to the reference",
            compiled.policies(),
            compiled.fallbacks(),
            compiled.refused()
        );
    }
    println!("{} passed, {} failed", summary.passed, summary.failed);
    Ok(if summary.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
