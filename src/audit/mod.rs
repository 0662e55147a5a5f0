//! The decision log: a record of each answer a CRM acted on, kept where it can be checked.
//!
//! - [`DecisionRecord`]: who asked to do what to which member, when, which fields were
//!   granted and refused, which policies decided, and the policy set's version.
//! - [`DecisionSink`]: where records go. [`JsonlSink`] appends them to a file as a
//!   tamper-evident hash chain (one JSON object per line); [`TracingSink`] emits them as
//!   `tracing` events.
//! - [`verify`] checks a log's chain line by line; [`query`] finds the records that match
//!   a [`Filter`] ("who saw this member's phone number last month").
//! - [`JsonlSink::with_checkpoints`] signs the log's head every so many records or
//!   seconds with a [`CheckpointKey`] into a file of its own; [`verify_checkpoints`]
//!   finds records cut off the log's end, an emptied log or a rebuilt chain below the
//!   last checkpoint.
//!
//! # Example
//! ```
//! use membergate::audit::{self, DecisionRecord, DecisionSink, Durability, Filter, JsonlSink};
//! use membergate::{sample, Action, Context, Directory, Engine, PrincipalId, PrincipalKind, Request};
//!
//! let engine = Engine::from_dir("policies")?;
//! let party = sample::bundled();
//! let directory = Directory::from_membership(&engine, &party)?;
//! let dir = tempfile::tempdir()?;
//! let log = dir.path().join("decisions.jsonl");
//! let sink = JsonlSink::open(&log, Durability::Flush)?;
//!
//! let staffer = PrincipalId::new(PrincipalKind::CampaignStaff, sample::ids::CS_A_STAFF);
//! let ctx = Context::at("2020-03-01T12:00:00Z".parse()?).election(sample::ids::LEADER_2020);
//! let member = party.member(sample::ids::MEMBER_ELIGIBLE).ok_or("no member")?;
//! let req = Request { principal: &staffer, action: Action::Read, member, field: "phone", context: &ctx };
//! let decision = engine.authorize(&directory, &req)?;
//! sink.record(&DecisionRecord::for_decision("req-1", &req, &decision, engine.version()))?;
//!
//! assert!(audit::verify(&log)?.is_intact());
//! let phone = Filter { member: Some(sample::ids::MEMBER_ELIGIBLE.into()), field: Some("phone".into()), ..Filter::default() };
//! assert_eq!(audit::query(&log, &phone)?[0].request_id, "req-1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::PathBuf;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::bundle::PolicyVersion;
use crate::decision::{Decision, FieldDecisions};
use crate::engine::Engine;
use crate::fields::FieldSet;
use crate::request::{MemberRequest, Request};

mod chain;
mod checkpoint;
mod jsonl;
mod query;

pub use chain::{verify, Break, BreakKind, ReadError, TornLine, VerifyReport, GENESIS};
pub use checkpoint::{
    verify_checkpoints, Checkpoint, CheckpointError, CheckpointKey, CheckpointPolicy,
    CheckpointProblem, CheckpointReport, InvalidKey, PublicKey,
};
pub use jsonl::{Durability, JsonlSink, OpenError, OpenReport};
pub use query::{query, Filter};

/// How many bytes of a request's own text a record keeps (see [`bounded`]).
pub const LOGGED_BYTES: usize = 200;

/// `text` if it is at most [`LOGGED_BYTES`] long; else its first bytes (cut on a
/// character boundary), its length and the SHA-256 of the whole, so that a request's
/// own text (an id, a principal, a reason for a rejection) costs the log a bounded
/// record whatever the request sent, and two long texts stay told apart.
///
/// ```
/// use membergate::audit::{bounded, LOGGED_BYTES};
/// assert_eq!(bounded("m-00001"), "m-00001");
/// let long = "x".repeat(100_000);
/// let kept = bounded(&long);
/// assert!(kept.len() < LOGGED_BYTES + 100);
/// assert!(kept.starts_with("xxxx") && kept.contains("100000 bytes, sha256 "));
/// ```
pub fn bounded(text: &str) -> String {
    use sha2::{Digest, Sha256};
    if text.len() <= LOGGED_BYTES {
        return text.to_string();
    }
    let mut end = LOGGED_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}... ({} bytes, sha256 {})",
        text.get(..end).unwrap_or_default(),
        text.len(),
        chain::hex(&Sha256::digest(text.as_bytes()))
    )
}

