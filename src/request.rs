//! What a caller asks: an [`Action`] on a member's field by a principal, in a [`Context`].

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;

use crate::records::{MemberRef, PrincipalId};

/// What a principal wants to do with a member's field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Read the field.
    Read,
    /// Export the record (one member).
    Export,
    /// Update the field.
    Update,
    /// Erase the record.
    Erase,
    /// Export many records at once.
    BulkExport,
    /// Telephone the member.
    ContactPhone,
    /// Email the member.
    ContactEmail,
    /// Write to the member by post.
    ContactPost,
}

impl Action {
    /// Every action, in a fixed order.
    pub const ALL: [Action; 8] = [
        Action::Read,
        Action::Export,
        Action::Update,
        Action::Erase,
        Action::BulkExport,
        Action::ContactPhone,
        Action::ContactEmail,
        Action::ContactPost,
    ];

    /// The action's id in the schema (`read`, `contact_phone`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Export => "export",
            Action::Update => "update",
            Action::Erase => "erase",
            Action::BulkExport => "bulk_export",
            Action::ContactPhone => "contact_phone",
            Action::ContactEmail => "contact_email",
            Action::ContactPost => "contact_post",
        }
    }

    /// Whether a grant of this action lets the principal see the field's value: `read`,
    /// `export` and `bulk_export` disclose it. The others do not, though a policy may
    /// allow them on every field: `update` and `erase` are writes (a CRM applies them and
    /// reads nothing back that a `read` would not show), and a contact action lets the
    /// CRM place a call, send an email or print a letter for the principal, not show the
    /// number or address. A CRM serves values only for a disclosing action.
    ///
    /// # Example
    /// ```
    /// use membergate::Action;
    /// assert!(Action::Read.discloses());
    /// assert!(!Action::Erase.discloses());
    /// let disclosing: Vec<_> = Action::ALL.into_iter().filter(|a| a.discloses()).collect();
    /// assert_eq!(disclosing, [Action::Read, Action::Export, Action::BulkExport]);
    /// ```
    pub fn discloses(self) -> bool {
        matches!(self, Action::Read | Action::Export | Action::BulkExport)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for an action name that is not one of [`Action::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action `{0}` (expected one of read, export, update, erase, bulk_export, contact_phone, contact_email, contact_post)")]
pub struct ParseActionError(String);

impl FromStr for Action {
    type Err = ParseActionError;

    /// Parses `read` or `Action::"read"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let name = t
            .strip_prefix("Action::\"")
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or(t);
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == name)
            .ok_or_else(|| ParseActionError(s.to_string()))
    }
}

/// The circumstances of a request. The caller passes the time: nothing reads the clock
/// inside a decision.
///
/// # Example
/// ```
/// use membergate::Context;
/// let ctx = Context::at("2020-03-01T12:00:00Z".parse()?)
///     .election("leader-2020")
///     .reads_this_hour(12);
/// assert_eq!(ctx.election.as_deref(), Some("leader-2020"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The time of the request (Cedar keeps millisecond precision).
    pub now: Timestamp,
    /// Member reads the principal made in the hour before this request.
    pub reads_this_hour: u64,
    /// Id of the election this access is for.
    pub election: Option<String>,
    /// Id of the call session a volunteer works in.
    pub session: Option<String>,
    /// The stated purpose (`equality_monitoring`, `subject_access`, `complaint`).
    pub purpose: Option<String>,
    /// A break-glass reason: text a person wrote (see [`Context::reason`]).
    pub reason: Option<String>,
}

impl Context {
    /// A context at `now`, with nothing else stated.
    pub fn at(now: Timestamp) -> Self {
        Context {
            now,
            reads_this_hour: 0,
            election: None,
            session: None,
            purpose: None,
            reason: None,
        }
    }

    /// States the election this access is for.
    pub fn election(mut self, id: impl Into<String>) -> Self {
        self.election = Some(id.into());
        self
    }

    /// States the call session a volunteer works in.
    pub fn session(mut self, id: impl Into<String>) -> Self {
        self.session = Some(id.into());
        self
    }

    /// States the purpose of the access.
    pub fn purpose(mut self, purpose: impl Into<String>) -> Self {
        self.purpose = Some(purpose.into());
        self
    }

    /// States a break-glass reason. A request is refused as malformed
    /// ([`RequestError::InvalidContext`](crate::RequestError::InvalidContext)) unless the reason
    /// reads as written by a person: trimmed, [`REASON_CHARS`] characters, with at least
    /// two words (runs of letters or digits), one of them of three letters or more.
    /// `" "`, `"-"`, `"n/a"` or `"xxxxxxxxxx"` are not reasons.
    ///
    /// ```
    /// use membergate::{sample, Action, Context, Directory, Engine, PrincipalId, PrincipalKind, Request};
    /// let engine = Engine::from_dir("policies")?;
    /// let party = sample::bundled();
    /// let directory = Directory::from_membership(&engine, &party)?;
    /// let dpo = PrincipalId::new(PrincipalKind::Staff, sample::ids::S_DPO);
    /// let member = party.member(sample::ids::MEMBER_ELIGIBLE).ok_or("no member")?;
    /// let ask = |ctx: &Context| {
    ///     engine.authorize(&directory, &Request { principal: &dpo, action: Action::Read, member, field: "phone", context: ctx })
    /// };
    /// let now = "2021-03-01T09:00:00Z".parse()?;
    /// assert!(ask(&Context::at(now).reason("ICO inquiry 2021-0042"))?.is_allowed());
    /// assert!(ask(&Context::at(now).reason("-")).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Sets how many member reads the principal made in the past hour.
    pub fn reads_this_hour(mut self, n: u64) -> Self {
        self.reads_this_hour = n;
        self
    }
}

