//! The fault handler reports on every thread, not only on the one that
//! installed it: threads from `std::thread::spawn` run the handler on the
//! small alternate signal stack std gives them (`max(SIGSTKSZ,
//! AT_MINSIGSTKSZ)` bytes, 8 KiB on x86-64), part of which the kernel's
//! signal frame takes. Each fault runs in a child process (`common`).

mod common;

use std::ptr::{self, write_volatile};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use common::{child_marker, in_child, no_fault, run_child, ChildOutput};
use pagepool::BufferPool;

/// The pool every case overflows a buffer of.
const POOL: &str = "threaded";
const MAX_LEN: usize = 1500;
/// `getauxval` key of the kernel's minimum signal stack (Linux 5.14+ on
/// x86-64; 0 where unknown). The `libc` crate does not define it.
const AT_MINSIGSTKSZ: libc::c_ulong = 51;
/// Bytes of stack the handler's whole path may use on top of the kernel's
/// signal frame, whatever the build: `handler_stack_use_is_bounded` checks
/// it, and it leaves most of std's 8 KiB to the frame and std's own handler.
const HANDLER_BUDGET: usize = 1536;

/// The alternate stack size std gives the threads it spawns.
fn std_alt_stack_size() -> usize {
    // SAFETY: `getauxval` only reads the auxiliary vector.
    let dynamic = unsafe { libc::getauxval(AT_MINSIGSTKSZ) } as usize;
    libc::SIGSTKSZ.max(dynamic)
}

/// The calling thread's alternate signal stack.
fn current_alt_stack() -> libc::stack_t {
    let mut current = std::mem::MaybeUninit::<libc::stack_t>::zeroed();
    // SAFETY: a null new stack only queries; `current` is writable.
    let rc = unsafe { libc::sigaltstack(ptr::null(), current.as_mut_ptr()) };
    assert_eq!(rc, 0, "sigaltstack query");
    // SAFETY: `sigaltstack` filled it in.
    unsafe { current.assume_init() }
}

/// Gives the calling thread an alternate stack of `size` bytes directly
/// above an inaccessible page, so a handler that needs
/// more faults in that page (and the process dies of SIGSEGV with no report)
/// instead of writing past the stack. Filled with `paint`; returns its base.
/// The mapping is never freed: the process dies of its fault.
fn set_alt_stack(size: usize, paint: u8) -> *mut u8 {
    let page = pagepool::page_size();
    let pages = size.div_ceil(page) * page;
    // SAFETY: a fresh private anonymous mapping, used only as this thread's
    // signal stack; the first page is made inaccessible below it.
    let base = unsafe {
        let p = libc::mmap(
            ptr::null_mut(),
            page + pages,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "alt stack mmap");
        assert_eq!(libc::mprotect(p, page, libc::PROT_NONE), 0, "guard page");
        p.cast::<u8>().add(page)
    };
    // SAFETY: `base .. base + size` lies in the writable part of the mapping.
    unsafe { ptr::write_bytes(base, paint, size) };
    let stack = libc::stack_t {
        ss_sp: base.cast(),
        ss_flags: 0,
        ss_size: size,
    };
    // SAFETY: `stack` describes the mapping above, which stays mapped.
    assert_eq!(unsafe { libc::sigaltstack(&stack, ptr::null_mut()) }, 0);
    base
}

/// In the child: allocate a buffer on the calling thread, print its
/// allocation line, then write one byte past its slot. Never returns.
fn overflow_here() -> ! {
    let pool = BufferPool::builder().name(POOL).build().unwrap();
    let (mut buf, line) = (pool.allocate_page_size_buffer(MAX_LEN).unwrap(), line!());
    child_marker(&format!("line={line}"));
    let end = buf.slot_len();
    // SAFETY (test): deliberately hits the guard page after the slot.
    unsafe { write_volatile(buf.as_mut_ptr().add(end), 1) };
    no_fault()
}

/// Runs `f` on a thread from `std::thread::spawn` and waits for it.
fn on_spawned_thread(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(f).join().unwrap();
}

/// The child died of SIGSEGV after the handler's full overflow report.
fn assert_report(out: &ChildOutput) {
    out.assert_sigsegv(&[]);
    let line: u32 = out.value("line");
    let site = format!("allocated at tests/fault_threads.rs:{line}:");
    let pool = format!("pool \"{POOL}\", max_len {MAX_LEN}");
    let mut needles = vec![
        "pagepool: heap-buffer-overflow",
        "0 bytes after the end of its 4096-byte slot",
        &pool,
        &site,
        " by thread #",
    ];
    if cfg!(target_arch = "x86_64") {
        needles.push(": WRITE at ");
    }
    for n in needles {
        assert!(
            out.stderr.contains(n),
            "stderr lacks {n:?}:\n{}\nstdout:\n{}",
            out.stderr,
            out.stdout
        );
    }
}

/// A thread spawned after the handler was installed, on std's alt stack.
#[test]
fn a_fault_on_a_thread_spawned_after_install_is_reported() {
    const TEST: &str = "a_fault_on_a_thread_spawned_after_install_is_reported";
    if in_child(TEST) {
        pagepool::install_fault_handler().unwrap();
        on_spawned_thread(|| {
            let own = current_alt_stack();
            assert_eq!(own.ss_flags & libc::SS_DISABLE, 0, "std gave no alt stack");
            assert_eq!(own.ss_size, std_alt_stack_size(), "std's alt stack size");
            overflow_here()
        });
        no_fault();
    }
    assert_report(&run_child(TEST, TEST));
}

