//! `membergate check`: validate the policy directory strictly against its schema, and say
//! how much of it the compiled evaluator covers.

use std::path::Path;
use std::process::ExitCode;

use crate::common::engine;

// `check` takes no options of its own.
#[derive(clap::Args)]
pub struct Args {}

pub fn exec(policies: &Path, _args: Args) -> Result<ExitCode, String> {
    let engine = engine(policies)?;
    println!(
        "{}: ok: {} policies validate strictly against the schema; {} fields in the catalogue",
        policies.display(),
        engine.policy_ids().count(),
        engine.catalogue().len()
    );
    let c = engine.compiled();
    println!(
        "compiled: {} of {} policies; {} fall back to the reference evaluator",
        c.len() - c.fallbacks().len(),
        c.len(),
        c.fallbacks().len()
    );
    for f in c.fallbacks() {
        println!("  fallback `{}`: {}", f.id, f.reason);
    }
    Ok(ExitCode::SUCCESS)
}
