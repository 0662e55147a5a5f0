#![doc = include_str!("../README.md")]
//!
//! # Concepts
//!
//! - [`Engine`]: a policy directory loaded, strictly validated and compiled; answers
//!   [`Engine::authorize`], [`Engine::permitted_fields`], [`Engine::field_decisions`]
//!   (and their page forms) and [`Engine::explain`]. [`Engine::reference`] answers the
//!   same questions with Cedar's own authorizer, the engine's oracle.
//! - [`Directory`]: the principal side of the party's records (staff, campaigns,
//!   elections, places, ...), kept between requests, updated one record at a time.
//! - [`Request`], [`MemberRequest`], [`PageRequest`] and [`Context`]: who asks to do
//!   which [`Action`] on which field of which member ([`MemberRef`]: the member's
//!   attributes, read by the CRM with its row), and when (the caller passes the time).
//! - [`Decision`], [`FieldSet`], [`FieldDecisions`] and [`Explanation`]: the answers.
//! - [`Plan`] ([`Engine::plan`]): which members a principal may see, field by field, as
//!   conditions on the members' attributes, for listing members through the database
//!   ([`plan::sql`] renders them, feature `sql`).
//! - [`Membership`]: a whole party in one value (data files, fixtures, the sample).
//! - [`ReloadableEngine`]: a policy directory swapped in atomically while requests are
//!   served; each request decides on one version ([`Engine::version`]).
//! - [`audit`]: the decision log, a hash-chained JSON-lines file of each answer acted on,
//!   with `verify` and `query`.
//! - [`meter`]: the read-volume meter that gives [`Context::reads_this_hour()`] (rule 9),
//!   in-process ([`meter::LocalMeter`]) or shared through Redis (feature `redis`).
//! - [`processing`]: the record of processing (UK GDPR Article 30), derived from the
//!   policies, the catalogue and the data, with the facts they cannot know.
//! - [`testing`]: the declarative policy test suites; [`sample`]: a generated membership.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

#[cfg(feature = "assurance")]
pub mod assurance;
pub mod audit;
mod bundle;
mod decision;
mod directory;
mod engine;
mod entities;
mod error;
mod explain;
mod fields;
mod html;
mod index;
pub mod meter;
pub mod plan;
pub mod processing;
mod records;
mod reload;
mod request;
pub mod review;
#[cfg(feature = "sample")]
pub mod sample;
pub mod testing;

pub use bundle::{PolicySource, PolicyVersion, CATALOGUE_FILE, SCHEMA_FILE};
pub use decision::{Decision, Effect, FieldDecisions, PolicyError};
pub use directory::{Directory, DirectoryRecord};
pub use engine::{Engine, Reference};
pub use error::{LoadError, Problem, ProblemKind, RecordError, RequestError};
pub use explain::{Explanation, Outcome, PolicyTrace};
pub use fields::{FieldCatalogue, FieldId, FieldInfo, FieldSet, MAX_FIELDS};
pub use plan::Plan;
pub use records::*;
#[cfg(feature = "assurance")]
pub use reload::CheckFailure;
pub use reload::{
    ReloadCheck, ReloadError, ReloadOutcome, ReloadStartError, ReloadableEngine, Serving,
};
pub use request::{
    Action, Context, MemberRequest, PageRequest, ParseActionError, Request, REASON_CHARS,
};
