//! Failpoints for the crash tests. A leaf: it imports nothing of its siblings.
//!
//! `READERD_FAILPOINT=<step>` aborts the process when the flow reaches that step, after the
//! step's record is on disk: `before_pi_create`, `after_pi_created`, `after_pi_persisted`,
//! `before_dispatch`, `after_dispatch`, `after_dispatch_persisted`, `before_inputs_send`,
//! `after_inputs_sent`, `before_setup_send`, `after_setup_sent`, `before_reader_refund`,
//! `after_reader_refund_sent`, a reviewed payment's `before_surcharge`, `after_surcharge`,
//! `before_confirm`, `after_confirm`, `before_capture`, `after_capture`, `before_refund`,
//! `after_refund`, for separate charges `before_transfer`, `after_transfer`,
//! `before_reversal`, `after_reversal`, and archiving: `archive_marked`,
//! `archive_half_written`, `archive_file_synced`.

use std::sync::OnceLock;

/// Aborts the process at a named step when `READERD_FAILPOINT` names it: the crash tests
/// kill the daemon exactly there, after the step's record is on disk.
pub fn failpoint(name: &str) {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    let point = POINT.get_or_init(|| std::env::var("READERD_FAILPOINT").ok());
    if point.as_deref() == Some(name) {
        eprintln!("readerd: failpoint {name} reached; aborting");
        std::process::abort();
    }
}
