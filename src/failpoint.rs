//! Crash points for the fault tests: `PODKEEPER_FAILPOINT=<name>` makes a debug build exit
//! at the point of that name, so a test can crash the operator between two steps exactly
//! (tests/fault.rs). Release builds compile none of it.

/// Exits the process (status 86) when the failpoint `name` is set and `when` holds.
pub fn exit_if(name: &str, when: impl FnOnce() -> bool) {
    #[cfg(debug_assertions)]
    if std::env::var("PODKEEPER_FAILPOINT").is_ok_and(|v| v == name) && when() {
        tracing::error!(failpoint = name, "failpoint reached: exiting");
        std::process::exit(86);
    }
    #[cfg(not(debug_assertions))]
    let _ = (name, when);
}
