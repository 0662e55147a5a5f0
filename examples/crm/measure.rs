//! `--measure-listing N`: instead of serving, times the first page of 100 members and a
//! later one (keyset, `after` the middle id) for each kind of principal of
//! `membergate demo`, N requests each, through the plan (`App::get_page`: what
//! `GET /members` runs, plan, query, decisions and their log records) and through the
//! baseline (`App::scan_page`: the members in id order, every row decided and logged,
//! until 100 have a granted field), and prints a table of both. The two must serve the
//! same members with the same fields: a difference is printed and the run fails.
//!
//! Each request's reads start at 0: the App is given [`Uncounted`], a meter that counts
//! nothing, for the run (and only for it), so that 200 requests by one principal do not
//! cross its hourly limit. Decision records go to `--audit-log` as when serving: their
//! writing is part of the cost.

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use jiff::Timestamp;
use membergate::meter::{MeterError, VolumeMeter};
use membergate::sample::ids;
use membergate::PrincipalId;
use serde_json::Value;

use crate::app::{App, Params, Reply};

/// A volume meter that counts nothing (every principal has made no read this hour): for
/// `--measure-listing` only, never for serving, where it would switch off rule 9's hourly
/// limit.
pub(crate) struct Uncounted;

impl VolumeMeter for Uncounted {
    fn observe(&self, _: &PrincipalId, _: Timestamp, _: u64) -> Result<u64, MeterError> {
        Ok(0)
    }
}

/// What to measure.
pub(crate) struct Options {
    /// Requests per page and principal, through the plan (and at most as many scans).
    pub(crate) requests: usize,
    /// The longest the scans of one page and principal may take together; they stop at
    /// the first request past it (at least one is made).
    pub(crate) budget: Duration,
    /// Where the later page starts (`after`); the middle id (`m-{count / 2}`) if `None`.
    pub(crate) after: Option<String>,
}

/// The members of a page.
const PAGE: usize = 100;

/// During the 2020 leadership ballot: campaigns cleared (the CRM tests' time).
const BALLOT: &str = "2020-03-01T12:00:00Z";
/// During call session A (2020-02-20 17:00-21:00 UTC).
const CALLING: &str = "2020-02-20T18:00:00Z";

/// A kind of principal of the demo, asking at a time with a context.
struct Asker {
    label: &'static str,
    principal: String,
    at: &'static str,
    action: Option<&'static str>,
    election: Option<&'static str>,
    session: Option<&'static str>,
    reason: Option<&'static str>,
}

fn askers() -> Vec<Asker> {
    let asker = |label, principal: String, at| Asker {
        label,
        principal,
        at,
        action: None,
        election: None,
        session: None,
        reason: None,
    };
    vec![
        Asker {
            election: Some(ids::LEADER_2020),
            ..asker(
                "campaign A staff",
                format!("CampaignStaff::\"{}\"", ids::CS_A_STAFF),
                BALLOT,
            )
        },
        Asker {
            election: Some(ids::LEADER_2020),
            session: Some(ids::SESSION_A),
            ..asker(
                "phone-bank volunteer",
                format!("Volunteer::\"{}\"", ids::V_PHONEBANK),
                CALLING,
            )
        },
        asker(
            "CLP secretary",
            format!("Officer::\"{}\"", ids::O_SECRETARY_001),
            BALLOT,
        ),
        asker("MP", format!("Representative::\"{}\"", ids::MP_001), BALLOT),
        asker(
            "regional office",
            format!("Staff::\"{}\"", ids::S_REGIONAL_LONDON),
            BALLOT,
        ),
        asker(
            "membership team",
            format!("Staff::\"{}\"", ids::S_MEMBERSHIP),
            BALLOT,
        ),
        Asker {
            reason: Some("complaint 2020/17"),
            ..asker(
                "DPO, break-glass",
                format!("Staff::\"{}\"", ids::S_DPO),
                BALLOT,
            )
        },
        asker(
            "mailing processor",
            format!("Processor::\"{}\"", ids::P_MAILING),
            BALLOT,
        ),
        Asker {
            action: Some("bulk_export"),
            ..asker(
                "export role",
                format!("Staff::\"{}\"", ids::S_EXPORT),
                BALLOT,
            )
        },
    ]
}

