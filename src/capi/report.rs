//! Where diagnostics go: reports to stderr or to the C program's callback
//! (installed as the library's report sink by the first allocator C
//! creates), and the fault handler.

use std::ffi::{c_char, c_void, CString};
use std::io::Write as _;

use crate::sync::Mutex;

use super::{guarded, E_FAIL, HRESULT};
use crate::forklock;
use crate::observe::sink::{self, Report, ReportKind};
use crate::stats::CorruptionKind;

/// Report kind: a write past `max_len` (the slack canary).
pub const PAGEPOOL_REPORT_SLACK_CANARY: u32 = 1;
/// Report kind: a write into a packet's red zone or an edge canary.
pub const PAGEPOOL_REPORT_EDGE_CANARY: u32 = 2;
/// Report kind: a write after release (the poison).
pub const PAGEPOOL_REPORT_POISON: u32 = 3;
/// Report kind: buffers still out when their allocator was destroyed.
pub const PAGEPOOL_REPORT_LEAK: u32 = 4;
/// Report kind: a release or other use of a buffer handle after its last
/// release.
pub const PAGEPOOL_REPORT_STALE_HANDLE: u32 = 5;

/// A report callback: `user` as given to `pagepool_set_report_callback`,
/// a `PAGEPOOL_REPORT_*` kind, the report's text (NUL-terminated, valid
/// during the call) and the buffer's address (0 for a leak report).
pub type pagepool_report_fn =
    Option<unsafe extern "C" fn(user: *mut c_void, kind: u32, text: *const c_char, address: usize)>;

/// The callback and its `user` pointer (as an address: it is only passed
/// back); `None`: stderr.
static CALLBACK: Mutex<(pagepool_report_fn, usize)> = Mutex::new((None, 0));

/// Makes every report of the process come to [`deliver`] (once; the C
/// ABI's allocators call it when created).
pub(super) fn install_sink() {
    static JOINED: std::sync::Once = std::sync::Once::new();
    // A fork leaf: taken only to copy the callback out, or to set it.
    JOINED.call_once(|| forklock::add_leaf(&CALLBACK));
    sink::install(|r: &Report<'_>| {
        let kind = match r.kind {
            ReportKind::Corruption(CorruptionKind::SlackCanary) => PAGEPOOL_REPORT_SLACK_CANARY,
            ReportKind::Corruption(CorruptionKind::EdgeCanary) => PAGEPOOL_REPORT_EDGE_CANARY,
            ReportKind::Corruption(CorruptionKind::Poison) => PAGEPOOL_REPORT_POISON,
            ReportKind::Leak => PAGEPOOL_REPORT_LEAK,
        };
        deliver(kind, r.text, r.address);
    });
}

/// Hands one report to the C callback, or writes it to stderr.
pub(super) fn deliver(kind: u32, text: &str, address: usize) {
    // Copied out: the callback may set another callback.
    let (callback, user) = *CALLBACK.lock();
    match callback {
        Some(f) => {
            let text = CString::new(text.replace('\0', " ")).unwrap_or_default();
            // SAFETY: the C program's callback, called as its type says,
            // with `user` as it gave it and a NUL-terminated text that
            // outlives the call.
            unsafe { f(user as *mut c_void, kind, text.as_ptr(), address) };
        }
        None => {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{}", text.trim_end());
        }
    }
}

/// Sends every later report of the process (each corruption a check finds
/// in any pool, each leak at an allocator's destroy, each stale buffer
/// handle) to `callback`, called with `user` on the thread that found it;
/// NULL sends them back to stderr, the default. The callback may call
/// pagepool functions; it must not unwind. Guard-page and quarantine
/// faults are reported by the fault handler, to stderr, whatever is set
/// here.
///
/// Returns `S_OK`.
///
/// # Safety
/// `callback` is null or a function of its type, callable from any thread
/// until it is replaced, with `user`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_set_report_callback(
    callback: pagepool_report_fn,
    user: *mut c_void,
) -> HRESULT {
    guarded(|| {
        install_sink();
        *CALLBACK.lock() = (callback, user as usize);
        Ok(())
    })
}

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
