//! A second oracle for plans: Cedar's own type-aware partial evaluation (`tpe`,
//! experimental in cedar-policy 4.14.1). For a request whose member is unknown, Cedar
//! gives residual policies; re-evaluated on each member (`TpeResponse::reauthorize`),
//! they must decide every field as the plan does.
//!
//! Principals: one or two of each kind, with the sample's special cases; contexts: a
//! share of each one's boundary contexts; actions: read, export, contact by phone and
//! erase; members: the sample's special members, call sessions' members and a spread of
//! the rest. `tpe` needs the whole principal side known and the member unknown: the
//! entities are those Cedar's reference path writes for the request, without the member.

use cedar_policy::{Entities, PartialEntities, PartialEntityUid, PartialRequest};
use membergate::sample::ids;
use membergate::{Action, MemberRef, PrincipalId, PrincipalKind, Request};

use crate::support::{boundary_contexts, bundled, directory, engine, SPECIAL_MEMBERS};

/// Members to decide on: the special ones, two of each call session and a spread.
fn members() -> Vec<MemberRef<'static>> {
    let party = bundled();
    let mut out: Vec<&str> = SPECIAL_MEMBERS.to_vec();
    for s in party.call_sessions.values() {
        out.extend(s.members.iter().take(2).map(String::as_str));
    }
    out.extend(party.members.keys().step_by(400).map(String::as_str));
    out.sort_unstable();
    out.dedup();
    out.into_iter()
        .map(|id| party.member(id).expect("a member of the sample"))
        .collect()
}

#[test]
fn cedar_residuals_decide_every_member_as_the_plan() {
    let (e, dir, party) = (engine(), directory(), bundled());
    let members = members();
    let principals = [
        (PrincipalKind::CampaignStaff, ids::CS_A_STAFF),
        (PrincipalKind::CampaignStaff, ids::CS_B_STAFF),
        (PrincipalKind::Volunteer, ids::V_PHONEBANK),
        (PrincipalKind::Officer, ids::O_SECRETARY_001),
        (PrincipalKind::Representative, ids::MP_RESIGNED),
        (PrincipalKind::Processor, ids::P_MAILING),
        (PrincipalKind::Staff, ids::S_MEMBERSHIP),
        (PrincipalKind::Staff, ids::S_COMPLIANCE),
        (PrincipalKind::Staff, ids::S_REGIONAL_LONDON),
    ];
    let member_type: cedar_policy::EntityTypeName = "Member".parse().expect("a type name");
    let (mut requests, mut decisions, mut residual, mut constant) =
        (0usize, 0usize, 0usize, 0usize);
    let started = std::time::Instant::now();
    for (kind, id) in principals {
        let p = PrincipalId::new(kind, id);
        let contexts = boundary_contexts(party, &p);
        for ctx in contexts.iter().step_by(4) {
            for action in [
                Action::Read,
                Action::Export,
                Action::ContactPhone,
                Action::Erase,
            ] {
                let Ok(plan) = e.plan(dir, &p, action, ctx) else {
                    continue;
                };
                for (field, field_plan) in plan.fields() {
                    let ask = |member| Request {
                        principal: &p,
                        action,
                        member,
                        field,
                        context: ctx,
                    };
                    let (request, entities) = e
                        .reference()
                        .cedar_inputs(dir, &ask(members[0]))
                        .expect("Cedar's inputs");
                    let principal_side: Vec<cedar_policy::Entity> = entities
                        .iter()
                        .filter(|x| x.uid().type_name() != &member_type)
                        .cloned()
                        .collect();
                    let known = Entities::from_entities(principal_side.iter().cloned(), None)
                        .expect("the principal side");
                    let partial = PartialRequest::new(
                        PartialEntityUid::from_concrete(
                            request.principal().expect("a principal").clone(),
                        ),
                        request.action().expect("an action").clone(),
                        PartialEntityUid::new(member_type.clone(), None),
                        request.context().cloned(),
                        e.schema(),
                    )
                    .expect("a partial request");
                    let known =
                        PartialEntities::from_concrete(known, e.schema()).expect("entities");
                    let response = e
                        .policies()
                        .tpe(&partial, &known, e.schema())
                        .expect("Cedar's partial evaluation");
                    requests += 1;
                    if let Some(d) = response.decision() {
                        // Decided whatever the member: so must the plan be.
                        constant += 1;
                        let cedar = d == cedar_policy::Decision::Allow;
                        for m in &members {
                            assert_eq!(
                                field_plan.holds(m.id, m.attrs),
                                Some(cedar),
                                "{p} {action} {field} at {ctx:?}: plan {field_plan}, Cedar \
                                 decides {cedar} on every member, so on {}",
                                m.id
                            );
                            decisions += 1;
                        }
                        continue;
                    }
                    residual += 1;
                    for m in &members {
                        let (request, entities) = e
                            .reference()
                            .cedar_inputs(dir, &ask(*m))
                            .expect("Cedar's inputs");
                        // The member's with the principal side the partial evaluation
                        // read (`reauthorize` wants every entity it knew).
                        let mut all: std::collections::HashMap<_, _> =
                            entities.iter().map(|x| (x.uid(), x.clone())).collect();
                        for x in &principal_side {
                            all.entry(x.uid()).or_insert_with(|| x.clone());
                        }
                        let entities = Entities::from_entities(all.into_values(), None)
                            .expect("the member's entities");
                        let cedar = response
                            .reauthorize(&request, &entities)
                            .expect("re-evaluating the residuals")
                            .decision()
                            == cedar_policy::Decision::Allow;
                        assert_eq!(
                            field_plan.holds(m.id, m.attrs),
                            Some(cedar),
                            "{p} {action} {field} at {ctx:?}: plan {field_plan}, Cedar's residuals \
                             decide {cedar} on {} {:?}",
                            m.id,
                            m.attrs
                        );
                        decisions += 1;
                    }
                }
            }
        }
    }
    eprintln!(
        "tpe: {requests} partial requests ({constant} decided by Cedar alone, {residual} with \
         residual policies), {decisions} member decisions compared with the plans, in {:.1?}",
        started.elapsed()
    );
    assert!(residual > 100 && decisions > 10_000);
}
