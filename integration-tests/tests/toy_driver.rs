//! A driver from outside the workspace (`examples/toy-driver`) goes through the steps of
//! docs/testing.md: its own crate implements `aimon_core::Driver`, exports a `Descriptor`,
//! opens through `aimon_registry::open_with` (the contract layer) and runs the conformance
//! suite with one line. This test builds and tests that crate as a third party would.

use std::path::Path;
use std::process::Command;

#[test]
fn a_driver_outside_the_workspace_passes_the_conformance_suite() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest = root.join("examples/toy-driver/Cargo.toml");
    // Its own target directory: the workspace's is locked by the `cargo test` running this.
    let target = root.join("target/toy-driver");
    let output = Command::new(env!("CARGO"))
        .args(["test", "--locked", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the toy driver's tests failed:\n{stdout}\n{stderr}"
    );
    // Every conformance check ran (the suite has well over a hundred), none was ignored.
    let passed: usize = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert!(passed > 100, "only {passed} checks passed:\n{stdout}");
}
