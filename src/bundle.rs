//! A policy directory, loaded and strictly validated: the schema, the policies with
//! their `@id`s and where each came from, and the field catalogue.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    Entity, EntityUid, Policy, PolicyId, PolicySet, Schema, ValidationMode, Validator,
};
use serde::Deserialize;

use crate::error::{LineStarts, LoadError, Problem, ProblemKind, SourceFile};
use crate::fields::{FieldCatalogue, FieldInfo, MAX_FIELDS};

/// The schema file of a policy directory.
pub const SCHEMA_FILE: &str = "schema.cedarschema";
/// The field catalogue of a policy directory.
pub const CATALOGUE_FILE: &str = "fields.toml";
/// The invariants of a policy directory (optional; part of its version when present).
pub const INVARIANTS_FILE: &str = "invariants.toml";
/// The annotation that names a policy.
pub const ID_ANNOTATION: &str = "id";
/// The `FieldClass` that holds the fields marked `minimal = true`.
pub const MINIMAL_CLASS: &str = "minimal_record";

/// Where a policy came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    /// The `.cedar` file.
    pub file: PathBuf,
    /// The 1-based line of the policy's first character (its first annotation).
    pub line: usize,
    /// The policy's text as written.
    pub text: String,
}

/// A loaded policy directory.
#[derive(Debug, Clone)]
pub(crate) struct Bundle {
    pub schema: Schema,
    pub policies: PolicySet,
    pub catalogue: FieldCatalogue,
    /// The `Field` entities of the catalogue, with their classes as parents.
    pub field_entities: Vec<Entity>,
    /// The action entities of the schema (with their groups as parents).
    pub action_entities: Vec<Entity>,
    /// Where each policy came from, by id.
    pub sources: BTreeMap<String, PolicySource>,
    /// The content hash of the files that make the policy set.
    pub version: PolicyVersion,
    /// The text of `invariants.toml` the version covers, if the directory has one.
    pub invariants: Option<String>,
}

/// The version of a loaded policy directory: a SHA-256 over the names and contents of the
/// files that decide or gate what is served (the schema, every `.cedar` file, the field
/// catalogue, the invariants if present), so two directories with the same policies
/// have the same version wherever they are, and a changed invariant is a new version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyVersion(String);

