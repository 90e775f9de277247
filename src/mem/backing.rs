//! Where slab memory comes from: the [`Backing`] seam, and [`Anonymous`],
//! the private anonymous mappings every pool uses today.
//!
//! A slab asks its backing for one page-aligned, readable and writable
//! range, may hand some of its pages back while it stays mapped
//! ([`Backing::discard`], for trim), and gives the range back when it is
//! unmapped; nothing above this file knows how. A shared-memory backing (a `memfd` mapped `MAP_SHARED`, for
//! handing buffers to another process) or a huge-page one (`MAP_HUGETLB`)
//! is one more `impl Backing`.

use std::fmt;
use std::io;
use std::ptr::NonNull;
use std::sync::Arc;

/// A source of page-aligned memory for slabs.
pub(crate) trait Backing: Send + Sync + fmt::Debug {
    /// Maps `len` bytes (a multiple of the page size), readable and
    /// writable, zero-filled, page-aligned.
    ///
    /// # Errors
    /// The OS's refusal.
    fn map(&self, len: usize) -> io::Result<NonNull<u8>>;

    /// Gives back a range `map` returned.
    ///
    /// # Safety
    /// `base` and `len` are exactly a range this backing's `map` returned,
    /// not yet given back, and nothing accesses it any more.
    unsafe fn unmap(&self, base: NonNull<u8>, len: usize);

    /// Gives the memory behind `base..base + len` back to the OS while the
    /// range stays mapped: afterwards it reads as zeros and costs no memory
    /// until written. Returns whether it did; a backing that cannot (a
    /// shared mapping, whose pages would come back from the file) leaves
    /// the bytes as they are and returns `false`.
    ///
    /// # Safety
    /// `base..base + len` is page-aligned, inside a range this backing's
    /// `map` returned and has not given back, and nothing accesses it while
    /// this runs (whatever it held is lost).
    unsafe fn discard(&self, base: NonNull<u8>, len: usize) -> bool {
        let _ = (base, len);
        false
    }
}

/// Private anonymous mappings (`mmap(MAP_PRIVATE | MAP_ANONYMOUS)`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Anonymous;

impl Backing for Anonymous {
    fn map(&self, len: usize) -> io::Result<NonNull<u8>> {
        // SAFETY: a fresh private anonymous mapping at an address the kernel
        // picks; it aliases nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
    }

    unsafe fn unmap(&self, base: NonNull<u8>, len: usize) {
        // SAFETY: the caller gives back exactly a range `map` made, which no
        // one accesses any more.
        let rc = unsafe { libc::munmap(base.as_ptr().cast(), len) };
        debug_assert_eq!(rc, 0, "munmap of a range we mapped");
    }

    #[cfg(not(miri))]
    unsafe fn discard(&self, base: NonNull<u8>, len: usize) -> bool {
        // SAFETY: the caller names page-aligned pages of a private anonymous
        // mapping we made, which no one accesses meanwhile: MADV_DONTNEED
        // frees them, and the next touch of each maps a zero page. Guard
        // pages in the range stay guards: markers (MADV_GUARD_INSTALL)
        // survive DONTNEED, and mprotect'ed pages keep their protection.
        unsafe { libc::madvise(base.as_ptr().cast(), len, libc::MADV_DONTNEED) == 0 }
    }

    /// Under Miri, which has no `madvise`: the bytes as `MADV_DONTNEED`
    /// leaves them (zeros), so the code around a discard is checked too.
    #[cfg(miri)]
    unsafe fn discard(&self, base: NonNull<u8>, len: usize) -> bool {
        // SAFETY: as above, pages of our mapping that no one accesses; and
        // no guard page among them: guards need `madvise` or `mprotect`,
        // which Miri runs neither, so its pools have none.
        unsafe { std::ptr::write_bytes(base.as_ptr(), 0, len) };
        true
    }
}

/// [`Anonymous`] mappings marked `madvise(MADV_DONTFORK)`: a child of
/// `fork()` does not inherit them (the range is unmapped in the child).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NotInherited;

impl Backing for NotInherited {
    fn map(&self, len: usize) -> io::Result<NonNull<u8>> {
        let p = Anonymous.map(len)?;
        // SAFETY: `p..p + len` is the private mapping just made, and no one
        // else knows it yet; MADV_DONTFORK changes only what a child of
        // `fork` inherits.
        let rc = unsafe { libc::madvise(p.as_ptr().cast(), len, libc::MADV_DONTFORK) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            // SAFETY: exactly the range `map` returned just above, unused.
            unsafe { Anonymous.unmap(p, len) };
            return Err(e);
        }
        Ok(p)
    }

    unsafe fn unmap(&self, base: NonNull<u8>, len: usize) {
        // SAFETY: the caller's contract is `Anonymous::unmap`'s, which made
        // the range.
        unsafe { Anonymous.unmap(base, len) }
    }

    unsafe fn discard(&self, base: NonNull<u8>, len: usize) -> bool {
        // SAFETY: the caller's contract is `Anonymous::discard`'s, whose
        // mapping this is (MADV_DONTFORK does not change what DONTNEED does).
        unsafe { Anonymous.discard(base, len) }
    }
}

/// One range from a [`Backing`], given back on drop.
pub(crate) struct Mapping {
    /// First byte; invariant: `base..base + len` came from `backing.map`.
    base: NonNull<u8>,
    len: usize,
    backing: Arc<dyn Backing>,
}

// SAFETY: a `Mapping` is a base address, a length and a `Send + Sync`
// backing; it never reads or writes the bytes itself (every access goes
// through a slot that one buffer owns, or happens under the pool's slab
// lock), and unmapping may happen on any thread.
unsafe impl Send for Mapping {}
// SAFETY: `&Mapping` only exposes the base address and the length.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes from `backing`.
    ///
    /// # Errors
    /// The backing's refusal.
    pub(crate) fn new(backing: &Arc<dyn Backing>, len: usize) -> io::Result<Mapping> {
        let base = backing.map(len)?;
        Ok(Mapping {
            base,
            len,
            backing: Arc::clone(backing),
        })
    }

    /// The first byte.
    #[inline]
    pub(crate) fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Bytes mapped.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// [`Backing::discard`] of `len` bytes at `offset` into the mapping.
    ///
    /// # Safety
    /// `offset..offset + len` is page-aligned and inside the mapping, and
    /// nothing accesses it while this runs (whatever it held is lost).
    pub(crate) unsafe fn discard(&self, offset: usize, len: usize) -> bool {
        debug_assert!(offset.checked_add(len).is_some_and(|end| end <= self.len));
        // SAFETY: inside the range `backing.map` returned (the field's
        // invariant and the caller's bounds), not given back before drop;
        // the caller vouches that no one accesses it.
        unsafe { self.backing.discard(self.base.add(offset), len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range came from `backing.map` (the field's invariant),
        // is given back once, here, and its slab is being dropped: nothing
        // accesses it any more.
        unsafe { self.backing.unmap(self.base, self.len) };
    }
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping")
            .field("base", &self.base)
            .field("len", &self.len)
            .field("backing", &self.backing)
            .finish()
    }
}
