//! The fault report: where in a slab the fault hit (`locate`), what kind
//! of error that makes (`classify`), and the text (`format`), written to
//! fd 2 through a static buffer with no allocation and no lock
//! (async-signal-safe), using little stack (see `design.rs`).

use std::cell::UnsafeCell;
use std::panic::Location;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{self, Relaxed};

use super::table::{self, SlabInfo};
use crate::mem::slot::{Slot, SlotState};
use crate::site::{Decoded, Site};

/// What a fault in a slab was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// In the guard page after a live slot.
    Overflow,
    /// In the guard page before a live slot.
    Underflow,
    /// In or next to a quarantined slot.
    UseAfterRelease,
    /// Inside a slot that is not quarantined (an access the kernel refused
    /// for another reason).
    InSlot,
}

/// Writes the report for a fault at `addr` (`write`: whether it was a
/// write, where the CPU says); returns whether it was in one of our slabs.
pub(super) fn report(addr: usize, write: Option<bool>) -> bool {
    let Some(slab) = table::find(addr) else {
        return false;
    };
    let Some((index, kind)) = locate(slab, addr - slab.base) else {
        return false;
    };
    let Some(s) = slab.slot(index) else {
        return false;
    };
    let mut out = Out::new(2);
    format(&mut out, slab, s, classify(kind, s), addr, write);
    drop(out);
    true
}

/// The slot nearest offset `off` of `slab` and how the fault relates to
/// it: in its guard page after it (overflow), before it (underflow), or
/// inside it. A guard page between two slots belongs to the live one, or,
/// if both or neither are live, to the nearer.
fn locate(slab: &SlabInfo, off: usize) -> Option<(usize, Kind)> {
    if slab.packed {
        // Guards only at the two ends: before slot 0, after the last slot.
        return if off < slab.guard {
            Some((0, Kind::Underflow))
        } else if off >= slab.len - slab.guard {
            Some((slab.slots().saturating_sub(1), Kind::Overflow))
        } else {
            let inner = off.checked_sub(slab.lead)?;
            Some((inner / slab.stride, Kind::InSlot))
        };
    }
    let (g, within) = (off / slab.stride, off % slab.stride);
    if within >= slab.lead {
        return Some((g, Kind::InSlot));
    }
    // A guard page: after slot g-1 (overflow) and before slot g (underflow).
    let before = g.checked_sub(1).and_then(|i| slab.slot(i));
    let after = slab.slot(g);
    let nearer_before = within < slab.lead / 2;
    match (before, after) {
        (Some(b), Some(a)) if b.is_live() != a.is_live() => Some(if b.is_live() {
            (g - 1, Kind::Overflow)
        } else {
            (g, Kind::Underflow)
        }),
        (Some(_), Some(_)) if nearer_before => Some((g - 1, Kind::Overflow)),
        (Some(_), None) => Some((g - 1, Kind::Overflow)),
        (_, Some(_)) => Some((g, Kind::Underflow)),
        (None, None) => None,
    }
}

/// Any fault at or next to a quarantined slot is a use after release.
fn classify(kind: Kind, s: &Slot) -> Kind {
    if s.state.load() == SlotState::Quarantined {
        Kind::UseAfterRelease
    } else {
        kind
    }
}

