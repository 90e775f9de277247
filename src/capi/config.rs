//! `pagepool_config`: the settings of `pagepool_allocator_create_ex`, a C
//! struct versioned by its size so later versions can add fields.

use std::mem::size_of;

use super::{guarded, E_INVALIDARG, E_POINTER, HRESULT};
use crate::buffer_pool::BufferPool;
use crate::builder::PoolBuilder;
use crate::config::{CorruptionAction, DebugLevel, LeakTracking, Zeroing};

/// A knob that takes the value its `debug_level` preset gives it.
pub const PAGEPOOL_FROM_LEVEL: i32 = -1;

/// `debug_level`: no canary, poison, zeroing or quarantine.
pub const PAGEPOOL_DEBUG_OFF: i32 = 0;
/// `debug_level`: the slack canary, and poison on one release in 64 (the
/// default).
pub const PAGEPOOL_DEBUG_STANDARD: i32 = 1;
/// `debug_level`: full canary, poison on every release, zero on allocate,
/// quarantine of every release (256 slots).
pub const PAGEPOOL_DEBUG_PARANOID: i32 = 2;

/// `zeroing`: never.
pub const PAGEPOOL_ZERO_OFF: i32 = 0;
/// `zeroing`: `max_len` bytes when the buffer is released.
pub const PAGEPOOL_ZERO_ON_RELEASE: i32 = 1;
/// `zeroing`: `max_len` bytes when the buffer is handed out.
pub const PAGEPOOL_ZERO_ON_ALLOCATE: i32 = 2;

/// `on_corruption`: report, count, repair and go on (the default).
pub const PAGEPOOL_ON_CORRUPTION_REPORT: i32 = 0;
/// `on_corruption`: report, then abort the process.
pub const PAGEPOOL_ON_CORRUPTION_ABORT: i32 = 1;

/// `leak_tracking`: counts only, no sites.
pub const PAGEPOOL_LEAK_TRACKING_OFF: i32 = 0;
/// `leak_tracking`: each buffer's allocation site, time and thread (the
/// default).
pub const PAGEPOOL_LEAK_TRACKING_CALL_SITE: i32 = 1;

/// The settings of `pagepool_allocator_create_ex`. Fill it with
/// `pagepool_config_init(&c, sizeof c)`, then change what you need.
///
/// `size` is the struct's size as the caller compiled it: a library reads
/// the fields it knows up to `size`, and refuses a larger struct whose
/// fields past its own are not all zero.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct pagepool_config {
    /// `sizeof(pagepool_config)` as the caller compiled it.
    pub size: u32,
    /// A `PAGEPOOL_DEBUG_*` preset for the knobs below set to
    /// `PAGEPOOL_FROM_LEVEL`.
    pub debug_level: i32,
    /// Quarantine one release in this many (0: none; needs guard pages).
    pub quarantine_every: i32,
    /// The quarantine's slots (when `quarantine_every` is not from the level).
    pub quarantine_slots: u32,
    /// A `PAGEPOOL_ZERO_*`.
    pub zeroing: i32,
    /// Poison one release in this many (0: none).
    pub poison_every: i32,
    /// Bytes poisoned from the buffer's start, `UINT64_MAX` for all of
    /// `max_len` (when `poison_every` is not from the level).
    pub poison_bytes: u64,
    /// A `PAGEPOOL_ON_CORRUPTION_*`.
    pub on_corruption: i32,
    /// A `PAGEPOOL_LEAK_TRACKING_*`.
    pub leak_tracking: i32,
    /// 1: a guard page before and after every buffer (the default); 0: none.
    pub guard_pages: i32,
    /// Must be 0.
    pub reserved: u32,
    /// The largest buffer (0: 16 MiB).
    pub max_buffer_size: u64,
    /// The cap on mapped bytes, guard pages included (0: no cap).
    pub max_bytes: u64,
}

/// The size of the first version of `pagepool_config`, the smallest
/// accepted.
pub(super) const CONFIG_V1: usize = 64;
const _: () = assert!(size_of::<pagepool_config>() == CONFIG_V1);

impl Default for pagepool_config {
    fn default() -> Self {
        pagepool_config {
            size: size_of::<pagepool_config>() as u32,
            debug_level: PAGEPOOL_DEBUG_STANDARD,
            quarantine_every: PAGEPOOL_FROM_LEVEL,
            quarantine_slots: 256,
            zeroing: PAGEPOOL_FROM_LEVEL,
            poison_every: PAGEPOOL_FROM_LEVEL,
            poison_bytes: 256,
            on_corruption: PAGEPOOL_ON_CORRUPTION_REPORT,
            leak_tracking: PAGEPOOL_LEAK_TRACKING_CALL_SITE,
            guard_pages: 1,
            reserved: 0,
            max_buffer_size: 0,
            max_bytes: 0,
        }
    }
}