impl Asker {
    /// Sets the app's clock to the asker's time; the headers of its requests.
    fn prepare(&self, app: &mut App) -> Result<HeaderMap, String> {
        app.clock = Some(self.at.parse().map_err(|e| format!("{}: {e}", self.at))?);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-principal",
            HeaderValue::from_str(&self.principal).map_err(|e| e.to_string())?,
        );
        Ok(headers)
    }

    fn params(&self, after: &str) -> Params {
        Params {
            action: self.action.map(String::from),
            election: self.election.map(String::from),
            session: self.session.map(String::from),
            reason: self.reason.map(String::from),
            after: (!after.is_empty()).then(|| after.to_string()),
            limit: Some(PAGE.to_string()),
            ..Params::default()
        }
    }
}

/// A page as served: its members (id and fields), the rows read, the next page's start.
#[derive(Clone)]
struct Served {
    members: Vec<Value>,
    rows_read: u64,
    next: Option<String>,
    exact: Option<bool>,
}

fn served(who: &str, how: &str, reply: &Reply) -> Result<Served, String> {
    if reply.status != StatusCode::OK {
        return Err(format!(
            "{who}: the {how} page answered {}: {}",
            reply.status, reply.body
        ));
    }
    let members = reply.body["members"]
        .as_array()
        .cloned()
        .ok_or_else(|| format!("{who}: the {how} page has no members: {}", reply.body))?;
    Ok(Served {
        members,
        rows_read: reply.body["rows_read"].as_u64().unwrap_or(0),
        next: reply.body["next"].as_str().map(String::from),
        exact: reply.body["exact"].as_bool(),
    })
}

fn id_of(member: &Value) -> &str {
    member["id"].as_str().unwrap_or_default()
}

/// Whether the plan's page and the scan's serve the same members with the same fields:
/// the scan's members up to the last row the plan's page read (all of them if the plan's
/// page ended the listing). A page whose plan is not exact may read rows it serves nothing
/// of, so serve fewer than 100; its members are then the scan's first ones.
fn same(plan: &Served, scan: &Served) -> bool {
    let upto: Vec<&Value> = match &plan.next {
        None => scan.members.iter().collect(),
        Some(last) => scan
            .members
            .iter()
            .filter(|m| id_of(m) <= last.as_str())
            .collect(),
    };
    upto.len() == plan.members.len() && upto.iter().zip(&plan.members).all(|(a, b)| *a == b)
}

/// Times in milliseconds: p50, p99, max (nearest rank).
fn percentiles(times: &mut [f64]) -> (f64, f64, f64) {
    times.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let rank = (p * times.len() as f64).ceil() as usize;
        times[rank.clamp(1, times.len()) - 1]
    };
    (at(0.50), at(0.99), at(1.0))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A row of the table.
struct Row {
    label: &'static str,
    page: String,
    plan_rows: u64,
    scan_rows: u64,
    members: usize,
    exact: bool,
    plan: (f64, f64, f64),
    plan_n: usize,
    scan: (f64, f64, f64),
    scan_n: usize,
}

