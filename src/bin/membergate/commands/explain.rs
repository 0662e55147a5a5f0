//! `membergate explain`: explain one decision, which policies applied and why.

use std::path::Path;
use std::process::ExitCode;

use membergate::Request;

use crate::common::{data, directory, engine, member, Ask};

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
    let party = data(ask.asking.data.as_deref())?;
    let dir = directory(&engine, &party)?;
    let ctx = ask.asking.context();
    let req = Request {
        principal: &ask.asking.principal,
        action: ask.asking.action,
        member: member(&party, &ask.member)?,
        field: &field,
        context: &ctx,
    };
    let why = engine.explain(&dir, &req).map_err(|e| e.to_string())?;
    println!("{why}");
    Ok(ExitCode::SUCCESS)
}