/// The report's text.
fn format(out: &mut Out, slab: &SlabInfo, s: &Slot, kind: Kind, addr: usize, write: Option<bool>) {
    let buffer = s.data().as_ptr() as usize;
    let offset = addr as isize - buffer as isize;
    let max_len = s.max_len.load(Relaxed) as usize;
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
    match s.site().get() {
        Some(Decoded::Rust(l)) => out.location(l),
        Some(Decoded::C(c)) => out.c_site(c),
        None => out.s("(not tracked)"),
    }
    let thread = s.thread.load(Relaxed);
    if kind == Kind::UseAfterRelease {
        out.s("\npagepool:   released at ");
        match s.release_site().get() {
            Some(Decoded::Rust(l)) => out.location(l),
            Some(Decoded::C(c)) => out.c_site(c),
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
}

/// Bytes of the shared report buffer.
const BUF: usize = 2048;

/// The one report buffer, static so the handler keeps its stack small (it
/// runs on whatever alternate signal stack the faulting thread has; std's
/// leaves a few KiB after the kernel's signal frame).
struct Shared {
    /// Set by the thread whose report holds `bytes`.
    busy: AtomicBool,
    bytes: UnsafeCell<[u8; BUF]>,
}

// SAFETY: `bytes` is only reached through `Out::new`, by the one thread that
// swapped `busy` from false to true, until that `Out`'s drop clears it.
unsafe impl Sync for Shared {}

static SHARED: Shared = Shared {
    busy: AtomicBool::new(false),
    bytes: UnsafeCell::new([0; BUF]),
};

/// Where the report goes: into the shared buffer (written with one
/// `write(2)` at the end, or whenever it fills) if this thread won it, else
/// straight to `fd` piece by piece. Never blocks, never allocates.
struct Out {
    buf: Option<&'static mut [u8; BUF]>,
    len: usize,
    fd: libc::c_int,
}

impl Out {
    fn new(fd: libc::c_int) -> Self {
        let won = SHARED
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        // SAFETY: winning `busy` gives this thread sole use of `bytes` until
        // this `Out` is dropped (see `Shared`'s `Sync`).
        let buf = won.then(|| unsafe { &mut *SHARED.bytes.get() });
        Out { buf, len: 0, fd }
    }

    fn s(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        if self.buf.is_some() && self.len + b.len() > BUF {
            self.flush();
        }
        match &mut self.buf {
            Some(buf) if b.len() <= BUF => {
                buf[self.len..self.len + b.len()].copy_from_slice(b);
                self.len += b.len();
            }
            _ => write_all(self.fd, b),
        }
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
        self.bytes(&digits[i..]);
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
        self.bytes(&digits[i..]);
    }

    fn location(&mut self, l: &Location<'_>) {
        self.s(l.file());
        self.s(":");
        self.int(l.line() as i64);
        self.s(":");
        self.int(l.column() as i64);
    }

    /// A C site; a return address raw (`dladdr` is not async-signal-safe).
    fn c_site(&mut self, c: &Site) {
        if let Some(file) = c.file() {
            self.s(file);
            self.s(":");
            self.int(i64::from(c.line()));
            if let Some(function) = c.function() {
                self.s(" (");
                self.s(function);
                self.s(")");
            }
        } else {
            self.s("return address ");
            self.hex(c.return_address().unwrap_or(0));
        }
    }

    /// Writes out what the buffer holds.
    fn flush(&mut self) {
        if let Some(buf) = &self.buf {
            write_all(self.fd, &buf[..self.len]);
        }
        self.len = 0;
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        self.flush();
        if self.buf.take().is_some() {
            SHARED.busy.store(false, Ordering::Release);
        }
    }
}

/// `write(2)` all of `b` to `fd`, as far as it goes.
fn write_all(fd: libc::c_int, mut b: &[u8]) {
    while !b.is_empty() {
        // SAFETY: `b` is initialised memory we may read; write(2) is
        // async-signal-safe.
        let n = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
        if n <= 0 {
            break;
        }
        b = &b[(n as usize).min(b.len())..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `f` writes through an `Out` on a pipe.
    fn written(f: impl FnOnce(&mut Out)) -> Vec<u8> {
        let mut fds = [0; 2];
        // SAFETY: `pipe` fills the two-element array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let mut out = Out::new(fds[1]);
        f(&mut out);
        drop(out);
        // SAFETY: our own write end, closed once.
        unsafe { libc::close(fds[1]) };
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            // SAFETY: reading into our own buffer from our own read end.
            let n = unsafe { libc::read(fds[0], chunk.as_mut_ptr().cast(), chunk.len()) };
            if n <= 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n as usize]);
        }
        // SAFETY: our own read end, closed once.
        unsafe { libc::close(fds[0]) };
        got
    }

    fn sample(out: &mut Out) {
        out.s("pool \"");
        out.s(&"x".repeat(3 * BUF));
        out.s("\" ");
        out.int(-42);
        out.s(" ");
        out.int(i64::MIN);
        out.s(" ");
        out.hex(0xdead_beef);
        out.s(" ");
        out.location(Location::caller());
        out.s(" ");
        out.c_site(Site::source("c.c", 12, "f"));
        out.s(" ");
        out.c_site(Site::return_to(0xbeef));
    }

    /// Nothing is cut, through the shared buffer (flushed when full) or
    /// straight to the fd when another report holds it; the buffer is free
    /// again after each report. (One test: they share `SHARED`.)
    #[test]
    fn out_writes_everything_buffered_or_not() {
        let expected = written(sample);
        let text = String::from_utf8(expected.clone()).unwrap();
        assert!(text.starts_with(&format!("pool \"{}\" -42 ", "x".repeat(3 * BUF))));
        assert!(text.contains(" -9223372036854775808 0xdeadbeef "), "{text}");
        assert!(text.contains(" src/observe/fault/report.rs:"), "{text}");
        assert!(
            text.ends_with(" c.c:12 (f) return address 0xbeef"),
            "{text}"
        );
        assert!(!SHARED.busy.load(Ordering::Relaxed));

        SHARED.busy.store(true, Ordering::Relaxed);
        let unbuffered = written(|out| {
            assert!(out.buf.is_none());
            sample(out);
        });
        assert!(SHARED.busy.load(Ordering::Relaxed), "not ours to clear");
        SHARED.busy.store(false, Ordering::Relaxed);
        assert_eq!(unbuffered, expected);
    }
}
