//! The SIGSEGV/SIGBUS handler that turns a guard-page or quarantine fault
//! into a report naming the buffer, its pool and where it was allocated.
//!
//! Every slab's layout enters a fixed, lock-free table when it is mapped
//! (`table.rs`, a subscriber to the slab events); the handler looks the faulting address up there, reads the slot's
//! metadata (atomics and `&'static Location`s only), and writes the report
//! with `write(2)` through a static buffer (`report.rs`): no lock, no
//! allocation, so it is async-signal-safe, and little stack, so it fits the
//! alternate signal stack std gives its threads. Then it hands the signal to
//! the previous disposition as the kernel would have (`chain.rs`), keeping
//! its own installed, and if the fault was ours makes sure the process dies
//! by the signal.

use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::Error;

mod chain;
mod report;
mod table;

pub(crate) use table::FaultTable;

/// Set once pagepool's handler has been installed.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// One [`install_fault_handler`] at a time.
static INSTALL_LOCK: crate::sync::Mutex<()> = crate::sync::const_mutex(());

/// Takes the install lock for a `fork` (see [`crate::forklock`]); nothing
/// is taken under it but the signal dispositions.
pub(crate) fn fork_hold() {
    crate::forklock::hold(&INSTALL_LOCK);
}

/// Lets go what [`fork_hold`] took.
///
/// # Safety
///
/// As [`crate::forklock::release`]'s: this thread took it with `fork_hold`,
/// and in the child no other thread runs yet.
pub(crate) unsafe fn fork_release(child: bool) {
    // SAFETY: the caller's contract is `release`'s.
    unsafe { crate::forklock::release(&INSTALL_LOCK, child) }
}

/// Installs pagepool's SIGSEGV and SIGBUS handler.
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
/// A fault that is not pagepool's goes to the disposition found at install
/// as the kernel would have delivered it: a handler function is called with
/// its flags (`SA_SIGINFO` or not, `SA_RESETHAND`, `SA_NODEFER`) and
/// `sa_mask` honoured, and when it returns (it recovered the fault, as
/// lazy-mapping runtimes, GC barriers and wasm engines do) the access runs
/// again with pagepool's handler still installed; `SIG_DFL`, or `SIG_IGN`
/// for a fault (which the kernel does not let a process ignore), kills the
/// process by the signal. A handler installed after this one may chain to
/// it: it is called as `sa_sigaction(sig, info, ctx)` (`SA_SIGINFO`).
///
/// Calling it again does nothing while pagepool's handler is the
/// disposition of both signals, and installs it again over `SIG_DFL` or
/// `SIG_IGN` (chaining to that). If another handler replaced it, the call
/// fails and changes nothing: that handler may chain to pagepool's, and
/// installing pagepool's on top, chaining to it, would make the two call
/// each other for every fault neither owns.
///
/// The handler runs on the faulting thread's alternate signal stack, and
/// its report needs little of it (about 1 KiB in a debug build), so the one
/// `std` gives every thread it starts (`max(SIGSTKSZ, AT_MINSIGSTKSZ)`
/// bytes) is enough, for threads started before this call as well as after.
/// This call gives the calling thread a 64 KiB one unless it has one at
/// least that large, for the handlers chained after ours. The handlers it
/// chains to run on that stack too, whatever their `SA_ONSTACK`.
///
/// Known limit: a fault on one thread that races with its slab being
/// unmapped on another (by `trim` or the pool's shutdown) can read the
/// slab's freed description; the process is dying of that fault anyway.
///
/// # Errors
/// [`Error::Os`] when `sigaltstack`, `mmap` or `sigaction` fail, or when
/// pagepool's handler was installed before and another handler has since
/// replaced it.
pub fn install_fault_handler() -> Result<(), Error> {
    let _one_at_a_time = INSTALL_LOCK.lock();
    let signals = [libc::SIGSEGV, libc::SIGBUS];
    let current = [current(signals[0])?, current(signals[1])?];
    let ours = on_fault as *const () as usize;
    let installed = INSTALLED.load(Ordering::Acquire);
    for (sig, old) in signals.into_iter().zip(&current) {
        let handler = old.sa_sigaction;
        let foreign = handler != ours && handler != libc::SIG_DFL && handler != libc::SIG_IGN;
        if installed && foreign {
            return Err(Error::Os(std::io::Error::other(format!(
                "another handler replaced pagepool's for signal {sig}; \
                 pagepool does not install on top of it"
            ))));
        }
    }
    ensure_alt_stack()?;
    for (sig, old) in signals.into_iter().zip(current) {
        if old.sa_sigaction == ours {
            continue;
        }
        chain::save(sig, old);
        // SAFETY: a zeroed `sigaction` is a valid starting point; we set the
        // handler (an `extern "C"` fn of the SA_SIGINFO signature), flags and
        // an empty mask before passing it to the kernel.
        unsafe {
            let mut action = MaybeUninit::<libc::sigaction>::zeroed().assume_init();
            action.sa_sigaction = ours;
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

/// The current disposition of `sig`.
fn current(sig: libc::c_int) -> Result<libc::sigaction, Error> {
    // SAFETY: `sigaction` with a null new action only reads the current one
    // into `old`, a properly sized, writable struct.
    unsafe {
        let mut old = MaybeUninit::<libc::sigaction>::zeroed();
        if libc::sigaction(sig, ptr::null(), old.as_mut_ptr()) != 0 {
            return Err(Error::Os(std::io::Error::last_os_error()));
        }
        Ok(old.assume_init())
    }
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
/// its signal sets are not on the stack while the report is written. A
/// handler installed after it may call it with its own arguments.
extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // A fault has a positive `si_code`; `kill`, `raise` and `sigqueue` send
    // zero or less, and their `si_addr` is not an address.
    // SAFETY: the kernel passes a valid `siginfo_t` for SA_SIGINFO handlers
    // (a chaining handler passes it on); `si_addr` is the faulting address
    // for SIGSEGV and SIGBUS faults.
    let (fault, addr) = unsafe {
        match info.as_ref() {
            Some(i) if i.si_code > 0 => (true, i.si_addr() as usize),
            _ => (false, 0),
        }
    };
    let ours = fault && report::report(addr, access(ctx));
    // SAFETY: the arguments this SA_SIGINFO handler was given, unchanged.
    unsafe { chain::pass_on(sig, info, ctx, ours, fault) };
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
