//! Errors, one enum per operation: loading a policy directory ([`LoadError`]) and
//! answering a request ([`RequestError`]).

use std::fmt;
use std::path::{Path, PathBuf};

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan};

/// What kind of file a [`Problem`] is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The Cedar schema does not parse or is inconsistent.
    Schema,
    /// A policy file does not parse, or a policy lacks or repeats its `@id`.
    Policy,
    /// A policy does not validate against the schema.
    Validation,
    /// The field catalogue is malformed or names an unknown class.
    Catalogue,
    /// A policy test suite or fixture is malformed.
    TestSuite,
    /// An invariant file is malformed, or an invariant does not parse or validate.
    Invariant,
    /// The record of processing's facts are malformed or do not fit the policies.
    Processing,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProblemKind::Schema => "schema error",
            ProblemKind::Policy => "policy error",
            ProblemKind::Validation => "validation error",
            ProblemKind::Catalogue => "field catalogue error",
            ProblemKind::TestSuite => "test suite error",
            ProblemKind::Invariant => "invariant error",
            ProblemKind::Processing => "record of processing error",
        })
    }
}

/// One problem in one file, with its position and a rendering with the source snippet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    kind: ProblemKind,
    file: PathBuf,
    line: usize,
    column: usize,
    message: String,
    rendered: String,
}

impl Problem {
    /// What kind of problem this is.
    pub fn kind(&self) -> ProblemKind {
        self.kind
    }
    /// The file the problem is in.
    pub fn file(&self) -> &Path {
        &self.file
    }
    /// The 1-based line of the problem (1 when the position is unknown).
    pub fn line(&self) -> usize {
        self.line
    }
    /// The 1-based column of the problem (1 when the position is unknown).
    pub fn column(&self) -> usize {
        self.column
    }
    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// The problem rendered with the offending source lines underlined.
    pub fn rendered(&self) -> &str {
        &self.rendered
    }

    /// A problem at a byte offset of `text`.
    pub(crate) fn at(
        kind: ProblemKind,
        file: &Path,
        text: &str,
        offset: Option<usize>,
        message: impl Into<String>,
    ) -> Problem {
        SourceFile::new(file, text, &LineStarts::of(text)).at(kind, offset, message)
    }

    /// A problem from a Cedar (or other miette) diagnostic about `text`.
    pub(crate) fn from_diagnostic(
        kind: ProblemKind,
        file: &Path,
        text: &str,
        diag: &dyn Diagnostic,
    ) -> Problem {
        SourceFile::new(file, text, &LineStarts::of(text)).diagnostic(kind, diag)
    }
}

/// A file's text and its [`LineStarts`], for its problems: each costs the lines around
/// it, where [`Problem::at`] copies the text and reads it from its start (O(n²) for n
/// problems in one file: 4,000 policies without an `@id` in one file took 6.8 s to
/// refuse).
pub(crate) struct SourceFile<'t> {
    file: &'t Path,
    text: &'t str,
    lines: &'t LineStarts,
}

impl<'t> SourceFile<'t> {
    /// `text`, the content of `file`, with its line starts (`LineStarts::of(text)`).
    pub(crate) fn new(file: &'t Path, text: &'t str, lines: &'t LineStarts) -> Self {
        SourceFile { file, text, lines }
    }

    /// [`Problem::at`].
    pub(crate) fn at(
        &self,
        kind: ProblemKind,
        offset: Option<usize>,
        message: impl Into<String>,
    ) -> Problem {
        let message = message.into();
        let labels = offset.map(|o| {
            vec![LabeledSpan::new(
                Some("here".into()),
                o.min(self.text.len()),
                0,
            )]
        });
        let wrapped = InFile {
            message: &message,
            help: None,
            labels,
            source: self.excerpt(),
        };
        self.build(kind, offset, message.clone(), &wrapped)
    }

    /// [`Problem::from_diagnostic`].
    pub(crate) fn diagnostic(&self, kind: ProblemKind, diag: &dyn Diagnostic) -> Problem {
        self.diagnostic_in(kind, diag, 0)
    }

