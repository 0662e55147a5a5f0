//! Reviewing a policy change as the people who sign it off read it: what each kind of
//! principal may read of members, class of field by class of field, across the phases of
//! the elections in the data, before and after the change; each cell the change altered
//! explained by a member of the data and the policies that decided for that member.
//!
//! [`who_sees_what`] plans each principal's reads ([`Engine::plan`]) under both versions of
//! the policies, so a cell says what the principal may read of *every* member, not of a
//! sample: everyone, some members, or nobody.
//!
//! With the feature `assurance`, `review` makes the whole review (`Review`): that matrix,
//! then what changed for every possible request (the solver's differences, each with an
//! example from the data or with plausible values), each version's invariants and tests,
//! and the record of processing under the new version ([`crate::processing`]).

mod asking;
#[cfg(feature = "assurance")]
mod examples;
mod html;
pub(crate) mod stated;

#[cfg(feature = "assurance")]
mod report;

#[cfg(feature = "assurance")]
pub use examples::{data_examples, DataExample, Ended};
#[cfg(feature = "assurance")]
pub use report::{
    review, Change, Changes, Example, InvariantVerdict, Review, SuiteOutcome, TestOutcome, Versions,
};

use std::fmt;

use jiff::{SignedDuration, Timestamp};

use self::asking::Asking;
use crate::plan::{FieldPlan, Plan};
use crate::records::{CallSession, Member, MemberStatus, Membership, PrincipalKind};
use crate::request::{Action, Context};
use crate::{Directory, Engine, MemberRef, PrincipalId, RecordError, RequestError};

/// A moment a review looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    /// What a reader sees: `leader-2020: during the contest`.
    pub label: String,
    /// Which moment of an election's or a principal's life it is.
    pub kind: PhaseKind,
    /// When.
    pub at: Timestamp,
    /// The election a campaign asks about, if any.
    pub election: Option<String>,
    /// The call session asked in, if any.
    pub session: Option<String>,
}

/// The moments of a review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseKind {
    /// A day before an election's nominations close.
    BeforeNominationsClose,
    /// Halfway between the close of nominations and the close of the ballot.
    Contest,
    /// A day after the ballot closed.
    AfterBallot,
    /// During the last election's contest, a day after the principal's role ended.
    RoleEnded,
    /// During the last election's contest, a day after a processor's contract ended.
    ContractEnded,
    /// During the last election's contest, what the principal reads of a member who left
    /// two years and a day before: a member of the data it may read then (under either
    /// version), taken as former, out of good standing, and gone since then (the
    /// witness names that member's id).
    LeftTwoYearsAgo,
    /// Halfway through a call session of the data (the last to open whose volunteer's
    /// role has not ended), asked in that session: only its volunteer is asked.
    CallSession,
}

/// What a principal may read of a class of fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reach {
    /// Of no member.
    Nobody,
    /// Of some members (a condition on them), or of every member some fields of the class.
    Some,
    /// Every field of the class, of every member.
    Everyone,
    /// The moment does not apply to this principal (a contract's end to staff).
    NotApplicable,
}

impl Reach {
    /// A word for the cell.
    pub fn as_str(self) -> &'static str {
        match self {
            Reach::Nobody => "none",
            Reach::Some => "some",
            Reach::Everyone => "all",
            Reach::NotApplicable => "n/a",
        }
    }
}

impl Reach {
    /// The reach of a class from its fields', each `(read of every member, read of
    /// none)`: every field of every member, everyone; no member of any, nobody; else some.
    pub(crate) fn of_fields(fields: impl IntoIterator<Item = (bool, bool)>) -> Reach {
        let (mut all, mut none) = (true, true);
        for (every, no) in fields {
            all &= every;
            none &= no;
        }
        match (all, none) {
            (_, true) => Reach::Nobody,
            (true, false) => Reach::Everyone,
            _ => Reach::Some,
        }
    }

