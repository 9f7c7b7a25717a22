//! The conformance suite against the in-memory reference backend (`memory://`).

aimon_integration_tests::conformance_suite!(aimon_integration_tests::fixtures::memory());
