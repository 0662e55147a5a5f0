//! Helpers shared by the test modules: the bundled policies, engine, sample and fixture
//! with their directories, requests with owned parts, both decision paths asked at once,
//! copies of the policy directory with text mutations, parsing of test literals, running
//! the `membergate` binary, and random edits of any input for the parsers' property tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use jiff::Timestamp;
use membergate::{
    Action, Context, Decision, Directory, DirectoryRecord, Engine, Explanation, FieldDecisions,
    FieldSet, Member, MemberRef, MemberRequest, Membership, PageRequest, PrincipalId,
    PrincipalRecord, ProblemKind, Request, RequestError,
};
use proptest::prelude::*;
use proptest::sample::select;
use tempfile::TempDir;

// ------------------------------------------------------------------ bundled data

/// The bundled policy directory.
pub(crate) fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// The engine on the bundled policies, loaded once for every test module.
pub(crate) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        Engine::from_dir(policies_dir()).unwrap_or_else(|e| panic!("{}", e.render()))
    })
}

/// The bundled sample membership (12,000 members), built once for every test module.
pub(crate) fn bundled() -> &'static Membership {
    static BUNDLED: OnceLock<Membership> = OnceLock::new();
    BUNDLED.get_or_init(membergate::sample::bundled)
}

/// The policy suites' fixture, `policies/tests/fixtures/party.toml`.
pub(crate) fn fixture() -> &'static Membership {
    static PARTY: OnceLock<Membership> = OnceLock::new();
    PARTY.get_or_init(|| {
        let path = policies_dir().join("tests/fixtures/party.toml");
        let text = fs::read_to_string(path).expect("read fixture");
        toml::from_str(&text).expect("fixture parses")
    })
}

/// The bundled sample's principal side, for [`engine`], built once.
pub(crate) fn directory() -> &'static Directory {
    static DIRECTORY: OnceLock<Directory> = OnceLock::new();
    DIRECTORY.get_or_init(|| {
        Directory::from_membership(engine(), bundled()).expect("the bundled sample is valid")
    })
}

/// The fixture's principal side, for [`engine`], built once.
pub(crate) fn fixture_directory() -> &'static Directory {
    static DIRECTORY: OnceLock<Directory> = OnceLock::new();
    DIRECTORY.get_or_init(|| {
        Directory::from_membership(engine(), fixture()).expect("the fixture's records are valid")
    })
}

/// The member `id` of `party`, which must be there.
pub(crate) fn member<'a>(party: &'a Membership, id: &str) -> MemberRef<'a> {
    party
        .member(id)
        .unwrap_or_else(|| panic!("no member `{id}` in the party"))
}

/// Puts `record` into `party` under `id`, as [`Directory::upsert`] puts it in a directory.
pub(crate) fn insert_record(party: &mut Membership, id: &str, record: DirectoryRecord) {
    let id = id.to_string();
    match record {
        DirectoryRecord::Region(r) => drop(party.regions.insert(id, r)),
        DirectoryRecord::Clp(r) => drop(party.clps.insert(id, r)),
        DirectoryRecord::Election(r) => drop(party.elections.insert(id, r)),
        DirectoryRecord::Candidate(r) => drop(party.candidates.insert(id, r)),
        DirectoryRecord::Campaign(r) => drop(party.campaigns.insert(id, r)),
        DirectoryRecord::Staff(r) => drop(party.staff.insert(id, r)),
        DirectoryRecord::CampaignStaff(r) => drop(party.campaign_staff.insert(id, r)),
        DirectoryRecord::Volunteer(r) => drop(party.volunteers.insert(id, r)),
        DirectoryRecord::Officer(r) => drop(party.officers.insert(id, r)),
        DirectoryRecord::Representative(r) => drop(party.representatives.insert(id, r)),
        DirectoryRecord::Processor(r) => drop(party.processors.insert(id, r)),
        DirectoryRecord::CallSession(r) => drop(party.call_sessions.insert(id, r)),
    }
}

// ------------------------------------------------------------------ requests

/// A request with owned parts (the member's attributes too), for tests that keep many
/// requests, send them to threads or change one part: [`Ask::request`] borrows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ask {
    pub(crate) principal: PrincipalId,
    pub(crate) action: Action,
    pub(crate) member: String,
    pub(crate) attrs: Member,
    pub(crate) field: String,
    pub(crate) context: Context,
}