    /// The reach of one field's plan.
    pub(crate) fn of_plan(plan: &FieldPlan) -> Reach {
        Reach::of_fields([(*plan == FieldPlan::Always, *plan == FieldPlan::Never)])
    }
}

impl fmt::Display for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One cell: a principal, a moment, a class of fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// Under the old policies.
    pub before: Reach,
    /// Under the new policies.
    pub after: Reach,
    /// Whether some member of the data is decided differently by the two versions
    /// (then [`Cell::witness`] names one) or the plans differ on this class.
    pub changed: bool,
    /// A member of the data on whom the two versions decide a field of the class
    /// differently, with the policies that decided.
    pub witness: Option<Witness>,
}

/// A member on whom the two versions decide differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    /// The member's id (from the data).
    pub member: String,
    /// The field decided differently.
    pub field: String,
    /// Whether the old policies allow it, and the policies that decided.
    pub before: (bool, Vec<String>),
    /// Whether the new policies allow it, and the policies that decided.
    pub after: (bool, Vec<String>),
    /// What the principal stated beyond the moment (`purpose complaint`, `a break-glass
    /// reason`), if anything.
    pub asked_with: Option<String>,
}

/// A kind of principal, by one principal of the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// `campaign staff (cs-a-staff)`.
    pub label: String,
    /// The principal asking.
    pub principal: PrincipalId,
    /// Per phase (as [`WhoSeesWhat::phases`]), per class (as [`WhoSeesWhat::classes`]).
    pub cells: Vec<Vec<Cell>>,
}

/// Who sees what, when, before and after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoSeesWhat {
    /// The classes of fields, in catalogue order.
    pub classes: Vec<String>,
    /// The moments.
    pub phases: Vec<Phase>,
    /// The kinds of principal.
    pub rows: Vec<Row>,
}

impl WhoSeesWhat {
    /// The review as one self-contained HTML page titled `title`: the matrix per moment
    /// (changed cells outlined and their old and new reach), a picture (SVG) of the
    /// elections' phases per kind of principal, and each changed cell explained. No
    /// script, no network: it reads the same opened from a file or an attachment.
    ///
    /// ```
    /// use membergate::{review, sample, Engine};
    ///
    /// let engine = Engine::from_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/policies"))?;
    /// let html = review::who_sees_what(&engine, &engine, &sample::bundled())?.to_html("No change");
    /// assert!(html.starts_with("<!DOCTYPE html>") && !html.contains("<script"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_html(&self, title: &str) -> String {
        html::page(title, self)
    }

    /// The cells the change altered: row, phase and class.
    pub fn changed(&self) -> impl Iterator<Item = (&Row, &Phase, &str, &Cell)> {
        self.rows.iter().flat_map(move |row| {
            row.cells
                .iter()
                .zip(&self.phases)
                .flat_map(move |(cells, phase)| {
                    cells
                        .iter()
                        .zip(&self.classes)
                        .filter(|(c, _)| c.changed)
                        .map(move |(c, class)| (row, phase, class.as_str(), c))
                })
        })
    }
}

/// Why a review could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The data's records do not fit one version of the policies.
    #[error("the records do not fit the {which} policies: {source}")]
    Records {
        /// `old` or `new`.
        which: &'static str,
        /// What did not fit.
        source: RecordError,
    },
    /// A plan or a decision was refused.
    #[error("{0}")]
    Request(#[from] RequestError),
    /// A version's policy directory did not load.
    #[error("the {which} policies do not load: {source}")]
    Load {
        /// `old` or `new`.
        which: &'static str,
        /// Why.
        source: Box<crate::LoadError>,
    },
    /// The data has no election to take the moments from.
    #[error("the data has no election: a review's moments are an election's")]
    NoElection,
}

const DAY: SignedDuration = SignedDuration::from_hours(24);
/// How long after leaving a member's record is kept whole (the policies' retention).
pub(crate) const TWO_YEARS: SignedDuration = SignedDuration::from_hours(730 * 24);