/// Copies the caller's `size`-versioned struct `T` at `from` into our
/// version: our defaults (`base`) past the caller's size, and
/// `E_INVALIDARG` if `size` is below `min` or the caller's fields past ours
/// are not zero.
///
/// # Safety
/// `from` is valid for reads of its first `u32` (its `size`) and then of
/// `size` bytes.
pub(super) unsafe fn read_versioned<T: Copy>(
    from: *const T,
    min: usize,
    base: T,
) -> Result<T, HRESULT> {
    // SAFETY: the first field is a `u32` (caller's contract).
    let size = unsafe { from.cast::<u32>().read() } as usize;
    if size < min {
        return Err(E_INVALIDARG);
    }
    let ours = size_of::<T>();
    if size > ours {
        // SAFETY: `size` bytes are readable (caller's contract).
        let tail = unsafe { std::slice::from_raw_parts(from.cast::<u8>().add(ours), size - ours) };
        if tail.iter().any(|&b| b != 0) {
            return Err(E_INVALIDARG);
        }
    }
    let mut value = base;
    // SAFETY: `min(size, ours)` bytes are readable at `from` and writable
    // at `value`; `T` is plain old data (every field an integer).
    unsafe {
        std::ptr::copy_nonoverlapping(
            from.cast::<u8>(),
            (&mut value as *mut T).cast::<u8>(),
            size.min(ours),
        )
    };
    Ok(value)
}

/// A preset, a zeroing or a flag from its C value (`E_INVALIDARG` for
/// another).
fn pick<T: Copy>(value: i32, table: &[(i32, T)]) -> Result<T, HRESULT> {
    table
        .iter()
        .find(|(k, _)| *k == value)
        .map(|(_, v)| *v)
        .ok_or(E_INVALIDARG)
}

/// A count knob: `None` for `PAGEPOOL_FROM_LEVEL`, `E_INVALIDARG` below it.
fn count(value: i32) -> Result<Option<u32>, HRESULT> {
    match value {
        PAGEPOOL_FROM_LEVEL => Ok(None),
        v => u32::try_from(v).map(Some).map_err(|_| E_INVALIDARG),
    }
}

/// A byte count in `usize` (`u64::MAX` stays "all").
fn bytes(value: u64) -> Result<usize, HRESULT> {
    if value == u64::MAX {
        return Ok(usize::MAX);
    }
    usize::try_from(value).map_err(|_| E_INVALIDARG)
}

impl pagepool_config {
    /// A builder named `name` with these settings (not yet checked by
    /// `build`).
    pub(super) fn builder(&self, name: &str) -> Result<PoolBuilder, HRESULT> {
        use DebugLevel as L;
        let level = pick(
            self.debug_level,
            &[
                (PAGEPOOL_DEBUG_OFF, L::Off),
                (PAGEPOOL_DEBUG_STANDARD, L::Standard),
                (PAGEPOOL_DEBUG_PARANOID, L::Paranoid),
            ],
        )?;
        let action = pick(
            self.on_corruption,
            &[
                (PAGEPOOL_ON_CORRUPTION_REPORT, CorruptionAction::Log),
                (PAGEPOOL_ON_CORRUPTION_ABORT, CorruptionAction::Abort),
            ],
        )?;
        let tracking = pick(
            self.leak_tracking,
            &[
                (PAGEPOOL_LEAK_TRACKING_OFF, LeakTracking::Off),
                (PAGEPOOL_LEAK_TRACKING_CALL_SITE, LeakTracking::CallSite),
            ],
        )?;
        let guards = pick(self.guard_pages, &[(0, false), (1, true)])?;
        if self.reserved != 0 {
            return Err(E_INVALIDARG);
        }
        let mut b = BufferPool::builder()
            .name(name)
            .debug(level)
            .on_corruption(action)
            .leak_tracking(tracking)
            .guard_pages(guards);
        if let Some(every) = count(self.quarantine_every)? {
            b = b.quarantine(every, self.quarantine_slots as usize);
        }
        if self.zeroing != PAGEPOOL_FROM_LEVEL {
            b = b.zero(pick(
                self.zeroing,
                &[
                    (PAGEPOOL_ZERO_OFF, Zeroing::Off),
                    (PAGEPOOL_ZERO_ON_RELEASE, Zeroing::OnRelease),
                    (PAGEPOOL_ZERO_ON_ALLOCATE, Zeroing::OnAllocate),
                ],
            )?);
        }
        if let Some(every) = count(self.poison_every)? {
            b = b.poison(every, bytes(self.poison_bytes)?);
        }
        if self.max_buffer_size != 0 {
            b = b.max_buffer_size(bytes(self.max_buffer_size)?);
        }
        if self.max_bytes != 0 {
            b = b.max_bytes(bytes(self.max_bytes)?);
        }
        Ok(b)
    }
}

/// Fills `*config` with the defaults, over the `size` bytes the caller's
/// struct has (`sizeof *config`); fields this library does not know are
/// zeroed.
///
/// Returns `S_OK`, `E_POINTER`, or `E_INVALIDARG` when `size` is smaller
/// than the first version of the struct.
///
/// # Safety
/// `config` is null or valid for writes of `size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pagepool_config_init(config: *mut pagepool_config, size: u32) -> HRESULT {
    guarded(|| {
        if config.is_null() {
            return Err(E_POINTER);
        }
        let size = size as usize;
        if size < CONFIG_V1 {
            return Err(E_INVALIDARG);
        }
        let ours = pagepool_config {
            size: size as u32,
            ..pagepool_config::default()
        };
        let n = size.min(size_of::<pagepool_config>());
        // SAFETY: `config` is valid for `size >= n` bytes (caller's
        // contract, non-null checked); `ours` is `n` readable bytes at least.
        unsafe {
            std::ptr::write_bytes(config.cast::<u8>(), 0, size);
            std::ptr::copy_nonoverlapping(
                (&ours as *const pagepool_config).cast::<u8>(),
                config.cast::<u8>(),
                n,
            );
        }
        Ok(())
    })
}