impl PolicyVersion {
    fn of<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> PolicyVersion {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        for (name, text) in files {
            // Lengths first, so no two different lists of files hash the same bytes.
            hash.update((name.len() as u64).to_le_bytes());
            hash.update(name.as_bytes());
            hash.update((text.len() as u64).to_le_bytes());
            hash.update(text.as_bytes());
        }
        let digest = hash.finalize();
        PolicyVersion(digest.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The full hash, 64 hexadecimal digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 digits, for display.
    pub fn short(&self) -> &str {
        self.0.get(..12).unwrap_or(&self.0)
    }
}

impl std::fmt::Display for PolicyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn read(path: &Path) -> Result<String, LoadError> {
    fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            LoadError::Missing {
                path: path.to_path_buf(),
                what: if path.ends_with(SCHEMA_FILE) {
                    "a Cedar schema `schema.cedarschema`"
                } else {
                    "a field catalogue `fields.toml`"
                },
            }
        } else {
            LoadError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// The text of `path`, `None` if there is no such file.
fn read_optional(path: &Path) -> Result<Option<String>, LoadError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LoadError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The JSON form (EST) of each policy of a bundle, by id: what `Policy::to_json` gives,
/// from one parse of each run of each file (see [`Ests::take`]).
#[derive(Debug, Default)]
pub(crate) struct Ests(HashMap<PolicyId, serde_json::Value>);

impl Ests {
    /// The EST of `policy` (of the bundle it came with), taken out: compiling needs each
    /// once. A policy it lacks (none, unless Cedar's two parsers disagree) is converted
    /// by Cedar alone.
    pub(crate) fn take(&mut self, policy: &Policy) -> Result<serde_json::Value, String> {
        match self.0.remove(policy.id()) {
            Some(est) => Ok(est),
            None => policy.to_json().map_err(|e| e.to_string()),
        }
    }

    /// `f` of the EST of `policy`.
    pub(crate) fn with<T>(
        &self,
        policy: &Policy,
        f: impl FnOnce(&serde_json::Value) -> Option<T>,
    ) -> Option<T> {
        match self.0.get(policy.id()) {
            Some(est) => f(est),
            None => f(&policy.to_json().ok()?),
        }
    }
}

/// The ESTs of the statements of a run of a policy file (see [`runs`]) that parsed, by
/// the ids Cedar gives them (`policy0`, `policy1`, ...), from one parse of the whole run:
/// `Policy::to_json` parses each policy's text again on its own, and Cedar's parser pays
/// a fixed cost per parse (it builds its lexer's automaton anew) several times that of a
/// policy in a file. Empty if it does not parse (`PolicySet::from_str` said it does).
fn ests_of_run(text: &str) -> HashMap<String, serde_json::Value> {
    let Ok((ests, _)) = cedar_policy_core::parser::parse_policyset_to_ests_and_pset(text) else {
        return HashMap::new();
    };
    ests.into_iter()
        .filter_map(|(id, est)| Some((id.to_string(), serde_json::to_value(est).ok()?)))
        .collect()
}

/// Loads `dir`, collecting every problem before refusing; with the bundle, its policies'
/// ESTs, for compiling.
pub(crate) fn load(dir: &Path) -> Result<(Bundle, Ests), LoadError> {
    let meta = fs::metadata(dir).map_err(|source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(LoadError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::other("not a directory"),
        });
    }
    let mut problems = Vec::new();

    let schema_path = dir.join(SCHEMA_FILE);
    let schema_text = read(&schema_path)?;
    let schema = match Schema::from_cedarschema_str(&schema_text) {
        Ok((schema, warnings)) => {
            for w in warnings {
                problems.push(Problem::from_diagnostic(
                    ProblemKind::Schema,
                    &schema_path,
                    &schema_text,
                    &w,
                ));
            }
            Some(schema)
        }
        Err(e) => {
            problems.push(Problem::from_diagnostic(
                ProblemKind::Schema,
                &schema_path,
                &schema_text,
                &e,
            ));
            None
        }
    };

    let PolicyFiles {
        set: policies,
        sources,
        texts,
        ests,
        run_starts,
    } = load_policies(dir, &mut problems)?;
    let invariants_text = read_optional(&dir.join(INVARIANTS_FILE))?;

    let catalogue_path = dir.join(CATALOGUE_FILE);
    let catalogue_text = read(&catalogue_path)?;
    let catalogue = parse_catalogue(&catalogue_path, &catalogue_text, &mut problems);

    let Some(schema) = schema else {
        return Err(LoadError::Invalid { problems });
    };

    // Strict validation of every policy against the schema; warnings refuse too.
    let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
    for e in result.validation_errors() {
        push_policy_problem(
            &mut problems,
            &sources,
            &texts,
            &run_starts,
            e.policy_id(),
            ProblemKind::Validation,
            e,
        );
    }
    for w in result.validation_warnings() {
        push_policy_problem(
            &mut problems,
            &sources,
            &texts,
            &run_starts,
            w.policy_id(),
            ProblemKind::Validation,
            w,
        );
    }

    let field_entities = match &catalogue {
        Some((cat, spans)) => field_entities(
            &schema,
            cat,
            spans,
            &catalogue_path,
            &catalogue_text,
            &mut problems,
        ),
        None => Vec::new(),
    };

    if let Some((cat, _)) = &catalogue {
        check_field_literals(&policies, cat, &sources, &texts, &mut problems);
    }

    let version = {
        let mut files: Vec<(String, &str)> = vec![
            (SCHEMA_FILE.to_string(), schema_text.as_str()),
            (CATALOGUE_FILE.to_string(), catalogue_text.as_str()),
        ];
        for (path, (text, _)) in &texts {
            let name = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            files.push((name, text.as_str()));
        }
        if let Some(text) = &invariants_text {
            files.push((INVARIANTS_FILE.to_string(), text.as_str()));
        }
        files.sort();
        PolicyVersion::of(files.iter().map(|(n, t)| (n.as_str(), *t)))
    };
    match catalogue {
        Some((catalogue, _)) if problems.is_empty() => Ok((
            Bundle {
                action_entities: match schema.action_entities() {
                    Ok(actions) => actions.iter().cloned().collect(),
                    Err(e) => {
                        let problem = Problem::at(
                            ProblemKind::Schema,
                            &schema_path,
                            &schema_text,
                            None,
                            e.to_string(),
                        );
                        return Err(LoadError::Invalid {
                            problems: vec![problem],
                        });
                    }
                },
                schema,
                policies,
                catalogue,
                field_entities,
                sources,
                version,
                invariants: invariants_text,
            },
            ests,
        )),
        _ => Err(LoadError::Invalid { problems }),
    }
}

fn push_policy_problem(
    problems: &mut Vec<Problem>,
    sources: &Sources,
    texts: &Texts,
    run_starts: &RunStarts,
    id: &PolicyId,
    kind: ProblemKind,
    diag: &dyn miette::Diagnostic,
) {
    // Cedar's spans are offsets into the run of its file the policy was parsed with.
    let key = id.to_string();
    let src = sources.get(key.as_str());
    let text = src.and_then(|s| texts.get(&s.file));
    let from = run_starts.get(key.as_str()).copied().unwrap_or(0);
    match (src, text) {
        (Some(src), Some((text, lines))) => {
            problems.push(SourceFile::new(&src.file, text, lines).diagnostic_in(kind, diag, from))
        }
        (src, _) => {
            let file = src.map_or(Path::new("<policies>"), |s| s.file.as_path());
            problems.push(Problem::at(kind, file, "", None, diag.to_string()))
        }
    }
}

/// Refuses a policy that names a field the catalogue lacks: no request is ever about
/// `Field::"politcal_views"`, so a forbid naming it would forbid nothing, silently (and a
/// permit grant nothing). One problem per file and misspelt field, at its first use.
fn check_field_literals(
    policies: &PolicySet,
    catalogue: &FieldCatalogue,
    sources: &Sources,
    texts: &Texts,
    problems: &mut Vec<Problem>,
) {
    let mut seen = std::collections::BTreeSet::new();
    for policy in policies.policies() {
        for uid in policy.entity_literals() {
            if uid.type_name().to_string() != "Field" {
                continue;
            }
            let name = uid.id().unescaped();
            if catalogue.id(name).is_some() {
                continue;
            }
            let id = policy.id().to_string();
            let Some(src) = sources.get(id.as_str()) else {
                continue;
            };
            if !seen.insert((src.file.clone(), name.to_string())) {
                continue;
            }
            let message = format!(
                "policy `{id}` names {uid}, which is not in fields.toml: no request is ever \
                 about it, so the policy would silently never apply to it"
            );
            let problem = match texts.get(&src.file) {
                Some((text, lines)) => {
                    let literal = uid.to_string();
                    SourceFile::new(&src.file, text, lines).at(
                        ProblemKind::Validation,
                        text.find(&literal),
                        message,
                    )
                }
                None => Problem::at(ProblemKind::Validation, &src.file, "", None, message),
            };
            problems.push(problem);
        }
    }
}

type Sources = BTreeMap<String, PolicySource>;
/// The text of each policy file and its line starts, by path.
type Texts = BTreeMap<PathBuf, (String, LineStarts)>;
/// The offset in its file of the run each policy was parsed with (see [`runs`]), by id.
type RunStarts = HashMap<String, usize>;

/// The policy files of a directory, parsed.
struct PolicyFiles {
    set: PolicySet,
    sources: Sources,
    texts: Texts,
    ests: Ests,
    run_starts: RunStarts,
}

/// The most statements of a policy file parsed together.
const STATEMENTS_PER_RUN: usize = 100;

/// The runs of `text` to parse apart: up to [`STATEMENTS_PER_RUN`] statements each, cut
/// after a statement's `;` (one outside strings and comments), the last run holding the
/// rest. Cedar keeps the whole text a policy was parsed from in each of its source
/// locations, and hashes it with each validation error it collects: a file of 16,000
/// policies, 4,000 of them not validating, took 20 s to refuse, hashing 4 MB per error.
/// Parsed a run at a time, each error hashes its run (Cedar's parser costs about the
/// same: its fixed cost per parse is paid once per run).
fn runs(text: &str) -> Vec<std::ops::Range<usize>> {
    let bytes = text.as_bytes();
    let mut runs = Vec::new();
    let (mut start, mut statements, mut i) = (0, 0, 0);
    let mut in_string = false;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => {
                // A comment, to the end of its line.
                i = bytes
                    .get(i..)
                    .and_then(|rest| rest.iter().position(|c| *c == b'\n'))
                    .map_or(bytes.len(), |n| i + n);
            }
            b';' if !in_string => {
                statements += 1;
                if statements == STATEMENTS_PER_RUN {
                    runs.push(start..i + 1);
                    (start, statements) = (i + 1, 0);
                }
            }
            _ => {}
        }
        i += 1;
    }
    if start < bytes.len() || runs.is_empty() {
        runs.push(start..bytes.len());
    }
    runs
}

