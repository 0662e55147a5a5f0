//! The [`Directory`]: the principal side of the party's records (staff, campaign staff,
//! volunteers, officers, representatives, processors, campaigns, candidates, elections,
//! call sessions, CLPs and regions), kept between requests in the compiled form the
//! engine decides on. Members are not kept: each request brings its own.

use std::sync::{Arc, OnceLock};

use cedar_compiled::{Store, Value};

use crate::entities::{
    cedar_can_hold, check_member, display_uid, ty, Attr, CedarSlice, Record, Sink, Val,
};
use crate::error::{RecordError, RequestError};
use crate::index::{action_index, kind_index, Index, Places, PrincipalRules, Subject};
use crate::records::{
    CallSession, Campaign, CampaignStaff, Candidate, Clp, Election, MemberRef, Membership, Officer,
    PrincipalId, PrincipalKind, PrincipalRecord, Processor, Region, Representative, Staff,
    Volunteer,
};
use crate::request::{check_reason, Action, Context};

type FxMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// One record for [`Directory::upsert`]: any kind the directory keeps.
#[derive(Debug, Clone, PartialEq)]
pub enum DirectoryRecord {
    /// A region.
    Region(Region),
    /// A constituency party.
    Clp(Clp),
    /// An election.
    Election(Election),
    /// A candidate.
    Candidate(Candidate),
    /// A campaign.
    Campaign(Campaign),
    /// A member of party staff.
    Staff(Staff),
    /// Someone acting for a campaign.
    CampaignStaff(CampaignStaff),
    /// A volunteer.
    Volunteer(Volunteer),
    /// A CLP officer.
    Officer(Officer),
    /// An elected representative.
    Representative(Representative),
    /// A data processor.
    Processor(Processor),
    /// A phone-bank call session.
    CallSession(CallSession),
}

macro_rules! from_record {
    ($($t:ident),*) => {$(
        impl From<$t> for DirectoryRecord {
            fn from(r: $t) -> Self {
                DirectoryRecord::$t(r)
            }
        }
    )*};
}
from_record!(
    Region,
    Clp,
    Election,
    Candidate,
    Campaign,
    Staff,
    CampaignStaff,
    Volunteer,
    Officer,
    Representative,
    Processor,
    CallSession
);

/// The principal side of the party's records, for one [`Engine`](crate::Engine): built
/// with [`Directory::new`] or [`Directory::from_membership`], kept between requests,
/// updated one record at a time with [`Directory::upsert`].
///
/// Every record is checked when it enters: a reference to a record the directory does
/// not hold (a campaign's election, an officer's CLP, a session's volunteer, ...), a
/// processor's contract naming a field the catalogue lacks, or a time Cedar's
/// `datetime` cannot hold is refused, and the directory is left unchanged. Both decision
/// paths, the engine's and [`Engine::reference`](crate::Engine::reference), read the
/// same checked records.
///
/// It also keeps, per principal and action, the engine's policies specialised to that
/// principal (its teams, campaign, candidate, election dates and contract folded in),
/// built the first time the principal asks and forgotten when an upsert changes a record
/// they read: deciding then evaluates only what depends on the request's context and
/// member.
///
/// # Example
/// ```
/// use membergate::{sample, Directory, Engine, Staff, Team};
///
/// let engine = Engine::from_dir("policies")?;
/// let mut directory = Directory::from_membership(&engine, &sample::bundled())?;
/// directory.upsert("s-new", Staff {
///     name: "A new starter".into(),
///     teams: vec![Team::Membership],
///     region: None,
///     ended_at: None,
///     hourly_read_limit: 500,
/// })?;
/// // A record that refers to a missing one is refused.
/// let err = directory.upsert("s-lost", Staff {
///     name: String::new(),
///     teams: vec![Team::Regional],
///     region: Some("atlantis".into()),
///     ended_at: None,
///     hourly_read_limit: 10,
/// }).unwrap_err();
/// assert!(err.to_string().contains("atlantis"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Directory {
    index: Arc<Index>,
    /// The records, as given (members always empty).
    records: Membership,
    store: Store,
    principals: [FxMap<Box<str>, Principal>; 6],
    elections: FxMap<Box<str>, u32>,
    sessions: FxMap<Box<str>, u32>,
    /// Per CLP: its uid and the ancestors a member of it has (the CLP and its region),
    /// sorted.
    clps: FxMap<Box<str>, (u32, Box<[u32]>)>,
    /// The uids of the members the policies name or call sessions list (every other
    /// member's uid is [`FRESH_MEMBER`]: no stored value refers to it).
    listed_members: FxMap<Box<str>, u32>,
}