/// What each kind of principal of `party` may read, class by class, across the phases of
/// its elections, under `old` and under `new` policies.
///
/// ```
/// use membergate::{review, sample, Engine};
///
/// let policies = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
/// let engine = Engine::from_dir(policies)?;
/// let party = sample::bundled();
/// let matrix = review::who_sees_what(&engine, &engine, &party)?;
/// assert_eq!(matrix.changed().count(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn who_sees_what(
    old: &Engine,
    new: &Engine,
    party: &Membership,
) -> Result<WhoSeesWhat, ReviewError> {
    let mut classes: Vec<String> = Vec::new();
    for (_, info) in new.catalogue().iter() {
        if !classes.contains(&info.class) {
            classes.push(info.class.clone());
        }
    }
    let phases = phases(party)?;
    // Copied per principal and moment below: no member with it.
    let principal_side = party.principal_side();
    let directories = |records: &Membership| -> Result<(Directory, Directory), ReviewError> {
        Ok((
            Directory::from_membership(old, records).map_err(|source| ReviewError::Records {
                which: "old",
                source,
            })?,
            Directory::from_membership(new, records).map_err(|source| ReviewError::Records {
                which: "new",
                source,
            })?,
        ))
    };
    let now = directories(&principal_side)?;
    // The purposes either version names: a change may add one.
    let mut purposes = stated::policy_purposes(old);
    purposes.extend(stated::policy_purposes(new));
    purposes.sort();
    purposes.dedup();
    let mut rows = Vec::new();
    let last = phases
        .iter()
        .rev()
        .find(|p| p.kind == PhaseKind::Contest)
        .and_then(|p| p.election.as_deref());
    let session = phases.iter().find_map(|p| p.session.as_deref());
    for (label, principal) in askers(party, last, session) {
        let mut cells = Vec::with_capacity(phases.len());
        for phase in &phases {
            let ctx = phase_context(phase);
            let ended = match phase.kind {
                PhaseKind::RoleEnded => Some(ended(&principal_side, &principal, phase.at, false)),
                PhaseKind::ContractEnded => {
                    if principal.kind == PrincipalKind::Processor {
                        Some(ended(&principal_side, &principal, phase.at, true))
                    } else {
                        cells.push(vec![not_applicable(); classes.len()]);
                        continue;
                    }
                }
                PhaseKind::CallSession if !assigned(party, phase, &principal) => {
                    cells.push(vec![not_applicable(); classes.len()]);
                    continue;
                }
                _ => None,
            };
            let owned = ended.map(|records| directories(&records)).transpose()?;
            let (old_dir, new_dir) = owned.as_ref().unwrap_or(&now);
            // Asked with nothing stated, with each purpose, with a break-glass reason.
            let asked = stated::stated(ctx, &purposes);
            let ways: Vec<Way<'_>> = asked
                .iter()
                .map(|s| {
                    let asking = Asking {
                        old: (old, old_dir),
                        new: (new, new_dir),
                        principal: &principal,
                        action: Action::Read,
                        ctx: &s.ctx,
                    };
                    let plans = asking.plans()?;
                    Ok(Way {
                        asking,
                        with: s.with.as_deref(),
                        plans,
                    })
                })
                .collect::<Result<_, ReviewError>>()?;
            let row: Vec<Cell> = if phase.kind == PhaseKind::LeftTwoYearsAgo {
                let plans: Vec<&Plan> =
                    ways.iter().flat_map(|w| [&w.plans.0, &w.plans.1]).collect();
                let leaver = leaver(party, &plans, phase.at);
                classes
                    .iter()
                    .map(|class| leaver_cell(&ways, new, class, leaver.as_ref()))
                    .collect::<Result<_, _>>()?
            } else {
                classes
                    .iter()
                    .map(|class| cell(&ways, new, party, class))
                    .collect::<Result<_, _>>()?
            };
            cells.push(row);
        }
        rows.push(Row {
            label,
            principal,
            cells,
        });
    }
    Ok(WhoSeesWhat {
        classes,
        phases,
        rows,
    })
}

