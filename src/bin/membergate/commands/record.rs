//! `membergate record`: the record of processing (UK GDPR Article 30) of the policies and
//! the data, in plain text and, with `--out FILE`, as an HTML page.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use membergate::processing::{ProcessingFacts, RecordOfProcessing};

use crate::common::{data, engine};

#[derive(clap::Args)]
pub struct Args {
    /// The membership data whose principals, elections and members the record plans for
    /// (JSON or TOML, as `membergate generate` writes it); the bundled sample if absent.
    #[arg(long)]
    data: Option<PathBuf>,
    /// The facts the policies cannot know; `<policies>/processing.toml` if absent.
    #[arg(long, value_name = "FILE")]
    facts: Option<PathBuf>,
    /// Also write the record as one self-contained HTML page (no script, no network).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Prints the record of processing; with `--out`, writes it as a page too.
pub fn exec(policies: &Path, args: Args) -> Result<ExitCode, String> {
    let engine = engine(policies)?;
    let party = data(args.data.as_deref())?;
    let facts = match &args.facts {
        Some(file) => ProcessingFacts::load_file(file),
        None => ProcessingFacts::load(policies),
    }
    .map_err(|e| format!("{e}\n\n{}", e.render()))?;
    let record = RecordOfProcessing::build(&engine, &party, &facts).map_err(|e| match e {
        membergate::processing::ProcessingError::Load(e) => format!("{e}\n\n{}", e.render()),
        e => e.to_string(),
    })?;
    if let Some(out) = &args.out {
        let title = format!("Record of processing: {}", facts.controller.name);
        std::fs::write(out, record.to_html(&title))
            .map_err(|e| format!("cannot write `{}`: {e}", out.display()))?;
    }
    println!("{}", record.to_string().trim_end());
    Ok(ExitCode::SUCCESS)
}
