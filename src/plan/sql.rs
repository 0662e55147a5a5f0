//! SQL (placeholder)