/// `text` parsed a run at a time (see [`runs`]): each run and its statements. If a run
/// does not parse, the whole text, as one run: Cedar's errors are then those of the file.
fn parse_runs(
    text: &str,
) -> Result<Vec<(std::ops::Range<usize>, PolicySet)>, Box<cedar_policy::ParseErrors>> {
    let mut parsed = Vec::new();
    for run in runs(text) {
        match text.get(run.clone()).map(PolicySet::from_str) {
            Some(Ok(set)) => parsed.push((run, set)),
            _ => {
                return PolicySet::from_str(text)
                    .map(|set| vec![(0..text.len(), set)])
                    .map_err(Box::new)
            }
        }
    }
    Ok(parsed)
}

/// Parses every `*.cedar` file of `dir` (in name order), naming each policy by its `@id`.
fn load_policies(dir: &Path, problems: &mut Vec<Problem>) -> Result<PolicyFiles, LoadError> {
    let entries = fs::read_dir(dir).map_err(|source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    // Every `*.cedar` entry is a policy file: one that cannot be read as a regular file
    // (after following links: a dangling link, a loop, a directory, a socket) refuses the
    // whole directory, naming it, instead of leaving its policies out.
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| LoadError::Io {
                path: dir.to_path_buf(),
                source,
            })?
            .path();
        if path.extension().is_none_or(|x| x != "cedar") {
            continue;
        }
        let meta = fs::metadata(&path).map_err(|source| LoadError::Io {
            path: path.clone(),
            source,
        })?;
        if !meta.is_file() {
            return Err(LoadError::Io {
                path,
                source: std::io::Error::other("a policy file must be a regular file"),
            });
        }
        let (max_files, max_bytes, _) = LoadError::LIMITS;
        if meta.len() > max_bytes {
            return Err(LoadError::TooLarge {
                what: format!("{} bytes, over {max_bytes} for a policy file", meta.len()),
                path,
            });
        }
        files.push(path);
        if files.len() > max_files {
            return Err(LoadError::TooLarge {
                path: dir.to_path_buf(),
                what: format!("over {max_files} `.cedar` files"),
            });
        }
    }
    files.sort();

    let mut set = PolicySet::new();
    let mut sources = Sources::new();
    let mut texts = Texts::new();
    let mut ests = Ests::default();
    let mut run_starts = RunStarts::new();
    let mut statements_seen = 0;
    for file in &files {
        let text = fs::read_to_string(file).map_err(|source| LoadError::Io {
            path: file.clone(),
            source,
        })?;
        let lines = LineStarts::of(&text);
        let source = SourceFile::new(file, &text, &lines);
        let parsed = match parse_runs(&text) {
            Ok(p) => p,
            Err(errs) => {
                for e in errs.iter() {
                    problems.push(source.diagnostic(ProblemKind::Policy, e));
                }
                continue;
            }
        };
        statements_seen += parsed
            .iter()
            .map(|(_, set)| set.policies().count() + set.templates().count())
            .sum::<usize>();
        let (_, _, max_policies) = LoadError::LIMITS;
        if statements_seen > max_policies {
            return Err(LoadError::TooLarge {
                path: dir.to_path_buf(),
                what: format!("over {max_policies} policies"),
            });
        }
        // Cedar names the statements of a run `policy0`, `policy1`, ... in source order;
        // walk them in that order, each found after the one before, so that two copies of
        // the same text are placed at their own lines.
        let ordinal = |id: &PolicyId| {
            id.to_string()
                .strip_prefix("policy")
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(usize::MAX)
        };
        let mut run_ests = Vec::new();
        // The policies, each with its offset, the start of its run and its run's index.
        let mut in_file = Vec::new();
        for (run, parsed) in &parsed {
            let run_text = text.get(run.clone()).unwrap_or_default();
            let mut statements: Vec<(usize, String, Option<&cedar_policy::Policy>)> = parsed
                .policies()
                .map(|p| (ordinal(p.id()), p.to_string(), Some(p)))
                .chain(
                    parsed
                        .templates()
                        .map(|t| (ordinal(t.id()), t.to_string(), None)),
                )
                .collect();
            statements.sort_by_key(|(n, _, _)| *n);
            run_ests.push(ests_of_run(run_text));
            let mut from = 0;
            for (_, stmt, policy) in statements {
                let at = run_text
                    .get(from..)
                    .and_then(|rest| rest.find(&stmt))
                    .map_or(from, |i| i + from);
                from = at + stmt.len();
                let at = run.start + at;
                match policy {
                    Some(p) => in_file.push((at, run.start, p, run_ests.len() - 1)),
                    None => problems.push(source.at(
                        ProblemKind::Policy,
                        Some(at),
                        "templates (policies with `?principal` or `?resource` slots) are not supported",
                    )),
                }
            }
        }
        for (at, run_start, policy, run) in in_file {
            let Some(id) = annotation(policy, ID_ANNOTATION) else {
                problems.push(source.at(
                    ProblemKind::Policy,
                    Some(at),
                    "policy has no `@id(\"...\")` annotation: every policy needs a unique id",
                ));
                continue;
            };
            if let Some(prev) = sources.get(id) {
                problems.push(source.at(
                    ProblemKind::Policy,
                    Some(at),
                    format!(
                        "duplicate policy id `{id}`: first used at {}:{}",
                        prev.file.display(),
                        prev.line
                    ),
                ));
                continue;
            }
            let named = policy.new_id(PolicyId::new(id));
            let est = run_ests
                .get_mut(run)
                .and_then(|ests| ests.remove(&policy.id().to_string()));
            if let Err(e) = set.add(named) {
                problems.push(source.at(ProblemKind::Policy, Some(at), e.to_string()));
                continue;
            }
            sources.insert(
                id.to_string(),
                PolicySource {
                    file: file.clone(),
                    line: lines.line(at),
                    text: policy.to_string(),
                },
            );
            if let Some(est) = est {
                ests.0.insert(PolicyId::new(id), est);
            }
            if run_start > 0 {
                run_starts.insert(id.to_string(), run_start);
            }
        }
        texts.insert(file.clone(), (text, lines));
    }
    if files.is_empty() {
        problems.push(Problem::at(
            ProblemKind::Policy,
            dir,
            "",
            None,
            "no `.cedar` policy files: every request would be denied",
        ));
    }
    Ok(PolicyFiles {
        set,
        sources,
        texts,
        ests,
        run_starts,
    })
}

