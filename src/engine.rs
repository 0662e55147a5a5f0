//! The [`Engine`]: a validated policy directory that answers requests.

use std::path::Path;

use cedar_policy::{
    Authorizer, Entities, EntityUid, PolicySet, Response, RestrictedExpression, Schema,
};

use crate::bundle::{self, Bundle, PolicySource, PolicyVersion};
use crate::entities::Slice;
use crate::error::{LoadError, RequestError};
use crate::explain::{Explanation, Outcome, PolicyTrace};
use crate::fast::Fast;
use crate::fields::{FieldCatalogue, FieldId, FieldSet};
use crate::model::{Directory, PrincipalId};
use crate::request::{Action, Context, Request};
use cedar_compiled::CompiledPolicies;

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
    /// What went wrong.
    pub message: String,
}

/// The answer to one [`Request`]: the effect and the policies that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    effect: Effect,
    policies: Vec<String>,
    errors: Vec<PolicyError>,
    flags: Vec<String>,
}

impl Decision {
    pub(crate) fn new(
        effect: Effect,
        policies: Vec<String>,
        errors: Vec<PolicyError>,
        flags: Vec<String>,
    ) -> Decision {
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
    pub fn policies(&self) -> &[String] {
        &self.policies
    }

    /// The policies whose evaluation failed (and were skipped).
    pub fn errors(&self) -> &[PolicyError] {
        &self.errors
    }

    /// The `@flag("...")` annotations of the determining policies, sorted and
    /// deduplicated (e.g. `break_glass`): decisions a CRM must record for review.
    pub fn flags(&self) -> &[String] {
        &self.flags
    }
}

/// One policy evaluated alone, and its scope alone, for [`Engine::explain`].
#[derive(Debug)]
struct SinglePolicy {
    id: String,
    effect: Effect,
    alone: PolicySet,
    /// `None` if the scope could not be separated: the policy is then taken as in scope.
    scope: Option<PolicySet>,
}

/// A validated policy directory, ready to answer requests.
///
/// Build one with [`Engine::from_dir`]; share it between threads (`Engine` is
/// `Send + Sync` and every method takes `&self`), e.g. in an `Arc`. Every decision reads
/// the records it needs from a [`Directory`] the caller passes in, and the time from the
/// request's [`Context`]: nothing reads the clock inside a decision.
///
/// # Example
/// ```
/// use membergate::{sample, Action, Context, Engine, PrincipalId};
///
/// let engine = Engine::from_dir("policies")?;
/// let party = sample::bundled();
/// let staffer: PrincipalId = format!("CampaignStaff::{:?}", sample::ids::CS_A_STAFF).parse()?;
/// let during_ballot = Context::at("2020-03-01T12:00:00Z".parse()?).election(sample::ids::LEADER_2020);
///
/// let fields = engine.permitted_fields(&party, &staffer, Action::Read, sample::ids::MEMBER_ELIGIBLE, &during_ballot)?;
/// let names = engine.catalogue().names(fields);
/// assert!(names.contains(&"phone"));
/// assert!(!names.contains(&"political_views"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Engine {
    bundle: Bundle,
    authorizer: Authorizer,
    field_uids: Vec<EntityUid>,
    singles: Vec<SinglePolicy>,
    /// The compiled policies and their index (`None` if they cannot be compiled).
    fast: Option<Fast>,
}

/// The Cedar entities and uids of one request or page, built once.
struct Prepared {
    entities: Entities,
    principal: EntityUid,
    context: Vec<(String, RestrictedExpression)>,
}

