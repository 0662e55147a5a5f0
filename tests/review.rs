//! `membergate::review`: who sees what, when, before and after a policy change, on the
//! bundled sample; and `membergate review`.

use membergate::review::{self, PhaseKind, Reach, WhoSeesWhat};
use membergate::Engine;

use crate::support::{
    bundled, chromium, engine, headless, membergate, policies_dir, stdout, PolicyCopy,
};

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
        out.contains(
            "\nwhat changed for every possible request:\n  nothing: every request is decided alike\n"
        ),
        "{out}"
    );
    assert!(out.contains("coverage: 35 of 35 policies"), "{out}");

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

/// The three deliberate changes the review is checked on: a name, the file, the text
/// replaced and its replacement, and a policy the review must name.
const CHANGES: [(&str, &str, &str, &str, &str); 3] = [
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

/// A change of [`CHANGES`] reviewed whole (with the solver), and its new policies.
struct Reviewed {
    name: &'static str,
    policy: &'static str,
    new: Engine,
    review: review::Review,
    seconds: f64,
}

/// The three changes, reviewed once for every test that reads them.
fn three_reviews() -> &'static [Reviewed] {
    static REVIEWS: std::sync::OnceLock<Vec<Reviewed>> = std::sync::OnceLock::new();
    REVIEWS.get_or_init(|| {
        let mut verifier =
            membergate::assurance::Verifier::locate().unwrap_or_else(|e| panic!("{e}"));
        CHANGES
            .iter()
            .map(|&(name, file, find, replace, policy)| {
                let copy = PolicyCopy::new();
                copy.edit(file, find, replace);
                let started = std::time::Instant::now();
                let review =
                    review::review(policies_dir(), copy.path(), bundled(), Some(&mut verifier))
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                let seconds = started.elapsed().as_secs_f64();
                let new = Engine::from_dir(copy.path()).expect("the edited policies load");
                Reviewed {
                    name,
                    policy,
                    new,
                    review,
                    seconds,
                }
            })
            .collect()
    })
}

/// Three deliberate changes reviewed whole and opened in a real browser: the page it
/// renders (`--dump-dom`) holds each changed cell, outlined, with its explanation and
/// deciding policy; each difference for every request with its readable example; each
/// version's invariants and tests. A screenshot of each is left in
/// `target/review-screenshots/`.
#[test]
fn three_reviews_render_in_a_browser_with_their_changes() {
    let Some(chromium) = chromium() else { return };
    let shots = policies_dir().join("../target/review-screenshots");
    std::fs::create_dir_all(&shots).expect("a screenshot directory");
    for r in three_reviews() {
        let (name, policy, m) = (r.name, r.policy, &r.review.who_sees_what);
        let changed = m.changed().count();
        assert!(changed > 0, "{name}: nothing changed\n{m}");
        let page = shots.join(format!("{name}.html"));
        let html = r.review.to_html(&format!("Review: {name}"));
        assert!(!html.contains("<script"), "{name}: a script");
        std::fs::write(&page, html).expect("write the page");
        let dom = headless(&chromium, &page, &["--dump-dom"]);
        assert_eq!(
            dom.matches(" changed\"").count(),
            changed,
            "{name}: the outlined cells"
        );
        let cells = section(&dom, "id=\"cells\"", "id=\"differences\"");
        assert_eq!(
            cells.matches("<li>").count(),
            changed,
            "{name}: the explanations"
        );
        assert!(
            cells.contains(&format!("<code>{policy}</code>")),
            "{name}: {policy} in\n{cells}"
        );
        let example = m
            .changed()
            .find_map(|(_, _, _, c)| c.witness.as_ref())
            .expect("an example");
        assert!(
            cells.contains(&format!(
                "<code>{}</code> of member <code>{}</code>",
                example.field, example.member
            )),
            "{name}: the example"
        );
        // Every difference for every request, each with a readable example.
        let changes = r.review.changes.as_ref().expect("the solver ran");
        let differences = section(&dom, "id=\"differences\"", "id=\"invariants\"");
        assert_eq!(
            differences.matches("class=\"difference\"").count(),
            changes.differences.len(),
            "{name}: the differences"
        );
        assert_eq!(
            differences.matches("class=\"example\"").count(),
            changes.differences.len(),
            "{name}: an example each"
        );
        assert!(
            !differences.contains("::&quot;&quot;"),
            "{name}: an empty id"
        );
        // Each version's invariants: the old proves all, the new refutes the one the
        // change breaks.
        let invariants = section(&dom, "id=\"invariants\"", "id=\"tests\"");
        let (old_inv, new_inv) = invariants
            .split_once("<table class=\"invariants new\"")
            .expect("both versions' invariants");
        assert!(!old_inv.contains("class=\"text refuted\""), "{name}");
        let broken = match name {
            "fee-condition-dropped" => "campaign-only-cleared-candidates",
            "forbid-removed" => "role-ended-nothing",
            _ => "processor-contract-only",
        };
        let row = new_inv
            .split("<tr>")
            .find(|row| row.contains(&format!("<code>{broken}</code>")))
            .unwrap_or_else(|| panic!("{name}: {broken} in\n{new_inv}"));
        assert!(row.contains("class=\"text refuted\""), "{name}: {row}");
        // Each version's tests: the old passes all; removing the forbid fails some.
        let tests = section(&dom, "id=\"tests\"", "id=\"record\"");
        let (old_tests, new_tests) = tests
            .split_once("<table class=\"tests new\"")
            .expect("both versions' tests");
        assert!(!old_tests.contains("class=\"failures\""), "{name}");
        if name == "forbid-removed" {
            assert!(new_tests.contains("class=\"failures\""), "{name}");
        }
        // The record of processing under the new policies.
        let record = section(&dom, "id=\"record\"", "</body>");
        let recipients = &r.review.record.as_ref().expect("a record").recipients;
        for recipient in recipients {
            assert!(
                record.contains(&recipient.label),
                "{name}: {}",
                recipient.label
            );
        }
        let mailing = recipients
            .iter()
            .find(|r| r.principal.id == "p-mailing")
            .expect("the mailing house is a recipient");
        assert_eq!(
            mailing.fields().contains("phone"),
            name == "processor-field-added",
            "{name}: the mailing house's fields in the record"
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
        eprintln!(
            "review {name}: {:.1} s, {changed} cells changed, {} differences, screenshot {}",
            r.seconds,
            changes.differences.len(),
            png.display()
        );
    }
}

/// The part of `page` from `from` to `to`.
fn section<'p>(page: &'p str, from: &str, to: &str) -> &'p str {
    let start = page
        .find(from)
        .unwrap_or_else(|| panic!("{from} in the page"));
    let rest = &page[start..];
    &rest[..rest.find(to).unwrap_or(rest.len())]
}

