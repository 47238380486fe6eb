//! The command line of the `durq` binary (issue 4).
