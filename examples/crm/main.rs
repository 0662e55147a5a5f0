//! An example membership CRM backend on membergate: HTTP (axum) over SQLite (rusqlite).
//!
//! ```text
//! cargo run --release --example crm -- --listen 127.0.0.1:8080 --db crm.sqlite --audit-log decisions.jsonl
//! curl -H 'X-Principal: Staff::"s-membership"' http://127.0.0.1:8080/members/m-00001
//! curl -H 'X-Principal: CampaignStaff::"cs-a-staff"' \
//!   'http://127.0.0.1:8080/members?clp=clp-001&election=leader-2020&limit=20'
//! ```
//!
//! - `GET /members/{id}`: the member's permitted fields and nothing else.
//! - `GET /members?clp=ID[&after=ID][&limit=N]`: a page of a CLP's members in id order, each
//!   with its permitted fields (members with none are left out); `next` continues it.
//! - Both take `action` (default `read`; only an action that shows values:
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
//! Each request: the principal must be one the CRM knows (else 401, no member data); each
//! member's row is read from SQLite with its policy-relevant attributes (status, CLP,
//! joined, left, good standing, consents, opt-outs: a `membergate::Member`), which go with
//! the request (the engine keeps only the principal side, in its `Directory`); the volume
//! meter counts the records about to be read and puts the count in the context (rule 9;
//! in a page, each member is decided with the reads before it, so a page that crosses the
//! hourly limit is served up to the limit and no further); the compiled path decides every
//! field of every member with the policies that decided; each decision, and each request
//! rejected before a decision, is appended to the hash-chained decision log *before* any
//! field value is read from the database. If the log cannot take the record (disk full),
//! the answer is 503 and no member data. The policy directory is re-read every
//! `--reload-ms`; a version that does not load, or that the directory's records do not
//! fit, is refused and the old one kept serving (see `GET /policy`). This work blocks (the
//! log's write, SQLite), so each request runs it on tokio's blocking pool, never on the
//! threads that serve connections.
//!
//! With `--checkpoints FILE --checkpoint-key KEY`, the log's head is signed into FILE every
//! `--checkpoint-every` records, every minute and at shutdown, so truncating or rewriting the log up
//! to the last checkpoint is found by `membergate audit verify --checkpoints`.
//!
//! Connections: a request's headers must arrive within `--header-timeout-ms`, its answer
//! within `--request-timeout-ms` (else 408, logged), and at most `--max-connections` are
//! served at once (the accept loop at the end of this file: `axum::serve` bounds none of
//! these).
//!
//! The meter is in this process; built with `--features redis`, `--redis URL` makes every
//! instance started with it share one count (a scraper cannot spread reads over instances).

mod db;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use jiff::Timestamp;
use membergate::audit::{
    CheckpointKey, CheckpointPolicy, DecisionRecord, DecisionSink, Durability, JsonlSink,
};
use membergate::meter::{LocalMeter, VolumeMeter};
use membergate::{
    sample, Action, Context, FieldDecisions, Member, MemberRef, MemberRequest, PrincipalId,
    ReloadCheck, ReloadOutcome, ReloadStartError, ReloadableEngine, RequestError, Serving,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// An example CRM backend: members' fields over HTTP, decided by membergate.
#[derive(Parser, Debug)]
#[command(name = "crm")]
struct Args {
    /// The address to listen on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The SQLite database; created and seeded with the bundled sample when absent.
    #[arg(long, default_value = "crm.sqlite")]
    db: PathBuf,
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

/// The last reload's outcome, for `GET /policy`: the version it left served with its
/// error, written together so that the two are never read from different reloads.
#[derive(Default)]
struct ReloadStatus {
    reloads: u64,
    /// `None` before the first reload (the version served at start).
    version: Option<String>,
    error: Option<String>,
}

struct App {
    /// The policies and the directory of principals built for them: each request decides
    /// on one snapshot (`current()`); a reload swaps both.
    policies: ReloadableEngine,
    pool: db::Pool,
    log: JsonlSink,
    meter: Box<dyn VolumeMeter>,
    clock: Option<Timestamp>,
    max_page: usize,
    request_timeout: Duration,
    started: String,
    next_request: AtomicU64,
    reload: Mutex<ReloadStatus>,
}

/// The query parameters either route accepts; any other is refused (a misspelt
/// `electon=` must not silently decide without the election).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Params {
    action: Option<String>,
    election: Option<String>,
    session: Option<String>,
    purpose: Option<String>,
    reason: Option<String>,
    clp: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// An answer, and the request id it is logged under.
struct Reply {
    status: StatusCode,
    body: Value,
    request_id: String,
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&self.request_id) {
            response.headers_mut().insert("x-request-id", v);
        }
        response
    }
}

