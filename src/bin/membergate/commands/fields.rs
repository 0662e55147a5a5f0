//! `membergate fields`: the fields a principal may see or use on a member, with the
//! deciding policies, as a table or JSON.

use std::path::Path;
use std::process::ExitCode;

use membergate::MemberRequest;

use crate::common::{data, directory, engine, member, Ask};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    ask: Ask,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn exec(policies: &Path, Args { ask, json }: Args) -> Result<ExitCode, String> {
    let engine = engine(policies)?;
    let party = data(ask.asking.data.as_deref())?;
    let dir = directory(&engine, &party)?;
    let ctx = ask.asking.context();
    let req = MemberRequest {
        principal: &ask.asking.principal,
        action: ask.asking.action,
        member: member(&party, &ask.member)?,
        context: &ctx,
    };
    let set = engine
        .permitted_fields(&dir, &req)
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for (_, info) in engine.catalogue().iter() {
        let d = engine
            .authorize(&dir, &req.field(&info.name))
            .map_err(|e| e.to_string())?;
        rows.push((info, d));
    }
    if json {
        let out = serde_json::json!({
            "principal": ask.asking.principal.to_string(),
            "member": ask.member,
            "action": ask.asking.action.as_str(),
            "at": ask.asking.at.to_string(),
            "permitted": engine.catalogue().names(set),
            "fields": rows.iter().map(|(info, d)| serde_json::json!({
                "field": info.name,
                "class": info.class,
                "decision": d.effect().to_string(),
                "policies": d.policies(),
                "flags": d.flags(),
                "errors": d.errors().iter().map(|e| serde_json::json!({"policy": e.policy, "message": e.message})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
        );
    } else {
        println!(
            "{} {} member {} at {}: {} of {} fields permitted",
            ask.asking.principal,
            ask.asking.action,
            ask.member,
            ask.asking.at,
            set.len(),
            engine.catalogue().len()
        );
        for (info, d) in &rows {
            let why = if d.policies().is_empty() {
                "no permit held (default deny)".to_string()
            } else {
                d.policies().join(", ")
            };
            println!(
                "  {:<6} {:<18} {:<17} {why}",
                d.effect().to_string(),
                info.name,
                info.class
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
