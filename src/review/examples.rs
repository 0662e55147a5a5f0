//! The differences `diff` finds, each with an example taken from the membership data: a
//! real principal, member and field, at a moment of the data's elections, of a call
//! session or of the principal's own record, decided by both versions. Where the data
//! has none as it is, a principal of the data is taken as having left (or, a processor,
//! as past its contract), as the review's matrix does.

use std::collections::HashMap;

use jiff::Timestamp;

use super::asking::Asking;
use super::{ended, phase_context, phases, said, shift, Witness, DAY};
use crate::assurance::{Difference, Direction};
use crate::records::{Membership, PrincipalKind};
use crate::request::{Action, Context};
use crate::{Directory, Engine, PrincipalId};

/// A request of the data on which the two versions decide differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataExample {
    /// Who asks.
    pub principal: PrincipalId,
    /// What they ask to do.
    pub action: Action,
    /// When.
    pub at: Timestamp,
    /// The election asked about, if any.
    pub election: Option<String>,
    /// The call session asked in, if any.
    pub session: Option<String>,
    /// Set when the data's principal is taken as having left (its role, or a
    /// processor's contract, ended at this time), which the data does not say.
    pub taken_as_ended: Option<(Ended, Timestamp)>,
    /// The member, the field and both versions' decisions.
    pub witness: Witness,
}

/// What an example takes as ended that the data does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ended {
    /// The principal's role.
    Role,
    /// A processor's contract.
    Contract,
}

impl Ended {
    /// What a reader is told: ` (taken as having left at T)`.
    pub fn describe(self, at: Timestamp) -> String {
        match self {
            Ended::Role => format!(" (taken as having left at {at})"),
            Ended::Contract => format!(" (its contract taken as ended at {at})"),
        }
    }
}

impl std::fmt::Display for DataExample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.principal)?;
        if let Some((ended, at)) = self.taken_as_ended {
            f.write_str(&ended.describe(at))?;
        }
        let w = &self.witness;
        write!(
            f,
            " asks to {} the {} of member {} at {}",
            self.action, w.field, w.member, self.at
        )?;
        if let Some(e) = &self.election {
            write!(f, " (election {e})")?;
        }
        if let Some(s) = &self.session {
            write!(f, " (call session {s})")?;
        }
        write!(
            f,
            ": before, {}; after, {}",
            said(&w.before, str::to_string),
            said(&w.after, str::to_string)
        )
    }
}

/// For each of `differences`, an example from `party` that goes its way (allowed by the
/// new policies and denied by the old for a widening, the reverse for a narrowing), if
/// the data holds one: each principal of the request type's kind, at each phase of the
/// data's elections, in each of its call sessions and a day after its own role or
/// contract ended, planned under both versions; where a field's plans differ, the first
/// member they decide apart, confirmed by both engines. Failing that, the same with the
/// principal taken as having left a day before the first moment (a processor, also as
/// past its contract).
pub fn data_examples(
    old: &Engine,
    new: &Engine,
    party: &Membership,
    differences: &[Difference],
) -> Vec<Option<DataExample>> {
    let side = party.principal_side();
    let mut directories = Directories {
        old,
        new,
        side: &side,
        built: HashMap::new(),
    };
    let moments: Vec<Context> = phases(party)
        .unwrap_or_default()
        .iter()
        .map(phase_context)
        .collect();
    let Some(first) = moments.iter().map(|c| c.now).min() else {
        return vec![None; differences.len()];
    };
    // A day before the first moment, so every moment comes after it.
    let end = shift(first, -DAY).unwrap_or(first);
    differences
        .iter()
        .map(|d| {
            let (kind, action) = request_type(&d.request_type)?;
            let wanted = d.direction == Direction::Widened;
            let principals: Vec<PrincipalId> =
                party.principal_ids().filter(|p| p.kind == kind).collect();
            let variants = [None, Some(Ended::Role), Some(Ended::Contract)];
            variants.into_iter().find_map(|variant| {
                if variant == Some(Ended::Contract) && kind != PrincipalKind::Processor {
                    return None;
                }
                principals.iter().find_map(|p| {
                    let (old_dir, new_dir) = directories.get(p, variant, end)?;
                    let own = match variant {
                        None => own_moments(party, p),
                        Some(_) => Vec::new(),
                    };
                    moments.iter().chain(&own).find_map(|ctx| {
                        let asking = Asking {
                            old: (old, old_dir),
                            new: (new, new_dir),
                            principal: p,
                            action,
                            ctx,
                        };
                        let plans = asking.plans().ok()?;
                        let differing: Vec<&str> = plans
                            .1
                            .fields()
                            .filter(|(name, plan)| plans.0.field(name) != Some(*plan))
                            .map(|(name, _)| name)
                            .collect();
                        if differing.is_empty() {
                            return None;
                        }
                        let members = party.member_refs();
                        let witness = asking
                            .apart(members, &differing, (&plans.0, &plans.1), Some(wanted))
                            .ok()??;
                        Some(DataExample {
                            principal: p.clone(),
                            action,
                            at: ctx.now,
                            election: ctx.election.clone(),
                            session: ctx.session.clone(),
                            taken_as_ended: variant.map(|v| (v, end)),
                            witness,
                        })
                    })
                })
            })
        })
        .collect()
}

/// The directories of the data's principal side under both versions, as it is or with
/// one principal's role or contract ended, built once each.
struct Directories<'a> {
    old: &'a Engine,
    new: &'a Engine,
    side: &'a Membership,
    /// `None`: as it is; else the principal whose role or contract ended.
    built: HashMap<Option<(PrincipalId, Ended)>, Option<Pair>>,
}

/// A directory under the old policies and one under the new.
type Pair = (Directory, Directory);

impl Directories<'_> {
    /// As it is (`variant` `None`, one pair for every principal), or with `p`'s role or
    /// contract ended at `end`; `None` if the records do not fit a version.
    fn get(&mut self, p: &PrincipalId, variant: Option<Ended>, end: Timestamp) -> Option<&Pair> {
        let key = variant.map(|v| (p.clone(), v));
        let (old, new, side) = (self.old, self.new, self.side);
        self.built
            .entry(key)
            .or_insert_with(|| {
                let ended_side;
                let records = match variant {
                    None => side,
                    Some(v) => {
                        // `ended` ends it a day before the time it is given.
                        let at = shift(end, DAY).unwrap_or(end);
                        ended_side = ended(side, p, at, v == Ended::Contract);
                        &ended_side
                    }
                };
                let old_dir = Directory::from_membership(old, records).ok()?;
                let new_dir = Directory::from_membership(new, records).ok()?;
                Some((old_dir, new_dir))
            })
            .as_ref()
    }
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

/// A day after the principal's role ended, (a processor) a day after its contract
/// ended, and (a volunteer) halfway through each of its call sessions.
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
    out.extend(super::assigned_sessions(party, p));
    out
}
