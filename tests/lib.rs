//! Integration tests, one binary: `mod` per area.

mod assurance;
mod audit;
mod bad_input;
mod coverage;
mod crm;
mod engine_api;
mod fast_path;
mod meter;
mod proptest_engine;
mod reload;
