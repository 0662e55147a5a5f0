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

/// The page: a title, the matrix per moment, the election timeline, and each changed
/// cell explained.
pub fn page(title: &str, m: &WhoSeesWhat) -> String {
    let mut out = open(title);
    let changed = m.changed().count();
    let _ = write!(
        out,
        "<p id=\"summary\">{}</p>\n<p class=\"legend\"><span style=\"background:#f2f2f2\">none: \
         no member</span><span style=\"background:#fff3c4\">some: some members, or some \
         fields</span><span style=\"background:#ffd1c2\">all: every field of every \
         member</span><span style=\"outline:3px solid #c00\">changed by this change</span></p>\n",
        if changed == 0 {
            "No cell changed: every kind of principal reads the same before and after.".to_string()
        } else {
            format!("{changed} cells changed, outlined in red and explained below.")
        }
    );
    out.push_str("<h2>Who sees what, when</h2>\n");
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
    out.push_str("<h2>What changed, and why</h2>\n");
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
                    let _ = write!(
                        out,
                        "<br>for example the <code>{}</code> of member <code>{}</code>: before, \
                         {}; after, {}.",
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
    out.push_str(CLOSE);
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
