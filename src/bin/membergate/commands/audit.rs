//! `membergate audit`: the decision log, check a log's hash chain and its signed
//! checkpoints (`audit verify`), print the records that match (`audit query`), make a
//! checkpoint key (`audit keygen`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use jiff::Timestamp;
use membergate::audit::{
    self, CheckpointKey, DecisionRecord, DecisionSink, Durability, Filter, InvalidKey, JsonlSink,
    PublicKey,
};
use membergate::sample::{self, ids};
use membergate::{Action, Context, MemberRef, MemberRequest, PrincipalId, PrincipalKind};

use crate::common::{engine, NO_VERDICT};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: AuditCommand,
}

/// `membergate audit` subcommands.
#[derive(Subcommand)]
enum AuditCommand {
    /// Check a decision log's hash chain, and with `--checkpoints` that its signed
    /// checkpoints anchor it: exit 0 if every record is intact (a torn last line from a
    /// crash is reported, not a break) and every checkpoint verifies and matches the log
    /// (records after the last are reported as not yet anchored), 1 naming the first
    /// broken line or failing checkpoint, 2 if a file or the key cannot be read.
    Verify {
        /// The log file.
        file: PathBuf,
        /// The checkpoint file the log's sink signs (`JsonlSink::with_checkpoints`).
        #[arg(long, requires = "public_key")]
        checkpoints: Option<PathBuf>,
        /// The public key that signs the checkpoints: 64 hexadecimal digits, or a file
        /// holding them (as `audit keygen` prints).
        #[arg(long, value_name = "HEX_OR_FILE", requires = "checkpoints")]
        public_key: Option<String>,
    },
    /// Make a key to sign a decision log's checkpoints: write its secret to a new file
    /// (mode 0600; an existing file is left alone) and print its public key.
    Keygen {
        /// The secret key file to create.
        #[arg(long)]
        out: PathBuf,
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

pub fn exec(dir: &Path, args: Args) -> Result<ExitCode, String> {
    match args.command {
        AuditCommand::Verify {
            file,
            checkpoints,
            public_key,
        } => match (checkpoints, public_key) {
            (Some(checkpoints), Some(key)) => Ok(verify_checkpoints(&file, &checkpoints, &key)),
            _ => Ok(verify(&file)),
        },
        AuditCommand::Keygen { out } => {
            let key = CheckpointKey::generate().map_err(|e| e.to_string())?;
            key.write_new(&out).map_err(|e| e.to_string())?;
            eprintln!("wrote the secret key to {}; its public key:", out.display());
            println!("{}", key.public_key());
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
            let dir = crate::common::directory(&engine, &party)?;
            let staffer = PrincipalId::new(PrincipalKind::CampaignStaff, ids::CS_A_STAFF);
            let at = "2020-03-01T12:00:00Z"
                .parse::<Timestamp>()
                .map_err(|e| e.to_string())?;
            let ctx = Context::at(at).election(ids::LEADER_2020);
            let members: Vec<MemberRef> = party.member_refs().collect();
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
                let req = MemberRequest {
                    principal: &staffer,
                    action: Action::Read,
                    member: *member,
                    context: &ctx,
                };
                let fields = engine
                    .permitted_fields(&dir, &req)
                    .map_err(|e| e.to_string())?;
                let record =
                    DecisionRecord::for_fields(format!("sample-{i}"), &engine, &req, fields);
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

/// `audit verify FILE`: the chain alone.
fn verify(file: &Path) -> ExitCode {
    match audit::verify(file) {
        Ok(report) => {
            print_chain(file, &report);
            if report.is_intact() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(NO_VERDICT)
        }
    }
}

/// What `audit verify` says of a log's chain.
fn print_chain(file: &Path, report: &audit::VerifyReport) {
    if let Some(broken) = &report.broken {
        println!("{}: chain broken at {broken}", file.display());
        println!("{} records before it intact", report.records);
        return;
    }
    println!("{} records, chain intact", report.records);
    println!("last hash {}", report.head);
    if let Some(torn) = report.torn {
        println!("{torn}; opening the log for writing removes it");
    }
}

/// `audit verify FILE --checkpoints CKPT --public-key KEY`: the chain and the checkpoints.
fn verify_checkpoints(file: &Path, checkpoints: &Path, key: &str) -> ExitCode {
    // 64 hexadecimal digits are the key; anything else names a file.
    let key = match key.parse::<PublicKey>() {
        Err(InvalidKey::NotHex) => PublicKey::from_file(key).map_err(|e| e.to_string()),
        parsed => parsed.map_err(|e| format!("--public-key: {e}")),
    };
    let report = key.and_then(|key| {
        audit::verify_checkpoints(file, checkpoints, &key).map_err(|e| e.to_string())
    });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(NO_VERDICT);
        }
    };
    print_chain(file, &report.log);
    if let Some(problem) = &report.problem {
        println!("{}: {problem}", checkpoints.display());
    }
    match &report.last {
        Some(last) => println!(
            "{} checkpoints verify; the last signs {} records at {}",
            report.checkpoints, last.records, last.at
        ),
        None => println!("no checkpoint verifies"),
    }
    if report.is_intact() {
        println!("{} records not yet anchored", report.unanchored());
    }
    if let Some(torn) = report.torn {
        println!(
            "{}: {torn}; opening the sink with its checkpoints removes it",
            checkpoints.display()
        );
    }
    if report.is_intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
