//! # aimon-integration-tests
//!
//! The shared conformance suite of aimon ([`conformance`]), run against every backend through
//! [`fixtures`], and the [`conformance_suite!`] macro that turns it into one test per check.
//! A backend, in this workspace or outside it, runs the whole suite with one line; see
//! `docs/testing.md`.
#![deny(unsafe_code)]

pub mod conformance;
pub mod fixtures;
pub mod similarity_quality;

pub use fixtures::Fixture;
