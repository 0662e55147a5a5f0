//! Typed records of the party's CRM: members, staff, campaigns, elections and the rest.
//!
//! These are the shapes a CRM backend hands to the [`Engine`](crate::Engine): plain
//! serde structs. The principal side (staff, campaigns, elections, places, ...) goes
//! into a [`Directory`](crate::Directory) kept between requests; a [`Member`] comes with
//! each request, read by the CRM with the member's row. [`Membership`] is a whole party
//! in one value (a data file, the policy tests' fixtures, the generated sample).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// A member's standing with the party.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// A current member.
    Member,
    /// A registered supporter (signed up for a leadership election).
    RegisteredSupporter,
    /// An affiliated supporter (e.g. a union member paying the political levy).
    AffiliatedSupporter,
    /// A member who has left.
    Former,
    /// A member who was expelled.
    Expelled,
}

impl MemberStatus {
    /// Every status, in the order the policies list them.
    pub const ALL: [MemberStatus; 5] = [
        MemberStatus::Member,
        MemberStatus::RegisteredSupporter,
        MemberStatus::AffiliatedSupporter,
        MemberStatus::Former,
        MemberStatus::Expelled,
    ];

    /// The status as the policies spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Member => "member",
            MemberStatus::RegisteredSupporter => "registered_supporter",
            MemberStatus::AffiliatedSupporter => "affiliated_supporter",
            MemberStatus::Former => "former",
            MemberStatus::Expelled => "expelled",
        }
    }
}

/// A contact channel a member can consent to or opt out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Telephone.
    Phone,
    /// Email.
    Email,
    /// Post.
    Post,
}

impl Channel {
    /// The channel as the policies spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Phone => "phone",
            Channel::Email => "email",
            Channel::Post => "post",
        }
    }
}

/// The policy-relevant attributes of a member record (members, registered and
/// affiliated supporters, former members): what the CRM reads with the member's row and
/// passes with each request. No field values: the engine decides which of them the CRM
/// may show, it never sees them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The member's standing.
    pub status: MemberStatus,
    /// Id of the member's constituency party.
    pub clp: String,
    /// When the member joined.
    pub joined: Timestamp,
    /// When a former or expelled member left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left: Option<Timestamp>,
    /// Whether the member is in good standing (no arrears, no suspension).
    #[serde(default = "yes")]
    pub in_good_standing: bool,
    /// Channels the member consented to.
    #[serde(default)]
    pub consents: Vec<Channel>,
    /// Channels the member opted out of.
    #[serde(default)]
    pub opt_outs: Vec<Channel>,
}

fn yes() -> bool {
    true
}

/// A region of the party (a regional office covers one).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Display name.
    #[serde(default)]
    pub name: String,
}

/// A constituency Labour party.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clp {
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Id of the region the CLP is in.
    pub region: String,
}

/// An internal election (e.g. the 2020 leadership election) and its timetable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Election {
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// When nominations close.
    pub nominations_close: Timestamp,
    /// Members who joined before this moment may vote.
    pub freeze_date: Timestamp,
    /// When the ballot closes.
    pub ballot_close: Timestamp,
}

/// A candidate in an election and where their nomination stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Whether the candidate passed the nomination thresholds.
    pub validly_nominated: bool,
    /// Whether the candidate paid the fee for the membership list.
    pub fee_paid: bool,
    /// Whether the candidate signed the data agreement.
    pub data_agreement_signed: bool,
}

/// A candidate's campaign in one election.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Id of the election the campaign runs in.
    pub election: String,
    /// Id of the campaign's candidate.
    pub candidate: String,
    /// When the campaign was wound up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
}

/// A party staff team: a named role that policies grant access to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Team {
    /// Keeps the membership records.
    Membership,
    /// Compliance: subject access, objections, erasure.
    Compliance,
    /// The data protection officer.
    DataProtection,
    /// A regional office.
    Regional,
    /// The named role allowed to bulk-export.
    DataExport,
}

impl Team {
    /// The team as the policies spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Team::Membership => "membership",
            Team::Compliance => "compliance",
            Team::DataProtection => "data_protection",
            Team::Regional => "regional",
            Team::DataExport => "data_export",
        }
    }
}

/// A member of party staff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Staff {
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// The teams the staffer belongs to.
    pub teams: Vec<Team>,
    /// Id of the region a regional staffer covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// When the staffer left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// Member reads allowed in an hour.
    pub hourly_read_limit: u32,
}

