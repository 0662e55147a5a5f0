//! The record of processing (UK GDPR Article 30): what the party processes, why, about
//! whom, who receives which fields, how long it is kept and what protects it.
//!
//! Most of the record is derived: the categories of personal data from the field
//! catalogue, the recipients from the policies by planning ([`Engine::plan`]) for each
//! kind of principal of the data (the principals a [`crate::review`] asks for),
//! each action, at each phase of the data's elections (and, for a volunteer, in each of
//! its call sessions; for a processor, while its contract is in force), with and without
//! each purpose the policies name and a break-glass reason; what each recipient still
//! reaches of a member gone two years; the forbid policies, the read limits of the data,
//! the decision log's contents and the invariants. What the policies cannot know (the
//! controller, the purposes' lawful bases, the Article 9 condition, the data subjects'
//! descriptions, transfers, measures outside the policies) comes from
//! [`ProcessingFacts`], the file `processing.toml` beside the policies.

mod facts;
mod html;

pub use facts::{Controller, DataSubject, Dpo, ProcessingFacts, Purpose, FACTS_FILE};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;

use crate::audit::DecisionRecord;
use crate::bundle::{annotation, PolicySource};
use crate::error::LoadError;
use crate::records::{Contract, MemberStatus, Membership, PrincipalId, PrincipalKind};
use crate::request::{Action, Context, MemberRequest};
use crate::review::stated::{self, is_context_attr, visit, Stated};
use crate::review::{self, PhaseKind, Reach, ReviewError};
use crate::{Directory, Engine, FieldInfo, FieldSet, MemberRef, RecordError, RequestError};

/// A class of fields: a category of personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataCategory {
    /// The class, as `fields.toml` names it.
    pub class: String,
    /// Whether it is special-category data (Article 9).
    pub special: bool,
    /// Its fields, in catalogue order.
    pub fields: Vec<FieldInfo>,
}

/// A field a recipient reaches through an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldReach {
    /// The field.
    pub field: String,
    /// Of some members or of every member, at some moment.
    pub reach: Reach,
    /// Empty if reached without a stated purpose or reason; else what opens it:
    /// `purpose complaint`, `a break-glass reason`.
    pub only_with: Vec<String>,
}

/// A recipient: a kind of principal, by one principal of the data.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipient {
    /// `staff, membership (s-membership)`.
    pub label: String,
    /// The principal planned for.
    pub principal: PrincipalId,
    /// A processor's contract.
    pub contract: Option<Contract>,
    /// Per action that reaches a field, the fields it reaches.
    pub reaches: Vec<(Action, Vec<FieldReach>)>,
    /// Per action that reaches a field of a member who left two years and a day before,
    /// those fields.
    pub after_retention: Vec<(Action, Vec<String>)>,
}

impl Recipient {
    /// Every field reached through some action, by name.
    pub fn fields(&self) -> BTreeSet<&str> {
        self.reaches
            .iter()
            .flat_map(|(_, fields)| fields.iter().map(|f| f.field.as_str()))
            .collect()
    }
}

/// A forbid policy: a guardrail in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guardrail {
    /// The policy's id.
    pub id: String,
    /// Its `@rule` annotation.
    pub rule: Option<String>,
    /// The first sentence of the comment above it.
    pub comment: Option<String>,
    /// Where it is.
    pub source: Option<PolicySource>,
}

/// The hourly read limits of a kind of principal in the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// The kind.
    pub kind: PrincipalKind,
    /// How many principals of the kind the data holds.
    pub principals: usize,
    /// The lowest limit.
    pub min: u32,
    /// The highest limit.
    pub max: u32,
}

/// The safeguards in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Safeguards {
    /// The forbid policies, by file and line.
    pub guardrails: Vec<Guardrail>,
    /// The read limits per kind of principal of the data.
    pub read_limits: Vec<ReadLimits>,
    /// The forbid policies that read `context.reads_this_hour`: the limits are enforced
    /// only if there is one.
    pub volume_policies: Vec<String>,
    /// What the decision log keeps of each decision: a record's keys.
    pub decision_log: Vec<String>,
    /// The invariants proved by `membergate verify`: id and what each says (`None`
    /// without the feature `assurance` or without an invariants file).
    pub invariants: Option<Vec<(String, String)>>,
}

