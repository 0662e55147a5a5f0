//! Turns the CRM records one request needs into Cedar entities, and the request's
//! [`Context`] into Cedar's: the slice of the membership a decision reads, nothing more.

use std::collections::{HashMap, HashSet};

use cedar_policy::{EntityUid, RestrictedExpression};
use jiff::Timestamp;

use crate::bundle::entity_uid;
use crate::error::RequestError;
use crate::fields::FieldCatalogue;
use crate::model::{Directory, MemberStatus, PrincipalId, PrincipalRecord};
use crate::request::Context;

/// The time as Cedar's `datetime` reads it (millisecond precision, UTC).
pub(crate) fn cedar_time(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn uid(type_name: &str, id: &str) -> Result<EntityUid, RequestError> {
    entity_uid(type_name, id).map_err(|e| RequestError::InvalidData {
        what: format!("{type_name} `{id}`"),
        message: e.to_string(),
    })
}

fn time(ts: Timestamp) -> RestrictedExpression {
    RestrictedExpression::new_datetime(cedar_time(ts))
}

fn long(n: u64) -> RestrictedExpression {
    RestrictedExpression::new_long(i64::try_from(n).unwrap_or(i64::MAX))
}

fn strings<'a>(items: impl IntoIterator<Item = &'a str>) -> RestrictedExpression {
    RestrictedExpression::new_set(
        items
            .into_iter()
            .map(|s| RestrictedExpression::new_string(s.to_string())),
    )
}

/// The entities one request (or one page) needs, each added once.
pub(crate) struct Slice<'c> {
    /// The field catalogue, to check the fields records name.
    catalogue: &'c FieldCatalogue,
    entities: Vec<cedar_policy::Entity>,
    seen: HashSet<EntityUid>,
}

type Attrs = HashMap<String, RestrictedExpression>;

impl<'c> Slice<'c> {
    pub(crate) fn new(catalogue: &'c FieldCatalogue) -> Self {
        Slice {
            catalogue,
            entities: Vec::new(),
            seen: HashSet::new(),
        }
    }

    pub(crate) fn into_entities(self) -> Vec<cedar_policy::Entity> {
        self.entities
    }

    fn push(
        &mut self,
        uid: EntityUid,
        attrs: Attrs,
        parents: HashSet<EntityUid>,
    ) -> Result<(), RequestError> {
        let entity = cedar_policy::Entity::new(uid.clone(), attrs, parents).map_err(|e| {
            RequestError::InvalidData {
                what: uid.to_string(),
                message: e.to_string(),
            }
        })?;
        self.seen.insert(uid);
        self.entities.push(entity);
        Ok(())
    }

    fn has(&self, uid: &EntityUid) -> bool {
        self.seen.contains(uid)
    }

    fn dangling(from: &EntityUid, kind: &'static str, id: &str) -> RequestError {
        RequestError::DanglingReference {
            from: from.to_string(),
            kind,
            id: id.to_string(),
        }
    }

    /// Adds a region; returns its uid.
    fn region(
        &mut self,
        dir: &(impl Directory + ?Sized),
        id: &str,
        from: &EntityUid,
    ) -> Result<EntityUid, RequestError> {
        let u = uid("Region", id)?;
        if !self.has(&u) {
            dir.region(id)
                .ok_or_else(|| Self::dangling(from, "region", id))?;
            self.push(u.clone(), Attrs::new(), HashSet::new())?;
        }
        Ok(u)
    }

    /// Adds a CLP and its region; returns the CLP's uid.
    fn clp(
        &mut self,
        dir: &(impl Directory + ?Sized),
        id: &str,
        from: &EntityUid,
    ) -> Result<EntityUid, RequestError> {
        let u = uid("Clp", id)?;
        if !self.has(&u) {
            let clp = dir.clp(id).ok_or_else(|| Self::dangling(from, "CLP", id))?;
            let region = self.region(dir, &clp.region, &u)?;
            self.push(u.clone(), Attrs::new(), HashSet::from([region]))?;
        }
        Ok(u)
    }

    /// Adds an election.
    fn election(
        &mut self,
        dir: &(impl Directory + ?Sized),
        id: &str,
        from: Option<&EntityUid>,
    ) -> Result<EntityUid, RequestError> {
        let u = uid("Election", id)?;
        if !self.has(&u) {
            let e = dir.election(id).ok_or_else(|| match from {
                Some(from) => Self::dangling(from, "election", id),
                None => RequestError::UnknownElection(id.to_string()),
            })?;
            let attrs = Attrs::from([
                ("nominations_close".into(), time(e.nominations_close)),
                ("freeze_date".into(), time(e.freeze_date)),
                ("ballot_close".into(), time(e.ballot_close)),
            ]);
            self.push(u.clone(), attrs, HashSet::new())?;
        }
        Ok(u)
    }

