//! The CRM's answers: who asks (the principal, the parameters), the member's row, the
//! meter, the decision and its record in the log, and only then the values or the write.
//! Everything here blocks (the database, the log); `http` runs it on tokio's blocking pool.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jiff::Timestamp;
use membergate::audit::{DecisionRecord, DecisionSink, JsonlSink};
use membergate::meter::VolumeMeter;
use membergate::plan::FieldPlan;
use membergate::{
    Action, Context, FieldDecisions, Member, MemberRef, MemberRequest, Plan, PrincipalId,
    ReloadOutcome, ReloadableEngine, RequestError, Serving,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::db;
use crate::listing::{self, Listing, Scope};

/// The last reload's outcome, for `GET /policy`: the version it left served with its
/// error, written together so that the two are never read from different reloads.
#[derive(Default)]
pub(crate) struct ReloadStatus {
    pub(crate) reloads: u64,
    /// `None` before the first reload (the version served at start).
    pub(crate) version: Option<String>,
    pub(crate) error: Option<String>,
}

pub(crate) struct App {
    /// The policies and the directory of principals built for them: each request decides
    /// on one snapshot (`current()`); a reload swaps both.
    pub(crate) policies: ReloadableEngine,
    pub(crate) pool: db::Pool,
    pub(crate) log: JsonlSink,
    pub(crate) meter: Box<dyn VolumeMeter>,
    pub(crate) clock: Option<Timestamp>,
    pub(crate) max_page: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) started: String,
    pub(crate) next_request: AtomicU64,
    pub(crate) reload: Mutex<ReloadStatus>,
}

/// The query parameters either route accepts; any other is refused (a misspelt
/// `electon=` must not silently decide without the election).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Params {
    pub(crate) action: Option<String>,
    pub(crate) election: Option<String>,
    pub(crate) session: Option<String>,
    pub(crate) purpose: Option<String>,
    pub(crate) reason: Option<String>,
    pub(crate) clp: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) q: Option<String>,
    pub(crate) after: Option<String>,
    pub(crate) limit: Option<String>,
}

/// A listing or an export, checked and ready to read pages of.
pub(crate) struct ListAsk {
    serving: Arc<Serving>,
    asked: Asked,
    principal: PrincipalId,
    action: Action,
    /// The request's context, reads not yet counted.
    ctx: Context,
    scope: Scope,
    search: Option<String>,
    /// The catalogue fields with a column, in catalogue order.
    fields: Vec<String>,
}

impl ListAsk {
    /// The id the request is logged under.
    pub(crate) fn request_id(&self) -> &str {
        &self.asked.request_id
    }
}

/// A page of a listing.
struct Page {
    members: Vec<Value>,
    /// The rows the query returned: every one was decided and logged.
    rows_read: usize,
    next: Option<String>,
    /// Whether the plan decided every row alone (else the upper bound was read).
    exact: bool,
}

/// The rows an export reads per query.
pub(crate) const EXPORT_PAGE: usize = 1_000;

/// The rows the scan baseline ([`App::scan_page`]) reads per query after its first.
pub(crate) const SCAN_BATCH: usize = 1_000;

/// An answer, and the request id it is logged under.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Value,
    pub(crate) request_id: String,
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
pub(crate) const MAX_ECHO: usize = 200;