/// How long a break-glass reason may be, trimmed, in characters.
pub const REASON_CHARS: std::ops::RangeInclusive<usize> = 10..=500;

/// Whether `reason` reads as a break-glass reason a person wrote (see
/// [`Context::reason`]); the message says what it lacks.
pub(crate) fn check_reason(reason: &str) -> Result<(), String> {
    let text = reason.trim();
    let chars = text.chars().count();
    if !REASON_CHARS.contains(&chars) {
        return Err(format!(
            "a break-glass reason must be {} to {} characters, not {chars}",
            REASON_CHARS.start(),
            REASON_CHARS.end()
        ));
    }
    // One pass, no allocation: the check runs on every request that states a reason.
    let words = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty());
    let (count, worded) = words.fold((0usize, false), |(n, worded), w| {
        (
            n + 1,
            worded || w.chars().filter(|c| c.is_alphabetic()).count() >= 3,
        )
    });
    if count < 2 || !worded {
        return Err(
            "a break-glass reason must say why in words: two or more, one of three letters or more"
                .into(),
        );
    }
    Ok(())
}

/// One question: may `principal` do `action` on `field` of `member`, in `context`?
/// [`Engine::authorize`](crate::Engine::authorize) and
/// [`Engine::explain`](crate::Engine::explain) answer it.
///
/// # Example
/// ```
/// use membergate::{Action, Context, Member, MemberRef, MemberStatus, PrincipalId, Request};
/// let staffer: PrincipalId = r#"Staff::"s-membership""#.parse()?;
/// let attrs = Member {
///     status: MemberStatus::Member,
///     clp: "islington-north".into(),
///     joined: "2015-03-01T00:00:00Z".parse()?,
///     left: None,
///     in_good_standing: true,
///     consents: vec![],
///     opt_outs: vec![],
/// };
/// let ctx = Context::at("2024-05-01T09:00:00Z".parse()?);
/// let req = Request {
///     principal: &staffer,
///     action: Action::Update,
///     member: MemberRef { id: "m-1", attrs: &attrs },
///     field: "address",
///     context: &ctx,
/// };
/// assert_eq!(req.member.id, "m-1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Who asks.
    pub principal: &'a PrincipalId,
    /// What they want to do.
    pub action: Action,
    /// The member record, as the CRM read it with the row.
    pub member: MemberRef<'a>,
    /// Name of the catalogue field.
    pub field: &'a str,
    /// The circumstances.
    pub context: &'a Context,
}

/// Which fields of `member` may `principal` `action`, in `context`?
/// [`Engine::permitted_fields`](crate::Engine::permitted_fields) and
/// [`Engine::field_decisions`](crate::Engine::field_decisions) answer it.
#[derive(Debug, Clone, Copy)]
pub struct MemberRequest<'a> {
    /// Who asks.
    pub principal: &'a PrincipalId,
    /// What they want to do.
    pub action: Action,
    /// The member record, as the CRM read it with the row.
    pub member: MemberRef<'a>,
    /// The circumstances.
    pub context: &'a Context,
}

/// [`MemberRequest`] for a page of members, answered in the order given by
/// [`Engine::permitted_fields_page`](crate::Engine::permitted_fields_page) and
/// [`Engine::field_decisions_page`](crate::Engine::field_decisions_page). The
/// principal's and the context's records are resolved once for the page.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest<'a> {
    /// Who asks.
    pub principal: &'a PrincipalId,
    /// What they want to do.
    pub action: Action,
    /// The member records, as the CRM read them with their rows.
    pub members: &'a [MemberRef<'a>],
    /// The circumstances.
    pub context: &'a Context,
}

impl<'a> Request<'a> {
    /// The same question on every field of the member.
    pub fn all_fields(&self) -> MemberRequest<'a> {
        MemberRequest {
            principal: self.principal,
            action: self.action,
            member: self.member,
            context: self.context,
        }
    }
}

impl<'a> MemberRequest<'a> {
    /// The same question as a page of this one member.
    pub(crate) fn as_page(&self) -> PageRequest<'_> {
        PageRequest {
            principal: self.principal,
            action: self.action,
            members: std::slice::from_ref(&self.member),
            context: self.context,
        }
    }

    /// The same question on one field.
    pub fn field(&self, field: &'a str) -> Request<'a> {
        Request {
            principal: self.principal,
            action: self.action,
            member: self.member,
            field,
            context: self.context,
        }
    }
}
