//! Memory-error detection: canaries, poisoning, zeroing, quarantine, and the
//! fault handler that names the culprit.
//!
//! | knob | what it catches | cost on allocate + release |
//! |---|---|---|
//! | [`slack_canary`](crate::PoolBuilder::slack_canary) | a write past `max_len` inside its last page | nothing while `max_len` stays put (the pattern is rewritten only where a shorter buffer exposes new slack); release compares the 9 to 16 bytes after `max_len`, up to the end of the next aligned word (a contiguous overflow always starts there), and the page's last 8 |
//! | [`full_canary`](crate::PoolBuilder::full_canary) | a write anywhere in the slot beyond `max_len` | release compares every slack byte of the slot (about 0.1 ns a byte) |
//! | [`poison`](crate::PoolBuilder::poison) | a write after release, at the next hand-out | a `memset` and a compare of the poisoned span, for the sampled releases |
//! | [`zero`](crate::PoolBuilder::zero) | nothing: it keeps one client's bytes from the next | a `memset` of `max_len` bytes |
//! | [`quarantine`](crate::PoolBuilder::quarantine) | a late access through a stale pointer faults at once | two system calls per sampled release, and page faults when the slot is reused |
//!
//! Presets ([`DebugLevel`]): `Off` has none; `Standard` (the default) has the
//! slack canary and poisons the first 256 bytes of one buffer in 64 at its
//! release;
//! `Paranoid` has the full canary, poisons every release over `max_len`,
//! zeroes on allocate and quarantines every release (up to 256 slots).
//!
//! Guard pages (a builder setting of their own) catch overflows past the
//! slot and underflows before it; with [`install_fault_handler`] the fault is
//! reported with the buffer and its allocation site before the process dies.

pub(crate) mod canary;
pub(crate) mod fault;
mod hooks;
pub(crate) mod poison;
pub(crate) mod quarantine;

use std::fmt;
use std::io::Write as _;
use std::panic::Location;

pub use fault::install_fault_handler;

/// A preset of the debugging knobs, set with
/// [`PoolBuilder::debug`](crate::PoolBuilder::debug); individual knobs set
/// after it override it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DebugLevel {
    /// No canary, poison, zeroing or quarantine (guard pages are separate).
    Off,
    /// Slack canary, and poison on the first 256 bytes of one buffer in 64
    /// at its release: a few nanoseconds. The default.
    #[default]
    Standard,
    /// Everything: full-slot canary, poison on every release, zero on
    /// allocate, quarantine of every release (256 slots). For tests and
    /// debugging sessions; it costs system calls on every release.
    Paranoid,
}

/// When buffers are zeroed, so one client's bytes never reach another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Zeroing {
    /// Never (fresh slots are zero; reused ones hold the last owner's bytes).
    #[default]
    Off,
    /// `max_len` bytes are zeroed when the buffer is released.
    OnRelease,
    /// `max_len` bytes are zeroed when the buffer is handed out.
    OnAllocate,
}

/// What a pool does when it finds damaged memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CorruptionAction {
    /// Log a `tracing` error event with the report, count it in
    /// `pagepool_corruptions_total{pool, kind}`, repair the pattern and go on.
    #[default]
    Log,
    /// Write the report to stderr, then abort the process.
    Abort,
}

/// Which check found damaged memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptionKind {
    /// The canary after `max_len` (in the slot) was overwritten.
    SlackCanary,
    /// The canary standing in for a missing guard page, or a red zone
    /// between two small (packed) slots, was overwritten.
    EdgeCanary,
    /// A released, poisoned buffer was written before it was handed out again.
    Poison,
}

impl CorruptionKind {
    /// Every kind, in the order of `pagepool_corruptions_total`'s label values.
    pub const ALL: [CorruptionKind; 3] = [Self::SlackCanary, Self::EdgeCanary, Self::Poison];

    /// The `kind` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CorruptionKind::SlackCanary => "slack_canary",
            CorruptionKind::EdgeCanary => "edge_canary",
            CorruptionKind::Poison => "poison",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// The knobs, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DebugConfig {
    pub(crate) slack_canary: bool,
    pub(crate) full_canary: bool,
    /// Poison one buffer in this many at its release (0: never)...
    pub(crate) poison_every: u32,
    /// ...over at most this many bytes from the buffer's start.
    pub(crate) poison_bytes: usize,
    pub(crate) zero: Zeroing,
    /// Quarantine one release in this many (0: never)...
    pub(crate) quarantine_every: u32,
    /// ...holding at most this many slots.
    pub(crate) quarantine_slots: usize,
    pub(crate) on_corruption: CorruptionAction,
}

