//! A deterministic, synthetic sample of the party's records.
//!
//! [`generate`] builds a [`Membership`] from a [`SampleConfig`] (a seed and a member
//! count): 9 English regions, 60 constituency parties, the 2016 and 2020 leadership
//! elections and a 2017 trade-union election, candidates and their campaigns, party
//! staff, campaign staff, volunteers and their call sessions, CLP officers, MPs, two data
//! processors, and members with every field of `policies/fields.toml` filled in. The
//! same config always gives the same records. [`bundled`] is the default sample that
//! `membergate demo` and the benchmarks run on.
//!
//! Besides the random bulk, every sample holds the well-known records of [`ids`], built
//! to meet the breach scenarios of the domain notes: an eligible London member, a member
//! who left in 2009, an MP who resigned, a 2016 campaign asking in 2017, and so on.
//!
//! Everything is made up: names are drawn from short lists, emails use the reserved
//! `example.*` domains and phone numbers Ofcom's range for drama (`07700 900xxx`).
//!
//! # Example
//! ```
//! use membergate::sample::{generate, ids, SampleConfig};
//! let m = generate(&SampleConfig { seed: 7, members: 100 });
//! assert!(m.members.len() >= 100);
//! let session = &m.call_sessions[ids::SESSION_A];
//! assert!(session.members.iter().any(|id| id == ids::MEMBER_ELIGIBLE));
//! ```

use std::collections::BTreeMap;

use fastrand::Rng;
use jiff::tz::Offset;
use jiff::Timestamp;

use crate::records::{
    CallSession, Campaign, CampaignStaff, Candidate, Channel, Clp, Contract, Election, Member,
    MemberStatus as S, Membership, Officer, Processor, Region, Representative, Staff, Team,
    Volunteer,
};

/// Ids of the well-known records that every sample holds, whatever the seed.
pub mod ids {
    /// The London region.
    pub const REGION_LONDON: &str = "r-london";
    /// A London CLP (Holborn and St Pancras).
    pub const CLP_LONDON: &str = "clp-001";
    /// A North West CLP, neighbour in the list to [`CLP_LONDON`].
    pub const CLP_OTHER: &str = "clp-002";
    /// The 2016 leadership election.
    pub const LEADER_2016: &str = "leader-2016";
    /// The 2020 leadership election (freeze 20 January, ballot closes 2 April).
    pub const LEADER_2020: &str = "leader-2020";
    /// A 2017 trade-union election: not the party's, so no campaign data belongs to it.
    pub const UNION_2017: &str = "union-2017";
    /// 2020 candidate: validly nominated, fee paid, data agreement signed.
    pub const CAND_A: &str = "cand-a";
    /// 2020 candidate: nominated and signed, fee not paid.
    pub const CAND_B: &str = "cand-b";
    /// 2020 candidate: nominated, paid and signed (a second cleared one).
    pub const CAND_C: &str = "cand-c";
    /// 2020 candidate: not validly nominated.
    pub const CAND_D: &str = "cand-d";
    /// 2016 candidate: cleared for 2016.
    pub const CAND_2016: &str = "cand-2016";
    /// Campaign of [`CAND_A`] in [`LEADER_2020`].
    pub const CAMP_A: &str = "camp-a";
    /// Campaign of [`CAND_B`] in [`LEADER_2020`].
    pub const CAMP_B: &str = "camp-b";
    /// Campaign of [`CAND_C`] in [`LEADER_2020`].
    pub const CAMP_C: &str = "camp-c";
    /// Campaign of [`CAND_D`] in [`LEADER_2020`].
    pub const CAMP_D: &str = "camp-d";
    /// Campaign of [`CAND_2016`] in [`LEADER_2016`]; never wound up.
    pub const CAMP_2016: &str = "camp-2016";
    /// Staffer of [`CAMP_A`] (hourly read limit 500).
    pub const CS_A_STAFF: &str = "cs-a-staff";
    /// The candidate of [`CAMP_A`], acting for the campaign.
    pub const CS_A_CANDIDATE: &str = "cs-a-candidate";
    /// Staffer of [`CAMP_B`].
    pub const CS_B_STAFF: &str = "cs-b-staff";
    /// Staffer of [`CAMP_C`].
    pub const CS_C_STAFF: &str = "cs-c-staff";
    /// Staffer of [`CAMP_D`].
    pub const CS_D_STAFF: &str = "cs-d-staff";
    /// Staffer of [`CAMP_2016`].
    pub const CS_2016_STAFF: &str = "cs-2016-staff";
    /// Membership team (hourly read limit 2,000).
    pub const S_MEMBERSHIP: &str = "s-membership";
    /// Compliance team.
    pub const S_COMPLIANCE: &str = "s-compliance";
    /// The data protection officer.
    pub const S_DPO: &str = "s-dpo";
    /// Regional staff covering [`REGION_LONDON`].
    pub const S_REGIONAL_LONDON: &str = "s-regional-london";
    /// The named data-export role (hourly read limit 100,000).
    pub const S_EXPORT: &str = "s-export";
    /// A membership-team staffer who left on 2019-06-30.
    pub const S_LEFT: &str = "s-left";
    /// An active phone-bank volunteer, assigned to [`SESSION_A`] and [`SESSION_OFFICE_LONDON`].
    pub const V_PHONEBANK: &str = "v-phonebank";
    /// An active volunteer holding a link but assigned to no session.
    pub const V_LINKHOLDER: &str = "v-linkholder";
    /// A volunteer deactivated on 2020-02-01.
    pub const V_DEACTIVATED: &str = "v-deactivated";
    /// Call session of [`CAMP_A`], 2020-02-20 17:00-21:00 UTC: 50 members eligible to vote
    /// in [`LEADER_2020`] who consented to phone calls.
    pub const SESSION_A: &str = "cs-session-a";
    /// Call session of the London office, 2021-04-10 10:00-16:00 UTC: 30 London members
    /// who consented to phone calls.
    pub const SESSION_OFFICE_LONDON: &str = "session-office-london";
    /// Secretary of [`CLP_LONDON`].
    pub const O_SECRETARY_001: &str = "o-secretary-001";
    /// Secretary of [`CLP_OTHER`].
    pub const O_SECRETARY_002: &str = "o-secretary-002";
    /// The MP of [`CLP_LONDON`], in office.
    pub const MP_001: &str = "mp-001";
    /// The MP of [`CLP_OTHER`], who resigned from the party on 2019-02-18 (incident 2).
    pub const MP_RESIGNED: &str = "mp-resigned";
    /// A mailing house: name and address of members, 2019 to 2023.
    pub const P_MAILING: &str = "p-mailing";
    /// The processor of the 2021 ransomware breach (incident 4).
    pub const P_RANSOMWARE: &str = "p-ransomware";
    /// A member of [`CLP_LONDON`], joined 2015, in good standing, consents to every
    /// channel: eligible in 2020, on [`SESSION_A`] and [`SESSION_OFFICE_LONDON`].
    pub const MEMBER_ELIGIBLE: &str = "m-00001";
    /// A current member of [`CLP_OTHER`] (not London).
    pub const MEMBER_OTHER_CLP: &str = "m-00002";
    /// A former member who left on 2009-05-01: long past retention.
    pub const MEMBER_LEFT_2009: &str = "m-00003";
    /// A former member who left on 2023-06-01.
    pub const MEMBER_LEFT_2023: &str = "m-00004";
    /// A member of [`CLP_LONDON`] who joined on 2020-02-01, after the 2020 freeze date.
    pub const MEMBER_JOINED_AFTER_FREEZE: &str = "m-00005";
    /// A member of [`CLP_LONDON`] who consented to email, then opted out of it.
    pub const MEMBER_EMAIL_OPT_OUT: &str = "m-00006";
}

