//! The [`Engine`]: a validated policy directory, compiled, that answers requests; and
//! [`Reference`], the same questions answered by Cedar's own `Authorizer`, its oracle.

use std::path::Path;
use std::sync::Arc;

use cedar_policy::{
    Authorizer, Entities, EntityUid, PolicySet, Response, RestrictedExpression, Schema,
};
use smallvec::SmallVec;

use crate::bundle::{self, Bundle, PolicySource, PolicyVersion};
use crate::decision::{Decision, Effect, FieldDecisions, PolicyError};
use crate::directory::Directory;
use crate::entities::cedar_time;
use crate::error::{LoadError, RequestError};
use crate::explain::{Explanation, Outcome, PolicyTrace};
use crate::fields::{FieldCatalogue, FieldId, FieldSet};
use crate::index::{Asked, Index, Planner, PrincipalRules, Subject};
use crate::plan::{Atom, FieldPlan, Plan};
use crate::records::{MemberRef, PrincipalId};
use crate::request::{Action, Context, MemberRequest, PageRequest, Request};

/// A request resolved on the compiled path: the principal's uid and plan, the uids of
/// the context's election and call session.
type Resolved<'d> = (u32, &'d PrincipalRules, (Option<u32>, Option<u32>));

/// One policy evaluated alone, and its scope alone, for `explain` on the reference.
#[derive(Debug)]
struct SinglePolicy {
    id: String,
    effect: Effect,
    flag: Option<String>,
    rule: Option<String>,
    alone: PolicySet,
    /// `None` if the scope could not be separated: the policy is then taken as in scope.
    scope: Option<PolicySet>,
}

/// A validated policy directory, compiled, ready to answer requests.
///
/// Build one with [`Engine::from_dir`]; share it between threads (`Engine` is
/// `Send + Sync` and every method takes `&self`), e.g. in an `Arc`. The principal side
/// of the party's records lives in a [`Directory`] built for the engine; each request
/// brings its member ([`MemberRef`]) and its time ([`Context`]): nothing reads the clock
/// inside a decision.
///
/// Every question has the same answer from [`Engine::reference`], which asks Cedar's
/// own `Authorizer`: the engine's tests hold the two to it.
///
/// # Example
/// ```
/// use membergate::{sample, Action, Context, Directory, Engine, MemberRequest, PrincipalId};
///
/// let engine = Engine::from_dir("policies")?;
/// let party = sample::bundled();
/// let directory = Directory::from_membership(&engine, &party)?;
/// let staffer: PrincipalId = format!("CampaignStaff::{:?}", sample::ids::CS_A_STAFF).parse()?;
/// let during_ballot = Context::at("2020-03-01T12:00:00Z".parse()?).election(sample::ids::LEADER_2020);
/// let member = party.member(sample::ids::MEMBER_ELIGIBLE).ok_or("no such member")?;
///
/// let req = MemberRequest { principal: &staffer, action: Action::Read, member, context: &during_ballot };
/// let fields = engine.permitted_fields(&directory, &req)?;
/// let names = engine.catalogue().names(fields);
/// assert!(names.contains(&"phone"));
/// assert!(!names.contains(&"political_views"));
/// assert_eq!(fields, engine.reference().permitted_fields(&directory, &req)?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Engine {
    bundle: Bundle,
    index: Arc<Index>,
    authorizer: Authorizer,
    field_uids: Vec<EntityUid>,
    /// The catalogue's field names in order, shared by every [`Plan`].
    field_names: Arc<[String]>,
    /// Each policy alone, sorted by id.
    singles: Vec<SinglePolicy>,
}

/// Cedar's own `Authorizer` on the same questions as the [`Engine`]: its oracle, for
/// tests and for checking a surprising answer. Slower: each request's records are
/// converted to Cedar entities. Get one with [`Engine::reference`].
#[derive(Debug, Clone, Copy)]
pub struct Reference<'e> {
    engine: &'e Engine,
}

/// The Cedar entities and uids of one request or page, built once.
struct CedarInputs {
    entities: Entities,
    principal: EntityUid,
    context: Vec<(String, RestrictedExpression)>,
}