impl Engine {
    /// Loads and strictly validates the policy directory `dir`: `schema.cedarschema`,
    /// every `*.cedar` file (each policy named by its `@id("...")`), and the field
    /// catalogue `fields.toml`.
    ///
    /// # Errors
    /// [`LoadError`] if a file is missing or unreadable, or with every problem found
    /// (each naming its file, line and column) if the schema, a policy or the catalogue
    /// is malformed, a policy lacks or repeats an `@id`, or a policy does not validate
    /// against the schema in strict mode.
    ///
    /// # Example
    /// ```
    /// let engine = membergate::Engine::from_dir("policies")?;
    /// assert!(engine.policy_ids().any(|id| id == "role-ended"));
    ///
    /// let err = membergate::Engine::from_dir("no/such/dir").unwrap_err();
    /// assert!(err.to_string().contains("no/such/dir"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Engine, LoadError> {
        let bundle = bundle::load(dir.as_ref())?;
        // One `Field` entity per catalogue field, in catalogue order.
        let field_uids = bundle.field_entities.iter().map(|e| e.uid()).collect();
        let singles = single_policies(&bundle.policies);
        let fast = Fast::build(
            &bundle.policies,
            &bundle.catalogue,
            &bundle.field_entities,
            &bundle.action_entities,
        );
        Ok(Engine {
            bundle,
            authorizer: Authorizer::new(),
            field_uids,
            singles,
            fast,
        })
    }

    pub(crate) fn fast_index(&self) -> Option<&Fast> {
        self.fast.as_ref()
    }

    /// The policies compiled for the compiled path ([`Engine::authorize_in`] and the
    /// like): [`CompiledPolicies::fallbacks`] lists those evaluated by Cedar. `None` if
    /// the policy set cannot be compiled (templates): every request then takes the
    /// reference path.
    ///
    /// # Example
    /// ```
    /// let engine = membergate::Engine::from_dir("policies")?;
    /// let compiled = engine.compiled().ok_or("not compiled")?;
    /// assert_eq!(compiled.len(), engine.policy_ids().count());
    /// assert!(compiled.fallbacks().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn compiled(&self) -> Option<&CompiledPolicies> {
        self.fast.as_ref().map(Fast::compiled)
    }

    /// The field catalogue.
    pub fn catalogue(&self) -> &FieldCatalogue {
        &self.bundle.catalogue
    }

    /// The policy set's version: a content hash of the schema, the `.cedar` files and
    /// the field catalogue. Record it with each decision to know which policies decided.
    ///
    /// ```
    /// use membergate::Engine;
    /// let a = Engine::from_dir("policies")?;
    /// let b = Engine::from_dir("policies")?;
    /// assert_eq!(a.version(), b.version());
    /// assert_eq!(a.version().as_str().len(), 64);
    /// # Ok::<(), membergate::LoadError>(())
    /// ```
    pub fn version(&self) -> &PolicyVersion {
        &self.bundle.version
    }

    /// The Cedar schema.
    pub fn schema(&self) -> &Schema {
        &self.bundle.schema
    }

    /// The policies, each under its `@id`.
    pub fn policies(&self) -> &PolicySet {
        &self.bundle.policies
    }

    /// The policy ids, sorted.
    pub fn policy_ids(&self) -> impl Iterator<Item = &str> {
        self.bundle.sources.keys().map(String::as_str)
    }

    /// Where the policy `id` came from.
    pub fn policy_source(&self, id: &str) -> Option<&PolicySource> {
        self.bundle.sources.get(id)
    }

    /// Decides one request.
    ///
    /// # Errors
    /// [`RequestError`] if the principal, member, field, election or call session is
    /// unknown, a record refers to one that is missing, or the data does not fit the
    /// schema. A denial is not an error.
    ///
    /// # Example
    /// ```
    /// use membergate::{sample, Action, Context, Engine, PrincipalId, PrincipalKind, Request};
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let party = sample::bundled();
    /// let resigned = PrincipalId::new(PrincipalKind::Representative, sample::ids::MP_RESIGNED);
    /// let req = Request::new(resigned, Action::Read, sample::ids::MEMBER_OTHER_CLP, "phone",
    ///     Context::at("2019-02-19T09:00:00Z".parse()?));
    /// let decision = engine.authorize(&party, &req)?;
    /// assert!(!decision.is_allowed());
    /// assert_eq!(decision.policies(), ["role-ended"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn authorize<D: Directory + ?Sized>(
        &self,
        dir: &D,
        req: &Request,
    ) -> Result<Decision, RequestError> {
        let (request, entities) = self.cedar_inputs(dir, req)?;
        let response = self
            .authorizer
            .is_authorized(&request, self.policies(), &entities);
        Ok(self.decision(&response))
    }

    /// The fields of `member` that `principal` may `action` in `ctx`: one decision per
    /// catalogue field, as a [`FieldSet`].
    ///
    /// # Errors
    /// As [`Engine::authorize`].
    ///
    /// # Example
    /// See [`Engine`].
    pub fn permitted_fields<D: Directory + ?Sized>(
        &self,
        dir: &D,
        principal: &PrincipalId,
        action: Action,
        member: &str,
        ctx: &Context,
    ) -> Result<FieldSet, RequestError> {
        let mut out = self.permitted_fields_page(dir, principal, action, &[member], ctx)?;
        Ok(out.pop().unwrap_or(FieldSet::EMPTY))
    }

    /// [`Engine::permitted_fields`] for a page of members, in the order given. The
    /// principal's and the context's records are converted once for the page.
    ///
    /// # Errors
    /// As [`Engine::authorize`]; an unknown member fails the whole page (no partial
    /// answer that could be mistaken for a denial).
    ///
    /// # Example
    /// ```
    /// use membergate::{sample, Action, Context, Engine, PrincipalId, PrincipalKind};
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let party = sample::bundled();
    /// let membership_team = PrincipalId::new(PrincipalKind::Staff, sample::ids::S_MEMBERSHIP);
    /// let page: Vec<&str> = party.members.keys().take(100).map(String::as_str).collect();
    /// let sets = engine.permitted_fields_page(&party, &membership_team, Action::Read, &page,
    ///     &Context::at("2024-05-01T09:00:00Z".parse()?))?;
    /// assert_eq!(sets.len(), 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn permitted_fields_page<D: Directory + ?Sized>(
        &self,
        dir: &D,
        principal: &PrincipalId,
        action: Action,
        members: &[&str],
        ctx: &Context,
    ) -> Result<Vec<FieldSet>, RequestError> {
        let mut out = vec![FieldSet::EMPTY; members.len()];
        self.page_responses(
            dir,
            principal,
            action,
            members,
            ctx,
            |n, field, response| {
                if response.decision() == cedar_policy::Decision::Allow {
                    if let Some(set) = out.get_mut(n) {
                        *set = set.with(field);
                    }
                }
            },
        )?;
        Ok(out)
    }

    /// Cedar's response on every catalogue field of each member of the page, in order:
    /// `each(member's position, field, response)`. The page's records are converted
    /// once; the errors are those of [`Engine::permitted_fields_page`].
    pub(crate) fn page_responses<D: Directory + ?Sized>(
        &self,
        dir: &D,
        principal: &PrincipalId,
        action: Action,
        members: &[&str],
        ctx: &Context,
        mut each: impl FnMut(usize, FieldId, &Response),
    ) -> Result<(), RequestError> {
        let prepared = self.prepare(dir, principal, members, ctx)?;
        for (n, member) in members.iter().enumerate() {
            let uid = member_uid(member)?;
            for (field, _) in self.catalogue().iter() {
                let response = self.decide(&prepared, action, &uid, field)?;
                each(n, field, &response);
            }
        }
        Ok(())
    }

    /// The policy's id as [`Decision::policies`] gives it, borrowed from the engine.
    pub(crate) fn policy_id(&self, id: &cedar_policy::PolicyId) -> Option<&str> {
        let key = id.to_string();
        self.singles
            .binary_search_by(|s| s.id.as_str().cmp(key.as_str()))
            .ok()
            .and_then(|i| self.singles.get(i))
            .map(|s| s.id.as_str())
    }

    /// Decides `req` and gives a readable account of it: the policies that decided, the
    /// ones that held but were overridden, the ones in scope whose conditions did not
    /// hold, and any that failed to evaluate.
    ///
    /// # Errors
    /// As [`Engine::authorize`].
    ///
    /// # Example
    /// ```
    /// use membergate::{sample, Action, Context, Engine, PrincipalId, PrincipalKind, Request};
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let party = sample::bundled();
    /// let staffer = PrincipalId::new(PrincipalKind::CampaignStaff, sample::ids::CS_B_STAFF);
    /// let req = Request::new(staffer, Action::Read, sample::ids::MEMBER_ELIGIBLE, "phone",
    ///     Context::at("2020-02-15T12:00:00Z".parse()?).election(sample::ids::LEADER_2020));
    /// let why = engine.explain(&party, &req)?;
    /// assert!(why.to_string().contains("campaign-candidate-not-cleared"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn explain<D: Directory + ?Sized>(
        &self,
        dir: &D,
        req: &Request,
    ) -> Result<Explanation, RequestError> {
        let (cedar_req, entities) = self.cedar_inputs(dir, req)?;
        let decision = self.decision(&self.authorizer.is_authorized(
            &cedar_req,
            self.policies(),
            &entities,
        ));
        let mut traces = Vec::new();
        let mut out_of_scope = 0;
        for single in &self.singles {
            let in_scope = single.scope.as_ref().is_none_or(|scope| {
                self.authorizer
                    .is_authorized(&cedar_req, scope, &entities)
                    .decision()
                    == cedar_policy::Decision::Allow
            });
            if !in_scope {
                out_of_scope += 1;
                continue;
            }
            let alone = self
                .authorizer
                .is_authorized(&cedar_req, &single.alone, &entities);
            let outcome = if let Some(e) = alone.diagnostics().errors().next() {
                Outcome::Errored(error_message(e))
            } else if alone.diagnostics().reason().next().is_some() {
                if decision.policies.contains(&single.id) {
                    Outcome::Determining
                } else {
                    Outcome::Overridden
                }
            } else {
                Outcome::ConditionFalse
            };
            let source = self.policy_source(&single.id);
            traces.push(PolicyTrace {
                id: single.id.clone(),
                effect: single.effect,
                rule: self.annotation(&single.id, "rule"),
                file: source.map(|s| s.file.clone()).unwrap_or_default(),
                line: source.map_or(0, |s| s.line),
                outcome,
            });
        }
        Ok(Explanation {
            request: req.clone(),
            decision,
            policies: traces,
            out_of_scope,
        })
    }

    /// The Cedar request and entities the engine decides `req` on: for checking the
    /// engine against `cedar_policy::Authorizer`, or for debugging a policy with Cedar's
    /// own tools.
    ///
    /// # Errors
    /// As [`Engine::authorize`].
    ///
    /// # Example
    /// ```
    /// use membergate::{sample, Action, Context, Engine, PrincipalId, PrincipalKind, Request};
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let party = sample::bundled();
    /// let req = Request::new(PrincipalId::new(PrincipalKind::Staff, sample::ids::S_MEMBERSHIP),
    ///     Action::Update, sample::ids::MEMBER_ELIGIBLE, "address",
    ///     Context::at("2024-05-01T09:00:00Z".parse()?));
    /// let (cedar_req, entities) = engine.cedar_inputs(&party, &req)?;
    /// let response = cedar_policy::Authorizer::new().is_authorized(&cedar_req, engine.policies(), &entities);
    /// assert_eq!(response.decision() == cedar_policy::Decision::Allow, engine.authorize(&party, &req)?.is_allowed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cedar_inputs<D: Directory + ?Sized>(
        &self,
        dir: &D,
        req: &Request,
    ) -> Result<(cedar_policy::Request, Entities), RequestError> {
        let field = self.field_id(&req.field)?;
        let prepared = self.prepare(dir, &req.principal, &[req.member.as_str()], &req.context)?;
        let member = member_uid(&req.member)?;
        let request = self.cedar_request(&prepared, req.action, &member, field)?;
        Ok((request, prepared.entities))
    }

    fn annotation(&self, id: &str, key: &str) -> Option<String> {
        self.policies()
            .policy(&cedar_policy::PolicyId::new(id))
            .and_then(|p| p.annotation(key))
            .map(str::to_string)
    }

    fn field_id(&self, name: &str) -> Result<FieldId, RequestError> {
        self.catalogue()
            .id(name)
            .ok_or_else(|| RequestError::UnknownField(name.to_string()))
    }

    fn prepare<D: Directory + ?Sized>(
        &self,
        dir: &D,
        principal: &PrincipalId,
        members: &[&str],
        ctx: &Context,
    ) -> Result<Prepared, RequestError> {
        let mut slice = Slice::new(self.catalogue());
        let principal = slice.principal(dir, principal)?;
        for m in members {
            slice.member(dir, m)?;
        }
        let context = slice.context(dir, ctx)?;
        // The slice conforms to the schema by construction (tests check it against the
        // schema), so it is not validated again on every request; the action entities
        // that validation would add come from the schema, built once.
        let all = slice
            .into_entities()
            .into_iter()
            .chain(self.bundle.field_entities.iter().cloned())
            .chain(self.bundle.action_entities.iter().cloned());
        let entities =
            Entities::from_entities(all, None).map_err(|e| RequestError::InvalidData {
                what: "the request's records".into(),
                message: e.to_string(),
            })?;
        Ok(Prepared {
            entities,
            principal,
            context,
        })
    }

    fn cedar_request(
        &self,
        prepared: &Prepared,
        action: Action,
        member: &EntityUid,
        field: FieldId,
    ) -> Result<cedar_policy::Request, RequestError> {
        let field_uid = self
            .field_uids
            .get(field.index())
            .cloned()
            .ok_or_else(|| RequestError::UnknownField(format!("#{}", field.index())))?;
        let pairs = prepared.context.iter().cloned().chain([(
            "field".to_string(),
            RestrictedExpression::new_entity_uid(field_uid),
        )]);
        let invalid = |e: &dyn std::fmt::Display| RequestError::Invalid(e.to_string());
        let context =
            cedar_policy::Context::from_pairs(pairs).map_err(|e| RequestError::InvalidData {
                what: "the request's context".into(),
                message: e.to_string(),
            })?;
        let action = bundle::entity_uid("Action", action.as_str()).map_err(|e| invalid(&e))?;
        cedar_policy::Request::new(
            prepared.principal.clone(),
            action,
            member.clone(),
            context,
            Some(self.schema()),
        )
        .map_err(|e| invalid(&e))
    }

    fn decide(
        &self,
        prepared: &Prepared,
        action: Action,
        member: &EntityUid,
        field: FieldId,
    ) -> Result<Response, RequestError> {
        let request = self.cedar_request(prepared, action, member, field)?;
        Ok(self
            .authorizer
            .is_authorized(&request, self.policies(), &prepared.entities))
    }

    fn decision(&self, response: &Response) -> Decision {
        let effect = match response.decision() {
            cedar_policy::Decision::Allow => Effect::Allow,
            cedar_policy::Decision::Deny => Effect::Deny,
        };
        let mut policies: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|p| p.to_string())
            .collect();
        policies.sort();
        let mut errors: Vec<PolicyError> = response
            .diagnostics()
            .errors()
            .map(|e| PolicyError {
                policy: match e {
                    cedar_policy::AuthorizationError::PolicyEvaluationError(p) => {
                        p.policy_id().to_string()
                    }
                },
                message: error_message(e),
            })
            .collect();
        errors.sort_by(|a, b| a.policy.cmp(&b.policy));
        let mut flags: Vec<String> = policies
            .iter()
            .filter_map(|id| self.annotation(id, "flag"))
            .collect();
        flags.sort();
        flags.dedup();
        Decision {
            effect,
            policies,
            errors,
            flags,
        }
    }
}

