//! Live reload: a new policy directory swapped in while requests are decided, refused
//! reloads that keep the old set, and the invariant gate.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use crate::support::{bundled, copy_dir};
use membergate::sample::ids;
use membergate::{
    Action, Context, Effect, Engine, PolicyVersion, PrincipalId, PrincipalKind, ReloadCheck,
    ReloadError, ReloadableEngine, Request,
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
fn request() -> Request {
    Request::new(
        PrincipalId::new(PrincipalKind::Staff, ids::S_LEFT),
        Action::Read,
        ids::MEMBER_ELIGIBLE,
        "name",
        Context::at("2020-03-01T12:00:00Z".parse().expect("time")),
    )
}

fn decide(engine: &Engine) -> Effect {
    engine
        .authorize(bundled(), &request())
        .expect("decided")
        .effect()
}

fn version_of(dir: &Path) -> PolicyVersion {
    Engine::from_dir(dir).expect("loads").version().clone()
}

#[test]
fn a_reload_swaps_the_set_and_old_snapshots_keep_their_answers() {
    let d = Deployment::new();
    let engine = ReloadableEngine::from_dir(d.current()).expect("loads");
    let (v1, v2) = (version_of(&d.dir("v1")), version_of(&d.dir("v2")));
    assert_ne!(v1, v2);
    let before = engine.current();
    assert_eq!(before.version(), &v1);
    assert_eq!(decide(&before), Effect::Deny);

    assert!(!engine.reload().expect("unchanged").swapped());
    d.point_to("v2");
    let outcome = engine.reload().expect("reloads");
    assert_eq!(
        outcome,
        membergate::ReloadOutcome::Swapped {
            from: v1.clone(),
            to: v2.clone()
        }
    );
    // A request that started before the reload finishes on the old set...
    assert_eq!(before.version(), &v1);
    assert_eq!(decide(&before), Effect::Deny);
    // ... and new requests decide on the new one.
    assert_eq!(engine.current().version(), &v2);
    assert_eq!(decide(&engine.current()), Effect::Allow);
}

#[test]
fn refused_reloads_keep_serving_the_old_set() {
    let d = Deployment::new();
    let engine = ReloadableEngine::from_dir(d.current()).expect("loads");
    let v1 = engine.current().version().clone();

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
    assert_eq!(engine.current().version(), &v1);
    assert_eq!(decide(&engine.current()), Effect::Deny);

    // The directory disappears: refused, still serving.
    d.point_to("v2");
    fs::remove_dir_all(d.dir("v2")).expect("remove");
    let err = engine.reload().expect_err("no directory");
    assert!(matches!(err, ReloadError::Load { .. }), "{err}");
    assert_eq!(engine.current().version(), &v1);

    // A file missing from it: refused, still serving.
    copy_dir(Path::new("policies"), &d.dir("v2"));
    fs::remove_file(d.dir("v2").join("schema.cedarschema")).expect("remove");
    let err = engine.reload().expect_err("no schema");
    assert!(err.to_string().contains("schema.cedarschema"), "{err}");
    assert_eq!(engine.current().version(), &v1);
    assert_eq!(decide(&engine.current()), Effect::Deny);
}

#[test]
fn reloads_under_concurrent_requests_never_mix_versions() {
    let d = Arc::new(Deployment::new());
    let engine = Arc::new(ReloadableEngine::from_dir(d.current()).expect("loads"));
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
                    seen.push((snapshot.version().clone(), decide(&snapshot)));
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
    let engine =
        ReloadableEngine::with_check(d.current(), ReloadCheck::Invariants).expect("proved");
    let v1 = engine.current().version().clone();
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
    assert_eq!(engine.current().version(), &v1);
    // Starting on a set that breaks an invariant is refused too.
    let err = ReloadableEngine::with_check(d.dir("v2"), ReloadCheck::Invariants)
        .expect_err("refuted at start");
    assert!(err.to_string().contains("role-ended-nothing"), "{err}");
}
