//! Small process-unique thread numbers (never 0), and the names of the
//! threads they stand for, for reports.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use crate::sync::Mutex;

/// Names of threads that allocated, by `id`: at most this many kept.
const MAX_THREAD_NAMES: usize = 65_536;

fn thread_names() -> &'static Mutex<BTreeMap<u32, Arc<str>>> {
    static NAMES: OnceLock<Mutex<BTreeMap<u32, Arc<str>>>> = OnceLock::new();
    NAMES.get_or_init(Default::default)
}

/// Takes the thread-name registry for a `fork` (see [`crate::forklock`]).
pub(crate) fn fork_hold() {
    crate::forklock::hold(thread_names());
}

/// Lets go what [`fork_hold`] took.
///
/// # Safety
///
/// As [`crate::forklock::release`]'s: this thread took it with `fork_hold`,
/// and in the child no other thread runs yet.
pub(crate) unsafe fn fork_release(child: bool) {
    // SAFETY: the caller's contract is `release`'s.
    unsafe { crate::forklock::release(thread_names(), child) }
}

/// A small process-unique number for the calling thread (never 0); its name
/// is registered the first time.
#[inline]
pub(crate) fn id() -> u32 {
    thread_local! {
        static ID: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    ID.with(|id| match id.get() {
        0 => {
            let n = register_thread();
            id.set(n);
            n
        }
        n => n,
    })
}

#[cold]
fn register_thread() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Relaxed).max(1);
    let current = std::thread::current();
    let name: Arc<str> = match current.name() {
        Some(name) => name.into(),
        None => format!("#{n}").into(),
    };
    let mut names = thread_names().lock();
    names.insert(n, name);
    while names.len() > MAX_THREAD_NAMES {
        names.pop_first();
    }
    n
}

/// The name of thread `id`, if known.
pub(crate) fn name(id: u32) -> Option<String> {
    (id != 0).then(|| {
        thread_names()
            .lock()
            .get(&id)
            .map_or_else(|| format!("#{id}"), |n| n.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_ids_are_stable_and_named() {
        let here = id();
        assert_ne!(here, 0);
        assert_eq!(id(), here);
        let (other, n) = std::thread::Builder::new()
            .name("leak-test-thread".into())
            .spawn(|| (id(), name(id())))
            .unwrap()
            .join()
            .unwrap();
        assert_ne!(other, here);
        assert_eq!(n.as_deref(), Some("leak-test-thread"));
        assert_eq!(name(0), None);
    }
}
