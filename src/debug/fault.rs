//! The SIGSEGV/SIGBUS handler that turns a guard-page or quarantine fault
//! into a report naming the buffer, its pool and where it was allocated.
//!
//! Every slab registers its layout in a fixed, lock-free table when it is
//! mapped; the handler looks the faulting address up there, reads the slot's
//! metadata (atomics and `&'static Location`s only), formats the report into
//! a stack buffer and writes it with `write(2)`: no lock, no allocation, so it
//! is async-signal-safe. Then it hands the signal to the previous handler, and
//! makes sure the process still dies by the signal.

use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::slab::{Slot, IN_USE, QUARANTINED};
use crate::Error;

/// Registered slabs at most; more are served, but their faults are reported
/// without naming the buffer.
const CAPACITY: usize = 1 << 16;

/// What the handler needs to know of one slab.
#[derive(Debug)]
pub(crate) struct SlabInfo {
    pub(crate) base: usize,
    pub(crate) len: usize,
    /// Bytes before the first slot (a guard page, plus a red zone when
    /// `packed`).
    pub(crate) lead: usize,
    /// Bytes of one guard page (0 without guards).
    pub(crate) guard: usize,
    /// Small slots packed between red zones, guard pages only at the ends.
    pub(crate) packed: bool,
    pub(crate) stride: usize,
    pub(crate) slot_bytes: usize,
    /// The slab's slot metadata; valid while the registration lives.
    pub(crate) slots: *const Slot,
    pub(crate) nslots: usize,
    pub(crate) pool: Arc<str>,
}

static REGISTRY: [AtomicPtr<SlabInfo>; CAPACITY] =
    [const { AtomicPtr::new(ptr::null_mut()) }; CAPACITY];
/// One past the highest registry index ever used.
static HIGH_WATER: AtomicUsize = AtomicUsize::new(0);

/// A slab's entry in the registry; removed on drop.
#[derive(Debug)]
pub(crate) struct Registration {
    index: usize,
    info: *mut SlabInfo,
}

// SAFETY: the registration owns its boxed `SlabInfo` (plain data, an `Arc<str>`
// and a pointer only the signal handler reads) and an index into a static
// table of atomics; neither cares which thread drops it.
unsafe impl Send for Registration {}
// SAFETY: `&Registration` exposes nothing.
unsafe impl Sync for Registration {}

impl Registration {
    /// Registers a slab; `None` when the table is full.
    pub(crate) fn new(info: SlabInfo) -> Option<Registration> {
        let info = Box::into_raw(Box::new(info));
        for (index, entry) in REGISTRY.iter().enumerate() {
            if entry
                .compare_exchange(ptr::null_mut(), info, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                HIGH_WATER.fetch_max(index + 1, Ordering::AcqRel);
                return Some(Registration { index, info });
            }
        }
        // SAFETY: `info` came from `Box::into_raw` above and was never shared.
        drop(unsafe { Box::from_raw(info) });
        None
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        REGISTRY[self.index].store(ptr::null_mut(), Ordering::Release);
        // SAFETY: `info` came from `Box::into_raw` and is ours alone now that
        // the table no longer points to it (a signal handler already reading
        // it races with the slab being unmapped anyway; see `install_fault_handler`).
        drop(unsafe { Box::from_raw(self.info) });
    }
}

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
/// The handler runs on an alternate signal stack: this call gives the calling
/// thread one if it has none; threads started by `std` have their own.
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
    // stack-overflow message); the report needs more in debug builds, so a
    // smaller one is replaced (the runtime still unmaps its own at exit).
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

/// The signal handler.
extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel passes a valid `siginfo_t` for SA_SIGINFO handlers;
    // `si_addr` is the faulting address for SIGSEGV and SIGBUS.
    let addr = unsafe { (*info).si_addr() } as usize;
    let ours = report(addr, access(ctx));
    let index = usize::from(sig == libc::SIGBUS);
    let previous = PREVIOUS[index].load(Ordering::Acquire);
    // SAFETY: `previous` is null or a `sigaction` leaked at install and never
    // freed; `sigaction(2)` is async-signal-safe; the previous handler is
    // called with the signature its flags declare.
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
        // Our fault, or no handler before us: die by the signal when the
        // faulting instruction runs again.
        let mut default = MaybeUninit::<libc::sigaction>::zeroed().assume_init();
        default.sa_sigaction = libc::SIG_DFL;
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

/// The slab registered at `addr`, if any.
fn find(addr: usize) -> Option<&'static SlabInfo> {
    let high = HIGH_WATER.load(Ordering::Acquire).min(CAPACITY);
    REGISTRY[..high].iter().find_map(|entry| {
        let p = entry.load(Ordering::Acquire);
        // SAFETY: a non-null entry points to a live `SlabInfo` (unregistering
        // clears the entry before freeing it).
        let info = unsafe { p.as_ref() }?;
        (addr.wrapping_sub(info.base) < info.len).then_some(info)
    })
}

