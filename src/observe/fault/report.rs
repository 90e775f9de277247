//! The fault report: where in a slab the fault hit (`locate`), what kind
//! of error that makes (`classify`), and the text (`format`), written into
//! a fixed buffer with no allocation and no lock (async-signal-safe).

use std::panic::Location;
use std::sync::atomic::Ordering::Relaxed;

use super::table::{self, SlabInfo};
use crate::mem::slot::{Slot, SlotState};

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
    let mut out = Out::new();
    format(&mut out, slab, s, classify(kind, s), addr, write);
    out.flush();
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
    match s.site() {
        Some(l) => out.location(l),
        None => out.s("(not tracked)"),
    }
    let thread = s.thread.load(Relaxed);
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

    fn location(&mut self, l: &Location<'_>) {
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
