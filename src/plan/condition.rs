//! A plan's conditions: boolean formulas over a member's own attributes, simplified as
//! they are built.

use std::fmt;
use std::sync::Arc;

use jiff::Timestamp;

use crate::entities::millis;
use crate::records::{Channel, Member, MemberStatus};

/// What a principal may see of members: on every member, on none, or on those a
/// [`Condition`] on the member's own attributes selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldPlan {
    /// Allowed on every member.
    Always,
    /// Allowed on no member.
    Never,
    /// Allowed on the members the condition selects.
    When(Condition),
}

/// A condition on a member's own attributes (never a constant: a constant is a
/// [`FieldPlan::Always`] or [`FieldPlan::Never`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// An atom.
    Atom(Atom),
    /// The negation.
    Not(Box<Condition>),
    /// Every one holds (two or more).
    All(Vec<Condition>),
    /// At least one holds (two or more).
    Any(Vec<Condition>),
}

/// A test on one attribute of a member. Each is true or false on every member that
/// passes the engine's check (never an error, never SQL's `NULL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Atom {
    /// The member's status is one of these.
    Status(Vec<MemberStatus>),
    /// The member is in good standing.
    InGoodStanding,
    /// The member has a date they left.
    HasLeft,
    /// When the member joined, to the millisecond, compared with the time.
    Joined(Comparison, Timestamp),
    /// The member has a date they left, and it compares so with the time (to the
    /// millisecond).
    Left(Comparison, Timestamp),
    /// The member consented to one of these channels.
    Consents(Vec<Channel>),
    /// The member opted out of one of these channels.
    OptOuts(Vec<Channel>),
    /// The member's CLP is one of these (by id; shared, as a plan repeats it per
    /// field).
    Clp(Arc<[String]>),
    /// The member is one of these (by id; shared).
    Member(Arc<[String]>),
    /// A part of a policy's condition that the planner cannot express on the member's
    /// attributes: whether it evaluates to true (`holds`) or to false on the member is
    /// known only by deciding on it. `part` tells apart two such parts.
    PerMember {
        /// The policy's id.
        policy: String,
        /// Which of the plan's undecided parts.
        part: u32,
        /// `true`: the part evaluates to true; `false`: it evaluates to false (an
        /// error is neither).
        holds: bool,
    },
}

/// A comparison of a member's time with a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Comparison {
    /// `<`
    Less,
    /// `<=`
    LessEq,
    /// `==`
    Eq,
    /// `!=`
    NotEq,
    /// `>=`
    GreaterEq,
    /// `>`
    Greater,
}

impl Comparison {
    /// The comparison that holds exactly where this one does not.
    pub fn negated(self) -> Comparison {
        match self {
            Comparison::Less => Comparison::GreaterEq,
            Comparison::LessEq => Comparison::Greater,
            Comparison::Eq => Comparison::NotEq,
            Comparison::NotEq => Comparison::Eq,
            Comparison::GreaterEq => Comparison::Less,
            Comparison::Greater => Comparison::LessEq,
        }
    }

    /// `x op y` read as `y op' x`.
    pub fn flipped(self) -> Comparison {
        match self {
            Comparison::Less => Comparison::Greater,
            Comparison::LessEq => Comparison::GreaterEq,
            Comparison::GreaterEq => Comparison::LessEq,
            Comparison::Greater => Comparison::Less,
            c => c,
        }
    }

    /// Whether `x op y`.
    pub fn holds<T: Ord>(self, x: T, y: T) -> bool {
        match self {
            Comparison::Less => x < y,
            Comparison::LessEq => x <= y,
            Comparison::Eq => x == y,
            Comparison::NotEq => x != y,
            Comparison::GreaterEq => x >= y,
            Comparison::Greater => x > y,
        }
    }

