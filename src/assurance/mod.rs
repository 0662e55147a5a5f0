//! Policy assurance: invariants of the whole policy set proved with Cedar's symbolic
//! compiler ([`Verifier`]), and what a policy change allows or denies that the old set did
//! not ([`PolicyDiff`]).
//!
//! The symbolic compiler (`cedar-policy-symcc`) turns policies into SMT formulas and asks
//! an SMT solver, cvc5 1.3 or newer, whether a property holds for *every* request and
//! entity store the schema admits; when it does not, the solver's model becomes a concrete
//! counterexample, which is re-decided by Cedar's own authorizer before it is reported.
//! [`SolverCommand::locate`] finds the solver; without one nothing is reported proved.

mod diff;
mod invariants;
mod plausible;
mod render;
mod scope;
mod solver;
mod verify;

pub use diff::{Difference, Direction, PolicyDiff};
pub use invariants::{Claim, Invariant, Invariants, INVARIANTS_FILE};
pub use solver::{SolverCommand, SolverMissing, PYTHON_WRAPPER};
pub use verify::{
    Counterexample, InvariantResult, Verdict, Verifier, VerifyError, CHECK_TIMEOUT_MS, MAX_SOLVERS,
};