/// Every example a review gives is decided differently by the two versions, decided
/// again here from scratch (a data example by both engines, the solver's by Cedar's
/// authorizer), and carries no empty id and no time outside 1900-2100; none of the three
/// changes needs the solver's raw extremes.
#[test]
fn every_example_in_a_review_is_real_and_plausible() {
    use membergate::assurance::Direction;
    use membergate::review::Example;
    use membergate::{Context, Request};

    for r in three_reviews() {
        let name = r.name;
        let changes = r.review.changes.as_ref().expect("the solver ran");
        assert!(!changes.differences.is_empty(), "{name}");
        for change in &changes.differences {
            let d = &change.difference;
            let widened = d.direction == Direction::Widened;
            match &change.example {
                Example::Data(e) => {
                    let w = &e.witness;
                    assert!(bundled().members.contains_key(&w.member), "{name}: {e}");
                    assert!(bundled().principal(&e.principal).is_some(), "{name}: {e}");
                    assert!(!w.field.is_empty() && !e.principal.id.is_empty(), "{e}");
                    plausible_year(&e.at.to_string(), name);
                    assert_eq!((w.before.0, w.after.0), (!widened, widened), "{e}");
                    // Decided again, from scratch, by both versions.
                    let mut party = bundled().principal_side();
                    if let Some((ended, at)) = e.taken_as_ended {
                        plausible_year(&at.to_string(), name);
                        end(&mut party, &e.principal, ended, at);
                    }
                    let dir = |engine: &Engine| {
                        membergate::Directory::from_membership(engine, &party).expect("fits")
                    };
                    let mut ctx = Context::at(e.at);
                    ctx.election = e.election.clone();
                    ctx.session = e.session.clone();
                    let req = Request {
                        principal: &e.principal,
                        action: e.action,
                        member: crate::support::member(bundled(), &w.member),
                        field: &w.field,
                        context: &ctx,
                    };
                    let allowed = |engine: &Engine| {
                        engine.authorize(&dir(engine), &req).map(|d| d.is_allowed())
                    };
                    assert_eq!(allowed(engine()), Ok(!widened), "{name}: {e}");
                    assert_eq!(allowed(&r.new), Ok(widened), "{name}: {e}");
                }
                Example::Plausible { after, before } => {
                    plausible_request(after.describe(), name);
                    let decide = |engine: &Engine| {
                        cedar_policy::Authorizer::new()
                            .is_authorized(&after.request, engine.policies(), &after.entities)
                            .decision()
                            == cedar_policy::Decision::Allow
                    };
                    assert_eq!(decide(&r.new), widened, "{name}: {}", after.describe());
                    assert_eq!(decide(engine()), !widened, "{name}: {}", after.describe());
                    assert_eq!(before.describe(), after.describe());
                }
                Example::OnlyAtTheEdges => {
                    panic!("{name}: {} has no readable example", d.request_type)
                }
            }
        }
        for invariants in [&r.review.invariants.old, &r.review.invariants.new] {
            for i in invariants.as_ref().expect("the solver ran") {
                if let Some(e) = &i.plausible {
                    plausible_request(e.describe(), name);
                }
            }
        }
    }
}