/// What to generate: the seed of the random choices and how many members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleConfig {
    /// Seed of the random generator: the same seed gives the same records.
    pub seed: u64,
    /// How many members to generate (at least the 6 well-known ones are always made).
    pub members: usize,
}

impl Default for SampleConfig {
    /// Seed 2020, 12,000 members: the [`bundled`] sample.
    fn default() -> Self {
        SampleConfig {
            seed: 2020,
            members: 12_000,
        }
    }
}

/// The bundled sample: [`generate`] with [`SampleConfig::default`].
pub fn bundled() -> Membership {
    generate(&SampleConfig::default())
}

/// `n` generated policies in the shape a large party's policy set grows: per campaign, a
/// permit for its staff and a forbid tying it to its election; per region, a permit for its
/// regional office and a forbid on bulk export. They name campaigns (`camp-gen-K`) and
/// regions (`r-gen-K`) that the bundled sample does not hold, so they add evaluation work
/// without changing the bundled decisions. Valid against the bundled schema. For the
/// policy-scaling benchmarks.
///
/// # Example
/// ```
/// let text = membergate::sample::generated_policies(4);
/// assert_eq!(text.matches("@id(").count(), 4);
/// ```
pub fn generated_policies(n: usize) -> String {
    (0..n).map(generated_policy).collect()
}

/// The policies per file that [`write_generated_policies`] writes: 1,000, about 250 KB,
/// well under the 4 MiB a policy file may hold (see [`LoadError::LIMITS`](crate::LoadError::LIMITS)).
pub const GENERATED_PER_FILE: usize = 1_000;

/// Writes [`generated_policies`]`(n)` into the directory `dir`, [`GENERATED_PER_FILE`] a
/// file (`generated-0000.cedar`, `generated-0001.cedar`, ...): with the bundled schema and
/// catalogue beside them, a policy directory of any size up to the limits, for the
/// loading benchmarks and tests.
///
/// # Errors
/// If a file cannot be written.
///
/// # Example
/// ```
/// let dir = tempfile::tempdir()?;
/// for file in [membergate::SCHEMA_FILE, membergate::CATALOGUE_FILE] {
///     std::fs::copy(std::path::Path::new("policies").join(file), dir.path().join(file))?;
/// }
/// membergate::sample::write_generated_policies(dir.path(), 1_500)?;
/// assert!(dir.path().join("generated-0001.cedar").exists());
/// let engine = membergate::Engine::from_dir(dir.path())?;
/// assert_eq!(engine.policy_ids().count(), 1_500);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_generated_policies(dir: &std::path::Path, n: usize) -> std::io::Result<()> {
    for (file, start) in (0..n).step_by(GENERATED_PER_FILE).enumerate() {
        let text: String = (start..n.min(start + GENERATED_PER_FILE))
            .map(generated_policy)
            .collect();
        std::fs::write(dir.join(format!("generated-{file:04}.cedar")), text)?;
    }
    Ok(())
}

/// The `i`-th of [`generated_policies`], with a blank line after it.
fn generated_policy(i: usize) -> String {
    let k = i / 4;
    let mut policy = match i % 4 {
            0 => format!(
                "@id(\"gen-campaign-{k}-read\")\n\
                 permit (principal in Campaign::\"camp-gen-{k}\", action in [Action::\"read\", Action::\"contact\"], resource is Member)\n\
                 when {{ context.field in FieldClass::\"identity\" || context.field in FieldClass::\"contact\" }};\n"
            ),
            1 => format!(
                "@id(\"gen-campaign-{k}-election\")\n\
                 forbid (principal in Campaign::\"camp-gen-{k}\", action, resource)\n\
                 unless {{ context has election && context.election == Election::\"election-gen-{k}\" }};\n"
            ),
            2 => format!(
                "@id(\"gen-region-{k}-read\")\n\
                 permit (principal is Staff in Team::\"regional\", action == Action::\"read\", resource in Region::\"r-gen-{k}\")\n\
                 when {{ principal has region && principal.region == Region::\"r-gen-{k}\" && context.field in FieldClass::\"membership\" }};\n"
            ),
            _ => format!(
                "@id(\"gen-region-{k}-bulk\")\n\
                 forbid (principal, action == Action::\"bulk_export\", resource in Region::\"r-gen-{k}\")\n\
                 when {{ context.reads_this_hour > 1000 }};\n"
        ),
    };
    policy.push('\n');
    policy
}

/// The UTC hour `y-m-d h:00`. For `const` items only (the tests check it against jiff).
const fn at(y: i64, m: i64, d: i64, h: i64) -> Timestamp {
    // Days from civil (H. Hinnant), counting years from March.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Timestamp::constant(days * 86_400 + h * 3_600, 0)
}

const FREEZE_2020: Timestamp = at(2020, 1, 20, 17);
const JOINED_FROM: Timestamp = at(2005, 1, 1, 0);
const JOINED_UNTIL: Timestamp = at(2020, 3, 1, 0);
/// The surge of joiners after the December 2019 general election.
const SURGE_FROM: Timestamp = at(2019, 12, 13, 0);
const LEFT_FROM: Timestamp = at(2009, 1, 1, 0);
const LEFT_UNTIL: Timestamp = at(2025, 1, 1, 0);
/// Registered-supporter sign-up windows: 2015, 2016 and 2020.
const SUPPORTER_WINDOWS: [(Timestamp, Timestamp); 3] = [
    (at(2015, 7, 20, 12), at(2015, 8, 12, 12)),
    (at(2016, 7, 18, 17), at(2016, 7, 20, 17)),
    (at(2020, 1, 14, 17), at(2020, 1, 16, 17)),
];