/// The longest principal or member id copied into the log from a rejected request.
const MAX_ECHO: usize = 200;

fn clipped(s: &str) -> String {
    s.chars().take(MAX_ECHO).collect()
}

/// One request being answered: its id, time, and what it asked, for the log.
struct Asked {
    request_id: String,
    now: Timestamp,
    principal: String,
    action: String,
    member: String,
}

/// A request about one member, ready to decide.
struct OneMember {
    serving: Arc<Serving>,
    asked: Asked,
    principal: PrincipalId,
    action: Action,
    attrs: Member,
    ctx: Context,
}

/// Why a GET with `action` is refused: it would serve values the action does not show.
fn not_disclosing(action: Action) -> String {
    format!(
        "the action {action} does not show field values, so GET does not take it \
         (GET reads with read, export or bulk_export; PATCH /members/ID updates, DELETE \
         /members/ID erases)"
    )
}

impl App {
    fn now(&self) -> Timestamp {
        self.clock.unwrap_or_else(Timestamp::now)
    }

    fn asked(&self, headers: &HeaderMap, action: &str, member: &str) -> Asked {
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        let principal = headers
            .get("x-principal")
            .map(|v| clipped(&String::from_utf8_lossy(v.as_bytes())))
            .unwrap_or_default();
        Asked {
            request_id: format!("{}-{n}", self.started),
            now: self.now(),
            principal,
            action: clipped(action),
            member: clipped(member),
        }
    }

    /// Logs a request rejected before any decision and answers `status` (or 503 if the
    /// log cannot take the record).
    fn reject(&self, asked: &Asked, serving: &Serving, status: StatusCode, why: &str) -> Reply {
        let record = DecisionRecord::rejection(
            &asked.request_id,
            asked.now,
            &asked.principal,
            &asked.action,
            &asked.member,
            why,
            serving.engine.version(),
        );
        if let Err(reply) = self.record(asked, &record) {
            return reply;
        }
        Reply {
            status,
            body: json!({ "error": why, "request_id": asked.request_id }),
            request_id: asked.request_id.clone(),
        }
    }

    /// Appends `record` to the decision log; the 503 to answer if it cannot.
    fn record(&self, asked: &Asked, record: &DecisionRecord) -> Result<(), Reply> {
        self.log.record(record).map_err(|e| {
            eprintln!("crm: request {}: refused, decision log: {e}", asked.request_id);
            Reply {
                status: StatusCode::SERVICE_UNAVAILABLE,
                body: json!({
                    "error": "the decision log cannot record this request: nothing is served until it can",
                    "request_id": asked.request_id,
                }),
                request_id: asked.request_id.clone(),
            }
        })
    }

