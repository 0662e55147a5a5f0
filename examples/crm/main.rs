//! An example membership CRM backend on membergate: HTTP (axum) over SQLite (rusqlite), or
//! PostgreSQL (the blocking `postgres` client) with `--db postgres://user@host/db` (or a
//! libpq `host=... port=...` string) and optionally `--db-schema NAME`; either is created
//! and seeded with the bundled sample when absent, or with `--seed-members N` with N
//! members generated as the bundled sample is (seed 2020; its first 12,000 are the
//! bundled ones), streamed into the tables 500 at a time (a million members in bounded
//! memory).
//!
//! ```text
//! cargo run --release --example crm -- --listen 127.0.0.1:8080 --db crm.sqlite --audit-log decisions.jsonl
//! cargo run --release --example crm -- --db postgres://postgres@127.0.0.1:5432/postgres --db-schema crm
//! cargo run --release --example crm -- --db party.sqlite --seed-members 1000000
//! curl -H 'X-Principal: Staff::"s-membership"' http://127.0.0.1:8080/members/m-00001
//! curl -H 'X-Principal: CampaignStaff::"cs-a-staff"' \
//!   'http://127.0.0.1:8080/members?clp=clp-001&election=leader-2020&limit=20'
//! curl -H 'X-Principal: Staff::"s-export"' http://127.0.0.1:8080/members/export
//! ```
//!
//! - `GET /members/{id}`: the member's permitted fields and nothing else.
//! - `GET /members[?clp=ID|region=ID][&q=TEXT][&after=ID][&limit=N]`: a page of the
//!   members the principal may see (of a CLP, of a region's CLPs, or all) in id order,
//!   each with its permitted fields (members with none are left out); `next` continues
//!   it. Listed through the principal's plan (`Engine::plan`, `listing.rs`): one keyset
//!   query (sea-query) selects only members the plan may allow any field of, and of each
//!   only the columns the plan may reveal; every row read is then decided by the engine
//!   and logged, and a field is served only if revealed and granted. `q` searches names
//!   (case-insensitive substring, `%`/`_` literal) only where `name` may be seen.
//!   `rows_read` in the body: the rows the query returned (each logged); `exact`: the
//!   plan decided every row alone.
//! - `GET /members/export`: `bulk_export` (the default and only action) of every member
//!   the plan allows, streamed as JSON lines, 1,000 rows a query, each decided and logged
//!   as in a page; a last line `{"done": true, "rows_read": N, "members": M, ...}` (or
//!   `{"error": ...}` on a failure midway). 403 if the plan allows no field at all.
//! - They take `action` (default `read`; only an action that shows values:
//!   `Action::discloses`, so read, export or bulk_export), `election`, `session`,
//!   `purpose` and `reason`, which become the request's context; any other parameter is
//!   refused.
//! - `PATCH /members/{id}` with a JSON object of field names to text values: the action
//!   `update`, decided for every field of the member; if each field in the body is
//!   permitted, all are written in one transaction (with the member attribute a field
//!   mirrors: `status`, `contact_consents`, `opt_outs`), else nothing is (403, naming the
//!   refused fields). The answer names the fields written and shows no value.
//! - `DELETE /members/{id}`: the action `erase`; the member's row and values are deleted
//!   if erasing is permitted on every field of the record, else nothing is (403).
//! - Every request about members counts against the principal's hourly limit, writes
//!   included (the policy `read-volume-limit` forbids every action past it).
//! - `GET /policy`: the policy version served and the last reload's error, if any.
//!
//! The principal is the `X-Principal` header, a Cedar entity uid (`Staff::"s-membership"`):
//! this example trusts it. A real deployment takes the principal from its own
//! authentication (a session or a verified token), never from a header the client sets.
//!
//! The database (`db.rs`): `members` in `membergate::plan::sql::MemberColumns`'
//! default layout (times in ms since the epoch, flags 0/1 in SQLite and BOOLEAN in
//! PostgreSQL; indexed by `(clp, id)`), and `member_values` with one TEXT column per
//! catalogue field. Every statement is built with sea-query and rendered in the
//! backend's dialect.
//!
//! Each request: the principal must be one the CRM knows (else 401, no member data); each
//! member's row is read from the database with its policy-relevant attributes (status, CLP,
//! joined, left, good standing, consents, opt-outs: a `membergate::Member`), which go with
//! the request (the engine keeps only the principal side, in its `Directory`); the volume
//! meter counts the records about to be read and puts the count in the context (rule 9;
//! in a page, each member is decided with the reads before it, so a page that crosses the
//! hourly limit is served up to the limit and no further); the compiled path decides every
//! field of every member with the policies that decided; each decision, and each request
//! rejected before a decision, is appended to the hash-chained decision log *before* any
//! field value is read from the database (a listing's query brings the values its plan
//! reveals with the rows, but none leaves before its member's record is logged). If the log cannot take the record (disk full),
//! the answer is 503 and no member data. The policy directory is re-read every
//! `--reload-ms`; a version that does not load, or that the directory's records do not
//! fit, is refused and the old one kept serving (see `GET /policy`). This work blocks (the
//! log's write, the database), so each request runs it on tokio's blocking pool, never on the
//! threads that serve connections.
//!
//! With `--checkpoints FILE --checkpoint-key KEY`, the log's head is signed into FILE every
//! `--checkpoint-every` records, every minute and at shutdown, so truncating or rewriting the log up
//! to the last checkpoint is found by `membergate audit verify --checkpoints`.
//!
//! Connections: a request's headers must arrive within `--header-timeout-ms`, its answer
//! within `--request-timeout-ms` (else 408, logged), and at most `--max-connections` are
//! served at once (the accept loop in `http.rs`: `axum::serve` bounds none of
//! these).
//!
//! `--measure-listing N` measures instead of serving (`measure.rs`): for each kind of
//! principal of `membergate demo` (at a time and with a context it sees members in), the
//! first page of 100 members and a later one (`after` the middle id, or
//! `--measure-after ID`), N times each through the plan (`GET /members`' code: plan,
//! query, decisions, log) and through a scan of the members in id order deciding and
//! logging every row until 100 have a granted field (as the CRM listed before plans; at
//! most N or `--measure-budget-s` seconds a page), then prints each page's rows read, p50,
//! p99 and max of both, and their ratio. The two must serve the same members with the same
//! fields, else it exits non-zero. During the run the meter counts nothing (each request's
//! reads start at 0: 200 pages by one principal would cross its hourly limit); decisions
//! are logged to `--audit-log` as when serving.
//!
//! ```text
//! crm --db party.sqlite --seed-members 1000000 --audit-log /tmp/decisions.jsonl --measure-listing 200
//! ```
//!
//! The meter is in this process; built with `--features redis`, `--redis URL` makes every
//! instance started with it share one count (a scraper cannot spread reads over instances).