/// A principal: its uid and its plan for each action, built when first asked (see
/// [`Index::plan`]) and forgotten when a record it read changes.
#[derive(Debug, Clone)]
struct Principal {
    uid: u32,
    rules: [OnceLock<Arc<PrincipalRules>>; Action::ALL.len()],
}

/// The compiled writer: a record's description as interned attributes and parents.
struct StoreSink<'i, 's> {
    index: &'i Index,
    store: &'s mut Store,
    attrs: Vec<(u32, Value)>,
    parents: Vec<u32>,
}

impl<'a> Sink<'a> for StoreSink<'_, '_> {
    fn attr(&mut self, attr: Attr, value: Val<'a>) {
        let v = self
            .index
            .value(value, &mut |ty, id| self.store.intern_uid(ty, id));
        self.attrs.push((self.index.attr(attr), v));
    }
    fn parent(&mut self, ty: &'static str, id: &'a str) {
        self.parents.push(self.store.intern_uid(ty, id));
    }
}

/// The references a record makes, for the check on upsert.
#[derive(Default)]
struct Refs<'a> {
    refs: Vec<(&'static str, &'a str)>,
}

impl<'a> Sink<'a> for Refs<'a> {
    fn attr(&mut self, _: Attr, value: Val<'a>) {
        match value {
            Val::Ref(ty, id) => self.refs.push((ty, id)),
            Val::Refs(ty, ids) => self.refs.extend(ids.iter().map(|id| (ty, id.as_str()))),
            _ => {}
        }
    }
    fn parent(&mut self, ty: &'static str, id: &'a str) {
        self.refs.push((ty, id));
    }
}

impl Directory {
    /// An empty directory for `engine`.
    pub fn new(engine: &crate::Engine) -> Directory {
        let index = engine.index().clone();
        // Members the policies name have their uids already.
        let listed_members = index
            .base_store()
            .uids_of_type(ty::MEMBER)
            .map(|(id, u)| (id.into(), u))
            .collect();
        Directory {
            store: index.base_store().clone(),
            index,
            records: Membership::default(),
            principals: Default::default(),
            elections: FxMap::default(),
            sessions: FxMap::default(),
            clps: FxMap::default(),
            listed_members,
        }
    }

    /// The principal side of `membership` (its members are left out: they come with
    /// each request).
    ///
    /// # Errors
    /// The first record that [`Directory::upsert`] would refuse, places first, then
    /// elections, candidates, campaigns, principals and call sessions.
    pub fn from_membership(
        engine: &crate::Engine,
        membership: &Membership,
    ) -> Result<Directory, RecordError> {
        let mut d = Directory::new(engine);
        d.load(membership)?;
        Ok(d)
    }

    /// The same records for another engine (a reloaded policy directory): the compiled
    /// form is rebuilt from the records, in milliseconds for a party's principals.
    ///
    /// # Errors
    /// As [`Directory::from_membership`] (a processor contract naming a field the new
    /// catalogue lacks, say).
    pub fn for_engine(&self, engine: &crate::Engine) -> Result<Directory, RecordError> {
        Directory::from_membership(engine, &self.records)
    }

    fn load(&mut self, m: &Membership) -> Result<(), RecordError> {
        // Places first, then what refers to them, so every reference is checked against
        // records already in.
        for (id, r) in &m.regions {
            self.put(id, r.clone().into(), false)?;
        }
        for (id, r) in &m.clps {
            self.put(id, r.clone().into(), false)?;
        }
        for (id, r) in &m.elections {
            self.put(id, r.clone().into(), false)?;
        }
        for (id, r) in &m.candidates {
            self.put(id, r.clone().into(), false)?;
        }
        for (id, r) in &m.campaigns {
            self.put(id, r.clone().into(), false)?;
        }
        for (id, r) in &m.staff {
            self.put(id, r.clone().into(), false)?;
        }
        for (id, r) in &m.campaign_staff {
            self.put(id, r.clone().into(), false)?;
        }
        for (id, r) in &m.volunteers {
            self.put(id, r.clone().into(), false)?;
        }
        for (id, r) in &m.officers {
            self.put(id, r.clone().into(), false)?;
        }
        for (id, r) in &m.representatives {
            self.put(id, r.clone().into(), false)?;
        }
        for (id, r) in &m.processors {
            self.put(id, r.clone().into(), false)?;
        }
        for (id, r) in &m.call_sessions {
            self.put(id, r.clone().into(), false)?;
        }
        self.store.close();
        self.refresh_clps();
        Ok(())
    }