    /// [`SourceFile::diagnostic`] for a diagnostic about the part of the text from byte
    /// `from` on: its spans are offsets into that part.
    pub(crate) fn diagnostic_in(
        &self,
        kind: ProblemKind,
        diag: &dyn Diagnostic,
        from: usize,
    ) -> Problem {
        let shift = |l: LabeledSpan| {
            let span = miette::SourceSpan::new((l.offset() + from).into(), l.len());
            let label = l.label().map(String::from);
            if l.primary() {
                LabeledSpan::new_primary_with_span(label, span)
            } else {
                LabeledSpan::new_with_span(label, span)
            }
        };
        let labels: Option<Vec<LabeledSpan>> = diag.labels().map(|l| l.map(shift).collect());
        let offset = labels.as_ref().and_then(|l| l.first()).map(|l| l.offset());
        let mut message = diag.to_string();
        let help = diag.help().map(|h| h.to_string());
        if let Some(h) = &help {
            message.push_str(&format!(" (help: {h})"));
        }
        let wrapped = InFile {
            message: &diag.to_string(),
            help,
            labels,
            source: self.excerpt(),
        };
        self.build(kind, offset, message, &wrapped)
    }

    fn excerpt(&self) -> Excerpt<'t> {
        Excerpt {
            name: self.file.display().to_string(),
            text: self.text,
            lines: self.lines,
        }
    }

    fn build(
        &self,
        kind: ProblemKind,
        offset: Option<usize>,
        message: String,
        diag: &dyn Diagnostic,
    ) -> Problem {
        let (line, column) = offset.map_or((1, 1), |o| self.lines.line_column(self.text, o));
        let mut rendered = String::new();
        let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor());
        if handler.render_report(&mut rendered, diag).is_err() {
            rendered = message.clone();
        }
        Problem {
            kind,
            file: self.file.to_path_buf(),
            line,
            column,
            message,
            rendered,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.kind,
            self.message
        )
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = text.get(..end).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// Where each line of a text starts: the line of many offsets in one text without
/// counting its newlines from the start for each. Placing the n policies of a file one
/// by one with [`line_column`] is O(n²): a file of 20,000 policies took 14 s to load,
/// 7 s of it there.
#[derive(Debug, Clone)]
pub(crate) struct LineStarts {
    /// 0 and the offset after each `\n`.
    starts: Vec<usize>,
    /// Per start, the line breaks before it as miette counts them (`\n`, `\r\n` and a
    /// lone `\r`), to number the lines of an [`Excerpt`] as miette numbers the text's.
    breaks: Vec<usize>,
}

impl LineStarts {
    pub(crate) fn of(text: &str) -> LineStarts {
        let mut starts = vec![0];
        let mut breaks = vec![0];
        let mut lone_returns = 0;
        let bytes = text.as_bytes();
        for (i, b) in bytes.iter().enumerate() {
            match b {
                b'\n' => {
                    starts.push(i + 1);
                    breaks.push(starts.len() - 1 + lone_returns);
                }
                b'\r' if bytes.get(i + 1) != Some(&b'\n') => lone_returns += 1,
                _ => {}
            }
        }
        LineStarts { starts, breaks }
    }

    /// The 1-based line of byte `offset`, as [`line_column`] gives it.
    pub(crate) fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|start| *start <= offset)
    }

    /// [`line_column`] of `text` (the text these are the line starts of).
    pub(crate) fn line_column(&self, text: &str, offset: usize) -> (usize, usize) {
        let mut end = offset.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let line = self.line(end);
        let start = self.start(line - 1);
        let column = text.get(start..end).map_or(0, |s| s.chars().count()) + 1;
        (line, column)
    }

    /// The offset where the line of index `i` (0-based, one of the text's) starts.
    fn start(&self, i: usize) -> usize {
        self.starts.get(i).copied().unwrap_or(0)
    }
}

/// The text of a file as miette reads it to render a problem: what a `NamedSource` of the
/// whole text gives (the same lines, numbered the same), read from a few lines around
/// the span instead of from the start of the text, and without copying it.
struct Excerpt<'t> {
    name: String,
    text: &'t str,
    lines: &'t LineStarts,
}

impl miette::SourceCode for Excerpt<'_> {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        // Whole lines from well before the span's first to well after its last (a lone
        // `\r` is a line to miette, so there are at least as many of its lines), so that
        // miette finds the same context lines in them as in the whole text, and stops
        // where it would.
        let margin = 2;
        let first =
            (self.lines.line(span.offset()) - 1).saturating_sub(context_lines_before + margin);
        let last = self.lines.line(span.offset() + span.len()) + context_lines_after + margin;
        let from = self.lines.start(first);
        let to = self
            .lines
            .starts
            .get(last)
            .copied()
            .unwrap_or(self.text.len());
        let before = self.lines.breaks.get(first).copied().unwrap_or(0);
        let window = self.text.as_bytes().get(from..to).unwrap_or_default();
        let inner = window.read_span(
            &miette::SourceSpan::new(span.offset().saturating_sub(from).into(), span.len()),
            context_lines_before,
            context_lines_after,
        )?;
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.name.clone(),
            inner.data(),
            miette::SourceSpan::new((inner.span().offset() + from).into(), inner.span().len()),
            inner.line() + before,
            inner.column(),
            inner.line_count() + before,
        )))
    }
}

