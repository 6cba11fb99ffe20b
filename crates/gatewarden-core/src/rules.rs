//! The behaviour rules by id, as specified: `docs/spec/BEHAVIOUR.md`, rendered here so that a
//! rule id in this documentation (L5, T4, R6, …) is one click away from its text. Tests are named
//! after the rule they prove (`l5_…`, `t4_…`); `tests/tests/rule_coverage.rs` checks that every
//! rule has one.
//!
//! ---
//!
#![doc = include_str!("../spec/BEHAVIOUR.md")]
// The spec is written as text and quotes placeholders like "<reason>"; rendered, they read as
// unknown HTML tags (and are hidden, as on any Markdown page). The spec is shared and not edited here.
#![allow(rustdoc::invalid_html_tags)]
