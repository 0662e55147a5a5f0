//! `membergate::review`: who sees what, when, before and after a policy change, on the
//! bundled sample; and `membergate review`.

use membergate::review::{self, PhaseKind, Reach, WhoSeesWhat};
use membergate::Engine;

use crate::support::{bundled, engine, membergate, policies_dir, stdout, PolicyCopy};

/// The bundled policies with `find` replaced by `replace` in `file`, reviewed against
/// the bundled ones.
fn reviewed(file: &str, find: &str, replace: &str) -> WhoSeesWhat {
    let copy = PolicyCopy::new();
    copy.edit(file, find, replace);
    let new = Engine::from_dir(copy.path()).expect("the edited policies load");
    review::who_sees_what(engine(), &new, bundled()).expect("a review")
}

/// Every changed cell is explained by a member of the data that the two versions decide
/// differently, the old version's way as `was` and the new one's as `is`.
fn explained(m: &WhoSeesWhat, was: bool, is: bool) {
    for (row, phase, class, cell) in m.changed() {
        let w = cell.witness.as_ref().unwrap_or_else(|| {
            panic!(
                "{} / {} / {class}: no member explains it",
                row.label, phase.label
            )
        });
        assert!(
            bundled().members.contains_key(&w.member),
            "{}: not a member of the data",
            w.member
        );
        assert_eq!(
            (w.before.0, w.after.0),
            (was, is),
            "{} / {} / {class}",
            row.label,
            phase.label
        );
    }
}

#[test]
fn the_same_policies_change_no_cell() {
    let m = review::who_sees_what(engine(), engine(), bundled()).expect("a review");
    assert_eq!(m.changed().count(), 0);
    // Every kind of principal, each election's three phases and the three other moments.
    assert_eq!(m.phases.len(), 3 * bundled().elections.len() + 4);
    assert!(m.rows.iter().any(|r| r.label.starts_with("processor")));
    assert_eq!(m.to_string().lines().last(), Some("no cell changed"));
}

#[test]
fn removing_the_revocation_forbid_opens_only_the_role_ended_column() {
    let m = reviewed(
        "guardrails.cedar",
        "@id(\"role-ended\")\n@rule(\"2\")\nforbid (principal, action, resource)\nwhen { principal has ended_at && principal.ended_at <= context.now };\n",
        "",
    );
    let changed: Vec<_> = m.changed().collect();
    assert!(changed.len() >= 10, "{m}");
    for (row, phase, class, cell) in &changed {
        assert_eq!(phase.kind, PhaseKind::RoleEnded, "{} / {class}", row.label);
        assert_eq!(cell.before, Reach::Nobody, "{} / {class}", row.label);
        let w = cell.witness.as_ref().expect("a member explains it");
        assert!(w.before.1.iter().any(|p| p == "role-ended"), "{w:?}");
    }
    explained(&m, false, true);
    // The membership team, a day after its staffer left, reads every member's identity.
    let (_, _, _, cell) = changed
        .iter()
        .find(|(row, _, class, _)| {
            row.label.starts_with("staff, membership") && *class == "identity"
        })
        .expect("the membership team's identity cell changed");
    assert_eq!(cell.after, Reach::Everyone);
}

#[test]
fn dropping_the_fee_condition_opens_the_unpaid_campaign_during_the_contest() {
    let m = reviewed(
        "campaigns.cedar",
        "  principal.campaign.candidate.fee_paid &&\n",
        "",
    );
    let changed: Vec<_> = m.changed().collect();
    assert!(!changed.is_empty(), "{m}");
    for (row, phase, class, cell) in &changed {
        assert!(
            row.label.starts_with("campaign staff"),
            "{} / {class}",
            row.label
        );
        assert_eq!(phase.kind, PhaseKind::Contest, "{} / {class}", row.label);
        assert!(["identity", "contact"].contains(class), "{class}");
        assert_eq!((cell.before, cell.after), (Reach::Nobody, Reach::Some));
        let w = cell.witness.as_ref().expect("a member explains it");
        assert_eq!(w.before.1, ["campaign-candidate-not-cleared"]);
        assert_eq!(w.after.1, ["campaign-read-contact"]);
    }
    explained(&m, false, true);
    let text = m.to_string();
    assert!(text.contains("campaign-candidate-not-cleared"), "{text}");
}

