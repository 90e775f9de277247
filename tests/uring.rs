//! io_uring registered buffers (feature `io-uring`): `O_DIRECT` reads with
//! `READ_FIXED` into pooled buffers, the table kept in step with slabs as
//! they are mapped and trimmed, table overflow, guard pages beside
//! registered buffers, and a multi-threaded stress run.
//!
//! Where io_uring is unavailable (`kernel.io_uring_disabled` not 0, or
//! `io_uring_setup` refused with `ENOSYS`/`EPERM`) or the temporary
//! directory refuses `O_DIRECT`, each test says so on stderr and passes
//! without claiming it ran.
#![cfg(all(feature = "io-uring", target_os = "linux"))]

mod common;

use std::io::{self, Write};
use std::path::PathBuf;
use std::ptr;
use std::sync::Arc;

use common::{child_marker, in_child, no_fault, run_child};
use io_uring::opcode;
use io_uring::types::Fd;
use pagepool::direct::{DirectError, DirectErrorKind, DirectFile};
use pagepool::uring::{self, Registry, RegistryBuilder};
use pagepool::{page_size, BufferPool, Error};
use std::os::fd::AsRawFd;

/// Log lines written by a `tracing_subscriber::fmt` subscriber.
#[derive(Clone, Default)]
struct Log(Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
    type Writer = Log;
    fn make_writer(&'a self) -> Log {
        self.clone()
    }
}

/// A file removed on drop.
struct TempFile {
    path: PathBuf,
    /// Its contents.
    bytes: Vec<u8>,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A file of `len` stamped bytes in the temporary directory, opened with
/// `O_DIRECT`; `None` (said on stderr) where the filesystem refuses it.
fn direct_file(test: &str, len: usize) -> Option<(TempFile, DirectFile)> {
    let path = std::env::temp_dir().join(format!("pagepool-uring-{test}-{}", std::process::id()));
    let mut bytes = vec![0u8; len];
    common::stamp(&mut bytes, 0x5eed);
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()))
        .expect("the temporary file is written");
    let temp = TempFile { path, bytes };
    match DirectFile::open(&temp.path) {
        Ok(file) => Some((temp, file)),
        Err(e) => {
            eprintln!(
                "SKIPPED {test}: {} refuses O_DIRECT: {e}",
                temp.path.display()
            );
            None
        }
    }
}

/// `builder` built on `pool`, or `None` (said on stderr) where io_uring is
/// unavailable.
fn registry(test: &str, pool: &BufferPool, builder: RegistryBuilder) -> Option<Registry> {
    if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if v.trim() != "0" {
            eprintln!("SKIPPED {test}: kernel.io_uring_disabled = {}", v.trim());
            return None;
        }
    }
    match builder.build(pool) {
        Ok(r) => Some(r),
        Err(e) if uring::is_unavailable(&e) => {
            eprintln!("SKIPPED {test}: io_uring_setup refused: {e}");
            None
        }
        Err(e) => panic!("{test}: the registry builds: {e}"),
    }
}

fn pool(name: &str) -> BufferPool {
    BufferPool::builder()
        .name(name)
        .metrics(false)
        .build()
        .expect("valid configuration")
}

/// Submits one `READ_FIXED` of `len` bytes at `offset` into `dst` with
/// table index `index` on ring 0, and returns its result (bytes or -errno).
///
/// # Safety
/// `dst .. dst + len` is memory the caller may write.
unsafe fn raw_read_fixed(
    registry: &Registry,
    file: &DirectFile,
    dst: *mut u8,
    len: u32,
    index: u16,
    offset: u64,
) -> i32 {
    let mut ring = registry
        .ring(0)
        .expect("ring 0")
        .lock()
        .expect("not broken");
    let entry = opcode::ReadFixed::new(Fd(file.as_raw_fd()), dst, len, index)
        .offset(offset)
        .build()
        .user_data(42);
    // SAFETY: the caller's contract; we wait for the completion below.
    unsafe { ring.submission().push(&entry) }.expect("room in the queue");
    loop {
        match ring.submitter().submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("io_uring_enter: {e}"),
        }
        if let Some(done) = ring.pop_completion() {
            assert_eq!(done.user_data(), 42);
            return done.result();
        }
    }
}

