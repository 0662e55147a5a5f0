//! The facts of a record of processing that the policies cannot know, read from
//! `processing.toml` beside the policies (see [`ProcessingFacts`]).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{LoadError, Problem, ProblemKind};
use crate::records::MemberStatus;
use crate::Engine;

/// The facts file of a policy directory.
pub const FACTS_FILE: &str = "processing.toml";

/// The controller of the data.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Controller {
    /// Its name.
    pub name: String,
    /// Its postal address.
    pub address: String,
    /// Where to write about data protection.
    pub contact: String,
}

/// The data protection officer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dpo {
    /// The officer's name or title.
    pub name: String,
    /// Where to write to the officer.
    pub contact: String,
}

/// A purpose of processing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purpose {
    /// Its id; a purpose the policies name (`context.purpose`) is spelt as they spell it.
    pub id: String,
    /// What the processing is for.
    pub description: String,
    /// Its lawful basis (UK GDPR Article 6).
    pub lawful_basis: String,
}

/// A member status as a category of data subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSubject {
    /// The status.
    pub status: MemberStatus,
    /// Who they are.
    pub description: String,
}

/// What the policies cannot know, from `processing.toml`: see [`crate::processing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessingFacts {
    file: PathBuf,
    /// The controller.
    pub controller: Controller,
    /// The data protection officer.
    pub dpo: Dpo,
    /// The field class that holds special-category data (Article 9).
    pub special_class: String,
    /// The Article 9(2) condition relied on for it.
    pub special_condition: String,
    /// The purposes, in file order.
    pub purposes: Vec<Purpose>,
    /// Each member status as a category of data subject, in [`MemberStatus::ALL`] order.
    pub data_subjects: Vec<DataSubject>,
    /// The retention rule in words.
    pub retention: String,
    /// International transfers.
    pub transfers: String,
    /// Security measures the policies do not show.
    pub security: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFacts {
    retention: String,
    transfers: String,
    security: Vec<String>,
    controller: Controller,
    dpo: Dpo,
    special_category: RawSpecial,
    purpose: Vec<RawPurpose>,
    data_subject: Vec<RawSubject>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpecial {
    class: String,
    condition: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPurpose {
    id: toml::Spanned<String>,
    description: String,
    lawful_basis: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubject {
    status: toml::Spanned<String>,
    description: String,
}

impl ProcessingFacts {
    /// Loads `dir/processing.toml` (see [`ProcessingFacts::load_file`]).
    ///
    /// # Errors
    /// As [`ProcessingFacts::load_file`].
    ///
    /// # Example
    /// ```
    /// use membergate::processing::ProcessingFacts;
    /// let facts = ProcessingFacts::load("policies")?;
    /// assert_eq!(facts.controller.name, "The Party");
    /// # Ok::<(), membergate::LoadError>(())
    /// ```
    pub fn load(dir: impl AsRef<Path>) -> Result<ProcessingFacts, LoadError> {
        ProcessingFacts::load_file(dir.as_ref().join(FACTS_FILE))
    }

    /// Loads the facts file `file`.
    ///
    /// # Errors
    /// [`LoadError::Missing`] or [`LoadError::Io`] if it cannot be read;
    /// [`LoadError::Invalid`] as [`ProcessingFacts::parse`].
    ///
    /// # Example
    /// ```
    /// use membergate::processing::ProcessingFacts;
    /// let facts = ProcessingFacts::load_file("policies/processing.toml")?;
    /// assert!(facts.purposes.iter().any(|p| p.id == "subject_access"));
    /// # Ok::<(), membergate::LoadError>(())
    /// ```
    pub fn load_file(file: impl AsRef<Path>) -> Result<ProcessingFacts, LoadError> {
        let file = file.as_ref();
        let text = fs::read_to_string(file).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                LoadError::Missing {
                    path: file.to_path_buf(),
                    what: "the record of processing's facts `processing.toml`",
                }
            } else {
                LoadError::Io {
                    path: file.to_path_buf(),
                    source,
                }
            }
        })?;
        ProcessingFacts::parse(file, &text)
    }

    /// Parses the facts from `text`, reporting problems as in `file`: an unknown key, a
    /// wrong type, a purpose described twice, a status unknown, repeated or left out,
    /// each with its line and column.
    ///
    /// # Errors
    /// [`LoadError::Invalid`] with every problem found.
    ///
    /// # Example
    /// ```
    /// use std::path::Path;
    /// use membergate::processing::ProcessingFacts;
    /// let text = std::fs::read_to_string("policies/processing.toml")?;
    /// let wrong = text.replace("transfers = ", "transfer = ");
    /// let Err(err) = ProcessingFacts::parse(Path::new("processing.toml"), &wrong) else {
    ///     return Err("an unknown key was accepted".into());
    /// };
    /// assert!(err.problems()[0].message().contains("unknown field `transfer`"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parse(file: &Path, text: &str) -> Result<ProcessingFacts, LoadError> {
        let problem = |offset: Option<usize>, message: String| {
            Problem::at(ProblemKind::Processing, file, text, offset, message)
        };
        let raw: RawFacts = toml::from_str(text).map_err(|e| LoadError::Invalid {
            problems: vec![problem(e.span().map(|s| s.start), e.message().to_string())],
        })?;
        let mut problems = Vec::new();
        let mut purposes: Vec<Purpose> = Vec::new();
        for p in raw.purpose {
            let at = p.id.span().start;
            let id = p.id.into_inner();
            if id.is_empty() || purposes.iter().any(|q| q.id == id) {
                problems.push(problem(
                    Some(at),
                    format!("purpose `{id}` is empty or described twice"),
                ));
                continue;
            }
            purposes.push(Purpose {
                id,
                description: p.description,
                lawful_basis: p.lawful_basis,
            });
        }
        let mut described: BTreeMap<&'static str, String> = BTreeMap::new();
        for s in raw.data_subject {
            let at = s.status.span().start;
            let name = s.status.into_inner();
            match MemberStatus::ALL.iter().find(|m| m.as_str() == name) {
                Some(m) if !described.contains_key(m.as_str()) => {
                    described.insert(m.as_str(), s.description);
                }
                Some(_) => problems.push(problem(
                    Some(at),
                    format!("status `{name}` is described twice"),
                )),
                None => problems.push(problem(
                    Some(at),
                    format!(
                        "unknown member status `{name}` (expected one of {})",
                        statuses()
                    ),
                )),
            }
        }
        let mut data_subjects = Vec::new();
        for status in MemberStatus::ALL {
            match described.remove(status.as_str()) {
                Some(description) => data_subjects.push(DataSubject {
                    status,
                    description,
                }),
                None => problems.push(problem(
                    None,
                    format!(
                        "no `[[data_subject]]` describes the status `{}`",
                        status.as_str()
                    ),
                )),
            }
        }
        if !problems.is_empty() {
            return Err(LoadError::Invalid { problems });
        }
        Ok(ProcessingFacts {
            file: file.to_path_buf(),
            controller: raw.controller,
            dpo: raw.dpo,
            special_class: raw.special_category.class,
            special_condition: raw.special_category.condition,
            purposes,
            data_subjects,
            retention: raw.retention,
            transfers: raw.transfers,
            security: raw.security,
        })
    }

    /// The file the facts came from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Whether the facts fit `engine`'s policies: the special-category class is one of
    /// the catalogue's, and each purpose a policy compares `context.purpose` with is
    /// described. A problem names the facts file.
    pub(super) fn check(&self, engine: &Engine, named: &[String]) -> Result<(), LoadError> {
        let problem =
            |message: String| Problem::at(ProblemKind::Processing, &self.file, "", None, message);
        let mut problems = Vec::new();
        if !engine
            .catalogue()
            .iter()
            .any(|(_, f)| f.class == self.special_class)
        {
            problems.push(problem(format!(
                "the special-category class `{}` is not a class of the field catalogue",
                self.special_class
            )));
        }
        for p in named {
            if !self.purposes.iter().any(|q| &q.id == p) {
                problems.push(problem(format!(
                    "the policies name the purpose `{p}`, which no `[[purpose]]` describes"
                )));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LoadError::Invalid { problems })
        }
    }
}

/// The member statuses as the policies spell them, for a message.
fn statuses() -> String {
    let names: Vec<&str> = MemberStatus::ALL.iter().map(|s| s.as_str()).collect();
    names.join(", ")
}
