//! `durq check [--repair]`: TODO by helper