mod app;
mod db;
mod http;
mod listing;
mod measure;
mod sqlite_bind;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use jiff::Timestamp;
use membergate::audit::{CheckpointKey, CheckpointPolicy, Durability, JsonlSink};
use membergate::meter::{LocalMeter, VolumeMeter};
use membergate::{sample, ReloadCheck, ReloadStartError, ReloadableEngine};
use tokio::net::TcpListener;

use app::{App, ReloadStatus};

/// An example CRM backend: members' fields over HTTP, decided by membergate.
#[derive(Parser, Debug)]
#[command(name = "crm")]
struct Args {
    /// The address to listen on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The database: a SQLite file, or PostgreSQL as a `postgres://` or `postgresql://`
    /// URL or a libpq `host=... port=...` string; created and seeded with the bundled
    /// sample when absent (PostgreSQL: when the schema has no `members` table).
    #[arg(long, default_value = "crm.sqlite")]
    db: String,
    /// PostgreSQL only: the schema holding the tables (created when absent), instead of
    /// the connection's default (`public`).
    #[arg(long)]
    db_schema: Option<String>,
    /// The decision log (hash-chained JSON lines), created when absent.
    #[arg(long, default_value = "decisions.jsonl")]
    audit_log: PathBuf,
    /// The policy directory.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/policies"))]
    policies: PathBuf,
    /// Decide every request at this time instead of the clock's (the sample's elections
    /// are in 2016-2020): for demonstrations and tests.
    #[arg(long)]
    now: Option<Timestamp>,
    /// How often to re-read the policy directory, in milliseconds (0: never).
    #[arg(long, default_value_t = 2000)]
    reload_ms: u64,
    /// Also prove the invariants of `invariants.toml` before serving a new version (needs
    /// the SMT solver, see `membergate verify`).
    #[arg(long)]
    verify_reloads: bool,
    /// The largest page a request may ask for.
    #[arg(long, default_value_t = 200)]
    max_page: usize,
    /// `fsync` each decision record instead of flushing it to the operating system.
    #[arg(long)]
    fsync: bool,
    /// Sign checkpoints of the decision log's head into this file, which must be on
    /// storage the log's operator cannot write (`membergate audit verify --checkpoints`).
    #[arg(long, requires = "checkpoint_key")]
    checkpoints: Option<PathBuf>,
    /// The Ed25519 key that signs them (`membergate audit keygen --out FILE`).
    #[arg(long, requires = "checkpoints")]
    checkpoint_key: Option<PathBuf>,
    /// A checkpoint after every N records (and after the first record a minute after the
    /// last checkpoint).
    #[arg(long, default_value_t = 1_000)]
    checkpoint_every: u64,
    /// How long a connection may take to send a request's headers (the first request's,
    /// or the next one's on a kept-alive connection) before it is closed, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    header_timeout_ms: u64,
    /// How long a request may take from its headers to its answer (reading its body
    /// included) before it is answered 408, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    request_timeout_ms: u64,
    /// The most connections served at once; further ones wait in the listen queue until
    /// one closes.
    #[arg(long, default_value_t = 1_024)]
    max_connections: usize,
    /// Seed a new database with this many members generated as the bundled sample is
    /// (`membergate::sample::generate_each`, seed 2020: the bundled sample is its first
    /// 12,000), written as they are made, instead of the bundled sample. Only when the
    /// database is created.
    #[arg(long)]
    seed_members: Option<usize>,
    /// Measure listings instead of serving: for each kind of principal of `membergate
    /// demo`, the first page of 100 members and a later one, N requests each through the
    /// plan (as `GET /members`) and through a scan deciding every row in id order (the
    /// CRM before plans); prints both and fails if they serve different members. Reads
    /// are not counted against the hourly limits during the run (`measure.rs`).
    #[arg(long, value_name = "N")]
    measure_listing: Option<usize>,
    /// With `--measure-listing`: the longest the scans of one page may take together, in
    /// seconds (they stop at the first past it, having made at least one).
    #[arg(long, default_value_t = 20.0)]
    measure_budget_s: f64,
    /// With `--measure-listing`: the id the later page starts after (default: the middle
    /// id, `m-` and half the member count).
    #[arg(long)]
    measure_after: Option<String>,
    /// Count each principal's reads in the Redis at this URL, one count across every
    /// instance started with it, instead of in this process (built with `--features redis`).
    #[cfg(feature = "redis")]
    #[arg(long)]
    redis: Option<String>,
    /// The prefix of the Redis meter's keys.
    #[cfg(feature = "redis")]
    #[arg(long, default_value = "membergate:meter:")]
    redis_prefix: String,
}