/// Regions (id, name) and their constituencies.
#[rustfmt::skip]
const REGIONS: [(&str, &str, &[&str]); 9] = [
    ("r-london", "London", &[
        "Holborn and St Pancras", "Islington North", "Hackney South and Shoreditch", "Tottenham",
        "Lewisham Deptford", "Camberwell and Peckham", "Brent Central", "Hammersmith",
    ]),
    ("r-north-west", "North West", &[
        "Liverpool Walton", "Manchester Gorton", "Salford and Eccles", "Wigan",
        "Bolton South East", "Blackburn", "Stockport", "Wirral South",
    ]),
    ("r-north-east", "North East", &[
        "Newcastle upon Tyne Central", "Sunderland Central", "Gateshead", "North Durham",
        "Middlesbrough", "Blyth Valley",
    ]),
    ("r-yorkshire", "Yorkshire and the Humber", &[
        "Leeds Central", "Sheffield Brightside and Hillsborough", "Bradford West", "Hull North",
        "Wakefield", "Barnsley Central", "Huddersfield",
    ]),
    ("r-east-midlands", "East Midlands", &[
        "Nottingham East", "Leicester South", "Derby South", "Bassetlaw", "Mansfield", "Lincoln",
    ]),
    ("r-west-midlands", "West Midlands", &[
        "Birmingham Ladywood", "Coventry South", "Wolverhampton South East", "West Bromwich East",
        "Stoke-on-Trent Central", "Walsall North", "Dudley North",
    ]),
    ("r-eastern", "Eastern", &[
        "Norwich South", "Luton South", "Cambridge", "Ipswich", "Peterborough", "Thurrock",
    ]),
    ("r-south-east", "South East", &[
        "Brighton Kemptown", "Slough", "Oxford East", "Reading East", "Southampton Test",
        "Canterbury",
    ]),
    ("r-south-west", "South West", &[
        "Bristol West", "Plymouth Sutton and Devonport", "Exeter", "Stroud", "Swindon South",
        "Gloucester",
    ]),
];

#[rustfmt::skip]
const FIRST_NAMES: &[&str] = &[
    "Aisha", "Alan", "Amir", "Anna", "Ben", "Bola", "Callum", "Chloe", "Daniel", "Deepa",
    "Eilidh", "Emma", "Fatima", "Gareth", "Grace", "Hannah", "Imran", "Jack", "Joanne", "Kwame",
    "Laura", "Liam", "Maria", "Mohammed", "Niamh", "Olu", "Priya", "Rhys", "Sarah", "Tom",
];
#[rustfmt::skip]
const LAST_NAMES: &[&str] = &[
    "Ahmed", "Begum", "Brown", "Campbell", "Clarke", "Davies", "Evans", "Green", "Hall",
    "Hughes", "Jones", "Kaur", "Khan", "Lewis", "Mensah", "Murphy", "Nowak", "Okafor", "Patel",
    "Roberts", "Robinson", "Shah", "Singh", "Smith", "Taylor", "Thomas", "Walker", "Williams",
    "Wilson", "Wright",
];
#[rustfmt::skip]
const STREETS: &[&str] = &[
    "Station Road", "High Street", "Church Lane", "Victoria Road", "Mill Lane", "Park Avenue",
    "Queen Street", "Albert Terrace", "Co-operative Street", "Chartist Way", "Union Row",
];
const DOMAINS: &[&str] = &["example.org", "example.com", "example.net"];
#[rustfmt::skip]
const CANVASS: &[&str] = &[
    "Labour promise", "Labour probable", "Undecided", "Against", "Not home", "Refused",
];
#[rustfmt::skip]
const VIEWS: &[&str] = &[
    "Priority: NHS", "Priority: housing", "Priority: climate", "Priority: cost of living",
    "Priority: education", "Not recorded",
];
#[rustfmt::skip]
const ETHNICITY: &[&str] = &[
    "White British", "White other", "Asian or Asian British", "Black or Black British",
    "Mixed or multiple", "Other", "Prefer not to say",
];
const DISABILITY: &[&str] = &["No", "No", "No", "Yes", "Prefer not to say"];
const UNIONS: &[&str] = &[
    "None", "None", "Unite", "UNISON", "GMB", "CWU", "USDAW", "NEU",
];

/// Elections: id, name, nominations close, freeze date, ballot close.
#[rustfmt::skip]
const ELECTIONS: [(&str, &str, Timestamp, Timestamp, Timestamp); 3] = [
    (ids::LEADER_2016, "2016 leadership election", at(2016, 7, 20, 12), at(2016, 1, 12, 0), at(2016, 9, 21, 12)),
    (ids::LEADER_2020, "2020 leadership election", at(2020, 2, 14, 14), FREEZE_2020, at(2020, 4, 2, 12)),
    (ids::UNION_2017, "2017 union general secretary election", at(2017, 3, 1, 12), at(2017, 1, 1, 0), at(2017, 4, 20, 12)),
];

/// Candidates and their campaigns: id suffix, election, candidate name, and whether the
/// candidate is validly nominated, paid the fee and signed the data agreement.
#[rustfmt::skip]
const CAMPAIGNS: [(&str, &str, &str, bool, bool, bool); 5] = [
    ("a", ids::LEADER_2020, "Alex Carter", true, true, true),
    ("b", ids::LEADER_2020, "Bernadette Lowe", true, false, true),
    ("c", ids::LEADER_2020, "Chidi Okafor", true, true, true),
    ("d", ids::LEADER_2020, "Dana Price", false, false, true),
    ("2016", ids::LEADER_2016, "Evan Hughes", true, true, true),
];

/// A staffer: id, team, region, left, hourly read limit.
type StaffRow = (
    &'static str,
    Team,
    Option<&'static str>,
    Option<Timestamp>,
    u32,
);

/// Party staff besides the regional offices of regions other than London.
#[rustfmt::skip]
const STAFF: [StaffRow; 8] = [
    (ids::S_MEMBERSHIP, Team::Membership, None, None, 2_000),
    (ids::S_COMPLIANCE, Team::Compliance, None, None, 2_000),
    (ids::S_DPO, Team::DataProtection, None, None, 2_000),
    (ids::S_REGIONAL_LONDON, Team::Regional, Some(ids::REGION_LONDON), None, 1_000),
    (ids::S_EXPORT, Team::DataExport, None, None, 100_000),
    (ids::S_LEFT, Team::Membership, None, Some(at(2019, 6, 30, 17)), 2_000),
    ("s-membership-2", Team::Membership, None, None, 2_000),
    ("s-membership-3", Team::Membership, None, None, 2_000),
];

/// A processor: id, name, contract fields, contract statuses, contract start and end.
type ProcessorRow = (
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static [S],
    Timestamp,
    Timestamp,
);