impl DebugConfig {
    pub(crate) fn preset(level: DebugLevel, on_corruption: CorruptionAction) -> Self {
        let off = DebugConfig {
            slack_canary: false,
            full_canary: false,
            poison_every: 0,
            poison_bytes: 0,
            zero: Zeroing::Off,
            quarantine_every: 0,
            quarantine_slots: 0,
            on_corruption,
        };
        match level {
            DebugLevel::Off => off,
            DebugLevel::Standard => DebugConfig {
                slack_canary: true,
                poison_every: 64,
                poison_bytes: 256,
                ..off
            },
            DebugLevel::Paranoid => DebugConfig {
                slack_canary: true,
                full_canary: true,
                poison_every: 1,
                poison_bytes: usize::MAX,
                zero: Zeroing::OnAllocate,
                quarantine_every: 1,
                quarantine_slots: 256,
                ..off
            },
        }
    }

    /// Whether any canary is kept.
    #[inline]
    pub(crate) fn canary(&self) -> bool {
        self.slack_canary || self.full_canary
    }
}

/// Everything a corruption report says.
#[derive(Debug)]
pub(crate) struct Corruption<'a> {
    pub(crate) kind: CorruptionKind,
    pub(crate) pool: &'a str,
    pub(crate) buffer: usize,
    pub(crate) max_len: usize,
    pub(crate) slot_len: usize,
    /// Offset of the first damaged byte from the buffer's start (negative:
    /// before it).
    pub(crate) offset: isize,
    pub(crate) damaged: usize,
    pub(crate) allocated_at: Option<&'static Location<'static>>,
    pub(crate) thread: Option<String>,
    pub(crate) released_at: Option<&'static Location<'static>>,
    pub(crate) released_by: Option<String>,
}

impl fmt::Display for Corruption<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            CorruptionKind::SlackCanary => "write past max_len (slack canary damaged)",
            CorruptionKind::EdgeCanary => {
                "write outside the slot (red zone or edge canary damaged)"
            }
            CorruptionKind::Poison => "write after release (poison damaged)",
        };
        write!(
            f,
            "pagepool: {what} in pool {:?}: buffer {:#x}, max_len {}, slot {} bytes; {} byte{} damaged, the first at offset {}",
            self.pool,
            self.buffer,
            self.max_len,
            self.slot_len,
            self.damaged,
            if self.damaged == 1 { "" } else { "s" },
            self.offset,
        )?;
        if self.offset >= self.max_len as isize {
            write!(f, " ({} past max_len)", self.offset - self.max_len as isize)?;
        }
        match self.allocated_at {
            Some(site) => write!(f, "; allocated at {site}")?,
            None => write!(f, "; allocation site not tracked")?,
        }
        if let Some(t) = &self.thread {
            write!(f, " by thread {t}")?;
        }
        if self.kind == CorruptionKind::Poison {
            match (self.released_at, &self.released_by) {
                (Some(site), _) => write!(f, "; released at {site}")?,
                (None, Some(t)) => write!(f, "; released by a drop on thread {t}")?,
                (None, None) => {}
            }
        }
        Ok(())
    }
}

impl Corruption<'_> {
    /// Logs or aborts, as `action` says.
    #[cold]
    pub(crate) fn raise(&self, action: CorruptionAction) {
        match action {
            CorruptionAction::Log => {
                // Reports run in the middle of allocate and release: a
                // subscriber that panics must not cost the pool its slot.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    tracing::error!(
                        target: "pagepool",
                        pool = self.pool,
                        kind = self.kind.as_str(),
                        buffer = self.buffer,
                        offset = self.offset,
                        "{self}"
                    )
                }));
            }
            CorruptionAction::Abort => {
                let _ = writeln!(std::io::stderr().lock(), "{self}");
                std::process::abort();
            }
        }
    }
}

thread_local! {
    /// The countdown for sampled quarantine (the other sampled duties are
    /// counted per pool, see `sample.rs`).
    pub(crate) static QUARANTINE_COUNTDOWN: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether this call is the one in `every` (0: never) that is sampled: a
/// per-thread countdown, so the decision costs no shared write.
#[inline]
pub(crate) fn sampled(
    countdown: &'static std::thread::LocalKey<std::cell::Cell<u32>>,
    every: u32,
) -> bool {
    if every == 0 {
        return false;
    }
    countdown.with(|c| match c.get() {
        0 => {
            c.set(every - 1);
            true
        }
        n => {
            c.set(n - 1);
            false
        }
    })
}