/// Whether `principal` is the volunteer of `phase`'s call session.
fn assigned(party: &Membership, phase: &Phase, principal: &PrincipalId) -> bool {
    let session = phase
        .session
        .as_ref()
        .and_then(|s| party.call_sessions.get(s));
    principal.kind == PrincipalKind::Volunteer
        && session.is_some_and(|s| s.volunteer == principal.id)
}

fn not_applicable() -> Cell {
    Cell {
        before: Reach::NotApplicable,
        after: Reach::NotApplicable,
        changed: false,
        witness: None,
    }
}

/// The moments: each election's (in order of its close of nominations), then, during the
/// last one's contest, a role ended, a contract ended, a member two years gone.
pub(crate) fn phases(party: &Membership) -> Result<Vec<Phase>, ReviewError> {
    let mut elections: Vec<_> = party.elections.iter().collect();
    elections.sort_by_key(|(id, e)| (e.nominations_close, *id));
    let mut out = Vec::new();
    for (id, e) in &elections {
        // A moment past the limits of time is left out (never an overflow).
        let half = e.ballot_close.duration_since(e.nominations_close) / 2;
        let contest = shift(e.nominations_close, half);
        for (kind, at, what) in [
            (
                PhaseKind::BeforeNominationsClose,
                shift(e.nominations_close, -DAY),
                "before nominations close",
            ),
            (PhaseKind::Contest, contest, "during the contest"),
            (
                PhaseKind::AfterBallot,
                shift(e.ballot_close, DAY),
                "after the ballot",
            ),
        ] {
            let Some(at) = at else { continue };
            out.push(Phase {
                label: format!("{id}: {what}"),
                kind,
                at,
                election: Some(id.to_string()),
                session: None,
            });
        }
    }
    let last = out
        .iter()
        .rev()
        .find(|p| p.kind == PhaseKind::Contest)
        .cloned()
        .ok_or(ReviewError::NoElection)?;
    for (kind, what) in [
        (PhaseKind::RoleEnded, "a day after the role ended"),
        (PhaseKind::ContractEnded, "a day after the contract ended"),
        (
            PhaseKind::LeftTwoYearsAgo,
            "a member who left two years ago",
        ),
    ] {
        out.push(Phase {
            label: format!("{what} ({})", last.label),
            kind,
            ..last.clone()
        });
    }
    out.extend(session_phase(party));
    Ok(out)
}

/// Halfway through the last call session to open whose volunteer's role has not ended.
fn session_phase(party: &Membership) -> Option<Phase> {
    let active = |s: &&CallSession| {
        party
            .volunteers
            .get(&s.volunteer)
            .is_some_and(|v| v.ended_at.is_none())
    };
    let (id, s) = party
        .call_sessions
        .iter()
        .filter(|(_, s)| active(s))
        .max_by_key(|(id, s)| (s.opens, *id))?;
    let ctx = session_context(party, id, s)?;
    Some(Phase {
        label: format!("during call session {id} ({}'s)", s.volunteer),
        kind: PhaseKind::CallSession,
        at: ctx.now,
        election: ctx.election,
        session: ctx.session,
    })
}

/// Halfway through each call session assigned to `principal` (none unless a volunteer),
/// asked in it (see [`session_context`]).
pub(crate) fn assigned_sessions<'a>(
    party: &'a Membership,
    principal: &'a PrincipalId,
) -> impl Iterator<Item = Context> + 'a {
    party
        .call_sessions
        .iter()
        .filter(move |(_, s)| {
            principal.kind == PrincipalKind::Volunteer && s.volunteer == principal.id
        })
        .filter_map(move |(id, s)| session_context(party, id, s))
}

