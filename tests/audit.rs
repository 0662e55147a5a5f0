//! The decision log: records, the JSON-lines hash chain, tampering and crashes, disk
//! full, concurrent writers, queries, the tracing sink, the `audit` commands, and signed
//! checkpoints against truncation and rebuilt chains.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use membergate::audit::{
    self, AuditError, BreakKind, Checkpoint, CheckpointError, CheckpointKey, CheckpointPolicy,
    CheckpointProblem, CheckpointReport, DecisionRecord, DecisionSink, Durability, Filter,
    InvalidKey, JsonlSink, OpenError, PublicKey, ReadError, TracingSink, VerifyReport, GENESIS,
};
use membergate::sample::{self, ids};
use membergate::{Action, Context, Directory, MemberRequest, PrincipalId, PrincipalKind, Request};
use tempfile::TempDir;

use crate::support::{engine, membergate, stderr, stdout, t as ts};

// ------------------------------------------------------------------ helpers

/// Record `i` of a test log: principals, members, actions and times vary with `i`.
fn rec(i: u64) -> DecisionRecord {
    DecisionRecord {
        at: Timestamp::from_second(1_583_020_800 + 3_600 * i as i64).expect("time"),
        recorded_at: Timestamp::now(),
        request_id: format!("req-{i}"),
        principal: format!("CampaignStaff::\"cs-{}\"", i % 3),
        action: ["read", "contact_phone"][i as usize % 2].to_string(),
        member: format!("m-{}", i % 4),
        granted: vec!["name".into(), "phone".into()],
        refused: vec!["political_views".into()],
        policies: vec!["campaign-read-contact".into()],
        version: engine().version().as_str().to_string(),
        rejected: None,
    }
}

/// A temporary directory and the log path inside it.
fn log_path() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("decisions.jsonl");
    (dir, path)
}

/// Writes records `0..n` to a new log at `path`.
fn write_log(path: &Path, n: u64) {
    let sink = JsonlSink::open(path, Durability::Flush).expect("open log");
    for i in 0..n {
        sink.record(&rec(i)).expect("record");
    }
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .expect("read log")
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .expect("write log");
}

fn json(line: &str) -> serde_json::Map<String, serde_json::Value> {
    serde_json::from_str(line).expect("JSON line")
}

fn hash_of(line: &str) -> String {
    json(line)["hash"].as_str().expect("hash").to_string()
}

/// A log of `n` records with `edit` applied to its lines: the verify report.
fn tampered(n: u64, edit: impl FnOnce(&mut Vec<String>)) -> VerifyReport {
    let (_dir, path) = log_path();
    write_log(&path, n);
    let mut l = lines(&path);
    edit(&mut l);
    write_lines(&path, &l);
    audit::verify(&path).expect("verify")
}

fn assert_broken_at(report: &VerifyReport, line: u64, kind: &BreakKind) {
    let broken = report.broken.as_ref().expect("the chain is broken");
    assert_eq!(broken.line, line, "{broken}");
    assert_eq!(&broken.kind, kind, "{broken}");
    assert_eq!(
        report.records,
        line - 1,
        "the records before the break verify"
    );
}

// ------------------------------------------------------------------ records