/// The longest time the log's last records go unsigned while checkpoints are on.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);

fn start(args: &Args) -> Result<App, String> {
    let target = db::Target::parse(&args.db, args.db_schema.as_deref())?;
    if !db::exists(&target)? {
        // A column of `member_values` per field of the policies' catalogue.
        let engine = membergate::Engine::from_dir(&args.policies).map_err(|e| e.to_string())?;
        let fields: Vec<&str> = engine
            .catalogue()
            .iter()
            .map(|(_, f)| f.name.as_str())
            .collect();
        let seeding = std::time::Instant::now();
        let (written, what) = match args.seed_members {
            None => {
                let membership = sample::bundled();
                let n = db::create(&target, &db::Seed::Membership(&membership), &fields)?;
                (n, "the bundled sample".to_string())
            }
            Some(members) => {
                let config = sample::SampleConfig {
                    members,
                    ..sample::SampleConfig::default()
                };
                let n = db::create(&target, &db::Seed::Generated(config), &fields)?;
                (n, format!("a generated sample (seed {})", config.seed))
            }
        };
        println!(
            "crm: created {} with {what} ({written} members) in {:.1}s",
            target.describe(),
            seeding.elapsed().as_secs_f64()
        );
    }
    let pool = db::Pool::open(&target, 4)?;
    // The principal side only: members are read with their rows, request by request.
    let records = pool.load()?;
    let members = pool.member_count()?;
    let check = if args.verify_reloads {
        ReloadCheck::Invariants
    } else {
        ReloadCheck::Validate
    };
    let policies =
        ReloadableEngine::with_check(&args.policies, &records, check).map_err(|e| match e {
            ReloadStartError::Records(e) => format!("the records do not fit the policies: {e}"),
            e => e.to_string(),
        })?;
    let serving = policies.current();
    let durability = if args.fsync {
        Durability::Fsync
    } else {
        Durability::Flush
    };
    let mut log = JsonlSink::open(&args.audit_log, durability).map_err(|e| e.to_string())?;
    if let (Some(file), Some(key)) = (&args.checkpoints, &args.checkpoint_key) {
        let key = CheckpointKey::from_file(key).map_err(|e| e.to_string())?;
        let policy = CheckpointPolicy {
            records: Some(args.checkpoint_every.max(1)),
            interval: Some(CHECKPOINT_EVERY),
        };
        log = log
            .with_checkpoints(file, key, policy)
            .map_err(|e| e.to_string())?;
    }
    if let Some(torn) = &log.opened().repaired {
        eprintln!("crm: decision log: {torn}");
    }
    println!(
        "crm: {} members, policies {} from {}, decision log {} ({} records)",
        members,
        serving.engine.version().short(),
        policies.dir().display(),
        args.audit_log.display(),
        log.records()
    );
    let started = Timestamp::now().as_millisecond();
    Ok(App {
        policies,
        pool,
        log,
        meter: meter(args)?,
        clock: args.now,
        max_page: args.max_page.max(1),
        request_timeout: Duration::from_millis(args.request_timeout_ms.max(1)),
        started: format!("{started:x}"),
        next_request: AtomicU64::new(1),
        reload: Mutex::new(ReloadStatus::default()),
    })
}