/// A diagnostic re-homed in a named file, so its rendering shows the file name.
struct InFile<'a> {
    message: &'a str,
    help: Option<String>,
    labels: Option<Vec<LabeledSpan>>,
    source: Excerpt<'a>,
}

impl fmt::Debug for InFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message)
    }
}
impl fmt::Display for InFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message)
    }
}
impl std::error::Error for InFile<'_> {}
impl Diagnostic for InFile<'_> {
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.labels
            .as_ref()
            .map(|l| Box::new(l.iter().cloned()) as Box<dyn Iterator<Item = LabeledSpan>>)
    }
}

/// The error for a policy directory that cannot be loaded: the engine is not built.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A required file is missing from the policy directory.
    #[error("`{}` is missing: a policy directory needs {what}", path.display())]
    Missing {
        /// The path looked for.
        path: PathBuf,
        /// What it should hold.
        what: &'static str,
    },
    /// The files were read but are wrong: every problem found, each with its position.
    #[error("{}", list_problems(problems))]
    Invalid {
        /// The problems, in file order.
        problems: Vec<Problem>,
    },
    /// The directory is larger than a policy directory may be: too many policy files, a
    /// file too long, or too many policies (see [`LoadError::LIMITS`]).
    #[error("`{}` is too large: {what}", path.display())]
    TooLarge {
        /// The directory or the file.
        path: PathBuf,
        /// What is over which limit.
        what: String,
    },
    /// The policies validated but could not be compiled.
    #[error("the policies of `{}` could not be compiled: {message}", dir.display())]
    Compile {
        /// The policy directory.
        dir: PathBuf,
        /// Why.
        message: String,
    },
}

impl LoadError {
    /// The most `.cedar` files, bytes in one policy file, and policies a policy directory
    /// may hold; over any, loading stops with [`LoadError::TooLarge`] before parsing.
    pub const LIMITS: (usize, u64, usize) = (1_000, 4 * 1024 * 1024, 20_000);

    /// The problems with positions (empty for I/O errors).
    pub fn problems(&self) -> &[Problem] {
        match self {
            LoadError::Invalid { problems } => problems,
            _ => &[],
        }
    }

    /// The error rendered for a person: each problem with its source snippet.
    pub fn render(&self) -> String {
        match self {
            LoadError::Invalid { problems } => problems
                .iter()
                .map(|p| format!("{p}\n{}", p.rendered()))
                .collect::<Vec<_>>()
                .join("\n"),
            other => other.to_string(),
        }
    }
}

fn list_problems(problems: &[Problem]) -> String {
    let mut out = format!(
        "{} problem{} in the policy directory",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        out.push_str(&format!("\n  {p}"));
    }
    out
}

/// The error for a request that cannot be decided. A request that is decided and denied
/// is not an error: it is a [`Decision`](crate::Decision) with effect deny.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The directory was built for another engine (another version of the policies):
    /// rebuild it with [`Directory::for_engine`](crate::Directory::for_engine).
    #[error("the directory was built for another engine: rebuild it for this one")]
    ForeignDirectory,
    /// The principal is not in the directory.
    #[error("unknown principal `{0}`")]
    UnknownPrincipal(String),
    /// The field is not in the catalogue.
    #[error("unknown field `{0}`")]
    UnknownField(String),
    /// The context names an election that is not in the directory.
    #[error("unknown election `{0}`")]
    UnknownElection(String),
    /// The context names a call session that is not in the directory.
    #[error("unknown call session `{0}`")]
    UnknownSession(String),
    /// A record refers to another record that is not in the directory.
    #[error("{from} refers to unknown {kind} `{id}`")]
    DanglingReference {
        /// The record that refers.
        from: String,
        /// The kind of record referred to.
        kind: &'static str,
        /// The id referred to.
        id: String,
    },
    /// The request's context is malformed: a time Cedar's `datetime` cannot hold, a
    /// break-glass reason no person wrote. The request is at fault, not the records.
    #[error("invalid context: {0}")]
    InvalidContext(String),
    /// The records could not be turned into Cedar entities (e.g. a time Cedar cannot hold).
    #[error("invalid data for {what}: {message}")]
    InvalidData {
        /// What was being converted.
        what: String,
        /// Cedar's message.
        message: String,
    },
    /// Cedar refused the request against the schema.
    #[error("request does not match the schema: {0}")]
    Invalid(String),
}