impl Ask {
    /// `principal` asks to `action` the `field` of `party`'s member `member` (which must
    /// be there) in `context`.
    pub(crate) fn new(
        party: &Membership,
        principal: PrincipalId,
        action: Action,
        member: &str,
        field: &str,
        context: Context,
    ) -> Ask {
        Ask {
            principal,
            action,
            member: member.to_string(),
            attrs: self::member(party, member).attrs.clone(),
            field: field.to_string(),
            context,
        }
    }

    /// The member, as a request names it.
    pub(crate) fn member(&self) -> MemberRef<'_> {
        MemberRef {
            id: &self.member,
            attrs: &self.attrs,
        }
    }

    /// The question on the one field.
    pub(crate) fn request(&self) -> Request<'_> {
        Request {
            principal: &self.principal,
            action: self.action,
            member: self.member(),
            field: &self.field,
            context: &self.context,
        }
    }

    /// The question on every field of the member.
    pub(crate) fn all_fields(&self) -> MemberRequest<'_> {
        self.request().all_fields()
    }
}

/// The page request of `req`'s principal, action and context on `members`.
pub(crate) fn page<'a>(req: &MemberRequest<'a>, members: &'a [MemberRef<'a>]) -> PageRequest<'a> {
    PageRequest {
        principal: req.principal,
        action: req.action,
        members,
        context: req.context,
    }
}

// ------------------------------------------------------------------ both paths

/// [`Engine::authorize`] on `req`, after checking that the reference gives the same
/// answer (the same decision, or the same error).
pub(crate) fn authorize<'e>(
    e: &'e Engine,
    dir: &Directory,
    req: &Request<'_>,
) -> Result<Decision<'e>, RequestError> {
    let got = e.authorize(dir, req);
    assert_eq!(got, e.reference().authorize(dir, req), "authorize {req:?}");
    got
}

/// [`Engine::explain`] on `req`, after checking that the reference gives the same account
/// (or the same error), and that its decision is `authorize`'s.
pub(crate) fn explain<'e>(
    e: &'e Engine,
    dir: &Directory,
    req: &Request<'_>,
) -> Result<Explanation<'e>, RequestError> {
    let got = e.explain(dir, req);
    assert_eq!(got, e.reference().explain(dir, req), "explain {req:?}");
    assert_eq!(
        got.as_ref().map(|x| &x.decision),
        e.authorize(dir, req).as_ref(),
        "explain's decision {req:?}"
    );
    got
}

/// [`Engine::permitted_fields`] on `req`, after checking that the reference gives the
/// same answer.
pub(crate) fn permitted_fields(
    e: &Engine,
    dir: &Directory,
    req: &MemberRequest<'_>,
) -> Result<FieldSet, RequestError> {
    let got = e.permitted_fields(dir, req);
    assert_eq!(
        got,
        e.reference().permitted_fields(dir, req),
        "permitted_fields {req:?}"
    );
    got
}

/// [`Engine::field_decisions`] on `req`, after checking that the reference gives the
/// same answer and that its granted fields are `permitted_fields`'.
pub(crate) fn field_decisions<'e>(
    e: &'e Engine,
    dir: &Directory,
    req: &MemberRequest<'_>,
) -> Result<FieldDecisions<'e>, RequestError> {
    let got = e.field_decisions(dir, req);
    assert_eq!(
        got,
        e.reference().field_decisions(dir, req),
        "field_decisions {req:?}"
    );
    assert_eq!(
        got.as_ref()
            .map(FieldDecisions::granted)
            .map_err(Clone::clone),
        e.permitted_fields(dir, req),
        "field_decisions' fields {req:?}"
    );
    got
}

/// [`Engine::field_decisions_page`] on `req`, after checking that the reference gives the
/// same answer and that `permitted_fields_page` on both paths gives its granted fields.
pub(crate) fn field_decisions_page<'e>(
    e: &'e Engine,
    dir: &Directory,
    req: &PageRequest<'_>,
) -> Result<Vec<FieldDecisions<'e>>, RequestError> {
    let got = e.field_decisions_page(dir, req);
    assert_eq!(
        got,
        e.reference().field_decisions_page(dir, req),
        "field_decisions_page {req:?}"
    );
    let granted = granted(&got);
    assert_eq!(
        e.permitted_fields_page(dir, req),
        granted,
        "permitted_fields_page {req:?}"
    );
    assert_eq!(
        e.reference().permitted_fields_page(dir, req),
        granted,
        "reference permitted_fields_page {req:?}"
    );
    got
}

