//! The C ABI's handle table: every live allocator and buffer handle, as an
//! index and a generation checked on every call (see the `capi` docs).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;

use crate::sync::Mutex;

use super::{guarded, put, E_HANDLE, E_OUTOFMEMORY, E_POINTER, HRESULT};
use crate::buffer::PageBuffer;
use crate::buffer_pool::BufferPool;
use crate::forklock;
use crate::site::SiteRef;
use crate::threads;

/// Buffer handles remembered after their last release, so a later use of
/// one is reported with the buffer it was.
const GRAVES: usize = 4096;

/// What a released buffer handle was.
pub(super) struct Grave {
    /// The dead handle (its index and generation).
    handle: usize,
    pub(super) address: usize,
    max_len: usize,
    pool: String,
    allocated_at: SiteRef,
    allocated_by: Option<String>,
    released_at: SiteRef,
    released_by: Option<String>,
}

impl Grave {
    /// Describes buffer `buf`, whose handle `handle` dies now, released on
    /// this thread at `released_at`.
    fn new(handle: usize, buf: &PageBuffer, released_at: SiteRef) -> Grave {
        let s = buf.meta();
        Grave {
            handle,
            address: buf.as_ptr() as usize,
            max_len: buf.max_len(),
            pool: buf.pool_name().to_owned(),
            allocated_at: s.site(),
            allocated_by: threads::name(s.thread.load(Relaxed)),
            released_at,
            released_by: threads::name(threads::id()),
        }
    }
}

impl fmt::Display for Grave {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "buffer {:#x} of pool {:?}, max_len {}",
            self.address, self.pool, self.max_len
        )?;
        match self.allocated_at.get() {
            Some(site) => write!(f, "; allocated at {site}")?,
            None => write!(f, "; allocation site not tracked")?,
        }
        if let Some(t) = &self.allocated_by {
            write!(f, " by thread {t}")?;
        }
        write!(f, "; released by its last pagepool_buffer_release")?;
        if let Some(site) = self.released_at.get() {
            write!(f, " at {site}")?;
        }
        if let Some(t) = &self.released_by {
            write!(f, " on thread {t}")?;
        }
        Ok(())
    }
}

/// One entry of the handle table.
pub(super) enum Held {
    /// Unused; the index of the next free entry (`usize::MAX`: none).
    Free {
        next: usize,
    },
    Allocator(BufferPool),
    Buffer {
        buf: PageBuffer,
        refs: u32,
    },
}

/// A table entry and its generation.
pub(super) struct Row {
    generation: usize,
    pub(super) held: Held,
}

/// Every live handle. Index `i` and generation `g` make the handle
/// `((i + 1) << HALF) | g`: never null, never a small or typical heap or
/// stack address pattern that could pass by chance (and checked anyway).
pub(super) struct Table {
    pub(super) rows: Vec<Row>,
    free: usize,
    /// The last `GRAVES` buffer handles released, oldest first.
    graves: VecDeque<Grave>,
}

/// Bits of a handle that hold the generation.
pub(super) const HALF: u32 = usize::BITS / 2;
const GENERATION_MASK: usize = (1 << HALF) - 1;

pub(super) static TABLE: Mutex<Table> = Mutex::new(Table {
    rows: Vec::new(),
    free: usize::MAX,
    graves: VecDeque::new(),
});

/// Adds the table's lock to those the pools' `pthread_atfork` handlers hold
/// (once; allocator creation calls it), so a C program forked while another
/// thread is in a `pagepool_*` call gets a child whose calls do not block
/// for ever. A leaf: buffers are allocated and dropped outside the lock.
pub(super) fn join_fork_handlers() {
    static JOINED: std::sync::Once = std::sync::Once::new();
    JOINED.call_once(|| forklock::add_leaf(&TABLE));
}

/// What a handle is expected to be.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum HandleKind {
    Allocator,
    Buffer,
}

