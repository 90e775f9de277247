//! pagepool's fault handler chains to the handlers around it without giving
//! up its own disposition: a recovering handler installed before it (a
//! lazy-mapping runtime, a GC barrier) sees its faults and the program goes
//! on, and a guard-page overflow afterwards is still reported; a handler
//! installed after it that chains to it gets the same; the previous
//! handler's flags (`SA_SIGINFO`, `SA_RESETHAND`, its `sa_mask`) and the
//! `SIG_DFL`/`SIG_IGN` dispositions act as the kernel would. Each case runs
//! in a child process (`common`).

mod common;

use std::ptr::{self, read_volatile, write_volatile};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use common::{child_marker, in_child, no_fault, run_child, ChildOutput};
use pagepool::BufferPool;

/// The pool whose buffer the cases overflow.
const POOL: &str = "chained";
const MAX_LEN: usize = 1500;
/// Pages of each foreign region.
const PAGES: usize = 8;
/// Written (with `write(2)`) by the one-shot handler each time it runs.
const ONE_SHOT_RAN: &str = "ONE-SHOT HANDLER RAN";

/// A run of `PROT_NONE` pages that a test handler makes accessible when a
/// fault lands in it: the foreign faults pagepool does not own.
struct Region(AtomicUsize);

impl Region {
    const fn new() -> Self {
        Region(AtomicUsize::new(0))
    }

    /// Maps the region inaccessible (once per child).
    fn map(&self) {
        // SAFETY: a fresh private anonymous mapping, only ever touched
        // through `touch` and unprotected by the test handlers.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                PAGES * pagepool::page_size(),
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "region mmap");
        self.0.store(p as usize, Ordering::Release);
    }

    /// The address of page `i`.
    fn page(&self, i: usize) -> usize {
        assert!(i < PAGES);
        self.0.load(Ordering::Acquire) + i * pagepool::page_size()
    }

    fn contains(&self, addr: usize) -> bool {
        let base = self.0.load(Ordering::Acquire);
        base != 0 && (base..base + PAGES * pagepool::page_size()).contains(&addr)
    }

    /// Makes the page holding `addr` readable and writable (in a handler).
    fn unprotect(&self, addr: usize) {
        let page = addr & !(pagepool::page_size() - 1);
        // SAFETY: `page` is a page of this region's mapping; `mprotect` is
        // async-signal-safe.
        let rc = unsafe {
            libc::mprotect(
                page as *mut libc::c_void,
                pagepool::page_size(),
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        if rc != 0 {
            abort_with(b"test handler: mprotect failed\n");
        }
    }

    /// Makes the whole region readable and writable (in a handler).
    fn unprotect_all(&self) {
        for i in 0..PAGES {
            self.unprotect(self.page(i));
        }
    }
}

/// Pages only the handler installed before pagepool's recovers.
static BEFORE_REGION: Region = Region::new();
/// Pages only the handler installed after pagepool's recovers.
static AFTER_REGION: Region = Region::new();
static BEFORE_CALLS: AtomicUsize = AtomicUsize::new(0);
static AFTER_CALLS: AtomicUsize = AtomicUsize::new(0);
/// Cleared when the before handler runs without `SIGUSR1` blocked, although
/// its `sa_mask` holds it.
static BEFORE_MASK_OK: AtomicBool = AtomicBool::new(true);
/// The disposition the after handler found when it was installed
/// (pagepool's), which it chains to.
static AFTER_PREVIOUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(ptr::null_mut());

/// Writes `msg` to stderr and aborts (in a handler).
fn abort_with(msg: &[u8]) -> ! {
    // SAFETY: write(2) of our own bytes, then abort; both async-signal-safe.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::abort()
    }
}

/// Sets `SIGSEGV` back to its default action (in a handler).
fn reset_to_default() {
    // SAFETY: a zeroed action is `SIG_DFL` with an empty mask.
    unsafe {
        let action = std::mem::MaybeUninit::<libc::sigaction>::zeroed().assume_init();
        libc::sigaction(libc::SIGSEGV, &action, ptr::null_mut());
    }
}

