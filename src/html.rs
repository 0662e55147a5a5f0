//! What the crate's HTML pages (a review, a record of processing) share: escaping, the
//! page's frame and its styles. Pages are self-contained: no script, no network, styles
//! inline, pictures SVG written into the page.

use std::fmt::Write as _;

/// `text` with `&`, `<`, `>`, `"` and `'` escaped for HTML text and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The styles every page has.
const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:80em}\
h1{font-size:1.6em}h2{font-size:1.3em;margin-top:2em}h3{font-size:1.05em}\
table{border-collapse:collapse;margin:.5em 0 1.5em}\
th,td{border:1px solid #bbb;padding:.25em .5em;text-align:center;font-size:.9em}\
th.who{text-align:left;font-weight:normal}td.text{text-align:left}\
td.none{background:#f2f2f2;color:#777}td.some{background:#fff3c4}td.all{background:#ffd1c2}\
td.na{background:#fff;color:#aaa}\
td.changed{outline:3px solid #c00;outline-offset:-3px;font-weight:bold}\
.legend span{display:inline-block;padding:.1em .6em;margin-right:.5em;border:1px solid #bbb}\
li{margin:.3em 0}code{background:#f4f4f4;padding:0 .2em}\
.proved{color:#060}.refuted{color:#c00;font-weight:bold}\
pre{background:#f7f7f7;padding:.5em;font-size:.85em;white-space:pre-wrap;color:#222;font-weight:normal}\
td.says{min-width:22em}\
h4{font-size:.95em;margin:1.2em 0 .3em}ul.record li{margin:.5em 0}";

/// The start of a page titled `title`, up to and including its `<h1>`.
pub(crate) fn open(title: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{t}</title><style>{STYLE}</style></head><body>\n<h1>{t}</h1>\n",
        t = escape(title)
    );
    out
}

/// The end of a page.
pub(crate) const CLOSE: &str = "</body></html>\n";