/// The value of `policy`'s annotation `key`. (`Policy::annotation` parses `key` with
/// Cedar's parser each time, at the fixed cost of a parse.)
pub(crate) fn annotation<'p>(policy: &'p Policy, key: &str) -> Option<&'p str> {
    policy
        .annotations()
        .find_map(|(k, v)| (k == key).then_some(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    field: Vec<CatalogueEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueEntry {
    name: toml::Spanned<String>,
    class: toml::Spanned<String>,
    #[serde(default)]
    minimal: bool,
    #[serde(default)]
    description: String,
}

/// Spans of each field's name and class in the catalogue file.
type EntrySpans = Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>;

fn parse_catalogue(
    path: &Path,
    text: &str,
    problems: &mut Vec<Problem>,
) -> Option<(FieldCatalogue, EntrySpans)> {
    let file: CatalogueFile = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            let at = e.span().map(|s| s.start);
            problems.push(Problem::at(
                ProblemKind::Catalogue,
                path,
                text,
                at,
                e.message(),
            ));
            return None;
        }
    };
    let before = problems.len();
    let mut fields = Vec::new();
    let mut spans = EntrySpans::new();
    for entry in file.field {
        let name = entry.name.get_ref();
        if name.is_empty() {
            problems.push(Problem::at(
                ProblemKind::Catalogue,
                path,
                text,
                Some(entry.name.span().start),
                "empty field name",
            ));
        }
        if fields.iter().any(|f: &FieldInfo| &f.name == name) {
            problems.push(Problem::at(
                ProblemKind::Catalogue,
                path,
                text,
                Some(entry.name.span().start),
                format!("duplicate field `{name}`"),
            ));
        }
        spans.push((entry.name.span(), entry.class.span()));
        fields.push(FieldInfo {
            name: entry.name.into_inner(),
            class: entry.class.into_inner(),
            minimal: entry.minimal,
            description: entry.description,
        });
    }
    if fields.is_empty() {
        problems.push(Problem::at(
            ProblemKind::Catalogue,
            path,
            text,
            None,
            "the catalogue has no fields",
        ));
    }
    let count = fields.len();
    let first_extra = spans.get(MAX_FIELDS).map(|(name, _)| name.start);
    let Some(catalogue) = FieldCatalogue::new(fields) else {
        problems.push(Problem::at(
            ProblemKind::Catalogue,
            path,
            text,
            first_extra,
            format!("{count} fields: a catalogue holds at most {MAX_FIELDS}"),
        ));
        return None;
    };
    (problems.len() == before).then_some((catalogue, spans))
}

