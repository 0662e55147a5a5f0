//! Integration tests, one binary: `mod` per area.

mod assurance;
mod audit;
mod cli;
mod coverage;
mod crm;
mod engine_api;
mod load_errors;
mod meter;
mod parsers;
mod plans;
mod proptest_engine;
mod record;
mod reload;
mod request_errors;
mod review;
mod support;
