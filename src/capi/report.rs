//! Where diagnostics go: the fault handler.

use super::{guarded, E_FAIL, HRESULT};

/// Installs pagepool's SIGSEGV/SIGBUS handler (once per process; later calls
/// do nothing): a fault on a guard page or a quarantined buffer writes a
/// report to stderr (the kind, the offset, the buffer's pool, `max_len` and
/// allocation site) before the process dies of the signal.
///
/// Returns `S_OK`, or `E_FAIL` when `sigaltstack`, `mmap` or `sigaction`
/// failed.
///
/// # Safety
/// None: it takes no argument. It replaces the process's SIGSEGV and SIGBUS
/// handlers, chaining to the previous ones.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_install_fault_handler() -> HRESULT {
    guarded(|| crate::install_fault_handler().map_err(|_| E_FAIL))
}