/// `text` (a request and its entities, as the review shows it) names no empty id and
/// every time in it is in 1900-2100 (a time past RFC 3339's years stays `datetime(...)`).
fn plausible_request(text: &str, name: &str) {
    assert!(!text.contains("::\"\""), "{name}: an empty id in\n{text}");
    assert!(
        !text.contains("datetime("),
        "{name}: an unreadable time in\n{text}"
    );
    for (i, _) in text.match_indices('T') {
        // `YYYY-MM-DDT`: the year is the ten characters before the `T`.
        if let Some(date) = i.checked_sub(10).and_then(|s| text.get(s..i)) {
            if date.as_bytes().get(4) == Some(&b'-') && date.as_bytes().get(7) == Some(&b'-') {
                plausible_year(date, name);
            }
        }
    }
}

/// The year of `time` (`YYYY-...`) is in 1900-2100.
fn plausible_year(time: &str, name: &str) {
    let year: i32 = time
        .get(..4)
        .and_then(|y| y.parse().ok())
        .unwrap_or_else(|| panic!("{name}: no year in {time}"));
    assert!((1900..2100).contains(&year), "{name}: {time}");
}

/// `party` with `p`'s role (or contract) ended at `at`.
fn end(
    party: &mut membergate::Membership,
    p: &membergate::PrincipalId,
    ended: membergate::review::Ended,
    at: jiff::Timestamp,
) {
    use membergate::review::Ended;
    use membergate::PrincipalKind as K;
    let id = p.id.as_str();
    let role = match p.kind {
        K::Staff => party.staff.get_mut(id).map(|r| &mut r.ended_at),
        K::CampaignStaff => party.campaign_staff.get_mut(id).map(|r| &mut r.ended_at),
        K::Volunteer => party.volunteers.get_mut(id).map(|r| &mut r.ended_at),
        K::Officer => party.officers.get_mut(id).map(|r| &mut r.ended_at),
        K::Representative => party.representatives.get_mut(id).map(|r| &mut r.ended_at),
        K::Processor => party.processors.get_mut(id).map(|r| &mut r.ended_at),
    };
    match ended {
        Ended::Role => *role.expect("a principal of the data") = Some(at),
        Ended::Contract => {
            party
                .processors
                .get_mut(id)
                .expect("a processor")
                .contract
                .ends = at;
        }
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

/// The matrix asks with each purpose the policies name and with a break-glass reason too:
/// the compliance team reads special-category fields (for a stated purpose), and a change
/// that only narrows one purpose marks its cells, explained by a member asked with it.
#[test]
fn a_change_to_one_purpose_is_found_by_asking_with_it() {
    let same = review::who_sees_what(engine(), engine(), bundled()).expect("a review");
    let contest = same
        .phases
        .iter()
        .position(|p| p.kind == PhaseKind::Contest)
        .expect("a contest");
    let special = same
        .classes
        .iter()
        .position(|c| c == "special_category")
        .expect("the special class");
    let compliance = same
        .rows
        .iter()
        .find(|r| r.label.starts_with("staff, compliance"))
        .expect("the compliance team");
    assert_eq!(compliance.cells[contest][special].after, Reach::Some);

    let m = reviewed(
        "guardrails.cedar",
        r#"["equality_monitoring", "subject_access", "complaint"]"#,
        r#"["equality_monitoring", "subject_access"]"#,
    );
    let changed: Vec<_> = m.changed().collect();
    assert!(!changed.is_empty(), "{m}");
    for (row, phase, class, cell) in changed {
        assert_eq!(class, "special_category", "{} / {}", row.label, phase.label);
        // Still read with the other purposes: the reach is the same, the cell marked.
        assert_eq!((cell.before, cell.after), (Reach::Some, Reach::Some));
        let w = cell.witness.as_ref().expect("a member explains it");
        assert_eq!(w.asked_with.as_deref(), Some("purpose complaint"), "{w:?}");
        assert_eq!((w.before.0, w.after.0), (true, false), "{w:?}");
    }
    assert!(
        m.to_string().contains("asked with purpose complaint"),
        "{m}"
    );
}