fn member_uid(id: &str) -> Result<EntityUid, RequestError> {
    bundle::entity_uid("Member", id).map_err(|e| RequestError::InvalidData {
        what: format!("member `{id}`"),
        message: e.to_string(),
    })
}

fn error_message(e: &cedar_policy::AuthorizationError) -> String {
    match e {
        cedar_policy::AuthorizationError::PolicyEvaluationError(p) => p.inner().to_string(),
    }
}

/// Each policy alone, and its scope alone (its conditions dropped, made a permit), so
/// `explain` can tell "in scope" from "condition held".
fn single_policies(set: &PolicySet) -> Vec<SinglePolicy> {
    let mut out = Vec::new();
    for p in set.policies() {
        let effect = match p.effect() {
            cedar_policy::Effect::Permit => Effect::Allow,
            cedar_policy::Effect::Forbid => Effect::Deny,
        };
        let alone = PolicySet::from_policies([p.clone()]).unwrap_or_default();
        let scope = p
            .to_json()
            .ok()
            .and_then(|mut json| {
                let obj = json.as_object_mut()?;
                obj.insert("effect".into(), "permit".into());
                obj.insert("conditions".into(), serde_json::Value::Array(Vec::new()));
                obj.remove("annotations");
                cedar_policy::Policy::from_json(Some(p.id().clone()), json).ok()
            })
            .and_then(|s| PolicySet::from_policies([s]).ok());
        out.push(SinglePolicy {
            id: p.id().to_string(),
            effect,
            alone,
            scope,
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}
