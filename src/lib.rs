//! membergate: field-level access control for a party's membership data.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod bundle;
mod engine;
mod entities;
mod error;
mod explain;
mod fields;
mod model;
mod request;
pub mod sample;
pub mod testing;

pub use bundle::{PolicySource, CATALOGUE_FILE, SCHEMA_FILE};
pub use engine::{Decision, Effect, Engine, PolicyError};
pub use error::{LoadError, Problem, ProblemKind, RequestError};
pub use explain::{Explanation, Outcome, PolicyTrace};
pub use fields::{FieldCatalogue, FieldId, FieldInfo, FieldSet, MAX_FIELDS};
pub use model::*;
pub use request::{Action, Context, ParseActionError, Request};