/// Builds the `Field` entities, checking each against the schema (so a class that is not
/// one of the schema's `FieldClass` values is reported at its place in the catalogue).
fn field_entities(
    schema: &Schema,
    catalogue: &FieldCatalogue,
    spans: &EntrySpans,
    path: &Path,
    text: &str,
    problems: &mut Vec<Problem>,
) -> Vec<Entity> {
    let mut out = Vec::new();
    for ((_, info), (name_span, class_span)) in catalogue.iter().zip(spans) {
        let mut parents = vec![info.class.as_str()];
        if info.minimal {
            parents.push(MINIMAL_CLASS);
        }
        let parents = parents
            .into_iter()
            .map(|c| entity_uid("FieldClass", c))
            .collect::<Result<std::collections::HashSet<_>, _>>();
        let entity = parents.map_err(|e| e.to_string()).and_then(|parents| {
            let uid = entity_uid("Field", &info.name).map_err(|e| e.to_string())?;
            conforming(Entity::new_no_attrs(uid, parents), schema)
        });
        match entity {
            Ok(e) => out.push(e),
            Err(msg) => {
                let at = if msg.contains(&info.class) {
                    class_span.start
                } else {
                    name_span.start
                };
                problems.push(Problem::at(
                    ProblemKind::Catalogue,
                    path,
                    text,
                    Some(at),
                    format!("field `{}` does not fit the schema: {msg}", info.name),
                ));
            }
        }
    }
    out
}

