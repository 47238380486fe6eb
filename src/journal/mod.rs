//! The append-only journal: the truth from which the state store is materialised.
//!
//! Like Redis 7's multi-part AOF: a **base** (a compact snapshot written by a rewrite), then
//! **segments** of incremental records, named by a small **manifest**. See [`format`] for the
//! bytes, [`writer`] for group commit and fsync policies, [`recovery`] for opening after a crash,
//! [`check`] for `durq check [--repair]`.
//!
//! A rewrite is *fuzzy*: the writer rotates to segment K, then a background thread scans the
//! state store (while writers go on) into `K.base`. The base may reflect some records of segment
//! K and later; replaying segments K.. on top of it still gives the exact state, because every
//! record is a blind write (see [`crate::record`]).

pub mod applier;
pub mod check;
pub mod faults;
pub mod format;
pub mod fsutil;
pub mod manifest;
pub mod reader;
pub mod recovery;
pub mod writer;