    /// Adds a campaign with its candidate and election.
    fn campaign(
        &mut self,
        dir: &(impl Directory + ?Sized),
        id: &str,
        from: &EntityUid,
    ) -> Result<EntityUid, RequestError> {
        let u = uid("Campaign", id)?;
        if !self.has(&u) {
            let c = dir
                .campaign(id)
                .ok_or_else(|| Self::dangling(from, "campaign", id))?;
            let election = self.election(dir, &c.election, Some(&u))?;
            let cand_uid = uid("Candidate", &c.candidate)?;
            if !self.has(&cand_uid) {
                let cand = dir
                    .candidate(&c.candidate)
                    .ok_or_else(|| Self::dangling(&u, "candidate", &c.candidate))?;
                let attrs = Attrs::from([
                    (
                        "validly_nominated".into(),
                        RestrictedExpression::new_bool(cand.validly_nominated),
                    ),
                    (
                        "fee_paid".into(),
                        RestrictedExpression::new_bool(cand.fee_paid),
                    ),
                    (
                        "data_agreement_signed".into(),
                        RestrictedExpression::new_bool(cand.data_agreement_signed),
                    ),
                ]);
                self.push(cand_uid.clone(), attrs, HashSet::new())?;
            }
            let mut attrs = Attrs::from([
                (
                    "election".into(),
                    RestrictedExpression::new_entity_uid(election),
                ),
                (
                    "candidate".into(),
                    RestrictedExpression::new_entity_uid(cand_uid),
                ),
            ]);
            if let Some(t) = c.ended_at {
                attrs.insert("ended_at".into(), time(t));
            }
            self.push(u.clone(), attrs, HashSet::new())?;
        }
        Ok(u)
    }

