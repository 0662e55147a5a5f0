//! Each kind of record as the schema's entity: its type, its attributes and its parents,
//! described once ([`Record::describe`]), and the checks every record passes before
//! either decision path sees it ([`check_member`], and the references a
//! [`Directory`](crate::Directory) checks on each upsert).
//!
//! Two writers read the descriptions: [`CedarSlice`] here (Cedar entities, for the
//! reference authorizer) and the compiled store's writer in [`crate::directory`].

use std::collections::{HashMap, HashSet};

use cedar_policy::{EntityUid, RestrictedExpression};
use jiff::Timestamp;

use crate::bundle::entity_uid;
use crate::error::RequestError;
use crate::records::{
    CallSession, Campaign, Candidate, Channel, Clp, Election, Member, MemberStatus, PrincipalRecord,
};

/// An attribute of an entity or of the request context, by the name the schema gives
/// it: the one place those names are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attr {
    NominationsClose,
    FreezeDate,
    BallotClose,
    ValidlyNominated,
    FeePaid,
    DataAgreementSigned,
    Election,
    Candidate,
    EndedAt,
    Region,
    Campaign,
    Role,
    Clp,
    Contract,
    HourlyReadLimit,
    Fields,
    Statuses,
    Starts,
    Ends,
    Volunteer,
    Members,
    Opens,
    Closes,
    Office,
    Status,
    Joined,
    Left,
    InGoodStanding,
    Consents,
    OptOuts,
    // The request context's attributes.
    Now,
    Field,
    ReadsThisHour,
    Session,
    Purpose,
    Reason,
}

impl Attr {
    /// Every attribute, in declaration order (`Attr as usize` indexes it).
    pub(crate) const ALL: [Attr; 36] = [
        Attr::NominationsClose,
        Attr::FreezeDate,
        Attr::BallotClose,
        Attr::ValidlyNominated,
        Attr::FeePaid,
        Attr::DataAgreementSigned,
        Attr::Election,
        Attr::Candidate,
        Attr::EndedAt,
        Attr::Region,
        Attr::Campaign,
        Attr::Role,
        Attr::Clp,
        Attr::Contract,
        Attr::HourlyReadLimit,
        Attr::Fields,
        Attr::Statuses,
        Attr::Starts,
        Attr::Ends,
        Attr::Volunteer,
        Attr::Members,
        Attr::Opens,
        Attr::Closes,
        Attr::Office,
        Attr::Status,
        Attr::Joined,
        Attr::Left,
        Attr::InGoodStanding,
        Attr::Consents,
        Attr::OptOuts,
        Attr::Now,
        Attr::Field,
        Attr::ReadsThisHour,
        Attr::Session,
        Attr::Purpose,
        Attr::Reason,
    ];

    /// The attribute's name in the schema.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Attr::NominationsClose => "nominations_close",
            Attr::FreezeDate => "freeze_date",
            Attr::BallotClose => "ballot_close",
            Attr::ValidlyNominated => "validly_nominated",
            Attr::FeePaid => "fee_paid",
            Attr::DataAgreementSigned => "data_agreement_signed",
            Attr::Election => "election",
            Attr::Candidate => "candidate",
            Attr::EndedAt => "ended_at",
            Attr::Region => "region",
            Attr::Campaign => "campaign",
            Attr::Role => "role",
            Attr::Clp => "clp",
            Attr::Contract => "contract",
            Attr::HourlyReadLimit => "hourly_read_limit",
            Attr::Fields => "fields",
            Attr::Statuses => "statuses",
            Attr::Starts => "starts",
            Attr::Ends => "ends",
            Attr::Volunteer => "volunteer",
            Attr::Members => "members",
            Attr::Opens => "opens",
            Attr::Closes => "closes",
            Attr::Office => "office",
            Attr::Status => "status",
            Attr::Joined => "joined",
            Attr::Left => "left",
            Attr::InGoodStanding => "in_good_standing",
            Attr::Consents => "consents",
            Attr::OptOuts => "opt_outs",
            Attr::Now => "now",
            Attr::Field => "field",
            Attr::ReadsThisHour => "reads_this_hour",
            Attr::Session => "session",
            Attr::Purpose => "purpose",
            Attr::Reason => "reason",
        }
    }
}