impl Engine {
    /// Loads and strictly validates the policy directory `dir`: `schema.cedarschema`,
    /// every `*.cedar` file (each policy named by its `@id("...")`), and the field
    /// catalogue `fields.toml`; then compiles the policies.
    ///
    /// # Errors
    /// [`LoadError`] if a file is missing or unreadable, or with every problem found
    /// (each naming its file, line and column) if the schema, a policy or the catalogue
    /// is malformed, a policy lacks or repeats an `@id`, or a policy does not validate
    /// against the schema in strict mode; [`LoadError::Compile`] if the policies cannot
    /// be compiled.
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
        let (bundle, mut ests) = bundle::load(dir.as_ref())?;
        let field_uids = bundle.field_entities.iter().map(|e| e.uid()).collect();
        let singles = single_policies(&bundle.policies, &ests);
        let index = Index::build(
            &bundle.policies,
            |p| ests.take(p),
            &bundle.catalogue,
            &bundle.field_entities,
            &bundle.action_entities,
        )
        .map_err(|message| LoadError::Compile {
            dir: dir.as_ref().to_path_buf(),
            message,
        })?;
        let field_names = bundle
            .catalogue
            .iter()
            .map(|(_, f)| f.name.clone())
            .collect();
        Ok(Engine {
            bundle,
            index: Arc::new(index),
            authorizer: Authorizer::new(),
            field_uids,
            field_names,
            singles,
        })
    }

    /// The same questions, answered by Cedar's own `Authorizer`.
    ///
    /// # Example
    /// See [`Engine`].
    pub fn reference(&self) -> Reference<'_> {
        Reference { engine: self }
    }

    pub(crate) fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// The compiled policies: [`CompiledPolicies::fallbacks`](cedar_compiled::CompiledPolicies::fallbacks) lists those Cedar
    /// evaluates alone (when there are any, every request is decided by Cedar).
    ///
    /// # Example
    /// ```
    /// let engine = membergate::Engine::from_dir("policies")?;
    /// assert_eq!(engine.compiled().len(), engine.policy_ids().count());
    /// assert!(engine.compiled().fallbacks().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn compiled(&self) -> &cedar_compiled::CompiledPolicies {
        self.index.compiled()
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

    /// The text of the directory's `invariants.toml` as it was read with the version
    /// (the version covers it), if there is one.
    #[cfg_attr(not(feature = "assurance"), allow(dead_code))]
    pub(crate) fn invariants_text(&self) -> Option<&str> {
        self.bundle.invariants.as_deref()
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
    /// [`RequestError`] if the field is not in the catalogue; the principal, or the
    /// context's election or call session, is not in `directory`; the member fails its
    /// check (its CLP is unknown, it left without a date, a time Cedar cannot hold); or
    /// `directory` was built for another engine. A denial is not an error.
    ///
    /// # Example
    /// See [`Decision`].
    pub fn authorize(
        &self,
        directory: &Directory,
        req: &Request<'_>,
    ) -> Result<Decision<'_>, RequestError> {
        let field = self.field_id(req.field)?;
        let held = self.resolve(directory, req, |asked, member| {
            asked.authorize(member, field.index())
        })?;
        match held {
            Some(Some(held)) => {
                let mut policies = SmallVec::new();
                let mut flags = SmallVec::new();
                for i in &held.policies {
                    if let Some((id, flag)) = self.index.policy(*i) {
                        policies.push(id);
                        if let Some(flag) = flag {
                            flags.push(flag);
                        }
                    }
                }
                let effect = if held.forbid || policies.is_empty() {
                    Effect::Deny
                } else {
                    Effect::Allow
                };
                Ok(Decision::new(effect, policies, Vec::new(), flags))
            }
            // A policy failed to evaluate, or some policy is Cedar's alone: Cedar decides
            // (and gives its messages).
            _ => self.reference().authorize(directory, req),
        }
    }

    /// The fields of the member that the principal may `action` in the context: one
    /// decision per catalogue field, as a [`FieldSet`], in one pass.
    ///
    /// # Errors
    /// As [`Engine::authorize`] (but for the field).
    ///
    /// # Example
    /// See [`Engine`].
    pub fn permitted_fields(
        &self,
        directory: &Directory,
        req: &MemberRequest<'_>,
    ) -> Result<FieldSet, RequestError> {
        let page = req.as_page();
        let mut out = FieldSet::EMPTY;
        self.fields_pass(directory, &page, |set| out = set)?;
        Ok(out)
    }

    /// [`Engine::permitted_fields`] for a page of members, in the order given. The
    /// principal's and the context's records are resolved once for the page.
    ///
    /// # Errors
    /// As [`Engine::permitted_fields`]; a member that fails its check fails the whole
    /// page (no partial answer that could be mistaken for a denial).
    ///
    /// # Example
    /// ```
    /// use membergate::{sample, Action, Context, Directory, Engine, MemberRef, PageRequest, PrincipalId, PrincipalKind};
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let party = sample::bundled();
    /// let directory = Directory::from_membership(&engine, &party)?;
    /// let team = PrincipalId::new(PrincipalKind::Staff, sample::ids::S_MEMBERSHIP);
    /// let page: Vec<MemberRef> = party.member_refs().take(100).collect();
    /// let ctx = Context::at("2024-05-01T09:00:00Z".parse()?);
    /// let req = PageRequest { principal: &team, action: Action::Read, members: &page, context: &ctx };
    /// let sets = engine.permitted_fields_page(&directory, &req)?;
    /// assert_eq!(sets.len(), 100);
    /// assert_eq!(sets, engine.reference().permitted_fields_page(&directory, &req)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn permitted_fields_page(
        &self,
        directory: &Directory,
        req: &PageRequest<'_>,
    ) -> Result<Vec<FieldSet>, RequestError> {
        let mut out = Vec::with_capacity(req.members.len());
        self.fields_pass(directory, req, |set| out.push(set))?;
        Ok(out)
    }

    /// [`Engine::permitted_fields`] with the policies that decided each field: for
    /// every catalogue field, the policies [`Engine::authorize`] gives for that field
    /// alone, in one pass (for a decision log that names the policies).
    ///
    /// # Errors
    /// As [`Engine::permitted_fields`].
    ///
    /// # Example
    /// See [`FieldDecisions`].
    pub fn field_decisions(
        &self,
        directory: &Directory,
        req: &MemberRequest<'_>,
    ) -> Result<FieldDecisions<'_>, RequestError> {
        let page = req.as_page();
        let mut out = None;
        self.decisions_pass(directory, &page, |d| out = Some(d))?;
        Ok(out.unwrap_or_else(|| FieldDecisions::new(FieldSet::EMPTY, [])))
    }

    /// [`Engine::field_decisions`] for a page of members, in the order given.
    ///
    /// # Errors
    /// As [`Engine::permitted_fields_page`].
    pub fn field_decisions_page(
        &self,
        directory: &Directory,
        req: &PageRequest<'_>,
    ) -> Result<Vec<FieldDecisions<'_>>, RequestError> {
        let mut out = Vec::with_capacity(req.members.len());
        self.decisions_pass(directory, req, |d| out.push(d))?;
        Ok(out)
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
    /// use membergate::{sample, Action, Context, Directory, Engine, PrincipalId, PrincipalKind, Request};
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let party = sample::bundled();
    /// let directory = Directory::from_membership(&engine, &party)?;
    /// let staffer = PrincipalId::new(PrincipalKind::CampaignStaff, sample::ids::CS_B_STAFF);
    /// let ctx = Context::at("2020-02-15T12:00:00Z".parse()?).election(sample::ids::LEADER_2020);
    /// let member = party.member(sample::ids::MEMBER_ELIGIBLE).ok_or("no member")?;
    /// let req = Request { principal: &staffer, action: Action::Read, member, field: "phone", context: &ctx };
    /// let why = engine.explain(&directory, &req)?;
    /// assert!(why.to_string().contains("campaign-candidate-not-cleared"));
    /// assert_eq!(why, engine.reference().explain(&directory, &req)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn explain(
        &self,
        directory: &Directory,
        req: &Request<'_>,
    ) -> Result<Explanation<'_>, RequestError> {
        let decision = self.authorize(directory, req)?;
        let field = self.field_id(req.field)?;
        let uid = self.index.field_uid(field.index()).unwrap_or(u32::MAX);
        let traced = self.resolve(directory, req, |asked, member| asked.trace(member, uid))?;
        let Some(Some(outcomes)) = traced else {
            // A policy failed to evaluate: Cedar's account carries its message.
            return self.reference().explain(directory, req);
        };
        let mut traces = Vec::new();
        let mut out_of_scope = 0;
        for (i, outcome) in outcomes {
            let Some((id, _)) = self.index.policy(i) else {
                continue;
            };
            let Some(outcome) = outcome else {
                out_of_scope += 1;
                continue;
            };
            let outcome = match outcome {
                true if decision.policies().contains(&id) => Outcome::Determining,
                true => Outcome::Overridden,
                false => Outcome::ConditionFalse,
            };
            traces.push(self.trace(id, outcome));
        }
        traces.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Explanation::new(req, decision, traces, out_of_scope))
    }

    /// Which members `principal` may `action`, field by field, in `context`: a
    /// [`Plan`] whose conditions read only the members' own attributes, with everything
    /// known before a member is read folded in. On every member that passes the
    /// engine's check, the plan allows exactly what [`Engine::permitted_fields`] allows;
    /// a part it cannot express is an [`Atom::PerMember`] (see [`plan`](crate::plan)).
    ///
    /// # Errors
    /// As [`Engine::permitted_fields`] for the principal and the context.
    ///
    /// # Example
    /// ```
    /// use membergate::{sample, Action, Context, Directory, Engine, PrincipalId, PrincipalKind};
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let party = sample::bundled();
    /// let directory = Directory::from_membership(&engine, &party)?;
    /// let officer = PrincipalId::new(PrincipalKind::Officer, sample::ids::O_SECRETARY_001);
    /// let ctx = Context::at("2024-05-01T09:00:00Z".parse()?);
    /// let plan = engine.plan(&directory, &officer, Action::Read, &ctx)?;
    /// // A CLP secretary sees the names of their own CLP's members, never payment details.
    /// assert!(plan.field("name").unwrap().to_string().contains("clp in"));
    /// assert_eq!(plan.field("payment_details").unwrap().to_string(), "no member");
    /// for (id, member) in &party.members {
    ///     let fields = engine.permitted_fields(&directory, &membergate::MemberRequest {
    ///         principal: &officer, action: Action::Read, member: membergate::MemberRef { id, attrs: member }, context: &ctx,
    ///     })?;
    ///     assert_eq!(plan.permitted_fields(id, member), Some(fields));
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn plan(
        &self,
        directory: &Directory,
        principal: &PrincipalId,
        action: Action,
        context: &Context,
    ) -> Result<Plan, RequestError> {
        self.check_directory(directory)?;
        let (puid, rules) = directory.principal_rules(principal, action)?;
        let uids = directory.context_uids(context)?;
        let (distinct, slots) = if self.index.complete() {
            let asked = self.index.asked(
                directory.store(),
                (puid, principal.kind),
                (action, rules),
                context,
                uids,
            );
            Planner::new(&asked, directory).fields()
        } else {
            // A policy is Cedar's alone: every member is decided on its own.
            let policy = self
                .compiled()
                .fallbacks()
                .first()
                .map(|f| f.id.to_string())
                .unwrap_or_default();
            let p = FieldPlan::atom(Atom::PerMember {
                policy,
                part: 0,
                holds: true,
            });
            (vec![p], vec![0; self.catalogue().len()])
        };
        let any = FieldPlan::any(distinct.iter().cloned());
        Ok(Plan {
            action,
            names: self.field_names.clone(),
            distinct,
            slots,
            any,
        })
    }

    fn trace(&self, id: &str, outcome: Outcome) -> PolicyTrace {
        let single = self.single(id);
        let source = self.policy_source(id);
        PolicyTrace {
            id: id.to_string(),
            effect: single.map_or(Effect::Allow, |s| s.effect),
            rule: single.and_then(|s| s.rule.clone()),
            file: source.map(|s| s.file.clone()).unwrap_or_default(),
            line: source.map_or(0, |s| s.line),
            outcome,
        }
    }

    fn single(&self, id: &str) -> Option<&SinglePolicy> {
        self.singles
            .binary_search_by(|s| s.id.as_str().cmp(id))
            .ok()
            .and_then(|i| self.singles.get(i))
    }

    /// The policy's id as [`Decision::policies`] gives it, borrowed from the engine.
    fn policy_id(&self, id: &cedar_policy::PolicyId) -> Option<&str> {
        let key = id.to_string();
        self.single(&key).map(|s| s.id.as_str())
    }

    fn field_id(&self, name: &str) -> Result<FieldId, RequestError> {
        self.catalogue()
            .id(name)
            .ok_or_else(|| RequestError::UnknownField(name.to_string()))
    }

    fn check_directory(&self, directory: &Directory) -> Result<(), RequestError> {
        if Arc::ptr_eq(directory.index(), &self.index) {
            Ok(())
        } else {
            Err(RequestError::ForeignDirectory)
        }
    }

    /// Resolves a one-field request on the compiled path and runs `f` on it: `None`
    /// when the compiled path cannot answer (a policy is Cedar's alone).
    fn resolve<T>(
        &self,
        directory: &Directory,
        req: &Request<'_>,
        f: impl FnOnce(&Asked<'_>, &Subject<'_>) -> T,
    ) -> Result<Option<T>, RequestError> {
        // The page's checks, in its order (the principal, the context), then the member.
        let resolved = self.resolve_page(directory, &req.all_fields().as_page())?;
        let ancestors = directory.member_ancestors(req.member)?;
        let Some((puid, plan, uids)) = resolved else {
            return Ok(None);
        };
        let asked = self.index.asked(
            directory.store(),
            (puid, req.principal.kind),
            (req.action, plan),
            req.context,
            uids,
        );
        Ok(Some(f(&asked, &directory.subject(req.member, ancestors))))
    }

    /// Resolves a page on the compiled path (the principal's uid and plan, the uids of
    /// the context's election and session), with the reference's errors in its order
    /// (the principal, the context; each member is checked as the pass reaches it):
    /// `None` when a policy is Cedar's alone.
    fn resolve_page<'d>(
        &self,
        directory: &'d Directory,
        req: &PageRequest<'_>,
    ) -> Result<Option<Resolved<'d>>, RequestError> {
        self.check_directory(directory)?;
        let (puid, plan) = directory.principal_rules(req.principal, req.action)?;
        let uids = directory.context_uids(req.context)?;
        Ok(self.index.complete().then_some((puid, plan, uids)))
    }

    fn fields_pass(
        &self,
        directory: &Directory,
        req: &PageRequest<'_>,
        emit: impl FnMut(FieldSet),
    ) -> Result<(), RequestError> {
        let Some((puid, plan, uids)) = self.resolve_page(directory, req)? else {
            let sets = self.reference().permitted_fields_page(directory, req)?;
            sets.into_iter().for_each(emit);
            return Ok(());
        };
        let asked = self.index.asked(
            directory.store(),
            (puid, req.principal.kind),
            (req.action, plan),
            req.context,
            uids,
        );
        asked.fields(req.members.iter().map(|m| directory.member(*m)), emit)
    }

    fn decisions_pass<'e>(
        &'e self,
        directory: &Directory,
        req: &PageRequest<'_>,
        mut emit: impl FnMut(FieldDecisions<'e>),
    ) -> Result<(), RequestError> {
        let Some((puid, plan, uids)) = self.resolve_page(directory, req)? else {
            let all = self.reference().field_decisions_page(directory, req)?;
            all.into_iter().for_each(emit);
            return Ok(());
        };
        let asked = self.index.asked(
            directory.store(),
            (puid, req.principal.kind),
            (req.action, plan),
            req.context,
            uids,
        );
        asked.decisions(
            req.members.iter().map(|m| directory.member(*m)),
            |granted, deciding| {
                let ids = deciding
                    .iter()
                    .filter_map(|(i, m)| self.index.policy(*i).map(|(id, _)| (id, *m)));
                emit(FieldDecisions::new(granted, ids));
            },
        )
    }
}

