//! Malformed policies, schema, catalogue, suites, data and requests: clear errors.