#[rustfmt::skip]
const PROCESSORS: [ProcessorRow; 2] = [
    (ids::P_MAILING, "Mailing house", &["name", "address"], &[S::Member],
     at(2019, 1, 1, 0), at(2023, 1, 1, 0)),
    (ids::P_RANSOMWARE, "Data processor (2021 ransomware breach)", &["name", "email", "phone"],
     &[S::Member, S::RegisteredSupporter, S::AffiliatedSupporter],
     at(2020, 1, 1, 0), at(2022, 12, 31, 0)),
];

/// Whom a call session lists, of the members who can be phoned.
#[derive(Clone, Copy)]
enum Pool {
    /// Members eligible to vote in the 2020 leadership election.
    Eligible2020,
    /// Current members in this region.
    Region(&'static str),
}

/// A call session: id, volunteer, campaign, office, pool, size, opens, closes.
type SessionRow = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Pool,
    usize,
    Timestamp,
    Timestamp,
);

#[rustfmt::skip]
const SESSIONS: [SessionRow; 5] = [
    (ids::SESSION_A, ids::V_PHONEBANK, Some(ids::CAMP_A), None, Pool::Eligible2020, 50,
     at(2020, 2, 20, 17), at(2020, 2, 20, 21)),
    (ids::SESSION_OFFICE_LONDON, ids::V_PHONEBANK, None, Some(ids::REGION_LONDON),
     Pool::Region(ids::REGION_LONDON), 30, at(2021, 4, 10, 10), at(2021, 4, 10, 16)),
    ("cs-session-c", "v-001", Some(ids::CAMP_C), None, Pool::Eligible2020, 40,
     at(2020, 3, 1, 10), at(2020, 3, 1, 14)),
    ("cs-session-d", "v-002", Some(ids::CAMP_D), None, Pool::Eligible2020, 20,
     at(2020, 2, 22, 10), at(2020, 2, 22, 14)),
    ("session-office-north-west", "v-003", None, Some("r-north-west"),
     Pool::Region("r-north-west"), 30, at(2021, 5, 8, 10), at(2021, 5, 8, 16)),
];

/// A well-known member: CLP index, status, joined, left, consents, opt-outs.
type KnownRow = (
    usize,
    S,
    Timestamp,
    Option<Timestamp>,
    &'static [Channel],
    &'static [Channel],
);

/// The well-known members `m-00001` to `m-00006` (see [`ids`]).
#[rustfmt::skip]
const WELL_KNOWN: [KnownRow; 6] = [
    (0, S::Member, at(2015, 3, 14, 10), None, ALL_CHANNELS, &[]),
    (1, S::Member, at(2012, 5, 2, 9), None, ALL_CHANNELS, &[]),
    (0, S::Former, at(2005, 9, 1, 12), Some(at(2009, 5, 1, 0)), &[Channel::Post], &[]),
    (0, S::Former, at(2011, 1, 10, 12), Some(at(2023, 6, 1, 0)), ALL_CHANNELS, &[]),
    (0, S::Member, at(2020, 2, 1, 12), None, ALL_CHANNELS, &[]),
    (0, S::Member, at(2014, 6, 20, 18), None, ALL_CHANNELS, &[Channel::Email]),
];
const ALL_CHANNELS: &[Channel] = &[Channel::Phone, Channel::Email, Channel::Post];

/// A CLP as the generator uses it: ids and names of the CLP and its region.
struct ClpRow {
    id: String,
    name: &'static str,
    region: &'static str,
    region_name: &'static str,
}

/// Generates a sample: the same config always gives the same records.
///
/// Makes `config.members` members (at least the 6 well-known ones of [`ids`]) spread over
/// 60 CLPs: about 80% members, 7% registered supporters, 5% affiliated supporters, 7%
/// former members and 1% expelled. See the [module docs](self) for the other records.
pub fn generate(config: &SampleConfig) -> Membership {
    let mut members = BTreeMap::new();
    let mut values = BTreeMap::new();
    let mut out = generate_each(config, |id, member, v| {
        values.insert(id.to_string(), v);
        members.insert(id.to_string(), member);
    });
    out.members = members;
    out.values = values;
    out
}

/// [`generate`] without holding the members: each is handed to `each` (its id, its
/// attributes and its field values) as it is made, and the principal side is returned
/// (with no members). Memory stays bounded whatever `config.members`: a million members
/// are generated in a few seconds without being held.
///
/// # Example
/// ```
/// use membergate::sample::{generate, generate_each, SampleConfig};
/// let config = SampleConfig { seed: 7, members: 100 };
/// let mut ids = Vec::new();
/// let principal_side = generate_each(&config, |id, _, _| ids.push(id.to_string()));
/// let whole = generate(&config);
/// assert!(principal_side.members.is_empty());
/// assert_eq!(principal_side.call_sessions, whole.call_sessions);
/// assert_eq!(ids, whole.members.keys().cloned().collect::<Vec<_>>());
/// ```
pub fn generate_each(
    config: &SampleConfig,
    mut each: impl FnMut(&str, Member, BTreeMap<String, String>),
) -> Membership {
    let mut rng = Rng::with_seed(config.seed);
    let mut out = Membership::default();
    let clps = places(&mut out);
    contests(&mut rng, &mut out);
    principals(&mut rng, &mut out, &clps);
    // Per call session, the members (by index) it may list, in the order they are made.
    let mut pools: Vec<Vec<u32>> = vec![Vec::new(); SESSIONS.len()];
    for index in 1..=config.members.max(WELL_KNOWN.len()) {
        let Some((mut member, mut clp)) = random_member(&mut rng, &clps) else {
            break;
        };
        // The first six are made the well-known ones.
        let known = index.checked_sub(1).and_then(|k| WELL_KNOWN.get(k));
        if let Some(&(k, status, joined, left, consents, opt_outs)) = known {
            clp = clps.get(k).unwrap_or(clp);
            member = Member {
                status,
                clp: clp.id.clone(),
                joined,
                left,
                in_good_standing: !gone(status),
                consents: consents.to_vec(),
                opt_outs: opt_outs.to_vec(),
            };
        }
        for (pool, row) in pools.iter_mut().zip(SESSIONS.iter()) {
            if listed(&row.4, &member, clp) {
                pool.push(u32::try_from(index).unwrap_or(u32::MAX));
            }
        }
        let v = values(&mut rng, &member, index, clp);
        each(&member_id(index), member, v);
    }
    call_sessions(&mut rng, &mut out, &pools);
    out
}

/// The id of the `index`th member.
fn member_id(index: usize) -> String {
    format!("m-{index:05}")
}