    /// Decides every field of `member` (read with its row) and logs the decision; the
    /// reply to give instead if the engine refuses the request (400; 500 if it is the
    /// member's row it refuses: a CLP the directory lacks, a member who left without a
    /// date) or the log cannot take it (503).
    fn decide<'s>(
        &self,
        asked: &Asked,
        serving: &'s Serving,
        principal: &PrincipalId,
        action: Action,
        member: MemberRef<'_>,
        ctx: &Context,
    ) -> Result<(FieldDecisions<'s>, DecisionRecord), Reply> {
        let req = MemberRequest {
            principal,
            action,
            member,
            context: ctx,
        };
        let decided = serving
            .engine
            .field_decisions(&serving.directory, &req)
            .map_err(|e| {
                let status = match e {
                    // The CRM's own records are at fault, not the request.
                    RequestError::DanglingReference { .. } | RequestError::InvalidData { .. } => {
                        eprintln!("crm: request {}: {e}", asked.request_id);
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                    _ => StatusCode::BAD_REQUEST,
                };
                self.reject(asked, serving, status, &e.to_string())
            })?;
        let record =
            DecisionRecord::for_field_decisions(&asked.request_id, &serving.engine, &req, &decided);
        self.record(asked, &record)?;
        Ok((decided, record))
    }

    /// The principal of `X-Principal`, known to the CRM; the rejection otherwise.
    fn principal(&self, headers: &HeaderMap, serving: &Serving) -> Result<PrincipalId, String> {
        let value = headers
            .get("x-principal")
            .ok_or("no X-Principal header: every request must name its principal")?;
        if value.len() > MAX_ECHO {
            return Err(format!("X-Principal is longer than {MAX_ECHO} bytes"));
        }
        let text = value
            .to_str()
            .map_err(|_| "X-Principal is not visible ASCII".to_string())?;
        let principal: PrincipalId = text.parse().map_err(|e| format!("X-Principal: {e}"))?;
        if serving.directory.records().principal(&principal).is_none() {
            return Err(format!("unknown principal {principal}"));
        }
        Ok(principal)
    }

    /// What every request about one member does before deciding: the principal, the
    /// parameters, the action the method allows, the member's row, the meter. `method`'s
    /// action: GET one that discloses values (`read` by default), PATCH `update`, DELETE
    /// `erase`.
    fn one_member(
        &self,
        headers: &HeaderMap,
        method: &Method,
        id: &str,
        params: &Params,
    ) -> Result<OneMember, Reply> {
        let serving = self.policies.current();
        let fixed = match *method {
            Method::PATCH => Some(Action::Update),
            Method::DELETE => Some(Action::Erase),
            _ => None,
        };
        let named = params.action.as_deref();
        let action = named.unwrap_or(fixed.map_or("read", Action::as_str));
        let asked = self.asked(headers, action, id);
        let principal = match self.principal(headers, &serving) {
            Ok(p) => p,
            Err(why) => return Err(self.reject(&asked, &serving, StatusCode::UNAUTHORIZED, &why)),
        };
        let bad = |why: &str| self.reject(&asked, &serving, StatusCode::BAD_REQUEST, why);
        if params.clp.is_some() || params.after.is_some() || params.limit.is_some() {
            return Err(bad(
                "clp, after and limit are for pages: GET /members?clp=...",
            ));
        }
        let (action, ctx) = self.context(&asked, params).map_err(|why| bad(&why))?;
        match fixed {
            Some(fixed) if action != fixed => {
                return Err(bad(&format!(
                    "{method} is the action {fixed}, not {action}"
                )))
            }
            None if !action.discloses() => return Err(bad(&not_disclosing(action))),
            _ => {}
        }
        // The member's row: its attributes go with the request (no field value yet).
        let attrs = match db::member(&self.pool.get(), id) {
            Ok(Some(attrs)) => attrs,
            Ok(None) => {
                return Err(self.reject(&asked, &serving, StatusCode::NOT_FOUND, "no such member"))
            }
            Err(e) => return Err(self.failed(&asked, &e)),
        };
        // An update or an erasure counts like a read (rule 9: a scraper must not walk the
        // membership with writes).
        let ctx = self.metered(&principal, ctx, 1);
        Ok(OneMember {
            serving,
            asked,
            principal,
            action,
            attrs,
            ctx,
        })
    }

    /// Decides every field of the member of `one`, logged; the reply instead if refused.
    fn decide_one<'s>(
        &self,
        one: &'s OneMember,
        id: &str,
    ) -> Result<(FieldDecisions<'s>, DecisionRecord), Reply> {
        let member = MemberRef {
            id,
            attrs: &one.attrs,
        };
        self.decide(
            &one.asked,
            &one.serving,
            &one.principal,
            one.action,
            member,
            &one.ctx,
        )
    }

    /// 403: `what` is not permitted; the fields refused, for the caller to see.
    fn forbidden(one: &OneMember, what: &str, refused: Vec<String>) -> Reply {
        Reply {
            status: StatusCode::FORBIDDEN,
            body: json!({
                "error": what,
                "refused": refused,
                "policy_version": one.serving.engine.version().as_str(),
                "request_id": one.asked.request_id,
            }),
            request_id: one.asked.request_id.clone(),
        }
    }

    fn get_member(&self, headers: &HeaderMap, id: &str, params: Params) -> Reply {
        let one = match self.one_member(headers, &Method::GET, id, &params) {
            Ok(one) => one,
            Err(reply) => return reply,
        };
        let (decided, record) = match self.decide_one(&one, id) {
            Ok(x) => x,
            Err(reply) => return reply,
        };
        if decided.granted().is_empty() {
            let what = "no field of this member is permitted to this principal now";
            return Self::forbidden(&one, what, Vec::new());
        }
        let fields = match self.fields(&one.serving, id, &decided) {
            Ok(fields) => fields,
            Err(e) => return self.failed(&one.asked, &e),
        };
        Reply {
            status: StatusCode::OK,
            body: json!({
                "id": id,
                "fields": fields,
                "withheld": record.refused,
                "policy_version": one.serving.engine.version().as_str(),
                "request_id": one.asked.request_id,
            }),
            request_id: one.asked.request_id.clone(),
        }
    }

    /// `PATCH /members/{id}`: writes the fields of `body` if the policies permit
    /// `update` on every one (all or none), and answers the fields written, no value.
    fn patch_member(
        &self,
        headers: &HeaderMap,
        id: &str,
        params: Params,
        body: Result<BTreeMap<String, Value>, String>,
    ) -> Reply {
        let one = match self.one_member(headers, &Method::PATCH, id, &params) {
            Ok(one) => one,
            Err(reply) => return reply,
        };
        let bad = |why: &str| self.reject(&one.asked, &one.serving, StatusCode::BAD_REQUEST, why);
        let values = match body.and_then(|b| self.updates(&one.serving, b)) {
            Ok(v) => v,
            Err(why) => return bad(&why),
        };
        let (decided, _) = match self.decide_one(&one, id) {
            Ok(x) => x,
            Err(reply) => return reply,
        };
        let catalogue = one.serving.engine.catalogue();
        let refused: Vec<String> = values
            .keys()
            .filter(|f| {
                catalogue
                    .id(f)
                    .is_none_or(|f| !decided.granted().contains(f))
            })
            .cloned()
            .collect();
        if !refused.is_empty() {
            let what = "these fields may not be updated by this principal now: nothing was written";
            return Self::forbidden(&one, what, refused);
        }
        let written = db::update(&mut self.pool.writer(), id, &values);
        self.written(
            &one,
            id,
            written,
            ("updated", json!(values.keys().collect::<Vec<_>>())),
        )
    }

    /// The field values of a PATCH body, checked: known fields, text values, none the
    /// example cannot change, and values the attributes they mirror can hold.
    fn updates(
        &self,
        serving: &Serving,
        body: BTreeMap<String, Value>,
    ) -> Result<BTreeMap<String, String>, String> {
        if body.is_empty() {
            return Err("the body names no field: {\"field\": \"value\", ...}".into());
        }
        let catalogue = serving.engine.catalogue();
        body.into_iter()
            .map(|(field, value)| {
                if catalogue.id(&field).is_none() {
                    return Err(format!("no such field: {}", clipped(&field)));
                }
                if db::NOT_UPDATABLE.contains(&field.as_str()) {
                    return Err(format!(
                        "{field} is changed by the membership process, not by an update here"
                    ));
                }
                let Value::String(value) = value else {
                    return Err(format!("{field}: the value must be text"));
                };
                db::mirrored(&field, &value)?;
                Ok((field, value))
            })
            .collect()
    }

    /// `DELETE /members/{id}`: erases the member's record if the policies permit `erase`
    /// on every field of it.
    fn delete_member(&self, headers: &HeaderMap, id: &str, params: Params) -> Reply {
        let one = match self.one_member(headers, &Method::DELETE, id, &params) {
            Ok(one) => one,
            Err(reply) => return reply,
        };
        let (_, record) = match self.decide_one(&one, id) {
            Ok(x) => x,
            Err(reply) => return reply,
        };
        if !record.refused.is_empty() {
            let what = "the record may not be erased by this principal now: nothing was erased";
            return Self::forbidden(&one, what, record.refused.clone());
        }
        let erased = db::erase(&mut self.pool.writer(), id);
        self.written(&one, id, erased, ("erased", json!(true)))
    }

    /// The answer to a write: `done` (a key and its value) if the member was there to
    /// write, 404 if it was gone by then (erased between the decision and the write).
    fn written(
        &self,
        one: &OneMember,
        id: &str,
        outcome: Result<bool, db::DbError>,
        done: (&str, Value),
    ) -> Reply {
        match outcome {
            Ok(true) => Reply {
                status: StatusCode::OK,
                body: json!({
                    "id": id,
                    done.0: done.1,
                    "policy_version": one.serving.engine.version().as_str(),
                    "request_id": one.asked.request_id,
                }),
                request_id: one.asked.request_id.clone(),
            },
            Ok(false) => self.reject(
                &one.asked,
                &one.serving,
                StatusCode::NOT_FOUND,
                "no such member",
            ),
            Err(e) => self.failed(&one.asked, &e),
        }
    }

    fn get_page(&self, headers: &HeaderMap, params: Params) -> Reply {
        let serving = self.policies.current();
        let action = params.action.as_deref().unwrap_or("read");
        let clp = params.clp.clone().unwrap_or_default();
        let asked = self.asked(headers, action, &format!("clp:{clp}"));
        let principal = match self.principal(headers, &serving) {
            Ok(p) => p,
            Err(why) => return self.reject(&asked, &serving, StatusCode::UNAUTHORIZED, &why),
        };
        let bad = |why: &str| self.reject(&asked, &serving, StatusCode::BAD_REQUEST, why);
        if clp.is_empty() {
            return bad("a page needs clp=ID (GET /members?clp=...)");
        }
        let limit = match params.limit.as_deref().map(str::parse::<usize>) {
            None => 50.min(self.max_page),
            Some(Ok(n)) if (1..=self.max_page).contains(&n) => n,
            Some(_) => {
                return bad(&format!(
                    "limit must be a whole number from 1 to {}",
                    self.max_page
                ))
            }
        };
        let (action, ctx) = match self.context(&asked, &params) {
            Ok(x) => x,
            Err(why) => return bad(&why),
        };
        if !action.discloses() {
            return bad(&not_disclosing(action));
        }
        if !serving.directory.records().clps.contains_key(&clp) {
            return self.reject(&asked, &serving, StatusCode::NOT_FOUND, "no such CLP");
        }
        let after = params.after.as_deref().unwrap_or("");
        // The page's rows, each with its member's attributes (no field value yet).
        let rows: Vec<(String, Member)> = match db::page(&self.pool.get(), &clp, after, limit) {
            Ok(rows) => rows,
            Err(e) => return self.failed(&asked, &e),
        };
        let ctx = self.metered(&principal, ctx, rows.len());
        // Each member of the page is one more read: the i-th is decided with the reads
        // before it, so a page that crosses the hourly limit is served up to the limit and
        // refused past it (one count for the whole page would let it overshoot). So the
        // page is decided member by member, not as one `PageRequest` with one context.
        let mut decided = Vec::with_capacity(rows.len());
        for (i, (id, attrs)) in rows.iter().enumerate() {
            let before = u64::try_from(i).unwrap_or(u64::MAX);
            let ctx = ctx
                .clone()
                .reads_this_hour(ctx.reads_this_hour.saturating_add(before));
            let member = MemberRef { id, attrs };
            match self.decide(&asked, &serving, &principal, action, member, &ctx) {
                Ok((d, _)) => decided.push(d),
                Err(reply) => return reply,
            }
        }
        let mut members = Vec::new();
        for ((id, _), d) in rows.iter().zip(&decided) {
            if d.granted().is_empty() {
                continue;
            }
            match self.fields(&serving, id, d) {
                Ok(fields) => members.push(json!({ "id": id, "fields": fields })),
                Err(e) => return self.failed(&asked, &e),
            }
        }
        let next = (rows.len() == limit)
            .then(|| rows.last().map(|(id, _)| id.clone()))
            .flatten();
        Reply {
            status: StatusCode::OK,
            body: json!({
                "clp": clp,
                "members": members,
                "next": next,
                "policy_version": serving.engine.version().as_str(),
                "request_id": asked.request_id,
            }),
            request_id: asked.request_id,
        }
    }

    /// The action and context the parameters state (reads not yet counted).
    fn context(&self, asked: &Asked, params: &Params) -> Result<(Action, Context), String> {
        let action: Action = asked.action.parse().map_err(|e| format!("action: {e}"))?;
        let mut ctx = Context::at(asked.now);
        ctx.election = params.election.clone();
        ctx.session = params.session.clone();
        ctx.purpose = params.purpose.clone();
        ctx.reason = params.reason.clone();
        Ok((action, ctx))
    }

    /// `ctx` with the principal's reads in the past hour, counting `reads` more; a meter
    /// that cannot count refuses every read (fail closed).
    fn metered(&self, principal: &PrincipalId, ctx: Context, reads: usize) -> Context {
        let reads = u64::try_from(reads).unwrap_or(u64::MAX);
        let metered = self.meter.observe_fail_closed(principal, ctx.now, reads);
        if let Some(e) = &metered.error {
            eprintln!("crm: volume meter: {e}: reads by {principal} refused");
        }
        ctx.reads_this_hour(metered.reads_this_hour)
    }

    /// The granted fields' values, read from the database only now.
    fn fields(
        &self,
        serving: &Serving,
        id: &str,
        decided: &FieldDecisions<'_>,
    ) -> Result<Value, db::DbError> {
        let names = serving.engine.catalogue().names(decided.granted());
        let values = db::values(&self.pool.get(), id, &names)?;
        Ok(json!(values))
    }

    fn failed(&self, asked: &Asked, e: &str) -> Reply {
        eprintln!("crm: request {}: {e}", asked.request_id);
        Reply {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: json!({ "error": "the database failed", "request_id": asked.request_id }),
            request_id: asked.request_id.clone(),
        }
    }

    /// Re-reads the policy directory; a new version is served once the directory of
    /// principals is rebuilt for it (`ReloadableEngine::reload` does both). Errors keep the
    /// old version and show in `GET /policy`.
    fn reload(&self) {
        let error = match self.policies.reload() {
            Ok(outcome) => {
                if let ReloadOutcome::Swapped { from, to } = outcome {
                    println!(
                        "crm: now serving policies {} (was {})",
                        to.short(),
                        from.short()
                    );
                }
                None
            }
            // Refused (does not load, fails the check, or the records do not fit it):
            // the error names the version still served.
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = &error {
            eprintln!("crm: reload refused: {e}");
        }
        let mut status = match self.reload.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        status.reloads += 1;
        status.version = Some(
            self.policies
                .current()
                .engine
                .version()
                .as_str()
                .to_string(),
        );
        status.error = error;
    }
}