/// Writes the report for a fault at `addr`; returns whether it was ours.
fn report(addr: usize, write: Option<bool>) -> bool {
    let Some(slab) = find(addr) else {
        return false;
    };
    let off = addr - slab.base;
    let slot = |i: usize| -> Option<&Slot> {
        // SAFETY: `slots` points to `nslots` live `Slot`s while the slab is
        // registered.
        (i < slab.nslots).then(|| unsafe { &*slab.slots.add(i) })
    };
    let live = |s: &Slot| {
        let st = s.state.load(Ordering::Relaxed);
        st == IN_USE || st == QUARANTINED
    };
    // (slot index, slot) and the kind of fault.
    let (index, kind) = if slab.packed {
        // Guards only at the two ends: before slot 0, after the last slot.
        if off < slab.guard {
            (0, Kind::Underflow)
        } else if off >= slab.len - slab.guard {
            (slab.nslots.saturating_sub(1), Kind::Overflow)
        } else {
            let Some(inner) = off.checked_sub(slab.lead) else {
                return false;
            };
            (inner / slab.stride, Kind::InSlot)
        }
    } else {
        let (g, within) = (off / slab.stride, off % slab.stride);
        if within < slab.lead {
            // A guard page: after slot g-1 (overflow) and before slot g
            // (underflow).
            let before = g.checked_sub(1).and_then(slot);
            let after = slot(g);
            let nearer_before = within < slab.lead / 2;
            match (before, after) {
                (Some(b), Some(a)) if live(b) != live(a) => {
                    if live(b) {
                        (g - 1, Kind::Overflow)
                    } else {
                        (g, Kind::Underflow)
                    }
                }
                (Some(_), Some(_)) if nearer_before => (g - 1, Kind::Overflow),
                (Some(_), None) => (g - 1, Kind::Overflow),
                (_, Some(_)) => (g, Kind::Underflow),
                (None, None) => return false,
            }
        } else {
            (g, Kind::InSlot)
        }
    };
    let Some(s) = slot(index) else {
        return false;
    };
    let kind = match kind {
        Kind::InSlot if s.state.load(Ordering::Relaxed) == QUARANTINED => Kind::UseAfterRelease,
        Kind::Overflow | Kind::Underflow if s.state.load(Ordering::Relaxed) == QUARANTINED => {
            Kind::UseAfterRelease
        }
        k => k,
    };
    let buffer = s.data().as_ptr() as usize;
    let offset = addr as isize - buffer as isize;
    let max_len = s.max_len.load(Ordering::Relaxed) as usize;

    let mut out = Out::new();
    out.s("pagepool: ");
    out.s(match kind {
        Kind::Overflow => "heap-buffer-overflow",
        Kind::Underflow => "heap-buffer-underflow",
        Kind::UseAfterRelease => "use-after-release",
        Kind::InSlot => "fault inside a slot",
    });
    out.s(match write {
        Some(true) => ": WRITE at ",
        Some(false) => ": READ at ",
        None => ": access at ",
    });
    out.hex(addr);
    out.s(", offset ");
    out.int(offset as i64);
    out.s(" from buffer ");
    out.hex(buffer);
    match kind {
        Kind::Overflow => {
            out.s(" (");
            out.int(offset as i64 - slab.slot_bytes as i64);
            out.s(" bytes after the end of its ");
            out.int(slab.slot_bytes as i64);
            out.s("-byte slot)");
        }
        Kind::Underflow => {
            out.s(" (");
            out.int(-offset as i64);
            out.s(" byte(s) before it)");
        }
        _ => {}
    }
    out.s("\npagepool:   pool \"");
    out.s(&slab.pool);
    out.s("\", max_len ");
    out.int(max_len as i64);
    out.s(", slot ");
    out.int(slab.slot_bytes as i64);
    out.s(" bytes\npagepool:   allocated at ");
    match s.site() {
        Some(l) => out.location(l),
        None => out.s("(not tracked)"),
    }
    let thread = s.thread.load(Ordering::Relaxed);
    if kind == Kind::UseAfterRelease {
        out.s("\npagepool:   released at ");
        match s.release_site() {
            Some(l) => out.location(l),
            None => out.s("(by a drop; call PageBuffer::release to record the site)"),
        }
        if thread != 0 {
            out.s(" on thread #");
            out.int(thread as i64);
        }
    } else if thread != 0 {
        out.s(" by thread #");
        out.int(thread as i64);
    }
    out.s("\n");
    out.flush();
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Overflow,
    Underflow,
    UseAfterRelease,
    InSlot,
}

/// A fixed buffer for the report: no allocation in a signal handler.
struct Out {
    buf: [u8; 2048],
    len: usize,
}

impl Out {
    fn new() -> Self {
        Out {
            buf: [0; 2048],
            len: 0,
        }
    }

    fn s(&mut self, s: &str) {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
    }

    fn int(&mut self, v: i64) {
        let mut digits = [0u8; 20];
        let mut n = v.unsigned_abs();
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if v < 0 {
            self.s("-");
        }
        // SAFETY-free: ASCII digits are valid UTF-8.
        self.s(std::str::from_utf8(&digits[i..]).unwrap_or("?"));
    }

    fn hex(&mut self, v: usize) {
        let mut digits = [0u8; 16];
        let mut n = v;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b"0123456789abcdef"[n & 15];
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        self.s("0x");
        self.s(std::str::from_utf8(&digits[i..]).unwrap_or("?"));
    }

    fn location(&mut self, l: &std::panic::Location<'_>) {
        self.s(l.file());
        self.s(":");
        self.int(l.line() as i64);
        self.s(":");
        self.int(l.column() as i64);
    }

    fn flush(&self) {
        let mut done = 0;
        while done < self.len {
            // SAFETY: writing initialised bytes of our own buffer to fd 2;
            // write(2) is async-signal-safe.
            let n = unsafe { libc::write(2, self.buf[done..].as_ptr().cast(), self.len - done) };
            if n <= 0 {
                break;
            }
            done += n as usize;
        }
    }
}
