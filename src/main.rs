//! `membergate`: check, test and query the membership access policies.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

/// `println!` that ends the process when standard output is closed
/// (`membergate audit query log | head`) instead of panicking as the standard one does:
/// exit code 141, as a process killed by `SIGPIPE`; another write error exits with 1.
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            stdout_failed(&e)
        }
    }};
}

fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    eprintln!("error: cannot write to standard output: {e}");
    std::process::exit(1)
}

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use jiff::Timestamp;
use membergate::sample::{self, ids};
use membergate::testing::{Coverage, TestPlan};
use membergate::{
    Action, Context, Engine, FieldSet, Membership, PrincipalId, PrincipalKind, Request,
};

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

#[derive(Subcommand)]
enum Command {
    /// Validate the policy directory strictly against its schema.
    Check,
    /// Run the policy test suites under `<policies>/tests/`.
    Test {
        /// Then list each policy with the number of cases it was determining in; fail if
        /// any policy is determining in none.
        #[arg(long)]
        coverage: bool,
    },
    /// The fields a principal may see or use on a member, with the deciding policies.
    Fields {
        #[command(flatten)]
        ask: Ask,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Explain one decision: which policies applied and why.
    Explain {
        #[command(flatten)]
        ask: Ask,
        /// The member field asked about.
        #[arg(long)]
        field: String,
    },
    /// The main job on the bundled data: what each kind of principal can see across the
    /// 2020 leadership election's phases, then the decisions per second reached.
    Demo {
        /// Membership data (JSON or TOML) instead of the bundled sample.
        #[arg(long)]
        data: Option<PathBuf>,
        /// How long to measure throughput, in seconds.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
    /// Write the bundled sample membership (or one of another size) as JSON.
    Generate {
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
        /// The number of members.
        #[arg(long, default_value_t = sample::SampleConfig::default().members)]
        members: usize,
        /// The random seed.
        #[arg(long, default_value_t = sample::SampleConfig::default().seed)]
        seed: u64,
    },
    /// Run Cedar's conformance tests and compare an engine's decisions with Cedar's.
    Conformance {
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
    },
    /// Prove the invariants of `<policies>/invariants.toml` for every possible request
    /// and entity store, with Cedar's symbolic compiler and cvc5. Exit 1 if one is
    /// refuted, 2 if no solver can be run.
    Verify {
        /// Also prove that the policies allow nothing that the policies of this older
        /// directory denied (for a reviewed change).
        #[arg(long)]
        baseline: Option<PathBuf>,
    },
    /// What the policies of NEW allow that those of OLD denied, and the reverse, per
    /// request type, with an example each (symbolic compiler and cvc5). Exit 0 if they
    /// decide every request alike, 1 if they differ, 2 if no solver can be run.
    Diff {
        /// The old policy directory.
        old: PathBuf,
        /// The new policy directory.
        new: PathBuf,
    },
    /// The decision log: check a log's hash chain, or find the records that match.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

/// The engines `membergate conformance` can check.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ConformanceEngine {
    /// `cedar_policy::Authorizer`.
    Reference,
    /// The compiled evaluator (`cedar_compiled`).
    Compiled,
}

/// One request's principal, member, action and context.
#[derive(Args)]
struct Ask {
    /// The principal, as a Cedar uid: `CampaignStaff::"cs-a-staff"`.
    #[arg(long)]
    principal: PrincipalId,
    /// The member id.
    #[arg(long)]
    member: String,
    /// read, export, update, erase, bulk_export, contact_phone, contact_email, contact_post.
    #[arg(long, default_value = "read")]
    action: Action,
    /// The time of the request (RFC 3339).
    #[arg(long)]
    at: Timestamp,
    /// The election the access is for.
    #[arg(long)]
    election: Option<String>,
    /// The call session a volunteer works in.
    #[arg(long)]
    session: Option<String>,
    /// The stated purpose.
    #[arg(long)]
    purpose: Option<String>,
    /// A break-glass reason.
    #[arg(long)]
    reason: Option<String>,
    /// Member reads the principal made in the past hour.
    #[arg(long, default_value_t = 0)]
    reads_this_hour: u64,
    /// Membership data (JSON or TOML) instead of the bundled sample.
    #[arg(long)]
    data: Option<PathBuf>,
}

impl Ask {
    fn context(&self) -> Context {
        Context {
            now: self.at,
            reads_this_hour: self.reads_this_hour,
            election: self.election.clone(),
            session: self.session.clone(),
            purpose: self.purpose.clone(),
            reason: self.reason.clone(),
        }
    }
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

fn engine(dir: &Path) -> Result<Engine, String> {
    Engine::from_dir(dir).map_err(|e| format!("{e}\n\n{}", e.render()))
}

fn data(path: Option<&Path>) -> Result<Membership, String> {
    let Some(path) = path else {
        return Ok(sample::bundled());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    if path.extension().is_some_and(|x| x == "toml") {
        toml::from_str(&text).map_err(|e| format!("`{}`: {e}", path.display()))
    } else {
        serde_json::from_str(&text).map_err(|e| format!("`{}`: {e}", path.display()))
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Check => {
            let engine = engine(&cli.policies)?;
            println!(
                "{}: ok: {} policies validate strictly against the schema; {} fields in the catalogue",
                cli.policies.display(),
                engine.policy_ids().count(),
                engine.catalogue().len()
            );
            match engine.compiled() {
                Some(c) => {
                    println!(
                        "compiled: {} of {} policies; {} fall back to the reference evaluator",
                        c.len() - c.fallbacks().len(),
                        c.len(),
                        c.fallbacks().len()
                    );
                    for f in c.fallbacks() {
                        println!("  fallback `{}`: {}", f.id, f.reason);
                    }
                }
                None => println!(
                    "compiled: none (the policy set cannot be compiled); every request takes the reference path"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { coverage } => test(&cli.policies, coverage),
        Command::Fields { ask, json } => fields(&cli.policies, &ask, json),
        Command::Explain { ask, field } => {
            let engine = engine(&cli.policies)?;
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
        Command::Demo {
            data: path,
            seconds,
        } => demo(&cli.policies, path.as_deref(), seconds),
        Command::Generate { out, members, seed } => {
            let m = sample::generate(&sample::SampleConfig { seed, members });
            let json = serde_json::to_string_pretty(&m).map_err(|e| e.to_string())?;
            std::fs::write(&out, json)
                .map_err(|e| format!("cannot write `{}`: {e}", out.display()))?;
            println!("wrote {} members to {}", m.members.len(), out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Conformance {
            root,
            engine,
            known,
        } => conformance(&root, engine, known.as_deref()),
        Command::Verify { baseline } => verify(&cli.policies, baseline.as_deref()),
        Command::Diff { old, new } => diff(&old, &new),
        Command::Audit { command } => audit(&cli.policies, command),
    }
}

/// The exit code when verification cannot run (no solver, or the solver failed).
const NO_VERDICT: u8 = 2;

/// Proves the invariants; prints each verdict with its counterexample.
fn verify(dir: &Path, baseline: Option<&Path>) -> Result<ExitCode, String> {
    use membergate::assurance::{Invariants, Verdict, Verifier};
    let engine = engine(dir)?;
    let invariants =
        Invariants::load(dir, engine.schema()).map_err(|e| format!("{e}\n\n{}", e.render()))?;
    let old = baseline
        .map(|dir| self::engine(dir).map(|e| (dir, e)))
        .transpose()?;
    let mut verifier = match Verifier::locate() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(NO_VERDICT));
        }
    };
    println!(
        "verifying {} invariants of {} with {}",
        invariants.len(),
        invariants.file().display(),
        verifier.solver()
    );
    let started = Instant::now();
    let results = match verifier.verify(engine.schema(), engine.policies(), &invariants) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(NO_VERDICT));
        }
    };
    let mut refuted = 0;
    for r in &results {
        let inv = &r.invariant;
        let rule = inv
            .rule
            .as_deref()
            .map_or(String::new(), |r| format!(" (rule {r})"));
        match &r.verdict {
            Verdict::Proved => println!("proved   {}{rule}: {}", inv.id, inv.says),
            Verdict::Refuted(example) => {
                refuted += 1;
                println!("REFUTED  {}{rule}: {}", inv.id, inv.says);
                println!(
                    "  {}:{}: {}\n{}",
                    invariants.file().display(),
                    inv.line,
                    inv.claim,
                    indent(inv.condition.trim(), 4)
                );
                println!("  counterexample:\n{}", indent(&example.to_string(), 4));
            }
        }
    }
    let mut total = results.len();
    if let Some((old_dir, old)) = &old {
        total += 1;
        let what = format!("allows nothing that {} denied", old_dir.display());
        match verifier.find_widening(engine.schema(), old.policies(), engine.policies()) {
            Ok(None) => println!("proved   baseline: {what}"),
            Ok(Some(example)) => {
                refuted += 1;
                println!("REFUTED  baseline: {what}");
                println!(
                    "  counterexample (allowed now, denied by the baseline):\n{}",
                    indent(&example.to_string(), 4)
                );
            }
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(NO_VERDICT));
            }
        }
    }
    let request_types = results.iter().map(|r| r.request_types).max().unwrap_or(0);
    println!(
        "{total} invariants: {} proved, {refuted} refuted, over {request_types} request types, in {:.1} s",
        total - refuted,
        started.elapsed().as_secs_f64()
    );
    Ok(if refuted == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Compares two policy directories; prints the changed policies and each difference.
fn diff(old_dir: &Path, new_dir: &Path) -> Result<ExitCode, String> {
    use membergate::assurance::{Direction, Verifier};
    let old = engine(old_dir)?;
    let new = engine(new_dir)?;
    let result = Verifier::locate().and_then(|mut v| v.diff(&old, &new));
    let diff = match result {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(NO_VERDICT));
        }
    };
    let list = |ids: &[String]| {
        if ids.is_empty() {
            "none".to_string()
        } else {
            ids.join(", ")
        }
    };
    println!(
        "policies changed: {}; added: {}; removed: {}",
        list(&diff.changed),
        list(&diff.added),
        list(&diff.removed)
    );
    for direction in [Direction::Widened, Direction::Narrowed] {
        let found: Vec<_> = diff
            .differences
            .iter()
            .filter(|d| d.direction == direction)
            .collect();
        if found.is_empty() {
            println!("\n{direction}: nothing");
            continue;
        }
        println!("\n{direction}: {} request types", found.len());
        for d in found {
            println!("{}", indent(&d.to_string(), 2));
        }
    }
    if diff.equivalent() {
        println!("\nequivalent: every request is decided alike");
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

/// `text` with every line indented by `n` spaces.
fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn test(dir: &Path, with_coverage: bool) -> Result<ExitCode, String> {
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
    if with_coverage && !print_coverage(dir, &engine, &coverage) {
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

/// Runs the conformance tests under `root`; prints each mismatch, then the counts.
fn conformance(
    root: &Path,
    engine: ConformanceEngine,
    known: Option<&Path>,
) -> Result<ExitCode, String> {
    use cedar_compiled::conformance::{self, KnownDisagreements, Reference};
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

fn fields(dir: &Path, ask: &Ask, json: bool) -> Result<ExitCode, String> {
    let engine = engine(dir)?;
    let party = data(ask.data.as_deref())?;
    let ctx = ask.context();
    let set = engine
        .permitted_fields(&party, &ask.principal, ask.action, &ask.member, &ctx)
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for (_, info) in engine.catalogue().iter() {
        let req = Request::new(
            ask.principal.clone(),
            ask.action,
            &ask.member,
            &info.name,
            ctx.clone(),
        );
        let d = engine.authorize(&party, &req).map_err(|e| e.to_string())?;
        rows.push((info, d));
    }
    if json {
        let out = serde_json::json!({
            "principal": ask.principal.to_string(),
            "member": ask.member,
            "action": ask.action.as_str(),
            "at": ask.at.to_string(),
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
            ask.principal,
            ask.action,
            ask.member,
            ask.at,
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

/// A row of the demo table: a kind of principal asking about a member.
struct Row {
    label: &'static str,
    principal: PrincipalId,
    member: &'static str,
    context: fn(Context) -> Context,
}

fn demo(dir: &Path, path: Option<&Path>, seconds: f64) -> Result<ExitCode, String> {
    let engine = engine(dir)?;
    let party = data(path)?;
    // The same party, had candidate A not paid the fee.
    let mut unpaid = party.clone();
    if let Some(c) = unpaid.candidates.get_mut(ids::CAND_A) {
        c.fee_paid = false;
    }
    let t = |s: &str| s.parse::<Timestamp>().map_err(|e| e.to_string());
    let phases = [
        ("before close", t("2020-02-13T18:00:00Z")?, &party),
        ("after close, paid", t("2020-02-20T18:00:00Z")?, &party),
        ("after close, unpaid", t("2020-02-20T18:00:00Z")?, &unpaid),
        ("after ballot", t("2020-04-03T18:00:00Z")?, &party),
    ];
    let p = PrincipalId::new;
    let rows = [
        Row {
            label: "campaign A staff",
            principal: p(PrincipalKind::CampaignStaff, ids::CS_A_STAFF),
            member: ids::MEMBER_ELIGIBLE,
            context: |c| c.election(ids::LEADER_2020),
        },
        Row {
            label: "2016 campaign staff",
            principal: p(PrincipalKind::CampaignStaff, ids::CS_2016_STAFF),
            member: ids::MEMBER_ELIGIBLE,
            context: |c| c.election(ids::LEADER_2020),
        },
        Row {
            label: "phone-bank volunteer",
            principal: p(PrincipalKind::Volunteer, ids::V_PHONEBANK),
            member: ids::MEMBER_ELIGIBLE,
            context: |c| c.session(ids::SESSION_A),
        },
        Row {
            label: "volunteer with a link only",
            principal: p(PrincipalKind::Volunteer, ids::V_LINKHOLDER),
            member: ids::MEMBER_ELIGIBLE,
            context: |c| c.session(ids::SESSION_A),
        },
        Row {
            label: "CLP secretary, own CLP",
            principal: p(PrincipalKind::Officer, ids::O_SECRETARY_001),
            member: ids::MEMBER_ELIGIBLE,
            context: |c| c,
        },
        Row {
            label: "CLP secretary, other CLP",
            principal: p(PrincipalKind::Officer, ids::O_SECRETARY_002),
            member: ids::MEMBER_ELIGIBLE,
            context: |c| c,
        },
        Row {
            label: "MP",
            principal: p(PrincipalKind::Representative, ids::MP_001),
            member: ids::MEMBER_ELIGIBLE,
            context: |c| c,
        },
        Row {
            label: "MP who resigned (2019)",
            principal: p(PrincipalKind::Representative, ids::MP_RESIGNED),
            member: ids::MEMBER_OTHER_CLP,
            context: |c| c,
        },
        Row {
            label: "regional office (London)",
            principal: p(PrincipalKind::Staff, ids::S_REGIONAL_LONDON),
            member: ids::MEMBER_ELIGIBLE,
            context: |c| c,
        },
        Row {
            label: "membership team",
            principal: p(PrincipalKind::Staff, ids::S_MEMBERSHIP),
            member: ids::MEMBER_ELIGIBLE,
            context: |c| c,
        },
        Row {
            label: "membership team, purpose",
            principal: p(PrincipalKind::Staff, ids::S_MEMBERSHIP),
            member: ids::MEMBER_ELIGIBLE,
            context: |c| c.purpose("equality_monitoring"),
        },
        Row {
            label: "DPO, break-glass",
            principal: p(PrincipalKind::Staff, ids::S_DPO),
            member: ids::MEMBER_ELIGIBLE,
            context: |c| c.reason("complaint 2020/17"),
        },
        Row {
            label: "mailing processor",
            principal: p(PrincipalKind::Processor, ids::P_MAILING),
            member: ids::MEMBER_ELIGIBLE,
            context: |c| c,
        },
        Row {
            label: "membership team, left 2009",
            principal: p(PrincipalKind::Staff, ids::S_MEMBERSHIP),
            member: ids::MEMBER_LEFT_2009,
            context: |c| c,
        },
    ];
    println!(
        "What each principal may read of a member record, across the 2020 leadership election"
    );
    println!(
        "(nominations close 2020-02-14 14:00, ballot closes 2020-04-02 12:00; \"unpaid\": had candidate A not paid the fee; policies from {})\n",
        dir.display()
    );
    let mut table = vec![std::iter::once("principal".to_string())
        .chain(phases.iter().map(|(name, _, _)| (*name).to_string()))
        .collect::<Vec<_>>()];
    for row in &rows {
        let mut cells = vec![row.label.to_string()];
        for (_, at, party) in &phases {
            let ctx = (row.context)(Context::at(*at));
            cells.push(
                match engine.permitted_fields(
                    *party,
                    &row.principal,
                    Action::Read,
                    row.member,
                    &ctx,
                ) {
                    Ok(set) => describe(&engine, set),
                    Err(e) => format!("error: {e}"),
                },
            );
        }
        table.push(cells);
    }
    print_table(&table);
    println!("\nclasses: {}", class_legend(&engine));

    // Throughput: permitted_fields on pages of 100 members, for a cleared campaign's staff,
    // on the compiled path (the store a CRM keeps) and on the reference path.
    let staffer = p(PrincipalKind::CampaignStaff, ids::CS_A_STAFF);
    let ctx = Context::at(t("2020-03-01T12:00:00Z")?).election(ids::LEADER_2020);
    let members: Vec<&str> = party.members.keys().map(String::as_str).collect();
    let budget = Duration::from_secs_f64(seconds.clamp(0.1, 600.0));
    let built = Instant::now();
    let store = engine.store(&party).map_err(|e| e.to_string())?;
    println!(
        "\ncompiled store of {} members built in {:.0} ms",
        store.member_count(),
        built.elapsed().as_secs_f64() * 1e3
    );
    let compiled = throughput(&engine, &members, budget, |page| {
        engine.permitted_fields_page_in(&store, &staffer, Action::Read, page, &ctx)
    })?;
    println!("throughput, compiled path:  {compiled}");
    let reference = throughput(&engine, &members, budget, |page| {
        engine.permitted_fields_page(&party, &staffer, Action::Read, page, &ctx)
    })?;
    println!("throughput, reference path: {reference}");
    Ok(ExitCode::SUCCESS)
}

/// Runs `page_fields` over pages of 100 members until `budget` is spent; describes the rate.
fn throughput(
    engine: &Engine,
    members: &[&str],
    budget: Duration,
    mut page_fields: impl FnMut(&[&str]) -> Result<Vec<FieldSet>, membergate::RequestError>,
) -> Result<String, String> {
    let start = Instant::now();
    let (mut decisions, mut allowed, mut pages) = (0usize, 0usize, 0usize);
    'outer: while start.elapsed() < budget {
        for page in members.chunks(100) {
            let sets = page_fields(page).map_err(|e| e.to_string())?;
            decisions += page.len() * engine.catalogue().len();
            allowed += sets.iter().map(|s| s.len()).sum::<usize>();
            pages += 1;
            if start.elapsed() >= budget {
                break 'outer;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64().max(f64::MIN_POSITIVE);
    Ok(format!(
        "{decisions} field decisions ({pages} pages of up to 100 members, {allowed} allowed) in {secs:.2} s: {:.0} decisions per second, {:.0} members per second",
        decisions as f64 / secs,
        (decisions / engine.catalogue().len().max(1)) as f64 / secs
    ))
}

/// Prints rows of cells in columns as wide as their widest cell.
fn print_table(table: &[Vec<String>]) {
    let columns = table.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            table
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (i, row) in table.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join(" | ").trim_end());
        if i == 0 {
            println!(
                "{}",
                widths
                    .iter()
                    .map(|w| "-".repeat(*w))
                    .collect::<Vec<_>>()
                    .join("-+-")
            );
        }
    }
}

/// A short name for a field class, for the demo table.
fn short(class: &str) -> &str {
    match class {
        "identity" => "id",
        "membership" => "mship",
        "financial" => "fin",
        "special_category" => "special",
        "preferences" => "prefs",
        other => other,
    }
}

/// A field set in a few words: whole classes by name, the rest by field.
fn describe(engine: &Engine, set: FieldSet) -> String {
    if set.is_empty() {
        return "-".into();
    }
    if set == engine.catalogue().all() {
        return "everything".into();
    }
    let mut parts = Vec::new();
    let mut classes: Vec<&str> = engine
        .catalogue()
        .iter()
        .map(|(_, f)| f.class.as_str())
        .collect();
    classes.dedup();
    for class in classes {
        let in_class: FieldSet = engine
            .catalogue()
            .iter()
            .filter(|(_, f)| f.class == class)
            .map(|(id, _)| id)
            .collect();
        let have = set.intersection(in_class);
        if have == in_class {
            parts.push(short(class).to_string());
        } else if !have.is_empty() {
            parts.extend(
                engine
                    .catalogue()
                    .names(have)
                    .into_iter()
                    .map(str::to_string),
            );
        }
    }
    parts.join(", ")
}

fn class_legend(engine: &Engine) -> String {
    let mut classes: Vec<(String, Vec<&str>)> = Vec::new();
    for (_, f) in engine.catalogue().iter() {
        match classes.iter_mut().find(|(c, _)| *c == f.class) {
            Some((_, names)) => names.push(&f.name),
            None => classes.push((f.class.clone(), vec![&f.name])),
        }
    }
    classes
        .iter()
        .map(|(c, n)| format!("{} = {}", short(c), n.join("/")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `membergate audit` subcommands.
#[derive(Subcommand)]
enum AuditCommand {
    /// Check a decision log's hash chain: exit 0 if every record is intact (a torn last
    /// line from a crash is reported, not a break), 1 naming the first broken line, 2 if
    /// the file cannot be read.
    Verify {
        /// The log file.
        file: PathBuf,
    },
    /// Print the records of a decision log that match every condition given, one line
    /// each (the chain is not checked: `audit verify` does that).
    Query {
        /// The log file.
        file: PathBuf,
        /// The principal, as a Cedar uid: `CampaignStaff::"cs-a-staff"`.
        #[arg(long)]
        principal: Option<PrincipalId>,
        /// The member id.
        #[arg(long)]
        member: Option<String>,
        /// A field that was granted.
        #[arg(long)]
        field: Option<String>,
        /// The action.
        #[arg(long)]
        action: Option<Action>,
        /// Requests at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<Timestamp>,
        /// Requests before this time (RFC 3339).
        #[arg(long)]
        until: Option<Timestamp>,
        /// One JSON object per record instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Append COUNT generated records as fast as possible (for crash tests).
    #[command(hide = true)]
    WriteSample {
        /// The log file.
        file: PathBuf,
        /// The number of records.
        #[arg(long)]
        count: u64,
        /// `fsync` each record.
        #[arg(long)]
        fsync: bool,
    },
}

fn audit(dir: &Path, command: AuditCommand) -> Result<ExitCode, String> {
    use membergate::audit::{self, DecisionRecord, DecisionSink, Durability, Filter, JsonlSink};
    match command {
        AuditCommand::Verify { file } => {
            let report = match audit::verify(&file) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(NO_VERDICT));
                }
            };
            if let Some(broken) = &report.broken {
                println!("{}: chain broken at {broken}", file.display());
                println!("{} records before it intact", report.records);
                return Ok(ExitCode::FAILURE);
            }
            println!("{} records, chain intact", report.records);
            println!("last hash {}", report.head);
            if let Some(torn) = report.torn {
                println!("{torn}; opening the log for writing removes it");
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Query {
            file,
            principal,
            member,
            field,
            action,
            since,
            until,
            json,
        } => {
            let filter = Filter {
                principal,
                member,
                field,
                action,
                since,
                until,
            };
            let records = audit::query(&file, &filter).map_err(|e| e.to_string())?;
            for r in &records {
                if json {
                    println!("{}", serde_json::to_string(r).map_err(|e| e.to_string())?);
                } else {
                    let list = |l: &[String]| {
                        if l.is_empty() {
                            "-".to_string()
                        } else {
                            l.join(",")
                        }
                    };
                    let rejected = r
                        .rejected
                        .as_ref()
                        .map(|why| format!(" rejected: {why}"))
                        .unwrap_or_default();
                    println!(
                        "{} {} {} {} granted {} refused {} policies {} request {} version {}{rejected}",
                        r.at,
                        r.principal,
                        r.action,
                        r.member,
                        list(&r.granted),
                        list(&r.refused),
                        list(&r.policies),
                        r.request_id,
                        r.version.get(..12).unwrap_or(&r.version)
                    );
                }
            }
            eprintln!("{} matching records", records.len());
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::WriteSample { file, count, fsync } => {
            let engine = engine(dir)?;
            let party = sample::bundled();
            let store = engine.store(&party).map_err(|e| e.to_string())?;
            let staffer = PrincipalId::new(PrincipalKind::CampaignStaff, ids::CS_A_STAFF);
            let at = "2020-03-01T12:00:00Z"
                .parse::<Timestamp>()
                .map_err(|e| e.to_string())?;
            let ctx = Context::at(at).election(ids::LEADER_2020);
            let members: Vec<&str> = party.members.keys().map(String::as_str).collect();
            let durability = if fsync {
                Durability::Fsync
            } else {
                Durability::Flush
            };
            let sink = JsonlSink::open(&file, durability).map_err(|e| e.to_string())?;
            if let Some(torn) = sink.opened().repaired {
                eprintln!("removed a torn last line: {torn}");
            }
            for (i, member) in (0..count).zip(members.iter().cycle()) {
                let fields = engine
                    .permitted_fields_in(&store, &staffer, Action::Read, member, &ctx)
                    .map_err(|e| e.to_string())?;
                let record = DecisionRecord::for_fields(
                    format!("sample-{i}"),
                    &engine,
                    &staffer,
                    Action::Read,
                    member,
                    &ctx,
                    fields,
                );
                sink.record(&record).map_err(|e| e.to_string())?;
            }
            println!(
                "wrote {count} records; {} in {}",
                sink.records(),
                file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