    /// Adds the principal and what its attributes refer to; returns its uid.
    pub(crate) fn principal(
        &mut self,
        dir: &(impl Directory + ?Sized),
        id: &PrincipalId,
    ) -> Result<EntityUid, RequestError> {
        let u = uid(id.kind.type_name(), &id.id)?;
        if self.has(&u) {
            return Ok(u);
        }
        let record = dir
            .principal(id)
            .ok_or_else(|| RequestError::UnknownPrincipal(id.to_string()))?;
        let mut attrs = Attrs::new();
        let mut parents = HashSet::new();
        let (ended_at, limit) = match record {
            PrincipalRecord::Staff(s) => {
                for t in &s.teams {
                    parents.insert(uid("Team", t.as_str())?);
                }
                if let Some(r) = &s.region {
                    let region = self.region(dir, r, &u)?;
                    attrs.insert(
                        "region".into(),
                        RestrictedExpression::new_entity_uid(region),
                    );
                }
                (s.ended_at, s.hourly_read_limit)
            }
            PrincipalRecord::CampaignStaff(s) => {
                let campaign = self.campaign(dir, &s.campaign, &u)?;
                parents.insert(campaign.clone());
                attrs.insert(
                    "campaign".into(),
                    RestrictedExpression::new_entity_uid(campaign),
                );
                attrs.insert(
                    "role".into(),
                    RestrictedExpression::new_string(s.role.clone()),
                );
                (s.ended_at, s.hourly_read_limit)
            }
            PrincipalRecord::Volunteer(v) => (v.ended_at, v.hourly_read_limit),
            PrincipalRecord::Officer(o) => {
                let clp = self.clp(dir, &o.clp, &u)?;
                attrs.insert("clp".into(), RestrictedExpression::new_entity_uid(clp));
                attrs.insert(
                    "role".into(),
                    RestrictedExpression::new_string(o.role.clone()),
                );
                (o.ended_at, o.hourly_read_limit)
            }
            PrincipalRecord::Representative(r) => {
                let clp = self.clp(dir, &r.clp, &u)?;
                attrs.insert("clp".into(), RestrictedExpression::new_entity_uid(clp));
                (r.ended_at, r.hourly_read_limit)
            }
            PrincipalRecord::Processor(p) => {
                let contract = uid("Contract", &id.id)?;
                let fields = p
                    .contract
                    .fields
                    .iter()
                    .map(|f| match self.catalogue.id(f) {
                        Some(_) => uid("Field", f).map(RestrictedExpression::new_entity_uid),
                        None => Err(RequestError::UnknownField(format!(
                            "{f}` in the contract of processor `{}",
                            id.id
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let c_attrs = Attrs::from([
                    ("fields".into(), RestrictedExpression::new_set(fields)),
                    (
                        "statuses".into(),
                        strings(p.contract.statuses.iter().map(|s| s.as_str())),
                    ),
                    ("starts".into(), time(p.contract.starts)),
                    ("ends".into(), time(p.contract.ends)),
                ]);
                self.push(contract.clone(), c_attrs, HashSet::new())?;
                attrs.insert(
                    "contract".into(),
                    RestrictedExpression::new_entity_uid(contract),
                );
                (p.ended_at, p.hourly_read_limit)
            }
        };
        if let Some(t) = ended_at {
            attrs.insert("ended_at".into(), time(t));
        }
        attrs.insert("hourly_read_limit".into(), long(u64::from(limit)));
        self.push(u.clone(), attrs, parents)?;
        Ok(u)
    }

    /// Adds the member with its CLP and region; returns its uid.
    pub(crate) fn member(
        &mut self,
        dir: &(impl Directory + ?Sized),
        id: &str,
    ) -> Result<EntityUid, RequestError> {
        let u = uid("Member", id)?;
        if self.has(&u) {
            return Ok(u);
        }
        let m = dir
            .member(id)
            .ok_or_else(|| RequestError::UnknownMember(id.to_string()))?;
        // A member who left without a date would never reach the end of retention.
        if matches!(m.status, MemberStatus::Former | MemberStatus::Expelled) && m.left.is_none() {
            return Err(RequestError::InvalidData {
                what: format!("member `{id}`"),
                message: format!(
                    "a {} member needs the date they left (`left`)",
                    m.status.as_str()
                ),
            });
        }
        let clp = self.clp(dir, &m.clp, &u)?;
        let mut attrs = Attrs::from([
            (
                "status".into(),
                RestrictedExpression::new_string(m.status.as_str().into()),
            ),
            ("joined".into(), time(m.joined)),
            (
                "in_good_standing".into(),
                RestrictedExpression::new_bool(m.in_good_standing),
            ),
            (
                "consents".into(),
                strings(m.consents.iter().map(|c| c.as_str())),
            ),
            (
                "opt_outs".into(),
                strings(m.opt_outs.iter().map(|c| c.as_str())),
            ),
        ]);
        if let Some(t) = m.left {
            attrs.insert("left".into(), time(t));
        }
        self.push(u.clone(), attrs, HashSet::from([clp]))?;
        Ok(u)
    }

    /// Adds the context's election and call session (with what they refer to) and
    /// returns the context's attributes except `field`.
    pub(crate) fn context(
        &mut self,
        dir: &(impl Directory + ?Sized),
        ctx: &Context,
    ) -> Result<Vec<(String, RestrictedExpression)>, RequestError> {
        let mut pairs = vec![
            ("now".to_string(), time(ctx.now)),
            ("reads_this_hour".to_string(), long(ctx.reads_this_hour)),
        ];
        if let Some(e) = &ctx.election {
            let e = self.election(dir, e, None)?;
            pairs.push(("election".into(), RestrictedExpression::new_entity_uid(e)));
        }
        if let Some(s) = &ctx.session {
            let s = self.session(dir, s)?;
            pairs.push(("session".into(), RestrictedExpression::new_entity_uid(s)));
        }
        if let Some(p) = &ctx.purpose {
            pairs.push((
                "purpose".into(),
                RestrictedExpression::new_string(p.clone()),
            ));
        }
        if let Some(r) = &ctx.reason {
            pairs.push(("reason".into(), RestrictedExpression::new_string(r.clone())));
        }
        Ok(pairs)
    }

    fn session(
        &mut self,
        dir: &(impl Directory + ?Sized),
        id: &str,
    ) -> Result<EntityUid, RequestError> {
        let u = uid("CallSession", id)?;
        if self.has(&u) {
            return Ok(u);
        }
        let s = dir
            .call_session(id)
            .ok_or_else(|| RequestError::UnknownSession(id.to_string()))?;
        let volunteer =
            PrincipalId::new(crate::model::PrincipalKind::Volunteer, s.volunteer.clone());
        if dir.principal(&volunteer).is_none() {
            return Err(Self::dangling(&u, "volunteer", &s.volunteer));
        }
        let members = s
            .members
            .iter()
            .map(|m| uid("Member", m).map(RestrictedExpression::new_entity_uid))
            .collect::<Result<Vec<_>, _>>()?;
        let mut attrs = Attrs::from([
            (
                "volunteer".into(),
                RestrictedExpression::new_entity_uid(uid("Volunteer", &s.volunteer)?),
            ),
            ("members".into(), RestrictedExpression::new_set(members)),
            ("opens".into(), time(s.opens)),
            ("closes".into(), time(s.closes)),
        ]);
        if let Some(c) = &s.campaign {
            let c = self.campaign(dir, c, &u)?;
            attrs.insert("campaign".into(), RestrictedExpression::new_entity_uid(c));
        }
        if let Some(r) = &s.office {
            let r = self.region(dir, r, &u)?;
            attrs.insert("office".into(), RestrictedExpression::new_entity_uid(r));
        }
        self.push(u.clone(), attrs, HashSet::new())?;
        Ok(u)
    }
}
