//! [`query`]: the records of a decision log that match a [`Filter`].

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use jiff::Timestamp;

use super::chain::{self, Lines, ReadError};
use super::DecisionRecord;
use crate::records::PrincipalId;
use crate::request::Action;

/// Which records [`query`] returns: those that match every condition given (`None`
/// matches anything).
///
/// # Example
/// ```
/// use membergate::audit::Filter;
/// use membergate::{sample, PrincipalId, PrincipalKind};
///
/// // Who saw this member's phone number in March 2020?
/// let phone_in_march = Filter {
///     member: Some(sample::ids::MEMBER_ELIGIBLE.into()),
///     field: Some("phone".into()),
///     since: Some("2020-03-01T00:00:00Z".parse()?),
///     until: Some("2020-04-01T00:00:00Z".parse()?),
///     ..Filter::default()
/// };
/// // What did this staffer do?
/// let staffer = Filter {
///     principal: Some(PrincipalId::new(PrincipalKind::CampaignStaff, sample::ids::CS_A_STAFF)),
///     ..Filter::default()
/// };
/// # let _ = (phone_in_march, staffer);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The principal who asked.
    pub principal: Option<PrincipalId>,
    /// The member record.
    pub member: Option<String>,
    /// A field that was granted.
    pub field: Option<String>,
    /// The action.
    pub action: Option<Action>,
    /// Requests at or after this time ([`DecisionRecord::at`]).
    pub since: Option<Timestamp>,
    /// Requests before this time.
    pub until: Option<Timestamp>,
}

impl Filter {
    /// Whether `record` matches.
    ///
    /// # Example
    /// ```
    /// use membergate::audit::{DecisionRecord, Filter};
    /// use membergate::{sample, Action, Context, Directory, Engine, MemberRequest, PrincipalId, PrincipalKind};
    ///
    /// let engine = Engine::from_dir("policies")?;
    /// let staffer = PrincipalId::new(PrincipalKind::CampaignStaff, sample::ids::CS_A_STAFF);
    /// let ctx = Context::at("2020-03-01T12:00:00Z".parse()?).election(sample::ids::LEADER_2020);
    /// let party = sample::bundled();
    /// let directory = Directory::from_membership(&engine, &party)?;
    /// let member = party.member(sample::ids::MEMBER_ELIGIBLE).ok_or("no member")?;
    /// let req = MemberRequest { principal: &staffer, action: Action::Read, member, context: &ctx };
    /// let fields = engine.permitted_fields(&directory, &req)?;
    /// let record = DecisionRecord::for_fields("r", &engine, &req, fields);
    ///
    /// let phone = Filter { field: Some("phone".into()), ..Filter::default() };
    /// let views = Filter { field: Some("political_views".into()), ..Filter::default() };
    /// assert!(phone.matches(&record));
    /// assert!(!views.matches(&record));   // refused, so not seen
    /// assert!(Filter { action: Some(Action::Read), ..phone.clone() }.matches(&record));
    /// assert!(!Filter { until: Some("2020-03-01T12:00:00Z".parse()?), ..phone }.matches(&record));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn matches(&self, record: &DecisionRecord) -> bool {
        self.principal
            .as_ref()
            .is_none_or(|p| record.principal == p.to_string())
            && self.member.as_ref().is_none_or(|m| &record.member == m)
            && self
                .field
                .as_ref()
                .is_none_or(|f| record.granted.contains(f))
            && self.action.is_none_or(|a| record.action == a.as_str())
            && self.since.is_none_or(|t| record.at >= t)
            && self.until.is_none_or(|t| record.at < t)
    }
}

/// The records of the log at `path` that match `filter`, in the log's order. A torn last
/// line is skipped. The chain is not checked: [`verify`](super::verify) does that.
///
/// # Errors
/// [`ReadError::Io`] if the file cannot be read, [`ReadError::BadLine`] naming the first
/// complete line that is not a record.
///
/// # Example
/// See [the module](super).
pub fn query(path: impl AsRef<Path>, filter: &Filter) -> Result<Vec<DecisionRecord>, ReadError> {
    let path = path.as_ref();
    let io = |source| chain::io_error(path, source);
    let mut lines = Lines::new(BufReader::new(File::open(path).map_err(io)?));
    let mut out = Vec::new();
    while let Some(line) = lines.next_line().map_err(io)? {
        if !line.complete {
            break;
        }
        let record = chain::parse(line.bytes)
            .map_err(|problem| ReadError::BadLine {
                path: path.to_path_buf(),
                line: line.number,
                problem,
            })?
            .record;
        if filter.matches(&record) {
            out.push(record);
        }
    }
    Ok(out)
}
