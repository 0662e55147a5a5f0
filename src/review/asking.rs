//! A principal asking at a moment under both versions of the policies, and the search
//! both the matrix and the examples make: the first member of the data the two versions
//! decide apart, looked for where the plans say they may, confirmed by both engines.

use super::Witness;
use crate::plan::Plan;
use crate::request::{Action, Context, Request};
use crate::{Directory, Engine, MemberRef, PrincipalId, RequestError};

/// A principal asking to do an action at a moment, under the old and the new policies.
pub(super) struct Asking<'a> {
    pub old: (&'a Engine, &'a Directory),
    pub new: (&'a Engine, &'a Directory),
    pub principal: &'a PrincipalId,
    pub action: Action,
    pub ctx: &'a Context,
}

impl Asking<'_> {
    /// The principal's plans under the old and the new policies.
    pub fn plans(&self) -> Result<(Plan, Plan), RequestError> {
        let plan = |(engine, dir): (&Engine, &Directory)| {
            engine.plan(dir, self.principal, self.action, self.ctx)
        };
        Ok((plan(self.old)?, plan(self.new)?))
    }

    /// Both versions' decisions on `field` of `m`.
    pub fn decided(&self, m: MemberRef<'_>, field: &str) -> Result<Witness, RequestError> {
        let req = Request {
            principal: self.principal,
            action: self.action,
            member: m,
            field,
            context: self.ctx,
        };
        let decided = |(engine, dir): (&Engine, &Directory)| -> Result<_, RequestError> {
            let d = engine.authorize(dir, &req)?;
            Ok((
                d.is_allowed(),
                d.policies().iter().map(|p| p.to_string()).collect(),
            ))
        };
        Ok(Witness {
            member: m.id.to_string(),
            field: field.to_string(),
            before: decided(self.old)?,
            after: decided(self.new)?,
            asked_with: None,
        })
    }

    /// The first member of `members` and field of `fields` (members first) that the two
    /// versions decide apart, the new one allowing if `wanted` is `Some(true)`, denying if
    /// `Some(false)`, either way if `None`. Only the pairs the plans `(before, after)`
    /// leave possible are decided.
    pub fn apart<'m, F: AsRef<str>>(
        &self,
        members: impl IntoIterator<Item = MemberRef<'m>>,
        fields: &[F],
        (before, after): (&Plan, &Plan),
        wanted: Option<bool>,
    ) -> Result<Option<Witness>, RequestError> {
        let goes = |was: bool, is: bool| was != is && wanted.is_none_or(|w| is == w);
        for m in members {
            for field in fields {
                let field = field.as_ref();
                let was = before.field(field).and_then(|p| p.holds(m.id, m.attrs));
                let is = after.field(field).and_then(|p| p.holds(m.id, m.attrs));
                if let (Some(was), Some(is)) = (was, is) {
                    if !goes(was, is) {
                        continue;
                    }
                }
                let w = self.decided(m, field)?;
                if goes(w.before.0, w.after.0) {
                    return Ok(Some(w));
                }
            }
        }
        Ok(None)
    }
}