/// `READ_FIXED` through `read_fixed` into registered buffers of several
/// page classes, at several offsets, the tail and past the end; contents
/// checked against the file.
#[test]
fn read_fixed_fills_registered_buffers_of_several_classes() {
    let Some((temp, file)) = direct_file("classes", 8 << 20) else {
        return;
    };
    let pool = pool("uring-classes");
    let Some(reg) = registry("classes", &pool, Registry::builder()) else {
        return;
    };
    let page = page_size();
    let a = file.alignment();
    for size in [page, 2 * page, 5 * page, 64 << 10, 100 << 10, 1 << 20] {
        let mut buf = pool.allocate_page_size_buffer(size).unwrap();
        let index = buf.fixed_index(&reg);
        assert!(index.is_some(), "{size}: a page class slot is registered");
        for offset in [0, a as u64, (3 << 20) + 7 * a as u64] {
            let n = reg.read_fixed(&file, &mut buf, offset).unwrap();
            let want = size / a * a;
            assert_eq!((n, buf.len()), (want, want), "{size} at {offset}");
            let at = offset as usize;
            assert!(
                buf[..] == temp.bytes[at..at + n],
                "{size} at {offset}: contents"
            );
        }
        // The tail: fewer bytes than asked, then nothing.
        let last = (temp.bytes.len() - a) as u64;
        assert_eq!(reg.read_fixed(&file, &mut buf, last).unwrap(), a.min(size));
        assert!(buf[..] == temp.bytes[last as usize..][..buf.len()]);
        let end = temp.bytes.len() as u64;
        assert_eq!(reg.read_fixed(&file, &mut buf, end).unwrap(), 0);
        assert!(buf.is_empty());
    }
    eprintln!("RAN classes: READ_FIXED on {} ring(s)", reg.rings());
}

/// The table is the kernel's: a `READ_FIXED` we submit ourselves with the
/// buffer's index lands in it, and one naming another buffer's index is
/// refused (`EFAULT`: the address is outside that entry).
#[test]
fn the_kernel_holds_each_slot_at_its_index() {
    let Some((temp, file)) = direct_file("kernel", 1 << 20) else {
        return;
    };
    let pool = pool("uring-kernel");
    let Some(reg) = registry("kernel", &pool, Registry::builder()) else {
        return;
    };
    let mut a = pool.allocate_page_size_buffer(64 << 10).unwrap();
    let b = pool.allocate_page_size_buffer(64 << 10).unwrap();
    let (ia, ib) = (a.fixed_index(&reg).unwrap(), b.fixed_index(&reg).unwrap());
    assert_ne!(ia, ib);
    let dst = a.as_mut_ptr();
    // SAFETY: `a`'s 64 KiB are ours and outlive the waited read.
    let n = unsafe { raw_read_fixed(&reg, &file, dst, 64 << 10, ia, 4096) };
    assert_eq!(n, 64 << 10);
    a.set_len(n as usize).unwrap();
    assert!(a[..] == temp.bytes[4096..4096 + (64 << 10)]);
    // SAFETY: as above; the kernel refuses before writing anything.
    let n = unsafe { raw_read_fixed(&reg, &file, dst, 4096, ib, 0) };
    assert_eq!(n, -libc::EFAULT, "a's address is not inside b's entry");
    eprintln!("RAN kernel");
}

/// Slots mapped before the registry (replayed) and after it (slab events)
/// get entries; trimmed slabs leave the table, in the kernel too; indices
/// are reused; the pool's shutdown empties the table.
#[test]
fn mapped_slabs_join_and_trimmed_slabs_leave_the_table() {
    let Some((_temp, file)) = direct_file("events", 1 << 20) else {
        return;
    };
    let pool = pool("uring-events");
    let early = pool.allocate_page_size_buffer(4096).unwrap();
    let Some(reg) = registry("events", &pool, Registry::builder()) else {
        return;
    };
    let first = reg.stats();
    assert!(first.registered >= 1, "the slab mapped before is replayed");
    assert!(early.fixed_index(&reg).is_some());

    // A class never used before: its slab is mapped now, and registered.
    let mut late = pool.allocate_page_size_buffer(256 << 10).unwrap();
    let index = late.fixed_index(&reg).expect("registered on mapping");
    let grown = reg.stats();
    assert!(grown.registered > first.registered);
    assert_eq!(grown.registered + grown.free, reg.table_size() as usize);
    assert_eq!(reg.read_fixed(&file, &mut late, 0).unwrap(), 256 << 10);

    // Trim the 256 KiB slab: its entries leave the table...
    let dst = late.as_mut_ptr();
    drop(late);
    assert!(pool.trim() > 0);
    let trimmed = reg.stats();
    assert_eq!(trimmed.registered, first.registered);
    assert_eq!(trimmed.unregistered, 0);
    // ...in the kernel too: the freed index is an empty entry now (the
    // address is the old slot's, unmapped: the kernel checks the index
    // first and never touches it).
    let mut scratch = pool.allocate_page_size_buffer(4096).unwrap();
    // SAFETY: the read is refused before any byte moves (empty entry); the
    // pointer is kept only to show that nothing is registered under it.
    let n = unsafe { raw_read_fixed(&reg, &file, dst, 4096, index, 0) };
    assert_eq!(n, -libc::EFAULT, "a cleared entry refuses fixed reads");
    // The index comes back for the next slab mapped.
    let again = pool.allocate_page_size_buffer(512 << 10).unwrap();
    assert!(again.fixed_index(&reg).is_some());
    assert_eq!(reg.read_fixed(&file, &mut scratch, 0).unwrap(), 4096);
    drop((early, again, scratch));

    // The pool's last handle goes: once idle it shuts down and unmaps all.
    drop(pool);
    assert_eq!(reg.stats().registered, 0);
    assert_eq!(reg.stats().free, reg.table_size() as usize);
    eprintln!("RAN events");
}

