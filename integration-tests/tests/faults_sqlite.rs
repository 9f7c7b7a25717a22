//! The fault suite on SQLite: the writing process killed mid-batch, then the file reopened.
#![cfg(feature = "sqlite")]
aimon_integration_tests::fault_suite!(sqlite, aimon_integration_tests::fixtures::sqlite());