/// The volume meter: in this process, or (`--redis`) shared by every instance through Redis.
fn meter(args: &Args) -> Result<Box<dyn VolumeMeter>, String> {
    #[cfg(feature = "redis")]
    if let Some(url) = &args.redis {
        use membergate::meter::{RedisMeter, RedisMeterOptions};
        let options = RedisMeterOptions {
            key_prefix: args.redis_prefix.clone(),
            ..RedisMeterOptions::default()
        };
        let meter = RedisMeter::with_options(url, options).map_err(|e| e.to_string())?;
        // Serve even when Redis is down: reads are then refused (fail closed) until it answers.
        match meter.ping() {
            Ok(()) => println!("crm: volume meter {meter:?}"),
            Err(e) => eprintln!("crm: volume meter: {e}: every read is refused until it answers"),
        }
        return Ok(Box::new(meter));
    }
    let _ = args;
    Ok(Box::new(LocalMeter::new()))
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The database is opened (and seeded) before the runtime starts, and the last handle
    // on the app is dropped after it stops: a blocking PostgreSQL client refuses to run,
    // or to be dropped, on a thread of an async runtime.
    let mut app = match start(&args) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("crm: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(requests) = args.measure_listing {
        let options = measure::Options {
            requests,
            budget: Duration::try_from_secs_f64(args.measure_budget_s.max(0.0))
                .unwrap_or(Duration::MAX),
            after: args.measure_after.clone(),
        };
        return match measure::run(&mut app, &options) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("crm: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let app = Arc::new(app);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("crm: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(serve(&args, Arc::clone(&app)));
    drop(runtime);
    drop(app);
    code
}

/// Serves `app` until the listener fails or ctrl-C.
async fn serve(args: &Args, app: Arc<App>) -> ExitCode {
    if args.reload_ms > 0 {
        every(
            &app,
            Duration::from_millis(args.reload_ms),
            "reload",
            App::reload,
        );
    }
    if args.checkpoints.is_some() {
        // A quiet log crosses no count: anchor its last records every minute anyway.
        every(&app, CHECKPOINT_EVERY, "checkpoint", |app| {
            if let Err(e) = app.log.checkpoint() {
                eprintln!("crm: checkpoint: {e}");
            }
        });
    }
    let router = http::router(&app);
    let listener = match TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("crm: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("crm: listening on http://{addr}"),
        Err(e) => eprintln!("crm: listening, address unknown: {e}"),
    }
    let bounds = http::ServeLimits {
        header_timeout: Duration::from_millis(args.header_timeout_ms.max(1)),
        max_connections: args.max_connections.max(1),
    };
    tokio::select! {
        () = http::serve(listener, router, Arc::clone(&app), bounds) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    // Anchor the records since the last checkpoint before stopping.
    if let Err(e) = app.log.checkpoint() {
        eprintln!("crm: the last checkpoint: {e}");
    }
    ExitCode::SUCCESS
}

/// Runs `job` on the blocking pool every `period`, from one period after now; a run that
/// panics (the old policies are then still served) is reported and the next one runs.
fn every(app: &Arc<App>, period: Duration, what: &'static str, job: fn(&App)) {
    let app = Arc::clone(app);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.tick().await;
        loop {
            tick.tick().await;
            let app = Arc::clone(&app);
            if tokio::task::spawn_blocking(move || job(&app))
                .await
                .is_err()
            {
                eprintln!("crm: a {what} panicked");
            }
        }
    });
}