/// The granted fields of each of `decisions`.
pub(crate) fn granted(
    decisions: &Result<Vec<FieldDecisions<'_>>, RequestError>,
) -> Result<Vec<FieldSet>, RequestError> {
    decisions
        .as_ref()
        .map(|ds| ds.iter().map(FieldDecisions::granted).collect())
        .map_err(Clone::clone)
}

/// Every question on `req` (and on its member alone in a page) asked of both paths: each
/// answer the same on both, and consistent across questions (the field's decision is the
/// field decisions' entry for it, the page's entry is the member's). Returns the decision.
pub(crate) fn every_question<'e>(
    e: &'e Engine,
    dir: &Directory,
    req: &Request<'_>,
) -> Result<Decision<'e>, RequestError> {
    let decision = authorize(e, dir, req);
    // Each helper checks its answer against a sibling question too: explain's decision
    // is authorize's, field decisions grant permitted_fields', the page's grant the
    // permitted_fields_page's.
    explain(e, dir, req).ok();
    let all = req.all_fields();
    let decisions = field_decisions(e, dir, &all);
    permitted_fields(e, dir, &all).ok();
    let members = [req.member];
    let paged = field_decisions_page(e, dir, &page(&all, &members));
    assert_eq!(
        paged.as_ref().map(|ds| ds.first()),
        decisions.as_ref().map(Some),
        "page of one {req:?}"
    );
    match (&decision, &decisions, e.catalogue().id(req.field)) {
        (Ok(d), Ok(ds), Some(field)) => {
            assert_eq!(ds.granted().contains(field), d.is_allowed(), "{req:?}");
            assert_eq!(
                ds.policies(field).collect::<Vec<_>>(),
                d.policies(),
                "{req:?}"
            );
        }
        // An unknown field fails the one-field questions only.
        (Err(RequestError::UnknownField(_)), _, None) => {}
        (Err(a), Err(b), _) => assert_eq!(a, b, "{req:?}"),
        (a, b, _) => panic!("{req:?}: authorize gives {a:?}, field_decisions {b:?}"),
    }
    decision
}

// ------------------------------------------------------------------ literals

/// The timestamp `s` (RFC 3339), which must parse.
pub(crate) fn t(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

/// The principal `s` (`Type::"id"`), which must parse.
pub(crate) fn principal(s: &str) -> PrincipalId {
    s.parse().expect("principal")
}

// ------------------------------------------------------------------ policy copies

/// Copies the directory tree `from` to `to`, creating `to`.
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create directory");
    for entry in fs::read_dir(from).expect("read directory") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let last = before.rsplit('\n').next().unwrap_or("");
    (line, last.chars().count() + 1)
}

/// A text mutation of one file of a policy directory, and the problem it must cause.
#[derive(Clone, Copy)]
pub(crate) struct Mutation {
    /// The file, relative to the policy directory.
    pub(crate) file: &'static str,
    /// Text of the file whose first occurrence is replaced.
    pub(crate) find: &'static str,
    /// What replaces it.
    pub(crate) replace: &'static str,
    /// The problem is reported at the first occurrence of this inside `replace`.
    pub(crate) at: &'static str,
    /// What kind of problem it is.
    pub(crate) kind: ProblemKind,
    /// Fragments the problem's message contains.
    pub(crate) message: &'static [&'static str],
}

/// Where a problem is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Place {
    /// The file the problem names.
    pub(crate) file: PathBuf,
    /// Its 1-based line.
    pub(crate) line: usize,
    /// Its 1-based column, in characters.
    pub(crate) column: usize,
}

/// A syntax error in a policy of guardrails.cedar: a missing `)`.
pub(crate) const POLICY_SYNTAX: Mutation = Mutation {
    file: "guardrails.cedar",
    find: "forbid (principal, action, resource)\nwhen { principal has ended_at",
    replace: "forbid (principal, action, resource\nwhen { principal has ended_at",
    at: "when",
    kind: ProblemKind::Policy,
    message: &["unexpected token `when`"],
};

/// A copy of the bundled policy directory in a temporary directory.
pub(crate) struct PolicyCopy {
    dir: TempDir,
}