impl<'e> Reference<'e> {
    /// [`Engine::authorize`], by Cedar's `Authorizer`.
    ///
    /// # Errors
    /// As [`Engine::authorize`].
    pub fn authorize(
        &self,
        directory: &Directory,
        req: &Request<'_>,
    ) -> Result<Decision<'e>, RequestError> {
        let (request, entities) = self.cedar_inputs(directory, req)?;
        let response =
            self.engine
                .authorizer
                .is_authorized(&request, self.engine.policies(), &entities);
        Ok(self.decision(&response))
    }

    /// [`Engine::permitted_fields`], by Cedar's `Authorizer` (one decision per field).
    ///
    /// # Errors
    /// As [`Engine::permitted_fields`].
    pub fn permitted_fields(
        &self,
        directory: &Directory,
        req: &MemberRequest<'_>,
    ) -> Result<FieldSet, RequestError> {
        Ok(self.field_decisions(directory, req)?.granted())
    }

    /// [`Engine::permitted_fields_page`], by Cedar's `Authorizer`.
    ///
    /// # Errors
    /// As [`Engine::permitted_fields_page`].
    pub fn permitted_fields_page(
        &self,
        directory: &Directory,
        req: &PageRequest<'_>,
    ) -> Result<Vec<FieldSet>, RequestError> {
        Ok(self
            .field_decisions_page(directory, req)?
            .iter()
            .map(FieldDecisions::granted)
            .collect())
    }

    /// [`Engine::field_decisions`], by Cedar's `Authorizer`.
    ///
    /// # Errors
    /// As [`Engine::field_decisions`].
    pub fn field_decisions(
        &self,
        directory: &Directory,
        req: &MemberRequest<'_>,
    ) -> Result<FieldDecisions<'e>, RequestError> {
        let page = req.as_page();
        let mut all = self.field_decisions_page(directory, &page)?;
        Ok(all
            .pop()
            .unwrap_or_else(|| FieldDecisions::new(FieldSet::EMPTY, [])))
    }

    /// [`Engine::field_decisions_page`], by Cedar's `Authorizer`: one Cedar decision per
    /// member and field.
    ///
    /// # Errors
    /// As [`Engine::field_decisions_page`].
    pub fn field_decisions_page(
        &self,
        directory: &Directory,
        req: &PageRequest<'_>,
    ) -> Result<Vec<FieldDecisions<'e>>, RequestError> {
        // A page converts its records once; a page that names one member twice (with
        // records that may differ) converts each member apart, so each is decided on its
        // own record.
        let mut ids = std::collections::HashSet::new();
        let shared = if req.members.iter().all(|m| ids.insert(m.id)) {
            Some(self.inputs(directory, req.principal, req.members, req.context)?)
        } else {
            self.inputs(directory, req.principal, &[], req.context)?;
            for m in req.members {
                directory.member(*m)?;
            }
            None
        };
        let mut out = Vec::with_capacity(req.members.len());
        for m in req.members {
            let own;
            let inputs = match &shared {
                Some(inputs) => inputs,
                None => {
                    own = self.inputs(
                        directory,
                        req.principal,
                        std::slice::from_ref(m),
                        req.context,
                    )?;
                    &own
                }
            };
            let uid = member_uid(m.id)?;
            let mut granted = FieldSet::EMPTY;
            let mut deciding: Vec<(&'e str, u64)> = Vec::new();
            for (field, _) in self.engine.catalogue().iter() {
                let request = self.cedar_request(inputs, req.action, &uid, field)?;
                let response = self.engine.authorizer.is_authorized(
                    &request,
                    self.engine.policies(),
                    &inputs.entities,
                );
                if response.decision() == cedar_policy::Decision::Allow {
                    granted = granted.with(field);
                }
                let bit = FieldSet::EMPTY.with(field).bits();
                deciding.extend(
                    response
                        .diagnostics()
                        .reason()
                        .filter_map(|id| self.engine.policy_id(id))
                        .map(|id| (id, bit)),
                );
            }
            out.push(FieldDecisions::new(granted, deciding));
        }
        Ok(out)
    }

    /// [`Engine::explain`], by Cedar's `Authorizer`: each policy decided alone, and its
    /// scope alone.
    ///
    /// # Errors
    /// As [`Engine::authorize`].
    pub fn explain(
        &self,
        directory: &Directory,
        req: &Request<'_>,
    ) -> Result<Explanation<'e>, RequestError> {
        let engine = self.engine;
        let (cedar_req, entities) = self.cedar_inputs(directory, req)?;
        let decision = self.decision(&engine.authorizer.is_authorized(
            &cedar_req,
            engine.policies(),
            &entities,
        ));
        let mut traces = Vec::new();
        let mut out_of_scope = 0;
        for single in &engine.singles {
            let in_scope = single.scope.as_ref().is_none_or(|scope| {
                engine
                    .authorizer
                    .is_authorized(&cedar_req, scope, &entities)
                    .decision()
                    == cedar_policy::Decision::Allow
            });
            if !in_scope {
                out_of_scope += 1;
                continue;
            }
            let alone = engine
                .authorizer
                .is_authorized(&cedar_req, &single.alone, &entities);
            let outcome = if let Some(e) = alone.diagnostics().errors().next() {
                Outcome::Errored(error_message(e))
            } else if alone.diagnostics().reason().next().is_some() {
                if decision.policies().contains(&single.id.as_str()) {
                    Outcome::Determining
                } else {
                    Outcome::Overridden
                }
            } else {
                Outcome::ConditionFalse
            };
            traces.push(engine.trace(&single.id, outcome));
        }
        Ok(Explanation::new(req, decision, traces, out_of_scope))
    }

    /// The Cedar request and entities the engine decides `req` on: for checking a
    /// decision with Cedar's own tools.
    ///
    /// # Errors
    /// As [`Engine::authorize`].
    ///
    /// # Example
    /// ```
    /// use membergate::{sample, Action, Context, Directory, Engine, PrincipalId, PrincipalKind, Request};
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let party = sample::bundled();
    /// let directory = Directory::from_membership(&engine, &party)?;
    /// let team = PrincipalId::new(PrincipalKind::Staff, sample::ids::S_MEMBERSHIP);
    /// let ctx = Context::at("2024-05-01T09:00:00Z".parse()?);
    /// let member = party.member(sample::ids::MEMBER_ELIGIBLE).ok_or("no member")?;
    /// let req = Request { principal: &team, action: Action::Update, member, field: "address", context: &ctx };
    /// let (cedar_req, entities) = engine.reference().cedar_inputs(&directory, &req)?;
    /// let response = cedar_policy::Authorizer::new().is_authorized(&cedar_req, engine.policies(), &entities);
    /// assert_eq!(response.decision() == cedar_policy::Decision::Allow, engine.authorize(&directory, &req)?.is_allowed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cedar_inputs(
        &self,
        directory: &Directory,
        req: &Request<'_>,
    ) -> Result<(cedar_policy::Request, Entities), RequestError> {
        let field = self.engine.field_id(req.field)?;
        let inputs = self.inputs(
            directory,
            req.principal,
            std::slice::from_ref(&req.member),
            req.context,
        )?;
        let member = member_uid(req.member.id)?;
        let request = self.cedar_request(&inputs, req.action, &member, field)?;
        Ok((request, inputs.entities))
    }

    fn inputs(
        &self,
        directory: &Directory,
        principal: &PrincipalId,
        members: &[MemberRef<'_>],
        ctx: &Context,
    ) -> Result<CedarInputs, RequestError> {
        self.engine.check_directory(directory)?;
        let slice = directory.cedar_entities(principal, members, ctx)?;
        let bundle = &self.engine.bundle;
        let all = slice
            .into_entities()
            .into_iter()
            .chain(bundle.field_entities.iter().cloned())
            .chain(bundle.action_entities.iter().cloned());
        let entities =
            Entities::from_entities(all, None).map_err(|e| RequestError::InvalidData {
                what: "the request's records".into(),
                message: e.to_string(),
            })?;
        let invalid = |e: &dyn std::fmt::Display| RequestError::InvalidData {
            what: "the request".into(),
            message: e.to_string(),
        };
        let uid = |ty: &str, id: &str| bundle::entity_uid(ty, id).map_err(|e| invalid(&e));
        let mut context = vec![
            ("now".to_string(), time(ctx.now)),
            (
                "reads_this_hour".to_string(),
                RestrictedExpression::new_long(
                    i64::try_from(ctx.reads_this_hour).unwrap_or(i64::MAX),
                ),
            ),
        ];
        if let Some(e) = &ctx.election {
            context.push((
                "election".into(),
                RestrictedExpression::new_entity_uid(uid("Election", e)?),
            ));
        }
        if let Some(s) = &ctx.session {
            context.push((
                "session".into(),
                RestrictedExpression::new_entity_uid(uid("CallSession", s)?),
            ));
        }
        if let Some(p) = &ctx.purpose {
            context.push((
                "purpose".into(),
                RestrictedExpression::new_string(p.clone()),
            ));
        }
        if let Some(r) = &ctx.reason {
            context.push(("reason".into(), RestrictedExpression::new_string(r.clone())));
        }
        Ok(CedarInputs {
            entities,
            principal: uid(principal.kind.type_name(), &principal.id)?,
            context,
        })
    }

    fn cedar_request(
        &self,
        inputs: &CedarInputs,
        action: Action,
        member: &EntityUid,
        field: FieldId,
    ) -> Result<cedar_policy::Request, RequestError> {
        let invalid = |e: &dyn std::fmt::Display| RequestError::Invalid(e.to_string());
        let field_uid = self
            .engine
            .field_uids
            .get(field.index())
            .cloned()
            .ok_or_else(|| RequestError::UnknownField(format!("#{}", field.index())))?;
        let pairs = inputs.context.iter().cloned().chain([(
            "field".to_string(),
            RestrictedExpression::new_entity_uid(field_uid),
        )]);
        let context = cedar_policy::Context::from_pairs(pairs)
            .map_err(|e| RequestError::InvalidContext(e.to_string()))?;
        let action = bundle::entity_uid("Action", action.as_str()).map_err(|e| invalid(&e))?;
        cedar_policy::Request::new(
            inputs.principal.clone(),
            action,
            member.clone(),
            context,
            Some(self.engine.schema()),
        )
        .map_err(|e| invalid(&e))
    }

    fn decision(&self, response: &Response) -> Decision<'e> {
        let engine = self.engine;
        let effect = match response.decision() {
            cedar_policy::Decision::Allow => Effect::Allow,
            cedar_policy::Decision::Deny => Effect::Deny,
        };
        let policies: SmallVec<[&'e str; 4]> = response
            .diagnostics()
            .reason()
            .filter_map(|p| engine.policy_id(p))
            .collect();
        let errors: Vec<PolicyError> = response
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
        let flags = policies
            .iter()
            .filter_map(|id| engine.single(id).and_then(|s| s.flag.as_deref()))
            .collect();
        Decision::new(effect, policies, errors, flags)
    }
}

