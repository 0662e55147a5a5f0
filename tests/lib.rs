//! Integration tests, one binary: `mod` per area.

mod assurance;
mod audit;
mod bad_input;
mod compiled;
mod conformance;
mod coverage;
mod crm;
mod engine_api;
mod fast_path;
mod meter;
mod proptest_compiled;
mod proptest_engine;
mod reload;
