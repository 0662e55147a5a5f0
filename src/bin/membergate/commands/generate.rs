//! `membergate generate`: write the bundled sample membership (or one of another size or
//! seed) as JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use membergate::sample;

#[derive(clap::Args)]
pub struct Args {
    /// The file to write.
    #[arg(long)]
    out: PathBuf,
    /// The number of members.
    #[arg(long, default_value_t = sample::SampleConfig::default().members)]
    members: usize,
    /// The random seed.
    #[arg(long, default_value_t = sample::SampleConfig::default().seed)]
    seed: u64,
}

pub fn exec(Args { out, members, seed }: Args) -> Result<ExitCode, String> {
    let m = sample::generate(&sample::SampleConfig { seed, members });
    let json = serde_json::to_string_pretty(&m).map_err(|e| e.to_string())?;
    std::fs::write(&out, json).map_err(|e| format!("cannot write `{}`: {e}", out.display()))?;
    println!("wrote {} members to {}", m.members.len(), out.display());
    Ok(ExitCode::SUCCESS)
}