    /// Inserts or replaces one record under `id`.
    ///
    /// # Errors
    /// [`RecordError`] if the record refers to a record of another kind the directory
    /// does not hold, a processor's contract names a field the catalogue lacks, or a
    /// time is outside what Cedar's `datetime` holds. The directory is then unchanged.
    ///
    /// # Example
    /// See [`Directory`].
    pub fn upsert(
        &mut self,
        id: &str,
        record: impl Into<DirectoryRecord>,
    ) -> Result<(), RecordError> {
        let record = record.into();
        let kind = as_record(&record).entity_type();
        self.put(id, record, true)?;
        self.refresh_clps();
        // The rules that read the record (a processor's contract is written with it).
        let changed: Vec<u32> = [
            Some(kind),
            (kind == PrincipalKind::Processor.type_name()).then_some(ty::CONTRACT),
        ]
        .into_iter()
        .flatten()
        .filter_map(|t| self.store.lookup_uid(t, id))
        .collect();
        for p in self.principals.iter_mut().flat_map(|m| m.values_mut()) {
            for plan in &mut p.rules {
                if plan
                    .get()
                    .is_some_and(|x| changed.iter().any(|u| x.reads(*u)))
                {
                    plan.take();
                }
            }
        }
        Ok(())
    }

    /// The records the directory holds: the principal side (its `members` and `values`
    /// are always empty).
    pub fn records(&self) -> &Membership {
        &self.records
    }

    fn put(&mut self, id: &str, record: DirectoryRecord, close: bool) -> Result<(), RecordError> {
        self.check(id, &record)?;
        self.write(id, as_record(&record), close);
        let records = &mut self.records;
        let key = id.to_string();
        match record {
            DirectoryRecord::Region(r) => {
                records.regions.insert(key, r);
            }
            DirectoryRecord::Clp(r) => {
                records.clps.insert(key, r);
            }
            DirectoryRecord::Election(r) => {
                records.elections.insert(key, r);
            }
            DirectoryRecord::Candidate(r) => {
                records.candidates.insert(key, r);
            }
            DirectoryRecord::Campaign(r) => {
                records.campaigns.insert(key, r);
            }
            DirectoryRecord::Staff(r) => {
                records.staff.insert(key, r);
            }
            DirectoryRecord::CampaignStaff(r) => {
                records.campaign_staff.insert(key, r);
            }
            DirectoryRecord::Volunteer(r) => {
                records.volunteers.insert(key, r);
            }
            DirectoryRecord::Officer(r) => {
                records.officers.insert(key, r);
            }
            DirectoryRecord::Representative(r) => {
                records.representatives.insert(key, r);
            }
            DirectoryRecord::Processor(r) => {
                records.processors.insert(key, r);
            }
            DirectoryRecord::CallSession(r) => {
                records.call_sessions.insert(key, r);
            }
        }
        Ok(())
    }

