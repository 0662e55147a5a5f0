//! The subcommands, one module each (as cargo's `commands/`): its clap `Args` and its
//! `exec`, which does the work and gives the exit code or an error message.

pub mod audit;
pub mod check;
pub mod conformance;
pub mod demo;
pub mod diff;
pub mod explain;
pub mod fields;
pub mod generate;
pub mod plan;
pub mod record;
pub mod review;
pub mod test;
pub mod verify;
