//! The record of processing in HTML (see [`crate::html`]): a page of its own, or a
//! section of another page.

use std::fmt::Write as _;

use super::{Block, RecordOfProcessing};
use crate::html::{escape, open, CLOSE};

/// The record as one self-contained page titled `title`.
pub(super) fn page(title: &str, record: &RecordOfProcessing) -> String {
    let mut out = open(title);
    out.push_str(&section(record));
    out.push_str(CLOSE);
    out
}

/// The record as a fragment: `<h2 id="record">`, then a `<h3>` per section.
pub(super) fn section(record: &RecordOfProcessing) -> String {
    let mut out = String::from("<h2 id=\"record\">Record of processing</h2>\n");
    for (i, s) in record.sections().iter().enumerate() {
        let _ = writeln!(
            out,
            "<h3 id=\"record-{}\">{}. {}</h3>",
            s.id,
            i + 1,
            escape(s.title)
        );
        for b in &s.blocks {
            match b {
                Block::Text(t) => {
                    let _ = writeln!(out, "<p>{}</p>", escape(t));
                }
                Block::Heading(h) => {
                    let _ = writeln!(out, "<h4>{}</h4>", escape(h));
                }
                Block::Entries(entries) => {
                    out.push_str("<ul class=\"record\">\n");
                    for e in entries {
                        let _ = write!(out, "<li><strong>{}</strong>", escape(&e.head));
                        for l in &e.lines {
                            let _ = write!(out, "<br>{}", escape(l));
                        }
                        out.push_str("</li>\n");
                    }
                    out.push_str("</ul>\n");
                }
            }
        }
    }
    out
}