    /// The operator as SQL and Cedar spell it (`!=` for [`Comparison::NotEq`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Less => "<",
            Comparison::LessEq => "<=",
            Comparison::Eq => "==",
            Comparison::NotEq => "!=",
            Comparison::GreaterEq => ">=",
            Comparison::Greater => ">",
        }
    }
}

impl Atom {
    /// Whether the atom holds on the member `id`: `None` for a
    /// [`Atom::PerMember`], which only a decision on the member answers.
    pub fn holds(&self, id: &str, member: &Member) -> Option<bool> {
        Some(match self {
            Atom::Status(s) => s.contains(&member.status),
            Atom::InGoodStanding => member.in_good_standing,
            Atom::HasLeft => member.left.is_some(),
            Atom::Joined(op, t) => op.holds(millis(member.joined), millis(*t)),
            Atom::Left(op, t) => member.left.is_some_and(|l| op.holds(millis(l), millis(*t))),
            Atom::Consents(cs) => member.consents.iter().any(|c| cs.contains(c)),
            Atom::OptOuts(cs) => member.opt_outs.iter().any(|c| cs.contains(c)),
            Atom::Clp(ids) => ids.contains(&member.clp),
            Atom::Member(ids) => ids.iter().any(|m| m == id),
            Atom::PerMember { .. } => return None,
        })
    }

    /// The atom that holds exactly where this one does not, if there is one.
    fn negated(&self) -> Option<Atom> {
        match self {
            Atom::Status(s) => Some(Atom::Status(
                MemberStatus::ALL
                    .into_iter()
                    .filter(|x| !s.contains(x))
                    .collect(),
            )),
            Atom::Joined(op, t) => Some(Atom::Joined(op.negated(), *t)),
            _ => None,
        }
    }
}

impl Condition {
    /// Whether the condition holds on the member `id`: `None` if that depends on a
    /// [`Atom::PerMember`] part (a decision on the member answers).
    pub fn holds(&self, id: &str, member: &Member) -> Option<bool> {
        match self {
            Condition::Atom(a) => a.holds(id, member),
            Condition::Not(c) => c.holds(id, member).map(|b| !b),
            Condition::All(cs) | Condition::Any(cs) => {
                // Kleene's logic: `All` is false if one is, `Any` true if one is.
                let decisive = matches!(self, Condition::Any(_));
                let mut unknown = false;
                for c in cs {
                    match c.holds(id, member) {
                        Some(b) if b == decisive => return Some(decisive),
                        Some(_) => {}
                        None => unknown = true,
                    }
                }
                (!unknown).then_some(!decisive)
            }
        }
    }

    /// The CLPs every member it selects is in, sorted ([`FieldPlan::clps`]).
    fn clps(&self) -> Option<Vec<String>> {
        match self {
            Condition::Atom(Atom::Clp(ids)) => {
                let mut ids = ids.to_vec();
                ids.sort_unstable();
                ids.dedup();
                Some(ids)
            }
            Condition::Atom(_) | Condition::Not(_) => None,
            // In the CLPs of each part that names some.
            Condition::All(parts) => parts.iter().filter_map(Condition::clps).reduce(|a, b| {
                a.into_iter()
                    .filter(|x| b.binary_search(x).is_ok())
                    .collect()
            }),
            // In the CLPs of one branch or another, if each names some.
            Condition::Any(parts) => {
                let mut all = parts
                    .iter()
                    .map(Condition::clps)
                    .collect::<Option<Vec<_>>>()?
                    .concat();
                all.sort_unstable();
                all.dedup();
                Some(all)
            }
        }
    }

    /// Whether the condition has a [`Atom::PerMember`] part.
    pub fn per_member(&self) -> bool {
        self.any_atom(&|a| matches!(a, Atom::PerMember { .. }))
    }

    /// Whether one of its atoms passes `f`.
    fn any_atom(&self, f: &impl Fn(&Atom) -> bool) -> bool {
        match self {
            Condition::Atom(a) => f(a),
            Condition::Not(c) => c.any_atom(f),
            Condition::All(cs) | Condition::Any(cs) => cs.iter().any(|c| c.any_atom(f)),
        }
    }

