#![doc = include_str!("../README.md")]
//!
//! # Concepts
//!
//! - [`Engine`]: a policy directory loaded and strictly validated; answers
//!   [`Engine::authorize`], [`Engine::permitted_fields`], [`Engine::permitted_fields_page`]
//!   and [`Engine::explain`] (the reference path, on Cedar's authorizer).
//! - [`EntityStore`]: the membership converted once for the compiled path
//!   ([`Engine::store`], [`Engine::authorize_in`], [`Engine::permitted_fields_in`],
//!   [`Engine::permitted_fields_page_in`], [`Engine::field_decisions_in`]): the
//!   reference path's answers, much faster.
//! - [`Request`] and [`Context`]: who asks to do which [`Action`] on which field of which
//!   member, and when (the caller passes the time).
//! - [`Directory`] and [`Membership`]: the CRM's records, looked up by id; the engine
//!   converts only the records a request needs.
//! - [`Decision`], [`FieldSet`], [`FieldDecisions`] and [`Explanation`]: the answers.
//! - [`ReloadableEngine`]: a policy directory swapped in atomically while requests are
//!   served; each request decides on one version ([`Engine::version`]).
//! - [`audit`]: the decision log, a hash-chained JSON-lines file of each answer acted on,
//!   with `verify` and `query`.
//! - [`meter`]: the read-volume meter that gives [`Context::reads_this_hour()`] (rule 9),
//!   in-process ([`meter::LocalMeter`]) or shared through Redis (feature `redis`).
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

pub mod assurance;
pub mod audit;
mod bundle;
mod engine;
mod entities;
mod error;
mod explain;
mod fast;
mod fields;
pub mod meter;
mod model;
mod reload;
mod request;
pub mod sample;
pub mod testing;

pub use bundle::{PolicySource, PolicyVersion, CATALOGUE_FILE, SCHEMA_FILE};
pub use engine::{Decision, Effect, Engine, PolicyError};
pub use error::{LoadError, Problem, ProblemKind, RequestError};
pub use explain::{Explanation, Outcome, PolicyTrace};
pub use fast::{EntityStore, FieldDecisions};
pub use fields::{FieldCatalogue, FieldId, FieldInfo, FieldSet, MAX_FIELDS};
pub use model::*;
pub use reload::{
    CheckFailure, ReloadCheck, ReloadError, ReloadOutcome, ReloadStartError, ReloadableEngine,
};
pub use request::{Action, Context, ParseActionError, Request};
