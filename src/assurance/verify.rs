//! Proving invariants with Cedar's symbolic compiler (`cedar-policy-symcc`), over every
//! request and entity store the schema admits, one request type at a time.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use cedar_policy::{Authorizer, Decision, Entities, PolicySet, Request, RequestEnv, Schema};
use cedar_policy_symcc::err::Error as SymccError;
use cedar_policy_symcc::solver::LocalSolver;
use cedar_policy_symcc::{CedarSymCompiler, CompiledPolicySet, Env};

use super::invariants::{Claim, Invariant, Invariants};
use super::plausible::{ask_restricted, decision, env_of};
use super::scope::Reach;
use super::solver::{SolverCommand, SolverMissing};
use crate::Engine;

/// The most solver processes one verification runs at once.
pub const MAX_SOLVERS: usize = 4;

/// The limit on one solver check, in milliseconds.
pub const CHECK_TIMEOUT_MS: u64 = 60_000;

/// Why verification could not give an answer. None of these is ever reported as "proved".
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// No solver was found.
    #[error(transparent)]
    SolverMissing(#[from] SolverMissing),
    /// The solver could not be started, failed, timed out or answered `unknown`.
    #[error("the SMT solver ({solver}) failed: {message}")]
    Solver {
        /// The solver used.
        solver: String,
        /// What went wrong.
        message: String,
    },
    /// A policy set could not be compiled for a request type.
    #[error("cannot compile {what} for {env}: {message}")]
    Compile {
        /// Which policies.
        what: String,
        /// The request type.
        env: String,
        /// The compiler's message.
        message: String,
    },
    /// The solver's counterexample did not get the expected decision from Cedar's own
    /// authorizer: the result is not trusted.
    #[error("the counterexample for {what} is not confirmed by Cedar's authorizer:\n{example}")]
    Unconfirmed {
        /// What was being checked.
        what: String,
        /// The counterexample.
        example: String,
    },
    /// The async runtime the symbolic compiler needs could not start.
    #[error("cannot start the runtime for the solver: {0}")]
    Runtime(std::io::Error),
}

/// A concrete request and entity store, synthesized by the solver, that shows a property
/// fails; confirmed against Cedar's own authorizer before it is reported.
#[derive(Debug, Clone)]
pub struct Counterexample {
    /// The request.
    pub request: Request,
    /// The entities it is decided against.
    pub entities: Entities,
    /// Cedar's decision on it for the policy set that was checked.
    pub decision: Decision,
    /// The ids of the policies that determined that decision (none for a default deny).
    pub decided_by: Vec<String>,
    /// The policies that erred on it (Cedar ignores them), with Cedar's messages.
    pub errors: Vec<String>,
    rendered: String,
}

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n{}", self.rendered, self.verdict())
    }
}

/// The verdict on one invariant.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// The solver proved it for every request type of the schema.
    Proved,
    /// It fails: a counterexample.
    Refuted(Box<Counterexample>),
}

/// One invariant and its verdict.
#[derive(Debug, Clone)]
pub struct InvariantResult {
    /// The invariant.
    pub invariant: Invariant,
    /// Proved, or refuted with a counterexample.
    pub verdict: Verdict,
    /// The request type (principal type, action, resource type) of the counterexample,
    /// or how many request types were proved.
    pub request_types: usize,
}

/// A request type of the schema, written `Principal · Action::"a" · Resource`.
pub(crate) fn env_name(env: &RequestEnv) -> String {
    format!(
        "{} · {} · {}",
        env.principal(),
        env.action(),
        env.resource()
    )
}

/// Cedar's symbolic compiler driving one solver process.
pub struct Verifier {
    /// `None` only while being dropped.
    runtime: Option<tokio::runtime::Runtime>,
    compiler: CedarSymCompiler<LocalSolver>,
    solver: SolverCommand,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("solver", &self.solver)
            .finish()
    }
}

impl Verifier {
    /// Starts the solver found by [`SolverCommand::locate`].
    ///
    /// ```no_run
    /// use membergate::{Engine, assurance::{Invariants, Verifier, Verdict}};
    /// let engine = Engine::from_dir("policies")?;
    /// let invariants = Invariants::load("policies", engine.schema())?;
    /// let mut verifier = Verifier::locate()?;
    /// for result in verifier.verify(engine.schema(), engine.policies(), &invariants)? {
    ///     match &result.verdict {
    ///         Verdict::Proved => println!("proved   {}", result.invariant.id),
    ///         Verdict::Refuted(example) => println!("REFUTED  {}\n{example}", result.invariant.id),
    ///     }
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn locate() -> Result<Verifier, VerifyError> {
        Verifier::new(SolverCommand::locate()?)
    }