/// Someone acting for a campaign: the candidate, an agent, or campaign staff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignStaff {
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Id of the campaign.
    pub campaign: String,
    /// `candidate`, `agent` or `staff`.
    pub role: String,
    /// When the staffer's role ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// Member reads allowed in an hour.
    pub hourly_read_limit: u32,
}

/// A volunteer (phone bank, canvassing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volunteer {
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// When the volunteer was deactivated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// Member reads allowed in an hour.
    pub hourly_read_limit: u32,
}

/// A CLP officer (secretary, chair).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Officer {
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Id of the officer's CLP.
    pub clp: String,
    /// `secretary` or `chair`.
    pub role: String,
    /// When the officer stood down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// Member reads allowed in an hour.
    pub hourly_read_limit: u32,
}

/// An elected representative (an MP) and their constituency party.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Representative {
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Id of the constituency party.
    pub clp: String,
    /// When the representative resigned from the party or stood down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// Member reads allowed in an hour.
    pub hourly_read_limit: u32,
}

/// A data processor's contract with the party.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    /// The catalogue fields the contract names.
    pub fields: Vec<String>,
    /// The member statuses whose records the contract names.
    pub statuses: Vec<MemberStatus>,
    /// When the contract comes into force.
    pub starts: Timestamp,
    /// When the contract ends.
    pub ends: Timestamp,
}

/// A third party that processes member data for the party.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Processor {
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// The processor's contract.
    pub contract: Contract,
    /// When the processor's engagement ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// Member reads allowed in an hour.
    pub hourly_read_limit: u32,
}

/// A phone-bank call session: a volunteer assigned to call a list of members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallSession {
    /// Id of the volunteer assigned.
    pub volunteer: String,
    /// Id of the campaign that created the session, if a campaign did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// Id of the region whose office created the session, if an office did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub office: Option<String>,
    /// Ids of the members assigned.
    pub members: Vec<String>,
    /// When the session opens.
    pub opens: Timestamp,
    /// When the session closes.
    pub closes: Timestamp,
}

/// The kinds of principal a request can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PrincipalKind {
    /// [`Staff`]
    Staff,
    /// [`CampaignStaff`]
    CampaignStaff,
    /// [`Volunteer`]
    Volunteer,
    /// [`Officer`]
    Officer,
    /// [`Representative`]
    Representative,
    /// [`Processor`]
    Processor,
}

impl PrincipalKind {
    /// Every kind, in a fixed order.
    pub const ALL: [PrincipalKind; 6] = [
        PrincipalKind::Staff,
        PrincipalKind::CampaignStaff,
        PrincipalKind::Volunteer,
        PrincipalKind::Officer,
        PrincipalKind::Representative,
        PrincipalKind::Processor,
    ];

    /// The Cedar entity type name of this kind.
    pub fn type_name(self) -> &'static str {
        match self {
            PrincipalKind::Staff => "Staff",
            PrincipalKind::CampaignStaff => "CampaignStaff",
            PrincipalKind::Volunteer => "Volunteer",
            PrincipalKind::Officer => "Officer",
            PrincipalKind::Representative => "Representative",
            PrincipalKind::Processor => "Processor",
        }
    }
}

/// Who is asking: a principal kind and an id, written as a Cedar entity uid
/// (`Staff::"s-1"`).
///
/// # Example
/// ```
/// use membergate::{PrincipalId, PrincipalKind};
/// let p: PrincipalId = r#"CampaignStaff::"cs-1""#.parse()?;
/// assert_eq!(p.kind, PrincipalKind::CampaignStaff);
/// assert_eq!(p.id, "cs-1");
/// assert_eq!(p.to_string(), r#"CampaignStaff::"cs-1""#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PrincipalId {
    /// The kind of principal.
    pub kind: PrincipalKind,
    /// The id within that kind.
    pub id: String,
}

impl PrincipalId {
    /// A principal id of the given kind.
    pub fn new(kind: PrincipalKind, id: impl Into<String>) -> Self {
        PrincipalId {
            kind,
            id: id.into(),
        }
    }
}

impl fmt::Display for PrincipalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}::{:?}", self.kind.type_name(), self.id)
    }
}

/// The error for a principal uid that is malformed or names no principal kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a principal: {problem}")]
pub struct ParsePrincipalError {
    input: String,
    problem: String,
}

