//! [`Explanation`]: a readable account of one decision.

use std::fmt;
use std::path::PathBuf;

use jiff::Timestamp;

use crate::decision::{Decision, Effect};
use crate::records::PrincipalId;
use crate::request::{Action, Request};

/// What one in-scope policy did for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its condition held and it decided the request.
    Determining,
    /// A permit whose condition held, overridden by a forbid.
    Overridden,
    /// In scope, but its condition did not hold.
    ConditionFalse,
    /// Its evaluation failed, so it was skipped (the message says why).
    Errored(String),
}

/// One policy whose scope (principal, action, resource) matched the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTrace {
    /// The policy's `@id`.
    pub id: String,
    /// Permit ([`Effect::Allow`]) or forbid ([`Effect::Deny`]).
    pub effect: Effect,
    /// Its `@rule` annotation: the domain rule it encodes.
    pub rule: Option<String>,
    /// The file it is in.
    pub file: PathBuf,
    /// The line it starts on.
    pub line: usize,
    /// What it did.
    pub outcome: Outcome,
}

/// The account [`Engine::explain`](crate::Engine::explain) gives of one decision.
/// `Display` renders it for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation<'e> {
    /// Who asked.
    pub principal: PrincipalId,
    /// What they asked to do.
    pub action: Action,
    /// The member's id.
    pub member: String,
    /// The field asked for.
    pub field: String,
    /// When.
    pub at: Timestamp,
    /// The decision, as [`Engine::authorize`](crate::Engine::authorize) gives it.
    pub decision: Decision<'e>,
    /// The policies whose scope matched, by id.
    pub policies: Vec<PolicyTrace>,
    /// How many policies did not apply to this principal, action and resource.
    pub out_of_scope: usize,
}

impl<'e> Explanation<'e> {
    /// An account of `decision` on `req`.
    pub(crate) fn new(
        req: &Request<'_>,
        decision: Decision<'e>,
        policies: Vec<PolicyTrace>,
        out_of_scope: usize,
    ) -> Explanation<'e> {
        Explanation {
            principal: req.principal.clone(),
            action: req.action,
            member: req.member.id.to_string(),
            field: req.field.to_string(),
            at: req.context.now,
            decision,
            policies,
            out_of_scope,
        }
    }

    fn section(
        &self,
        f: &mut fmt::Formatter<'_>,
        title: &str,
        pick: impl Fn(&Outcome) -> bool,
    ) -> fmt::Result {
        let picked: Vec<_> = self.policies.iter().filter(|p| pick(&p.outcome)).collect();
        if picked.is_empty() {
            return Ok(());
        }
        writeln!(f, "  {title}:")?;
        for p in picked {
            let kind = match p.effect {
                Effect::Allow => "permit",
                Effect::Deny => "forbid",
            };
            write!(f, "    {kind} {}", p.id)?;
            if let Some(rule) = &p.rule {
                write!(f, " (rule {rule})")?;
            }
            write!(f, "  [{}:{}]", p.file.display(), p.line)?;
            if let Outcome::Errored(e) = &p.outcome {
                write!(f, ": {e}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

impl fmt::Display for Explanation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} {} `{}` of member `{}` at {}: {}",
            self.principal,
            self.action,
            self.field,
            self.member,
            self.at,
            match self.decision.effect() {
                Effect::Allow => "ALLOW",
                Effect::Deny => "DENY",
            }
        )?;
        let determining = self
            .policies
            .iter()
            .any(|p| p.outcome == Outcome::Determining);
        if !determining {
            match self.decision.effect() {
                Effect::Deny => {
                    writeln!(f, "  denied by default: no permit held and no forbid held")?
                }
                Effect::Allow => writeln!(f, "  allowed")?,
            }
        }
        self.section(f, "decided by (condition held)", |o| {
            *o == Outcome::Determining
        })?;
        self.section(f, "held, but overridden by a forbid", |o| {
            *o == Outcome::Overridden
        })?;
        self.section(f, "in scope, condition did not hold", |o| {
            *o == Outcome::ConditionFalse
        })?;
        self.section(f, "failed to evaluate (skipped)", |o| {
            matches!(o, Outcome::Errored(_))
        })?;
        if !self.decision.flags().is_empty() {
            writeln!(f, "  flagged: {}", self.decision.flags().join(", "))?;
        }
        write!(
            f,
            "  {} other polic{} do not apply to this principal, action and member",
            self.out_of_scope,
            if self.out_of_scope == 1 { "y" } else { "ies" }
        )
    }
}
