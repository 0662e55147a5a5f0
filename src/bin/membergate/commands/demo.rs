//! `membergate demo`: the main job on the bundled data, what each kind of principal can
//! see across the 2020 leadership election's phases, then the decisions per second reached.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use membergate::sample::ids;
use membergate::{
    Action, Context, Directory, Engine, FieldSet, MemberRef, MemberRequest, PageRequest,
    PrincipalId, PrincipalKind,
};

use crate::common::{data, directory, engine, is_jsonl, member, open_jsonl, print_table};

#[derive(clap::Args)]
pub struct Args {
    /// Membership data (JSON or TOML) instead of the bundled sample.
    #[arg(long)]
    data: Option<PathBuf>,
    /// How long to measure throughput, in seconds.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
}

/// A row of the demo table: a kind of principal asking about a member.
struct Row {
    label: &'static str,
    principal: PrincipalId,
    member: &'static str,
    context: fn(Context) -> Context,
}

pub fn exec(dir: &Path, args: Args) -> Result<ExitCode, String> {
    let engine = engine(dir)?;
    // A JSON-lines file is read member by member: only the principal side and the
    // well-known first members (for the table) are held.
    let streamed = args.data.as_deref().filter(|p| is_jsonl(p));
    let party = match streamed {
        Some(path) => {
            let (mut party, lines) = open_jsonl(path)?;
            for line in lines.take(WELL_KNOWN_MEMBERS) {
                let line = line?;
                party.members.insert(line.id, line.member);
            }
            party
        }
        None => data(args.data.as_deref())?,
    };
    // The same party, had candidate A not paid the fee.
    let mut unpaid = party.clone();
    if let Some(c) = unpaid.candidates.get_mut(ids::CAND_A) {
        c.fee_paid = false;
    }
    let built = Instant::now();
    let paid: Directory = directory(&engine, &party)?;
    let directory_ms = built.elapsed().as_secs_f64() * 1e3;
    let unpaid = directory(&engine, &unpaid)?;
    let t = |s: &str| s.parse::<Timestamp>().map_err(|e| e.to_string());
    let phases = [
        ("before close", t("2020-02-13T18:00:00Z")?, &paid),
        ("after close, paid", t("2020-02-20T18:00:00Z")?, &paid),
        ("after close, unpaid", t("2020-02-20T18:00:00Z")?, &unpaid),
        ("after ballot", t("2020-04-03T18:00:00Z")?, &paid),
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
        for (_, at, dir) in &phases {
            let ctx = (row.context)(Context::at(*at));
            let req = MemberRequest {
                principal: &row.principal,
                action: Action::Read,
                member: member(&party, row.member)?,
                context: &ctx,
            };
            cells.push(match engine.permitted_fields(dir, &req) {
                Ok(set) => describe(&engine, set),
                Err(e) => format!("error: {e}"),
            });
        }
        table.push(cells);
    }
    print_table(&table);
    println!("\nclasses: {}", class_legend(&engine));

    // Throughput: permitted fields on pages of 100 members (each read with its row), for
    // a cleared campaign's staff, on the engine and on Cedar's own authorizer.
    let staffer = p(PrincipalKind::CampaignStaff, ids::CS_A_STAFF);
    let ctx = Context::at(t("2020-03-01T12:00:00Z")?).election(ids::LEADER_2020);
    if let Some(path) = streamed {
        println!(
            "\ndirectory of {} principals built in {directory_ms:.1} ms",
            party.principal_ids().count()
        );
        let rate = streamed_throughput(&engine, &paid, path, &staffer, &ctx)?;
        println!(
            "the members of {}, read {CHUNK} at a time, decided in pages of 100: {rate}",
            path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let members: Vec<MemberRef> = party.member_refs().collect();
    let budget = Duration::from_secs_f64(args.seconds.clamp(0.1, 600.0));
    println!(
        "\ndirectory of {} principals built in {directory_ms:.1} ms; {} members, each read with its request",
        party.principal_ids().count(),
        members.len(),
    );
    let compiled = throughput(&engine, &members, budget, |members| {
        let page = PageRequest {
            principal: &staffer,
            action: Action::Read,
            members,
            context: &ctx,
        };
        engine.permitted_fields_page(&paid, &page)
    })?;
    println!("throughput, compiled engine:       {compiled}");
    let reference = throughput(&engine, &members, budget, |members| {
        let page = PageRequest {
            principal: &staffer,
            action: Action::Read,
            members,
            context: &ctx,
        };
        engine.reference().permitted_fields_page(&paid, &page)
    })?;
    println!("throughput, Cedar's authorizer:    {reference}");
    Ok(ExitCode::SUCCESS)
}

/// The members the demo table asks about: the sample's first ones (see `sample::ids`).
const WELL_KNOWN_MEMBERS: usize = 6;

/// How many members a streamed run reads at a time.
const CHUNK: usize = 10_000;

/// Every member of a JSON-lines file, read `CHUNK` at a time, decided in pages of 100 on
/// the engine; describes the rate.
fn streamed_throughput(
    engine: &Engine,
    dir: &Directory,
    path: &Path,
    staffer: &PrincipalId,
    ctx: &Context,
) -> Result<String, String> {
    let (_, mut lines) = open_jsonl(path)?;
    let start = Instant::now();
    let (mut read, mut deciding, mut allowed) = (Duration::ZERO, Duration::ZERO, 0usize);
    let mut members = 0usize;
    let mut chunk: Vec<(String, membergate::Member)> = Vec::with_capacity(CHUNK);
    loop {
        let t = Instant::now();
        chunk.clear();
        for line in lines.by_ref().take(CHUNK) {
            let line = line?;
            chunk.push((line.id, line.member));
        }
        read += t.elapsed();
        if chunk.is_empty() {
            break;
        }
        let t = Instant::now();
        let refs: Vec<MemberRef> = chunk
            .iter()
            .map(|(id, attrs)| MemberRef { id, attrs })
            .collect();
        for page in refs.chunks(100) {
            let req = PageRequest {
                principal: staffer,
                action: Action::Read,
                members: page,
                context: ctx,
            };
            let sets = engine
                .permitted_fields_page(dir, &req)
                .map_err(|e| e.to_string())?;
            allowed += sets.iter().map(|s| s.len()).sum::<usize>();
        }
        deciding += t.elapsed();
        members += chunk.len();
    }
    let secs = |d: Duration| d.as_secs_f64().max(f64::MIN_POSITIVE);
    Ok(format!(
        "{members} members ({allowed} fields allowed) in {:.2} s: reading {:.2} s, deciding {:.2} s ({:.0} members per second)",
        secs(start.elapsed()),
        secs(read),
        secs(deciding),
        members as f64 / secs(deciding)
    ))
}

/// Runs `page_fields` over pages of 100 members until `budget` is spent; describes the rate.
fn throughput(
    engine: &Engine,
    members: &[MemberRef<'_>],
    budget: Duration,
    mut page_fields: impl FnMut(&[MemberRef<'_>]) -> Result<Vec<FieldSet>, membergate::RequestError>,
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