#[test]
fn cli_review_prints_the_matrix_and_exits_1_on_a_change() {
    let dir = policies_dir();
    let dir = dir.to_str().expect("a UTF-8 path");
    let same = membergate(&["review", dir, dir]);
    assert_eq!(same.status.code(), Some(0));
    let out = stdout(&same);
    assert!(out.contains("no cell changed\n"), "{out}");
    assert!(
        out.ends_with("nothing: every request is decided alike\n"),
        "{out}"
    );

    let copy = PolicyCopy::new();
    copy.edit(
        "campaigns.cedar",
        "  principal.campaign.candidate.fee_paid &&\n",
        "",
    );
    let new = copy.path().to_str().expect("a UTF-8 path");
    let changed = membergate(&["review", dir, new]);
    assert_eq!(changed.status.code(), Some(1));
    let out = stdout(&changed);
    assert!(out.contains("leader-2020: during the contest"), "{out}");
    assert!(out.contains("*none -> some"), "{out}");
    assert!(
        out.contains("before denied by campaign-candidate-not-cleared"),
        "{out}"
    );
    // The solver's differences, each with an example from the data.
    assert!(
        out.contains("for example, from the data: CampaignStaff::\"cs-b-agent\""),
        "{out}"
    );
}

#[test]
fn the_html_page_marks_the_changed_cells_and_explains_them_without_a_script() {
    let m = reviewed(
        "campaigns.cedar",
        "  principal.campaign.candidate.fee_paid &&\n",
        "",
    );
    let html = m.to_html("Fee condition <dropped>");
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(
        html.contains("<title>Fee condition &lt;dropped&gt;</title>"),
        "escaped title"
    );
    for banned in ["<script", "http://", "https://", "<link", "@import"] {
        // The SVG namespace is the one address the page holds: it is never fetched.
        let found = html
            .matches(banned)
            .count()
            .saturating_sub(usize::from(banned == "http://"));
        assert_eq!(found, 0, "{banned} in the page");
    }
    assert_eq!(html.matches("<svg").count(), 1, "the timeline");
    // Each changed cell outlined in its table, and explained in the list.
    assert_eq!(
        html.matches("class=\"some changed\"").count(),
        m.changed().count()
    );
    assert_eq!(html.matches("<li>").count(), m.changed().count());
    assert!(
        html.contains("<code>campaign-candidate-not-cleared</code>"),
        "the deciding policy"
    );
}

/// Debian's `chromium`, if installed (`MEMBERGATE_CHROMIUM` names another); `None` skips
/// the browser test unless `MEMBERGATE_REQUIRE_CHROMIUM` is set (CI sets it).
fn chromium() -> Option<std::path::PathBuf> {
    let named = std::env::var_os("MEMBERGATE_CHROMIUM").map(std::path::PathBuf::from);
    let found = named.or_else(|| {
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("MEMBERGATE_REQUIRE_CHROMIUM").is_none(),
            "MEMBERGATE_REQUIRE_CHROMIUM is set but no chromium was found"
        );
        eprintln!("review: no chromium (apt-get install chromium): the browser test is skipped");
    }
    found
}