    /// Every atom, depth first.
    pub fn atoms(&self) -> impl Iterator<Item = &Atom> {
        let mut stack = vec![self];
        std::iter::from_fn(move || {
            while let Some(c) = stack.pop() {
                match c {
                    Condition::Atom(a) => return Some(a),
                    Condition::Not(c) => stack.push(c),
                    Condition::All(cs) | Condition::Any(cs) => stack.extend(cs.iter().rev()),
                }
            }
            None
        })
    }

    /// The condition with each [`Atom::PerMember`] part read as `holds`, negations
    /// pushed to the atoms first: with `false`, it selects only members on which the
    /// condition certainly holds; with `true`, every member on which it may.
    pub fn bound(&self, holds: bool) -> FieldPlan {
        self.bound_signed(holds, false)
    }

    fn bound_signed(&self, holds: bool, negated: bool) -> FieldPlan {
        match self {
            Condition::Atom(Atom::PerMember { .. }) => FieldPlan::constant(holds),
            Condition::Atom(a) => {
                let plan = FieldPlan::atom(a.clone());
                if negated {
                    plan.not()
                } else {
                    plan
                }
            }
            Condition::Not(c) => c.bound_signed(holds, !negated),
            Condition::All(cs) | Condition::Any(cs) => {
                let conjunction = matches!(self, Condition::All(_)) != negated;
                let parts = cs.iter().map(|c| c.bound_signed(holds, negated));
                if conjunction {
                    FieldPlan::all(parts)
                } else {
                    FieldPlan::any(parts)
                }
            }
        }
    }
}

impl FieldPlan {
    /// [`FieldPlan::Always`] or [`FieldPlan::Never`].
    pub fn constant(b: bool) -> FieldPlan {
        if b {
            FieldPlan::Always
        } else {
            FieldPlan::Never
        }
    }

    /// Whether the plan allows the member `id`: `None` if that needs a decision on the
    /// member (an [`Atom::PerMember`] part).
    pub fn holds(&self, id: &str, member: &Member) -> Option<bool> {
        match self {
            FieldPlan::Always => Some(true),
            FieldPlan::Never => Some(false),
            FieldPlan::When(c) => c.holds(id, member),
        }
    }

    /// Whether deciding some member needs a decision on it (an [`Atom::PerMember`]
    /// part).
    pub fn per_member(&self) -> bool {
        matches!(self, FieldPlan::When(c) if c.per_member())
    }

    /// The condition, if the plan has one.
    pub fn condition(&self) -> Option<&Condition> {
        match self {
            FieldPlan::When(c) => Some(c),
            _ => None,
        }
    }