/// Halfway through call session `id`, asked in it (a campaign's session, about its
/// campaign's election); `None` past the limits of time.
pub(crate) fn session_context(party: &Membership, id: &str, s: &CallSession) -> Option<Context> {
    let at = shift(s.opens, s.closes.duration_since(s.opens) / 2)?;
    let mut ctx = Context::at(at).session(id);
    ctx.election = s
        .campaign
        .as_ref()
        .and_then(|c| party.campaigns.get(c))
        .map(|c| c.election.clone());
    Some(ctx)
}

/// `t + d`, if within the limits of time.
pub(crate) fn shift(t: Timestamp, d: SignedDuration) -> Option<Timestamp> {
    t.checked_add(d).ok()
}

pub(crate) fn phase_context(phase: &Phase) -> Context {
    let mut ctx = Context::at(phase.at);
    ctx.election = phase.election.clone();
    ctx.session = phase.session.clone();
    ctx
}

/// The principals a review asks for, each the first by id whose role has not ended: one
/// per staff team, one per campaign (the last election's first: a campaign's candidate,
/// nominated or not, fee paid or not, is what its staff's reach turns on), one per
/// processor (each has its own contract), one of each other kind (a volunteer: the one
/// of the review's call session).
pub(crate) fn askers(
    party: &Membership,
    last_election: Option<&str>,
    session: Option<&str>,
) -> Vec<(String, PrincipalId)> {
    let mut out: Vec<(String, PrincipalId)> = Vec::new();
    let active = |p: &PrincipalId| party.principal(p).is_some_and(|r| r.ended_at().is_none());
    let campaign = |p: &PrincipalId| {
        party
            .campaign_staff
            .get(&p.id)
            .map(|s| s.campaign.clone())
            .unwrap_or_default()
    };
    // The last election's campaigns first.
    let elsewhere = |p: &PrincipalId| {
        let election = party
            .campaigns
            .get(&campaign(p))
            .map(|c| c.election.as_str());
        election != last_election
    };
    for kind in PrincipalKind::ALL {
        let mut ids: Vec<PrincipalId> = party
            .principal_ids()
            .filter(|p| p.kind == kind && active(p))
            .collect();
        let volunteer = session
            .and_then(|s| party.call_sessions.get(s))
            .map(|s| s.volunteer.as_str());
        ids.sort_by_key(|p| (elsewhere(p), Some(p.id.as_str()) != volunteer));
        let mut groups: Vec<String> = Vec::new();
        for p in ids {
            let group = match kind {
                PrincipalKind::Staff => party.staff.get(&p.id).and_then(|s| {
                    s.teams
                        .iter()
                        .map(|t| t.as_str().to_string())
                        .find(|t| !groups.contains(t))
                }),
                PrincipalKind::CampaignStaff => Some(campaign(&p)),
                PrincipalKind::Processor => Some(p.id.clone()),
                _ => Some(String::new()),
            };
            let Some(group) = group.filter(|g| !groups.contains(g)) else {
                continue;
            };
            let label = match kind {
                PrincipalKind::Staff => format!("staff, {group} ({})", p.id),
                PrincipalKind::CampaignStaff => format!("campaign staff, {group} ({})", p.id),
                _ => format!("{} ({})", kind_label(kind), p.id),
            };
            groups.push(group);
            out.push((label, p));
        }
    }
    out
}

/// A kind of principal as a reader names it.
pub(crate) fn kind_label(kind: PrincipalKind) -> &'static str {
    match kind {
        PrincipalKind::Staff => "staff",
        PrincipalKind::CampaignStaff => "campaign staff",
        PrincipalKind::Volunteer => "volunteer",
        PrincipalKind::Officer => "CLP officer",
        PrincipalKind::Representative => "representative",
        PrincipalKind::Processor => "processor",
    }
}