impl FromStr for PrincipalId {
    type Err = ParsePrincipalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |problem: String| ParsePrincipalError {
            input: s.to_string(),
            problem,
        };
        let uid = cedar_policy::EntityUid::from_str(s.trim())
            .map_err(|e| fail(format!("expected `Type::\"id\"` ({e})")))?;
        let type_name = uid.type_name().to_string();
        let kind = PrincipalKind::ALL
            .into_iter()
            .find(|k| k.type_name() == type_name)
            .ok_or_else(|| {
                let kinds: Vec<_> = PrincipalKind::ALL.iter().map(|k| k.type_name()).collect();
                fail(format!(
                    "unknown principal type `{type_name}` (expected one of {})",
                    kinds.join(", ")
                ))
            })?;
        Ok(PrincipalId::new(kind, uid.id().unescaped()))
    }
}

/// A principal's record, whichever kind it is.
#[derive(Debug, Clone, Copy)]
pub enum PrincipalRecord<'a> {
    /// Party staff.
    Staff(&'a Staff),
    /// Campaign staff.
    CampaignStaff(&'a CampaignStaff),
    /// A volunteer.
    Volunteer(&'a Volunteer),
    /// A CLP officer.
    Officer(&'a Officer),
    /// An elected representative.
    Representative(&'a Representative),
    /// A processor.
    Processor(&'a Processor),
}

/// A whole party in one value, keyed by id: the principal side, the members, and
/// optionally the members' field values (for a demo or an example CRM).
///
/// Loads from JSON or TOML with serde; [`sample`](crate::sample) generates a large one.
/// [`Directory::from_membership`](crate::Directory::from_membership) takes its
/// principal side; each request takes a member from [`Membership::members`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    /// Regions by id.
    #[serde(default)]
    pub regions: BTreeMap<String, Region>,
    /// Constituency parties by id.
    #[serde(default)]
    pub clps: BTreeMap<String, Clp>,
    /// Elections by id.
    #[serde(default)]
    pub elections: BTreeMap<String, Election>,
    /// Candidates by id.
    #[serde(default)]
    pub candidates: BTreeMap<String, Candidate>,
    /// Campaigns by id.
    #[serde(default)]
    pub campaigns: BTreeMap<String, Campaign>,
    /// Party staff by id.
    #[serde(default)]
    pub staff: BTreeMap<String, Staff>,
    /// Campaign staff by id.
    #[serde(default)]
    pub campaign_staff: BTreeMap<String, CampaignStaff>,
    /// Volunteers by id.
    #[serde(default)]
    pub volunteers: BTreeMap<String, Volunteer>,
    /// CLP officers by id.
    #[serde(default)]
    pub officers: BTreeMap<String, Officer>,
    /// Elected representatives by id.
    #[serde(default)]
    pub representatives: BTreeMap<String, Representative>,
    /// Processors by id.
    #[serde(default)]
    pub processors: BTreeMap<String, Processor>,
    /// Call sessions by id.
    #[serde(default)]
    pub call_sessions: BTreeMap<String, CallSession>,
    /// Members by id.
    #[serde(default)]
    pub members: BTreeMap<String, Member>,
    /// Members' field values by member id, then by catalogue field name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, BTreeMap<String, String>>,
}

impl Membership {
    /// Its principal side alone: every record but the members and their values (what a
    /// [`Directory`](crate::Directory) holds), copied without copying a member.
    pub fn principal_side(&self) -> Membership {
        Membership {
            regions: self.regions.clone(),
            clps: self.clps.clone(),
            elections: self.elections.clone(),
            candidates: self.candidates.clone(),
            campaigns: self.campaigns.clone(),
            staff: self.staff.clone(),
            campaign_staff: self.campaign_staff.clone(),
            volunteers: self.volunteers.clone(),
            officers: self.officers.clone(),
            representatives: self.representatives.clone(),
            processors: self.processors.clone(),
            call_sessions: self.call_sessions.clone(),
            members: BTreeMap::new(),
            values: BTreeMap::new(),
        }
    }

    /// The principal with this id, if any.
    pub fn principal(&self, id: &PrincipalId) -> Option<PrincipalRecord<'_>> {
        let key = id.id.as_str();
        Some(match id.kind {
            PrincipalKind::Staff => PrincipalRecord::Staff(self.staff.get(key)?),
            PrincipalKind::CampaignStaff => {
                PrincipalRecord::CampaignStaff(self.campaign_staff.get(key)?)
            }
            PrincipalKind::Volunteer => PrincipalRecord::Volunteer(self.volunteers.get(key)?),
            PrincipalKind::Officer => PrincipalRecord::Officer(self.officers.get(key)?),
            PrincipalKind::Representative => {
                PrincipalRecord::Representative(self.representatives.get(key)?)
            }
            PrincipalKind::Processor => PrincipalRecord::Processor(self.processors.get(key)?),
        })
    }

    /// Every principal id, kind by kind in [`PrincipalKind::ALL`] order, then by id.
    pub fn principal_ids(&self) -> impl Iterator<Item = PrincipalId> + '_ {
        fn ids<'a, T>(
            kind: PrincipalKind,
            m: &'a BTreeMap<String, T>,
        ) -> impl Iterator<Item = PrincipalId> + 'a {
            m.keys().map(move |id| PrincipalId::new(kind, id.clone()))
        }
        ids(PrincipalKind::Staff, &self.staff)
            .chain(ids(PrincipalKind::CampaignStaff, &self.campaign_staff))
            .chain(ids(PrincipalKind::Volunteer, &self.volunteers))
            .chain(ids(PrincipalKind::Officer, &self.officers))
            .chain(ids(PrincipalKind::Representative, &self.representatives))
            .chain(ids(PrincipalKind::Processor, &self.processors))
    }

    /// The member `id` as a request names it, if there is one.
    pub fn member(&self, id: &str) -> Option<MemberRef<'_>> {
        self.members
            .get_key_value(id)
            .map(|(id, attrs)| MemberRef { id, attrs })
    }

    /// Every member as a request names it, in id order.
    pub fn member_refs(&self) -> impl Iterator<Item = MemberRef<'_>> {
        self.members
            .iter()
            .map(|(id, attrs)| MemberRef { id, attrs })
    }
}