impl PolicyCopy {
    /// A fresh copy of the bundled policies.
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        copy_dir(&policies_dir(), dir.path());
        PolicyCopy { dir }
    }

    /// The copy's directory.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The path of `rel` (relative to the policy directory) in the copy.
    pub(crate) fn file(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }

    /// The text of `rel` in the copy.
    pub(crate) fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.file(rel)).expect("read file")
    }

    /// Replaces the first `find` with `replace` in `rel`; returns the new text and the
    /// byte offset where `replace` starts.
    pub(crate) fn edit(&self, rel: &str, find: &str, replace: &str) -> (String, usize) {
        let text = self.read(rel);
        let at = text
            .find(find)
            .unwrap_or_else(|| panic!("`{find}` is not in {rel}: the fixture changed"));
        let new = format!("{}{replace}{}", &text[..at], &text[at + find.len()..]);
        fs::write(self.file(rel), &new).expect("write file");
        (new, at)
    }

    /// Applies `m` and returns where its problem must be reported.
    pub(crate) fn mutate(&self, m: &Mutation) -> Place {
        let (text, at) = self.edit(m.file, m.find, m.replace);
        let within = m
            .replace
            .find(m.at)
            .unwrap_or_else(|| panic!("`{}` is not in the replacement `{}`", m.at, m.replace));
        let (line, column) = line_col(&text, at + within);
        Place {
            file: self.file(m.file),
            line,
            column,
        }
    }
}

// ------------------------------------------------------------------ the CLI

/// Runs the `membergate` binary with `args` in the crate's directory.
pub(crate) fn membergate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_membergate"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run membergate")
}

/// The standard output of `o`, lossily decoded.
pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The standard error of `o`, lossily decoded.
pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// ------------------------------------------------------------------ a browser

/// Debian's `chromium`, if installed (`MEMBERGATE_CHROMIUM` names another); `None` skips
/// the browser test unless `MEMBERGATE_REQUIRE_CHROMIUM` is set (CI sets it).
pub(crate) fn chromium() -> Option<std::path::PathBuf> {
    let named = std::env::var_os("MEMBERGATE_CHROMIUM").map(std::path::PathBuf::from);
    let found = named.or_else(|| {
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("MEMBERGATE_REQUIRE_CHROMIUM").is_none(),
            "MEMBERGATE_REQUIRE_CHROMIUM is set but no chromium was found"
        );
        eprintln!("no chromium (apt-get install chromium): the browser tests are skipped");
    }
    found
}

/// Runs headless chromium on `page` with `args`; its standard output.
pub(crate) fn headless(
    chromium: &std::path::Path,
    page: &std::path::Path,
    args: &[&str],
) -> String {
    let out = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ------------------------------------------------------------------ plans

/// What [`plan_agrees`] compared.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PlanTally {
    /// Members decided by both (each on every field and on "any field").
    pub(crate) members: usize,
    /// Of those, members on which some field needed a per-member decision.
    pub(crate) per_member: usize,
    /// Plans refused, with the engine's error.
    pub(crate) refused: usize,
}

impl std::ops::AddAssign for PlanTally {
    fn add_assign(&mut self, o: PlanTally) {
        self.members += o.members;
        self.per_member += o.per_member;
        self.refused += o.refused;
    }
}

/// The sample's members with a story (eligible, in another CLP, left in 2009 and 2023,
/// joined after the freeze, opted out of email).
pub(crate) const SPECIAL_MEMBERS: [&str; 6] = [
    membergate::sample::ids::MEMBER_ELIGIBLE,
    membergate::sample::ids::MEMBER_OTHER_CLP,
    membergate::sample::ids::MEMBER_LEFT_2009,
    membergate::sample::ids::MEMBER_LEFT_2023,
    membergate::sample::ids::MEMBER_JOINED_AFTER_FREEZE,
    membergate::sample::ids::MEMBER_EMAIL_OPT_OUT,
];

/// The principal's hourly read limit.
pub(crate) fn read_limit(party: &Membership, p: &PrincipalId) -> u32 {
    party
        .principal(p)
        .expect("a principal of the party")
        .hourly_read_limit()
}