/// `party`'s principal side with `principal`'s role (or, `contract`, its contract) ended
/// a day before `at`.
fn ended(party: &Membership, principal: &PrincipalId, at: Timestamp, contract: bool) -> Membership {
    let mut out = party.clone();
    // At the limits of time, ended at `at` itself (still ended by then).
    let end = Some(shift(at, -DAY).unwrap_or(at));
    let id = principal.id.as_str();
    match principal.kind {
        PrincipalKind::Staff => out.staff.get_mut(id).map(|r| r.ended_at = end),
        PrincipalKind::CampaignStaff => out.campaign_staff.get_mut(id).map(|r| r.ended_at = end),
        PrincipalKind::Volunteer => out.volunteers.get_mut(id).map(|r| r.ended_at = end),
        PrincipalKind::Officer => out.officers.get_mut(id).map(|r| r.ended_at = end),
        PrincipalKind::Representative => out.representatives.get_mut(id).map(|r| r.ended_at = end),
        PrincipalKind::Processor => out.processors.get_mut(id).map(|r| {
            if contract {
                r.contract.ends = shift(at, -DAY).unwrap_or(at);
            } else {
                r.ended_at = end;
            }
        }),
    };
    out
}

/// A member of the data the principal may read by one of `plans` (either version, any way
/// of asking) at `at`, made one who left two years and a day before (`None` if it may
/// read nobody).
pub(crate) fn leaver(
    party: &Membership,
    plans: &[&Plan],
    at: Timestamp,
) -> Option<(String, Member)> {
    let seen = |m: &MemberRef<'_>| {
        plans
            .iter()
            .any(|p| p.any_field().holds(m.id, m.attrs) != Some(false))
    };
    let m = party.member_refs().find(seen)?;
    let mut attrs = m.attrs.clone();
    attrs.status = MemberStatus::Former;
    attrs.in_good_standing = false;
    let left = shift(at, -(TWO_YEARS + DAY))?;
    let joined = shift(left, -DAY)?;
    attrs.left = Some(left);
    attrs.joined = attrs.joined.min(joined);
    Some((m.id.to_string(), attrs))
}

/// A principal asking in one stated context (see [`stated`]), and its plans under the
/// old and the new policies.
struct Way<'a> {
    asking: Asking<'a>,
    /// What it states beyond the moment (`None`: nothing).
    with: Option<&'a str>,
    plans: (Plan, Plan),
}

/// The cell of `class` from the plans of every way of asking: a field is read of every
/// member if some way reads it of every member, of none if no way reads it of any; with
/// a member of `party` decided differently (and the way asked) if there is one.
fn cell(
    ways: &[Way<'_>],
    catalogue: &Engine,
    party: &Membership,
    class: &str,
) -> Result<Cell, ReviewError> {
    let fields = fields_of(catalogue, class);
    let reach_of = |version: fn(&(Plan, Plan)) -> &Plan| {
        Reach::of_fields(fields.iter().map(|f| {
            let plans = ways
                .iter()
                .map(|w| version(&w.plans).field(f).unwrap_or(&FieldPlan::Never));
            let (mut always, mut never) = (false, true);
            for p in plans {
                always |= *p == FieldPlan::Always;
                never &= *p == FieldPlan::Never;
            }
            (always, never)
        }))
    };
    let differ = |w: &Way<'_>| {
        fields
            .iter()
            .any(|f| w.plans.0.field(f) != w.plans.1.field(f))
    };
    let mut changed = false;
    let mut witness = None;
    for w in ways.iter().filter(|w| differ(w)) {
        changed = true;
        let plans = (&w.plans.0, &w.plans.1);
        if let Some(found) = w.asking.apart(party.member_refs(), &fields, plans, None)? {
            witness = Some(Witness {
                asked_with: w.with.map(str::to_string),
                ..found
            });
            break;
        }
    }
    Ok(Cell {
        before: reach_of(|p| &p.0),
        after: reach_of(|p| &p.1),
        changed,
        witness,
    })
}