/// One decision a CRM acted on: one line of the decision log. The texts a request
/// brings (its id, principal, action, member, a rejection's reason) are kept
/// [`bounded`].
///
/// Build one with [`DecisionRecord::for_decision`] (one field) or
/// [`DecisionRecord::for_fields`] (a field set), then give it to a [`DecisionSink`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRecord {
    /// The time of the request (the time the decision was made for).
    pub at: Timestamp,
    /// The wall-clock time the record was made.
    pub recorded_at: Timestamp,
    /// The caller's id for the request, to find it in the CRM's own logs.
    pub request_id: String,
    /// The principal, as a Cedar uid: `CampaignStaff::"cs-a"`.
    pub principal: String,
    /// The action's id: `read`, `contact_phone`, ...
    pub action: String,
    /// The member record's id.
    pub member: String,
    /// The fields the principal was allowed to act on, in catalogue order.
    pub granted: Vec<String>,
    /// The fields asked about and refused, in catalogue order.
    pub refused: Vec<String>,
    /// The ids of the policies that decided.
    pub policies: Vec<String>,
    /// The policy set's version ([`Engine::version`]), 64 hexadecimal digits.
    pub version: String,
    /// Why the request was rejected before any policy decided (a missing or unknown
    /// principal, an unknown member, a malformed request); `None` for a decision.
    /// Written only when present, so logs without rejections read as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
}

