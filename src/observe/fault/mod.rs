//! The SIGSEGV/SIGBUS handler that turns a guard-page or quarantine fault
//! into a report naming the buffer, its pool and where it was allocated.
//!
//! Every slab's layout enters a fixed, lock-free table when it is mapped
//! (`table.rs`, a subscriber to the slab events); the handler looks the faulting address up there, reads the slot's
//! metadata (atomics and `&'static Location`s only), and writes the report
//! with `write(2)` through a static buffer (`report.rs`): no lock, no
//! allocation, so it is async-signal-safe, and little stack, so it fits the
//! alternate signal stack std gives its threads. Then it hands the signal to
//! the previous handler, and makes sure the process still dies by the signal.

use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use crate::Error;

mod report;
mod table;

pub(crate) use table::FaultTable;

/// The previous handlers of SIGSEGV (0) and SIGBUS (1), leaked at install.
static PREVIOUS: [AtomicPtr<libc::sigaction>; 2] = [const { AtomicPtr::new(ptr::null_mut()) }; 2];
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Installs pagepool's SIGSEGV and SIGBUS handler (once per process; later
/// calls do nothing).
///
/// When a fault hits a pagepool guard page or a quarantined slot, the handler
/// writes to stderr what happened (heap-buffer-overflow, underflow or
/// use-after-release), whether it was a read or a write (x86-64), the pool,
/// the buffer's address and `max_len`, the offset of the faulting byte from
/// the buffer, where the buffer was allocated, and for use after release
/// where (or on which thread) it was released. Then it passes the signal to
/// the handler that was installed before (Rust's stack-overflow reporter, a
/// crash reporter, ...) and makes sure the process dies by the signal.
///
/// The handler runs on the faulting thread's alternate signal stack, and
/// its report needs little of it (about 1 KiB in a debug build), so the one
/// `std` gives every thread it starts (`max(SIGSTKSZ, AT_MINSIGSTKSZ)`
/// bytes) is enough, for threads started before this call as well as after.
/// This call gives the calling thread a 64 KiB one unless it has one at
/// least that large, for the handlers chained after ours.
///
/// Known limit: a fault on one thread that races with its slab being
/// unmapped on another (by `trim` or the pool's shutdown) can read the
/// slab's freed description; the process is dying of that fault anyway.
///
/// # Errors
/// [`Error::Os`] when `sigaltstack`, `mmap` or `sigaction` fail.
pub fn install_fault_handler() -> Result<(), Error> {
    static LOCK: parking_lot::Mutex<()> = parking_lot::const_mutex(());
    let _one_at_a_time = LOCK.lock();
    if INSTALLED.load(Ordering::Acquire) {
        return Ok(());
    }
    ensure_alt_stack()?;
    for (i, sig) in [libc::SIGSEGV, libc::SIGBUS].into_iter().enumerate() {
        // SAFETY: `sigaction` with a null new action only reads the current
        // one into `old`, a properly sized, writable struct.
        let old = unsafe {
            let mut old = MaybeUninit::<libc::sigaction>::zeroed();
            if libc::sigaction(sig, ptr::null(), old.as_mut_ptr()) != 0 {
                return Err(Error::Os(std::io::Error::last_os_error()));
            }
            old.assume_init()
        };
        PREVIOUS[i].store(Box::into_raw(Box::new(old)), Ordering::Release);
        // SAFETY: a zeroed `sigaction` is a valid starting point; we set the
        // handler (an `extern "C"` fn of the SA_SIGINFO signature), flags and
        // an empty mask before passing it to the kernel.
        unsafe {
            let mut action = MaybeUninit::<libc::sigaction>::zeroed().assume_init();
            action.sa_sigaction = on_fault as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(sig, &action, ptr::null_mut()) != 0 {
                return Err(Error::Os(std::io::Error::last_os_error()));
            }
        }
    }
    INSTALLED.store(true, Ordering::Release);
    Ok(())
}

