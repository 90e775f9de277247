//! The corruption report: what a check found, as logged (through
//! `tracing`, and to the report sink if one is installed) or written before
//! an abort.

use std::fmt;
use std::io::Write as _;

use super::sink::{self, Report, ReportKind};
use crate::config::CorruptionAction;
use crate::site::SiteRef;
use crate::stats::CorruptionKind;

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
    pub(crate) allocated_at: SiteRef,
    pub(crate) thread: Option<String>,
    pub(crate) released_at: SiteRef,
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
        match self.allocated_at.get() {
            Some(site) => write!(f, "; allocated at {site}")?,
            None => write!(f, "; allocation site not tracked")?,
        }
        if let Some(t) = &self.thread {
            write!(f, " by thread {t}")?;
        }
        if self.kind == CorruptionKind::Poison {
            match (self.released_at.get(), &self.released_by) {
                (Some(site), None) => write!(f, "; released at {site}")?,
                (Some(site), Some(t)) => write!(f, "; released at {site} on thread {t}")?,
                (None, Some(t)) => write!(f, "; released by a drop on thread {t}")?,
                (None, None) => {}
            }
        }
        Ok(())
    }
}

impl Corruption<'_> {
    /// Hands the report to the sink, if one is installed; whether one was.
    fn to_sink(&self) -> bool {
        sink::installed()
            && sink::emit(&Report {
                kind: ReportKind::Corruption(self.kind),
                text: &self.to_string(),
                address: self.buffer,
            })
    }

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
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.to_sink()));
            }
            CorruptionAction::Abort => {
                let sunk =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.to_sink()));
                if !matches!(sunk, Ok(true)) {
                    let _ = writeln!(std::io::stderr().lock(), "{self}");
                }
                std::process::abort();
            }
        }
    }
}