/// The cell of `class` for a member who left two years ago: a field is read if some way
/// of asking reads it.
fn leaver_cell(
    ways: &[Way<'_>],
    catalogue: &Engine,
    class: &str,
    leaver: Option<&(String, Member)>,
) -> Result<Cell, ReviewError> {
    let Some((id, attrs)) = leaver else {
        return Ok(Cell {
            before: Reach::Nobody,
            after: Reach::Nobody,
            changed: false,
            witness: None,
        });
    };
    let m = MemberRef { id, attrs };
    let fields = fields_of(catalogue, class);
    let mut seen = [Vec::new(), Vec::new()];
    let mut witness = None;
    for f in &fields {
        let (mut before, mut after) = (false, false);
        for w in ways {
            let decided = w.asking.decided(m, f)?;
            before |= decided.before.0;
            after |= decided.after.0;
            if witness.is_none() && decided.before.0 != decided.after.0 {
                witness = Some(Witness {
                    asked_with: w.with.map(str::to_string),
                    ..decided
                });
            }
        }
        seen[0].push(before);
        seen[1].push(after);
    }
    let reach = |allowed: &[bool]| Reach::of_fields(allowed.iter().map(|a| (*a, !*a)));
    Ok(Cell {
        before: reach(&seen[0]),
        after: reach(&seen[1]),
        changed: witness.is_some(),
        witness,
    })
}

/// A decision as a reader reads it: `allowed by p, q` or `denied by p` (each policy id
/// as `policy` writes it), or `denied (no policy permits it)`.
fn said(&(allowed, ref policies): &(bool, Vec<String>), policy: impl Fn(&str) -> String) -> String {
    let verdict = if allowed { "allowed" } else { "denied" };
    if policies.is_empty() {
        format!("{verdict} (no policy permits it)")
    } else {
        let ids: Vec<String> = policies.iter().map(|p| policy(p)).collect();
        format!("{verdict} by {}", ids.join(", "))
    }
}

fn fields_of(engine: &Engine, class: &str) -> Vec<String> {
    engine
        .catalogue()
        .iter()
        .filter(|(_, info)| info.class == class)
        .map(|(_, info)| info.name.clone())
        .collect()
}

impl fmt::Display for WhoSeesWhat {
    /// A table per moment (principal by class; `was -> is` where the change altered a
    /// cell, marked `*`), then each altered cell's member and deciding policies.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.rows.iter().map(|r| r.label.len()).max().unwrap_or(0);
        for (i, phase) in self.phases.iter().enumerate() {
            writeln!(f, "{}", phase.label)?;
            write!(f, "  {:width$}", "")?;
            for c in &self.classes {
                write!(f, " {c:>16}")?;
            }
            writeln!(f)?;
            for row in &self.rows {
                write!(f, "  {:width$}", row.label)?;
                for cell in row.cells.get(i).into_iter().flatten() {
                    let text = if cell.before == cell.after {
                        cell.after.to_string()
                    } else {
                        format!("{} -> {}", cell.before, cell.after)
                    };
                    let mark = if cell.changed { "*" } else { "" };
                    write!(f, " {:>16}", format!("{mark}{text}"))?;
                }
                writeln!(f)?;
            }
            writeln!(f)?;
        }
        let changed: Vec<_> = self.changed().collect();
        if changed.is_empty() {
            return writeln!(f, "no cell changed");
        }
        writeln!(f, "{} cells changed:", changed.len())?;
        for (row, phase, class, cell) in changed {
            write!(
                f,
                "* {}, {}, {class}: {} -> {}",
                row.label, phase.label, cell.before, cell.after
            )?;
            match &cell.witness {
                Some(w) => {
                    let said = |d: &(bool, Vec<String>)| said(d, str::to_string);
                    let with = w
                        .asked_with
                        .as_ref()
                        .map_or(String::new(), |s| format!(", asked with {s}"));
                    writeln!(
                        f,
                        "\n    e.g. {} of member {}{with}: before {}; after {}",
                        w.field,
                        w.member,
                        said(&w.before),
                        said(&w.after)
                    )?;
                }
                None => writeln!(
                    f,
                    "\n    (the condition changed; no member of the data is decided differently)"
                )?,
            }
        }
        Ok(())
    }
}