/// Gives the calling thread an alternate signal stack of 64 KiB unless it has
/// one at least that large.
fn ensure_alt_stack() -> Result<(), Error> {
    const SIZE: usize = 64 * 1024;
    // SAFETY: querying with a null new stack only writes `current`.
    let current = unsafe {
        let mut current = MaybeUninit::<libc::stack_t>::zeroed();
        if libc::sigaltstack(ptr::null(), current.as_mut_ptr()) != 0 {
            return Err(Error::Os(std::io::Error::last_os_error()));
        }
        current.assume_init()
    };
    // Rust's runtime gives its threads a small alternate stack (for its
    // stack-overflow message). Our report fits in it; a handler chained
    // after ours may not, so a smaller one is replaced on this thread (the
    // runtime still unmaps its own at exit).
    if current.ss_flags & libc::SS_DISABLE == 0 && current.ss_size >= SIZE {
        return Ok(());
    }
    if current.ss_flags & libc::SS_ONSTACK != 0 {
        // Running on it right now (inside a signal handler): leave it.
        return Ok(());
    }
    // SAFETY: a fresh private anonymous mapping; on success it is ours for
    // the life of the process (the stack is never freed: the thread may fault
    // at any time).
    let stack = unsafe {
        libc::mmap(
            ptr::null_mut(),
            SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(Error::Os(std::io::Error::last_os_error()));
    }
    let new = libc::stack_t {
        ss_sp: stack,
        ss_flags: 0,
        ss_size: SIZE,
    };
    // SAFETY: `new` describes the mapping made above.
    if unsafe { libc::sigaltstack(&new, ptr::null_mut()) } != 0 {
        return Err(Error::Os(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The signal handler. It runs on the faulting thread's alternate signal
/// stack, which may be the few KiB std leaves after the kernel's signal
/// frame: every function on its path keeps its frame small (no buffer on
/// the stack, no `core::fmt`), and the chaining is a function of its own so
/// its `sigaction`s are not on the stack while the report is written.
extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel passes a valid `siginfo_t` for SA_SIGINFO handlers;
    // `si_addr` is the faulting address for SIGSEGV and SIGBUS.
    let addr = unsafe { (*info).si_addr() } as usize;
    let ours = report::report(addr, access(ctx));
    // SAFETY: the kernel's arguments to this SA_SIGINFO handler, unchanged.
    unsafe { pass_on(sig, info, ctx, ours) };
}

/// Hands the signal to the handler installed before ours; then, if the
/// fault was ours (or there was no handler), makes sure the process dies
/// by the signal when the faulting instruction runs again.
///
/// # Safety
/// - `sig`, `info` and `ctx` are the arguments the kernel passed to
///   `on_fault` for this signal;
/// - it is called from `on_fault` only.
#[inline(never)]
unsafe fn pass_on(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void, ours: bool) {
    let index = usize::from(sig == libc::SIGBUS);
    let previous = PREVIOUS[index].load(Ordering::Acquire);
    // SAFETY: `previous` is null or a `sigaction` leaked at install and never
    // freed; `sigaction(2)` is async-signal-safe; the previous handler is
    // called with the signature its flags declare, with the kernel's
    // arguments (this function's contract).
    unsafe {
        if !previous.is_null() {
            let old = &*previous;
            let handler = old.sa_sigaction;
            if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
                // Give the old handler its own disposition back (it may reset
                // it, as Rust's does), then let it run.
                libc::sigaction(sig, old, ptr::null_mut());
                if old.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) =
                        std::mem::transmute(handler);
                    f(sig, info, ctx);
                } else {
                    let f: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
                    f(sig);
                }
                if !ours {
                    return;
                }
            }
        }
    }
    // Our fault, or no handler before us.
    reset_to_default(sig);
}

/// Resets `sig` to its default action, so the faulting instruction kills the
/// process by the signal when it runs again. Not inlined: its `sigaction` is
/// off the stack while the previous handler runs.
#[inline(never)]
fn reset_to_default(sig: libc::c_int) {
    // SAFETY: a zeroed `sigaction` with `SIG_DFL` and an empty mask is a
    // valid action; `sigaction(2)` is async-signal-safe.
    unsafe {
        let mut default = MaybeUninit::<libc::sigaction>::zeroed().assume_init();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut default.sa_mask);
        libc::sigaction(sig, &default, ptr::null_mut());
    }
}

/// Whether the faulting access was a write, where the CPU tells.
fn access(ctx: *mut c_void) -> Option<bool> {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        if ctx.is_null() {
            return None;
        }
        // SAFETY: for SA_SIGINFO handlers the third argument is the
        // `ucontext_t` of the interrupted thread; REG_ERR holds the page-fault
        // error code, whose bit 1 is set for writes.
        let err = unsafe {
            (*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_ERR as usize]
        };
        Some(err & 2 != 0)
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        let _ = ctx;
        None
    }
}