/// Entity type names of the schema.
pub(crate) mod ty {
    pub(crate) const REGION: &str = "Region";
    pub(crate) const CLP: &str = "Clp";
    pub(crate) const FIELD: &str = "Field";
    pub(crate) const ELECTION: &str = "Election";
    pub(crate) const CANDIDATE: &str = "Candidate";
    pub(crate) const CAMPAIGN: &str = "Campaign";
    pub(crate) const TEAM: &str = "Team";
    pub(crate) const VOLUNTEER: &str = "Volunteer";
    pub(crate) const CONTRACT: &str = "Contract";
    pub(crate) const CALL_SESSION: &str = "CallSession";
    pub(crate) const MEMBER: &str = "Member";
}

/// An attribute value as a record holds it, before either writer converts it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Val<'a> {
    Bool(bool),
    Long(i64),
    Str(&'a str),
    Time(Timestamp),
    /// A member status (a string in the schema).
    Status(MemberStatus),
    /// A reference to another entity: its type and id.
    Ref(&'static str, &'a str),
    /// A set of channels (strings in the schema).
    Channels(&'a [Channel]),
    /// A set of member statuses (strings in the schema).
    Statuses(&'a [MemberStatus]),
    /// A set of references to entities of one type.
    Refs(&'static str, &'a [String]),
}

/// What a description is written to.
pub(crate) trait Sink<'a> {
    /// One attribute (each at most once, in any order).
    fn attr(&mut self, attr: Attr, value: Val<'a>);
    /// One parent.
    fn parent(&mut self, ty: &'static str, id: &'a str);
}

/// A record of any kind, with its id: the unit both writers take.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Record<'a> {
    Region,
    Clp(&'a Clp),
    Election(&'a Election),
    Candidate(&'a Candidate),
    Campaign(&'a Campaign),
    Principal(PrincipalRecord<'a>),
    /// A processor's contract: an entity of its own, under the processor's id.
    Contract(&'a crate::records::Contract),
    CallSession(&'a CallSession),
    Member(&'a Member),
}

impl<'a> Record<'a> {
    /// The record's entity type.
    pub(crate) fn entity_type(&self) -> &'static str {
        match self {
            Record::Region => ty::REGION,
            Record::Clp(_) => ty::CLP,
            Record::Election(_) => ty::ELECTION,
            Record::Candidate(_) => ty::CANDIDATE,
            Record::Campaign(_) => ty::CAMPAIGN,
            Record::Principal(p) => p.kind().type_name(),
            Record::Contract(_) => ty::CONTRACT,
            Record::CallSession(_) => ty::CALL_SESSION,
            Record::Member(_) => ty::MEMBER,
        }
    }

    /// Writes the record's attributes and parents (`id` is the record's own id).
    pub(crate) fn describe(&self, id: &'a str, s: &mut impl Sink<'a>) {
        match *self {
            Record::Region => {}
            Record::Clp(c) => s.parent(ty::REGION, &c.region),
            Record::Election(e) => {
                s.attr(Attr::NominationsClose, Val::Time(e.nominations_close));
                s.attr(Attr::FreezeDate, Val::Time(e.freeze_date));
                s.attr(Attr::BallotClose, Val::Time(e.ballot_close));
            }
            Record::Candidate(c) => {
                s.attr(Attr::ValidlyNominated, Val::Bool(c.validly_nominated));
                s.attr(Attr::FeePaid, Val::Bool(c.fee_paid));
                s.attr(
                    Attr::DataAgreementSigned,
                    Val::Bool(c.data_agreement_signed),
                );
            }
            Record::Campaign(c) => {
                s.attr(Attr::Election, Val::Ref(ty::ELECTION, &c.election));
                s.attr(Attr::Candidate, Val::Ref(ty::CANDIDATE, &c.candidate));
                if let Some(t) = c.ended_at {
                    s.attr(Attr::EndedAt, Val::Time(t));
                }
            }
            Record::Principal(p) => match p {
                PrincipalRecord::Staff(x) => {
                    if let Some(r) = &x.region {
                        s.attr(Attr::Region, Val::Ref(ty::REGION, r));
                    }
                    ended(s, x.ended_at, x.hourly_read_limit);
                    for t in &x.teams {
                        s.parent(ty::TEAM, t.as_str());
                    }
                }
                PrincipalRecord::CampaignStaff(x) => {
                    s.attr(Attr::Campaign, Val::Ref(ty::CAMPAIGN, &x.campaign));
                    s.attr(Attr::Role, Val::Str(&x.role));
                    ended(s, x.ended_at, x.hourly_read_limit);
                    s.parent(ty::CAMPAIGN, &x.campaign);
                }
                PrincipalRecord::Volunteer(x) => ended(s, x.ended_at, x.hourly_read_limit),
                PrincipalRecord::Officer(x) => {
                    s.attr(Attr::Clp, Val::Ref(ty::CLP, &x.clp));
                    s.attr(Attr::Role, Val::Str(&x.role));
                    ended(s, x.ended_at, x.hourly_read_limit);
                }
                PrincipalRecord::Representative(x) => {
                    s.attr(Attr::Clp, Val::Ref(ty::CLP, &x.clp));
                    ended(s, x.ended_at, x.hourly_read_limit);
                }
                PrincipalRecord::Processor(x) => {
                    s.attr(Attr::Contract, Val::Ref(ty::CONTRACT, id));
                    ended(s, x.ended_at, x.hourly_read_limit);
                }
            },
            Record::Contract(c) => {
                s.attr(Attr::Fields, Val::Refs(ty::FIELD, &c.fields));
                s.attr(Attr::Statuses, Val::Statuses(&c.statuses));
                s.attr(Attr::Starts, Val::Time(c.starts));
                s.attr(Attr::Ends, Val::Time(c.ends));
            }
            Record::CallSession(x) => {
                s.attr(Attr::Volunteer, Val::Ref(ty::VOLUNTEER, &x.volunteer));
                s.attr(Attr::Members, Val::Refs(ty::MEMBER, &x.members));
                s.attr(Attr::Opens, Val::Time(x.opens));
                s.attr(Attr::Closes, Val::Time(x.closes));
                if let Some(c) = &x.campaign {
                    s.attr(Attr::Campaign, Val::Ref(ty::CAMPAIGN, c));
                }
                if let Some(r) = &x.office {
                    s.attr(Attr::Office, Val::Ref(ty::REGION, r));
                }
            }
            Record::Member(m) => {
                s.attr(Attr::Status, Val::Status(m.status));
                s.attr(Attr::Joined, Val::Time(m.joined));
                if let Some(t) = m.left {
                    s.attr(Attr::Left, Val::Time(t));
                }
                s.attr(Attr::InGoodStanding, Val::Bool(m.in_good_standing));
                s.attr(Attr::Consents, Val::Channels(&m.consents));
                s.attr(Attr::OptOuts, Val::Channels(&m.opt_outs));
                s.parent(ty::CLP, &m.clp);
            }
        }
    }

    /// Every time the record holds, checked against what Cedar's `datetime` can hold.
    pub(crate) fn check_times(&self, id: &str) -> Result<(), RequestError> {
        struct Times(Option<(Attr, Timestamp)>);
        impl<'a> Sink<'a> for Times {
            fn attr(&mut self, a: Attr, v: Val<'a>) {
                if let Val::Time(t) = v {
                    if !cedar_can_hold(t) && self.0.is_none() {
                        self.0 = Some((a, t));
                    }
                }
            }
            fn parent(&mut self, _: &'static str, _: &'a str) {}
        }
        let mut times = Times(None);
        self.describe(id, &mut times);
        match times.0 {
            None => Ok(()),
            Some((attr, t)) => Err(RequestError::InvalidData {
                what: display_uid(self.entity_type(), id),
                message: format!(
                    "`{}` is `{t}`, outside the years 0 to 9999 Cedar's datetime holds",
                    attr.name()
                ),
            }),
        }
    }
}

/// A principal's `ended_at` and `hourly_read_limit`, which every kind has.
fn ended<'a>(s: &mut impl Sink<'a>, at: Option<Timestamp>, limit: u32) {
    if let Some(t) = at {
        s.attr(Attr::EndedAt, Val::Time(t));
    }
    s.attr(Attr::HourlyReadLimit, Val::Long(i64::from(limit)));
}

/// Whether Cedar's `datetime` can hold `t`: a four-digit year, 0000 to 9999 (UTC).
#[inline]
pub(crate) fn cedar_can_hold(t: Timestamp) -> bool {
    /// 0000-01-01T00:00:00Z and 10000-01-01T00:00:00Z, in seconds since the epoch.
    const FIRST: i64 = -62_167_219_200;
    const AFTER_LAST: i64 = 253_402_300_800;
    (FIRST..AFTER_LAST).contains(&t.as_second())
}

/// The check every member passes before either path decides on it: a former or
/// expelled member has the date they left, and every time fits Cedar's `datetime`.
/// (That its CLP exists is checked against the directory by the caller.)
pub(crate) fn check_member(id: &str, m: &Member) -> Result<(), RequestError> {
    if matches!(m.status, MemberStatus::Former | MemberStatus::Expelled) && m.left.is_none() {
        return Err(RequestError::InvalidData {
            what: format!("member `{id}`"),
            message: format!(
                "a {} member needs the date they left (`left`)",
                m.status.as_str()
            ),
        });
    }
    // Its times are `joined` and `left` (a test holds the description to that): the
    // description is walked only to name the one Cedar cannot hold.
    if cedar_can_hold(m.joined) && m.left.is_none_or(cedar_can_hold) {
        return Ok(());
    }
    Record::Member(m).check_times(id)
}

/// The time as Cedar's `datetime` reads it (millisecond precision, UTC).
pub(crate) fn cedar_time(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Milliseconds since the epoch, as Cedar reads [`cedar_time`]'s strings (truncated to
/// the millisecond, towards the past).
pub(crate) fn millis(ts: Timestamp) -> i64 {
    // In i64 arithmetic (a Timestamp's seconds times 1,000 cannot overflow): dividing
    // its i128 nanoseconds costs more than the rest of writing a member.
    ts.as_second() * 1000 + i64::from(ts.subsec_nanosecond().div_euclid(1_000_000))
}

fn uid(type_name: &str, id: &str) -> Result<EntityUid, RequestError> {
    entity_uid(type_name, id).map_err(|e| RequestError::InvalidData {
        what: format!("{type_name} `{id}`"),
        message: e.to_string(),
    })
}

/// The Cedar writer: the entities one request (or one page) needs, each added once.
/// The caller adds a record and then the records it refers to (see
/// [`Directory`](crate::Directory)).
#[derive(Default)]
pub(crate) struct CedarSlice {
    entities: Vec<cedar_policy::Entity>,
    seen: HashSet<EntityUid>,
}

struct CedarSink<'a> {
    attrs: HashMap<String, RestrictedExpression>,
    parents: HashSet<EntityUid>,
    /// The references met, for the caller to add.
    refs: Vec<(&'static str, &'a str)>,
    error: Option<RequestError>,
}

impl<'a> CedarSink<'a> {
    fn entity(&mut self, ty: &'static str, id: &'a str) -> Option<EntityUid> {
        match uid(ty, id) {
            Ok(u) => Some(u),
            Err(e) => {
                self.error.get_or_insert(e);
                None
            }
        }
    }
}

impl<'a> Sink<'a> for CedarSink<'a> {
    fn attr(&mut self, attr: Attr, value: Val<'a>) {
        let strings = |items: &mut dyn Iterator<Item = &str>| {
            RestrictedExpression::new_set(
                items.map(|s| RestrictedExpression::new_string(s.to_string())),
            )
        };
        let v = match value {
            Val::Bool(b) => RestrictedExpression::new_bool(b),
            Val::Long(n) => RestrictedExpression::new_long(n),
            Val::Str(s) => RestrictedExpression::new_string(s.to_string()),
            Val::Time(t) => RestrictedExpression::new_datetime(cedar_time(t)),
            Val::Status(s) => RestrictedExpression::new_string(s.as_str().to_string()),
            Val::Ref(ty, id) => {
                self.refs.push((ty, id));
                match self.entity(ty, id) {
                    Some(u) => RestrictedExpression::new_entity_uid(u),
                    None => return,
                }
            }
            Val::Channels(c) => strings(&mut c.iter().map(|c| c.as_str())),
            Val::Statuses(s) => strings(&mut s.iter().map(|s| s.as_str())),
            Val::Refs(ty, ids) => {
                let mut items = Vec::with_capacity(ids.len());
                for id in ids {
                    match self.entity(ty, id) {
                        Some(u) => items.push(RestrictedExpression::new_entity_uid(u)),
                        None => return,
                    }
                }
                RestrictedExpression::new_set(items)
            }
        };
        self.attrs.insert(attr.name().to_string(), v);
    }

    fn parent(&mut self, ty: &'static str, id: &'a str) {
        self.refs.push((ty, id));
        if let Some(u) = self.entity(ty, id) {
            self.parents.insert(u);
        }
    }
}

impl CedarSlice {
    /// Whether the entity `ty::id` is in the slice already.
    pub(crate) fn has(&self, ty: &str, id: &str) -> bool {
        uid(ty, id).is_ok_and(|u| self.seen.contains(&u))
    }

    /// Adds `record` under `id` (unless it is there already); returns the references
    /// it makes (attributes and parents), for the caller to add in turn.
    pub(crate) fn add<'a>(
        &mut self,
        id: &'a str,
        record: Record<'a>,
    ) -> Result<Vec<(&'static str, &'a str)>, RequestError> {
        let u = uid(record.entity_type(), id)?;
        if self.seen.contains(&u) {
            return Ok(Vec::new());
        }
        let mut sink = CedarSink {
            attrs: HashMap::new(),
            parents: HashSet::new(),
            refs: Vec::new(),
            error: None,
        };
        record.describe(id, &mut sink);
        if let Some(e) = sink.error {
            return Err(e);
        }
        let entity =
            cedar_policy::Entity::new(u.clone(), sink.attrs, sink.parents).map_err(|e| {
                RequestError::InvalidData {
                    what: u.to_string(),
                    message: e.to_string(),
                }
            })?;
        self.seen.insert(u);
        self.entities.push(entity);
        Ok(sink.refs)
    }

    /// The entities added.
    pub(crate) fn into_entities(self) -> Vec<cedar_policy::Entity> {
        self.entities
    }
}

/// The Cedar uid `ty::"id"` as text, for error messages.
pub(crate) fn display_uid(ty: &str, id: &str) -> String {
    uid(ty, id).map_or_else(|_| format!("{ty}::{id:?}"), |u| u.to_string())
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::{millis, Attr, Record, Sink, Val};
    use crate::records::{Member, MemberStatus};

    /// `check_member` checks `joined` and `left` directly: they are the only times a
    /// member's description holds.
    #[test]
    fn a_members_only_times_are_joined_and_left() {
        struct Times(Vec<Attr>);
        impl<'a> Sink<'a> for Times {
            fn attr(&mut self, a: Attr, v: Val<'a>) {
                if let Val::Time(_) = v {
                    self.0.push(a);
                }
            }
            fn parent(&mut self, _: &'static str, _: &'a str) {}
        }
        let member = Member {
            status: MemberStatus::Former,
            clp: "c".into(),
            joined: Timestamp::UNIX_EPOCH,
            left: Some(Timestamp::UNIX_EPOCH),
            in_good_standing: true,
            consents: Vec::new(),
            opt_outs: Vec::new(),
        };
        let mut times = Times(Vec::new());
        Record::Member(&member).describe("m", &mut times);
        assert_eq!(times.0, [Attr::Joined, Attr::Left]);
    }

    /// `millis` floors to the millisecond (towards the past), as dividing the i128
    /// nanoseconds does, before and after the epoch and at the ends of the range.
    #[test]
    fn millis_floors_like_the_nanosecond_division() {
        let nanos: [i128; 12] = [
            0,
            1,
            -1,
            999_999,
            -999_999,
            1_000_000,
            -1_000_000,
            -1_000_500_000,
            1_581_688_800_123_456_789,
            -62_135_596_800_000_000_001,
            Timestamp::MIN.as_nanosecond(),
            Timestamp::MAX.as_nanosecond(),
        ];
        for n in nanos {
            let ts = Timestamp::from_nanosecond(n).unwrap_or_else(|e| panic!("{n}: {e}"));
            let want = i64::try_from(n.div_euclid(1_000_000)).unwrap_or(i64::MAX);
            assert_eq!(millis(ts), want, "{n} ns");
        }
    }
}