    /// The CLPs every member the plan may allow is in, where its condition confines
    /// them (a `clp in (...)` atom, in each of an `All`'s parts that have one, or in every
    /// branch of an `Any`); `None` if it may allow members of any CLP. A per-member part
    /// never widens it: the members it may allow are within these CLPs too.
    ///
    /// A listing in id order can read such a plan CLP by CLP through a `(clp, id)`
    /// index, rather than have the database sort every member of those CLPs.
    ///
    /// ```
    /// use membergate::sample::{self, ids};
    /// use membergate::{Action, Context, Directory, Engine, PrincipalId, PrincipalKind};
    ///
    /// let engine = Engine::from_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/policies"))?;
    /// let party = sample::bundled();
    /// let directory = Directory::from_membership(&engine, &party)?;
    /// let officer = PrincipalId::new(PrincipalKind::Officer, ids::O_SECRETARY_001);
    /// let at = Context::at("2024-05-01T09:00:00Z".parse()?);
    /// let plan = engine.plan(&directory, &officer, Action::Read, &at)?;
    /// let clps = plan.any_field().clps().expect("an officer sees its own CLP's members");
    /// assert_eq!(clps, [party.officers[ids::O_SECRETARY_001].clp.clone()]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clps(&self) -> Option<Vec<String>> {
        match self {
            FieldPlan::Always => None,
            FieldPlan::Never => Some(Vec::new()),
            FieldPlan::When(c) => c.clps(),
        }
    }

    /// The plan of one atom (an empty set of statuses, channels or ids is
    /// [`FieldPlan::Never`], every status [`FieldPlan::Always`]).
    pub(crate) fn atom(a: Atom) -> FieldPlan {
        match &a {
            Atom::Status(s) if s.is_empty() => FieldPlan::Never,
            Atom::Status(s) if MemberStatus::ALL.iter().all(|x| s.contains(x)) => FieldPlan::Always,
            Atom::Consents(s) | Atom::OptOuts(s) if s.is_empty() => FieldPlan::Never,
            Atom::Clp(s) | Atom::Member(s) if s.is_empty() => FieldPlan::Never,
            _ => FieldPlan::When(Condition::Atom(a)),
        }
    }

    /// The negation.
    pub(crate) fn not(self) -> FieldPlan {
        match self {
            FieldPlan::Always => FieldPlan::Never,
            FieldPlan::Never => FieldPlan::Always,
            FieldPlan::When(Condition::Not(c)) => FieldPlan::When(*c),
            FieldPlan::When(Condition::Atom(a)) => match a.negated() {
                Some(n) => FieldPlan::atom(n),
                None => FieldPlan::When(Condition::Not(Box::new(Condition::Atom(a)))),
            },
            // `!(a || b)` is `!a && !b`: negations go inside an `Any` (they stay
            // outside an `All`, where `!(a && b)` reads better than `!a || !b`).
            FieldPlan::When(Condition::Any(cs)) => {
                FieldPlan::all(cs.into_iter().map(|c| FieldPlan::When(c).not()))
            }
            FieldPlan::When(c) => FieldPlan::When(Condition::Not(Box::new(c))),
        }
    }

    /// `self && other`.
    pub(crate) fn and(self, other: FieldPlan) -> FieldPlan {
        match (self, other) {
            (FieldPlan::Never, _) | (_, FieldPlan::Never) => FieldPlan::Never,
            (FieldPlan::Always, p) | (p, FieldPlan::Always) => p,
            (a, b) => FieldPlan::join(vec![a, b], true),
        }
    }

    /// `self || other`.
    pub(crate) fn or(self, other: FieldPlan) -> FieldPlan {
        match (self, other) {
            (FieldPlan::Always, _) | (_, FieldPlan::Always) => FieldPlan::Always,
            (FieldPlan::Never, p) | (p, FieldPlan::Never) => p,
            (a, b) => FieldPlan::join(vec![a, b], false),
        }
    }

    /// Every one of `parts` holds.
    pub(crate) fn all(parts: impl IntoIterator<Item = FieldPlan>) -> FieldPlan {
        FieldPlan::join(parts.into_iter().collect(), true)
    }

    /// At least one of `parts` holds.
    pub(crate) fn any(parts: impl IntoIterator<Item = FieldPlan>) -> FieldPlan {
        FieldPlan::join(parts.into_iter().collect(), false)
    }

    /// `All` (`conjunction`) or `Any` of `parts`, simplified: constants folded, nested
    /// ones of the same kind flattened, repeats dropped, statuses merged, a condition
    /// beside its negation folded, operands absorbed (`a || (a && b)` is `a`), and
    /// operands common to every branch factored out (`(a && b) || (a && c)` is
    /// `a && (b || c)`).
    fn join(parts: Vec<FieldPlan>, conjunction: bool) -> FieldPlan {
        // The constant that decides the whole (`false` for `All`), and the neutral one.
        let decisive = FieldPlan::constant(!conjunction);
        let mut ops: Vec<Condition> = Vec::with_capacity(parts.len() + 2);
        let mut conditions = 0;
        for p in parts {
            match p {
                FieldPlan::When(c) => {
                    conditions += 1;
                    push_flat(c, conjunction, &mut ops);
                }
                p if p == decisive => return decisive,
                _ => {}
            }
        }
        // One condition alone is already simplified (an operand of the same kind, put
        // back together).
        if conditions < 2 {
            return FieldPlan::made(ops, conjunction);
        }
        // Statuses merged into one atom: intersected under `All`, united under `Any`.
        let mut statuses: Option<Vec<MemberStatus>> = None;
        ops.retain(|c| match c {
            Condition::Atom(Atom::Status(s)) => {
                statuses = Some(match statuses.take() {
                    None => s.clone(),
                    Some(prev) => MemberStatus::ALL
                        .into_iter()
                        .filter(|x| {
                            let (a, b) = (prev.contains(x), s.contains(x));
                            if conjunction {
                                a && b
                            } else {
                                a || b
                            }
                        })
                        .collect(),
                });
                false
            }
            _ => true,
        });
        if let Some(s) = statuses {
            match FieldPlan::atom(Atom::Status(s)) {
                FieldPlan::When(c) => ops.insert(0, c),
                p if p == decisive => return decisive,
                _ => {}
            }
        }
        let mut kept: Vec<Condition> = Vec::with_capacity(ops.len());
        for c in ops {
            if !kept.contains(&c) {
                kept.push(c);
            }
        }
        // Each literal operand (an atom or its negation) taken as known in the others:
        // under `All` it holds there, under `Any` it fails there (where it held, the
        // `Any` would hold whatever they are).
        let literals: Vec<(&Atom, bool)> = kept
            .iter()
            .filter_map(|c| match c {
                Condition::Atom(a) => Some((a, conjunction)),
                Condition::Not(n) => match &**n {
                    Condition::Atom(a) => Some((a, !conjunction)),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        // Only an operand that reads a literal's atom can change.
        let touched = |c: &Condition| {
            !is_literal(c) && c.any_atom(&|b| literals.iter().any(|(a, _)| related(a, b)))
        };
        if !literals.is_empty() && kept.iter().any(touched) {
            let mut changed = false;
            let rewritten: Vec<FieldPlan> = kept
                .iter()
                .map(|c| {
                    if !touched(c) {
                        return FieldPlan::When(c.clone());
                    }
                    let mut p = FieldPlan::When(c.clone());
                    for (a, v) in &literals {
                        p = p.assume(a, *v);
                    }
                    changed |= !matches!(&p, FieldPlan::When(x) if x == c);
                    p
                })
                .collect();
            if changed {
                return FieldPlan::join(rewritten, conjunction);
            }
        }
        // A leaving date compared implies one: `has left` is implied beside it under
        // `All`, and implies it under `Any`.
        let has_left = Condition::Atom(Atom::HasLeft);
        let left = |c: &Condition| matches!(c, Condition::Atom(Atom::Left(..)));
        if conjunction && kept.iter().any(left) {
            kept.retain(|c| *c != has_left);
        } else if !conjunction && kept.contains(&has_left) {
            kept.retain(|c| !left(c));
        }
        // A condition beside its negation.
        if kept.iter().any(|c| kept.iter().any(|d| negates(c, d))) {
            return decisive;
        }
        // Absorption: an operand whose own operands (of the other kind) include every
        // operand of another is implied by (under `Any`) or implies (under `All`) it.
        let inner = |c: &Condition| -> Vec<Condition> { operands(c, !conjunction).to_vec() };
        let mut i = 0;
        while i < kept.len() {
            let absorbed = kept.get(i).is_some_and(|c| {
                let mine = operands(c, !conjunction);
                kept.iter().enumerate().any(|(j, other)| {
                    j != i && {
                        let theirs = operands(other, !conjunction);
                        theirs.len() < mine.len() && theirs.iter().all(|t| mine.contains(t))
                    }
                })
            });
            if absorbed {
                kept.remove(i);
            } else {
                i += 1;
            }
        }
        // Factoring out what every branch has.
        let shared = kept.len() > 1
            && kept.first().is_some_and(|first| {
                operands(first, !conjunction)
                    .iter()
                    .any(|c| kept.iter().all(|b| operands(b, !conjunction).contains(c)))
            });
        if shared {
            let branches: Vec<Vec<Condition>> = kept.iter().map(inner).collect();
            let common: Vec<Condition> = branches
                .first()
                .map(|first| {
                    first
                        .iter()
                        .filter(|c| branches.iter().all(|b| b.contains(c)))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            if !common.is_empty() {
                let rests = branches.into_iter().map(|b| {
                    let rest = b.into_iter().filter(|c| !common.contains(c));
                    FieldPlan::join(rest.map(FieldPlan::When).collect(), !conjunction)
                });
                let rest = FieldPlan::join(rests.collect(), conjunction);
                let common = FieldPlan::join(
                    common.into_iter().map(FieldPlan::When).collect(),
                    !conjunction,
                );
                return FieldPlan::join(vec![common, rest], !conjunction);
            }
        }
        FieldPlan::made(kept, conjunction)
    }

    /// `All` (`conjunction`) or `Any` of simplified operands, as they are.
    fn made(mut ops: Vec<Condition>, conjunction: bool) -> FieldPlan {
        match ops.len() {
            0 => FieldPlan::constant(conjunction),
            1 => ops
                .pop()
                .map_or(FieldPlan::constant(conjunction), FieldPlan::When),
            _ if conjunction => FieldPlan::When(Condition::All(ops)),
            _ => FieldPlan::When(Condition::Any(ops)),
        }
    }
}

/// The operands of `c` as an `All` (`conjunction`) or an `Any`: its own if it is one,
/// else `c` alone.
fn operands(c: &Condition, conjunction: bool) -> &[Condition] {
    match c {
        Condition::All(cs) if conjunction => cs,
        Condition::Any(cs) if !conjunction => cs,
        c => std::slice::from_ref(c),
    }
}

/// Whether `c` holds exactly where `d` does not (as far as their forms tell).
fn negates(c: &Condition, d: &Condition) -> bool {
    match (c, d) {
        (Condition::Not(x), d) => **x == *d,
        (Condition::Atom(Atom::Joined(o, t)), Condition::Atom(Atom::Joined(p, u))) => {
            t == u && *p == o.negated()
        }
        (Condition::Atom(Atom::Status(s)), Condition::Atom(Atom::Status(t))) => MemberStatus::ALL
            .iter()
            .all(|x| s.contains(x) != t.contains(x)),
        _ => false,
    }
}

/// Whether `c` is an atom or an atom's negation.
fn is_literal(c: &Condition) -> bool {
    match c {
        Condition::Atom(_) => true,
        Condition::Not(n) => matches!(**n, Condition::Atom(_)),
        _ => false,
    }
}

/// Whether knowing `a` can tell something of `b` ([`FieldPlan::assume`]).
fn related(a: &Atom, b: &Atom) -> bool {
    a == b
        || matches!(
            (a, b),
            (Atom::Status(_), Atom::Status(_))
                | (Atom::Left(..), Atom::HasLeft)
                | (Atom::HasLeft, Atom::Left(..))
        )
}

impl FieldPlan {
    /// The plan on the members where `a` is `v`.
    fn assume(self, a: &Atom, v: bool) -> FieldPlan {
        let FieldPlan::When(c) = self else {
            return self;
        };
        if !c.any_atom(&|b| related(a, b)) {
            return FieldPlan::When(c);
        }
        match c {
            Condition::Atom(b) => match (a, &b) {
                _ if *a == b => FieldPlan::constant(v),
                // Where the status is one of `s` (`v`) or none of them (`!v`), it is
                // one of `t` where it is one of `t` among those: always if all of those
                // are in `t`, never if none is.
                (Atom::Status(s), Atom::Status(t)) => {
                    let possible = MemberStatus::ALL.into_iter().filter(|x| s.contains(x) == v);
                    let (mut within, mut all) = (Vec::new(), true);
                    for x in possible {
                        if t.contains(&x) {
                            within.push(x);
                        } else {
                            all = false;
                        }
                    }
                    if all {
                        FieldPlan::Always
                    } else {
                        FieldPlan::atom(Atom::Status(within))
                    }
                }
                // A date compared implies one; without one, none compares.
                (Atom::Left(..), Atom::HasLeft) if v => FieldPlan::Always,
                (Atom::HasLeft, Atom::Left(..)) if !v => FieldPlan::Never,
                _ => FieldPlan::atom(b),
            },
            Condition::Not(x) => FieldPlan::When(*x).assume(a, v).not(),
            Condition::All(cs) => {
                FieldPlan::all(cs.into_iter().map(|x| FieldPlan::When(x).assume(a, v)))
            }
            Condition::Any(cs) => {
                FieldPlan::any(cs.into_iter().map(|x| FieldPlan::When(x).assume(a, v)))
            }
        }
    }
}

/// Appends `c` to the operands of an `All` (`conjunction`) or an `Any`, splicing in the
/// operands of one of the same kind.
fn push_flat(c: Condition, conjunction: bool, into: &mut Vec<Condition>) {
    match c {
        Condition::All(cs) if conjunction => into.extend(cs),
        Condition::Any(cs) if !conjunction => into.extend(cs),
        c => into.push(c),
    }
}

impl fmt::Display for FieldPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldPlan::Always => f.write_str("every member"),
            FieldPlan::Never => f.write_str("no member"),
            FieldPlan::When(c) => write!(f, "{c}"),
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = |f: &mut fmt::Formatter<'_>, c: &Condition| match c {
            Condition::All(_) | Condition::Any(_) => write!(f, "({c})"),
            c => write!(f, "{c}"),
        };
        match self {
            Condition::Atom(a) => write!(f, "{a}"),
            Condition::Not(c) => {
                f.write_str("not ")?;
                group(f, c)
            }
            Condition::All(cs) | Condition::Any(cs) => {
                let sep = if matches!(self, Condition::All(_)) {
                    " and "
                } else {
                    " or "
                };
                for (i, c) in cs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(sep)?;
                    }
                    group(f, c)?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list<T>(
            f: &mut fmt::Formatter<'_>,
            items: &[T],
            name: impl Fn(&T) -> &str,
        ) -> fmt::Result {
            f.write_str("(")?;
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                f.write_str(name(x))?;
            }
            f.write_str(")")
        }
        match self {
            Atom::Status(s) => {
                f.write_str("status in ")?;
                list(f, s, |x| x.as_str())
            }
            Atom::InGoodStanding => f.write_str("in_good_standing"),
            Atom::HasLeft => f.write_str("has left"),
            Atom::Joined(op, t) => write!(f, "joined {} {t}", op.as_str()),
            Atom::Left(op, t) => write!(f, "left {} {t}", op.as_str()),
            Atom::Consents(cs) => {
                f.write_str("consents to any of ")?;
                list(f, cs, |c| c.as_str())
            }
            Atom::OptOuts(cs) => {
                f.write_str("opted out of any of ")?;
                list(f, cs, |c| c.as_str())
            }
            Atom::Clp(ids) => {
                f.write_str("clp in ")?;
                list(f, ids, String::as_str)
            }
            Atom::Member(ids) => {
                f.write_str("id in ")?;
                list(f, ids, String::as_str)
            }
            Atom::PerMember {
                policy,
                part,
                holds,
            } => write!(
                f,
                "[per member: part {part} of `{policy}` evaluates to {holds}]"
            ),
        }
    }
}
