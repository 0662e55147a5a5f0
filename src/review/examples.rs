//! The differences `diff` finds, each with an example taken from the membership data: a
//! real principal, member and field, at a moment of the data's elections or of the
//! principal's own record, decided by both versions.

use jiff::Timestamp;

use super::{phase_context, phases, said, shift, DAY};
use crate::assurance::{Difference, Direction};
use crate::records::{Membership, PrincipalKind};
use crate::request::{Action, Context, Request};
use crate::{Directory, Engine, PrincipalId};

/// A request of the data on which the two versions decide differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataExample {
    /// Who asks.
    pub principal: PrincipalId,
    /// What they ask to do.
    pub action: Action,
    /// The member (an id of the data).
    pub member: String,
    /// The field (a catalogue name).
    pub field: String,
    /// When.
    pub at: Timestamp,
    /// The election asked about, if any.
    pub election: Option<String>,
    /// Whether the old policies allow it, and the policies that decided.
    pub before: (bool, Vec<String>),
    /// Whether the new policies allow it, and the policies that decided.
    pub after: (bool, Vec<String>),
}

impl std::fmt::Display for DataExample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} asks to {} the {} of member {} at {}",
            self.principal, self.action, self.field, self.member, self.at
        )?;
        if let Some(e) = &self.election {
            write!(f, " (election {e})")?;
        }
        write!(
            f,
            ": before, {}; after, {}",
            said(&self.before, str::to_string),
            said(&self.after, str::to_string)
        )
    }
}

/// For each of `differences`, an example from `party` that goes its way (allowed by the
/// new policies and denied by the old for a widening, the reverse for a narrowing), if
/// the data holds one: each principal of the request type's kind, at each phase of the
/// data's elections and a day after its own role or contract ended, planned under both
/// versions; where a field's plans differ, the first member they decide apart, confirmed
/// by both engines.
pub fn data_examples(
    old: &Engine,
    new: &Engine,
    party: &Membership,
    differences: &[Difference],
) -> Vec<Option<DataExample>> {
    let dirs = (
        Directory::from_membership(old, party),
        Directory::from_membership(new, party),
    );
    let (Ok(old_dir), Ok(new_dir)) = dirs else {
        return vec![None; differences.len()];
    };
    let moments = phases(party).unwrap_or_default();
    differences
        .iter()
        .map(|d| {
            let (kind, action) = request_type(&d.request_type)?;
            let widened = d.direction == Direction::Widened;
            party
                .principal_ids()
                .filter(|p| p.kind == kind)
                .find_map(|p| {
                    let own = own_moments(party, &p);
                    moments
                        .iter()
                        .map(phase_context)
                        .chain(own)
                        .find_map(|ctx| {
                            let asking = Asked {
                                old: (old, &old_dir),
                                new: (new, &new_dir),
                                principal: &p,
                                action,
                                ctx: &ctx,
                            };
                            asking.example(party, widened)
                        })
                })
        })
        .collect()
}

/// The principal kind and action of a request type `Kind · Action::"a" · Member`.
fn request_type(name: &str) -> Option<(PrincipalKind, Action)> {
    let mut parts = name.split(" · ");
    let principal = parts.next()?;
    let action = parts.next()?;
    let kind = PrincipalKind::ALL
        .into_iter()
        .find(|k| k.type_name() == principal)?;
    let action = action
        .strip_prefix("Action::\"")?
        .strip_suffix('"')?
        .parse()
        .ok()?;
    Some((kind, action))
}

/// A day after the principal's role ended, and (a processor) a day after its contract
/// ended.
fn own_moments(party: &Membership, p: &PrincipalId) -> Vec<Context> {
    let mut out = Vec::new();
    if let Some(end) = party.principal(p).and_then(|r| r.ended_at()) {
        out.extend(shift(end, DAY).map(Context::at));
    }
    if let Some(processor) = party
        .processors
        .get(&p.id)
        .filter(|_| p.kind == PrincipalKind::Processor)
    {
        out.extend(shift(processor.contract.ends, DAY).map(Context::at));
    }
    out
}

struct Asked<'a> {
    old: (&'a Engine, &'a Directory),
    new: (&'a Engine, &'a Directory),
    principal: &'a PrincipalId,
    action: Action,
    ctx: &'a Context,
}

impl Asked<'_> {
    /// A member and field of `party` the two versions decide apart, the new one allowing
    /// (`widened`) or denying.
    fn example(&self, party: &Membership, widened: bool) -> Option<DataExample> {
        let before = self
            .old
            .0
            .plan(self.old.1, self.principal, self.action, self.ctx)
            .ok()?;
        let after = self
            .new
            .0
            .plan(self.new.1, self.principal, self.action, self.ctx)
            .ok()?;
        let differing: Vec<&str> = after
            .fields()
            .filter(|(name, p)| before.field(name) != Some(*p))
            .map(|(name, _)| name)
            .collect();
        if differing.is_empty() {
            return None;
        }
        for m in party.member_refs() {
            for field in &differing {
                let was = before.field(field).and_then(|p| p.holds(m.id, m.attrs));
                let is = after.field(field).and_then(|p| p.holds(m.id, m.attrs));
                let possible = match (was, is) {
                    (Some(a), Some(b)) => a != widened && b == widened,
                    _ => true,
                };
                if !possible {
                    continue;
                }
                let req = Request {
                    principal: self.principal,
                    action: self.action,
                    member: m,
                    field,
                    context: self.ctx,
                };
                let decided = |(engine, dir): (&Engine, &Directory)| {
                    engine.authorize(dir, &req).ok().map(|d| {
                        (
                            d.is_allowed(),
                            d.policies()
                                .iter()
                                .map(|p| p.to_string())
                                .collect::<Vec<_>>(),
                        )
                    })
                };
                let (Some(b), Some(a)) = (decided(self.old), decided(self.new)) else {
                    continue;
                };
                if b.0 != widened && a.0 == widened {
                    return Some(DataExample {
                        principal: self.principal.clone(),
                        action: self.action,
                        member: m.id.to_string(),
                        field: field.to_string(),
                        at: self.ctx.now,
                        election: self.ctx.election.clone(),
                        before: b,
                        after: a,
                    });
                }
            }
        }
        None
    }
}