/// The record of processing: see the [module](self).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordOfProcessing {
    /// The facts it was built with.
    pub facts: ProcessingFacts,
    /// The purposes the policies name in `context.purpose`, sorted.
    pub policy_purposes: Vec<String>,
    /// How many members of the data hold each status, in [`MemberStatus::ALL`] order.
    pub members: Vec<(MemberStatus, usize)>,
    /// The categories of personal data, in catalogue order.
    pub categories: Vec<DataCategory>,
    /// The moments planned at: the data's election phases.
    pub moments: Vec<String>,
    /// The recipients, kind by kind.
    pub recipients: Vec<Recipient>,
    /// The safeguards.
    pub safeguards: Safeguards,
}

/// Why a record of processing could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProcessingError {
    /// The facts do not fit the policies, or the invariants do not load.
    #[error("{0}")]
    Load(#[from] LoadError),
    /// The data's records do not fit the policies.
    #[error("the records do not fit the policies: {0}")]
    Records(#[from] RecordError),
    /// A plan or a decision was refused.
    #[error("{0}")]
    Request(#[from] RequestError),
    /// The data has no election to take the moments from.
    #[error("the data has no election: a record's moments are an election's")]
    NoElection,
}

impl From<ReviewError> for ProcessingError {
    fn from(e: ReviewError) -> Self {
        match e {
            ReviewError::Records { source, .. } => ProcessingError::Records(source),
            ReviewError::Request(e) => ProcessingError::Request(e),
            ReviewError::NoElection => ProcessingError::NoElection,
            ReviewError::Load { source, .. } => ProcessingError::Load(*source),
        }
    }
}

impl RecordOfProcessing {
    /// The record of `party`'s processing under `engine`'s policies, with `facts`.
    ///
    /// # Errors
    /// [`ProcessingError::Load`] if a purpose the policies name is not described in
    /// `facts` (or its special-category class is not the catalogue's);
    /// [`ProcessingError::NoElection`] if the data has no election; others if the data
    /// does not fit the policies.
    ///
    /// # Example
    /// ```
    /// use membergate::processing::{ProcessingFacts, RecordOfProcessing};
    /// use membergate::{sample, Engine};
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let facts = ProcessingFacts::load("policies")?;
    /// let record = RecordOfProcessing::build(&engine, &sample::bundled(), &facts)?;
    /// let mailing = record.recipients.iter().find(|r| r.principal.id == "p-mailing").ok_or("no p-mailing")?;
    /// assert!(mailing.fields().contains("address") && !mailing.fields().contains("phone"));
    /// assert!(record.to_string().contains("Categories of personal data"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(
        engine: &Engine,
        party: &Membership,
        facts: &ProcessingFacts,
    ) -> Result<RecordOfProcessing, ProcessingError> {
        let policy_purposes = stated::policy_purposes(engine);
        facts.check(engine, &policy_purposes)?;
        let all = review::phases(party)?;
        // The volunteer asked is the one of the review's call session.
        let session = all.iter().find_map(|p| p.session.clone());
        let phases: Vec<review::Phase> = all
            .into_iter()
            .filter(|p| {
                matches!(
                    p.kind,
                    PhaseKind::BeforeNominationsClose | PhaseKind::Contest | PhaseKind::AfterBallot
                )
            })
            .collect();
        let directory = Directory::from_membership(engine, &party.principal_side())?;
        let last = phases.iter().rev().find_map(|p| p.election.as_deref());
        let mut recipients = Vec::new();
        for (label, principal) in review::askers(party, last, session.as_deref()) {
            let mut moments: Vec<Context> = phases.iter().map(review::phase_context).collect();
            moments.extend(own_moments(party, &principal));
            let asked: Vec<Stated> = moments
                .into_iter()
                .flat_map(|ctx| stated::stated(ctx, &policy_purposes))
                .collect();
            recipients.push(recipient(
                engine, &directory, party, label, principal, &asked,
            )?);
        }
        Ok(RecordOfProcessing {
            facts: facts.clone(),
            members: MemberStatus::ALL
                .into_iter()
                .map(|s| (s, party.members.values().filter(|m| m.status == s).count()))
                .collect(),
            categories: categories(engine, &facts.special_class),
            moments: phases.into_iter().map(|p| p.label).collect(),
            recipients,
            safeguards: safeguards(engine, party)?,
            policy_purposes,
        })
    }

    /// The record as one self-contained HTML page titled `title` (no script, no
    /// network).
    ///
    /// ```
    /// use membergate::processing::{ProcessingFacts, RecordOfProcessing};
    /// use membergate::{sample, Engine};
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let record = RecordOfProcessing::build(&engine, &sample::bundled(), &ProcessingFacts::load("policies")?)?;
    /// let html = record.to_html("Record of processing");
    /// assert!(html.starts_with("<!DOCTYPE html>") && !html.contains("<script"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_html(&self, title: &str) -> String {
        html::page(title, self)
    }

    /// The record as an HTML fragment, beginning with
    /// `<h2 id="record">Record of processing</h2>`, to put in another page of the crate
    /// (its styles are [`RecordOfProcessing::to_html`]'s).
    ///
    /// ```
    /// use membergate::processing::{ProcessingFacts, RecordOfProcessing};
    /// use membergate::{sample, Engine};
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let record = RecordOfProcessing::build(&engine, &sample::bundled(), &ProcessingFacts::load("policies")?)?;
    /// assert!(record.html_section().starts_with("<h2 id=\"record\">Record of processing</h2>"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn html_section(&self) -> String {
        html::section(self)
    }

    /// The record's sections, each a title and its blocks: what both the text and the
    /// HTML show.
    fn sections(&self) -> Vec<Section> {
        let f = &self.facts;
        let mut out = Vec::new();
        out.push(Section::new(
            "controller",
            "Controller and data protection officer",
            vec![Block::Entries(vec![
                Entry::new(
                    format!("controller: {}", f.controller.name),
                    vec![f.controller.address.clone(), f.controller.contact.clone()],
                ),
                Entry::new(
                    format!("data protection officer: {}", f.dpo.name),
                    vec![f.dpo.contact.clone()],
                ),
            ])],
        ));
        let purposes = f
            .purposes
            .iter()
            .map(|p| {
                let named = if self.policy_purposes.contains(&p.id) {
                    " (stated in requests: the policies name it)"
                } else {
                    ""
                };
                Entry::new(
                    format!("{}{named}", p.id),
                    vec![
                        p.description.clone(),
                        format!("lawful basis: {}", p.lawful_basis),
                    ],
                )
            })
            .collect();
        out.push(Section::new(
            "purposes",
            "Purposes of processing",
            vec![
                Block::Entries(purposes),
                Block::Text(format!(
                    "Special-category data (class `{}`): {}",
                    f.special_class, f.special_condition
                )),
            ],
        ));
        let subjects = f
            .data_subjects
            .iter()
            .map(|s| {
                let n = self
                    .members
                    .iter()
                    .find(|(status, _)| *status == s.status)
                    .map_or(0, |(_, n)| *n);
                Entry::new(
                    format!("{} ({n} in the data)", s.status.as_str()),
                    vec![s.description.clone()],
                )
            })
            .collect();
        out.push(Section::new(
            "subjects",
            "Categories of data subjects",
            vec![Block::Entries(subjects)],
        ));
        let categories = self
            .categories
            .iter()
            .map(|c| {
                let special = if c.special {
                    " (special category, Article 9)"
                } else {
                    ""
                };
                let fields = c
                    .fields
                    .iter()
                    .map(|x| format!("{}: {}", x.name, x.description))
                    .collect();
                Entry::new(format!("{}{special}", c.class), fields)
            })
            .collect();
        out.push(Section::new(
            "categories",
            "Categories of personal data",
            vec![Block::Entries(categories)],
        ));
        out.push(self.recipients_section());
        out.push(Section::new(
            "transfers",
            "International transfers",
            vec![Block::Text(f.transfers.clone())],
        ));
        out.push(self.retention_section());
        out.push(self.safeguards_section());
        out
    }

    fn recipients_section(&self) -> Section {
        let entry = |r: &Recipient| {
            let mut lines = Vec::new();
            if let Some(c) = &r.contract {
                let statuses: Vec<&str> = c.statuses.iter().map(|s| s.as_str()).collect();
                lines.push(format!(
                    "contract: fields {}; statuses {}; from {} to {}",
                    list(&c.fields),
                    list(&statuses),
                    c.starts,
                    c.ends
                ));
            }
            for (action, fields) in &r.reaches {
                let mut parts: Vec<(String, Vec<&str>)> = Vec::new();
                for fr in fields {
                    let who = match fr.reach {
                        Reach::Everyone => "every member",
                        _ => "some members",
                    };
                    let key = if fr.only_with.is_empty() {
                        who.to_string()
                    } else {
                        format!("{who}, only with {}", fr.only_with.join(" or "))
                    };
                    match parts.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, names)) => names.push(&fr.field),
                        None => parts.push((key, vec![&fr.field])),
                    }
                }
                let parts: Vec<String> = parts
                    .iter()
                    .map(|(k, names)| format!("{k}: {}", names.join(", ")))
                    .collect();
                lines.push(format!("{}: {}", action.as_str(), parts.join("; ")));
            }
            if r.reaches.is_empty() {
                lines.push("nothing, at any moment planned".to_string());
            }
            Entry::new(r.label.clone(), lines)
        };
        let (processors, roles): (Vec<&Recipient>, Vec<&Recipient>) = self
            .recipients
            .iter()
            .partition(|r| r.principal.kind == PrincipalKind::Processor);
        Section::new(
            "recipients",
            "Recipients",
            vec![
                Block::Text(format!(
                    "Planned from the policies for each action, at each of these moments: {}; \
                     a volunteer also in each of its call sessions, a processor while its \
                     contract is in force; with no purpose, each purpose the policies name, \
                     and a break-glass reason.",
                    self.moments.join("; ")
                )),
                Block::Heading("By role".to_string()),
                Block::Entries(roles.into_iter().map(entry).collect()),
                Block::Heading("By processor".to_string()),
                Block::Entries(processors.into_iter().map(entry).collect()),
            ],
        )
    }

    fn retention_section(&self) -> Section {
        let entries = self
            .recipients
            .iter()
            .map(|r| {
                let lines = if r.after_retention.is_empty() {
                    vec!["nothing".to_string()]
                } else {
                    r.after_retention
                        .iter()
                        .map(|(a, fields)| format!("{}: {}", a.as_str(), fields.join(", ")))
                        .collect()
                };
                Entry::new(r.label.clone(), lines)
            })
            .collect();
        Section::new(
            "retention",
            "Retention",
            vec![
                Block::Text(self.facts.retention.clone()),
                Block::Text(format!(
                    "What each recipient still reaches of a member who left or was expelled \
                     {} days and a day before (planned at the same moments):",
                    review::TWO_YEARS.as_hours() / 24
                )),
                Block::Entries(entries),
            ],
        )
    }

    fn safeguards_section(&self) -> Section {
        let s = &self.safeguards;
        let guardrails = s
            .guardrails
            .iter()
            .map(|g| {
                let mut head = g.id.clone();
                if let Some(rule) = &g.rule {
                    head.push_str(&format!(" (rule {rule})"));
                }
                let mut lines: Vec<String> = g.comment.iter().cloned().collect();
                if let Some(src) = &g.source {
                    lines.push(format!("{}:{}", src.file.display(), src.line));
                }
                Entry::new(head, lines)
            })
            .collect();
        let limits = s
            .read_limits
            .iter()
            .map(|l| {
                let range = if l.min == l.max {
                    l.min.to_string()
                } else {
                    format!("{} to {}", l.min, l.max)
                };
                format!(
                    "{}: {range} reads an hour ({} in the data)",
                    review::kind_label(l.kind),
                    l.principals
                )
            })
            .collect();
        let enforced = if s.volume_policies.is_empty() {
            "No policy reads `context.reads_this_hour`: the limits are not enforced.".to_string()
        } else {
            format!(
                "Enforced by the forbid {}.",
                s.volume_policies
                    .iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let mut blocks = vec![
            Block::Heading(format!("Forbid policies ({})", s.guardrails.len())),
            Block::Entries(guardrails),
            Block::Heading("Read limits".to_string()),
            Block::Entries(vec![Entry::new(enforced, limits)]),
            Block::Heading("Decision log".to_string()),
            Block::Text(format!(
                "Each decision a CRM acts on is kept as a record of {}, in a hash chain \
                 (SHA-256, each record with its predecessor's hash), with checkpoints of \
                 its head signed with Ed25519 in a file of their own: a record changed, \
                 removed or cut off the end is found (`membergate audit verify`).",
                list(&s.decision_log)
            )),
        ];
        if let Some(invariants) = &s.invariants {
            blocks.push(Block::Heading(format!(
                "Invariants proved for every request ({})",
                invariants.len()
            )));
            blocks.push(Block::Entries(
                invariants
                    .iter()
                    .map(|(id, says)| Entry::new(id.clone(), vec![says.clone()]))
                    .collect(),
            ));
        }
        blocks.push(Block::Heading("Other measures".to_string()));
        blocks.push(Block::Entries(
            self.facts
                .security
                .iter()
                .map(|m| Entry::new(m.clone(), Vec::new()))
                .collect(),
        ));
        Section::new("safeguards", "Safeguards in force", blocks)
    }
}

/// `a, b, c`.
fn list(items: &[impl AsRef<str>]) -> String {
    items
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A section of the record: what the text and the HTML both show.
struct Section {
    id: &'static str,
    title: &'static str,
    blocks: Vec<Block>,
}

impl Section {
    fn new(id: &'static str, title: &'static str, blocks: Vec<Block>) -> Section {
        Section { id, title, blocks }
    }
}

enum Block {
    /// A paragraph.
    Text(String),
    /// A sub-heading.
    Heading(String),
    /// A list of entries.
    Entries(Vec<Entry>),
}

/// A head and its lines.
struct Entry {
    head: String,
    lines: Vec<String>,
}

impl Entry {
    fn new(head: String, lines: Vec<String>) -> Entry {
        Entry { head, lines }
    }
}

impl fmt::Display for RecordOfProcessing {
    /// The sections, numbered, each entry a `*` line with its lines indented below.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Record of processing (UK GDPR Article 30)")?;
        for (i, s) in self.sections().iter().enumerate() {
            writeln!(f, "\n{}. {}", i + 1, s.title)?;
            for b in &s.blocks {
                match b {
                    Block::Text(t) => writeln!(f, "  {t}")?,
                    Block::Heading(h) => writeln!(f, "  {h}:")?,
                    Block::Entries(entries) => {
                        for e in entries {
                            writeln!(f, "  * {}", e.head)?;
                            for l in &e.lines {
                                writeln!(f, "      {l}")?;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The moments only `principal` has: a volunteer's call sessions (halfway through, in
/// the session, for its campaign's election), a processor's contract (halfway through).
fn own_moments(party: &Membership, principal: &PrincipalId) -> Vec<Context> {
    let halfway = |from: jiff::Timestamp, to: jiff::Timestamp| {
        review::shift(from, to.duration_since(from) / 2)
    };
    let mut out = Vec::new();
    out.extend(review::assigned_sessions(party, principal));
    if let Some(p) = party.processors.get(&principal.id) {
        if principal.kind == PrincipalKind::Processor {
            out.extend(halfway(p.contract.starts, p.contract.ends).map(Context::at));
        }
    }
    out
}

/// What `principal` reaches, planned in every context of `asked`, and what it reaches
/// of a member gone two years at each.
fn recipient(
    engine: &Engine,
    directory: &Directory,
    party: &Membership,
    label: String,
    principal: PrincipalId,
    asked: &[Stated],
) -> Result<Recipient, ProcessingError> {
    let catalogue = engine.catalogue();
    // Per action and field: the reach with nothing stated, and with each thing stated.
    type Reaches = BTreeMap<usize, (Reach, BTreeMap<String, Reach>)>;
    let mut reaches: Vec<Reaches> = vec![BTreeMap::new(); Action::ALL.len()];
    let mut retained = vec![FieldSet::EMPTY; Action::ALL.len()];
    for a in asked {
        for ((slot, kept), action) in reaches.iter_mut().zip(&mut retained).zip(Action::ALL) {
            let plan = engine.plan(directory, &principal, action, &a.ctx)?;
            for (i, (_, p)) in plan.fields().enumerate() {
                let r = Reach::of_plan(p);
                if r == Reach::Nobody {
                    continue;
                }
                let (plain, with) = slot.entry(i).or_insert((Reach::Nobody, BTreeMap::new()));
                match &a.with {
                    None => *plain = (*plain).max(r),
                    Some(w) => {
                        let e = with.entry(w.clone()).or_insert(Reach::Nobody);
                        *e = (*e).max(r);
                    }
                }
            }
            if let Some((id, attrs)) = review::leaver(party, &[&plan], a.ctx.now) {
                let req = MemberRequest {
                    principal: &principal,
                    action,
                    member: MemberRef {
                        id: &id,
                        attrs: &attrs,
                    },
                    context: &a.ctx,
                };
                let fields = engine.permitted_fields(directory, &req)?;
                *kept = FieldSet::from_bits(kept.bits() | fields.bits());
            }
        }
    }
    let names: Vec<&str> = catalogue.iter().map(|(_, f)| f.name.as_str()).collect();
    let reaches = Action::ALL
        .into_iter()
        .zip(reaches)
        .filter(|(_, fields)| !fields.is_empty())
        .map(|(action, fields)| {
            let fields = fields
                .into_iter()
                .map(|(i, (plain, with))| {
                    let field = names.get(i).copied().unwrap_or_default().to_string();
                    if plain != Reach::Nobody {
                        return FieldReach {
                            field,
                            reach: plain,
                            only_with: Vec::new(),
                        };
                    }
                    let reach = with.values().copied().max().unwrap_or(Reach::Nobody);
                    FieldReach {
                        field,
                        reach,
                        only_with: with.into_keys().collect(),
                    }
                })
                .collect();
            (action, fields)
        })
        .collect();
    let after_retention = Action::ALL
        .into_iter()
        .zip(retained)
        .filter(|(_, set)| !set.is_empty())
        .map(|(a, set)| {
            let names = catalogue.names(set).into_iter().map(String::from).collect();
            (a, names)
        })
        .collect();
    Ok(Recipient {
        label,
        contract: party
            .processors
            .get(&principal.id)
            .filter(|_| principal.kind == PrincipalKind::Processor)
            .map(|p| p.contract.clone()),
        principal,
        reaches,
        after_retention,
    })
}

/// The catalogue's classes, in order of first field, each with its fields.
fn categories(engine: &Engine, special: &str) -> Vec<DataCategory> {
    let mut out: Vec<DataCategory> = Vec::new();
    for (_, info) in engine.catalogue().iter() {
        match out.iter_mut().find(|c| c.class == info.class) {
            Some(c) => c.fields.push(info.clone()),
            None => out.push(DataCategory {
                class: info.class.clone(),
                special: info.class == special,
                fields: vec![info.clone()],
            }),
        }
    }
    out
}

/// The forbid policies, the data's read limits, the decision log's record and the
/// invariants.
fn safeguards(engine: &Engine, party: &Membership) -> Result<Safeguards, ProcessingError> {
    let mut guardrails = Vec::new();
    let mut volume_policies = Vec::new();
    for policy in engine.policies().policies() {
        if policy.effect() != cedar_policy::Effect::Forbid {
            continue;
        }
        let id = policy.id().to_string();
        let source = engine.policy_source(&id).cloned();
        if policy.to_json().is_ok_and(|est| {
            let mut found = false;
            visit(&est, &mut |v| {
                found |= is_context_attr(v, "reads_this_hour")
            });
            found
        }) {
            volume_policies.push(id.clone());
        }
        guardrails.push(Guardrail {
            rule: annotation(policy, "rule").map(String::from),
            comment: source.as_ref().and_then(comment_above),
            id,
            source,
        });
    }
    guardrails.sort_by(|a, b| {
        let at = |g: &Guardrail| g.source.as_ref().map(|s| (s.file.clone(), s.line));
        at(a).cmp(&at(b)).then_with(|| a.id.cmp(&b.id))
    });
    volume_policies.sort();

    let mut limits: BTreeMap<PrincipalKind, ReadLimits> = BTreeMap::new();
    for id in party.principal_ids() {
        let Some(record) = party.principal(&id) else {
            continue;
        };
        let limit = record.hourly_read_limit();
        let l = limits.entry(id.kind).or_insert(ReadLimits {
            kind: id.kind,
            principals: 0,
            min: limit,
            max: limit,
        });
        l.principals += 1;
        l.min = l.min.min(limit);
        l.max = l.max.max(limit);
    }

    Ok(Safeguards {
        guardrails,
        read_limits: limits.into_values().collect(),
        volume_policies,
        decision_log: decision_record_keys(),
        invariants: invariants(engine)?,
    })
}

/// The keys of a decision log record, as the log writes them.
fn decision_record_keys() -> Vec<String> {
    let record = DecisionRecord {
        at: jiff::Timestamp::UNIX_EPOCH,
        recorded_at: jiff::Timestamp::UNIX_EPOCH,
        request_id: String::new(),
        principal: String::new(),
        action: String::new(),
        member: String::new(),
        granted: Vec::new(),
        refused: Vec::new(),
        policies: Vec::new(),
        version: String::new(),
        rejected: Some(String::new()),
    };
    match serde_json::to_value(record) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

#[cfg(feature = "assurance")]
fn invariants(engine: &Engine) -> Result<Option<Vec<(String, String)>>, LoadError> {
    use crate::assurance::Invariants;
    use crate::bundle::INVARIANTS_FILE;
    let Some(text) = engine.invariants_text() else {
        return Ok(None);
    };
    let file = std::path::Path::new(INVARIANTS_FILE);
    let invariants = Invariants::parse(file, text, engine.schema())?;
    Ok(Some(
        invariants
            .iter()
            .map(|i| (i.id.clone(), i.says.clone()))
            .collect(),
    ))
}

#[cfg(not(feature = "assurance"))]
fn invariants(_: &Engine) -> Result<Option<Vec<(String, String)>>, LoadError> {
    Ok(None)
}

/// The first sentence of the `//` comment just above a policy in its file, if there is
/// one.
fn comment_above(source: &PolicySource) -> Option<String> {
    let text = fs::read_to_string(&source.file).ok()?;
    let above: Vec<&str> = text.lines().take(source.line.saturating_sub(1)).collect();
    let mut block: Vec<&str> = above
        .iter()
        .rev()
        .map(|l| l.trim())
        .take_while(|l| l.starts_with("//"))
        .map(|l| l.trim_start_matches('/').trim())
        .collect();
    block.reverse();
    let comment = block.join(" ");
    let sentence = match comment.find(". ") {
        Some(end) => comment.get(..=end).unwrap_or(&comment),
        None => &comment,
    };
    (!sentence.is_empty()).then(|| sentence.to_string())
}