/// Runs `answer` on tokio's blocking pool: deciding, appending to the log (a write, maybe
/// an `fsync`) and reading SQLite all block, and must not stall the threads that serve
/// connections.
async fn blocking(app: Arc<App>, answer: impl FnOnce(&App) -> Reply + Send + 'static) -> Reply {
    match tokio::task::spawn_blocking(move || answer(&app)).await {
        Ok(reply) => reply,
        Err(e) => {
            eprintln!("crm: a request failed: {e}");
            Reply {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                body: json!({ "error": "the request failed" }),
                request_id: String::new(),
            }
        }
    }
}

/// `GET`, `PATCH` and `DELETE /members/{id}`.
async fn member(
    State(app): State<Arc<App>>,
    method: Method,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<Params>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    blocking(app, move |app| match (id, params) {
        (Ok(Path(id)), Ok(Query(params))) => match method {
            Method::PATCH => {
                let body = body.map_err(|e| e.body_text()).and_then(|b| {
                    serde_json::from_slice(&b).map_err(|e| {
                        format!("the body is not a JSON object of field names to values: {e}")
                    })
                });
                app.patch_member(&headers, &id, params, body)
            }
            Method::DELETE => app.delete_member(&headers, &id, params),
            _ => app.get_member(&headers, &id, params),
        },
        (id, params) => {
            let serving = app.policies.current();
            let asked = app.asked(&headers, "", "");
            let why = match (id, params) {
                (Err(e), _) => e.body_text(),
                (_, Err(e)) => e.body_text(),
                _ => String::new(),
            };
            app.reject(&asked, &serving, StatusCode::BAD_REQUEST, &why)
        }
    })
    .await
}

