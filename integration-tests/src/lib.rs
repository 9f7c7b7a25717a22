//! # aimon-integration-tests
//!
//! The shared conformance suite of aimon ([`conformance`]), run against every backend through
//! [`fixtures`], and the [`conformance_suite!`] macro that turns it into one test per check.
//! A backend, in this workspace or outside it, runs the whole suite with one line; see
//! `docs/testing.md`. The fault suite ([`faults`], [`fault_suite!`]) holds every backend to what an
//! acknowledged write is worth when a client, a connection or a server dies mid-batch.
#![deny(unsafe_code)]

pub mod conformance;
pub mod faults;
pub mod fixtures;
pub mod similarity_quality;
#[cfg(feature = "postgres")]
pub mod timescale;

pub use fixtures::Fixture;
