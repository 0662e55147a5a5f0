//! Plans: which members a principal may see, as conditions on the members' own
//! attributes, for a CRM to list members through its database instead of deciding
//! each row.
//!
//! [`Engine::plan`](crate::Engine::plan) folds in everything known before a member is
//! read (the principal's records, the action, the time, the election, the call
//! session, the reads this hour) and gives, for each catalogue field and for "any
//! field", a [`FieldPlan`]: every member, no member, or a [`Condition`] on the member's
//! status, CLP, dates, standing, consents and opt-outs. On every member that passes the
//! engine's check, a plan allows exactly what the engine's per-member decisions allow,
//! errors included (a permit whose condition errors on a member grants nothing, a forbid
//! whose condition errors forbids nothing).
//!
//! What the planner cannot express is never widened or dropped: it becomes an
//! [`Atom::PerMember`] part, and [`Condition::bound`] gives the members on which the
//! plan certainly holds and those on which it may, the caller deciding the rows between
//! one by one. With the feature `sql`, [`sql`] renders plans as SQL conditions.

mod condition;
#[cfg(feature = "sql")]
pub mod sql;

use std::fmt;
use std::sync::Arc;

pub use condition::{Atom, Comparison, Condition, FieldPlan};

use crate::records::Member;
use crate::request::Action;
use crate::FieldSet;

/// The members a principal may see, field by field: see the [module](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub(crate) action: Action,
    /// The catalogue's field names, in catalogue order.
    pub(crate) names: Arc<[String]>,
    /// The distinct plans of the fields (fields often share one).
    pub(crate) distinct: Vec<FieldPlan>,
    /// Per catalogue field, its plan's place in `distinct`.
    pub(crate) slots: Vec<usize>,
    /// At least one field.
    pub(crate) any: FieldPlan,
}

impl Plan {
    /// The action planned.
    pub fn action(&self) -> Action {
        self.action
    }

    /// The plan of the catalogue field `name`.
    pub fn field(&self, name: &str) -> Option<&FieldPlan> {
        self.fields().find(|(n, _)| *n == name).map(|(_, p)| p)
    }

    /// Each catalogue field's name and plan, in catalogue order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &FieldPlan)> {
        self.names
            .iter()
            .zip(&self.slots)
            .filter_map(|(n, slot)| self.distinct.get(*slot).map(|p| (n.as_str(), p)))
    }

    /// The members on which at least one field is allowed: the members a listing shows.
    pub fn any_field(&self) -> &FieldPlan {
        &self.any
    }

    /// Whether every member is decided by the plan alone (no [`Atom::PerMember`] part).
    pub fn is_exact(&self) -> bool {
        !self.any.per_member() && self.distinct.iter().all(|p| !p.per_member())
    }

    /// The fields allowed on the member `id`, as the engine's
    /// [`permitted_fields`](crate::Engine::permitted_fields) gives them: `None` if a
    /// field needs a decision on the member.
    pub fn permitted_fields(&self, id: &str, member: &Member) -> Option<FieldSet> {
        let answers: Vec<Option<bool>> =
            self.distinct.iter().map(|p| p.holds(id, member)).collect();
        let mut bits = 0u64;
        for (i, slot) in self.slots.iter().enumerate() {
            if (*answers.get(*slot)?)? {
                bits |= 1u64.checked_shl(u32::try_from(i).ok()?)?;
            }
        }
        Some(FieldSet::from_bits(bits))
    }
}

impl fmt::Display for Plan {
    /// One line per field, then the listing's: `name: condition`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, p) in self.fields() {
            writeln!(f, "{name}: {p}")?;
        }
        write!(f, "any field: {}", self.any)
    }
}
