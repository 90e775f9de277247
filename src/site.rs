//! Call sites: a C caller's [`Site`] (file, line, function, or a return
//! address), interned once per distinct site, and [`SiteRef`], the one
//! word a slot stores for a Rust `Location` or a `Site` (a tagged pointer).

use std::fmt;
use std::panic::Location;

/// Distinct C sites kept; later ones share [`TOO_MANY`].
#[cfg(any(feature = "capi", test))]
const MAX_SITES: usize = 4096;

/// Where a C caller allocated or released a buffer: `__FILE__`, `__LINE__`
/// and `__func__` from the header's macros, or, for a call made without
/// them, the caller's return address. One record per distinct site, kept
/// for the life of the process.
///
/// ```
/// // Rust callers get `Location`s; `Site`s come from C (feature `capi`).
/// fn show(site: &pagepool::Site) -> String {
///     format!("{site}") // "tests/c/diag_test.c:42 (case_leak)"
/// }
/// ```
#[derive(Debug, PartialEq, Eq)]
pub struct Site {
    file: &'static str,
    line: u32,
    function: &'static str,
    return_address: usize,
}

// `SiteRef` tags a `Site` pointer with its low bit: both pointees are
// at least 2-byte aligned.
const _: () = assert!(std::mem::align_of::<Site>() >= 2);
const _: () = assert!(std::mem::align_of::<Location<'static>>() >= 2);

/// The site every call past [`MAX_SITES`] distinct ones records.
#[cfg(any(feature = "capi", test))]
static TOO_MANY: Site = Site {
    file: "(too many sites)",
    line: 0,
    function: "",
    return_address: 0,
};

impl Site {
    /// The source file (`None` for a return-address site).
    ///
    /// ```
    /// fn file(site: &pagepool::Site) -> &str {
    ///     site.file().unwrap_or("?")
    /// }
    /// ```
    pub fn file(&self) -> Option<&'static str> {
        (!self.file.is_empty()).then_some(self.file)
    }

    /// The line (0 when unknown).
    ///
    /// ```
    /// fn line(site: &pagepool::Site) -> u32 {
    ///     site.line()
    /// }
    /// ```
    pub fn line(&self) -> u32 {
        self.line
    }

    /// The calling function (`None` when unknown).
    ///
    /// ```
    /// fn function(site: &pagepool::Site) -> &str {
    ///     site.function().unwrap_or("?")
    /// }
    /// ```
    pub fn function(&self) -> Option<&'static str> {
        (!self.function.is_empty()).then_some(self.function)
    }

    /// The caller's return address, for a call made without file and line.
    ///
    /// ```
    /// fn address(site: &pagepool::Site) -> Option<usize> {
    ///     site.return_address()
    /// }
    /// ```
    pub fn return_address(&self) -> Option<usize> {
        (self.return_address != 0).then_some(self.return_address)
    }

    /// The interned site for `file:line` in `function` (either may be
    /// empty); bounded by [`MAX_SITES`].
    #[cfg(any(feature = "capi", test))]
    pub(crate) fn source(file: &str, line: u32, function: &str) -> &'static Site {
        intern(Key::Source(file.into(), line, function.into()), || Site {
            file: leak(file),
            line,
            function: leak(function),
            return_address: 0,
        })
    }

    /// The interned site for return address `address` (not 0).
    #[cfg(any(feature = "capi", test))]
    pub(crate) fn return_to(address: usize) -> &'static Site {
        intern(Key::Address(address), || Site {
            file: "",
            line: 0,
            function: "",
            return_address: address,
        })
    }
}

impl fmt::Display for Site {
    /// `file:line (function)`, or the return address and, where `dladdr`
    /// finds it, the symbol and object it is in (or the object and the
    /// offset into it, for `addr2line`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = self.file() {
            write!(f, "{file}:{}", self.line)?;
            if let Some(function) = self.function() {
                write!(f, " ({function})")?;
            }
            return Ok(());
        }
        write!(f, "return address {:#x}", self.return_address)?;
        match symbolize(self.return_address) {
            Some((Some(sym), off, obj)) => write!(f, " ({sym}+{off:#x} in {obj})"),
            Some((None, off, obj)) => write!(f, " ({obj}+{off:#x})"),
            None => Ok(()),
        }
    }
}

/// What a [`Site`] is interned by.
#[cfg(any(feature = "capi", test))]
#[derive(PartialEq, Eq, Hash)]
enum Key {
    Source(Box<str>, u32, Box<str>),
    Address(usize),
}

/// Interned sites, by key.
#[cfg(any(feature = "capi", test))]
fn sites() -> &'static crate::sync::Mutex<std::collections::HashMap<Key, &'static Site>> {
    static SITES: std::sync::OnceLock<
        crate::sync::Mutex<std::collections::HashMap<Key, &'static Site>>,
    > = std::sync::OnceLock::new();
    SITES.get_or_init(Default::default)
}

/// Takes the site registry for a `fork` (see [`crate::forklock`]); nothing
/// without the C ABI interns sites.
pub(crate) fn fork_hold() {
    #[cfg(any(feature = "capi", test))]
    crate::forklock::hold(sites());
}

/// Lets go what [`fork_hold`] took.
///
/// # Safety
///
/// As [`crate::forklock::release`]'s: this thread took it with `fork_hold`,
/// and in the child no other thread runs yet.
pub(crate) unsafe fn fork_release(child: bool) {
    // SAFETY: the caller's contract is `release`'s.
    #[cfg(any(feature = "capi", test))]
    unsafe {
        crate::forklock::release(sites(), child)
    };
    let _ = child;
}