/// Whether `sig` is blocked on the calling thread.
fn blocked(sig: libc::c_int) -> bool {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: a null new set only queries the mask into `set`.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, ptr::null(), set.as_mut_ptr());
        libc::sigismember(set.as_ptr(), sig) == 1
    }
}

/// A recovering runtime's handler installed before pagepool's: makes its own
/// pages accessible and returns; anything else it does not know, so it sets
/// the default action and returns (the access faults again and kills).
extern "C" fn before(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: a SIGSEGV `siginfo_t` from the kernel (through pagepool).
    let addr = unsafe { (*info).si_addr() } as usize;
    if sig == libc::SIGSEGV && BEFORE_REGION.contains(addr) {
        if !blocked(libc::SIGUSR1) {
            BEFORE_MASK_OK.store(false, Ordering::Relaxed);
        }
        BEFORE_REGION.unprotect(addr);
        BEFORE_CALLS.fetch_add(1, Ordering::Relaxed);
        return;
    }
    reset_to_default();
}

/// A recovering handler installed after pagepool's: recovers its own pages,
/// and calls the handler it found (pagepool's) for every other fault.
extern "C" fn after(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: a SIGSEGV `siginfo_t` from the kernel.
    let addr = unsafe { (*info).si_addr() } as usize;
    if AFTER_REGION.contains(addr) {
        AFTER_REGION.unprotect(addr);
        AFTER_CALLS.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let previous = AFTER_PREVIOUS.load(Ordering::Acquire);
    // SAFETY: `previous` was leaked at install and is never freed; its
    // handler is pagepool's, an SA_SIGINFO function, called with the
    // kernel's arguments.
    unsafe {
        if previous.is_null() || (*previous).sa_flags & libc::SA_SIGINFO == 0 {
            abort_with(b"after: no SA_SIGINFO handler to chain to\n");
        }
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            std::mem::transmute((*previous).sa_sigaction);
        f(sig, info, ctx);
    }
}

/// Called for a foreign fault by the one-shot (`SA_RESETHAND`) handler: it
/// cannot see the address (no `SA_SIGINFO`), so it unprotects all its pages.
extern "C" fn one_shot(_sig: libc::c_int) {
    BEFORE_REGION.unprotect_all();
    BEFORE_CALLS.fetch_add(1, Ordering::Relaxed);
    let msg = b"\nONE-SHOT HANDLER RAN\n";
    // SAFETY: write(2) of a static string.
    unsafe { libc::write(1, msg.as_ptr().cast(), msg.len()) };
}

/// Installs `handler` for SIGSEGV with `flags` and `mask`, returning the
/// action it replaced.
fn install(handler: usize, flags: libc::c_int, mask: &[libc::c_int]) -> libc::sigaction {
    // SAFETY: a zeroed action with the handler, flags and mask we set; the
    // old one is written into `old`.
    unsafe {
        let mut action = std::mem::MaybeUninit::<libc::sigaction>::zeroed().assume_init();
        action.sa_sigaction = handler;
        action.sa_flags = flags;
        libc::sigemptyset(&mut action.sa_mask);
        for &s in mask {
            libc::sigaddset(&mut action.sa_mask, s);
        }
        let mut old = std::mem::MaybeUninit::<libc::sigaction>::zeroed().assume_init();
        assert_eq!(libc::sigaction(libc::SIGSEGV, &action, &mut old), 0);
        old
    }
}

/// The handler SIGSEGV is disposed to now.
fn current_handler() -> usize {
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only queries.
    unsafe {
        assert_eq!(
            libc::sigaction(libc::SIGSEGV, ptr::null(), old.as_mut_ptr()),
            0
        );
        old.assume_init().sa_sigaction
    }
}

fn install_before() {
    BEFORE_REGION.map();
    install(
        before as *const () as usize,
        libc::SA_SIGINFO | libc::SA_ONSTACK,
        &[libc::SIGUSR1],
    );
}

fn install_after() {
    AFTER_REGION.map();
    let old = install(
        after as *const () as usize,
        libc::SA_SIGINFO | libc::SA_ONSTACK,
        &[],
    );
    AFTER_PREVIOUS.store(Box::into_raw(Box::new(old)), Ordering::Release);
}

/// Writes to and reads back the byte at `addr`: a fault there must be
/// recovered by some handler for this to return.
fn touch(addr: usize) {
    // SAFETY (test): `addr` is in a test region; the handler makes its page
    // accessible on the fault and the access runs again.
    unsafe {
        write_volatile(addr as *mut u8, 0x5a);
        assert_eq!(read_volatile(addr as *const u8), 0x5a);
    }
}

/// Allocates a buffer, prints its allocation line, and writes one byte past
/// its slot, into the guard page. Never returns.
fn overflow() -> ! {
    let pool = BufferPool::builder().name(POOL).build().unwrap();
    let (mut buf, line) = (pool.allocate_page_size_buffer(MAX_LEN).unwrap(), line!());
    child_marker(&format!("line={line}"));
    child_marker("OVERFLOWING");
    let end = buf.slot_len();
    // SAFETY (test): deliberately hits the guard page after the slot.
    unsafe { write_volatile(buf.as_mut_ptr().add(end), 1) };
    no_fault()
}

/// The child died of SIGSEGV with pagepool's overflow report, after
/// printing `markers`.
fn assert_report(out: &ChildOutput, markers: &[&str]) {
    out.assert_sigsegv(markers);
    out.assert_markers(&["OVERFLOWING"]);
    let line: u32 = out.value("line");
    let site = format!("allocated at tests/fault_chain.rs:{line}:");
    let pool = format!("pool \"{POOL}\", max_len {MAX_LEN}");
    for n in ["pagepool: heap-buffer-overflow", &pool, &site] {
        assert!(
            out.stderr.contains(n),
            "stderr lacks {n:?}:\n{}\nstdout:\n{}",
            out.stderr,
            out.stdout
        );
    }
}

/// The child died of SIGSEGV without a pagepool report.
fn assert_silent_death(out: &ChildOutput, markers: &[&str]) {
    out.assert_sigsegv(markers);
    assert!(
        !out.stderr.contains("pagepool:"),
        "a foreign fault was reported as pagepool's:\n{}",
        out.stderr
    );
}

/// (a) A recovering handler installed before pagepool's recovers a foreign
/// fault, with its `sa_mask` blocked while it runs; pagepool's stays the
/// disposition, a second install is fine, and an overflow is reported.
#[test]
fn a_handler_before_recovers_and_overflow_is_still_reported() {
    const TEST: &str = "a_handler_before_recovers_and_overflow_is_still_reported";
    if in_child(TEST) {
        install_before();
        pagepool::install_fault_handler().unwrap();
        let ours = current_handler();
        touch(BEFORE_REGION.page(0));
        assert_eq!(BEFORE_CALLS.load(Ordering::Relaxed), 1);
        assert!(
            BEFORE_MASK_OK.load(Ordering::Relaxed),
            "sa_mask not blocked"
        );
        assert!(!blocked(libc::SIGUSR1), "sa_mask left blocked");
        assert_eq!(current_handler(), ours, "pagepool gave up its disposition");
        child_marker("RECOVERED");
        pagepool::install_fault_handler().unwrap();
        assert_eq!(current_handler(), ours);
        child_marker("REINSTALLED");
        overflow();
    }
    assert_report(&run_child(TEST, TEST), &["RECOVERED", "REINSTALLED"]);
}

/// (b) The same with several foreign faults in a row, reads and writes.
#[test]
fn many_foreign_faults_in_a_row_keep_the_handler() {
    const TEST: &str = "many_foreign_faults_in_a_row_keep_the_handler";
    if in_child(TEST) {
        install_before();
        pagepool::install_fault_handler().unwrap();
        let ours = current_handler();
        for i in 0..PAGES {
            if i % 2 == 0 {
                touch(BEFORE_REGION.page(i));
            } else {
                // SAFETY (test): a read fault the before handler recovers.
                let byte = unsafe { read_volatile(BEFORE_REGION.page(i) as *const u8) };
                assert_eq!(byte, 0);
            }
            assert_eq!(current_handler(), ours, "after foreign fault {i}");
        }
        // And from a thread std spawned, on its small alternate stack.
        std::thread::spawn(|| {
            let page = BEFORE_REGION.page(0) as *mut libc::c_void;
            // SAFETY (test): `mprotect` of a page of the test region.
            let rc = unsafe { libc::mprotect(page, pagepool::page_size(), libc::PROT_NONE) };
            assert_eq!(rc, 0);
            touch(BEFORE_REGION.page(0));
        })
        .join()
        .unwrap();
        assert_eq!(BEFORE_CALLS.load(Ordering::Relaxed), PAGES + 1);
        assert_eq!(current_handler(), ours, "after the thread's fault");
        child_marker("RECOVERED ALL");
        pagepool::install_fault_handler().unwrap();
        overflow();
    }
    assert_report(&run_child(TEST, TEST), &["RECOVERED ALL"]);
}

/// (c) A recovering handler installed after pagepool's, chaining to it:
/// its own faults recover, faults of the handler before pagepool's reach
/// that one through both, a repeated install refuses to stack on top of
/// it, and an overflow is still reported through the chain.
#[test]
fn a_handler_after_chains_to_pagepool() {
    const TEST: &str = "a_handler_after_chains_to_pagepool";
    if in_child(TEST) {
        install_before();
        pagepool::install_fault_handler().unwrap();
        install_after();
        touch(AFTER_REGION.page(0));
        touch(BEFORE_REGION.page(0));
        touch(AFTER_REGION.page(1));
        touch(BEFORE_REGION.page(1));
        touch(AFTER_REGION.page(2));
        assert_eq!(AFTER_CALLS.load(Ordering::Relaxed), 3);
        assert_eq!(BEFORE_CALLS.load(Ordering::Relaxed), 2);
        assert_eq!(current_handler(), after as *const () as usize);
        child_marker("RECOVERED BOTH");
        let again = pagepool::install_fault_handler();
        assert!(
            again.is_err(),
            "install on top of another handler: {again:?}"
        );
        assert_eq!(current_handler(), after as *const () as usize);
        child_marker("REFUSED");
        overflow();
    }
    assert_report(&run_child(TEST, TEST), &["RECOVERED BOTH", "REFUSED"]);
}

/// Installs the one-shot handler (`SA_RESETHAND`, a plain `sa_handler`)
/// and pagepool's over it, and has it recover one foreign fault.
fn one_shot_then_pagepool() {
    BEFORE_REGION.map();
    install(one_shot as *const () as usize, libc::SA_RESETHAND, &[]);
    pagepool::install_fault_handler().unwrap();
    touch(BEFORE_REGION.page(0));
    assert_eq!(BEFORE_CALLS.load(Ordering::Relaxed), 1);
    child_marker("RECOVERED ONCE");
}

/// (d) A one-shot previous handler runs once; the next foreign fault gets
/// the default action, as the kernel would have given it.
#[test]
fn a_one_shot_handler_runs_once_then_default() {
    const TEST: &str = "a_one_shot_handler_runs_once_then_default";
    if in_child(TEST) {
        one_shot_then_pagepool();
        // SAFETY (test): the region was mapped PROT_NONE; this faults.
        unsafe {
            libc::mprotect(
                BEFORE_REGION.page(0) as *mut libc::c_void,
                PAGES * pagepool::page_size(),
                libc::PROT_NONE,
            )
        };
        touch(BEFORE_REGION.page(1));
        no_fault();
    }
    let out = run_child(TEST, TEST);
    assert_silent_death(&out, &["RECOVERED ONCE"]);
    let runs = out.stdout.lines().filter(|l| *l == ONE_SHOT_RAN).count();
    assert_eq!(
        runs, 1,
        "the one-shot handler ran {runs} times\n{}",
        out.stdout
    );
}

/// (d) After the one-shot handler ran, pagepool's still reports overflows.
#[test]
fn after_a_one_shot_handler_overflow_is_reported() {
    const TEST: &str = "after_a_one_shot_handler_overflow_is_reported";
    if in_child(TEST) {
        one_shot_then_pagepool();
        overflow();
    }
    let out = run_child(TEST, TEST);
    assert_report(&out, &["RECOVERED ONCE"]);
    let runs = out.stdout.lines().filter(|l| *l == ONE_SHOT_RAN).count();
    assert_eq!(
        runs, 1,
        "the one-shot handler ran {runs} times\n{}",
        out.stdout
    );
}

/// (e) With `SIG_DFL` (or `SIG_IGN`) before pagepool's, a foreign fault
/// kills the process by SIGSEGV and pagepool reports nothing.
fn foreign_fault_dies(previous: libc::sighandler_t) {
    BEFORE_REGION.map();
    install(previous, 0, &[]);
    pagepool::install_fault_handler().unwrap();
    child_marker("FAULTING");
    touch(BEFORE_REGION.page(0));
    no_fault();
}

#[test]
fn with_sig_dfl_before_a_foreign_fault_dies_unreported() {
    const TEST: &str = "with_sig_dfl_before_a_foreign_fault_dies_unreported";
    if in_child(TEST) {
        foreign_fault_dies(libc::SIG_DFL);
    }
    assert_silent_death(&run_child(TEST, TEST), &["FAULTING"]);
}

#[test]
fn with_sig_ign_before_a_foreign_fault_dies_unreported() {
    const TEST: &str = "with_sig_ign_before_a_foreign_fault_dies_unreported";
    if in_child(TEST) {
        foreign_fault_dies(libc::SIG_IGN);
    }
    assert_silent_death(&run_child(TEST, TEST), &["FAULTING"]);
}

/// A SIGSEGV sent with `raise` (not a fault) while `SIG_IGN` was the
/// disposition before pagepool's is ignored, as the kernel would; with
/// `SIG_DFL` before, it kills.
#[test]
fn a_sent_sigsegv_is_ignored_when_it_was_ignored_before() {
    const TEST: &str = "a_sent_sigsegv_is_ignored_when_it_was_ignored_before";
    if in_child(TEST) {
        install(libc::SIG_IGN, 0, &[]);
        pagepool::install_fault_handler().unwrap();
        // SAFETY: raise(3) of a signal whose handler returns.
        assert_eq!(unsafe { libc::raise(libc::SIGSEGV) }, 0);
        child_marker("SURVIVED");
        return;
    }
    run_child(TEST, TEST).assert_success(&["SURVIVED"]);
}

#[test]
fn a_sent_sigsegv_kills_when_the_default_was_before() {
    const TEST: &str = "a_sent_sigsegv_kills_when_the_default_was_before";
    if in_child(TEST) {
        install(libc::SIG_DFL, 0, &[]);
        pagepool::install_fault_handler().unwrap();
        child_marker("RAISING");
        // SAFETY: raise(3); the process is meant to die of it.
        unsafe { libc::raise(libc::SIGSEGV) };
        no_fault();
    }
    assert_silent_death(&run_child(TEST, TEST), &["RAISING"]);
}

/// Installing again after the disposition went back to `SIG_DFL` puts
/// pagepool's handler back.
#[test]
fn installing_again_over_the_default_reports_again() {
    const TEST: &str = "installing_again_over_the_default_reports_again";
    if in_child(TEST) {
        pagepool::install_fault_handler().unwrap();
        let ours = current_handler();
        install(libc::SIG_DFL, 0, &[]);
        pagepool::install_fault_handler().unwrap();
        assert_eq!(current_handler(), ours, "not installed again");
        child_marker("REINSTALLED");
        overflow();
    }
    assert_report(&run_child(TEST, TEST), &["REINSTALLED"]);
}