/// The uid `Type::"id"`; the error says why `type_name` is not a Cedar type name.
pub(crate) fn entity_uid(type_name: &str, id: &str) -> Result<EntityUid, String> {
    let t = cedar_policy::EntityTypeName::from_str(type_name).map_err(|e| e.to_string())?;
    Ok(EntityUid::from_type_name_and_id(
        t,
        cedar_policy::EntityId::new(id),
    ))
}

/// Checks `entity` against the schema (attributes, parents, enumerated ids).
fn conforming(entity: Entity, schema: &Schema) -> Result<Entity, String> {
    cedar_policy::Entities::from_entities([entity.clone()], Some(schema))
        .map(|_| entity)
        .map_err(|e| {
            let mut msg = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                msg.push_str(&format!(": {c}"));
                cause = c.source();
            }
            msg
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bundled policy directory, with `extra` files beside its own.
    fn bundled_with(extra: &[(&str, &str)]) -> tempfile::TempDir {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let dir = tempfile::tempdir().unwrap();
        for entry in fs::read_dir(&src).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
            }
        }
        for (name, text) in extra {
            fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    /// 250 policies (three runs) with `;`, `"` and `//` in strings and comments.
    fn long_file() -> String {
        let mut text = String::from("// A long file; of many policies.\n");
        for i in 0..250 {
            text.push_str(&format!(
                "// Policy {i}; \"quoted\" // nested\n\
                 @id(\"long-{i}\")\n@note(\"a; b \\\" c // d\")\n\
                 permit (principal, action == Action::\"read\", resource)\n\
                 when {{ context has purpose && context.purpose == \"x;{i}//\\\"\" }};\n\n"
            ));
        }
        text
    }

    #[test]
    fn runs_are_cut_after_statements_outside_strings_and_comments() {
        let text = long_file();
        let runs = runs(&text);
        assert_eq!(runs.len(), 3);
        assert_eq!(runs.first().map(|r| r.start), Some(0));
        assert_eq!(runs.last().map(|r| r.end), Some(text.len()));
        for pair in runs.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
            assert!(text[..pair[0].end].ends_with("\" };"));
        }
        for run in &runs[..2] {
            let set = PolicySet::from_str(&text[run.clone()]).unwrap();
            assert_eq!(set.policies().count(), STATEMENTS_PER_RUN);
        }
        let whole = |text: &str| {
            let runs = super::runs(text);
            runs.len() == 1 && runs.first() == Some(&(0..text.len()))
        };
        assert!(whole(""));
        assert!(whole("permit (principal, action, resource);"));
    }

    /// The ESTs of one parse of each run are what `Policy::to_json` gives, policy by
    /// policy, for every bundled policy and a file of three runs: compiling from them
    /// compiles the same. Each policy is at its line.
    #[test]
    fn the_ests_of_a_run_are_each_policys_own() {
        let long = long_file();
        let dir = bundled_with(&[("long.cedar", &long)]);
        let (bundle, ests) = load(dir.path()).unwrap_or_else(|e| panic!("{}", e.render()));
        let own = fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
            .filter_map(|p| fs::read_to_string(p).ok())
            .map(|text| text.matches("@id(").count())
            .sum::<usize>();
        assert_eq!(bundle.policies.policies().count(), 250 + own);
        assert_eq!(ests.0.len(), bundle.policies.policies().count());
        for policy in bundle.policies.policies() {
            assert_eq!(
                ests.0.get(policy.id()),
                Some(&policy.to_json().unwrap()),
                "{}",
                policy.id()
            );
        }
        let source = &bundle.sources["long-249"];
        let at = long.find("@id(\"long-249\")").unwrap();
        assert_eq!(source.line, crate::error::line_column(&long, at).0);
        assert!(source.text.starts_with("@id(\"long-249\")"));
    }
}