/// A thread that was already running when the handler was installed.
#[test]
fn a_fault_on_a_thread_spawned_before_install_is_reported() {
    const TEST: &str = "a_fault_on_a_thread_spawned_before_install_is_reported";
    if in_child(TEST) {
        let (go, wait) = mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            wait.recv().unwrap();
            overflow_here()
        });
        pagepool::install_fault_handler().unwrap();
        go.send(()).unwrap();
        t.join().unwrap();
        no_fault();
    }
    assert_report(&run_child(TEST, TEST));
}

/// A thread whose alt stack we set ourselves to std's size, with a guard
/// page below it: the report fits what std gives, not only what it gives
/// on this machine by luck of placement.
#[test]
fn a_fault_on_a_std_sized_alt_stack_is_reported() {
    const TEST: &str = "a_fault_on_a_std_sized_alt_stack_is_reported";
    if in_child(TEST) {
        pagepool::install_fault_handler().unwrap();
        on_spawned_thread(|| {
            set_alt_stack(std_alt_stack_size(), 0);
            overflow_here()
        });
        no_fault();
    }
    assert_report(&run_child(TEST, TEST));
}

/// The tightest alt stack: the kernel's minimum for its signal frame
/// (`AT_MINSIGSTKSZ`, at least `MINSIGSTKSZ`) plus `HANDLER_BUDGET`, with
/// std's own handler chained after pagepool's on it.
#[test]
fn a_fault_on_a_minimal_alt_stack_is_reported() {
    const TEST: &str = "a_fault_on_a_minimal_alt_stack_is_reported";
    if in_child(TEST) {
        pagepool::install_fault_handler().unwrap();
        on_spawned_thread(|| {
            // SAFETY: `getauxval` only reads the auxiliary vector.
            let kernel = unsafe { libc::getauxval(AT_MINSIGSTKSZ) } as usize;
            set_alt_stack(kernel.max(libc::MINSIGSTKSZ) + HANDLER_BUDGET, 0);
            overflow_here()
        });
        no_fault();
    }
    assert_report(&run_child(TEST, TEST));
}

/// The byte the measured alt stack is painted with.
const PAINT: u8 = 0xa5;
/// The measured alt stack's base and size, set by the faulting thread.
static MEASURED_BASE: AtomicUsize = AtomicUsize::new(0);
static MEASURED_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The handler before pagepool's: runs after its report, on the same alt
/// stack, and prints how far below the kernel's signal frame (which starts
/// at `ctx`) the paint was touched: the stack pagepool's handler used, or
/// this one's own frame if deeper (`chained_at` tells, printed after the
/// scan so its frames do not count).
extern "C" fn measure(_sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let here = 0u8;
    let base = MEASURED_BASE.load(Ordering::Relaxed);
    let top = base + MEASURED_SIZE.load(Ordering::Relaxed);
    let mut low = base;
    // SAFETY: `base .. top` is the painted alt stack we run on.
    while low < top && unsafe { ptr::read_volatile(low as *const u8) } == PAINT {
        low += 1;
    }
    let ctx = ctx as usize;
    print_value(b"handler_stack=", ctx.saturating_sub(low));
    print_value(
        b"chained_at=",
        ctx.saturating_sub(&here as *const u8 as usize),
    );
    print_value(b"signal_frame=", top.saturating_sub(ctx));
}

/// Writes `key`, `v` in decimal and a newline to stdout with `write(2)`
/// (async-signal-safe, no formatting machinery).
fn print_value(key: &[u8], mut v: usize) {
    let mut digits = [b'\n'; 21];
    let mut i = 20;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // SAFETY: write(2) of our own initialised bytes.
    unsafe {
        libc::write(1, key.as_ptr().cast(), key.len());
        libc::write(1, digits[i..].as_ptr().cast(), 21 - i);
    }
}

/// Measures the handler's stack use on a spawned thread by painting its
/// alt stack, and holds it to `HANDLER_BUDGET`.
#[test]
fn handler_stack_use_is_bounded() {
    const TEST: &str = "handler_stack_use_is_bounded";
    if in_child(TEST) {
        // SAFETY: a SA_SIGINFO action with an empty mask for our `measure`.
        unsafe {
            let mut action = std::mem::MaybeUninit::<libc::sigaction>::zeroed().assume_init();
            action.sa_sigaction = measure as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGSEGV, &action, ptr::null_mut()), 0);
        }
        pagepool::install_fault_handler().unwrap();
        on_spawned_thread(|| {
            const SIZE: usize = 64 * 1024;
            let base = set_alt_stack(SIZE, PAINT);
            MEASURED_BASE.store(base as usize, Ordering::Relaxed);
            MEASURED_SIZE.store(SIZE, Ordering::Relaxed);
            overflow_here()
        });
        no_fault();
    }
    let out = run_child(TEST, TEST);
    assert_report(&out);
    let used: usize = out.value("handler_stack");
    let chained: usize = out.value("chained_at");
    let frame: usize = out.value("signal_frame");
    println!("handler_stack={used} (budget {HANDLER_BUDGET}), chained_at={chained}, signal_frame={frame}");
    assert!(
        used <= HANDLER_BUDGET,
        "the handler used {used} bytes of alt stack, over {HANDLER_BUDGET}"
    );
}