fn time(ts: jiff::Timestamp) -> RestrictedExpression {
    RestrictedExpression::new_datetime(cedar_time(ts))
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
fn single_policies(set: &PolicySet, ests: &bundle::Ests) -> Vec<SinglePolicy> {
    let mut out = Vec::new();
    for p in set.policies() {
        let effect = match p.effect() {
            cedar_policy::Effect::Permit => Effect::Allow,
            cedar_policy::Effect::Forbid => Effect::Deny,
        };
        let alone = PolicySet::from_policies([p.clone()]).unwrap_or_default();
        let scope = ests
            .with(p, |est| {
                // The scope alone: a permit with the same principal, action and resource
                // constraints, no conditions, no annotations.
                let mut json = serde_json::Map::new();
                json.insert("effect".into(), "permit".into());
                for part in ["principal", "action", "resource"] {
                    json.insert(part.into(), est.get(part)?.clone());
                }
                json.insert("conditions".into(), serde_json::Value::Array(Vec::new()));
                cedar_policy::Policy::from_json(Some(p.id().clone()), json.into()).ok()
            })
            .and_then(|s| PolicySet::from_policies([s]).ok());
        out.push(SinglePolicy {
            id: p.id().to_string(),
            effect,
            flag: bundle::annotation(p, "flag").map(str::to_string),
            rule: bundle::annotation(p, "rule").map(str::to_string),
            alone,
            scope,
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}