/// Whether a call session drawing from `pool` may list `m` (of CLP `clp`).
fn listed(pool: &Pool, m: &Member, clp: &ClpRow) -> bool {
    let phone = m.consents.contains(&Channel::Phone) && !m.opt_outs.contains(&Channel::Phone);
    let current = phone && m.status == S::Member;
    match pool {
        Pool::Eligible2020 => current && m.in_good_standing && m.joined < FREEZE_2020,
        Pool::Region(r) => current && clp.region == *r,
    }
}

/// Adds the regions and CLPs, the CLPs dealt round the regions so that `clp-001` is in
/// London and `clp-002` in the North West.
fn places(out: &mut Membership) -> Vec<ClpRow> {
    let longest = REGIONS.iter().map(|r| r.2.len()).max().unwrap_or(0);
    let mut clps = Vec::new();
    for k in 0..longest {
        for (region, region_name, names) in REGIONS {
            if let Some(&name) = names.get(k) {
                let id = format!("clp-{:03}", clps.len() + 1);
                clps.push(ClpRow {
                    id,
                    name,
                    region,
                    region_name,
                });
            }
        }
    }
    for (id, name, _) in REGIONS {
        out.regions.insert(id.into(), Region { name: name.into() });
    }
    for c in &clps {
        let (name, region) = (c.name.into(), c.region.into());
        out.clps.insert(c.id.clone(), Clp { name, region });
    }
    clps
}

/// Adds the elections, the candidates, their campaigns and the campaigns' staff.
fn contests(rng: &mut Rng, out: &mut Membership) {
    for (id, name, nominations_close, freeze_date, ballot_close) in ELECTIONS {
        let election = Election {
            name: name.into(),
            nominations_close,
            freeze_date,
            ballot_close,
        };
        out.elections.insert(id.into(), election);
    }
    for (x, election, name, validly_nominated, fee_paid, data_agreement_signed) in CAMPAIGNS {
        let candidate = Candidate {
            name: name.into(),
            validly_nominated,
            fee_paid,
            data_agreement_signed,
        };
        out.candidates.insert(format!("cand-{x}"), candidate);
        let campaign = Campaign {
            name: format!("{name} for leader"),
            election: election.into(),
            candidate: format!("cand-{x}"),
            ended_at: None,
        };
        out.campaigns.insert(format!("camp-{x}"), campaign);
        for id in ["candidate", "agent", "staff", "staff-2", "staff-3"] {
            let role = id.trim_end_matches(['-', '2', '3']);
            let staffer = CampaignStaff {
                name: if role == "candidate" {
                    name.into()
                } else {
                    person(rng)
                },
                campaign: format!("camp-{x}"),
                role: role.into(),
                ended_at: None,
                hourly_read_limit: 500,
            };
            out.campaign_staff.insert(format!("cs-{x}-{id}"), staffer);
        }
    }
}

/// Adds party staff, volunteers, CLP officers, MPs and processors.
fn principals(rng: &mut Rng, out: &mut Membership, clps: &[ClpRow]) {
    let regional = REGIONS.iter().skip(1).map(|&(region, _, _)| {
        let id = format!("s-regional-{}", region.trim_start_matches("r-"));
        (id, Team::Regional, Some(region), None, 1_000)
    });
    let fixed = STAFF
        .into_iter()
        .map(|(id, t, r, e, l)| (id.into(), t, r, e, l));
    for (id, team, region, ended_at, hourly_read_limit) in fixed.chain(regional) {
        let staffer = Staff {
            name: person(rng),
            teams: vec![team],
            region: region.map(String::from),
            ended_at,
            hourly_read_limit,
        };
        out.staff.insert(id, staffer);
    }

    const DEACTIVATED: Timestamp = at(2020, 2, 1, 0);
    let fixed = [
        (ids::V_PHONEBANK.into(), None),
        (ids::V_LINKHOLDER.into(), None),
        (ids::V_DEACTIVATED.into(), Some(DEACTIVATED)),
    ];
    let more = (1..=30).map(|k| (format!("v-{k:03}"), None));
    for (id, ended_at) in fixed.into_iter().chain(more) {
        let name = person(rng);
        let hourly_read_limit = 200;
        out.volunteers.insert(
            id,
            Volunteer {
                name,
                ended_at,
                hourly_read_limit,
            },
        );
    }

    // A secretary, a chair and an MP for each of the first ten CLPs.
    const RESIGNED: Timestamp = at(2019, 2, 18, 9);
    for c in clps.iter().take(10) {
        let n = c.id.trim_start_matches("clp-");
        for role in ["secretary", "chair"] {
            let officer = Officer {
                name: person(rng),
                clp: c.id.clone(),
                role: role.into(),
                ended_at: None,
                hourly_read_limit: 300,
            };
            out.officers.insert(format!("o-{role}-{n}"), officer);
        }
        let (id, ended_at) = match n {
            "002" => (ids::MP_RESIGNED.into(), Some(RESIGNED)),
            _ => (format!("mp-{n}"), None),
        };
        let mp = Representative {
            name: person(rng),
            clp: c.id.clone(),
            ended_at,
            hourly_read_limit: 1_000,
        };
        out.representatives.insert(id, mp);
    }

    for (id, name, fields, statuses, starts, ends) in PROCESSORS {
        let contract = Contract {
            fields: fields.iter().map(|f| f.to_string()).collect(),
            statuses: statuses.to_vec(),
            starts,
            ends,
        };
        let processor = Processor {
            name: name.into(),
            contract,
            ended_at: None,
            hourly_read_limit: 5_000,
        };
        out.processors.insert(id.into(), processor);
    }
}

/// Adds the call sessions, each listing members its creator may reach, who can be phoned.
fn call_sessions(rng: &mut Rng, out: &mut Membership, pools: &[Vec<u32>]) {
    for ((id, volunteer, campaign, office, _, n, opens, closes), pool) in SESSIONS.iter().zip(pools)
    {
        let session = CallSession {
            volunteer: (*volunteer).into(),
            campaign: campaign.map(String::from),
            office: office.map(String::from),
            members: choose(rng, pool, ids::MEMBER_ELIGIBLE, *n),
            opens: *opens,
            closes: *closes,
        };
        out.call_sessions.insert((*id).into(), session);
    }
}

/// Whether a member with this status has left the party.
fn gone(status: S) -> bool {
    matches!(status, S::Former | S::Expelled)
}

