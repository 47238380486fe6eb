//! The HTTP API, `/metrics` and the dashboard of `durq serve` (issue 4).