/// Contexts at and around (1 ms either side) each boundary of `principal` in `party`:
/// its role's end (and its campaign's), the read limit, and per kind the boundaries its
/// policies read: an election's nominations close, ballot close and freeze date (with
/// its election and another), a call session's opening and closing (in the session),
/// a contract's start and end, two years after the leaving date of the members who left
/// in 2009 and 2023 (with and without a purpose or a reason).
pub(crate) fn boundary_contexts(party: &Membership, principal: &PrincipalId) -> Vec<Context> {
    use jiff::SignedDuration;
    use membergate::sample::ids;
    let ms = SignedDuration::from_millis(1);
    let around = |t: Timestamp| [t - ms, t, t + ms];
    let limit = u64::from(read_limit(party, principal));
    let mut out = vec![
        Context::at(t("2024-05-01T09:00:00Z")),
        Context::at(t("2024-05-01T09:00:00Z")).reads_this_hour(limit.saturating_sub(1)),
        Context::at(t("2024-05-01T09:00:00Z")).reads_this_hour(limit),
    ];
    let record = party
        .principal(principal)
        .expect("a principal of the party");
    out.extend(
        record
            .ended_at()
            .into_iter()
            .flat_map(around)
            .map(Context::at),
    );
    let retention = |id: &str| {
        party.members[id].left.expect("a member who left") + SignedDuration::from_hours(730 * 24)
    };
    match record {
        PrincipalRecord::CampaignStaff(r) => {
            let campaign = &party.campaigns[&r.campaign];
            out.extend(
                campaign
                    .ended_at
                    .into_iter()
                    .flat_map(around)
                    .map(|t| Context::at(t).election(campaign.election.clone())),
            );
            for (id, e) in &party.elections {
                for at in [e.nominations_close, e.freeze_date, e.ballot_close] {
                    for t in around(at) {
                        out.push(Context::at(t).election(id.clone()));
                        out.push(Context::at(t).election(campaign.election.clone()));
                    }
                }
            }
        }
        PrincipalRecord::Volunteer(_) => {
            for (id, s) in &party.call_sessions {
                let election = s
                    .campaign
                    .as_ref()
                    .map(|c| party.campaigns[c].election.clone());
                for t in [s.opens, s.closes].into_iter().flat_map(around) {
                    let ctx = Context::at(t).session(id.clone());
                    out.push(match &election {
                        Some(e) => ctx.election(e.clone()),
                        None => ctx,
                    });
                }
            }
        }
        PrincipalRecord::Processor(r) => {
            for t in [r.contract.starts, r.contract.ends]
                .into_iter()
                .flat_map(around)
            {
                out.push(Context::at(t));
            }
        }
        PrincipalRecord::Staff(_)
        | PrincipalRecord::Officer(_)
        | PrincipalRecord::Representative(_) => {}
    }
    for (i, t) in [ids::MEMBER_LEFT_2009, ids::MEMBER_LEFT_2023]
        .into_iter()
        .flat_map(|id| around(retention(id)))
        .enumerate()
    {
        out.push(match i % 3 {
            0 => Context::at(t),
            1 => Context::at(t).purpose("subject_access"),
            _ => Context::at(t).reason("a complaint to the regulator"),
        });
    }
    out
}

/// A policy the planner cannot express (two of the member's dates compared): its part is
/// decided per member.
pub(crate) const PER_MEMBER_POLICY: &str = r#"
@id("export-short-memberships")
permit (principal is Staff in Team::"membership", action == Action::"export", resource is Member)
when { resource has left && resource.left < resource.joined.offset(duration("3650d")) };
"#;

/// The engine's fields for each member of `page`: the page at once, or, if the page is
/// refused (a member fails its check), each member on its own.
pub(crate) fn engine_sets(
    e: &Engine,
    dir: &Directory,
    page: &PageRequest<'_>,
) -> Vec<Result<FieldSet, RequestError>> {
    match e.permitted_fields_page(dir, page) {
        Ok(sets) => sets.into_iter().map(Ok).collect(),
        Err(_) => page
            .members
            .iter()
            .map(|m| {
                e.permitted_fields(
                    dir,
                    &MemberRequest {
                        principal: page.principal,
                        action: page.action,
                        member: *m,
                        context: page.context,
                    },
                )
            })
            .collect(),
    }
}

