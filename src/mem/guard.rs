//! Guard pages: how they are placed, and the process-wide budget they draw on.
//!
//! Two mechanisms:
//!
//! * `madvise(MADV_GUARD_INSTALL)` (Linux 6.13+) marks pages so any access
//!   faults, *without* splitting the mapping into separate kernel memory
//!   areas (VMAs). Guards placed this way are free of any budget.
//! * `mprotect(PROT_NONE)` (through `region::protect`) works everywhere but
//!   splits the mapping: an interior guard page adds two VMAs. Linux allows
//!   `vm.max_map_count` (65,530 by default) per process, and *every* mapping in
//!   the process (malloc arenas, thread stacks, files) counts, so pagepool
//!   spends at most half of that limit on guards, process-wide, and stops
//!   placing `mprotect` guards beyond it.
//!
//! A guard that cannot be placed never fails an allocation: the slot is served
//! with a canary written where the guard would be (checked on release), the
//! pool counts it in [`PoolStats::unguarded_slots`](crate::PoolStats), and one
//! `tracing` warning per process says so.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::config::GuardMechanism;

/// `MADV_GUARD_INSTALL` from `<linux/mman.h>` (Linux 6.13); `libc` does not
/// export it yet.
#[cfg(target_os = "linux")]
const MADV_GUARD_INSTALL: libc::c_int = 102;

/// Whether this kernel accepts `MADV_GUARD_INSTALL`: 0 unknown, 1 yes, 2 no.
static MADVISE_GUARDS: AtomicU8 = AtomicU8::new(0);
/// Kernel memory areas that pagepool's `mprotect` guards have added, all pools.
static PROTECT_AREAS: AtomicUsize = AtomicUsize::new(0);
/// Set once the first "budget exhausted" warning has been emitted.
static WARNED: AtomicBool = AtomicBool::new(false);

/// How a guard page ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placed {
    /// A guard marker; costs no memory area.
    Marker,
    /// An `mprotect`ed page; costs `areas` kernel memory areas.
    Protected { areas: usize },
    /// No guard could be placed; the page stays readable and writable.
    Missing,
}

/// The most memory areas pagepool's `mprotect` guards may add, process-wide:
/// half of `vm.max_map_count`.
fn protect_budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        let limit = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(65_530);
        limit / 2
    })
}

/// Gives back `areas` memory areas when a slab with `mprotect` guards is unmapped.
pub(crate) fn return_areas(areas: usize) {
    if areas > 0 {
        PROTECT_AREAS.fetch_sub(areas, Ordering::Relaxed);
    }
}

/// Makes the page at `addr` inaccessible.
///
/// `areas` is what an `mprotect` guard here costs: 1 at a mapping's edge, 2
/// inside it.
///
/// # Safety
/// - `addr` is page-aligned and `addr..addr + len` lies inside one live
///   mapping that this crate owns;
/// - nothing holds a reference into that range, and nothing will access it
///   until the mapping is unmapped.
pub(crate) unsafe fn place(
    addr: *mut u8,
    len: usize,
    mechanism: GuardMechanism,
    areas: usize,
) -> Placed {
    if mechanism == GuardMechanism::Auto && MADVISE_GUARDS.load(Ordering::Relaxed) != 2 {
        // SAFETY: the caller guarantees the range is ours and unused; a guard
        // marker only changes how later accesses to it behave.
        match unsafe { madvise_guard(addr, len) } {
            Ok(()) => {
                MADVISE_GUARDS.store(1, Ordering::Relaxed);
                return Placed::Marker;
            }
            // EINVAL: the kernel predates MADV_GUARD_INSTALL. Remember that,
            // and fall back for good.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                MADVISE_GUARDS.store(2, Ordering::Relaxed);
            }
            // Anything else (ENOMEM, EAGAIN) is about this call: fall back
            // for this guard only.
            Err(_) => {}
        }
    }
    let budget = protect_budget();
    if PROTECT_AREAS.fetch_add(areas, Ordering::Relaxed) + areas > budget {
        PROTECT_AREAS.fetch_sub(areas, Ordering::Relaxed);
        warn_exhausted("the process-wide budget of memory areas for mprotect guards is spent");
        return Placed::Missing;
    }
    // SAFETY: as above; the range is ours, page-aligned and untouched.
    match unsafe { region::protect(addr.cast_const(), len, region::Protection::NONE) } {
        Ok(()) => Placed::Protected { areas },
        Err(_) => {
            PROTECT_AREAS.fetch_sub(areas, Ordering::Relaxed);
            warn_exhausted("mprotect refused a guard page (vm.max_map_count reached?)");
            Placed::Missing
        }
    }
}