async fn page(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    params: Result<Query<Params>, QueryRejection>,
) -> Reply {
    blocking(app, move |app| match params {
        Ok(Query(params)) => app.get_page(&headers, params),
        Err(e) => {
            let serving = app.policies.current();
            let asked = app.asked(&headers, "", "");
            app.reject(&asked, &serving, StatusCode::BAD_REQUEST, &e.body_text())
        }
    })
    .await
}

async fn policy(State(app): State<Arc<App>>) -> Json<Value> {
    let (reloads, version, error) = {
        let s = match app.reload.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        (s.reloads, s.version.clone(), s.error.clone())
    };
    let version =
        version.unwrap_or_else(|| app.policies.current().engine.version().as_str().to_string());
    Json(json!({
        "version": version,
        "directory": app.policies.dir().display().to_string(),
        "reloads": reloads,
        "reload_error": error,
    }))
}

/// The longest time the log's last records go unsigned while checkpoints are on.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);

/// The longest request target (path and query) served.
const MAX_TARGET: usize = 8 * 1024;
/// The most header bytes (names and values) a request may carry.
const MAX_HEADERS: usize = 16 * 1024;
/// The largest body taken (a PATCH's fields).
const MAX_BODY: usize = 16 * 1024;

/// Refuses a request over the size limits before any route reads it (414 for its target,
/// 431 for its headers), logged like every response, as a small record whatever it sent.
async fn limits(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let headers: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    let refusal = if target > MAX_TARGET {
        Some((
            StatusCode::URI_TOO_LONG,
            format!("a request target of {target} bytes: at most {MAX_TARGET}"),
        ))
    } else if headers > MAX_HEADERS {
        Some((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("{headers} bytes of headers: at most {MAX_HEADERS}"),
        ))
    } else {
        None
    };
    let Some((status, why)) = refusal else {
        // A slow body (or a stalled answer) is cut off at the request timeout: 408,
        // logged. Work already handed to the blocking pool finishes and is logged as
        // decided; only its answer is lost.
        let headers = req.headers().clone();
        return match tokio::time::timeout(app.request_timeout, next.run(req)).await {
            Ok(response) => response,
            Err(_) => {
                let why = format!("no answer within {:?}", app.request_timeout);
                refuse(app, headers, StatusCode::REQUEST_TIMEOUT, why)
                    .await
                    .into_response()
            }
        };
    };
    refuse(app, req.headers().clone(), status, why)
        .await
        .into_response()
}

