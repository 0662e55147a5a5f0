//! `membergate explain`: explain one decision, which policies applied and why.

use std::path::Path;
use std::process::ExitCode;

use membergate::Request;

use crate::common::{data, engine, Ask};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    ask: Ask,
    /// The member field asked about.
    #[arg(long)]
    field: String,
}

pub fn exec(policies: &Path, Args { ask, field }: Args) -> Result<ExitCode, String> {
    let engine = engine(policies)?;
    let dir = data(ask.data.as_deref())?;
    let req = Request::new(
        ask.principal.clone(),
        ask.action,
        &ask.member,
        field,
        ask.context(),
    );
    let why = engine.explain(&dir, &req).map_err(|e| e.to_string())?;
    println!("{why}");
    Ok(ExitCode::SUCCESS)
}
