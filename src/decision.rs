//! The answers: a [`Decision`] on one field, [`FieldDecisions`] on every field of a
//! member. Both borrow the ids of the policies that decided from the engine, so deciding
//! allocates nothing.

use smallvec::SmallVec;

use crate::fields::{FieldId, FieldSet};

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// The request is allowed.
    Allow,
    /// The request is denied.
    Deny,
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        })
    }
}

/// A policy whose evaluation failed for a request. As in Cedar, it is skipped: it
/// neither permits nor forbids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The policy's id.
    pub policy: String,
    /// What went wrong (Cedar's message).
    pub message: String,
}

/// The answer to one [`Request`](crate::Request): the effect and the policies that
/// decided it, borrowed from the [`Engine`](crate::Engine).
///
/// # Example
/// ```
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
/// assert!(!decision.is_allowed());
/// assert_eq!(decision.policies(), ["role-ended"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'e> {
    effect: Effect,
    policies: SmallVec<[&'e str; 4]>,
    errors: Vec<PolicyError>,
    flags: SmallVec<[&'e str; 1]>,
}

impl<'e> Decision<'e> {
    /// A decision; `policies` and `flags` are sorted here (`flags` deduplicated).
    pub(crate) fn new(
        effect: Effect,
        mut policies: SmallVec<[&'e str; 4]>,
        mut errors: Vec<PolicyError>,
        mut flags: SmallVec<[&'e str; 1]>,
    ) -> Decision<'e> {
        policies.sort_unstable();
        errors.sort_by(|a, b| a.policy.cmp(&b.policy));
        flags.sort_unstable();
        flags.dedup();
        Decision {
            effect,
            policies,
            errors,
            flags,
        }
    }

    /// Allow or deny.
    pub fn effect(&self) -> Effect {
        self.effect
    }

    /// Whether the request is allowed.
    pub fn is_allowed(&self) -> bool {
        self.effect == Effect::Allow
    }

    /// The ids of the determining policies, sorted: on allow, the permits that held; on
    /// deny, the forbids that held (none when nothing permitted: Cedar's default deny).
    pub fn policies(&self) -> &[&'e str] {
        &self.policies
    }

    /// The policies whose evaluation failed (and were skipped).
    pub fn errors(&self) -> &[PolicyError] {
        &self.errors
    }

    /// The `@flag("...")` annotations of the determining policies, sorted and
    /// deduplicated (e.g. `break_glass`): decisions a CRM must record for review.
    pub fn flags(&self) -> &[&'e str] {
        &self.flags
    }
}

/// The decisions on every catalogue field of one member, with the policies that decided
/// each, borrowed from the engine: [`Engine::field_decisions`](crate::Engine::field_decisions).
///
/// # Example
/// ```
/// use membergate::{sample, Action, Context, Directory, Engine, MemberRequest, PrincipalId, PrincipalKind};
///
/// let engine = Engine::from_dir("policies")?;
/// let party = sample::bundled();
/// let directory = Directory::from_membership(&engine, &party)?;
/// let resigned = PrincipalId::new(PrincipalKind::Representative, sample::ids::MP_RESIGNED);
/// let ctx = Context::at("2019-02-19T09:00:00Z".parse()?);
/// let member = party.member(sample::ids::MEMBER_OTHER_CLP).ok_or("no member")?;
/// let req = MemberRequest { principal: &resigned, action: Action::Read, member, context: &ctx };
/// let decisions = engine.field_decisions(&directory, &req)?;
/// let phone = engine.catalogue().id("phone").ok_or("no phone field")?;
/// assert!(!decisions.granted().contains(phone));
/// assert_eq!(decisions.policies(phone).collect::<Vec<_>>(), ["role-ended"]);
/// assert_eq!(decisions.granted(), engine.permitted_fields(&directory, &req)?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDecisions<'e> {
    granted: FieldSet,
    /// Each determining policy once, sorted by id, with the fields it decided.
    deciding: SmallVec<[(&'e str, u64); 8]>,
}

impl<'e> FieldDecisions<'e> {
    /// Sorts `deciding` by policy id and merges the fields of each policy.
    pub(crate) fn new(
        granted: FieldSet,
        deciding: impl IntoIterator<Item = (&'e str, u64)>,
    ) -> FieldDecisions<'e> {
        let mut deciding: SmallVec<[(&'e str, u64); 8]> = deciding.into_iter().collect();
        deciding.sort_unstable_by(|a, b| a.0.cmp(b.0));
        deciding.dedup_by(|next, kept| {
            let same = next.0 == kept.0;
            if same {
                kept.1 |= next.1;
            }
            same
        });
        FieldDecisions { granted, deciding }
    }

    /// The fields allowed: those [`Engine::permitted_fields`](crate::Engine::permitted_fields)
    /// gives.
    pub fn granted(&self) -> FieldSet {
        self.granted
    }

    /// The ids of the policies that decided `field`, sorted, as [`Decision::policies`]
    /// gives them for the field alone: the forbids that held if any did, else the
    /// permits that held (none when nothing permitted). None for a field not in the
    /// engine's catalogue.
    pub fn policies(&self, field: FieldId) -> impl Iterator<Item = &'e str> + '_ {
        let bit = FieldSet::EMPTY.with(field).bits();
        self.deciding
            .iter()
            .filter(move |(_, fields)| fields & bit != 0)
            .map(|(id, _)| *id)
    }

    /// The ids of the policies that decided any field, sorted and deduplicated: the
    /// union of [`FieldDecisions::policies`] over the catalogue, for a decision record
    /// ([`crate::audit::DecisionRecord::for_field_decisions`]).
    pub fn all_policies(&self) -> impl Iterator<Item = &'e str> + '_ {
        self.deciding.iter().map(|(id, _)| *id)
    }
}