/// A table smaller than the slab: the first slots get entries, the rest
/// are read with plain `IORING_OP_READ`, just as correctly, and the slab
/// that did not fit is reported through `tracing`.
#[test]
fn slots_beyond_the_table_are_read_unregistered() {
    let Some((temp, file)) = direct_file("overflow", 2 << 20) else {
        return;
    };
    let pool = pool("uring-overflow");
    let Some(reg) = registry("overflow", &pool, Registry::builder().table_size(4)) else {
        return;
    };
    // More buffers than one slab's slots, so every slot of the first slab
    // (whichever of them the table covers) is handed out. The slabs are
    // mapped on this thread, under a subscriber that keeps the warnings.
    let log = Log::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .finish();
    let mut bufs: Vec<_> = tracing::subscriber::with_default(subscriber, || {
        (0..160)
            .map(|_| pool.allocate_page_size_buffer(16 << 10).unwrap())
            .collect()
    });
    let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("WARN") && logged.contains("the io_uring buffer table is full"),
        "a warning for the slab that does not fit: {logged:?}"
    );
    let registered = bufs
        .iter()
        .filter(|b| b.fixed_index(&reg).is_some())
        .count();
    assert_eq!(registered, 4, "the table holds 4");
    let stats = reg.stats();
    assert_eq!((stats.registered, stats.free), (4, 0));
    assert!(stats.unregistered >= 156);
    for (k, buf) in bufs.iter_mut().enumerate() {
        let offset = (k * 4096) as u64;
        assert_eq!(reg.read_fixed(&file, buf, offset).unwrap(), 16 << 10);
        assert!(buf[..] == temp.bytes[k * 4096..][..16 << 10], "buffer {k}");
    }
    eprintln!("RAN overflow");
}

/// A caller's bad input is refused before the kernel sees it, with the
/// `DirectError`s of `DirectFile::read_at`; small slots and other pools'
/// buffers are unregistered and read plainly; bad settings are refused.
#[test]
fn bad_input_is_refused_and_foreign_buffers_read_plainly() {
    let p = pool("uring-bad");
    for b in [
        Registry::builder().rings(0),
        Registry::builder().rings(65),
        Registry::builder().entries(0),
        Registry::builder().table_size(0),
        Registry::builder().table_size(uring::MAX_TABLE_SIZE + 1),
    ] {
        assert!(matches!(b.build(&p), Err(Error::InvalidConfig(_))));
    }
    let Some((temp, file)) = direct_file("bad", 1 << 20) else {
        return;
    };
    let Some(reg) = registry("bad", &p, Registry::builder()) else {
        return;
    };
    let mut buf = p.allocate_page_size_buffer(8192).unwrap();
    buf.extend_from_slice(b"kept").unwrap();
    let e = reg.read_fixed(&file, &mut buf, 1).unwrap_err();
    assert!(matches!(
        DirectError::of(&e).map(|d| d.kind()),
        Some(DirectErrorKind::MisalignedOffset { offset: 1, .. })
    ));
    assert_eq!(&buf[..], b"kept", "untouched");
    let mut packet = p.allocate_buffer(1500).unwrap();
    assert_eq!(
        packet.fixed_index(&reg),
        None,
        "small classes are not registered"
    );
    // 64-byte aligned, 1500 bytes: below the alignment or off it.
    let e = reg.read_fixed(&file, &mut packet, 0).unwrap_err();
    assert!(matches!(
        DirectError::of(&e).map(|d| d.kind()),
        Some(DirectErrorKind::BufferTooSmall { .. } | DirectErrorKind::MisalignedBuffer { .. })
    ));
    let other = pool("uring-other");
    let mut foreign = other.allocate_page_size_buffer(8192).unwrap();
    assert_eq!(foreign.fixed_index(&reg), None, "another pool's buffer");
    assert_eq!(reg.read_fixed(&file, &mut foreign, 0).unwrap(), 8192);
    assert!(foreign[..] == temp.bytes[..8192]);
    // Leaving: the pool keeps working without the registry.
    drop(reg);
    drop(buf);
    assert!(p.trim() > 0);
    eprintln!("RAN bad");
}

