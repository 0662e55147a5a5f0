//! What a caller asks: an [`Action`] on a member's field by a principal, in a [`Context`].

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;

use crate::model::PrincipalId;

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
    /// A break-glass reason.
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

    /// States a break-glass reason.
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

/// One question: may `principal` do `action` on `field` of `member`, in `context`?
///
/// # Example
/// ```
/// use membergate::{Action, Context, Request};
/// let req = Request::new(
///     r#"Staff::"s-membership""#.parse()?,
///     Action::Update,
///     "m-1",
///     "address",
///     Context::at("2024-05-01T09:00:00Z".parse()?),
/// );
/// assert_eq!(req.field, "address");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Who asks.
    pub principal: PrincipalId,
    /// What they want to do.
    pub action: Action,
    /// Id of the member record.
    pub member: String,
    /// Name of the catalogue field.
    pub field: String,
    /// The circumstances.
    pub context: Context,
}

impl Request {
    /// A request.
    pub fn new(
        principal: PrincipalId,
        action: Action,
        member: impl Into<String>,
        field: impl Into<String>,
        context: Context,
    ) -> Self {
        Request {
            principal,
            action,
            member: member.into(),
            field: field.into(),
            context,
        }
    }
}
