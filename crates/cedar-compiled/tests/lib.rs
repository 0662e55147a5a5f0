//! Integration tests, one binary: `mod` per area.

mod compiled;
mod conformance;
mod differential;