/// Printed by the guard child after its fixed read succeeded, right before
/// the faulting write.
const READ_OK: &str = "READ_FIXED OK";

/// A guard page right after a registered buffer still faults, and the
/// fault handler still names the buffer.
#[test]
fn a_guard_page_beside_a_registered_buffer_faults() {
    const TEST: &str = "a_guard_page_beside_a_registered_buffer_faults";
    if in_child("guard") {
        pagepool::install_fault_handler().unwrap();
        let (_temp, file) = direct_file("guard-child", 1 << 20).expect("checked by the parent");
        let pool = pool("uring-guard");
        let reg = Registry::new(&pool).expect("checked by the parent");
        let mut buf = pool.allocate_page_size_buffer(64 << 10).unwrap();
        assert!(buf.fixed_index(&reg).is_some());
        assert_eq!(reg.read_fixed(&file, &mut buf, 0).unwrap(), 64 << 10);
        child_marker(READ_OK);
        let end = buf.slot_len();
        // SAFETY: none; the write is meant to hit the guard page after the
        // slot and kill the process.
        unsafe { ptr::write_volatile(buf.as_mut_ptr().add(end), 1) };
        no_fault();
    }
    // Check in the parent, so the child never skips.
    let Some((_temp, _file)) = direct_file("guard", 4096) else {
        return;
    };
    let p = pool("uring-guard-parent");
    let Some(reg) = registry("guard", &p, Registry::builder()) else {
        return;
    };
    drop(reg);
    let out = run_child(TEST, "guard");
    out.assert_sigsegv(&[READ_OK]);
    for needle in [
        "heap-buffer-overflow",
        "pool \"uring-guard\", max_len 65536",
    ] {
        assert!(
            out.stderr.contains(needle),
            "the fault report lacks {needle:?}:\n{}",
            out.stderr
        );
    }
    eprintln!("RAN guard");
}

/// Several threads allocate buffers of several classes, read stamped file
/// ranges into them through two rings, verify them, and trim, while slabs
/// come and go under the registry.
#[test]
fn threads_read_verify_and_trim_under_the_registry() {
    let Some((temp, file)) = direct_file("stress", 16 << 20) else {
        return;
    };
    let pool = pool("uring-stress");
    let Some(reg) = registry("stress", &pool, Registry::builder().rings(2).table_size(64)) else {
        return;
    };
    let (temp, file, reg) = (Arc::new(temp), Arc::new(file), Arc::new(reg));
    let a = file.alignment();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (temp, file, reg, pool) = (temp.clone(), file.clone(), reg.clone(), pool.clone());
            std::thread::spawn(move || {
                let sizes = [4096, 12 << 10, 64 << 10, 200 << 10, 1 << 20];
                let mut fixed = 0;
                let mut x = t.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                for round in 0..300 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let size = sizes[(x % sizes.len() as u64) as usize];
                    let blocks = (temp.bytes.len() - size) / a;
                    let offset = (x >> 8) as usize % blocks * a;
                    let mut buf = pool.allocate_page_size_buffer(size).unwrap();
                    fixed += usize::from(buf.fixed_index(&reg).is_some());
                    let n = reg.read_fixed(&file, &mut buf, offset as u64).unwrap();
                    assert_eq!(n, size / a * a);
                    assert!(
                        buf[..] == temp.bytes[offset..offset + n],
                        "thread {t} round {round}"
                    );
                    if round % 25 == 0 {
                        drop(buf);
                        pool.trim();
                    }
                }
                fixed
            })
        })
        .collect();
    let fixed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(fixed > 0, "some reads were fixed");
    let stats = reg.stats();
    assert_eq!(stats.retired, 0);
    assert_eq!(stats.registered + stats.free, 64);
    eprintln!("RAN stress: {fixed} of 1200 reads READ_FIXED");
}