/// A random member (values not yet filled in) and its CLP; `None` only without CLPs.
fn random_member<'a>(rng: &mut Rng, clps: &'a [ClpRow]) -> Option<(Member, &'a ClpRow)> {
    let clp = pick(rng, clps)?;
    let status = match rng.u32(0..1000) {
        0..=799 => S::Member,
        800..=869 => S::RegisteredSupporter,
        870..=919 => S::AffiliatedSupporter,
        920..=989 => S::Former,
        _ => S::Expelled,
    };
    let joined = match status {
        S::RegisteredSupporter => {
            let window = pick(rng, &SUPPORTER_WINDOWS).copied();
            let (from, until) = window.unwrap_or((SURGE_FROM, FREEZE_2020));
            between(rng, from, until)
        }
        _ if rng.u32(0..100) < 3 => between(rng, SURGE_FROM, JOINED_UNTIL),
        _ => between(rng, JOINED_FROM, JOINED_UNTIL),
    };
    let left = gone(status).then(|| between(rng, joined.max(LEFT_FROM), LEFT_UNTIL));
    let odds = [
        (Channel::Phone, 55),
        (Channel::Email, 75),
        (Channel::Post, 40),
    ];
    let mut draw = |odds: &[(Channel, u32)]| -> Vec<Channel> {
        let hits = odds.iter().filter(|(_, p)| rng.u32(0..100) < *p);
        hits.map(|(c, _)| *c).collect()
    };
    let consents = draw(&odds);
    let opt_outs = draw(&odds.map(|(c, _)| (c, 3)));
    let member = Member {
        status,
        clp: clp.id.clone(),
        joined,
        left,
        in_good_standing: !gone(status) && rng.u32(0..100) < 95,
        consents,
        opt_outs,
    };
    Some((member, clp))
}

/// A value for every catalogue field of the member (`left_on` only if it left).
fn values(rng: &mut Rng, m: &Member, index: usize, clp: &ClpRow) -> BTreeMap<String, String> {
    let (first, last) = (word(rng, FIRST_NAMES), word(rng, LAST_NAMES));
    let arrears = match m.in_good_standing {
        true => "£0.00".to_string(),
        false => format!("£{}.{:02}", rng.u32(3..90), rng.u32(0..100)),
    };
    let n = rng.u32(1..100);
    let email = format!("{first}.{last}{n}@{}", word(rng, DOMAINS)).to_lowercase();
    let number = 1_000_000 + index * 11 + rng.usize(0..11);
    let street = word(rng, STREETS);
    let values = [
        ("name", format!("{first} {last}")),
        ("membership_number", format!("L{number:07}")),
        ("email", email),
        ("phone", format!("07700 900{:03}", rng.u32(0..1_000))),
        (
            "address",
            format!("{} {street}, {}", rng.u32(1..200), clp.name),
        ),
        ("status", m.status.as_str().into()),
        ("clp", clp.name.into()),
        ("region", clp.region_name.into()),
        ("joined_on", day(m.joined)),
        ("payment_details", format!("**** {:04}", rng.u32(0..10_000))),
        ("arrears", arrears),
        ("canvass_returns", word(rng, CANVASS).into()),
        ("political_views", word(rng, VIEWS).into()),
        ("ethnicity", word(rng, ETHNICITY).into()),
        ("disability", word(rng, DISABILITY).into()),
        ("trade_union", word(rng, UNIONS).into()),
        ("contact_consents", channels(&m.consents)),
        ("opt_outs", channels(&m.opt_outs)),
    ];
    let mut out: BTreeMap<String, String> =
        values.into_iter().map(|(k, v)| (k.into(), v)).collect();
    if let Some(left) = m.left {
        out.insert("left_on".into(), day(left));
    }
    out
}

/// Up to `n` ids drawn from `pool`, sorted; `first` is drawn first if the pool holds it.
fn choose(rng: &mut Rng, pool: &[u32], first: &str, n: usize) -> Vec<String> {
    let id = |i: &u32| member_id(*i as usize);
    let mut rest: Vec<u32> = pool.iter().copied().filter(|i| id(i) != first).collect();
    rng.shuffle(&mut rest);
    let lead = pool
        .iter()
        .any(|i| id(i) == first)
        .then(|| first.to_string());
    let mut out: Vec<String> = lead
        .into_iter()
        .chain(rest.iter().map(id))
        .take(n)
        .collect();
    out.sort();
    out
}

/// A random element of `items`, `None` if it is empty.
fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> Option<&'a T> {
    items.get(rng.usize(..items.len().max(1)))
}