#[test]
fn records_from_the_engine_round_trip_through_the_log() {
    let engine = engine();
    let party = sample::bundled();
    let dir = Directory::from_membership(engine, &party).expect("the sample's directory");
    let staffer = PrincipalId::new(PrincipalKind::CampaignStaff, ids::CS_A_STAFF);
    let ctx = Context::at(ts("2020-03-01T12:00:00.123Z")).election(ids::LEADER_2020);
    let member = MemberRequest {
        principal: &staffer,
        action: Action::Read,
        member: party.member(ids::MEMBER_ELIGIBLE).expect("a member"),
        context: &ctx,
    };
    let allowed = member.field("phone");
    let denied = Request {
        field: "political_views",
        ..allowed
    };
    let fields = engine.permitted_fields(&dir, &member).expect("fields");
    let decisions = engine.field_decisions(&dir, &member).expect("decisions");
    let allowed_decision = engine.authorize(&dir, &allowed).expect("decide");
    let denied_decision = engine.authorize(&dir, &denied).expect("decide");
    // The engine's answers are Cedar's.
    let reference = engine.reference();
    assert_eq!(
        reference.permitted_fields(&dir, &member).expect("fields"),
        fields
    );
    assert_eq!(
        reference.authorize(&dir, &allowed).expect("decide"),
        allowed_decision
    );
    assert_eq!(
        reference.authorize(&dir, &denied).expect("decide"),
        denied_decision
    );
    assert_eq!(decisions.granted(), fields);
    let records = [
        DecisionRecord::for_decision("r-1", &allowed, &allowed_decision, engine.version()),
        DecisionRecord::for_decision("r-2", &denied, &denied_decision, engine.version()),
        DecisionRecord::for_fields("r-3", engine, &member, fields),
        DecisionRecord::for_field_decisions("r-4", engine, &member, &decisions),
    ];
    assert_eq!(records[0].granted, ["phone"]);
    assert!(records[0].refused.is_empty());
    assert_eq!(records[0].policies, ["campaign-read-contact"]);
    assert_eq!(records[1].refused, ["political_views"]);
    assert!(records[1].granted.is_empty());
    assert_eq!(records[2].granted, engine.catalogue().names(fields));
    let all: BTreeSet<&str> = records[2]
        .granted
        .iter()
        .chain(&records[2].refused)
        .map(String::as_str)
        .collect();
    assert_eq!(all.len(), engine.catalogue().len());
    assert!(
        records[2].policies.is_empty(),
        "a field set names no policy"
    );
    // With the field decisions, the same fields and the policies that decided them.
    assert_eq!(records[3].granted, records[2].granted);
    assert_eq!(records[3].refused, records[2].refused);
    assert_eq!(
        records[3].policies,
        decisions
            .all_policies()
            .map(str::to_string)
            .collect::<Vec<_>>()
    );
    assert!(
        records[3]
            .policies
            .iter()
            .any(|p| p == "campaign-read-contact"),
        "{:?}",
        records[3].policies
    );
    for r in &records {
        assert_eq!(r.at, ctx.now);
        assert_eq!(r.principal, r#"CampaignStaff::"cs-a-staff""#);
        assert_eq!(r.version, engine.version().as_str());
    }

    let (_dir, path) = log_path();
    let sink = JsonlSink::open(&path, Durability::Flush).expect("open");
    for r in &records {
        sink.record(r).expect("record");
    }
    drop(sink);
    // Every field survives, `recorded_at`'s nanoseconds included, and the hashes recompute.
    assert_eq!(
        audit::query(&path, &Filter::default()).expect("query"),
        records
    );
    assert!(audit::verify(&path).expect("verify").is_intact());
}

// ------------------------------------------------------------------ the chain

#[test]
fn each_line_links_to_the_one_before_and_verifies() {
    let (_dir, path) = log_path();
    let sink = JsonlSink::open(&path, Durability::Fsync).expect("open");
    assert_eq!(sink.opened().records, 0);
    assert_eq!(sink.head(), GENESIS);
    for i in 0..10 {
        sink.record(&rec(i)).expect("record");
    }
    let head = sink.head();
    drop(sink);

    let l = lines(&path);
    assert_eq!(l.len(), 10);
    let mut prev = GENESIS.to_string();
    for (i, line) in l.iter().enumerate() {
        let obj = json(line);
        assert_eq!(obj["prev"], prev.as_str(), "line {}", i + 1);
        assert_eq!(obj["request_id"], format!("req-{i}").as_str());
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        for key in [
            "at",
            "recorded_at",
            "request_id",
            "principal",
            "action",
            "member",
            "granted",
            "refused",
            "policies",
            "version",
            "prev",
            "hash",
        ] {
            assert!(keys.contains(&key), "line {} lacks {key}", i + 1);
        }
        prev = hash_of(line);
        assert_eq!(prev.len(), 64);
    }
    assert_eq!(prev, head);
    let report = audit::verify(&path).expect("verify");
    assert_eq!(
        report,
        VerifyReport {
            records: 10,
            head,
            broken: None,
            torn: None
        }
    );
}

#[test]
fn an_edited_field_in_the_middle_is_found_at_its_line() {
    let report = tampered(10, |l| {
        l[4] = l[4].replacen(r#""member":"m-0""#, r#""member":"m-9""#, 1);
    });
    assert_broken_at(&report, 5, &BreakKind::Edited);
    // Granting a field after the fact is found too.
    let report = tampered(10, |l| {
        l[6] = l[6].replacen(
            r#""granted":["name","#,
            r#""granted":["name","address","#,
            1,
        );
    });
    assert_broken_at(&report, 7, &BreakKind::Edited);
}

/// The rejection of a request by an unknown principal, under `request_id`.
fn unknown_principal(request_id: &str) -> DecisionRecord {
    DecisionRecord::rejection(
        request_id,
        ts("2020-03-01T12:00:00Z"),
        r#"Staff::"nobody""#,
        "read",
        "m-00001",
        "unknown principal",
        engine().version(),
    )
}

#[test]
fn a_rejection_is_chained_and_its_reason_cannot_be_edited_or_dropped() {
    let (_dir, path) = log_path();
    let sink = JsonlSink::open(&path, Durability::Flush).expect("open log");
    sink.record(&rec(0)).expect("record");
    let rejected = unknown_principal("req-r");
    sink.record(&rejected).expect("record");
    sink.record(&rec(2)).expect("record");
    drop(sink);
    assert!(audit::verify(&path).expect("verify").is_intact());
    let read = audit::query(&path, &Filter::default()).expect("query");
    assert_eq!(read[1].rejected.as_deref(), Some("unknown principal"));
    // A decision has no `rejected` key at all: logs from before the field read the same.
    assert!(!lines(&path)[0].contains("rejected"));

    let original = lines(&path);
    for (edit, from, to) in [
        (
            "reason edited",
            r#""rejected":"unknown principal""#,
            r#""rejected":"other""#,
        ),
        ("reason dropped", r#","rejected":"unknown principal""#, ""),
    ] {
        let mut l = original.clone();
        assert!(l[1].contains(from), "{edit}: {}", l[1]);
        l[1] = l[1].replacen(from, to, 1);
        write_lines(&path, &l);
        let report = audit::verify(&path).expect("verify");
        assert_broken_at(&report, 2, &BreakKind::Edited);
    }
}

/// A request's own text costs the log a bounded record whatever its size (issue: a
/// 65,000-parameter query string made a 131 KB record): a rejection naming 100 KB of
/// principal, member, action, id and reason is a line of under 2 KB that verifies, and
/// two long texts that differ only at their ends stay told apart.
#[test]
fn a_rejection_costs_the_log_a_bounded_record() {
    let (_dir, path) = log_path();
    let sink = JsonlSink::open(&path, Durability::Flush).expect("open log");
    let huge = |c: char, last: char| format!("{}{last}", c.to_string().repeat(100_000));
    let reject = |last: char| {
        DecisionRecord::rejection(
            huge('i', last),
            ts("2020-03-01T12:00:00Z"),
            huge('p', last),
            huge('a', last),
            huge('m', last),
            huge('w', last),
            engine().version(),
        )
    };
    let (one, two) = (reject('1'), reject('2'));
    assert_ne!(one.principal, two.principal);
    assert_ne!(one.rejected, two.rejected);
    sink.record(&one).expect("record");
    sink.record(&two).expect("record");
    drop(sink);
    for line in lines(&path) {
        assert!(line.len() < 2_000, "{} bytes", line.len());
        assert!(line.contains("100001 bytes, sha256 "), "{line}");
    }
    assert!(audit::verify(&path).expect("verify").is_intact());
    // Texts within the bound are kept as they are.
    let short = unknown_principal("req-1");
    assert_eq!(
        (
            short.request_id.as_str(),
            short.principal.as_str(),
            short.member.as_str(),
            short.rejected.as_deref()
        ),
        (
            "req-1",
            r#"Staff::"nobody""#,
            "m-00001",
            Some("unknown principal")
        )
    );
}

/// Lines whose record and hash still match but whose bytes are not the writer's: each
/// is a break at its line (a reader taking the first of two keys would read a forged
/// value; the others are the same record written another way).
#[test]
fn lines_not_written_as_the_writer_writes_them_are_found() {
    type Forge = fn(&mut String);
    let forgeries: [(&str, Forge); 6] = [
        ("a repeated key, the forged value first", |l| {
            *l = l.replacen('{', r#"{"granted":["political_views"],"#, 1);
        }),
        ("keys reordered (`member` first)", |l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            let member = format!(r#""member":{}"#, v["member"]);
            *l = l
                .replacen(&format!(",{member}"), "", 1)
                .replacen('{', &format!("{{{member},"), 1);
        }),
        ("a \\u escape", |l| {
            *l = l.replacen(r#""request_id":"req"#, r#""request_id":"\u0072eq"#, 1);
        }),
        ("a carriage return", |l| l.push('\r')),
        ("a time with +00:00", |l| {
            *l = l.replacen(r#"Z","#, r#"+00:00","#, 1);
        }),
        ("a space after a colon", |l| {
            *l = l.replacen(r#""action":"#, r#""action": "#, 1);
        }),
    ];
    for (what, forge) in forgeries {
        let report = tampered(6, |l| {
            let before = l[3].clone();
            forge(&mut l[3]);
            assert_ne!(l[3], before, "{what}: the forgery changed nothing");
        });
        assert_broken_at(&report, 4, &BreakKind::NotCanonical);
    }
}

#[test]
fn a_changed_hash_is_found_at_its_line() {
    let report = tampered(10, |l| {
        let hash = hash_of(&l[7]);
        let mut other = hash.clone().into_bytes();
        other[0] = if other[0] == b'0' { b'1' } else { b'0' };
        l[7] = l[7].replace(&hash, std::str::from_utf8(&other).expect("hex"));
    });
    assert_broken_at(&report, 8, &BreakKind::Edited);
}

#[test]
fn a_deleted_line_is_found_where_it_was() {
    let report = tampered(10, |l| {
        l.remove(3);
    });
    assert_broken_at(&report, 4, &BreakKind::Missing);
    let report = tampered(10, |l| {
        l.remove(0);
    });
    assert_broken_at(&report, 1, &BreakKind::Missing);
}

#[test]
fn swapped_and_copied_lines_are_found() {
    let report = tampered(10, |l| l.swap(5, 6));
    assert_broken_at(&report, 6, &BreakKind::Reordered { predecessor: 7 });
    let report = tampered(10, |l| {
        let copy = l[2].clone();
        l.insert(3, copy);
    });
    assert_broken_at(&report, 4, &BreakKind::Reordered { predecessor: 2 });
}

#[test]
fn lines_that_are_not_records_are_found() {
    let report = tampered(5, |l| l[2] = "{not json".into());
    let broken = report.broken.expect("broken");
    assert_eq!(broken.line, 3);
    assert!(matches!(broken.kind, BreakKind::BadJson(_)), "{broken}");
    let report = tampered(5, |l| l[1] = l[1].replacen('{', r#"{"extra":1,"#, 1));
    let broken = report.broken.expect("broken");
    assert_eq!(broken.line, 2);
    assert!(
        matches!(&broken.kind, BreakKind::BadRecord(m) if m.contains("extra")),
        "{broken}"
    );
    let report = tampered(5, |l| l.insert(2, String::new()));
    assert_eq!(report.broken.map(|b| b.line), Some(3));
}

#[test]
fn a_broken_log_is_not_extended() {
    let (_dir, path) = log_path();
    write_log(&path, 6);
    let mut l = lines(&path);
    l[2] = l[2].replacen("req-2", "req-X", 1);
    write_lines(&path, &l);
    let before = fs::read(&path).expect("read");
    match JsonlSink::open(&path, Durability::Flush) {
        Err(OpenError::Broken { at, .. }) => {
            assert_eq!((at.line, at.kind), (3, BreakKind::Edited));
        }
        other => panic!("expected a broken-chain error, got {other:?}"),
    }
    let message = JsonlSink::open(&path, Durability::Flush)
        .expect_err("broken")
        .to_string();
    assert!(message.contains("line 3"), "{message}");
    assert_eq!(
        fs::read(&path).expect("read"),
        before,
        "the file is untouched"
    );
}

#[test]
fn a_log_is_open_for_one_sink_at_a_time() {
    let (_dir, path) = log_path();
    let sink = JsonlSink::open(&path, Durability::Flush).expect("open");
    assert!(matches!(
        JsonlSink::open(&path, Durability::Flush),
        Err(OpenError::Locked { .. })
    ));
    drop(sink);
    JsonlSink::open(&path, Durability::Flush).expect("open again once closed");
}

// ------------------------------------------------------------------ crashes

/// A captured event: its target, level and fields.
type Captured = (String, tracing::Level, BTreeMap<String, String>);

/// A tracing layer that keeps every event.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Fields(BTreeMap<String, String>);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                self.0.insert(f.name().to_string(), format!("{v:?}"));
            }
            fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
                self.0.insert(f.name().to_string(), v.to_string());
            }
        }
        let mut fields = Fields(BTreeMap::new());
        event.record(&mut fields);
        let meta = event.metadata();
        self.0
            .lock()
            .expect("capture")
            .push((meta.target().to_string(), *meta.level(), fields.0));
    }
}

impl Capture {
    /// Runs `f` with this layer as the thread's subscriber.
    fn during<T>(&self, f: impl FnOnce() -> T) -> T {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(self.clone());
        tracing::subscriber::with_default(subscriber, f)
    }

    fn events(&self) -> Vec<Captured> {
        self.0.lock().expect("capture").clone()
    }
}

#[test]
fn a_torn_last_line_is_reported_then_cut_off_and_the_chain_continues() {
    let (_dir, path) = log_path();
    write_log(&path, 5);
    let intact = fs::read(&path).expect("read");
    // A crash in the middle of writing the sixth record.
    let (_other_dir, other) = log_path();
    write_log(&other, 6);
    let sixth = lines(&other).pop().expect("six lines");
    let partial = &sixth.as_bytes()[..sixth.len() / 2];
    let mut torn = intact.clone();
    torn.extend_from_slice(partial);
    fs::write(&path, &torn).expect("write");

    let report = audit::verify(&path).expect("verify");
    assert!(report.is_intact(), "a torn last line is not a break");
    assert_eq!(report.records, 5);
    let tear = report.torn.expect("torn line reported");
    assert_eq!((tear.line, tear.bytes), (6, partial.len() as u64));
    // Queries skip it.
    assert_eq!(
        audit::query(&path, &Filter::default())
            .expect("query")
            .len(),
        5
    );

    let capture = Capture::default();
    let sink = capture.during(|| JsonlSink::open(&path, Durability::Flush).expect("reopen"));
    assert_eq!(sink.opened().repaired, Some(tear));
    assert_eq!(sink.opened().records, 5);
    assert_eq!(sink.opened().head, report.head);
    assert_eq!(
        fs::read(&path).expect("read"),
        intact,
        "only the torn bytes go"
    );
    let warned = capture.events();
    assert!(
        warned
            .iter()
            .any(|(target, level, fields)| target == "membergate::audit"
                && *level == tracing::Level::WARN
                && fields.get("line").map(String::as_str) == Some("6")),
        "{warned:?}"
    );

    for i in 5..8 {
        sink.record(&rec(i)).expect("record");
    }
    drop(sink);
    let report = audit::verify(&path).expect("verify");
    assert_eq!(
        (report.records, report.torn, report.broken),
        (8, None, None)
    );
    assert!(fs::read(&path).expect("read").starts_with(&intact));
}

/// The number of newline-terminated lines of the file at `path` (0 if it is missing).
fn complete_lines(path: &Path) -> usize {
    fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

#[test]
fn killing_a_writer_mid_stream_leaves_every_complete_record_intact() {
    let (_dir, path) = log_path();
    let mut total = 0;
    for round in 0..4u64 {
        let mut args = vec![
            "audit".to_string(),
            "write-sample".into(),
            path.display().to_string(),
            "--count".into(),
            "1000000".into(),
        ];
        if round == 2 {
            args.push("--fsync".into());
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_membergate"))
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the writer");
        // Kill it once it has written some records (more in each round).
        let want = total + 50 * (round as usize + 1);
        let started = Instant::now();
        while complete_lines(&path) < want {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the writer wrote too little"
            );
            if let Some(status) = child.try_wait().expect("poll the writer") {
                panic!("the writer stopped by itself: {status}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(round * 7));
        child.kill().expect("kill the writer");
        let status = child.wait().expect("wait for the writer");
        assert!(!status.success(), "killed mid-stream, not finished");

        let report = audit::verify(&path).expect("verify");
        assert!(report.is_intact(), "round {round}: {:?}", report.broken);
        assert!(report.records as usize >= want);
        assert_eq!(report.records as usize, complete_lines(&path));
        if let Some(torn) = report.torn {
            assert_eq!(torn.line, report.records + 1, "only the last line is torn");
        }

        // Reopened, the chain goes on from the last complete record.
        let sink = JsonlSink::open(&path, Durability::Flush).expect("reopen");
        assert_eq!(sink.opened().records, report.records);
        assert_eq!(sink.opened().repaired, report.torn);
        assert_eq!(sink.opened().head, report.head);
        for i in 0..3 {
            sink.record(&rec(i)).expect("record");
        }
        drop(sink);
        let after = audit::verify(&path).expect("verify");
        assert_eq!(
            (after.records, after.torn, after.broken),
            (report.records + 3, None, None)
        );
        total = after.records as usize;
    }
}

// ------------------------------------------------------------------ failed writes

#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_is_an_error_and_the_chain_does_not_advance() {
    let sink = JsonlSink::open("/dev/full", Durability::Flush).expect("open /dev/full");
    for attempt in 0..3 {
        match sink.record(&rec(attempt)) {
            Err(AuditError::Write { path, source }) => {
                assert_eq!(path, Path::new("/dev/full"));
                assert_eq!(source.raw_os_error(), Some(28), "ENOSPC: {source}");
            }
            other => panic!("expected a write error, got {other:?}"),
        }
        assert_eq!((sink.records(), sink.head()), (0, GENESIS.to_string()));
    }
    let message = sink.record(&rec(9)).expect_err("disk full").to_string();
    assert!(
        message.contains("/dev/full") && message.contains("No space left on device"),
        "{message}"
    );
}

/// `membergate audit write-sample` under a file-size limit, so a write fails part-way
/// through a line: the partial line is cut off again and the log stays a valid chain.
#[cfg(target_os = "linux")]
#[test]
fn a_write_that_fails_part_way_leaves_no_partial_line() {
    let (_dir, path) = log_path();
    write_log(&path, 3);
    let limit_kib = 32;
    let out = Command::new("bash")
        .arg("-c")
        // Ignore SIGXFSZ so that writes past the limit fail with EFBIG instead.
        .arg(format!(
            "trap '' XFSZ; ulimit -f {limit_kib}; exec \"$0\" audit write-sample \"$1\" --count 100000"
        ))
        .arg(env!("CARGO_BIN_EXE_membergate"))
        .arg(&path)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run the writer under a file-size limit");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("cannot append a decision record") && err.contains("File too large"),
        "{err}"
    );
    let len = fs::metadata(&path).expect("log").len();
    assert!(len <= limit_kib * 1024);
    let report = audit::verify(&path).expect("verify");
    assert_eq!(report.torn, None, "the partial line was cut off");
    assert!(report.is_intact());
    assert!(report.records > 3, "records were written before the limit");
    assert_eq!(report.records as usize, complete_lines(&path));
    // Written up to the limit: the next line did not fit, and its part that did was cut.
    let longest = lines(&path).iter().map(|l| l.len() as u64 + 1).max();
    assert!(Some(limit_kib * 1024 - len) < longest);

    let sink = JsonlSink::open(&path, Durability::Flush).expect("reopen");
    assert_eq!(sink.opened().repaired, None);
    sink.record(&rec(0)).expect("record");
    drop(sink);
    assert_eq!(
        audit::verify(&path).expect("verify").records,
        report.records + 1
    );
}

// ------------------------------------------------------------------ threads

#[test]
fn concurrent_writers_make_one_valid_chain_with_every_record() {
    let (_dir, path) = log_path();
    let sink = Arc::new(JsonlSink::open(&path, Durability::Flush).expect("open"));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let sink = Arc::clone(&sink);
            std::thread::spawn(move || {
                for i in 0..250 {
                    let mut r = rec(i);
                    r.request_id = format!("t{t}-{i}");
                    sink.record(&r).expect("record");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer thread");
    }
    assert_eq!(sink.records(), 2000);
    drop(sink);
    let report = audit::verify(&path).expect("verify");
    assert_eq!((report.records, report.broken), (2000, None));
    let ids: BTreeSet<String> = audit::query(&path, &Filter::default())
        .expect("query")
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    assert_eq!(ids.len(), 2000);
    assert!(ids.contains("t0-0") && ids.contains("t7-249"));
}

// ------------------------------------------------------------------ queries

/// A log of a March 2020 campaign: who read which fields of whom, and when.
fn campaign_log(path: &Path) -> Vec<DecisionRecord> {
    let r = |id: &str, at: &str, who: &str, action: &str, member: &str, granted: &[&str]| {
        DecisionRecord {
            at: ts(at),
            recorded_at: ts(at),
            request_id: id.into(),
            principal: who.into(),
            action: action.into(),
            member: member.into(),
            granted: granted.iter().map(|s| s.to_string()).collect(),
            refused: vec![],
            policies: vec![],
            version: "v".repeat(64),
            rejected: None,
        }
    };
    let a = r#"CampaignStaff::"cs-a-staff""#;
    let b = r#"CampaignStaff::"cs-b-staff""#;
    let records = vec![
        r(
            "1",
            "2020-02-28T09:00:00Z",
            a,
            "read",
            "m-1",
            &["name", "phone"],
        ),
        r(
            "2",
            "2020-03-01T09:00:00Z",
            a,
            "read",
            "m-1",
            &["name", "phone"],
        ),
        r("3", "2020-03-05T09:00:00Z", b, "read", "m-1", &["name"]),
        r(
            "4",
            "2020-03-10T09:00:00Z",
            b,
            "contact_phone",
            "m-1",
            &["phone"],
        ),
        r(
            "5",
            "2020-03-20T09:00:00Z",
            a,
            "read",
            "m-2",
            &["name", "phone"],
        ),
        r("6", "2020-04-01T00:00:00Z", b, "read", "m-1", &["phone"]),
    ];
    let sink = JsonlSink::open(path, Durability::Flush).expect("open");
    for rec in &records {
        sink.record(rec).expect("record");
    }
    records
}

fn ids_of(path: &Path, filter: &Filter) -> Vec<String> {
    audit::query(path, filter)
        .expect("query")
        .into_iter()
        .map(|r| r.request_id)
        .collect()
}

#[test]
fn queries_filter_by_principal_member_field_action_and_time() {
    let (_dir, path) = log_path();
    let records = campaign_log(&path);
    let all = Filter::default();
    assert_eq!(audit::query(&path, &all).expect("query"), records);
    let q = |f: Filter| ids_of(&path, &f);
    // Who saw m-1's phone number in March 2020? (`until` is exclusive.)
    assert_eq!(
        q(Filter {
            member: Some("m-1".into()),
            field: Some("phone".into()),
            since: Some(ts("2020-03-01T00:00:00Z")),
            until: Some(ts("2020-04-01T00:00:00Z")),
            ..all.clone()
        }),
        ["2", "4"]
    );
    let b = PrincipalId::new(PrincipalKind::CampaignStaff, "cs-b-staff");
    assert_eq!(
        q(Filter {
            principal: Some(b.clone()),
            ..all.clone()
        }),
        ["3", "4", "6"]
    );
    assert_eq!(
        q(Filter {
            principal: Some(b),
            action: Some(Action::Read),
            ..all.clone()
        }),
        ["3", "6"]
    );
    assert_eq!(
        q(Filter {
            member: Some("m-2".into()),
            ..all.clone()
        }),
        ["5"]
    );
    assert_eq!(
        q(Filter {
            since: Some(ts("2020-03-20T09:00:00Z")),
            ..all.clone()
        }),
        ["5", "6"]
    );
    assert_eq!(
        q(Filter {
            field: Some("address".into()),
            ..all.clone()
        }),
        Vec::<String>::new()
    );
}

#[test]
fn a_query_names_a_line_that_is_not_a_record() {
    let (_dir, path) = log_path();
    campaign_log(&path);
    let mut l = lines(&path);
    l[3] = "garbage".into();
    write_lines(&path, &l);
    match audit::query(&path, &Filter::default()) {
        Err(ReadError::BadLine { line, .. }) => assert_eq!(line, 4),
        other => panic!("expected a bad line, got {other:?}"),
    }
    let missing = audit::query(path.with_extension("nope"), &Filter::default());
    assert!(matches!(missing, Err(ReadError::Io { .. })));
}

// ------------------------------------------------------------------ tracing

#[test]
fn the_tracing_sink_emits_each_field() {
    let capture = Capture::default();
    let record = rec(5);
    capture
        .during(|| TracingSink.record(&record))
        .expect("record");
    let events = capture.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let (target, level, fields) = &events[0];
    assert_eq!(target, "membergate::decision");
    assert_eq!(*level, tracing::Level::INFO);
    let expect = [
        ("at", record.at.to_string()),
        ("recorded_at", record.recorded_at.to_string()),
        ("request_id", "req-5".to_string()),
        ("principal", r#"CampaignStaff::"cs-2""#.to_string()),
        ("action", "contact_phone".to_string()),
        ("member", "m-1".to_string()),
        ("granted", "name,phone".to_string()),
        ("refused", "political_views".to_string()),
        ("policies", "campaign-read-contact".to_string()),
        ("version", engine().version().to_string()),
    ];
    for (key, value) in expect {
        assert_eq!(fields.get(key), Some(&value), "field {key}: {fields:?}");
    }
}

// ------------------------------------------------------------------ the command line

#[test]
fn audit_verify_exits_0_when_intact_1_naming_the_broken_line_2_when_unreadable() {
    let (_dir, path) = log_path();
    write_log(&path, 7);
    let file = path.to_str().expect("utf-8 path");
    let out = membergate(&["audit", "verify", file]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let head = audit::verify(&path).expect("verify").head;
    assert_eq!(
        stdout(&out),
        format!("7 records, chain intact\nlast hash {head}\n")
    );

    let mut l = lines(&path);
    l.swap(2, 3);
    write_lines(&path, &l);
    let out = membergate(&["audit", "verify", file]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("chain broken at line 3:"), "{text}");
    assert!(text.contains("2 records before it intact"), "{text}");

    let out = membergate(&["audit", "verify", "no/such/log.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no/such/log.jsonl"));
}

#[test]
fn audit_verify_reports_a_torn_line_without_failing() {
    let (_dir, path) = log_path();
    write_log(&path, 2);
    let mut bytes = fs::read(&path).expect("read");
    bytes.extend_from_slice(br#"{"at":"2020-"#);
    fs::write(&path, bytes).expect("write");
    let out = membergate(&["audit", "verify", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.starts_with("2 records, chain intact\n"), "{text}");
    assert!(text.contains("line 3 is torn (12 bytes"), "{text}");
}

#[test]
fn audit_query_prints_one_line_per_matching_record() {
    let (_dir, path) = log_path();
    campaign_log(&path);
    let file = path.to_str().expect("utf-8");
    let out = membergate(&[
        "audit",
        "query",
        file,
        "--member",
        "m-1",
        "--field",
        "phone",
        "--since",
        "2020-03-01T00:00:00Z",
        "--until",
        "2020-04-01T00:00:00Z",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(
        rows[0].starts_with(
            r#"2020-03-01T09:00:00Z CampaignStaff::"cs-a-staff" read m-1 granted name,phone"#
        ),
        "{text}"
    );
    assert!(rows[1].contains("contact_phone") && rows[1].contains("request 4"));

    let out = membergate(&[
        "audit",
        "query",
        file,
        "--principal",
        r#"CampaignStaff::"cs-b-staff""#,
        "--action",
        "read",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let found: Vec<DecisionRecord> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a record per line"))
        .collect();
    let ids: Vec<&str> = found.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, ["3", "6"]);

    let out = membergate(&["audit", "query", file, "--since", "last tuesday"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--since"));
}

#[test]
fn the_sample_writer_is_hidden_from_help() {
    let out = membergate(&["audit", "--help"]);
    let help = stdout(&out);
    assert!(help.contains("verify") && help.contains("query"), "{help}");
    assert!(!help.contains("write-sample"), "{help}");
}

#[test]
fn a_reader_that_stops_early_ends_the_query_quietly() {
    let (_dir, path) = log_path();
    let log = path.display().to_string();
    let wrote = membergate(&["audit", "write-sample", &log, "--count", "5000"]);
    assert!(wrote.status.success(), "{}", stderr(&wrote));
    // 5,000 lines are far more than a pipe holds: the reader closes it after one.
    let mut child = Command::new(env!("CARGO_BIN_EXE_membergate"))
        .args(["audit", "query", &log])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run membergate");
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut first,
    )
    .expect("a line");
    assert!(first.contains("request"), "{first}");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(141), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

// ------------------------------------------------------------------ signed checkpoints

/// A log whose sink signs checkpoints, in a temporary directory: the log, the checkpoint
/// file, the secret key's file and the public key.
struct Anchored {
    dir: TempDir,
    log: PathBuf,
    checkpoints: PathBuf,
    key_file: PathBuf,
    key: PublicKey,
}

impl Anchored {
    /// A new key, and a log of records `0..n` with a checkpoint after every `every`th.
    fn new(n: u64, every: u64) -> Anchored {
        let (dir, log) = log_path();
        let key_file = dir.path().join("checkpoint.key");
        let key = CheckpointKey::generate().expect("a key");
        key.write_new(&key_file).expect("write the key");
        let anchored = Anchored {
            checkpoints: dir.path().join("checkpoints.jsonl"),
            key: key.public_key(),
            dir,
            log,
            key_file,
        };
        let sink = anchored.sink(every).expect("the log's checkpoints");
        for i in 0..n {
            sink.record(&rec(i)).expect("record");
        }
        anchored
    }

    /// The log's sink, signing a checkpoint after every `every`th record.
    fn sink(&self, every: u64) -> Result<JsonlSink, CheckpointError> {
        let key = CheckpointKey::from_file(&self.key_file).expect("read the key");
        let policy = CheckpointPolicy {
            records: Some(every),
            interval: None,
        };
        JsonlSink::open(&self.log, Durability::Flush)
            .expect("open the log")
            .with_checkpoints(&self.checkpoints, key, policy)
    }

    fn verify(&self) -> CheckpointReport {
        audit::verify_checkpoints(&self.log, &self.checkpoints, &self.key).expect("verify")
    }

    /// The checkpoint file's lines.
    fn checkpoint_lines(&self) -> Vec<String> {
        lines(&self.checkpoints)
    }
}

#[test]
fn a_checkpoint_follows_every_nth_record_and_signs_the_head_at_it() {
    let a = Anchored::new(35, 10);
    let log = lines(&a.log);
    let checkpoints = a.checkpoint_lines();
    assert_eq!(checkpoints.len(), 3);
    for (i, line) in checkpoints.iter().enumerate() {
        let c: Checkpoint = serde_json::from_str(line).expect("a checkpoint");
        let records = 10 * (i as u64 + 1);
        assert_eq!(c.records, records);
        assert_eq!(
            c.head,
            hash_of(&log[records as usize - 1]),
            "checkpoint {}",
            i + 1
        );
        assert_eq!(c.key, a.key.to_string());
        assert_eq!(c.signature.len(), 128);
    }
    let report = a.verify();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.log.records, 35);
    assert_eq!(
        (report.checkpoints, report.anchored(), report.unanchored()),
        (3, 30, 5)
    );

    // Reopened, the sink counts from its last checkpoint; asked, it anchors the rest.
    let sink = a.sink(10).expect("reopen with the checkpoints");
    for i in 35..41 {
        sink.record(&rec(i)).expect("record");
    }
    assert_eq!(a.checkpoint_lines().len(), 4, "after record 40");
    let last = sink
        .checkpoint()
        .expect("checkpoint")
        .expect("a checkpoint");
    assert_eq!((last.records, last.head.clone()), (41, sink.head()));
    assert_eq!(sink.checkpoint().expect("checkpoint"), None, "nothing new");
    drop(sink);
    let report = a.verify();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.checkpoints, report.unanchored()), (5, 0));
    assert_eq!(report.last, Some(last));
}

#[test]
fn a_checkpoint_follows_the_first_record_after_its_interval() {
    let (dir, log) = log_path();
    let checkpoints = dir.path().join("checkpoints.jsonl");
    let key = CheckpointKey::generate().expect("key");
    let public = key.public_key();
    let after = |interval| CheckpointPolicy {
        records: None,
        interval: Some(interval),
    };
    // An interval that has passed at each record: a checkpoint after each.
    let sink = JsonlSink::open(&log, Durability::Fsync)
        .expect("open")
        .with_checkpoints(&checkpoints, key, after(Duration::ZERO))
        .expect("checkpoints");
    for i in 0..3 {
        sink.record(&rec(i)).expect("record");
    }
    drop(sink);
    assert_eq!(lines(&checkpoints).len(), 3);
    // An hour: none within the test.
    let key = CheckpointKey::generate().expect("key");
    let other = dir.path().join("hourly.jsonl");
    let sink = JsonlSink::open(&log, Durability::Flush)
        .expect("open")
        .with_checkpoints(&other, key, after(Duration::from_secs(3_600)))
        .expect("checkpoints");
    sink.record(&rec(3)).expect("record");
    drop(sink);
    assert_eq!(fs::read_to_string(&other).expect("read"), "");
    let report = audit::verify_checkpoints(&log, &checkpoints, &public).expect("verify");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.anchored(), report.unanchored()), (3, 1));
}

/// Writes `records` as a new log with a valid chain and puts it in place of `path`.
fn rebuild(path: &Path, records: impl IntoIterator<Item = DecisionRecord>) {
    let new = path.with_extension("rebuilt");
    let sink = JsonlSink::open(&new, Durability::Flush).expect("open");
    for r in records {
        sink.record(&r).expect("record");
    }
    drop(sink);
    fs::rename(&new, path).expect("replace the log");
}

/// A checkpoint line signed by another key, for the same log.
fn foreign_checkpoint(a: &Anchored) -> String {
    let key = CheckpointKey::generate().expect("key");
    let checkpoints = a.dir.path().join("foreign.jsonl");
    let copy = a.dir.path().join("copy.jsonl");
    fs::copy(&a.log, &copy).expect("copy the log");
    JsonlSink::open(&copy, Durability::Flush)
        .expect("open")
        .with_checkpoints(&checkpoints, key, CheckpointPolicy::default())
        .expect("checkpoints")
        .checkpoint()
        .expect("checkpoint");
    lines(&checkpoints).remove(0)
}

/// Each attack on a log of 35 records with checkpoints at 10, 20 and 30 is found by
/// `verify_checkpoints` at the checkpoint it defeats, and the sink refuses to extend the
/// log; the attacks on the log alone leave a chain that `verify` finds intact.
#[test]
fn truncating_emptying_or_rebuilding_the_log_or_forging_a_checkpoint_is_found() {
    use CheckpointProblem::*;
    type Attack = fn(&Anchored);
    type Expect = fn(&CheckpointProblem) -> bool;
    let attacks: [(&str, Attack, Expect); 10] = [
        (
            "the last 10 records cut off",
            |a| write_lines(&a.log, &lines(&a.log)[..25]),
            |p| {
                *p == Truncated {
                    checkpoint: 3,
                    signed: 30,
                    log: 25,
                }
            },
        ),
        (
            "the log emptied",
            |a| fs::write(&a.log, "").expect("empty the log"),
            |p| {
                *p == Truncated {
                    checkpoint: 1,
                    signed: 10,
                    log: 0,
                }
            },
        ),
        (
            "the chain rebuilt with record 15's member changed",
            |a| {
                let mut records = audit::query(&a.log, &Filter::default()).expect("read");
                records[14].member = "m-9".into();
                rebuild(&a.log, records);
            },
            |p| {
                *p == Rewritten {
                    checkpoint: 2,
                    record: 20,
                }
            },
        ),
        (
            "the last 10 records replaced by 10 others",
            |a| {
                write_lines(&a.log, &lines(&a.log)[..25]);
                let sink = JsonlSink::open(&a.log, Durability::Flush).expect("open");
                for i in 100..110 {
                    sink.record(&rec(i)).expect("record");
                }
            },
            |p| {
                *p == Rewritten {
                    checkpoint: 3,
                    record: 30,
                }
            },
        ),
        (
            "a checkpoint's count lowered to match a truncation",
            |a| {
                let mut l = a.checkpoint_lines();
                l[2] = l[2].replacen(r#""records":30,"#, r#""records":25,"#, 1);
                write_lines(&a.checkpoints, &l);
                write_lines(&a.log, &lines(&a.log)[..25]);
            },
            |p| *p == Forged { checkpoint: 3 },
        ),
        (
            "a checkpoint's head replaced by another record's",
            |a| {
                let mut l = a.checkpoint_lines();
                let other = hash_of(&lines(&a.log)[24]);
                let c: Checkpoint = serde_json::from_str(&l[2]).expect("checkpoint");
                l[2] = l[2].replacen(&c.head, &other, 1);
                write_lines(&a.checkpoints, &l);
            },
            |p| *p == Forged { checkpoint: 3 },
        ),
        (
            "a checkpoint signed by another key, naming it",
            |a| {
                let mut l = a.checkpoint_lines();
                l[2] = foreign_checkpoint(a);
                write_lines(&a.checkpoints, &l);
            },
            |p| matches!(p, OtherKey { checkpoint: 3, .. }),
        ),
        (
            "a checkpoint signed by another key, naming ours",
            |a| {
                let mut l = a.checkpoint_lines();
                let forged = foreign_checkpoint(a);
                let c: Checkpoint = serde_json::from_str(&forged).expect("checkpoint");
                l[2] = forged.replacen(&c.key, &a.key.to_string(), 1);
                write_lines(&a.checkpoints, &l);
            },
            |p| *p == Forged { checkpoint: 3 },
        ),
        (
            "two checkpoints swapped",
            |a| {
                let mut l = a.checkpoint_lines();
                l.swap(1, 2);
                write_lines(&a.checkpoints, &l);
            },
            |p| {
                *p == OutOfOrder {
                    checkpoint: 3,
                    records: 20,
                    previous: 30,
                }
            },
        ),
        (
            "a line that is not a checkpoint",
            |a| {
                let mut l = a.checkpoint_lines();
                l[1] = r#"{"records":20}"#.into();
                write_lines(&a.checkpoints, &l);
            },
            |p| matches!(p, Malformed { checkpoint: 2, problem } if problem.contains("missing field")),
        ),
    ];
    for (what, attack, expect) in attacks {
        let a = Anchored::new(35, 10);
        attack(&a);
        let report = a.verify();
        let problem = report
            .problem
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: not found"));
        assert!(expect(problem), "{what}: {problem:?}");
        assert!(!report.is_intact(), "{what}");
        assert_eq!(report.checkpoints, problem.checkpoint() - 1, "{what}");
        if !what.contains("checkpoint") {
            assert!(
                audit::verify(&a.log).expect("verify").is_intact(),
                "{what}: the chain alone cannot tell"
            );
        }
        match a.sink(10) {
            Err(CheckpointError::Mismatch { problem: p, .. }) => assert_eq!(&p, problem, "{what}"),
            other => panic!("{what}: the sink extends the log: {other:?}"),
        }
    }
}

#[test]
fn checkpoints_verified_with_another_key_are_refused() {
    let a = Anchored::new(12, 5);
    let other = CheckpointKey::generate().expect("key").public_key();
    let report = audit::verify_checkpoints(&a.log, &a.checkpoints, &other).expect("verify");
    assert_eq!(
        report.problem,
        Some(CheckpointProblem::OtherKey {
            checkpoint: 1,
            key: a.key.to_string()
        })
    );
    assert_eq!((report.checkpoints, report.anchored()), (0, 0));
    assert!(!report.is_intact());
}

#[test]
fn a_torn_checkpoint_line_is_reported_then_cut_off() {
    let a = Anchored::new(20, 10);
    let mut bytes = fs::read(&a.checkpoints).expect("read");
    bytes.extend_from_slice(br#"{"records":3"#);
    fs::write(&a.checkpoints, &bytes).expect("write");
    let report = a.verify();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.checkpoints, 2);
    assert_eq!(report.torn.map(|t| (t.line, t.bytes)), Some((3, 12)));
    let sink = a.sink(10).expect("reopen");
    for i in 20..30 {
        sink.record(&rec(i)).expect("record");
    }
    drop(sink);
    let report = a.verify();
    assert_eq!((report.checkpoints, report.torn), (3, None));
    assert!(report.is_intact(), "{report:?}");
}

#[cfg(target_os = "linux")]
#[test]
fn a_checkpoint_that_cannot_be_written_fails_its_record_which_stays_in_the_log() {
    let (_dir, log) = log_path();
    let policy = CheckpointPolicy {
        records: Some(2),
        interval: None,
    };
    let sink = JsonlSink::open(&log, Durability::Flush)
        .expect("open")
        .with_checkpoints("/dev/full", CheckpointKey::generate().expect("key"), policy)
        .expect("checkpoints on /dev/full");
    sink.record(&rec(0)).expect("no checkpoint due");
    for i in 1..3 {
        match sink.record(&rec(i)) {
            Err(AuditError::Checkpoint { path, source }) => {
                assert_eq!(path, Path::new("/dev/full"));
                assert_eq!(source.raw_os_error(), Some(28), "ENOSPC: {source}");
            }
            other => panic!("record {i}: expected a checkpoint error, got {other:?}"),
        }
        assert_eq!(sink.records(), i + 1, "the record is in the log");
    }
    assert!(matches!(
        sink.checkpoint(),
        Err(AuditError::Checkpoint { .. })
    ));
    drop(sink);
    assert_eq!(audit::verify(&log).expect("verify").records, 3);
}

#[test]
fn a_checkpoint_key_is_a_new_owner_only_file_of_64_hex_digits() {
    let (dir, _) = log_path();
    let path = dir.path().join("checkpoint.key");
    let key = CheckpointKey::generate().expect("key");
    key.write_new(&path).expect("write");
    let text = fs::read_to_string(&path).expect("read");
    assert_eq!(text.len(), 65);
    assert!(text.ends_with('\n') && text.trim().bytes().all(|b| b.is_ascii_hexdigit()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(
        CheckpointKey::from_file(&path).expect("read").public_key(),
        key.public_key()
    );
    assert_ne!(
        CheckpointKey::generate().expect("key").public_key(),
        key.public_key()
    );
    // An existing key is never overwritten.
    let other = CheckpointKey::generate().expect("key");
    assert!(matches!(
        other.write_new(&path),
        Err(CheckpointError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists
    ));
    assert_eq!(fs::read_to_string(&path).expect("read"), text);
    // Files and texts that hold no key, named.
    let bad = dir.path().join("bad.key");
    for content in ["", "abc", &"g".repeat(64), &"0".repeat(66)] {
        fs::write(&bad, content).expect("write");
        let e = CheckpointKey::from_file(&bad).expect_err(content);
        assert!(
            matches!(
                e,
                CheckpointError::Key {
                    source: InvalidKey::NotHex,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("bad.key"), "{e}");
    }
    let identity = format!("01{}", "00".repeat(31));
    assert_eq!(identity.parse::<PublicKey>(), Err(InvalidKey::NotAKey));
    let public = key.public_key().to_string();
    assert_eq!(
        public.to_uppercase().parse::<PublicKey>(),
        Ok(key.public_key())
    );
}

#[test]
fn audit_keygen_and_verify_with_checkpoints_exit_0_anchored_1_truncated_or_forged_2_unreadable() {
    let (dir, log) = log_path();
    let key_file = dir.path().join("checkpoint.key");
    let key_arg = key_file.to_str().expect("utf-8");
    let out = membergate(&["audit", "keygen", "--out", key_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let public = stdout(&out).trim().to_string();
    let key = CheckpointKey::from_file(&key_file).expect("the key written");
    assert_eq!(public, key.public_key().to_string());
    let again = membergate(&["audit", "keygen", "--out", key_arg]);
    assert_ne!(again.status.code(), Some(0), "an existing key is kept");
    assert!(
        stderr(&again).contains("checkpoint.key"),
        "{}",
        stderr(&again)
    );

    let checkpoints = dir.path().join("checkpoints.jsonl");
    let policy = CheckpointPolicy {
        records: Some(400),
        interval: None,
    };
    let sink = JsonlSink::open(&log, Durability::Flush)
        .expect("open")
        .with_checkpoints(&checkpoints, key, policy)
        .expect("checkpoints");
    for i in 0..1_250 {
        sink.record(&rec(i)).expect("record");
    }
    drop(sink);
    let public_file = dir.path().join("checkpoint.pub");
    fs::write(&public_file, format!("{public}\n")).expect("write");
    let (file, ckpt) = (
        log.to_str().expect("utf-8"),
        checkpoints.to_str().expect("utf-8"),
    );
    let verify = |key: &str| {
        membergate(&[
            "audit",
            "verify",
            file,
            "--checkpoints",
            ckpt,
            "--public-key",
            key,
        ])
    };

    for key in [public.as_str(), public_file.to_str().expect("utf-8")] {
        let out = verify(key);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}{}",
            stdout(&out),
            stderr(&out)
        );
        let text = stdout(&out);
        assert!(text.starts_with("1250 records, chain intact\n"), "{text}");
        assert!(
            text.contains("3 checkpoints verify; the last signs 1200 records at "),
            "{text}"
        );
        assert!(text.contains("50 records not yet anchored"), "{text}");
    }
    // Another key: 1.
    let other = CheckpointKey::generate()
        .expect("key")
        .public_key()
        .to_string();
    let out = verify(&other);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("checkpoint 1 is signed by another key"),
        "{}",
        stdout(&out)
    );

    // A checkpoint forged: 1.
    let original = lines(&checkpoints);
    let mut forged = original.clone();
    forged[1] = forged[1].replacen(r#""records":800,"#, r#""records":700,"#, 1);
    write_lines(&checkpoints, &forged);
    let out = verify(&public);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("checkpoint 2's signature does not verify: it was forged or changed"),
        "{}",
        stdout(&out)
    );
    write_lines(&checkpoints, &original);

    // The log truncated below the last checkpoint: its chain verifies, its checkpoints do not.
    write_lines(&log, &lines(&log)[..1_150]);
    assert_eq!(
        membergate(&["audit", "verify", file]).status.code(),
        Some(0)
    );
    let out = verify(&public);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("log truncated: checkpoint 3 signs 1,200 records, the log has 1,150"),
        "{}",
        stdout(&out)
    );

    // Unreadable: 2.
    for (what, out) in [
        (
            "checkpoints",
            membergate(&[
                "audit",
                "verify",
                file,
                "--checkpoints",
                "no/such.jsonl",
                "--public-key",
                &public,
            ]),
        ),
        ("key file", verify("no/such.pub")),
        (
            "log",
            membergate(&[
                "audit",
                "verify",
                "no/such/log.jsonl",
                "--checkpoints",
                ckpt,
                "--public-key",
                &public,
            ]),
        ),
    ] {
        assert_eq!(out.status.code(), Some(2), "{what}: {}", stdout(&out));
        assert!(stderr(&out).contains("no/such"), "{what}: {}", stderr(&out));
    }
    let out = membergate(&["audit", "verify", file, "--checkpoints", ckpt]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--checkpoints needs --public-key"
    );
}
