//! `membergate`: check, test and query the membership access policies.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

/// `println!` that ends the process when standard output is closed
/// (`membergate audit query log | head`) instead of panicking as the standard one does:
/// exit code 141, as a process killed by `SIGPIPE`; another write error exits with 1.
/// Defined before the modules so that every subcommand's `println!` is this one.
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::stdout_failed(&e)
        }
    }};
}

mod commands;
mod common;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::{
    audit, check, conformance, demo, diff, explain, fields, generate, plan, record, review, test,
    verify,
};

fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    eprintln!("error: cannot write to standard output: {e}");
    std::process::exit(1)
}

/// Who may see which fields of the party's membership data, and when.
#[derive(Parser)]
#[command(name = "membergate", version, about)]
struct Cli {
    /// The policy directory (schema, `.cedar` files, `fields.toml`, `tests/`).
    #[arg(long, global = true, default_value = "policies")]
    policies: PathBuf,
    #[command(subcommand)]
    command: Command,
}

/// The subcommands; each one's arguments and work are in its file under `commands/`.
#[derive(Subcommand)]
enum Command {
    /// Validate the policy directory strictly against its schema.
    Check(check::Args),
    /// Run the policy test suites under `<policies>/tests/`.
    Test(test::Args),
    /// The fields a principal may see or use on a member, with the deciding policies.
    Fields(fields::Args),
    /// Explain one decision: which policies applied and why.
    Explain(explain::Args),
    /// The members each field is allowed on for a principal, an action and a time, as
    /// conditions on the members' attributes; with `--sql`, an example listing query.
    Plan(plan::Args),
    /// The main job on the bundled data: what each kind of principal can see across the
    /// 2020 leadership election's phases, then the decisions per second reached.
    Demo(demo::Args),
    /// Write the bundled sample membership (or one of another size) as JSON.
    Generate(generate::Args),
    /// Run Cedar's conformance tests and compare an engine's decisions with Cedar's.
    Conformance(conformance::Args),
    /// Prove the invariants of `<policies>/invariants.toml` for every possible request
    /// and entity store, with Cedar's symbolic compiler and cvc5. Exit 1 if one is
    /// refuted, 2 if no solver can be run.
    Verify(verify::Args),
    /// What the policies of NEW allow that those of OLD denied, and the reverse, per
    /// request type, with an example each (symbolic compiler and cvc5). Exit 0 if they
    /// decide every request alike, 1 if they differ, 2 if no solver can be run.
    Diff(diff::Args),
    /// A policy change as the people who sign it off read it: what each kind of
    /// principal may read, class of field by class, across the phases of the data's
    /// elections, before and after, each change explained by a member and the policies
    /// that decided. Exit 0 if nothing changed, 1 if something did.
    Review(review::Args),
    /// The record of processing (UK GDPR Article 30): purposes, data subjects, the
    /// categories of data, who receives which fields (planned from the policies), what
    /// is kept after retention and the safeguards in force, with the facts of
    /// `<policies>/processing.toml`.
    Record(record::Args),
    /// The decision log: check a log's hash chain, or find the records that match.
    Audit(audit::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    let policies = cli.policies.as_path();
    match cli.command {
        Command::Check(args) => check::exec(policies, args),
        Command::Test(args) => test::exec(policies, args),
        Command::Fields(args) => fields::exec(policies, args),
        Command::Explain(args) => explain::exec(policies, args),
        Command::Plan(args) => plan::exec(policies, args),
        Command::Demo(args) => demo::exec(policies, args),
        Command::Generate(args) => generate::exec(args),
        Command::Conformance(args) => conformance::exec(args),
        Command::Verify(args) => verify::exec(policies, args),
        Command::Diff(args) => diff::exec(args),
        Command::Review(args) => review::exec(args),
        Command::Record(args) => record::exec(policies, args),
        Command::Audit(args) => audit::exec(policies, args),
    }
}
