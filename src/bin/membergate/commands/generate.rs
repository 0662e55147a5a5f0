//! `membergate generate`: write the bundled sample membership (or one of another size or
//! seed), as one JSON document or, for party-sized data, streamed as JSON lines.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use membergate::sample;

use crate::common::MemberLine;

#[derive(clap::Args)]
pub struct Args {
    /// The file to write: JSON, or JSON lines if it ends in `.jsonl` (the principal side on
    /// the first line, then one member per line, written as made: memory stays bounded).
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
    let config = sample::SampleConfig { seed, members };
    let cannot = |e: &dyn std::fmt::Display| format!("cannot write `{}`: {e}", out.display());
    if out.extension().is_some_and(|x| x == "jsonl") {
        // The principal side comes first in the file but is finished after the members
        // (call sessions draw from them): a first pass makes it, a second writes members.
        let principal_side = sample::generate_each(&config, |_, _, _| {});
        let file = std::fs::File::create(&out).map_err(|e| cannot(&e))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        serde_json::to_writer(&mut w, &principal_side).map_err(|e| cannot(&e))?;
        w.write_all(b"\n").map_err(|e| cannot(&e))?;
        let bar = progress(members);
        let mut written = 0usize;
        let mut failed = None;
        sample::generate_each(&config, |id, member, values| {
            if failed.is_some() {
                return;
            }
            let line = MemberLine {
                id: id.to_string(),
                member,
                values,
            };
            let res = serde_json::to_writer(&mut w, &line)
                .map_err(|e| e.to_string())
                .and_then(|()| w.write_all(b"\n").map_err(|e| e.to_string()));
            match res {
                Ok(()) => written += 1,
                Err(e) => failed = Some(e),
            }
            if written.is_multiple_of(10_000) {
                bar.set_position(written as u64);
            }
        });
        bar.finish_and_clear();
        if let Some(e) = failed {
            return Err(cannot(&e));
        }
        w.flush().map_err(|e| cannot(&e))?;
        println!(
            "wrote {written} members, one per line, to {}",
            out.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let m = sample::generate(&config);
    let json = serde_json::to_string_pretty(&m).map_err(|e| e.to_string())?;
    std::fs::write(&out, json).map_err(|e| cannot(&e))?;
    println!("wrote {} members to {}", m.members.len(), out.display());
    Ok(ExitCode::SUCCESS)
}

/// A progress bar on standard error for runs long enough to need one.
fn progress(members: usize) -> indicatif::ProgressBar {
    if members < 200_000 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(members as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} members ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style);
    }
    bar
}
