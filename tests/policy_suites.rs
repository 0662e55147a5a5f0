//! Runs every case of the policy test suites under `policies/tests/` as its own test.
//!
//! `cargo test --test policy_suites -- campaigns.toml` runs one suite; a failure names the
//! file, the line and the case.

use std::path::Path;
use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};
use membergate::testing::TestPlan;
use membergate::Engine;

fn main() -> std::process::ExitCode {
    let args = Arguments::from_args();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let trials = match (Engine::from_dir(&dir), TestPlan::load(&dir)) {
        (Ok(engine), Ok(plan)) => {
            let engine = Arc::new(engine);
            let plan = Arc::new(plan);
            let mut trials = Vec::new();
            for (si, suite) in plan.suites().iter().enumerate() {
                for ci in 0..suite.cases.len() {
                    let (engine, plan) = (Arc::clone(&engine), Arc::clone(&plan));
                    let name = format!("{}::{}", suite.name(), suite.cases[ci].name);
                    trials.push(Trial::test(name, move || {
                        let suite = &plan.suites()[si];
                        let report = plan.run(&engine, suite, &suite.cases[ci]);
                        report.failure.map_or(Ok(()), |f| Err(Failed::from(f)))
                    }));
                }
            }
            trials
        }
        (engine, plan) => {
            let mut why = String::new();
            if let Err(e) = engine {
                why.push_str(&e.render());
            }
            if let Err(e) = plan {
                why.push_str(&e.render());
            }
            vec![Trial::test("load policies and suites", move || {
                Err(Failed::from(why.clone()))
            })]
        }
    };
    libtest_mimic::run(&args, trials).exit_code()
}