    /// Starts `solver`.
    pub fn new(solver: SolverCommand) -> Result<Verifier, VerifyError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(VerifyError::Runtime)?;
        let spawned = {
            let _in_runtime = runtime.enter();
            LocalSolver::from_command(&mut solver.command(CHECK_TIMEOUT_MS))
        };
        let local = spawned.map_err(|e| VerifyError::Solver {
            solver: solver.to_string(),
            message: e.to_string(),
        })?;
        let compiler = CedarSymCompiler::new(local).map_err(solver_failed(&solver))?;
        Ok(Verifier {
            runtime: Some(runtime),
            compiler,
            solver,
        })
    }

    /// The solver in use.
    pub fn solver(&self) -> &SolverCommand {
        &self.solver
    }

    /// Checks every invariant against `policies`, over every request type of `schema`.
    pub fn verify(
        &mut self,
        schema: &Schema,
        policies: &PolicySet,
        invariants: &Invariants,
    ) -> Result<Vec<InvariantResult>, VerifyError> {
        // Per request type, per invariant: a counterexample, if any.
        let per_env = self.each_env(schema, |v, _, env| {
            let policies_c = compile(policies, env, schema, "the policies")?;
            let mut found = Vec::with_capacity(invariants.len());
            for inv in invariants.iter() {
                let what = format!("invariant `{}`", inv.id);
                let matcher = compile(&inv.matcher, env, schema, &what)?;
                found.push(match inv.claim {
                    // a request the condition holds for, that the policies allow
                    Claim::Never => v
                        .disjoint(&policies_c, &matcher)?
                        .map(|e| confirm(e, policies, Decision::Allow, &what))
                        .transpose()?,
                    // a request the condition holds for, that the policies deny
                    Claim::Always => v
                        .implies(&matcher, &policies_c)?
                        .map(|e| confirm(e, policies, Decision::Deny, &what))
                        .transpose()?,
                });
            }
            Ok(found)
        })?;
        let envs = per_env.len();
        let results = invariants
            .iter()
            .enumerate()
            .map(|(i, invariant)| {
                // The first request type, in the order of their names, that refutes it.
                let refuted = per_env
                    .iter()
                    .find_map(|found| found.get(i).cloned().flatten());
                InvariantResult {
                    invariant: invariant.clone(),
                    request_types: if refuted.is_some() { 1 } else { envs },
                    verdict: refuted.map_or(Verdict::Proved, |e| Verdict::Refuted(Box::new(e))),
                }
            })
            .collect();
        Ok(results)
    }

    /// A refuted invariant's counterexample with plausible values (see
    /// [`Verifier::plausible_difference`]), on the same request type, re-decided by
    /// Cedar's authorizer; `None` if `result` was proved or no plausible request refutes
    /// it (it fails only at the edges of time or of numbers).
    ///
    /// ```no_run
    /// use membergate::{Engine, assurance::{Invariants, Verifier}};
    /// let engine = Engine::from_dir("policies")?;
    /// let invariants = Invariants::load("policies", engine.schema())?;
    /// let mut verifier = Verifier::locate()?;
    /// for result in verifier.verify(engine.schema(), engine.policies(), &invariants)? {
    ///     if let Some(example) = verifier.plausible_counterexample(&engine, &result)? {
    ///         println!("{} fails, e.g.\n{example}", result.invariant.id);
    ///     }
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn plausible_counterexample(
        &mut self,
        engine: &Engine,
        result: &InvariantResult,
    ) -> Result<Option<Counterexample>, VerifyError> {
        let Verdict::Refuted(first) = &result.verdict else {
            return Ok(None);
        };
        let (schema, policies) = (engine.schema(), engine.policies());
        let Some(env) = env_of(schema, &first.request) else {
            return Ok(None);
        };
        let inv = &result.invariant;
        let what = format!("invariant `{}` (plausible values)", inv.id);
        let matcher = compile(&inv.matcher, &env, schema, &what)?;
        let policies_c = compile(policies, &env, schema, "the policies")?;
        let sets = [policies, &inv.matcher];
        let found = self.plausible(
            engine.catalogue(),
            (&first.request, &first.entities),
            &sets,
            |v, cond| match inv.claim {
                Claim::Never => ask_restricted(v, policies, cond, &env, schema, |v, p| {
                    v.disjoint(p, &matcher)
                }),
                Claim::Always => ask_restricted(v, &inv.matcher, cond, &env, schema, |v, m| {
                    v.implies(m, &policies_c)
                }),
            },
            |e| {
                // The invariant's condition holds, and the policies decide against it.
                decision(&inv.matcher, e) == Decision::Allow
                    && decision(policies, e)
                        == match inv.claim {
                            Claim::Never => Decision::Allow,
                            Claim::Always => Decision::Deny,
                        }
            },
        )?;
        let expect = match inv.claim {
            Claim::Never => Decision::Allow,
            Claim::Always => Decision::Deny,
        };
        match found
            .map(|e| confirm(e, policies, expect, &what))
            .transpose()
        {
            Err(VerifyError::Unconfirmed { .. }) => Ok(None),
            other => other,
        }
    }

    /// Runs `work` on every request type of `schema`, in the order of their names
    /// ([`env_name`]; the schema's own order is not the same from run to run), with the
    /// index in that order, spread over one solver per core (this verifier's, and up to
    /// [`MAX_SOLVERS`] − 1 more started for the call); request types are taken in that
    /// order, and the results come in it.
    pub(crate) fn each_env<T: Send>(
        &mut self,
        schema: &Schema,
        work: impl Fn(&mut Verifier, usize, &RequestEnv) -> Result<T, VerifyError> + Sync,
    ) -> Result<Vec<T>, VerifyError> {
        // The schema's own order of request types differs from run to run: by name.
        let mut envs: Vec<(String, RequestEnv)> =
            schema.request_envs().map(|e| (env_name(&e), e)).collect();
        envs.sort_by(|a, b| a.0.cmp(&b.0));
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_SOLVERS)
            .min(envs.len())
            .max(1);
        let next = AtomicUsize::new(0);
        let run = |v: &mut Verifier| -> Result<Vec<(usize, T)>, VerifyError> {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((_, env)) = envs.get(i) else {
                    return Ok(out);
                };
                out.push((i, work(v, i, env)?));
            }
        };
        let solver = self.solver.clone();
        let mut all = std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..workers)
                .map(|_| scope.spawn(|| run(&mut Verifier::new(solver.clone())?)))
                .collect();
            let mut all = run(self)?;
            for h in helpers {
                let part = h.join().map_err(|_| VerifyError::Solver {
                    solver: solver.to_string(),
                    message: "a verification thread panicked".into(),
                })?;
                all.extend(part?);
            }
            Ok::<_, VerifyError>(all)
        })?;
        all.sort_by_key(|(i, _)| *i);
        Ok(all.into_iter().map(|(_, t)| t).collect())
    }

    /// A request that `new` allows and `old` denies, if there is one: `None` proves that
    /// the new set allows nothing the old set denied. Both sets are read against `schema`.
    ///
    /// Request types are checked on one solver per core, in the order of their names; the
    /// answer is that of the first request type that gives one (a widening or an error),
    /// as if they were checked one after another. A request type where no added, removed
    /// or changed policy can widen (by its scope and effect) is compiled but not given to
    /// the solver.
    pub fn find_widening(
        &mut self,
        schema: &Schema,
        old: &PolicySet,
        new: &PolicySet,
    ) -> Result<Option<Counterexample>, VerifyError> {
        let reach = Reach::new(old, new, schema);
        // The index of the first request type known to answer: later ones need no work.
        let answered = AtomicUsize::new(usize::MAX);
        let per_env = self.each_env(schema, |v, i, env| {
            if i > answered.load(Ordering::Relaxed) {
                return Ok(Ok(None));
            }
            let found = (|| {
                let old_c = compile(old, env, schema, "the old policies")?;
                let new_c = compile(new, env, schema, "the new policies")?;
                if !reach.ways(env).widen {
                    return Ok(None);
                }
                v.implies(&new_c, &old_c)
            })();
            if !matches!(found, Ok(None)) {
                answered.fetch_min(i, Ordering::Relaxed);
            }
            Ok(found)
        })?;
        for found in per_env {
            if let Some(found) = found? {
                let what = "the new policies allow nothing the old denied";
                return confirm(found, new, Decision::Allow, what).map(Some);
            }
        }
        Ok(None)
    }

    /// A request allowed by `a` and denied by `b`, if any.
    pub(crate) fn implies(
        &mut self,
        a: &CompiledPolicySet,
        b: &CompiledPolicySet,
    ) -> Result<Option<Env>, VerifyError> {
        let found = block_on(
            self.runtime.as_ref(),
            self.compiler.check_implies_with_counterexample_opt(a, b),
        )?;
        found.map_err(solver_failed(&self.solver))
    }

    /// Whether every request allowed by `a` is allowed by `b` (no counterexample asked).
    pub(crate) fn implies_only(
        &mut self,
        a: &CompiledPolicySet,
        b: &CompiledPolicySet,
    ) -> Result<bool, VerifyError> {
        let holds = block_on(self.runtime.as_ref(), self.compiler.check_implies_opt(a, b))?;
        holds.map_err(solver_failed(&self.solver))
    }

    /// A request allowed by both `a` and `b`, if any.
    pub(crate) fn disjoint(
        &mut self,
        a: &CompiledPolicySet,
        b: &CompiledPolicySet,
    ) -> Result<Option<Env>, VerifyError> {
        let found = block_on(
            self.runtime.as_ref(),
            self.compiler.check_disjoint_with_counterexample_opt(a, b),
        )?;
        found.map_err(solver_failed(&self.solver))
    }
}