/// The error for a record a [`Directory`](crate::Directory) refuses. The directory is
/// left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The record refers to a record the directory does not hold.
    #[error("{from} refers to unknown {kind} `{id}`")]
    Dangling {
        /// The record that refers, as a Cedar uid.
        from: String,
        /// The kind of record referred to.
        kind: &'static str,
        /// The id referred to.
        id: String,
    },
    /// A processor's contract names a field the catalogue lacks.
    #[error("the contract of {what} names `{field}`, which is not in the field catalogue")]
    UnknownField {
        /// The processor, as a Cedar uid.
        what: String,
        /// The field named.
        field: String,
    },
    /// The record holds a value Cedar cannot (e.g. a time outside Cedar's years).
    #[error("invalid {what}: {message}")]
    Invalid {
        /// The record, as a Cedar uid.
        what: String,
        /// What is wrong.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_starts_agree_with_line_column() {
        let text = "a\nbé\n\n// ü\nlast";
        let lines = LineStarts::of(text);
        for offset in 0..=text.len() + 2 {
            assert_eq!(lines.line(offset), line_column(text, offset).0, "{offset}");
        }
        assert_eq!(LineStarts::of("").line(0), 1);
        for text in &texts() {
            let lines = LineStarts::of(text);
            for offset in 0..=text.len() + 2 {
                assert_eq!(
                    lines.line_column(text, offset),
                    line_column(text, offset),
                    "{text:?} {offset}"
                );
            }
        }
    }

    /// Texts with every kind of line break, and one long enough that excerpts start and
    /// end inside it.
    fn texts() -> Vec<String> {
        let mut texts: Vec<String> = [
            "",
            "one line, no newline",
            "a\nbé\n\n// ü\nlast\n",
            "crlf\r\nlines\r\n\r\nlone\rreturn\rs\nend",
            "permit (principal, action, resource)\nwhen { é };\n\n\nforbid\n(\n)\n;\n// tail\n\n",
        ]
        .map(String::from)
        .into();
        let breaks = ["\n", "\r\n", "\r", "\n\n", "é\n"];
        texts.push(
            (0..60)
                .map(|i| format!("line {i}{}", breaks[i % breaks.len()]))
                .collect(),
        );
        texts
    }

    /// An excerpt reads every span, with any context, as miette reads it from the whole
    /// text: the same bytes, span, line, column and line count (so the same rendering).
    #[test]
    fn an_excerpt_reads_as_the_whole_text() {
        use miette::SourceCode;
        for text in &texts() {
            let lines = LineStarts::of(text);
            let excerpt = Excerpt {
                name: "f.cedar".into(),
                text,
                lines: &lines,
            };
            let whole = miette::NamedSource::new("f.cedar", text.to_string());
            // (Past the end, miette panics on the whole text too.)
            for offset in 0..=text.len() {
                for len in [0, 1, 2, 7, 30] {
                    for (before, after) in [(0, 0), (1, 1), (2, 3), (5, 0)] {
                        let span = miette::SourceSpan::new(offset.into(), len);
                        let got = excerpt.read_span(&span, before, after);
                        let want = whole.read_span(&span, before, after);
                        let what = format!("{text:?} at {offset}+{len}, {before}/{after}");
                        match (got, want) {
                            (Ok(g), Ok(w)) => {
                                assert_eq!(g.data(), w.data(), "{what}");
                                assert_eq!(g.span(), w.span(), "{what}");
                                assert_eq!(g.line(), w.line(), "{what}");
                                assert_eq!(g.column(), w.column(), "{what}");
                                assert_eq!(g.line_count(), w.line_count(), "{what}");
                                assert_eq!(g.name(), w.name(), "{what}");
                            }
                            (Err(_), Err(_)) => {}
                            (g, w) => panic!("{what}: {:?} vs {:?}", g.is_ok(), w.is_ok()),
                        }
                    }
                }
            }
        }
    }
}
