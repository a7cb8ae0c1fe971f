//! Crash points for the tests of repeated runs (SPEC section 11): with
//! `PERSONALIZE_PREP_FAILPOINT=NAME` (or `NAME:N`, the Nth time it is
//! reached) the process aborts at that point, as a crash would: no
//! destructor runs, no temporary file is removed, no lock released.
//!
//! The points: `after-pending` (the state records the run as pending, no
//! output is open yet), `mid-decode` (after a chunk's rows reached the
//! writer), `mid-upload` (after rows were written to an output that is not
//! committed), `after-commit` (every output and the schema landed, the run
//! is not yet marked done) and `after-done` (the state says done, the lock
//! is still held). Three points panic instead, as a bug would:
//! `read-panic` (a worker, before it reads a chunk), `decode-panic`
//! (before it converts one) and `inflate-panic` (a thread decompressing
//! an object, before it reads a chunk).
//!
//! With `PERSONALIZE_PREP_FAILPOINT_SLEEP=SECS` as well, the process sleeps
//! there instead of aborting, so a test can meet a run at that point (a
//! second run against its lock, a SIGKILL).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

pub const VAR: &str = "PERSONALIZE_PREP_FAILPOINT";
pub const SLEEP_VAR: &str = "PERSONALIZE_PREP_FAILPOINT_SLEEP";

static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn armed() -> Option<&'static (String, u64)> {
    ARMED
        .get_or_init(|| {
            let spec = std::env::var(VAR).ok()?;
            Some(match spec.split_once(':') {
                Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
                None => (spec, 1),
            })
        })
        .as_ref()
}

/// Whether the failpoint `name` is armed and this is the time it fires.
fn fires(name: &str) -> bool {
    armed().is_some_and(|(armed, nth)| {
        armed == name && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *nth
    })
}

/// Panics if the failpoint `name` fires.
pub fn panic_at(name: &str) {
    if fires(name) {
        panic!("failpoint {name}");
    }
}

/// Aborts the process if the failpoint `name` fires.
pub fn hit(name: &str) {
    if fires(name) {
        if let Some(secs) = std::env::var(SLEEP_VAR).ok().and_then(|s| s.parse().ok()) {
            eprintln!("personalize-prep: failpoint {name}: sleeping {secs} s");
            std::thread::sleep(std::time::Duration::from_secs(secs));
            return;
        }
        eprintln!("personalize-prep: failpoint {name}: aborting");
        std::process::abort();
    }
}
