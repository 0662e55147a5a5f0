//! `membergate test`: run the policy test suites under `<policies>/tests/`, and with
//! `--coverage` list each policy's count of determining cases.

use std::path::Path;
use std::process::ExitCode;

use membergate::testing::{Coverage, TestPlan};
use membergate::Engine;

use crate::common::{engine, print_table};

#[derive(clap::Args)]
pub struct Args {
    /// Then list each policy with the number of cases it was determining in; fail if
    /// any policy is determining in none.
    #[arg(long)]
    coverage: bool,
}

pub fn exec(dir: &Path, args: Args) -> Result<ExitCode, String> {
    let engine = engine(dir)?;
    let plan = TestPlan::load(dir).map_err(|e| format!("{e}\n\n{}", e.render()))?;
    let (mut passed, mut failed) = (0, 0);
    let mut coverage = Coverage::new(&engine);
    for (suite, case) in plan.cases() {
        let report = plan.run(&engine, suite, case);
        coverage.record(&report);
        match report.failure {
            None => {
                passed += 1;
                println!("ok    {}::{}", suite.name(), case.name);
            }
            Some(why) => {
                failed += 1;
                println!("FAIL  {}::{}\n      {why}", suite.name(), case.name);
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if args.coverage && !print_coverage(dir, &engine, &coverage) {
        let uncovered = coverage.uncovered();
        eprintln!(
            "error: incomplete coverage: {} of {} policies determining in no case: {}",
            uncovered.len(),
            coverage.len(),
            uncovered.join(", ")
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints the coverage table, the count and the uncovered policies; whether every policy
/// is covered.
fn print_coverage(dir: &Path, engine: &Engine, coverage: &Coverage) -> bool {
    let place = |id: &str| {
        engine.policy_source(id).map_or_else(String::new, |s| {
            let file = s.file.strip_prefix(dir).unwrap_or(&s.file);
            format!("{}:{}", file.display(), s.line)
        })
    };
    let mut table = vec![vec!["policy".to_string(), "file".into(), "cases".into()]];
    table.extend(
        coverage
            .iter()
            .map(|(id, n)| vec![id.to_string(), place(id), n.to_string()]),
    );
    println!();
    print_table(&table);
    println!(
        "coverage: {} of {} policies determining in at least one case",
        coverage.covered(),
        coverage.len()
    );
    let uncovered = coverage.uncovered();
    for id in &uncovered {
        println!("uncovered: {id} ({})", place(id));
    }
    uncovered.is_empty()
}