/// `madvise(MADV_GUARD_INSTALL)` on Linux; unsupported elsewhere.
///
/// # Safety
/// As for [`place`].
#[cfg(target_os = "linux")]
unsafe fn madvise_guard(addr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: the caller guarantees `addr..addr+len` is a page-aligned range
    // of a live private anonymous mapping that nothing accesses.
    let rc = unsafe { libc::madvise(addr.cast(), len, MADV_GUARD_INSTALL) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
unsafe fn madvise_guard(_addr: *mut u8, _len: usize) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// How a quarantined slot was sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sealed {
    /// Guard markers over the whole slot (its contents are discarded).
    Marker,
    /// `mprotect(PROT_NONE)`; costs two memory areas until unsealed.
    Protected,
}

/// `MADV_GUARD_REMOVE` from `<linux/mman.h>` (Linux 6.13).
#[cfg(target_os = "linux")]
const MADV_GUARD_REMOVE: libc::c_int = 103;

/// Makes a whole slot inaccessible (quarantine); `None` when neither
/// mechanism is available (the budget is spent).
///
/// # Safety
/// `addr..addr + len` is a page-aligned range of a live mapping of ours that
/// no one accesses until [`unseal`] (any access is a bug that should fault).
pub(crate) unsafe fn seal(addr: *mut u8, len: usize, mechanism: GuardMechanism) -> Option<Sealed> {
    // SAFETY: forwarded from the caller; an interior range costs two areas.
    match unsafe { place(addr, len, mechanism, 2) } {
        Placed::Marker => Some(Sealed::Marker),
        Placed::Protected { .. } => Some(Sealed::Protected),
        Placed::Missing => None,
    }
}

/// Makes a sealed slot accessible again. With guard markers the pages read
/// as zero afterwards.
///
/// # Safety
/// The range was sealed by [`seal`] with the result `sealed`, and the mapping
/// is still live.
pub(crate) unsafe fn unseal(addr: *mut u8, len: usize, sealed: Sealed) {
    match sealed {
        Sealed::Marker => {
            #[cfg(target_os = "linux")]
            // SAFETY: removing guard markers from our own range only makes it
            // accessible again (zero-filled on first touch).
            unsafe {
                libc::madvise(addr.cast(), len, MADV_GUARD_REMOVE);
            }
        }
        Sealed::Protected => {
            // SAFETY: the range is ours and was readable and writable before
            // it was sealed.
            let _ =
                unsafe { region::protect(addr.cast_const(), len, region::Protection::READ_WRITE) };
            return_areas(2);
        }
    }
}

/// Says once per process that guards are running out.
#[cold]
fn warn_exhausted(why: &str) {
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            target: "pagepool",
            "{why}; new slots are served without guard pages (a canary guards their edges instead) \
             and counted in PoolStats::unguarded_slots"
        );
    }
}

/// Whether placing guards with `MADV_GUARD_INSTALL` has worked in this process
/// (`None` before the first guarded slab is mapped).
pub fn guard_markers_supported() -> Option<bool> {
    match MADVISE_GUARDS.load(Ordering::Relaxed) {
        1 => Some(true),
        2 => Some(false),
        _ => None,
    }
}
