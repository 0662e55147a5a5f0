//! Integration tests, one binary: `mod` per area.

mod bad_input;
mod engine_api;