/// Runs `f` to completion on the verifier's own runtime. Called from inside another
/// tokio runtime (an async caller, the example CRM), where blocking on a runtime is
/// refused, it runs on a thread of its own while the caller's thread waits.
fn block_on<F>(runtime: Option<&tokio::runtime::Runtime>, f: F) -> Result<F::Output, VerifyError>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    let runtime = runtime.ok_or_else(|| {
        VerifyError::Runtime(std::io::Error::other("the verifier's runtime is shut down"))
    })?;
    if tokio::runtime::Handle::try_current().is_err() {
        return Ok(runtime.block_on(f));
    }
    Ok(std::thread::scope(|s| {
        s.spawn(|| runtime.block_on(f))
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }))
}

impl Drop for Verifier {
    fn drop(&mut self) {
        // Dropping a runtime waits for its tasks, which a thread of another runtime may
        // not do (an async caller): shut it down in the background instead.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Turns the symbolic compiler's error into a [`VerifyError::Solver`].
fn solver_failed(solver: &SolverCommand) -> impl Fn(SymccError) -> VerifyError + '_ {
    move |e| VerifyError::Solver {
        solver: solver.to_string(),
        message: e.to_string(),
    }
}

/// Compiles `set` for one request type.
pub(crate) fn compile(
    set: &PolicySet,
    env: &RequestEnv,
    schema: &Schema,
    what: &str,
) -> Result<CompiledPolicySet, VerifyError> {
    CompiledPolicySet::compile(set, env, schema).map_err(|e| VerifyError::Compile {
        what: what.to_string(),
        env: env_name(env),
        message: e.to_string(),
    })
}

/// Re-decides the solver's counterexample with Cedar's own authorizer on `policies`,
/// and refuses it unless the decision is `expect`.
pub(crate) fn confirm(
    env: Env,
    policies: &PolicySet,
    expect: Decision,
    what: &str,
) -> Result<Counterexample, VerifyError> {
    let rendered = super::render::render(&env.request, &env.entities);
    decide(env.request, env.entities, rendered, policies, expect, what)
}

fn decide(
    request: Request,
    entities: Entities,
    rendered: String,
    policies: &PolicySet,
    expect: Decision,
    what: &str,
) -> Result<Counterexample, VerifyError> {
    let response = Authorizer::new().is_authorized(&request, policies, &entities);
    if response.decision() != expect {
        return Err(VerifyError::Unconfirmed {
            what: what.to_string(),
            example: rendered,
        });
    }
    let mut decided_by: Vec<String> = response
        .diagnostics()
        .reason()
        .map(ToString::to_string)
        .collect();
    decided_by.sort();
    let errors = response
        .diagnostics()
        .errors()
        .map(ToString::to_string)
        .collect();
    Ok(Counterexample {
        request,
        entities,
        decision: response.decision(),
        decided_by,
        errors,
        rendered,
    })
}

impl Counterexample {
    /// The same request and entities decided by `policies`, refused unless the decision
    /// is `expect`.
    pub(crate) fn decided_on(
        &self,
        policies: &PolicySet,
        expect: Decision,
        what: &str,
    ) -> Result<Counterexample, VerifyError> {
        decide(
            self.request.clone(),
            self.entities.clone(),
            self.rendered.clone(),
            policies,
            expect,
            what,
        )
    }

    /// The request, its context and the entities it reaches, one per line.
    pub fn describe(&self) -> &str {
        &self.rendered
    }

    /// The decision and what made it: `allowed by p, q`, `denied by f`, or
    /// `denied: no policy applies (default deny)`, then any policy errors.
    pub fn verdict(&self) -> String {
        let decision = match self.decision {
            Decision::Allow => "allowed",
            Decision::Deny => "denied",
        };
        let mut out = if self.decided_by.is_empty() {
            format!("{decision}: no policy applies (default deny)")
        } else {
            format!("{decision} by {}", self.decided_by.join(", "))
        };
        for e in &self.errors {
            out.push_str(&format!("; error (policy ignored): {e}"));
        }
        out
    }
}