/// [`Engine::plan`] of `principal`, `action` and `ctx` against the engine's per-member
/// decisions on `members`: on every member the engine decides, each field's plan and the
/// plan of "any field" allow what the engine allows; where a per-member part leaves a
/// field open, the engine's decision lies between the plan's bounds. A plan refused must
/// be refused with the engine's error.
pub(crate) fn plan_agrees(
    e: &Engine,
    dir: &Directory,
    (principal, action, ctx): (&PrincipalId, Action, &Context),
    members: &[MemberRef<'_>],
) -> PlanTally {
    let mut tally = PlanTally::default();
    let plan = match e.plan(dir, principal, action, ctx) {
        Ok(p) => p,
        Err(err) => {
            if let Some(m) = members.first() {
                let req = MemberRequest {
                    principal,
                    action,
                    member: *m,
                    context: ctx,
                };
                assert_eq!(e.permitted_fields(dir, &req), Err(err), "plan refused");
            }
            tally.refused += 1;
            return tally;
        }
    };
    let page = PageRequest {
        principal,
        action,
        members,
        context: ctx,
    };
    let sets = engine_sets(e, dir, &page);
    // Each distinct plan once per member.
    let mut distinct: Vec<&membergate::plan::FieldPlan> = Vec::new();
    let slots: Vec<usize> = plan
        .fields()
        .map(|(_, p)| match distinct.iter().position(|d| *d == p) {
            Some(i) => i,
            None => {
                distinct.push(p);
                distinct.len() - 1
            }
        })
        .collect();
    let ids: Vec<membergate::FieldId> = e.catalogue().iter().map(|(id, _)| id).collect();
    let fits = |p: &membergate::plan::FieldPlan, id: &str, m: &Member, allowed: bool| -> bool {
        match p.holds(id, m) {
            Some(b) => b == allowed,
            None => {
                let c = p.condition().expect("only a condition is undecided");
                let low = c.bound(false).holds(id, m).expect("a bound is decided");
                let high = c.bound(true).holds(id, m).expect("a bound is decided");
                (!low || allowed) && (!allowed || high)
            }
        }
    };
    for (m, set) in members.iter().zip(sets) {
        let Ok(set) = set else { continue };
        let mut open = false;
        let answers: Vec<Option<bool>> = distinct.iter().map(|p| p.holds(m.id, m.attrs)).collect();
        for ((id, slot), (name, p)) in ids.iter().zip(&slots).zip(plan.fields()) {
            let allowed = set.contains(*id);
            let fine = match answers[*slot] {
                Some(b) => b == allowed,
                None => {
                    open = true;
                    fits(p, m.id, m.attrs, allowed)
                }
            };
            assert!(
                fine,
                "plan of {principal} {action} at {ctx:?}, field {name}: {p}\nmember {} {:?}\nengine: {}",
                m.id,
                m.attrs,
                allowed
            );
        }
        let any = plan.any_field();
        assert!(
            fits(any, m.id, m.attrs, !set.is_empty()),
            "plan of {principal} {action} at {ctx:?}, any field: {any}\nmember {} {:?}\nengine: {set:?}",
            m.id,
            m.attrs
        );
        tally.members += 1;
        tally.per_member += usize::from(open);
    }
    tally
}

// ------------------------------------------------------------------ random edits of inputs

/// Cases per parser property test: `MEMBERGATE_PARSER_CASES` (default 96).
/// The total of generated cases `MEMBERGATE_PROPTEST_CASES` asks for, if set: each
/// property test takes its share of it.
pub(crate) fn proptest_total() -> Option<u32> {
    std::env::var("MEMBERGATE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

/// The ids of a map of records, in order.
pub(crate) fn ids<V>(map: &std::collections::BTreeMap<String, V>) -> Vec<String> {
    map.keys().cloned().collect()
}

/// Every contact channel.
pub(crate) const CHANNELS: [membergate::Channel; 3] = [
    membergate::Channel::Phone,
    membergate::Channel::Email,
    membergate::Channel::Post,
];

pub(crate) fn parser_cases() -> u32 {
    std::env::var("MEMBERGATE_PARSER_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96)
}

/// One edit: at a place (taken modulo the text's characters), insert, delete or replace
/// with a character.
pub(crate) type Edit = (usize, u8, char);

pub(crate) fn edits() -> impl Strategy<Value = Vec<Edit>> {
    // Characters that matter to the formats, and any character.
    let c = prop_oneof![
        select(vec![
            '"', '\'', '{', '}', '[', ']', '(', ')', ';', ',', '=', ':', '\n', '\\', '@', '#', '0',
            'é', '\u{0}',
        ]),
        any::<char>(),
    ];
    prop::collection::vec((any::<usize>(), 0..3u8, c), 1..6)
}

pub(crate) fn mutate(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for (at, kind, c) in edits {
        let at = at % (chars.len() + 1);
        match kind {
            0 => chars.insert(at, *c),
            1 if at < chars.len() => {
                chars.remove(at);
            }
            _ if at < chars.len() => chars[at] = *c,
            _ => chars.push(*c),
        }
    }
    chars.into_iter().collect()
}