    /// The check every record passes before it enters.
    fn check(&self, id: &str, record: &DirectoryRecord) -> Result<(), RecordError> {
        let described = as_record(record);
        let what = display_uid(described.entity_type(), id);
        described.check_times(id).map_err(|e| match e {
            RequestError::InvalidData { what, message } => RecordError::Invalid { what, message },
            other => RecordError::Invalid {
                what: what.clone(),
                message: other.to_string(),
            },
        })?;
        if let Record::Principal(PrincipalRecord::Processor(p)) = described {
            for f in &p.contract.fields {
                if self.index.field(f).is_none() {
                    return Err(RecordError::UnknownField {
                        what,
                        field: f.clone(),
                    });
                }
            }
        }
        let mut refs = Refs::default();
        described.describe(id, &mut refs);
        for (t, target) in refs.refs {
            if matches!(t, ty::TEAM | ty::FIELD | ty::MEMBER | ty::CONTRACT) {
                // Fixed by the schema or the catalogue, the processor's own contract, or
                // members (which come with each request).
                continue;
            }
            if self.lookup(t, target).is_none() {
                return Err(RecordError::Dangling {
                    from: what,
                    kind: kind_word(t),
                    id: target.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Writes `record` (checked) to the compiled store under `id`.
    fn write(&mut self, id: &str, record: Record<'_>, close: bool) {
        let uid = self.store.intern_uid(record.entity_type(), id);
        let mut sink = StoreSink {
            index: &self.index,
            store: &mut self.store,
            attrs: Vec::new(),
            parents: Vec::new(),
        };
        record.describe(id, &mut sink);
        let (attrs, parents) = (sink.attrs, sink.parents);
        self.store.set_entity(uid, attrs, parents, close);
        match record {
            Record::Principal(p) => {
                if let PrincipalRecord::Processor(x) = p {
                    self.write(id, Record::Contract(&x.contract), close);
                }
                if let Some(m) = self.principals.get_mut(kind_index(p.kind())) {
                    m.insert(
                        id.into(),
                        Principal {
                            uid,
                            rules: Default::default(),
                        },
                    );
                }
            }
            Record::Election(_) => {
                self.elections.insert(id.into(), uid);
            }
            Record::CallSession(x) => {
                self.sessions.insert(id.into(), uid);
                for m in &x.members {
                    let u = self.store.intern_uid(ty::MEMBER, m);
                    self.listed_members.insert(m.as_str().into(), u);
                }
            }
            Record::Clp(_) => {
                self.clps.insert(id.into(), (uid, Box::new([])));
            }
            _ => {}
        }
    }

    /// Recomputes what a member of each CLP has as ancestors.
    fn refresh_clps(&mut self) {
        for (uid, closure) in self.clps.values_mut() {
            let mut all: Vec<u32> = self.store.entity_ancestors(*uid).to_vec();
            all.push(*uid);
            all.sort_unstable();
            all.dedup();
            *closure = all.into();
        }
    }

    /// The stored record `ty::"id"`, if the directory holds it.
    fn lookup(&self, t: &str, id: &str) -> Option<Record<'_>> {
        let r = &self.records;
        Some(match t {
            ty::REGION => r.regions.get(id).map(|_| Record::Region)?,
            ty::CLP => Record::Clp(r.clps.get(id)?),
            ty::ELECTION => Record::Election(r.elections.get(id)?),
            ty::CANDIDATE => Record::Candidate(r.candidates.get(id)?),
            ty::CAMPAIGN => Record::Campaign(r.campaigns.get(id)?),
            ty::CONTRACT => Record::Contract(&r.processors.get(id)?.contract),
            ty::CALL_SESSION => Record::CallSession(r.call_sessions.get(id)?),
            _ => {
                let kind = PrincipalKind::ALL
                    .into_iter()
                    .find(|k| k.type_name() == t)?;
                Record::Principal(r.principal(&PrincipalId::new(kind, id))?)
            }
        })
    }

    // ------------------------------------------------------------ for the engine

    pub(crate) fn index(&self) -> &Arc<Index> {
        &self.index
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    fn principal(&self, id: &PrincipalId) -> Result<&Principal, RequestError> {
        self.principals
            .get(kind_index(id.kind))
            .and_then(|m| m.get(id.id.as_str()))
            .ok_or_else(|| RequestError::UnknownPrincipal(id.to_string()))
    }

    /// The principal's uid and its plan for `action` (built on first use).
    pub(crate) fn principal_rules(
        &self,
        id: &PrincipalId,
        action: Action,
    ) -> Result<(u32, &PrincipalRules), RequestError> {
        let p = self.principal(id)?;
        let plan = p
            .rules
            .get(action_index(action))
            .ok_or_else(|| RequestError::UnknownPrincipal(id.to_string()))?
            .get_or_init(|| {
                Arc::new(
                    self.index
                        .principal_rules(&self.store, p.uid, id.kind, action),
                )
            });
        Ok((p.uid, plan))
    }

    /// The check a request's context passes before either path decides: its time fits
    /// Cedar's `datetime`, and its election and call session are in the directory.
    pub(crate) fn check_context(&self, ctx: &Context) -> Result<(), RequestError> {
        self.context_uids(ctx).map(|_| ())
    }

    /// The uids of the context's election and call session, after
    /// [`Directory::check_context`]'s checks.
    pub(crate) fn context_uids(
        &self,
        ctx: &Context,
    ) -> Result<(Option<u32>, Option<u32>), RequestError> {
        if !cedar_can_hold(ctx.now) {
            return Err(RequestError::InvalidContext(format!(
                "the time `{}` is outside the years 0 to 9999 Cedar's datetime holds",
                ctx.now
            )));
        }
        if let Some(reason) = &ctx.reason {
            check_reason(reason).map_err(RequestError::InvalidContext)?;
        }
        let election = ctx
            .election
            .as_deref()
            .map(|e| self.election_uid(e))
            .transpose()?;
        let session = ctx
            .session
            .as_deref()
            .map(|s| self.session_uid(s))
            .transpose()?;
        Ok((election, session))
    }

    /// The election's uid.
    pub(crate) fn election_uid(&self, id: &str) -> Result<u32, RequestError> {
        self.elections
            .get(id)
            .copied()
            .ok_or_else(|| RequestError::UnknownElection(id.to_string()))
    }

    /// The call session's uid.
    pub(crate) fn session_uid(&self, id: &str) -> Result<u32, RequestError> {
        self.sessions
            .get(id)
            .copied()
            .ok_or_else(|| RequestError::UnknownSession(id.to_string()))
    }

    /// The member of a request, checked and resolved (its uid and ancestors).
    pub(crate) fn member<'a>(&'a self, m: MemberRef<'a>) -> Result<Subject<'a>, RequestError> {
        let ancestors = self.member_ancestors(m)?;
        Ok(self.subject(m, ancestors))
    }

    /// [`Directory::member`] in two steps, so that the subject is built where it is used
    /// rather than moved out of a `Result`: the checks, giving the member's ancestors
    /// (its CLP and region)...
    pub(crate) fn member_ancestors<'a>(
        &'a self,
        m: MemberRef<'_>,
    ) -> Result<&'a [u32], RequestError> {
        check_member(m.id, m.attrs)?;
        let (_, ancestors) =
            self.clps
                .get(m.attrs.clp.as_str())
                .ok_or_else(|| RequestError::DanglingReference {
                    from: display_uid(ty::MEMBER, m.id),
                    kind: "CLP",
                    id: m.attrs.clp.clone(),
                })?;
        Ok(ancestors)
    }

    /// ...and the subject.
    #[inline]
    pub(crate) fn subject<'a>(&'a self, m: MemberRef<'a>, ancestors: &'a [u32]) -> Subject<'a> {
        // A member a call session lists has a uid in the store already; any other is
        // one no stored value refers to.
        Subject::new(
            &self.index,
            (&self.listed_members, FRESH_MEMBER),
            (m.id, m.attrs),
            ancestors,
        )
    }

    /// The Cedar entities a request (or a page) reads: the principal, the context's
    /// election and session, the members, and every record they refer to. Errors in the
    /// same order as the compiled path's: the principal, the context, each member.
    pub(crate) fn cedar_entities(
        &self,
        principal: &PrincipalId,
        members: &[MemberRef<'_>],
        ctx: &Context,
    ) -> Result<CedarSlice, RequestError> {
        let mut slice = CedarSlice::default();
        let mut todo: Vec<(&'static str, &str)> = Vec::new();
        let record = self
            .records
            .principal(principal)
            .ok_or_else(|| RequestError::UnknownPrincipal(principal.to_string()))?;
        todo.extend(slice.add(&principal.id, Record::Principal(record))?);
        self.check_context(ctx)?;
        if let Some(e) = &ctx.election {
            todo.push((ty::ELECTION, e));
        }
        if let Some(s) = &ctx.session {
            todo.push((ty::CALL_SESSION, s));
        }
        for m in members {
            self.member(*m)?;
            todo.extend(slice.add(m.id, Record::Member(m.attrs))?);
        }
        while let Some((t, id)) = todo.pop() {
            if matches!(t, ty::TEAM | ty::FIELD | ty::MEMBER) || slice.has(t, id) {
                continue;
            }
            // Every reference was checked when its record entered.
            if let Some(r) = self.lookup(t, id) {
                todo.extend(slice.add(id, r)?);
            }
        }
        Ok(slice)
    }
}

/// The uid of a request's member that no stored value refers to.
pub(crate) const FRESH_MEMBER: u32 = u32::MAX - 1;

fn as_record(r: &DirectoryRecord) -> Record<'_> {
    match r {
        DirectoryRecord::Region(_) => Record::Region,
        DirectoryRecord::Clp(x) => Record::Clp(x),
        DirectoryRecord::Election(x) => Record::Election(x),
        DirectoryRecord::Candidate(x) => Record::Candidate(x),
        DirectoryRecord::Campaign(x) => Record::Campaign(x),
        DirectoryRecord::Staff(x) => Record::Principal(PrincipalRecord::Staff(x)),
        DirectoryRecord::CampaignStaff(x) => Record::Principal(PrincipalRecord::CampaignStaff(x)),
        DirectoryRecord::Volunteer(x) => Record::Principal(PrincipalRecord::Volunteer(x)),
        DirectoryRecord::Officer(x) => Record::Principal(PrincipalRecord::Officer(x)),
        DirectoryRecord::Representative(x) => Record::Principal(PrincipalRecord::Representative(x)),
        DirectoryRecord::Processor(x) => Record::Principal(PrincipalRecord::Processor(x)),
        DirectoryRecord::CallSession(x) => Record::CallSession(x),
    }
}

/// How an error names a kind of record referred to.
fn kind_word(t: &str) -> &'static str {
    match t {
        ty::REGION => "region",
        ty::CLP => "CLP",
        ty::ELECTION => "election",
        ty::CANDIDATE => "candidate",
        ty::CAMPAIGN => "campaign",
        ty::VOLUNTEER => "volunteer",
        _ => "record",
    }
}

#[cfg(all(test, feature = "sample"))]
mod tests {
    use super::*;
    use crate::request::{Action, MemberRequest};
    use crate::{sample, Engine};

