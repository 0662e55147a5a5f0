//! Integration tests, one binary: `mod` per area.

mod assurance;
mod audit;
mod cli;
mod compiled;
mod conformance;
mod coverage;
mod crm;
mod engine_api;
mod fast_path;
mod load_errors;
mod meter;
mod proptest_compiled;
mod proptest_engine;
mod reload;
mod request_errors;
mod support;
