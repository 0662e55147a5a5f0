//! A review as one self-contained HTML page (see [`crate::html`]).

use std::fmt::Write as _;

use super::{said, Cell, PhaseKind, Reach, WhoSeesWhat};
use crate::html::{escape, open, CLOSE};

/// The CSS class of a cell's reach.
fn class(r: Reach) -> &'static str {
    match r {
        Reach::Nobody => "none",
        Reach::Some => "some",
        Reach::Everyone => "all",
        Reach::NotApplicable => "na",
    }
}

/// A cell's text: the reach after, or `was → is` where it changed.
fn cell_text(c: &Cell) -> String {
    if c.before == c.after {
        c.after.as_str().to_string()
    } else {
        format!("{} → {}", c.before.as_str(), c.after.as_str())
    }
}

/// The page of the matrix alone: a title, the matrix per moment, the election timeline,
/// and each changed cell explained.
pub fn page(title: &str, m: &WhoSeesWhat) -> String {
    let mut out = open(title);
    out.push_str(&matrix(m));
    out.push_str(CLOSE);
    out
}

/// The matrix per moment, the election timeline, and each changed cell explained.
fn matrix(m: &WhoSeesWhat) -> String {
    let mut out = String::new();
    let changed = m.changed().count();
    let _ = write!(
        out,
        "<p id=\"summary\">{}</p>\n<p class=\"legend\"><span style=\"background:#f2f2f2\">none: \
         no member</span><span style=\"background:#fff3c4\">some: some members, or some \
         fields</span><span style=\"background:#ffd1c2\">all: every field of every \
         member</span><span style=\"outline:3px solid #c00\">changed by this change</span></p>\n\
         <p>A cell counts what the principal reads asking with nothing stated, with any \
         purpose the policies name, or with a break-glass reason; an explanation says which.</p>\n",
        if changed == 0 {
            "No cell changed: every kind of principal reads the same before and after.".to_string()
        } else {
            format!("{changed} cells changed, outlined in red and explained below.")
        }
    );
    out.push_str("<h2 id=\"matrix\">Who sees what, when</h2>\n");
    out.push_str(&timeline(m));
    for (i, phase) in m.phases.iter().enumerate() {
        let _ = write!(
            out,
            "<h3>{}</h3>\n<table class=\"matrix\"><tr><th></th>",
            escape(&phase.label)
        );
        for c in &m.classes {
            let _ = write!(out, "<th>{}</th>", escape(c));
        }
        out.push_str("</tr>\n");
        for row in &m.rows {
            let _ = write!(out, "<tr><th class=\"who\">{}</th>", escape(&row.label));
            for (cell, class_name) in row.cells.get(i).into_iter().flatten().zip(&m.classes) {
                let changed = if cell.changed { " changed" } else { "" };
                let why = cell
                    .witness
                    .as_ref()
                    .map(|w| {
                        format!(
                            " title=\"{}: {} of {}\"",
                            escape(class_name),
                            escape(&w.field),
                            escape(&w.member)
                        )
                    })
                    .unwrap_or_default();
                let _ = write!(
                    out,
                    "<td class=\"{}{changed}\"{why}>{}</td>",
                    class(cell.after),
                    escape(&cell_text(cell))
                );
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n");
    }
    out.push_str("<h2 id=\"cells\">The cells changed, and why</h2>\n");
    if changed == 0 {
        out.push_str("<p>Nothing.</p>\n");
    } else {
        out.push_str("<ul id=\"changes\">\n");
        for (row, phase, class_name, cell) in m.changed() {
            let _ = write!(
                out,
                "<li><b>{}</b>, {}, <b>{}</b>: {}",
                escape(&row.label),
                escape(&phase.label),
                escape(class_name),
                escape(&cell_text(cell))
            );
            match &cell.witness {
                Some(w) => {
                    let said = |d: &(bool, Vec<String>)| {
                        said(d, |p| format!("<code>{}</code>", escape(p)))
                    };
                    let with = w
                        .asked_with
                        .as_ref()
                        .map_or(String::new(), |s| format!(", asked with {}", escape(s)));
                    let _ = write!(
                        out,
                        "<br>for example the <code>{}</code> of member <code>{}</code>{with}: \
                         before, {}; after, {}.",
                        escape(&w.field),
                        escape(&w.member),
                        said(&w.before),
                        said(&w.after)
                    );
                }
                None => out.push_str(
                    "<br>the condition changed; no member of the data is decided differently.",
                ),
            }
            out.push_str("</li>\n");
        }
        out.push_str("</ul>\n");
    }
    out
}

/// Each election's phases as a picture: a band per kind of principal, a box per phase
/// coloured by what it reads after the change (the most of its classes), outlined in red
/// where a cell changed.
fn timeline(m: &WhoSeesWhat) -> String {
    let phases: Vec<(usize, &super::Phase)> = m
        .phases
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            matches!(
                p.kind,
                PhaseKind::BeforeNominationsClose | PhaseKind::Contest | PhaseKind::AfterBallot
            )
        })
        .collect();
    let (label_w, box_w, row_h, top) = (320usize, 110usize, 22usize, 60usize);
    let width = label_w + box_w * phases.len() + 20;
    let height = top + row_h * m.rows.len() + 10;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         role=\"img\" aria-label=\"who sees what across the elections\" \
         font-family=\"system-ui,sans-serif\" font-size=\"12\">"
    );
    for (x, (_, phase)) in phases.iter().enumerate() {
        let left = label_w + x * box_w;
        let (election, what) = phase.label.split_once(": ").unwrap_or(("", &phase.label));
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>\
             <text x=\"{}\" y=\"40\" text-anchor=\"middle\">{}</text>",
            left + box_w / 2,
            escape(election),
            left + box_w / 2,
            escape(
                what.trim_end_matches(" close")
                    .trim_start_matches("during the ")
            )
        );
    }
    for (y, row) in m.rows.iter().enumerate() {
        let top_y = top + y * row_h;
        let _ = write!(
            svg,
            "<text x=\"4\" y=\"{}\">{}</text>",
            top_y + row_h - 7,
            escape(&row.label)
        );
        for (x, (i, _)) in phases.iter().enumerate() {
            let cells = row.cells.get(*i).map(Vec::as_slice).unwrap_or(&[]);
            let most = cells
                .iter()
                .map(|c| c.after)
                .filter(|r| *r != Reach::NotApplicable)
                .max()
                .unwrap_or(Reach::Nobody);
            let fill = match most {
                Reach::Everyone => "#ffd1c2",
                Reach::Some => "#fff3c4",
                _ => "#f2f2f2",
            };
            let changed = cells.iter().any(|c| c.changed);
            let stroke = if changed {
                "stroke=\"#c00\" stroke-width=\"3\""
            } else {
                "stroke=\"#bbb\""
            };
            let _ = write!(
                svg,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{fill}\" {stroke}/>\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                label_w + x * box_w + 2,
                top_y + 2,
                box_w - 4,
                row_h - 4,
                label_w + x * box_w + box_w / 2,
                top_y + row_h - 7,
                most.as_str()
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// The whole review's page: a summary, the matrix, what changed for every request with
/// examples, each version's invariants and each version's tests.
#[cfg(feature = "assurance")]
pub fn review_page(title: &str, r: &super::Review) -> String {
    let mut out = open(title);
    out.push_str(
        "<p>Sections: <a href=\"#matrix\">who sees what, when</a> · \
         <a href=\"#differences\">what changed for every request</a> · \
         <a href=\"#invariants\">invariants</a> · <a href=\"#tests\">tests</a> · \
         <a href=\"#record\">record of processing</a></p>\n",
    );
    out.push_str(&matrix(&r.who_sees_what));
    out.push_str(&report::differences(r));
    out.push_str(&report::invariants(r));
    out.push_str(&report::tests(r));
    match &r.record {
        Ok(record) => out.push_str(&record.html_section()),
        Err(why) => {
            let _ = writeln!(
                out,
                "<h2 id=\"record\">Record of processing</h2>\n<p>Not made: {}.</p>",
                escape(why)
            );
        }
    }
    out.push_str(CLOSE);
    out
}

/// The review's sections after the matrix.
#[cfg(feature = "assurance")]
mod report {
    use std::fmt::Write as _;

    use super::{escape, said};
    use crate::assurance::{Counterexample, Verdict};
    use crate::review::{Example, Review};

    /// A decision with its policies in `<code>`.
    fn decision(d: &(bool, Vec<String>)) -> String {
        said(d, |p| format!("<code>{}</code>", escape(p)))
    }

    /// A solver's request and entities, one per line.
    fn request(c: &Counterexample) -> String {
        format!("<pre>{}</pre>", escape(c.describe()))
    }

    pub(super) fn differences(r: &Review) -> String {
        let mut out =
            String::from("<h2 id=\"differences\">What changed for every possible request</h2>\n");
        let c = match &r.changes {
            Err(why) => {
                let _ = writeln!(out, "<p>Not asked: {}.</p>", escape(why));
                return out;
            }
            Ok(c) => c,
        };
        let ids = |what: &str, ids: &[String]| {
            if ids.is_empty() {
                String::new()
            } else {
                let ids: Vec<String> = ids
                    .iter()
                    .map(|i| format!("<code>{}</code>", escape(i)))
                    .collect();
                format!("{what}: {}. ", ids.join(", "))
            }
        };
        let _ = writeln!(
            out,
            "<p>{}{}{}The symbolic compiler and the solver compared every request of every \
             type the schema admits: {}.</p>",
            ids("Policies added", &c.added),
            ids("Policies removed", &c.removed),
            ids("Policies changed", &c.changed),
            match c.differences.len() {
                0 => "every request is decided alike".to_string(),
                n => format!("{n} kinds of request are decided differently"),
            }
        );
        if c.differences.is_empty() {
            return out;
        }
        out.push_str("<ol id=\"difference-list\">\n");
        for change in &c.differences {
            let d = &change.difference;
            let _ = write!(
                out,
                "<li class=\"difference\"><b>{}</b>: <code>{}</code><ul>",
                escape(&d.direction.to_string()),
                escape(&d.request_type)
            );
            for (name, values) in &d.refinements {
                let _ = write!(
                    out,
                    "<li>{}: {}</li>",
                    escape(name),
                    escape(&values.join(", "))
                );
            }
            out.push_str("</ul>");
            match &change.example {
                Example::Data(e) => {
                    let w = &e.witness;
                    let _ = write!(
                        out,
                        "<p class=\"example\">For example, from the data: <code>{}</code>{} asks \
                         to <b>{}</b> the <code>{}</code> of member <code>{}</code> at {}{}{}: \
                         before, {}; after, {}.</p>",
                        escape(&e.principal.to_string()),
                        e.taken_as_ended
                            .map_or(String::new(), |(ended, at)| escape(&ended.describe(at))),
                        escape(&e.action.to_string()),
                        escape(&w.field),
                        escape(&w.member),
                        e.at,
                        e.election.as_ref().map_or(String::new(), |el| format!(
                            " (election <code>{}</code>)",
                            escape(el)
                        )),
                        e.session.as_ref().map_or(String::new(), |s| format!(
                            " (call session <code>{}</code>)",
                            escape(s)
                        )),
                        decision(&w.before),
                        decision(&w.after)
                    );
                }
                Example::Plausible { after, before } => {
                    let _ = write!(
                        out,
                        "<p class=\"example\">No request of the data goes this way; for \
                         example (plausible values):</p>{}<p>before, {}; after, {}.</p>",
                        request(after),
                        escape(&before.verdict()),
                        escape(&after.verdict())
                    );
                }
                Example::OnlyAtTheEdges => {
                    let _ = write!(
                        out,
                        "<p class=\"example\">Only at the edges of time or of numbers; the \
                         solver's example:</p>{}<p>before, {}; after, {}.</p>",
                        request(&d.example),
                        escape(&d.before.verdict()),
                        escape(&d.example.verdict())
                    );
                }
            }
            out.push_str("</li>\n");
        }
        out.push_str("</ol>\n");
        out
    }

    pub(super) fn invariants(r: &Review) -> String {
        let mut out = String::from("<h2 id=\"invariants\">Invariants</h2>\n");
        for (which, invariants) in [("old", &r.invariants.old), ("new", &r.invariants.new)] {
            let _ = writeln!(out, "<h3>The {which} policies</h3>");
            let all = match invariants {
                Err(why) => {
                    let _ = writeln!(out, "<p>Not proved: {}.</p>", escape(why));
                    continue;
                }
                Ok(all) => all,
            };
            let _ = writeln!(
                out,
                "<table class=\"invariants {which}\"><tr><th>invariant</th><th>rule</th>\
                 <th>it says</th><th>verdict</th></tr>"
            );
            for i in all {
                let inv = &i.result.invariant;
                let (class, verdict) = match &i.result.verdict {
                    Verdict::Proved => ("proved", "proved for every request".to_string()),
                    Verdict::Refuted(raw) => {
                        let example = i.plausible.as_ref().unwrap_or(raw);
                        (
                            "refuted",
                            format!(
                                "refuted, e.g.{}{}",
                                request(example),
                                escape(&example.verdict())
                            ),
                        )
                    }
                };
                let _ = writeln!(
                    out,
                    "<tr><td class=\"text\"><code>{}</code></td><td>{}</td>\
                     <td class=\"text says\">{}</td><td class=\"text {class}\">{verdict}</td></tr>",
                    escape(&inv.id),
                    escape(inv.rule.as_deref().unwrap_or("")),
                    escape(&inv.says)
                );
            }
            out.push_str("</table>\n");
        }
        out
    }

    pub(super) fn tests(r: &Review) -> String {
        let mut out = String::from("<h2 id=\"tests\">Policy tests</h2>\n");
        for (which, tests) in [("old", &r.tests.old), ("new", &r.tests.new)] {
            let _ = writeln!(out, "<h3>The {which} policies</h3>");
            let t = match tests {
                Err(why) => {
                    let _ = writeln!(out, "<p>Not run: {}.</p>", escape(why));
                    continue;
                }
                Ok(t) => t,
            };
            let _ = writeln!(
                out,
                "<p>{} cases passed, {} failed; {} of {} policies decided some case.</p>\
                 <table class=\"tests {which}\"><tr><th>suite</th><th>passed</th>\
                 <th>failed</th></tr>",
                t.passed(),
                t.failed(),
                t.coverage.covered(),
                t.coverage.len()
            );
            for s in &t.suites {
                let failed = if s.failed.is_empty() { "" } else { " refuted" };
                let _ = writeln!(
                    out,
                    "<tr><td class=\"text\">{}</td><td>{}</td><td class=\"{failed}\">{}</td></tr>",
                    escape(&s.name),
                    s.passed,
                    s.failed.len()
                );
            }
            out.push_str("</table>\n");
            let failing: Vec<String> = t
                .suites
                .iter()
                .flat_map(|s| {
                    s.failed.iter().map(move |(case, why)| {
                        format!(
                            "<li><b>{}</b>, {}: {}</li>",
                            escape(&s.name),
                            escape(case),
                            escape(why)
                        )
                    })
                })
                .collect();
            if !failing.is_empty() {
                let _ = writeln!(out, "<ul class=\"failures\">{}</ul>", failing.join(""));
            }
            let uncovered = t.coverage.uncovered();
            if !uncovered.is_empty() {
                let _ = writeln!(
                    out,
                    "<p>Policies no case made decide: {}.</p>",
                    uncovered
                        .iter()
                        .map(|p| format!("<code>{}</code>", escape(p)))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        out
    }
}