/// A member as a request names it: the id and the policy-relevant attributes.
///
/// # Example
/// ```
/// use membergate::{Member, MemberRef, MemberStatus};
/// let attrs = Member {
///     status: MemberStatus::Member,
///     clp: "islington-north".into(),
///     joined: "2015-03-01T00:00:00Z".parse()?,
///     left: None,
///     in_good_standing: true,
///     consents: vec![],
///     opt_outs: vec![],
/// };
/// let member = MemberRef { id: "m-1", attrs: &attrs };
/// assert_eq!(member.id, "m-1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemberRef<'a> {
    /// The member's id.
    pub id: &'a str,
    /// The member's attributes.
    pub attrs: &'a Member,
}

impl PrincipalRecord<'_> {
    /// The kind of principal this record is.
    pub fn kind(&self) -> PrincipalKind {
        match self {
            PrincipalRecord::Staff(_) => PrincipalKind::Staff,
            PrincipalRecord::CampaignStaff(_) => PrincipalKind::CampaignStaff,
            PrincipalRecord::Volunteer(_) => PrincipalKind::Volunteer,
            PrincipalRecord::Officer(_) => PrincipalKind::Officer,
            PrincipalRecord::Representative(_) => PrincipalKind::Representative,
            PrincipalRecord::Processor(_) => PrincipalKind::Processor,
        }
    }

    /// When the principal's role ended, if it has.
    pub fn ended_at(&self) -> Option<Timestamp> {
        match self {
            PrincipalRecord::Staff(r) => r.ended_at,
            PrincipalRecord::CampaignStaff(r) => r.ended_at,
            PrincipalRecord::Volunteer(r) => r.ended_at,
            PrincipalRecord::Officer(r) => r.ended_at,
            PrincipalRecord::Representative(r) => r.ended_at,
            PrincipalRecord::Processor(r) => r.ended_at,
        }
    }

    /// How many member reads the principal may make in an hour.
    pub fn hourly_read_limit(&self) -> u32 {
        match self {
            PrincipalRecord::Staff(r) => r.hourly_read_limit,
            PrincipalRecord::CampaignStaff(r) => r.hourly_read_limit,
            PrincipalRecord::Volunteer(r) => r.hourly_read_limit,
            PrincipalRecord::Officer(r) => r.hourly_read_limit,
            PrincipalRecord::Representative(r) => r.hourly_read_limit,
            PrincipalRecord::Processor(r) => r.hourly_read_limit,
        }
    }
}