/// Runs the measurement on `app` (its meter replaced by [`Uncounted`]); the table on
/// standard output. `Ok(false)` if a plan's page and the scan's differ.
pub(crate) fn run(app: &mut App, options: &Options) -> Result<bool, String> {
    app.meter = Box::new(Uncounted);
    let count = app.pool.member_count()?;
    let middle = options
        .after
        .clone()
        .unwrap_or_else(|| format!("m-{:05}", count / 2));
    let requests = options.requests.max(1);
    println!(
        "crm: measuring pages of {PAGE} on {count} members, {requests} requests a page through \
         the plan, scans up to {requests} or {:.0} s; later page after {middle}",
        options.budget.as_secs_f64()
    );
    let mut agree = true;
    let askers = askers();
    let pages = [("first", ""), ("later", middle.as_str())];
    // The plans' pages first, then the scans': a scan writes up to a record per member to
    // the decision log, and the writing back of gigabytes of it would be timed in the plans'
    // pages that followed.
    let mut planned = Vec::new();
    for asker in &askers {
        let headers = asker.prepare(app)?;
        for (page, after) in pages {
            let who = format!("{} ({}), {page} page", asker.label, asker.principal);
            // Once first, not timed (it warms the caches).
            let plan = served(&who, "plan", &app.get_page(&headers, asker.params(after)))?;
            let mut times = Vec::with_capacity(requests);
            for _ in 0..requests {
                let started = Instant::now();
                let reply = app.get_page(&headers, asker.params(after));
                times.push(ms(started.elapsed()));
                if served(&who, "plan", &reply)?.members != plan.members {
                    agree = false;
                    eprintln!("crm: {who}: a plan page served other members than the first");
                }
            }
            let p = percentiles(&mut times);
            eprintln!("crm: {who}: plan p50 {:.2} ms, p99 {:.2} ms", p.0, p.1);
            planned.push((asker, after, who, plan, p));
        }
    }
    let mut rows = Vec::new();
    for (asker, after, who, plan, plan_times) in planned {
        let headers = asker.prepare(app)?;
        // Once first, not timed: the scan must serve the plan's page.
        let scan = served(&who, "scan", &app.scan_page(&headers, asker.params(after)))?;
        if !same(&plan, &scan) {
            agree = false;
            eprintln!(
                "crm: {who}: the plan's page and the scan's differ:\n  plan ({} rows read, next {:?}): {}\n  scan ({} rows read, next {:?}): {}",
                plan.rows_read,
                plan.next,
                Value::Array(plan.members.clone()),
                scan.rows_read,
                scan.next,
                Value::Array(scan.members.clone()),
            );
        }
        let mut times = Vec::new();
        let scanning = Instant::now();
        while times.len() < requests && (times.is_empty() || scanning.elapsed() < options.budget) {
            let started = Instant::now();
            let reply = app.scan_page(&headers, asker.params(after));
            times.push(ms(started.elapsed()));
            if served(&who, "scan", &reply)?.members != scan.members {
                agree = false;
                eprintln!("crm: {who}: a scan served other members than the first");
            }
        }
        let row = Row {
            label: asker.label,
            page: if after.is_empty() {
                "first".into()
            } else {
                format!("after {after}")
            },
            plan_rows: plan.rows_read,
            scan_rows: scan.rows_read,
            members: plan.members.len(),
            exact: plan.exact.unwrap_or(false),
            plan: plan_times,
            plan_n: requests,
            scan: percentiles(&mut times),
            scan_n: times.len(),
        };
        eprintln!(
            "crm: {who}: scan p50 {:.2} ms, p99 {:.2} ms ({} scans)",
            row.scan.0, row.scan.1, row.scan_n
        );
        rows.push(row);
    }
    print(&rows);
    let missed = rows.iter().filter(|r| r.plan.1 >= 10.0).count();
    println!(
        "plan p99 under 10 ms: {} of {} pages",
        rows.len() - missed,
        rows.len()
    );
    if agree {
        println!("every plan page served the members and fields of the scan's page");
    } else {
        eprintln!("crm: the plan's pages and the scan's differ (above)");
    }
    Ok(agree)
}

fn print(rows: &[Row]) {
    let head = [
        "principal",
        "page",
        "exact",
        "rows read plan/scan",
        "members",
        "plan p50/p99/max ms",
        "n",
        "scan p50/p99/max ms",
        "n",
        "ratio p99",
    ];
    let f = |(a, b, c): (f64, f64, f64)| format!("{a:.2} / {b:.2} / {c:.2}");
    let mut table: Vec<Vec<String>> = vec![head.iter().map(|h| (*h).to_string()).collect()];
    for r in rows {
        table.push(vec![
            r.label.to_string(),
            r.page.clone(),
            if r.exact { "yes" } else { "no" }.to_string(),
            format!("{} / {}", r.plan_rows, r.scan_rows),
            r.members.to_string(),
            f(r.plan),
            r.plan_n.to_string(),
            f(r.scan),
            r.scan_n.to_string(),
            format!("{:.1}", r.scan.1 / r.plan.1.max(1e-9)),
        ]);
    }
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (n, r) in table.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("| {} |", line.join(" | "));
        if n == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            println!("|-{}-|", rule.join("-|-"));
        }
    }
}
