//! Live reload: a new policy directory swapped in (with the directory of principals
//! rebuilt for it) while requests are decided, refused reloads that keep the old set, the
//! invariant gate, and records upserted while serving.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use crate::support::{bundled, copy_dir};
use membergate::sample::ids;
use membergate::{
    Action, Context, Effect, Engine, PolicyVersion, PrincipalId, PrincipalKind, RecordError,
    ReloadCheck, ReloadError, ReloadOutcome, ReloadStartError, ReloadableEngine, Request,
    RequestError, Serving, Staff, Team,
};

/// Two versions of the bundled policies (v2 without the `role-ended` forbid), a broken
/// one, and a symbolic link `current` that a deployment swaps between them.
struct Deployment {
    root: tempfile::TempDir,
}

const ROLE_ENDED: &str = "@id(\"role-ended\")\n@rule(\"2\")\nforbid (principal, action, resource)\nwhen { principal has ended_at && principal.ended_at <= context.now };\n";

impl Deployment {
    fn new() -> Deployment {
        let root = tempfile::tempdir().expect("tempdir");
        let d = Deployment { root };
        copy_dir(Path::new("policies"), &d.dir("v1"));
        copy_dir(Path::new("policies"), &d.dir("v2"));
        let guardrails = d.dir("v2").join("guardrails.cedar");
        let text = fs::read_to_string(&guardrails).expect("read");
        assert!(text.contains(ROLE_ENDED), "the fixture changed");
        fs::write(&guardrails, text.replace(ROLE_ENDED, "")).expect("write");
        copy_dir(Path::new("policies"), &d.dir("broken"));
        fs::write(
            d.dir("broken").join("staff.cedar"),
            "permit (principal,, action, resource);",
        )
        .expect("write");
        d.point_to("v1");
        d
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn current(&self) -> PathBuf {
        self.dir("current")
    }

    /// Points `current` at `name` atomically: a new link renamed over the old one.
    fn point_to(&self, name: &str) {
        let tmp = self.dir("current.new");
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(self.dir(name), &tmp).expect("symlink");
        fs::rename(&tmp, self.current()).expect("rename");
    }
}

/// Staff who left reads a member's name: denied by v1 (`role-ended`), allowed by v2.
fn decide(serving: &Serving) -> Effect {
    decide_as(serving, ids::S_LEFT).expect("decided")
}

/// Staffer `staff` reads a member's name, on the snapshot `serving`: the engine's answer,
/// after checking that Cedar's own authorizer gives the same.
fn decide_as(serving: &Serving, staff: &str) -> Result<Effect, RequestError> {
    let principal = PrincipalId::new(PrincipalKind::Staff, staff);
    let ctx = Context::at("2020-03-01T12:00:00Z".parse().expect("time"));
    let req = Request {
        principal: &principal,
        action: Action::Read,
        member: bundled().member(ids::MEMBER_ELIGIBLE).expect("a member"),
        field: "name",
        context: &ctx,
    };
    let engine = &serving.engine;
    let got = engine
        .authorize(&serving.directory, &req)
        .map(|d| d.effect());
    let oracle = engine
        .reference()
        .authorize(&serving.directory, &req)
        .map(|d| d.effect());
    assert_eq!(
        got, oracle,
        "the engine and Cedar's authorizer disagree for {staff}"
    );
    got
}

/// A new member of the membership team, unknown to the sample.
fn new_starter() -> Staff {
    Staff {
        name: "A new starter".into(),
        teams: vec![Team::Membership],
        region: None,
        ended_at: None,
        hourly_read_limit: 500,
    }
}

fn start(dir: &Path) -> ReloadableEngine {
    ReloadableEngine::from_dir(dir, bundled()).expect("loads")
}

fn version_of(dir: &Path) -> PolicyVersion {
    Engine::from_dir(dir).expect("loads").version().clone()
}

#[test]
fn a_reload_swaps_the_set_and_old_snapshots_keep_their_answers() {
    let d = Deployment::new();
    let engine = start(&d.current());
    let (v1, v2) = (version_of(&d.dir("v1")), version_of(&d.dir("v2")));
    assert_ne!(v1, v2);
    let before = engine.current();
    assert_eq!(before.engine.version(), &v1);
    assert_eq!(decide(&before), Effect::Deny);

    assert!(!engine.reload().expect("unchanged").swapped());
    d.point_to("v2");
    let outcome = engine.reload().expect("reloads");
    assert_eq!(
        outcome,
        ReloadOutcome::Swapped {
            from: v1.clone(),
            to: v2.clone()
        }
    );
    // A request that started before the reload finishes on the old set...
    assert_eq!(before.engine.version(), &v1);
    assert_eq!(decide(&before), Effect::Deny);
    // ... and new requests decide on the new one, with the directory rebuilt for it.
    let after = engine.current();
    assert_eq!(after.engine.version(), &v2);
    assert_eq!(decide(&after), Effect::Allow);
    assert_eq!(after.directory.records(), before.directory.records());
    // A directory belongs to its engine: the old one is refused by the new engine.
    let principal = PrincipalId::new(PrincipalKind::Staff, ids::S_LEFT);
    let ctx = Context::at("2020-03-01T12:00:00Z".parse().expect("time"));
    let req = Request {
        principal: &principal,
        action: Action::Read,
        member: bundled().member(ids::MEMBER_ELIGIBLE).expect("a member"),
        field: "name",
        context: &ctx,
    };
    assert_eq!(
        after
            .engine
            .authorize(&before.directory, &req)
            .map(|d| d.effect()),
        Err(RequestError::ForeignDirectory)
    );
}

#[test]
fn refused_reloads_keep_serving_the_old_set() {
    let d = Deployment::new();
    let engine = start(&d.current());
    let v1 = engine.current().engine.version().clone();

    // A policy that does not parse: refused, with the file and position.
    d.point_to("broken");
    let err = engine.reload().expect_err("broken policies");
    match &err {
        ReloadError::Load { serving, source } => {
            assert_eq!(serving, &v1);
            let p = source.problems().first().expect("a problem");
            assert!(p.file().ends_with("staff.cedar"), "{p}");
            assert_eq!((p.line(), p.column()), (1, 19), "{p}");
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains(v1.short()), "{err}");
    assert_eq!(engine.current().engine.version(), &v1);
    assert_eq!(decide(&engine.current()), Effect::Deny);
    // Unchanged since: not read again (issue 12: a broken large directory cost seconds
    // every tick), the same reason given.
    match engine.reload().expect_err("still broken") {
        ReloadError::StillRefused { serving, reason } => {
            assert_eq!(serving, v1);
            assert_eq!(
                reason,
                err.to_string().split_once(": ").map_or("", |(_, r)| r)
            );
        }
        other => panic!("unexpected {other}"),
    }

    // The directory disappears: refused, still serving.
    d.point_to("v2");
    fs::remove_dir_all(d.dir("v2")).expect("remove");
    let err = engine.reload().expect_err("no directory");
    assert!(matches!(err, ReloadError::Load { .. }), "{err}");
    assert_eq!(engine.current().engine.version(), &v1);

    // A file missing from it: refused, still serving.
    copy_dir(Path::new("policies"), &d.dir("v2"));
    fs::remove_file(d.dir("v2").join("schema.cedarschema")).expect("remove");
    let err = engine.reload().expect_err("no schema");
    assert!(err.to_string().contains("schema.cedarschema"), "{err}");
    assert_eq!(engine.current().engine.version(), &v1);
    assert_eq!(decide(&engine.current()), Effect::Deny);

    // The guardrails replaced by a dangling link: refused, naming it, still serving
    // (before, the file was skipped and the directory served without the guardrails).
    #[cfg(unix)]
    {
        fs::remove_dir_all(d.dir("v2")).expect("remove");
        copy_dir(Path::new("policies"), &d.dir("v2"));
        let guardrails = d.dir("v2").join("guardrails.cedar");
        fs::remove_file(&guardrails).expect("remove");
        std::os::unix::fs::symlink(d.dir("v2").join("nowhere.cedar"), &guardrails)
            .expect("symlink");
        let err = engine.reload().expect_err("a dangling policy file");
        assert!(err.to_string().contains("guardrails.cedar"), "{err}");
        assert_eq!(engine.current().engine.version(), &v1);
        assert_eq!(decide(&engine.current()), Effect::Deny);
    }
}

#[test]
fn reloads_under_concurrent_requests_never_mix_versions() {
    let d = Arc::new(Deployment::new());
    let engine = Arc::new(start(&d.current()));
    let expected = [
        (version_of(&d.dir("v1")), Effect::Deny),
        (version_of(&d.dir("v2")), Effect::Allow),
    ];
    let readers = 3;
    let start = Arc::new(Barrier::new(readers + 1));
    let done = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..readers)
        .map(|_| {
            let (engine, start, done) = (engine.clone(), start.clone(), done.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut seen = Vec::new();
                while !done.load(Ordering::Acquire) {
                    let snapshot = engine.current();
                    seen.push((snapshot.engine.version().clone(), decide(&snapshot)));
                }
                seen
            })
        })
        .collect();
    start.wait();
    let mut swaps = 0;
    for round in 0..12 {
        let name = ["v2", "broken", "v1"][round % 3];
        d.point_to(name);
        match (name, engine.reload()) {
            ("broken", Err(ReloadError::Load { .. })) => {}
            (_, Ok(outcome)) if outcome.swapped() => swaps += 1,
            (name, other) => panic!("round {round} ({name}): {other:?}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    done.store(true, Ordering::Release);
    let mut versions_seen = std::collections::BTreeSet::new();
    let mut decisions = 0;
    for h in handles {
        for (version, effect) in h.join().expect("reader") {
            let want = expected
                .iter()
                .find(|(v, _)| v == &version)
                .map(|(_, e)| *e)
                .unwrap_or_else(|| panic!("a version never deployed: {version}"));
            assert_eq!(
                effect,
                want,
                "version {} decided the other's way",
                version.short()
            );
            versions_seen.insert(version);
            decisions += 1;
        }
    }
    assert_eq!(swaps, 8, "every good reload swapped");
    assert_eq!(versions_seen.len(), 2, "both versions served");
    assert!(decisions > 100, "only {decisions} decisions");
}

#[test]
fn the_invariant_gate_refuses_a_set_that_breaks_an_invariant() {
    let d = Deployment::new();
    let engine = ReloadableEngine::with_check(d.current(), bundled(), ReloadCheck::Invariants)
        .expect("proved");
    let v1 = engine.current().engine.version().clone();
    // v2 lets staff who left keep reading: `role-ended-nothing` is refuted.
    d.point_to("v2");
    match engine.reload() {
        Err(ReloadError::Refuted {
            serving,
            invariant,
            example,
        }) => {
            assert_eq!(serving, v1);
            assert_eq!(invariant, "role-ended-nothing");
            assert!(example.contains("ended_at"), "{example}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(engine.current().engine.version(), &v1);
    // Starting on a set that breaks an invariant is refused too.
    let err = ReloadableEngine::with_check(d.dir("v2"), bundled(), ReloadCheck::Invariants)
        .expect_err("refuted at start");
    assert!(matches!(err, ReloadStartError::Check(_)), "{err}");
    assert!(err.to_string().contains("role-ended-nothing"), "{err}");
}

/// The attack: delete an invariant in the same change that breaks it. The served
/// version's invariants gate the reload, so it is refused; the new version alone (its
/// own invariants) would be proved.
#[test]
fn deleting_an_invariant_with_the_change_it_guards_does_not_pass_the_gate() {
    let d = Deployment::new();
    let engine = ReloadableEngine::with_check(d.current(), bundled(), ReloadCheck::Invariants)
        .expect("proved");
    let v1 = engine.current().engine.version().clone();
    copy_dir(&d.dir("v2"), &d.dir("v3"));
    let file = d.dir("v3").join("invariants.toml");
    let text = fs::read_to_string(&file).expect("read");
    let start = text
        .find("[[invariant]]\nid = \"role-ended-nothing\"")
        .expect("the fixture changed");
    let end = start
        + text[start + 1..]
            .find("[[invariant]]")
            .expect("another invariant")
        + 1;
    fs::write(&file, format!("{}{}", &text[..start], &text[end..])).expect("write");
    d.point_to("v3");
    match engine.reload() {
        Err(ReloadError::Refuted {
            serving, invariant, ..
        }) => {
            assert_eq!(serving, v1);
            assert_eq!(invariant, "role-ended-nothing");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(engine.current().engine.version(), &v1);
    // Alone, v3 keeps its own invariants: the gate is what the served version says.
    ReloadableEngine::with_check(d.dir("v3"), bundled(), ReloadCheck::Invariants)
        .expect("v3 against its own invariants");
}

/// `invariants.toml` is part of the version: a changed or deleted invariant file is a
/// new version (and a reload), the same file in another directory the same version.
#[test]
fn the_invariants_file_is_part_of_the_version() {
    let d = Deployment::new();
    let version = |name: &str| {
        membergate::Engine::from_dir(d.dir(name))
            .expect("loads")
            .version()
            .clone()
    };
    let v1 = version("v1");
    copy_dir(Path::new("policies"), &d.dir("same"));
    assert_eq!(version("same"), v1);
    let file = d.dir("same").join("invariants.toml");
    let text = fs::read_to_string(&file).expect("read");
    fs::write(&file, format!("{text}\n# a comment\n")).expect("write");
    let commented = version("same");
    assert_ne!(commented, v1);
    fs::remove_file(&file).expect("remove");
    let without = version("same");
    assert_ne!(without, v1);
    assert_ne!(without, commented);
}

/// A reload of an unchanged directory lists it and reads nothing (issue 12: a large
/// directory re-read and re-validated every tick kept a core busy): a file rewritten is
/// read again (the same version: unchanged), a new version swapped, and then untouched.
#[test]
fn an_untouched_directory_is_not_read_again() {
    let d = Deployment::new();
    let engine = start(&d.current());
    let v1 = engine.current().engine.version().clone();
    let reload = || engine.reload().expect("reloads");
    assert_eq!(reload(), ReloadOutcome::Untouched(v1.clone()));
    let file = d.dir("v1").join("staff.cedar");
    let text = fs::read_to_string(&file).expect("read");
    fs::write(&file, &text).expect("write");
    fs::File::options()
        .write(true)
        .open(&file)
        .and_then(|f| {
            f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(1))
        })
        .expect("touch");
    assert_eq!(reload(), ReloadOutcome::Unchanged(v1.clone()));
    assert_eq!(reload(), ReloadOutcome::Untouched(v1.clone()));
    d.point_to("v2");
    assert!(reload().swapped());
    let v2 = engine.current().engine.version().clone();
    assert_ne!(v2, v1);
    assert_eq!(reload(), ReloadOutcome::Untouched(v2));
}

// ------------------------------------------------------------------ records while serving

#[test]
fn an_upsert_is_seen_by_the_next_snapshot_and_not_by_earlier_ones() {
    let d = Deployment::new();
    let engine = start(&d.current());
    let before = engine.current();
    assert_eq!(
        decide_as(&before, "s-new"),
        Err(RequestError::UnknownPrincipal(r#"Staff::"s-new""#.into()))
    );
    engine.upsert("s-new", new_starter()).expect("upserted");
    let after = engine.current();
    assert_eq!(
        after.engine.version(),
        before.engine.version(),
        "same policies"
    );
    assert_eq!(decide_as(&after, "s-new"), Ok(Effect::Allow));
    assert_eq!(
        after.directory.records().staff.get("s-new"),
        Some(&new_starter())
    );
    // A request that started before the upsert finishes on its own snapshot.
    assert_eq!(
        decide_as(&before, "s-new"),
        Err(RequestError::UnknownPrincipal(r#"Staff::"s-new""#.into()))
    );
    // A replacement is seen too: the starter leaves.
    let left = Staff {
        ended_at: Some("2020-01-01T00:00:00Z".parse().expect("time")),
        ..new_starter()
    };
    engine.upsert("s-new", left).expect("replaced");
    assert_eq!(decide_as(&engine.current(), "s-new"), Ok(Effect::Deny));
    assert_eq!(decide_as(&after, "s-new"), Ok(Effect::Allow));

    // A record that refers to a missing one is refused, and nothing changes.
    let served = engine.current();
    let lost = Staff {
        teams: vec![Team::Regional],
        region: Some("atlantis".into()),
        ..new_starter()
    };
    match engine.upsert("s-lost", lost) {
        Err(RecordError::Dangling { from, kind, id }) => {
            assert_eq!(from, r#"Staff::"s-lost""#);
            assert_eq!((kind, id.as_str()), ("region", "atlantis"));
        }
        other => panic!("expected a dangling reference, got {other:?}"),
    }
    let now = engine.current();
    assert!(
        Arc::ptr_eq(&now, &served),
        "the refused upsert swapped nothing"
    );
    assert!(!now.directory.records().staff.contains_key("s-lost"));
}

#[test]
fn a_reload_keeps_the_records_upserted_before_it() {
    let d = Deployment::new();
    let engine = start(&d.current());
    engine.upsert("s-new", new_starter()).expect("upserted");
    let ended = Staff {
        ended_at: Some("2020-01-01T00:00:00Z".parse().expect("time")),
        ..new_starter()
    };
    engine.upsert("s-ended", ended.clone()).expect("upserted");
    let before = engine.current();
    assert_eq!(decide_as(&before, "s-ended"), Ok(Effect::Deny));

    d.point_to("v2");
    assert!(engine.reload().expect("reloads").swapped());
    let after = engine.current();
    assert_eq!(after.engine.version(), &version_of(&d.dir("v2")));
    assert_eq!(after.directory.records(), before.directory.records());
    assert_eq!(
        after.directory.records().staff.get("s-new"),
        Some(&new_starter())
    );
    assert_eq!(after.directory.records().staff.get("s-ended"), Some(&ended));
    // Both are principals of the new version: v2 has no `role-ended`, so the one who
    // left reads again, on the engine and on Cedar's authorizer alike.
    for staff in ["s-new", "s-ended"] {
        assert_eq!(decide_as(&after, staff), Ok(Effect::Allow), "{staff}");
    }
    // And back: the records are still there on v1.
    d.point_to("v1");
    assert!(engine.reload().expect("reloads").swapped());
    let back = engine.current();
    assert_eq!(back.directory.records(), before.directory.records());
    assert_eq!(decide_as(&back, "s-new"), Ok(Effect::Allow));
    assert_eq!(decide_as(&back, "s-ended"), Ok(Effect::Deny));
}

#[test]
fn a_reload_whose_catalogue_lacks_a_contract_field_is_refused_and_the_old_set_kept() {
    let d = Deployment::new();
    // v3: the bundled policies without the `address` field, which the mailing house's
    // contract names.
    let contract = &bundled().processors[ids::P_MAILING].contract.fields;
    assert!(
        contract.iter().any(|f| f == "address"),
        "the fixture changed"
    );
    copy_dir(Path::new("policies"), &d.dir("v3"));
    let catalogue = d.dir("v3").join("fields.toml");
    let text = fs::read_to_string(&catalogue).expect("read");
    let address =
        "[[field]]\nname = \"address\"\nclass = \"contact\"\ndescription = \"postal address\"\n";
    assert!(text.contains(address), "the catalogue changed");
    fs::write(&catalogue, text.replace(address, "")).expect("write");
    // A policy naming the field would refuse v3 itself (a field the catalogue lacks):
    // the guardrail on post names the address, so it names another field here.
    let guardrails = d.dir("v3").join("guardrails.cedar");
    let text = fs::read_to_string(&guardrails).expect("read");
    assert!(
        text.contains("Field::\"address\""),
        "the guardrails changed"
    );
    fs::write(
        &guardrails,
        text.replace("Field::\"address\"", "Field::\"name\""),
    )
    .expect("write");
    let v3 = version_of(&d.dir("v3"));

    let engine = start(&d.current());
    let v1 = engine.current().engine.version().clone();
    assert_ne!(v1, v3);
    d.point_to("v3");
    let err = engine
        .reload()
        .expect_err("a contract names a field v3 lacks");
    match &err {
        ReloadError::Records {
            serving,
            source: RecordError::UnknownField { what, field },
        } => {
            assert_eq!(serving, &v1);
            assert_eq!(what, &format!("Processor::{:?}", ids::P_MAILING));
            assert_eq!(field, "address");
        }
        other => panic!("expected the records refused, got {other:?}"),
    }
    assert!(err.to_string().contains(v1.short()), "{err}");
    assert_eq!(engine.current().engine.version(), &v1);
    assert_eq!(decide(&engine.current()), Effect::Deny);
    // Refused at every reload while the directory holds it; served again once fixed.
    assert!(matches!(engine.reload(), Err(ReloadError::Records { .. })));
    d.point_to("v2");
    match engine.reload() {
        Ok(ReloadOutcome::Swapped { from, to }) => {
            assert_eq!((from, to), (v1, version_of(&d.dir("v2"))));
        }
        other => panic!("expected v2 served, got {other:?}"),
    }
    // Starting on v3 is refused the same way.
    match ReloadableEngine::from_dir(d.dir("v3"), bundled()) {
        Err(ReloadStartError::Records(RecordError::UnknownField { field, .. })) => {
            assert_eq!(field, "address");
        }
        other => panic!("expected the records refused at start, got {other:?}"),
    }
}