/// A route asked with a method it does not answer: logged like every response, then 405.
async fn method_not_allowed(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Reply {
    let why = format!("method {method} not allowed on {}", clipped(uri.path()));
    refuse(app, headers, StatusCode::METHOD_NOT_ALLOWED, why).await
}

/// Logs a request refused before any route read it, and answers `status` with `why`.
async fn refuse(app: Arc<App>, headers: HeaderMap, status: StatusCode, why: String) -> Reply {
    blocking(app, move |app| {
        let serving = app.policies.current();
        let asked = app.asked(&headers, "", "");
        app.reject(&asked, &serving, status, &why)
    })
    .await
}

/// Any other route: logged like every response, then 404.
async fn fallback(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Reply {
    let why = format!("no such route: {method} {}", clipped(uri.path()));
    refuse(app, headers, StatusCode::NOT_FOUND, why).await
}

fn start(args: &Args) -> Result<App, String> {
    if !args.db.exists() {
        let membership = sample::bundled();
        db::create(&args.db, &membership)?;
        println!(
            "crm: created {} with the bundled sample ({} members)",
            args.db.display(),
            membership.members.len()
        );
    }
    let pool = db::Pool::open(&args.db, 4)?;
    // The principal side only: members are read with their rows, request by request.
    let records = db::load(&pool.get())?;
    let members = db::member_count(&pool.get())?;
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

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let app = match start(&args) {
        Ok(app) => Arc::new(app),
        Err(e) => {
            eprintln!("crm: {e}");
            return ExitCode::FAILURE;
        }
    };
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
    let router = Router::new()
        .route("/members/{id}", get(member).patch(member).delete(member))
        .route("/members", get(page))
        .route("/policy", get(policy))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(app.clone(), limits))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Arc::clone(&app));
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
    let bounds = ServeLimits {
        header_timeout: Duration::from_millis(args.header_timeout_ms.max(1)),
        max_connections: args.max_connections.max(1),
    };
    tokio::select! {
        () = serve(listener, router, Arc::clone(&app), bounds) => {}
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

/// What the accept loop bounds.
struct ServeLimits {
    header_timeout: Duration,
    max_connections: usize,
}

/// Serves `router` on `listener`, each connection with hyper's HTTP/1 server under a
/// header-read timeout, at most `max_connections` at once (`axum::serve` has neither:
/// 20,000 half-sent requests used to exhaust the file descriptors). A request hyper
/// refuses itself (malformed HTTP) is logged as a rejection, like every answer.
async fn serve(listener: TcpListener, router: Router, app: Arc<App>, limits: ServeLimits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // At the cap, stop accepting: new connections wait in the kernel's queue.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: wait a little rather than spin.
                eprintln!("crm: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(router.clone());
        let app = Arc::clone(&app);
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                if e.is_parse() || e.is_parse_too_large() {
                    // hyper answered 400 (or 431) itself: the log still says so.
                    let why = format!("malformed HTTP request: {e}");
                    refuse(app, HeaderMap::new(), StatusCode::BAD_REQUEST, why).await;
                }
            }
            drop(slot);
        });
    }
}