    /// A policy that names members by uid, one a call session lists and one it does not:
    /// the engine must give those members the uids the policy compares with.
    #[test]
    fn members_named_by_a_policy_are_recognised() {
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(src).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
            }
        }
        let party = sample::bundled();
        let listed = &party.call_sessions[sample::ids::SESSION_A].members[0];
        let unlisted = party
            .members
            .keys()
            .find(|id| !party.call_sessions.values().any(|s| s.members.contains(id)))
            .unwrap();
        std::fs::write(
            dir.path().join("named.cedar"),
            format!(
                "@id(\"named-members\")\nforbid(principal, action, resource)\nwhen {{ resource == Member::{listed:?} || resource in [Member::{unlisted:?}] }};\n"
            ),
        )
        .unwrap();
        let engine = Engine::from_dir(dir.path()).unwrap();
        let directory = Directory::from_membership(&engine, &party).unwrap();
        let staff = PrincipalId::new(PrincipalKind::Staff, sample::ids::S_MEMBERSHIP);
        let ctx = Context::at("2024-05-01T09:00:00Z".parse().unwrap());
        let mut named = 0;
        let other = [sample::ids::MEMBER_LEFT_2009, sample::ids::MEMBER_LEFT_2023]
            .into_iter()
            .find(|id| id != listed && id != unlisted)
            .unwrap();
        for id in [listed.as_str(), unlisted.as_str(), other] {
            let req = MemberRequest {
                principal: &staff,
                action: Action::Read,
                member: party.member(id).unwrap(),
                context: &ctx,
            };
            let got = engine.field_decisions(&directory, &req).unwrap();
            assert_eq!(
                got,
                engine
                    .reference()
                    .field_decisions(&directory, &req)
                    .unwrap(),
                "{id}"
            );
            if got.all_policies().any(|p| p == "named-members") {
                named += 1;
                assert!(got.granted().is_empty(), "{id}");
            }
        }
        assert_eq!(
            named, 2,
            "the two named members are forbidden, the third is not"
        );
    }
}

impl Places for Directory {
    fn clps_within(&self, uids: &[u32]) -> Vec<String> {
        let mut out: Vec<String> = self
            .clps
            .iter()
            .filter(|(_, (uid, ancestors))| {
                uids.iter()
                    .any(|u| u == uid || ancestors.binary_search(u).is_ok())
            })
            .map(|(id, _)| id.to_string())
            .collect();
        out.sort_unstable();
        out
    }

    fn members_among(&self, uids: &[u32]) -> Vec<String> {
        let member = self.store.type_id(ty::MEMBER);
        let mut out: Vec<String> = uids
            .iter()
            .filter_map(|u| self.store.uid_parts(*u))
            .filter(|(t, _)| Some(*t) == member)
            .map(|(_, id)| id.to_string())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}
