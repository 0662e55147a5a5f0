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
/// from one parse of each file (see [`Ests::take`]).
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

/// The ESTs of the statements of a policy file that parsed, by the ids Cedar gives them
/// (`policy0`, `policy1`, ...), from one parse of the whole text: `Policy::to_json`
/// parses each policy's text again on its own, and Cedar's parser pays a fixed cost per
/// parse (it builds its lexer's automaton anew) several times that of a policy in a
/// file. Empty if it does not parse (`PolicySet::from_str` said it does).
fn file_ests(text: &str) -> HashMap<String, serde_json::Value> {
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

    let (policies, sources, texts, ests) = load_policies(dir, &mut problems)?;
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
    id: &PolicyId,
    kind: ProblemKind,
    diag: &dyn miette::Diagnostic,
) {
    // Cedar's spans are offsets into the text of the file the policy was parsed from.
    let src = sources.get(id.to_string().as_str());
    let text = src.and_then(|s| texts.get(&s.file));
    match (src, text) {
        (Some(src), Some((text, lines))) => {
            problems.push(SourceFile::new(&src.file, text, lines).diagnostic(kind, diag))
        }
        (src, _) => {
            let file = src.map_or(Path::new("<policies>"), |s| s.file.as_path());
            problems.push(Problem::at(kind, file, "", None, diag.to_string()))
        }
    }
}

type Sources = BTreeMap<String, PolicySource>;
/// The text of each policy file and its line starts, by path.
type Texts = BTreeMap<PathBuf, (String, LineStarts)>;

/// Parses every `*.cedar` file of `dir` (in name order), naming each policy by its `@id`.
fn load_policies(
    dir: &Path,
    problems: &mut Vec<Problem>,
) -> Result<(PolicySet, Sources, Texts, Ests), LoadError> {
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
    let mut statements_seen = 0;
    for file in &files {
        let text = fs::read_to_string(file).map_err(|source| LoadError::Io {
            path: file.clone(),
            source,
        })?;
        let lines = LineStarts::of(&text);
        let source = SourceFile::new(file, &text, &lines);
        let parsed = match PolicySet::from_str(&text) {
            Ok(p) => p,
            Err(errs) => {
                for e in errs.iter() {
                    problems.push(source.diagnostic(ProblemKind::Policy, e));
                }
                continue;
            }
        };
        statements_seen += parsed.policies().count() + parsed.templates().count();
        let (_, _, max_policies) = LoadError::LIMITS;
        if statements_seen > max_policies {
            return Err(LoadError::TooLarge {
                path: dir.to_path_buf(),
                what: format!("over {max_policies} policies"),
            });
        }
        // Cedar names the statements of a file `policy0`, `policy1`, ... in source order;
        // walk them in that order, each found after the one before, so that two copies of
        // the same text are placed at their own lines.
        let ordinal = |id: &PolicyId| {
            id.to_string()
                .strip_prefix("policy")
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(usize::MAX)
        };
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
        let mut file_ests = file_ests(&text);
        let mut from = 0;
        let mut in_file = Vec::new();
        for (_, stmt, policy) in statements {
            let at = text
                .get(from..)
                .and_then(|rest| rest.find(&stmt))
                .map_or(from, |i| i + from);
            from = at + stmt.len();
            match policy {
                Some(p) => in_file.push((at, p)),
                None => problems.push(source.at(
                    ProblemKind::Policy,
                    Some(at),
                    "templates (policies with `?principal` or `?resource` slots) are not supported",
                )),
            }
        }
        for (at, policy) in in_file {
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
            let est = file_ests.remove(&policy.id().to_string());
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
    Ok((set, sources, texts, ests))
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

    /// The ESTs of one parse of each file are what `Policy::to_json` gives, policy by
    /// policy, for every bundled policy: compiling from them compiles the same.
    #[test]
    fn the_ests_of_a_file_are_each_policys_own() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let (bundle, ests) = load(&dir).unwrap_or_else(|e| panic!("{}", e.render()));
        assert_eq!(ests.0.len(), bundle.policies.policies().count());
        for policy in bundle.policies.policies() {
            assert_eq!(
                ests.0.get(policy.id()),
                Some(&policy.to_json().unwrap()),
                "{}",
                policy.id()
            );
        }
    }
}