/// A random word of `items`, `""` if it is empty.
fn word(rng: &mut Rng, items: &[&'static str]) -> &'static str {
    pick(rng, items).copied().unwrap_or_default()
}

/// A random full name.
fn person(rng: &mut Rng) -> String {
    format!("{} {}", word(rng, FIRST_NAMES), word(rng, LAST_NAMES))
}

/// A random moment in `[from, until)`, or `from` if that is empty.
fn between(rng: &mut Rng, from: Timestamp, until: Timestamp) -> Timestamp {
    let (a, b) = (from.as_second(), until.as_second());
    if b <= a {
        return from;
    }
    Timestamp::from_second(rng.i64(a..b)).unwrap_or(from)
}

/// The UTC date of a moment, as `2020-01-20`.
fn day(t: Timestamp) -> String {
    Offset::UTC.to_datetime(t).date().to_string()
}

/// Channels as a field value: `phone, email`, or `none`.
fn channels(list: &[Channel]) -> String {
    match list {
        [] => "none".into(),
        _ => list
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::error::Error;
    use std::sync::OnceLock;

    use super::*;

    type Result<T = ()> = std::result::Result<T, Box<dyn Error>>;

    fn sample(seed: u64, members: usize) -> Membership {
        generate(&SampleConfig { seed, members })
    }

    /// The bundled sample, generated once for all the tests.
    fn shared() -> &'static Membership {
        static BUNDLED: OnceLock<Membership> = OnceLock::new();
        BUNDLED.get_or_init(bundled)
    }

    /// The field names of `policies/fields.toml`.
    fn catalogue() -> Result<BTreeSet<String>> {
        let doc: toml::Value = toml::from_str(include_str!("../policies/fields.toml"))?;
        let fields = doc
            .get("field")
            .and_then(|f| f.as_array())
            .ok_or("no [[field]]")?;
        let names = fields
            .iter()
            .map(|f| f.get("name")?.as_str().map(String::from));
        Ok(names
            .collect::<Option<_>>()
            .ok_or("a field without a name")?)
    }

    fn eligible_2020(m: &Member) -> bool {
        m.status == S::Member && m.in_good_standing && m.joined < FREEZE_2020
    }

    #[test]
    fn constant_dates_are_calendar_dates() -> Result {
        for (t, s) in [
            (FREEZE_2020, "2020-01-20T17:00:00Z"),
            (at(2016, 2, 29, 23), "2016-02-29T23:00:00Z"),
            (at(2005, 1, 1, 0), "2005-01-01T00:00:00Z"),
            (at(2022, 12, 31, 0), "2022-12-31T00:00:00Z"),
        ] {
            assert_eq!(t, s.parse::<Timestamp>()?);
        }
        Ok(())
    }

    #[test]
    fn makes_at_least_the_members_asked_for() {
        assert!(shared().members.len() >= 12_000);
        let m = sample(11, 600);
        assert_eq!(m.members.len(), 600);
        assert!(m.members.contains_key("m-00600"));
        let tiny: Vec<String> = sample(1, 0).members.into_keys().collect();
        assert_eq!(
            tiny,
            ["m-00001", "m-00002", "m-00003", "m-00004", "m-00005", "m-00006"]
        );
    }

    #[test]
    fn is_deterministic() {
        assert_eq!(sample(5, 300), sample(5, 300));
        assert_ne!(sample(5, 300), sample(6, 300));
        assert_eq!(&bundled(), shared());
        assert_eq!(
            SampleConfig::default(),
            SampleConfig {
                seed: 2020,
                members: 12_000
            }
        );
    }

    #[test]
    fn every_reference_resolves() -> Result {
        let fields = catalogue()?;
        for m in [shared(), &sample(11, 600)] {
            assert_eq!((m.regions.len(), m.clps.len()), (9, 60));
            for (id, x) in &m.members {
                assert!(m.clps.contains_key(&x.clp), "{id}: clp {}", x.clp);
            }
            for (id, x) in &m.clps {
                assert!(m.regions.contains_key(&x.region), "{id}");
            }
            for (id, x) in &m.campaigns {
                assert!(m.elections.contains_key(&x.election), "{id}");
                assert!(m.candidates.contains_key(&x.candidate), "{id}");
            }
            for (id, x) in &m.campaign_staff {
                assert!(m.campaigns.contains_key(&x.campaign), "{id}");
                let roles = ["candidate", "agent", "staff"];
                assert!(roles.contains(&x.role.as_str()), "{id}");
            }
            for (id, x) in &m.staff {
                assert!(x.region.iter().all(|r| m.regions.contains_key(r)), "{id}");
            }
            let mut clps = m.officers.values().map(|x| &x.clp);
            assert!(clps.all(|c| m.clps.contains_key(c)));
            let mut clps = m.representatives.values().map(|x| &x.clp);
            assert!(clps.all(|c| m.clps.contains_key(c)));
            for (id, s) in &m.call_sessions {
                assert!(m.volunteers.contains_key(&s.volunteer), "{id}");
                assert!(
                    s.campaign.iter().all(|c| m.campaigns.contains_key(c)),
                    "{id}"
                );
                assert!(s.office.iter().all(|r| m.regions.contains_key(r)), "{id}");
                assert!(s.campaign.is_some() != s.office.is_some(), "{id}");
                assert!(s.opens < s.closes && !s.members.is_empty(), "{id}");
                assert!(s.members.iter().all(|x| m.members.contains_key(x)), "{id}");
            }
            for (id, p) in &m.processors {
                assert!(p.contract.fields.iter().all(|f| fields.contains(f)), "{id}");
                assert!(p.contract.starts < p.contract.ends, "{id}");
            }
        }
        Ok(())
    }

    #[test]
    fn well_known_principals_are_as_documented() {
        let m = shared();
        assert_eq!(m.clps[ids::CLP_LONDON].region, ids::REGION_LONDON);
        assert_ne!(m.clps[ids::CLP_OTHER].region, ids::REGION_LONDON);
        let e = &m.elections[ids::LEADER_2020];
        assert_eq!(e.freeze_date, FREEZE_2020);
        assert!(e.nominations_close > FREEZE_2020 && e.nominations_close < e.ballot_close);
        assert!(m.elections.contains_key(ids::UNION_2017));

        let c = |id: &str| {
            let c = &m.candidates[id];
            (c.validly_nominated, c.fee_paid, c.data_agreement_signed)
        };
        assert_eq!(c(ids::CAND_A), (true, true, true));
        assert_eq!(c(ids::CAND_B), (true, false, true));
        assert_eq!(c(ids::CAND_C), (true, true, true));
        assert!(!c(ids::CAND_D).0);
        assert_eq!(c(ids::CAND_2016), (true, true, true));
        assert_eq!(m.campaigns[ids::CAMP_2016].election, ids::LEADER_2016);
        assert!(m.campaigns.values().all(|c| c.ended_at.is_none()));
        for (staffer, campaign) in [
            (ids::CS_A_STAFF, ids::CAMP_A),
            (ids::CS_A_CANDIDATE, ids::CAMP_A),
            (ids::CS_B_STAFF, ids::CAMP_B),
            (ids::CS_C_STAFF, ids::CAMP_C),
            (ids::CS_D_STAFF, ids::CAMP_D),
            (ids::CS_2016_STAFF, ids::CAMP_2016),
        ] {
            assert_eq!(m.campaign_staff[staffer].campaign, campaign);
        }
        assert_eq!(m.campaign_staff[ids::CS_A_STAFF].hourly_read_limit, 500);
        assert_eq!(m.campaign_staff[ids::CS_A_CANDIDATE].role, "candidate");
        let candidate = &m.campaign_staff[ids::CS_A_CANDIDATE].name;
        assert_eq!(candidate, &m.candidates[ids::CAND_A].name);

        assert_eq!(m.staff[ids::S_MEMBERSHIP].teams, [Team::Membership]);
        assert_eq!(m.staff[ids::S_COMPLIANCE].teams, [Team::Compliance]);
        assert_eq!(m.staff[ids::S_DPO].teams, [Team::DataProtection]);
        let london = m.staff[ids::S_REGIONAL_LONDON].region.as_deref();
        assert_eq!(london, Some(ids::REGION_LONDON));
        assert_eq!(m.staff[ids::S_EXPORT].teams, [Team::DataExport]);
        assert_eq!(m.staff[ids::S_EXPORT].hourly_read_limit, 100_000);
        let mut left = m.staff.iter().filter(|(_, s)| s.ended_at.is_some());
        assert_eq!(left.next().map(|(id, _)| id.as_str()), Some(ids::S_LEFT));
        assert!(left.next().is_none());

        assert!(m.volunteers[ids::V_PHONEBANK].ended_at.is_none());
        assert!(m.volunteers[ids::V_LINKHOLDER].ended_at.is_none());
        assert!(m.volunteers[ids::V_DEACTIVATED].ended_at.is_some());
        let mut sessions = m.call_sessions.values();
        assert!(sessions.all(|s| s.volunteer != ids::V_LINKHOLDER));

        assert_eq!(m.officers[ids::O_SECRETARY_001].clp, ids::CLP_LONDON);
        assert_eq!(m.officers[ids::O_SECRETARY_002].clp, ids::CLP_OTHER);
        assert_eq!(m.officers.len(), 20);
        assert!(m.representatives[ids::MP_001].ended_at.is_none());
        assert_eq!(m.representatives[ids::MP_RESIGNED].clp, ids::CLP_OTHER);
        assert!(m.representatives[ids::MP_RESIGNED].ended_at.is_some());
        let mailing = &m.processors[ids::P_MAILING].contract;
        assert_eq!(
            (&mailing.fields, &mailing.statuses),
            (&vec!["name".into(), "address".into()], &vec![S::Member])
        );
        let breach = &m.processors[ids::P_RANSOMWARE].contract;
        assert_eq!(breach.fields, ["name", "email", "phone"]);
        assert!(!breach.statuses.iter().any(|s| gone(*s)));
    }

    #[test]
    fn well_known_sessions_list_who_they_should() {
        let m = shared();
        let e = &m.elections[ids::LEADER_2020];
        let a = &m.call_sessions[ids::SESSION_A];
        assert_eq!(a.volunteer, ids::V_PHONEBANK);
        assert_eq!(a.campaign.as_deref(), Some(ids::CAMP_A));
        assert!(a.opens >= e.nominations_close && a.closes <= e.ballot_close);
        assert_eq!(a.members.len(), 50);
        assert!(a.members.iter().all(|id| eligible_2020(&m.members[id])));
        let office = &m.call_sessions[ids::SESSION_OFFICE_LONDON];
        assert_eq!(office.office.as_deref(), Some(ids::REGION_LONDON));
        assert_eq!(office.members.len(), 30);
        for id in &office.members {
            let region = &m.clps[&m.members[id].clp].region;
            assert_eq!(region, ids::REGION_LONDON, "{id}");
        }
        for s in m.call_sessions.values() {
            let phoneable = |id: &String| m.members[id].consents.contains(&Channel::Phone);
            assert!(s.members.iter().all(phoneable));
        }
        for s in [a, office] {
            assert!(s.members.iter().any(|id| id == ids::MEMBER_ELIGIBLE));
        }
    }

    #[test]
    fn well_known_members_are_as_documented() {
        let m = shared();
        let one = &m.members[ids::MEMBER_ELIGIBLE];
        assert!(eligible_2020(one) && one.clp == ids::CLP_LONDON && one.left.is_none());
        assert!(one.consents == ALL_CHANNELS && one.opt_outs.is_empty());
        assert_eq!(
            m.values[ids::MEMBER_ELIGIBLE]["contact_consents"],
            "phone, email, post"
        );
        let two = &m.members[ids::MEMBER_OTHER_CLP];
        assert!(eligible_2020(two) && two.clp == ids::CLP_OTHER);
        for (id, date) in [
            (ids::MEMBER_LEFT_2009, "2009-05-01"),
            (ids::MEMBER_LEFT_2023, "2023-06-01"),
        ] {
            let x = &m.members[id];
            assert_eq!(x.status, S::Former);
            assert_eq!(x.left.map(day).as_deref(), Some(date));
            assert_eq!(m.values[id]["left_on"], date);
        }
        let late = &m.members[ids::MEMBER_JOINED_AFTER_FREEZE];
        assert!(late.status == S::Member && late.in_good_standing && late.joined > FREEZE_2020);
        let out = &m.members[ids::MEMBER_EMAIL_OPT_OUT];
        assert!(out.consents.contains(&Channel::Email) && out.opt_outs == [Channel::Email]);
        assert_eq!(m.values[ids::MEMBER_EMAIL_OPT_OUT]["opt_outs"], "email");
    }

    #[test]
    fn status_mix_and_dates_are_plausible() {
        let m = shared();
        let n = m.members.len() as f64;
        let share = |s: S| m.members.values().filter(|x| x.status == s).count() as f64 / n;
        assert!((0.77..0.83).contains(&share(S::Member)));
        assert!((0.05..0.09).contains(&share(S::RegisteredSupporter)));
        assert!((0.035..0.065).contains(&share(S::AffiliatedSupporter)));
        assert!((0.05..0.09).contains(&share(S::Former)));
        assert!((0.004..0.02).contains(&share(S::Expelled)));
        for (id, x) in &m.members {
            assert_eq!(gone(x.status), x.left.is_some(), "{id}");
            assert!(x.joined >= JOINED_FROM && x.joined < JOINED_UNTIL, "{id}");
            let left_ok = |l: &Timestamp| *l >= x.joined && (LEFT_FROM..LEFT_UNTIL).contains(l);
            assert!(x.left.iter().all(left_ok), "{id}");
        }
        let count = |f: &dyn Fn(&Member) -> bool| m.members.values().filter(|x| f(x)).count();
        let late = count(&|x| !gone(x.status) && x.joined >= FREEZE_2020);
        assert!(late > 50, "{late} joined after the freeze");
        let left_2009 = count(&|x| x.left.is_some_and(|l| l < at(2010, 1, 1, 0)));
        assert!(left_2009 > 10, "{left_2009} left in 2009");
        let current = count(&|x| !gone(x.status));
        let good = count(&|x| x.in_good_standing);
        let share = good * 100 / current;
        assert!((90..100).contains(&share), "{good} of {current}");
        for clp in m.clps.keys() {
            let members = count(&|x| &x.clp == clp);
            assert!((100..320).contains(&members), "{clp}: {members}");
        }
    }

    #[test]
    fn every_member_has_a_value_for_every_field() -> Result {
        let fields = catalogue()?;
        let m = sample(11, 600);
        for (id, x) in &m.members {
            let values = &m.values[id];
            let applies = |f: &&String| *f != "left_on" || x.left.is_some();
            let want: BTreeSet<&String> = fields.iter().filter(applies).collect();
            assert_eq!(values.keys().collect::<BTreeSet<_>>(), want, "{id}");
            assert!(values.values().all(|v| !v.is_empty()), "{id}");
            assert_eq!(values["status"], x.status.as_str());
            assert_eq!(values["joined_on"], day(x.joined));
            assert!(values["phone"].starts_with("07700 900") && values["phone"].len() == 12);
            assert!(values["membership_number"].starts_with('L'));
        }
        Ok(())
    }

    #[test]
    fn round_trips_through_json() -> Result {
        let m = sample(3, 200);
        let back: Membership = serde_json::from_str(&serde_json::to_string(&m)?)?;
        assert_eq!(back, m);
        Ok(())
    }

    #[test]
    fn generated_policies_validate_beside_the_bundled_ones() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(&src).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
            }
        }
        write_generated_policies(dir.path(), 40).unwrap();
        let engine =
            crate::Engine::from_dir(dir.path()).unwrap_or_else(|e| panic!("{}", e.render()));
        let bundled = crate::Engine::from_dir(&src).unwrap();
        assert_eq!(
            engine.policy_ids().count(),
            bundled.policy_ids().count() + 40
        );
        assert!(engine.policy_ids().any(|id| id == "gen-region-9-bulk"));
    }
}