/// Does nothing: its point is to interrupt system calls (no `SA_RESTART`).
extern "C" fn on_signal(_: libc::c_int) {}

/// Signals that interrupt `read_fixed`'s wait (`io_uring_enter` returns
/// `EINTR` with the read in flight) are waited out: every read completes
/// into its buffer, contents intact, before the call returns.
#[test]
fn interrupted_waits_are_waited_out() {
    let Some((temp, file)) = direct_file("eintr", 32 << 20) else {
        return;
    };
    let pool = pool("uring-eintr");
    let Some(reg) = registry("eintr", &pool, Registry::builder()) else {
        return;
    };
    // SAFETY: `sigaction` is plain data (all zeroes valid); the handler is
    // async-signal-safe (it does nothing), and without SA_RESTART blocking
    // calls of the signalled thread return EINTR.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, ptr::null_mut()), 0);
    }
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            // SAFETY: `pthread_self` has no preconditions.
            tx.send(unsafe { libc::pthread_self() }).unwrap();
            let a = file.alignment();
            for round in 0..200usize {
                let mut buf = pool.allocate_page_size_buffer(1 << 20).unwrap();
                assert!(buf.fixed_index(&reg).is_some());
                let offset = round * 7 % 31 * (1 << 20) + round % 5 * a;
                let n = reg.read_fixed(&file, &mut buf, offset as u64).unwrap();
                assert_eq!(n, 1 << 20);
                assert!(buf[..] == temp.bytes[offset..offset + n], "round {round}");
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        })
    };
    let thread = rx.recv().unwrap();
    let mut sent = 0u32;
    while !done.load(std::sync::atomic::Ordering::Acquire) {
        // SAFETY: the thread is alive until `done`; SIGUSR2 has a handler.
        // A signal sent just as it exits is harmless: `join` below waits
        // for it, and `pthread_kill` on an exiting thread only fails.
        unsafe { libc::pthread_kill(thread, libc::SIGUSR2) };
        sent += 1;
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
    reader.join().unwrap();
    eprintln!("RAN eintr: {sent} signals during 200 reads");
}

/// When the kernel refuses table updates (here because the table was
/// unregistered behind the registry's back, through the ring's submitter),
/// newly mapped slots stay unregistered and are read plainly, entries that
/// cannot be cleared are retired, both with a warning, and nothing breaks.
#[test]
fn refused_updates_leave_slots_unregistered_and_retire_entries() {
    let Some((temp, file)) = direct_file("refused", 4 << 20) else {
        return;
    };
    let pool = pool("uring-refused");
    let Some(reg) = registry("refused", &pool, Registry::builder()) else {
        return;
    };
    let early = pool.allocate_page_size_buffer(8192).unwrap();
    assert!(early.fixed_index(&reg).is_some());
    let before = reg.stats();
    {
        let ring = reg.ring(0).unwrap().lock().unwrap();
        ring.submitter().unregister_buffers().unwrap();
    }
    let log = Log::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        // A new class: its slab's update is refused.
        let mut late = pool.allocate_page_size_buffer(128 << 10).unwrap();
        assert_eq!(late.fixed_index(&reg), None, "refused, so unregistered");
        assert_eq!(reg.read_fixed(&file, &mut late, 4096).unwrap(), 128 << 10);
        assert!(late[..] == temp.bytes[4096..4096 + (128 << 10)]);
        assert!(reg.stats().unregistered > 0);
        // Trimming the first slab: its entries cannot be cleared, so they
        // are retired, never handed out again.
        drop((early, late));
        assert!(pool.trim() > 0);
    });
    let after = reg.stats();
    assert_eq!(after.registered, 0);
    assert_eq!(after.retired, before.registered);
    assert_eq!(after.free + after.retired, reg.table_size() as usize);
    assert_eq!(after.unregistered, 0, "both slabs are gone");
    let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    for needle in [
        "the kernel refused to register slots",
        "the kernel refused to clear io_uring buffer entries",
    ] {
        assert!(logged.contains(needle), "{needle:?} in {logged:?}");
    }
    eprintln!("RAN refused");
}