impl DecisionRecord {
    /// The record of one field decision: the field is granted if `decision` allows it,
    /// refused if not; the policies are the decision's determining policies.
    ///
    /// # Example
    /// ```
    /// use membergate::audit::DecisionRecord;
    /// use membergate::{sample, Action, Context, Directory, Engine, PrincipalId, PrincipalKind, Request};
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let party = sample::bundled();
    /// let directory = Directory::from_membership(&engine, &party)?;
    /// let resigned = PrincipalId::new(PrincipalKind::Representative, sample::ids::MP_RESIGNED);
    /// let ctx = Context::at("2019-02-19T09:00:00Z".parse()?);
    /// let member = party.member(sample::ids::MEMBER_OTHER_CLP).ok_or("no member")?;
    /// let req = Request { principal: &resigned, action: Action::Read, member, field: "phone", context: &ctx };
    /// let decision = engine.authorize(&directory, &req)?;
    ///
    /// let record = DecisionRecord::for_decision("req-7", &req, &decision, engine.version());
    /// assert_eq!(record.principal, r#"Representative::"mp-resigned""#);
    /// assert!(record.granted.is_empty());
    /// assert_eq!(record.refused, ["phone"]);
    /// assert_eq!(record.policies, ["role-ended"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn for_decision(
        request_id: impl Into<String>,
        req: &Request<'_>,
        decision: &Decision<'_>,
        version: &PolicyVersion,
    ) -> DecisionRecord {
        let field = vec![req.field.to_string()];
        let (granted, refused) = if decision.is_allowed() {
            (field, Vec::new())
        } else {
            (Vec::new(), field)
        };
        DecisionRecord {
            at: req.context.now,
            recorded_at: Timestamp::now(),
            request_id: bounded(&request_id.into()),
            principal: bounded(&req.principal.to_string()),
            action: req.action.as_str().to_string(),
            member: bounded(req.member.id),
            granted,
            refused,
            policies: decision.policies().iter().map(|p| p.to_string()).collect(),
            version: version.as_str().to_string(),
            rejected: None,
        }
    }

    /// The record of a field-set answer ([`Engine::permitted_fields`] and the like):
    /// `granted` by name, every other catalogue field refused, and the engine's version.
    ///
    /// A field set does not name the policies that decided it, so `policies` is empty;
    /// add them with [`DecisionRecord::with_policies`] if the caller knows them, or decide
    /// with [`Engine::field_decisions`] and record with
    /// [`DecisionRecord::for_field_decisions`], which names them.
    ///
    /// # Example
    /// ```
    /// use membergate::audit::DecisionRecord;
    /// use membergate::{sample, Action, Context, Directory, Engine, MemberRequest, PrincipalId, PrincipalKind};
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let staffer = PrincipalId::new(PrincipalKind::CampaignStaff, sample::ids::CS_A_STAFF);
    /// let ctx = Context::at("2020-03-01T12:00:00Z".parse()?).election(sample::ids::LEADER_2020);
    /// let party = sample::bundled();
    /// let directory = Directory::from_membership(&engine, &party)?;
    /// let member = party.member(sample::ids::MEMBER_ELIGIBLE).ok_or("no member")?;
    /// let req = MemberRequest { principal: &staffer, action: Action::Read, member, context: &ctx };
    /// let fields = engine.permitted_fields(&directory, &req)?;
    ///
    /// let record = DecisionRecord::for_fields("req-8", &engine, &req, fields)
    ///     .with_policies(["campaign-read-contact"]);
    /// assert_eq!(record.granted, ["name", "membership_number", "email", "phone", "address"]);
    /// assert!(record.refused.iter().any(|f| f == "political_views"));
    /// assert_eq!(record.granted.len() + record.refused.len(), engine.catalogue().len());
    /// assert_eq!(record.version, engine.version().as_str());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn for_fields(
        request_id: impl Into<String>,
        engine: &Engine,
        req: &MemberRequest<'_>,
        granted: FieldSet,
    ) -> DecisionRecord {
        let catalogue = engine.catalogue();
        let names = |set: FieldSet| -> Vec<String> {
            catalogue
                .names(set)
                .into_iter()
                .map(str::to_string)
                .collect()
        };
        DecisionRecord {
            at: req.context.now,
            recorded_at: Timestamp::now(),
            request_id: bounded(&request_id.into()),
            principal: bounded(&req.principal.to_string()),
            action: req.action.as_str().to_string(),
            member: bounded(req.member.id),
            granted: names(granted.intersection(catalogue.all())),
            refused: names(catalogue.all().difference(granted)),
            policies: Vec::new(),
            version: engine.version().as_str().to_string(),
            rejected: None,
        }
    }

    /// The record of a field-set answer with the policies that decided it
    /// ([`Engine::field_decisions`] and the like): as [`DecisionRecord::for_fields`]
    /// on [`FieldDecisions::granted`], with `policies` the ones that decided any field
    /// ([`FieldDecisions::all_policies`]).
    ///
    /// # Example
    /// ```
    /// use membergate::audit::DecisionRecord;
    /// use membergate::{sample, Action, Context, Directory, Engine, MemberRequest, PrincipalId, PrincipalKind};
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let party = sample::bundled();
    /// let directory = Directory::from_membership(&engine, &party)?;
    /// let staffer = PrincipalId::new(PrincipalKind::CampaignStaff, sample::ids::CS_A_STAFF);
    /// let ctx = Context::at("2020-03-01T12:00:00Z".parse()?).election(sample::ids::LEADER_2020);
    /// let member = party.member(sample::ids::MEMBER_ELIGIBLE).ok_or("no member")?;
    /// let req = MemberRequest { principal: &staffer, action: Action::Read, member, context: &ctx };
    /// let decisions = engine.field_decisions(&directory, &req)?;
    ///
    /// let record = DecisionRecord::for_field_decisions("req-10", &engine, &req, &decisions);
    /// assert_eq!(record.granted, engine.catalogue().names(decisions.granted()));
    /// assert_eq!(record.policies, decisions.all_policies().collect::<Vec<_>>());
    /// assert!(record.policies.iter().any(|p| p == "campaign-read-contact"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn for_field_decisions(
        request_id: impl Into<String>,
        engine: &Engine,
        req: &MemberRequest<'_>,
        decisions: &FieldDecisions<'_>,
    ) -> DecisionRecord {
        DecisionRecord::for_fields(request_id, engine, req, decisions.granted())
            .with_policies(decisions.all_policies())
    }

    /// The record of a request rejected before any policy decided: nothing granted or
    /// refused, no policies, and `why` in [`DecisionRecord::rejected`]. `principal`,
    /// `action` and `member` are what the request gave, as text (they may name nothing).
    ///
    /// # Example
    /// ```
    /// use membergate::audit::DecisionRecord;
    /// use membergate::Engine;
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let record = DecisionRecord::rejection("req-10", "2020-03-01T12:00:00Z".parse()?,
    ///     r#"Staff::"nobody""#, "read", "m-00001", "unknown principal", engine.version());
    /// assert_eq!(record.rejected.as_deref(), Some("unknown principal"));
    /// assert!(record.granted.is_empty() && record.refused.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rejection(
        request_id: impl Into<String>,
        at: Timestamp,
        principal: impl Into<String>,
        action: impl Into<String>,
        member: impl Into<String>,
        why: impl Into<String>,
        version: &PolicyVersion,
    ) -> DecisionRecord {
        DecisionRecord {
            at,
            recorded_at: Timestamp::now(),
            request_id: bounded(&request_id.into()),
            principal: bounded(&principal.into()),
            action: bounded(&action.into()),
            member: bounded(&member.into()),
            granted: Vec::new(),
            refused: Vec::new(),
            policies: Vec::new(),
            version: version.as_str().to_string(),
            rejected: Some(bounded(&why.into())),
        }
    }

    /// The record with these deciding policies.
    #[must_use]
    pub fn with_policies(
        mut self,
        policies: impl IntoIterator<Item = impl Into<String>>,
    ) -> DecisionRecord {
        self.policies = policies.into_iter().map(Into::into).collect();
        self
    }
}