pub(crate) fn clipped(s: &str) -> String {
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

    /// Logs a request refused before its parameters were read (too large, a route or
    /// method not served, malformed) and answers `status` with `why`.
    pub(crate) fn refuse_unread(
        &self,
        headers: &HeaderMap,
        status: StatusCode,
        why: &str,
    ) -> Reply {
        let serving = self.policies.current();
        let asked = self.asked(headers, "", "");
        self.reject(&asked, &serving, status, why)
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
        if params.clp.is_some()
            || params.region.is_some()
            || params.q.is_some()
            || params.after.is_some()
            || params.limit.is_some()
        {
            return Err(bad(
                "clp, region, q, after and limit are for pages of a listing: GET /members?...",
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
        let attrs = match self.pool.member(id) {
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

    pub(crate) fn get_member(&self, headers: &HeaderMap, id: &str, params: Params) -> Reply {
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
    pub(crate) fn patch_member(
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
        let written = self.pool.update(id, &values);
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
    pub(crate) fn delete_member(&self, headers: &HeaderMap, id: &str, params: Params) -> Reply {
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
        let erased = self.pool.erase(id);
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

    /// What a listing or an export asks, checked: the principal, the action, the scope,
    /// the search; the rejection (logged) otherwise. `export`: the action is
    /// `bulk_export`, and a principal the plan allows no field of is refused (403).
    fn listing(
        &self,
        headers: &HeaderMap,
        params: &Params,
        export: bool,
    ) -> Result<ListAsk, Reply> {
        let serving = self.policies.current();
        let default = if export { "bulk_export" } else { "read" };
        let action = params.action.as_deref().unwrap_or(default);
        let what = match (&params.clp, &params.region) {
            (Some(clp), _) => format!("clp:{clp}"),
            (None, Some(region)) => format!("region:{region}"),
            (None, None) if export => "export".to_string(),
            (None, None) => "members".to_string(),
        };
        let asked = self.asked(headers, action, &what);
        let principal = match self.principal(headers, &serving) {
            Ok(p) => p,
            Err(why) => return Err(self.reject(&asked, &serving, StatusCode::UNAUTHORIZED, &why)),
        };
        let bad = |why: &str| self.reject(&asked, &serving, StatusCode::BAD_REQUEST, why);
        let (action, ctx) = self.context(&asked, params).map_err(|why| bad(&why))?;
        if export && action != Action::BulkExport {
            return Err(bad(&format!(
                "an export is the action bulk_export, not {action}"
            )));
        }
        if !action.discloses() {
            return Err(bad(&not_disclosing(action)));
        }
        if export && (params.after.is_some() || params.limit.is_some()) {
            return Err(bad(
                "an export takes no after or limit: it streams every member",
            ));
        }
        let records = serving.directory.records();
        let scope = match (&params.clp, &params.region) {
            (Some(_), Some(_)) => return Err(bad("clp and region: ask for one")),
            (Some(clp), None) => {
                if !records.clps.contains_key(clp) {
                    return Err(self.reject(
                        &asked,
                        &serving,
                        StatusCode::NOT_FOUND,
                        "no such CLP",
                    ));
                }
                Scope::Clps(vec![clp.clone()])
            }
            (None, Some(region)) => {
                if !records.regions.contains_key(region) {
                    let why = "no such region";
                    return Err(self.reject(&asked, &serving, StatusCode::NOT_FOUND, why));
                }
                let clps = records
                    .clps
                    .iter()
                    .filter(|(_, c)| &c.region == region)
                    .map(|(id, _)| id.clone())
                    .collect();
                Scope::Clps(clps)
            }
            (None, None) => Scope::All,
        };
        // The catalogue's fields the database has a column for, in catalogue order.
        let fields: Vec<String> = serving
            .engine
            .catalogue()
            .iter()
            .map(|(_, f)| f.name.clone())
            .filter(|f| self.pool.fields.contains(f))
            .collect();
        let search = match params.q.as_deref() {
            None => None,
            Some("") => return Err(bad("q=TEXT searches names: TEXT must not be empty")),
            Some(q) if q.chars().count() > MAX_ECHO => {
                return Err(bad(&format!("q is longer than {MAX_ECHO} characters")))
            }
            Some(_) if !fields.iter().any(|f| f == "name") => {
                return Err(bad("this database has no name to search"))
            }
            Some(q) => Some(q.to_string()),
        };
        Ok(ListAsk {
            serving,
            asked,
            principal,
            action,
            ctx,
            scope,
            search,
            fields,
        })
    }

    /// The principal's plan now, with the reads counted so far (none added).
    fn plan(&self, ask: &ListAsk) -> Result<Plan, Reply> {
        let ctx = self.metered(&ask.principal, ask.ctx.clone(), 0);
        ask.serving
            .engine
            .plan(&ask.serving.directory, &ask.principal, ask.action, &ctx)
            .map_err(|e| {
                self.reject(
                    &ask.asked,
                    &ask.serving,
                    StatusCode::BAD_REQUEST,
                    &e.to_string(),
                )
            })
    }

    /// One page of a listing: the rows the plan may allow, read with only the columns it
    /// may reveal, each decided by the engine (the i-th with the reads before it) and
    /// logged before its values leave; the members given a field, with the fields both
    /// revealed and granted (and, in a search, only those whose name is granted).
    fn list_page(&self, ask: &ListAsk, after: &str, limit: usize) -> Result<Page, Reply> {
        let plan = self.plan(ask)?;
        let listing = Listing {
            scope: &ask.scope,
            search: ask.search.as_deref(),
            after,
            limit,
        };
        let query = listing::query(&plan, &ask.fields, &listing);
        let rows = self
            .pool
            .list(&query, ask.fields.len())
            .map_err(|e| self.failed(&ask.asked, &e))?;
        let ctx = self.metered(&ask.principal, ask.ctx.clone(), rows.len());
        let mut members = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            if let Some(member) = self.serve_row(ask, row, &ctx, i)? {
                members.push(member);
            }
        }
        let next = (rows.len() == limit)
            .then(|| rows.last().map(|r| r.id.clone()))
            .flatten();
        Ok(Page {
            members,
            rows_read: rows.len(),
            next,
            exact: plan.is_exact(),
        })
    }

    /// Decides `row` with `before` more reads than `ctx` counts (a page's `i`-th row: the
    /// rows before it in its query), and logs the decision; the member as served (its id and
    /// the fields both read and granted), or `None` if no field is granted (or, in a
    /// search, not its name).
    fn serve_row(
        &self,
        ask: &ListAsk,
        row: &db::Listed,
        ctx: &Context,
        before: usize,
    ) -> Result<Option<Value>, Reply> {
        let catalogue = ask.serving.engine.catalogue();
        let before = u64::try_from(before).unwrap_or(u64::MAX);
        let ctx = ctx
            .clone()
            .reads_this_hour(ctx.reads_this_hour.saturating_add(before));
        let member = MemberRef {
            id: &row.id,
            attrs: &row.attrs,
        };
        let (decided, _) = self.decide(
            &ask.asked,
            &ask.serving,
            &ask.principal,
            ask.action,
            member,
            &ctx,
        )?;
        let granted = decided.granted();
        let name = catalogue.id("name");
        if granted.is_empty() || (ask.search.is_some() && name.is_none_or(|n| !granted.contains(n)))
        {
            return Ok(None);
        }
        let mut fields = serde_json::Map::new();
        for (f, value) in ask.fields.iter().zip(&row.values) {
            let allowed = catalogue.id(f).is_some_and(|id| granted.contains(id));
            if let (true, Some(v)) = (allowed, value) {
                fields.insert(f.clone(), Value::String(v.clone()));
            }
        }
        Ok(Some(json!({ "id": row.id, "fields": fields })))
    }

    /// The baseline of `--measure-listing` (`measure.rs`), never served over HTTP: the
    /// page of `GET /members` (the same parameters, checks and log) found as the CRM found
    /// it before plans: the members in scope read in id order with every column and no
    /// plan condition, `limit` rows by the first query and [`SCAN_BATCH`] by each next
    /// one (keyset on id), every row decided and logged as a page's is, until `limit`
    /// members with a granted field are found or the rows run out. Each row is decided
    /// with the reads the meter counted before its query and not the rows before it: a
    /// scan of thousands of rows would otherwise cross every hourly limit (which is what
    /// plans spare), and the baseline is the time to find the same page. A search is refused
    /// (the measurement asks for none). The body: `members`, `rows_read` (the rows
    /// decided, each logged) and `next` (the last row decided when the page is full).
    pub(crate) fn scan_page(&self, headers: &HeaderMap, params: Params) -> Reply {
        let ask = match self.listing(headers, &params, false) {
            Ok(ask) => ask,
            Err(reply) => return reply,
        };
        let bad = |why: &str| self.reject(&ask.asked, &ask.serving, StatusCode::BAD_REQUEST, why);
        if ask.search.is_some() {
            return bad("the scan baseline takes no search");
        }
        let limit = match self.page_limit(&params) {
            Ok(limit) => limit,
            Err(why) => return bad(&why),
        };
        let mut after = params.after.clone().unwrap_or_default();
        let (mut members, mut rows_read, mut next) = (Vec::new(), 0usize, None);
        let mut batch = limit;
        'scan: loop {
            let listing = Listing {
                scope: &ask.scope,
                search: None,
                after: &after,
                limit: batch,
            };
            let query = listing::scan(&ask.fields, &listing);
            let rows = match self.pool.list(&query, ask.fields.len()) {
                Ok(rows) => rows,
                Err(e) => return self.failed(&ask.asked, &e),
            };
            let ctx = self.metered(&ask.principal, ask.ctx.clone(), rows.len());
            for row in &rows {
                rows_read += 1;
                match self.serve_row(&ask, row, &ctx, 0) {
                    Ok(Some(member)) => members.push(member),
                    Ok(None) => {}
                    Err(reply) => return reply,
                }
                if members.len() == limit {
                    next = Some(row.id.clone());
                    break 'scan;
                }
            }
            match rows.last() {
                Some(last) if rows.len() == batch => after.clone_from(&last.id),
                _ => break,
            }
            batch = SCAN_BATCH;
        }
        Reply {
            status: StatusCode::OK,
            body: json!({
                "members": members,
                "next": next,
                "rows_read": rows_read,
                "request_id": ask.asked.request_id,
            }),
            request_id: ask.asked.request_id,
        }
    }

    /// A page's `limit` (50 by default), or why it is refused.
    fn page_limit(&self, params: &Params) -> Result<usize, String> {
        match params.limit.as_deref().map(str::parse::<usize>) {
            None => Ok(50.min(self.max_page)),
            Some(Ok(n)) if (1..=self.max_page).contains(&n) => Ok(n),
            Some(_) => Err(format!(
                "limit must be a whole number from 1 to {}",
                self.max_page
            )),
        }
    }

    /// `GET /members`: a page of the members the principal may see (of a CLP, a region,
    /// or all), listed through the plan.
    pub(crate) fn get_page(&self, headers: &HeaderMap, params: Params) -> Reply {
        let ask = match self.listing(headers, &params, false) {
            Ok(ask) => ask,
            Err(reply) => return reply,
        };
        let bad = |why: &str| self.reject(&ask.asked, &ask.serving, StatusCode::BAD_REQUEST, why);
        let limit = match self.page_limit(&params) {
            Ok(limit) => limit,
            Err(why) => return bad(&why),
        };
        let after = params.after.as_deref().unwrap_or("");
        let page = match self.list_page(&ask, after, limit) {
            Ok(page) => page,
            Err(reply) => return reply,
        };
        let mut body = json!({
            "members": page.members,
            "next": page.next,
            "rows_read": page.rows_read,
            "exact": page.exact,
            "policy_version": ask.serving.engine.version().as_str(),
            "request_id": ask.asked.request_id,
        });
        for (key, value) in [
            ("clp", &params.clp),
            ("region", &params.region),
            ("q", &params.q),
        ] {
            if let Some(v) = value {
                body[key] = json!(v);
            }
        }
        Reply {
            status: StatusCode::OK,
            body,
            request_id: ask.asked.request_id,
        }
    }

    /// `GET /members/export`: checks the request and the principal's plan (403 if it
    /// allows no field of any member); the export to run ([`App::export`]) or the reply.
    pub(crate) fn start_export(
        &self,
        headers: &HeaderMap,
        params: Params,
    ) -> Result<ListAsk, Reply> {
        let ask = self.listing(headers, &params, true)?;
        let plan = self.plan(&ask)?;
        if *plan.any_field() == FieldPlan::Never {
            let why = "this principal may not bulk-export any field of any member now";
            return Err(self.reject(&ask.asked, &ask.serving, StatusCode::FORBIDDEN, why));
        }
        Ok(ask)
    }

    /// Runs an export: pages of [`EXPORT_PAGE`] rows, each listed as a page is, sent as
    /// JSON lines (one member a line) until the members run out, then a last line
    /// `{"done": true, "rows_read": N, "members": M}`; on a failure past the first line, a
    /// last line `{"error": ...}`. Stops when `send` fails (the client left). At most one
    /// page of rows is held at a time.
    pub(crate) fn export(&self, ask: &ListAsk, mut send: impl FnMut(Vec<u8>) -> bool) {
        let (mut after, mut rows_read, mut served) = (String::new(), 0usize, 0usize);
        loop {
            let page = match self.list_page(ask, &after, EXPORT_PAGE) {
                Ok(page) => page,
                Err(reply) => {
                    let mut line = reply.body.to_string().into_bytes();
                    line.push(b'\n');
                    send(line);
                    return;
                }
            };
            rows_read += page.rows_read;
            served += page.members.len();
            let mut chunk = Vec::new();
            for m in &page.members {
                chunk.extend_from_slice(m.to_string().as_bytes());
                chunk.push(b'\n');
            }
            if !chunk.is_empty() && !send(chunk) {
                return;
            }
            match page.next {
                Some(next) => after = next,
                None => break,
            }
        }
        let done = json!({
            "done": true,
            "rows_read": rows_read,
            "members": served,
            "policy_version": ask.serving.engine.version().as_str(),
            "request_id": ask.asked.request_id,
        });
        let mut line = done.to_string().into_bytes();
        line.push(b'\n');
        send(line);
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
        let values = self.pool.values(id, &names)?;
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
    pub(crate) fn reload(&self) {
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
