//! Chaining to the disposition pagepool's handler replaced, as the kernel
//! would have delivered the signal to it, without giving up pagepool's own.
//!
//! - A handler function is called with the signature its flags declare
//!   (`SA_SIGINFO`: `sa_sigaction(sig, info, ctx)`, else `sa_handler(sig)`),
//!   with its `sa_mask` blocked while it runs, and the signal itself too
//!   unless it has `SA_NODEFER` (then the signal is unblocked); the mask is
//!   restored when it returns. With `SA_RESETHAND` it is one-shot: the first
//!   signal takes it, later ones see `SIG_DFL`. It runs on the alternate
//!   stack pagepool's handler runs on, whatever its `SA_ONSTACK`. When it
//!   returns from a fault that is not pagepool's, it recovered it (a
//!   lazy-mapping runtime, a GC barrier): pagepool's handler returns and the
//!   faulting instruction runs again with pagepool's handler still the
//!   disposition. (A handler that leaves by `siglongjmp` restores its own
//!   mask; pagepool's frames hold nothing to release.)
//! - `SIG_DFL`: the disposition is reset to the default action and the
//!   handler returns, so the faulting instruction runs again and kills the
//!   process by the signal. A signal sent with `kill`/`raise` (`si_code <=
//!   0`) does not run again, so it is raised again instead, to be delivered
//!   once the handler returns.
//! - `SIG_IGN`: a sent signal is ignored (the handler returns). A fault
//!   cannot be ignored: the kernel kills the process when a synchronous
//!   fault is ignored or blocked, so it is handled as under `SIG_DFL`.
//!
//! A fault that is pagepool's (reported) goes to the previous handler too,
//! a crash reporter say, and then the process dies as under `SIG_DFL`,
//! whatever that handler did.

use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// A disposition pagepool's handler replaced, with the masks its handler
/// must run under, computed at install (off the signal stack).
pub(super) struct Previous {
    action: libc::sigaction,
    /// Its `sa_mask`, plus the signal unless `SA_NODEFER`.
    block: libc::sigset_t,
    /// The signal alone when `SA_NODEFER`, else empty.
    unblock: libc::sigset_t,
}

/// The previous dispositions of SIGSEGV (0) and SIGBUS (1), leaked at
/// install and never freed (a handler may be reading one). Null is
/// `SIG_DFL`: nothing was saved, or a one-shot handler was taken.
static PREVIOUS: [AtomicPtr<Previous>; 2] = [const { AtomicPtr::new(ptr::null_mut()) }; 2];

/// The `PREVIOUS` slot of `sig` (SIGSEGV or SIGBUS).
fn slot(sig: libc::c_int) -> &'static AtomicPtr<Previous> {
    &PREVIOUS[usize::from(sig == libc::SIGBUS)]
}

/// Saves `action`, the disposition of `sig` that pagepool's handler is
/// about to replace. Not for signal handlers (it allocates).
pub(super) fn save(sig: libc::c_int, action: libc::sigaction) {
    // SAFETY: `sigemptyset`/`sigaddset` initialise and fill the sets they
    // are given; `sig` is a valid signal number.
    let (block, unblock) = unsafe {
        let mut block = action.sa_mask;
        let mut unblock = MaybeUninit::<libc::sigset_t>::zeroed().assume_init();
        libc::sigemptyset(&mut unblock);
        if action.sa_flags & libc::SA_NODEFER != 0 {
            libc::sigaddset(&mut unblock, sig);
        } else {
            libc::sigaddset(&mut block, sig);
        }
        (block, unblock)
    };
    let previous = Box::new(Previous {
        action,
        block,
        unblock,
    });
    slot(sig).store(Box::into_raw(previous), Ordering::Release);
}

/// Takes the previous disposition of `sig` for one signal: `None` for
/// `SIG_DFL`; a one-shot (`SA_RESETHAND`) handler is taken by the first
/// signal to get here, and later ones see `None`.
fn take(sig: libc::c_int) -> Option<&'static Previous> {
    let slot = slot(sig);
    let p = slot.load(Ordering::Acquire);
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null pointers in `PREVIOUS` come from `save`'s leaked
    // boxes, never freed.
    let previous = unsafe { &*p };
    let handler = previous.action.sa_sigaction;
    let one_shot = previous.action.sa_flags & libc::SA_RESETHAND != 0;
    if one_shot && handler != libc::SIG_DFL && handler != libc::SIG_IGN {
        slot.compare_exchange(p, ptr::null_mut(), Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
    }
    Some(previous)
}

/// Hands the signal to the previous disposition (the module's doc says
/// how); then, if the fault was `ours`, or the previous disposition would
/// have killed, makes sure the process dies by the signal. `fault` tells a
/// fault (`si_code > 0`) from a sent signal.
///
/// # Safety
/// - `sig`, `info` and `ctx` are the arguments the kernel passed to a
///   SA_SIGINFO handler for this signal (directly or through a handler
///   that chains to pagepool's), and `sig` is SIGSEGV or SIGBUS;
/// - it is called from pagepool's signal handler only.
#[inline(never)]
pub(super) unsafe fn pass_on(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut c_void,
    ours: bool,
    fault: bool,
) {
    if let Some(previous) = take(sig) {
        let handler = previous.action.sa_sigaction;
        if handler == libc::SIG_IGN {
            if !ours && !fault {
                return;
            }
        } else if handler != libc::SIG_DFL {
            // SAFETY: this function's contract.
            unsafe { call(sig, info, ctx, previous) };
            if !ours {
                return;
            }
        }
    }
    die(sig, fault);
}

/// Calls the previous handler with the signature its flags declare, under
/// the mask the kernel would have given it, and restores the mask.
///
/// # Safety
/// As [`pass_on`]; `previous.action.sa_sigaction` is a handler function
/// (neither `SIG_DFL` nor `SIG_IGN`).
#[inline(never)]
unsafe fn call(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut c_void,
    previous: &Previous,
) {
    let mut saved = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `pthread_sigmask` is async-signal-safe (it is the
    // `rt_sigprocmask` system call) and reads initialised sets; `saved` is
    // written when it succeeds, and only read then. The handler was
    // installed by its owner with the signature its `SA_SIGINFO` flag
    // declares, and gets the kernel's arguments.
    unsafe {
        let masked =
            libc::pthread_sigmask(libc::SIG_BLOCK, &previous.block, saved.as_mut_ptr()) == 0;
        if previous.action.sa_flags & libc::SA_NODEFER != 0 {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &previous.unblock, ptr::null_mut());
        }
        let handler = previous.action.sa_sigaction;
        if previous.action.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) =
                std::mem::transmute(handler);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
            f(sig);
        }
        if masked {
            libc::pthread_sigmask(libc::SIG_SETMASK, saved.as_ptr(), ptr::null_mut());
        }
    }
}

/// Makes the process die by `sig`: resets it to the default action, so a
/// faulting instruction kills when it runs again; a sent signal is raised
/// again (it stays pending while the handler runs with it blocked).
#[inline(never)]
fn die(sig: libc::c_int, fault: bool) {
    reset_to_default(sig);
    if !fault {
        // SAFETY: `raise` is async-signal-safe.
        unsafe { libc::raise(sig) };
    }
}

/// Resets `sig` to its default action.
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