/// Where decision records go. Implementations must be shareable between the threads
/// that serve requests.
///
/// A CRM that must not act on a decision it could not record checks the result of
/// [`DecisionSink::record`] before returning the data.
pub trait DecisionSink: Send + Sync {
    /// Records one decision.
    ///
    /// # Errors
    /// [`AuditError`] if the record could not be kept.
    ///
    /// # Example
    /// See [`JsonlSink`] and [`TracingSink`].
    fn record(&self, record: &DecisionRecord) -> Result<(), AuditError>;
}

/// The error of recording a decision ([`DecisionSink::record`]).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Appending the record failed (disk full, file read-only, I/O error). Nothing of it
    /// is left in the log and the chain continues from the previous record.
    #[error("cannot append a decision record to `{}`: {source}", path.display())]
    Write {
        /// The log file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// An earlier write failed part-way and the partial line could not be removed:
    /// nothing is appended until it can be (each record tries again).
    #[error("the decision log `{}` still ends with a partial record from a failed write and cannot be truncated: {source}", path.display())]
    Repair {
        /// The log file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The record was appended to the log, but the checkpoint it was due could not be:
    /// the log could not be `fsync`ed or the checkpoint file written
    /// ([`JsonlSink::with_checkpoints`]). The next record tries again.
    #[error("the decision record was appended, but its checkpoint was not: cannot write `{}`: {source}", path.display())]
    Checkpoint {
        /// The file that could not be written (the checkpoint file, or the log).
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The record could not be encoded as JSON.
    #[error("cannot encode the decision record: {0}")]
    Encode(#[from] serde_json::Error),
    /// Another sink's own failure.
    #[error("the decision sink failed: {0}")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A [`DecisionSink`] that emits each record as a `tracing` event at level `INFO`, target
/// `membergate::decision`, with one field per record field (the lists joined by
/// commas), for a CRM that ships its logs elsewhere. It never fails; whether the event
/// is kept is up to the subscriber.
///
/// # Example
/// ```
/// use membergate::audit::{DecisionRecord, DecisionSink, TracingSink};
/// use membergate::{sample, Action, Context, Directory, Engine, MemberRequest, PrincipalId, PrincipalKind};
///
/// let engine = Engine::from_dir("policies")?;
/// let staffer = PrincipalId::new(PrincipalKind::Staff, sample::ids::S_MEMBERSHIP);
/// let ctx = Context::at("2024-05-01T09:00:00Z".parse()?);
/// let party = sample::bundled();
/// let directory = Directory::from_membership(&engine, &party)?;
/// let member = party.member(sample::ids::MEMBER_ELIGIBLE).ok_or("no member")?;
/// let req = MemberRequest { principal: &staffer, action: Action::Read, member, context: &ctx };
/// let fields = engine.permitted_fields(&directory, &req)?;
/// let record = DecisionRecord::for_fields("req-9", &engine, &req, fields);
/// TracingSink.record(&record)?;   // an event for whichever subscriber is installed
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink;

impl DecisionSink for TracingSink {
    fn record(&self, r: &DecisionRecord) -> Result<(), AuditError> {
        tracing::info!(
            target: "membergate::decision",
            at = %r.at,
            recorded_at = %r.recorded_at,
            request_id = %r.request_id,
            principal = %r.principal,
            action = %r.action,
            member = %r.member,
            granted = %r.granted.join(","),
            refused = %r.refused.join(","),
            policies = %r.policies.join(","),
            version = %r.version,
            "decision"
        );
        Ok(())
    }
}