impl Table {
    /// Stores `held`; returns its handle (`None` if the table is full).
    pub(super) fn insert(&mut self, held: Held) -> Option<usize> {
        let index = if self.free != usize::MAX {
            let i = self.free;
            let Held::Free { next } = self.rows[i].held else {
                unreachable!("the free list holds free entries only");
            };
            self.free = next;
            self.rows[i].held = held;
            i
        } else {
            if self.rows.len() >= GENERATION_MASK {
                return None;
            }
            self.rows.push(Row {
                generation: 1,
                held,
            });
            self.rows.len() - 1
        };
        Some(((index + 1) << HALF) | self.rows[index].generation)
    }

    /// The index of a live handle of `kind`.
    pub(super) fn find(&self, handle: usize, kind: HandleKind) -> Option<usize> {
        let index = (handle >> HALF).checked_sub(1)?;
        let row = self.rows.get(index)?;
        if row.generation != handle & GENERATION_MASK {
            return None;
        }
        let found = match row.held {
            Held::Free { .. } => return None,
            Held::Allocator(_) => HandleKind::Allocator,
            Held::Buffer { .. } => HandleKind::Buffer,
        };
        (found == kind).then_some(index)
    }

    /// Frees entry `index`, bumping its generation; returns what it held.
    pub(super) fn remove(&mut self, index: usize) -> Held {
        let row = &mut self.rows[index];
        let entry = std::mem::replace(&mut row.held, Held::Free { next: self.free });
        // Never 0, so a handle is never just an index.
        row.generation = match (row.generation + 1) & GENERATION_MASK {
            0 => 1,
            g => g,
        };
        self.free = index;
        entry
    }

    /// Frees buffer entry `index` (handle `handle`, released at `site`) and
    /// remembers what it was; returns what it held.
    pub(super) fn bury(&mut self, index: usize, handle: usize, site: SiteRef) -> Held {
        if let Held::Buffer { buf, .. } = &self.rows[index].held {
            if self.graves.len() == GRAVES {
                self.graves.pop_front();
            }
            self.graves.push_back(Grave::new(handle, buf, site));
        }
        self.remove(index)
    }

    /// What buffer handle `handle` was, if it died recently.
    pub(super) fn grave(&self, handle: usize) -> Option<&Grave> {
        self.graves.iter().rev().find(|g| g.handle == handle)
    }

    pub(super) fn pool(&self, handle: usize) -> Result<BufferPool, HRESULT> {
        let i = self.find(handle, HandleKind::Allocator).ok_or(E_HANDLE)?;
        match &self.rows[i].held {
            Held::Allocator(pool) => Ok(pool.clone()),
            _ => Err(E_HANDLE),
        }
    }

    pub(super) fn buffer(&mut self, handle: usize) -> Result<(&mut PageBuffer, &mut u32), HRESULT> {
        let i = self.find(handle, HandleKind::Buffer).ok_or(E_HANDLE)?;
        match &mut self.rows[i].held {
            Held::Buffer { buf, refs } => Ok((buf, refs)),
            _ => Err(E_HANDLE),
        }
    }
}

/// A call that makes a handle, as every such call goes: `*out` is NULL
/// unless it succeeds (COM's rule), a null `out` is `E_POINTER`, and what
/// `make` returns gets a handle in the table, written to `*out`
/// (`E_OUTOFMEMORY` when the table is full).
///
/// # Safety
/// `out` is null or valid for a write of a pointer.
pub(super) unsafe fn new_handle<T>(
    out: *mut *mut T,
    make: impl FnOnce() -> Result<Held, HRESULT>,
) -> HRESULT {
    if !out.is_null() {
        // COM's rule: a failed call leaves NULL in its out pointer.
        // SAFETY: non-null, valid for a write (caller's contract).
        unsafe { out.write(std::ptr::null_mut()) };
    }
    guarded(|| {
        if out.is_null() {
            return Err(E_POINTER);
        }
        let held = make()?;
        let handle = TABLE.lock().insert(held).ok_or(E_OUTOFMEMORY)?;
        // SAFETY: `out` is non-null (checked) and valid (caller's contract).
        unsafe { put(out, handle as *mut T) }
    })
}