/// The record for `key`, made by `make` and leaked the first time.
#[cfg(any(feature = "capi", test))]
fn intern(key: Key, make: impl FnOnce() -> Site) -> &'static Site {
    let mut sites = sites().lock();
    if let Some(site) = sites.get(&key) {
        return site;
    }
    if sites.len() >= MAX_SITES {
        return &TOO_MANY;
    }
    let site: &'static Site = Box::leak(Box::new(make()));
    sites.insert(key, site);
    site
}

#[cfg(any(feature = "capi", test))]
fn leak(s: &str) -> &'static str {
    Box::leak(s.into())
}

/// `dladdr` of `address`: the symbol (if any), the offset from it (or
/// from the object's base), and the object's path. Not async-signal-safe
/// (it takes the loader's lock): never called from the fault handler.
fn symbolize(address: usize) -> Option<(Option<String>, usize, String)> {
    // SAFETY: all-zero is a valid `Dl_info` (null pointers, zero fields).
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: `dladdr` only reads the address's value and fills `info`.
    if unsafe { libc::dladdr(address as *const libc::c_void, &mut info) } == 0 {
        return None;
    }
    let text = |p: *const libc::c_char| {
        (!p.is_null()).then(|| {
            // SAFETY: non-null (checked): `dladdr` filled it with a
            // NUL-terminated string of the loaded object, copied at once.
            unsafe { std::ffi::CStr::from_ptr(p) }
                .to_string_lossy()
                .into_owned()
        })
    };
    let obj = text(info.dli_fname).unwrap_or_default();
    match text(info.dli_sname) {
        Some(sym) => Some((
            Some(sym),
            address.wrapping_sub(info.dli_saddr as usize),
            obj,
        )),
        None => Some((None, address.wrapping_sub(info.dli_fbase as usize), obj)),
    }
}

/// A Rust `Location`, a C [`Site`], or nothing, in one word as a slot
/// stores it: 0, a `&'static Location` (low bit clear), or a
/// `&'static Site` with its low bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SiteRef(usize);

/// A decoded [`SiteRef`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Decoded {
    Rust(&'static Location<'static>),
    C(&'static Site),
}

impl SiteRef {
    /// No site.
    pub(crate) const NONE: SiteRef = SiteRef(0);

    /// A Rust call site.
    #[inline(always)]
    pub(crate) fn rust(l: &'static Location<'static>) -> SiteRef {
        SiteRef(l as *const Location<'static> as usize)
    }

    /// A C call site.
    #[cfg(any(feature = "capi", test))]
    #[inline]
    pub(crate) fn c(s: &'static Site) -> SiteRef {
        SiteRef(s as *const Site as usize | 1)
    }

    /// The word to store.
    #[inline(always)]
    pub(crate) fn raw(self) -> usize {
        self.0
    }

    /// A word stored from [`raw`](Self::raw).
    ///
    /// # Safety
    /// `raw` is 0 or came from `SiteRef::raw`.
    #[inline(always)]
    pub(crate) unsafe fn from_raw(raw: usize) -> SiteRef {
        SiteRef(raw)
    }

    /// The site, if any.
    pub(crate) fn get(self) -> Option<Decoded> {
        match self.0 {
            0 => None,
            // SAFETY: a set low bit is only made by `SiteRef::c` from a
            // `&'static Site` (`from_raw`'s contract).
            p if p & 1 == 1 => Some(Decoded::C(unsafe { &*((p & !1) as *const Site) })),
            // SAFETY: otherwise it came from `SiteRef::rust`'s
            // `&'static Location` (as above).
            p => Some(Decoded::Rust(unsafe { &*(p as *const Location<'static>) })),
        }
    }

    /// The Rust location, if it is one.
    pub(crate) fn location(self) -> Option<&'static Location<'static>> {
        match self.get()? {
            Decoded::Rust(l) => Some(l),
            Decoded::C(_) => None,
        }
    }

    /// The C site, if it is one.
    pub(crate) fn c_site(self) -> Option<&'static Site> {
        match self.get()? {
            Decoded::C(s) => Some(s),
            Decoded::Rust(_) => None,
        }
    }
}

impl fmt::Display for Decoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decoded::Rust(l) => l.fmt(f),
            Decoded::C(s) => s.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_are_interned_tagged_and_printed() {
        let a = Site::source("x.c", 7, "main");
        assert!(std::ptr::eq(a, Site::source("x.c", 7, "main")));
        assert!(!std::ptr::eq(a, Site::source("x.c", 8, "main")));
        assert_eq!(a.to_string(), "x.c:7 (main)");
        assert_eq!(Site::source("y.c", 3, "").to_string(), "y.c:3");
        let r = SiteRef::c(a);
        assert!(std::ptr::eq(r.c_site().unwrap(), a));
        assert!(r.location().is_none());
        let l = Location::caller();
        let rl = SiteRef::rust(l);
        assert_eq!(rl.location(), Some(l));
        assert!(rl.c_site().is_none());
        assert!(SiteRef::NONE.get().is_none());
        // SAFETY: a word from `raw`.
        assert_eq!(unsafe { SiteRef::from_raw(r.raw()) }, r);
        let f = sites_are_interned_tagged_and_printed as fn() as usize;
        let text = Site::return_to(f).to_string();
        assert!(
            text.starts_with(&format!("return address {f:#x}")),
            "{text}"
        );
        assert_eq!(Site::return_to(f).return_address(), Some(f));
        assert_eq!(a.file(), Some("x.c"));
        assert_eq!(a.function(), Some("main"));
        assert_eq!(a.line(), 7);
    }
}