/// Runs headless chromium on `page` with `args`; its standard output.
fn headless(chromium: &std::path::Path, page: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Three deliberate changes reviewed and opened in a real browser: the page it renders
/// (`--dump-dom`) holds each changed cell, outlined, and the readable example with its
/// deciding policies; a screenshot of each is left in `target/review-screenshots/`.
#[test]
fn three_reviews_render_in_a_browser_with_their_changes() {
    let Some(chromium) = chromium() else { return };
    let shots = policies_dir().join("../target/review-screenshots");
    std::fs::create_dir_all(&shots).expect("a screenshot directory");
    let changes: [(&str, &str, &str, &str, &str); 3] = [
        (
            "fee-condition-dropped",
            "campaigns.cedar",
            "  principal.campaign.candidate.fee_paid &&\n",
            "",
            "campaign-candidate-not-cleared",
        ),
        (
            "forbid-removed",
            "guardrails.cedar",
            "@id(\"role-ended\")\n@rule(\"2\")\nforbid (principal, action, resource)\nwhen { principal has ended_at && principal.ended_at <= context.now };\n",
            "",
            "role-ended",
        ),
        (
            "processor-field-added",
            "processors.cedar",
            "@id(\"processor-contract-not-in-force\")",
            "@id(\"processor-mailing-phone\")\n@rule(\"13\")\npermit (principal == Processor::\"p-mailing\", action == Action::\"read\", resource is Member)\nwhen { context.field == Field::\"phone\" };\n\n@id(\"processor-contract-not-in-force\")",
            "processor-mailing-phone",
        ),
    ];
    for (name, file, find, replace, policy) in changes {
        let m = reviewed(file, find, replace);
        let changed = m.changed().count();
        assert!(changed > 0, "{name}: nothing changed\n{m}");
        let page = shots.join(format!("{name}.html"));
        std::fs::write(&page, m.to_html(&format!("Review: {name}"))).expect("write the page");
        let dom = headless(&chromium, &page, &["--dump-dom"]);
        assert_eq!(
            dom.matches(" changed\"").count(),
            changed,
            "{name}: the outlined cells"
        );
        assert_eq!(
            dom.matches("<li>").count(),
            changed,
            "{name}: the explanations"
        );
        assert!(
            dom.contains(&format!("<code>{policy}</code>")),
            "{name}: {policy} in\n{dom}"
        );
        let example = m
            .changed()
            .find_map(|(_, _, _, c)| c.witness.as_ref())
            .expect("an example");
        assert!(
            dom.contains(&format!(
                "<code>{}</code> of member <code>{}</code>",
                example.field, example.member
            )),
            "{name}: the example"
        );
        let png = shots.join(format!("{name}.png"));
        headless(
            &chromium,
            &page,
            &[
                "--window-size=1400,1200",
                &format!("--screenshot={}", png.display()),
            ],
        );
        assert!(
            std::fs::metadata(&png).is_ok_and(|m| m.len() > 10_000),
            "{name}: a screenshot"
        );
    }
}

/// Each difference the solver finds in the fee change has an example from the data, going
/// its way, and each is what both engines decide.
#[test]
fn the_solvers_differences_get_examples_from_the_data() {
    use membergate::assurance::{Direction, Verifier};
    use membergate::{Context, Request};

    let copy = PolicyCopy::new();
    copy.edit(
        "campaigns.cedar",
        "  principal.campaign.candidate.fee_paid &&\n",
        "",
    );
    let new = Engine::from_dir(copy.path()).expect("the edited policies load");
    let mut verifier = Verifier::locate().unwrap_or_else(|e| panic!("{e}"));
    let diff = verifier.diff(engine(), &new).expect("diff runs");
    assert!(!diff.differences.is_empty());
    let examples = review::data_examples(engine(), &new, bundled(), &diff.differences);
    assert_eq!(examples.len(), diff.differences.len());
    let (old_dir, new_dir) = (
        membergate::Directory::from_membership(engine(), bundled()).expect("records fit"),
        membergate::Directory::from_membership(&new, bundled()).expect("records fit"),
    );
    for (d, e) in diff.differences.iter().zip(&examples) {
        let e = e
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no example from the data", d.request_type));
        assert!(bundled().members.contains_key(&e.witness.member), "{e}");
        assert!(bundled().principal(&e.principal).is_some(), "{e}");
        assert!(
            !e.witness.field.is_empty() && e.at.to_string().starts_with("20"),
            "{e}"
        );
        let widened = d.direction == Direction::Widened;
        assert_eq!(
            (e.witness.before.0, e.witness.after.0),
            (!widened, widened),
            "{e}"
        );
        // Decided again, from scratch, by both versions.
        let mut ctx = Context::at(e.at);
        ctx.election = e.election.clone();
        ctx.session = e.session.clone();
        assert_eq!(e.taken_as_ended, None, "{e}");
        let member = crate::support::member(bundled(), &e.witness.member);
        let req = Request {
            principal: &e.principal,
            action: e.action,
            member,
            field: &e.witness.field,
            context: &ctx,
        };
        let allowed = |engine: &Engine, dir| engine.authorize(dir, &req).map(|d| d.is_allowed());
        assert_eq!(allowed(engine(), &old_dir), Ok(e.witness.before.0), "{e}");
        assert_eq!(allowed(&new, &new_dir), Ok(e.witness.after.0), "{e}");
    }
}

/// Dates at the limits of time give a review (or a clear error), never a panic: the
/// moments past them are left out.
#[test]
fn an_election_at_the_limits_of_time_is_reviewed_without_a_panic() {
    let mut party = bundled().clone();
    let election = party.elections.values_mut().next().expect("an election");
    election.nominations_close = jiff::Timestamp::MIN;
    election.ballot_close = jiff::Timestamp::MAX;
    match review::who_sees_what(engine(), engine(), &party) {
        Ok(m) => {
            assert_eq!(m.changed().count(), 0);
            assert!(
                m.phases.len() < 3 * party.elections.len() + 3,
                "the moments past the limits are left out"
            );
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}
