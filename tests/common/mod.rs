//! Helpers shared by the integration tests: a child-process harness for code
//! that must fault, and stamping/verification of buffer contents.
//!
//! Every test binary that says `mod common;` compiles this file, and none of
//! them uses every helper.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The environment variable that tells a re-run test binary which case to run
/// as a child.
pub const CHILD_ENV: &str = "PAGEPOOL_CHILD";

/// Exit code of a child whose faulting access did not fault. libtest itself
/// exits with 101 when a test panics, so a distinct code tells the two apart.
pub const NO_FAULT_EXIT: i32 = 86;

/// Printed by a child that survived its faulting access.
pub const NO_FAULT_MARKER: &str = "NO FAULT";

/// How long a child may run before the parent kills it and fails.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether this process is the child started by [`run_child`] for `case`.
///
/// In the child it also turns core dumps off, so the intended `SIGSEGV` does
/// not leave a core file behind on machines that keep them.
pub fn in_child(case: &str) -> bool {
    let is_child = std::env::var_os(CHILD_ENV).is_some_and(|v| v == case);
    if is_child {
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `setrlimit` only reads the struct we pass; lowering our own
        // core-size limit has no effect on memory safety.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) };
    }
    is_child
}

/// Prints `marker` on its own line and flushes stdout, so the parent sees it
/// even if the child is killed by a signal right afterwards. (It starts with a
/// newline: libtest leaves its `test name ... ` line open while the test runs.)
pub fn child_marker(marker: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n{marker}").expect("stdout is writable");
    out.flush().expect("stdout flushes");
}

/// Ends a child whose faulting access returned: prints [`NO_FAULT_MARKER`] and
/// exits with [`NO_FAULT_EXIT`]. Never returns, so the test cannot pass in the
/// child by falling off the end.
pub fn no_fault() -> ! {
    child_marker(NO_FAULT_MARKER);
    std::process::exit(NO_FAULT_EXIT);
}

/// What a child process did.
#[derive(Debug)]
pub struct ChildOutput {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl ChildOutput {
    fn describe(&self) -> String {
        format!(
            "status: {:?} (signal {:?}, code {:?})\n--- child stdout ---\n{}\n--- child stderr ---\n{}",
            self.status,
            self.status.signal(),
            self.status.code(),
            self.stdout,
            self.stderr
        )
    }

    /// Asserts that every marker in `markers` appears on a line of stdout.
    pub fn assert_markers(&self, markers: &[&str]) {
        for m in markers {
            assert!(
                self.stdout.lines().any(|l| l.trim() == *m),
                "child never printed {m:?}; it did not get that far\n{}",
                self.describe()
            );
        }
    }

    /// Asserts the child was killed by `SIGSEGV` after printing `markers`.
    pub fn assert_sigsegv(&self, markers: &[&str]) {
        assert_eq!(
            self.status.signal(),
            Some(libc::SIGSEGV),
            "expected the child to die of SIGSEGV\n{}",
            self.describe()
        );
        assert!(
            !self.stdout.contains(NO_FAULT_MARKER),
            "child reported no fault\n{}",
            self.describe()
        );
        self.assert_markers(markers);
    }

    /// Asserts the child ran its one test to success, after printing `markers`.
    pub fn assert_success(&self, markers: &[&str]) {
        assert!(
            self.status.success(),
            "expected the child to succeed\n{}",
            self.describe()
        );
        assert!(
            self.stdout.contains("test result: ok. 1 passed"),
            "the child did not run exactly one passing test\n{}",
            self.describe()
        );
        self.assert_markers(markers);
    }

    /// The value printed by the child as a line `key=value`, parsed.
    pub fn value<T: std::str::FromStr>(&self, key: &str) -> T {
        let prefix = format!("{key}=");
        let line = self
            .stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("child printed no {key}=...\n{}", self.describe()));
        line.parse()
            .ok()
            .unwrap_or_else(|| panic!("cannot parse {key}={line}\n{}", self.describe()))
    }
}

/// Re-runs this test binary with `--exact <test_name> --nocapture
/// --test-threads=1` and `PAGEPOOL_CHILD=<case>`, so that only `test_name`
/// runs, in a child process, and [`in_child`]`(case)` is true there.
///
/// `test_name` is the test's path inside its binary (the function name for a
/// test at the top of a `tests/*.rs` file). Waits at most two minutes.
pub fn run_child(test_name: &str, case: &str) -> ChildOutput {
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    let mut child = Command::new(exe)
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, case)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the test binary can be re-run");

    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes).expect("child pipe reads");
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr is piped")));

    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the child works") {
            break status;
        }
        if Instant::now() > deadline {
            // Our own child, by its handle.
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {test_name} ({case}) ran longer than {CHILD_TIMEOUT:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = ChildOutput {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    assert!(
        out.stdout.contains("running 1 test"),
        "`--exact {test_name}` did not select exactly one test in the child\n{}",
        out.describe()
    );
    out
}

/// The 64-bit word at word index `i` of the stamp of buffer `id`: unique for
/// every (`id` < 2^32, `i` < 2^32), so a byte from another buffer or another
/// offset never passes for it.
#[inline]
fn stamp_word(id: u64, i: usize) -> u64 {
    ((id << 32) | (i as u64 & 0xffff_ffff)) ^ 0xa5c3_5a3c_9669_c33c
}

/// The byte at `offset` of the stamp of buffer `id`.
#[inline]
pub fn stamp_byte(id: u64, offset: usize) -> u8 {
    stamp_word(id, offset / 8).to_le_bytes()[offset % 8]
}

/// Fills all of `bytes` with a pattern unique to `id` and to each offset: byte
/// `o` is `stamp_byte(id, o)`. Works a word at a time when `bytes` starts on
/// an 8-byte boundary (every buffer does), so debug builds stay quick.
pub fn stamp(bytes: &mut [u8], id: u64) {
    if !(bytes.as_ptr() as usize).is_multiple_of(8) {
        for (off, b) in bytes.iter_mut().enumerate() {
            *b = stamp_byte(id, off);
        }
        return;
    }
    // SAFETY: every bit pattern is a valid `u64` and a valid `u8`, so viewing
    // the aligned middle of a byte slice as words is sound.
    let (pre, mid, post) = unsafe { bytes.align_to_mut::<u64>() };
    assert!(pre.is_empty(), "an 8-aligned slice has no unaligned prefix");
    for (i, w) in mid.iter_mut().enumerate() {
        *w = u64::from_le(stamp_word(id, i));
    }
    let post_start = mid.len() * 8;
    for (k, b) in post.iter_mut().enumerate() {
        *b = stamp_byte(id, post_start + k);
    }
}

/// The first offset of `bytes` that does not hold `id`'s stamp, if any.
pub fn first_mismatch(bytes: &[u8], id: u64) -> Option<usize> {
    if !(bytes.as_ptr() as usize).is_multiple_of(8) {
        return bytes
            .iter()
            .enumerate()
            .position(|(off, &b)| b != stamp_byte(id, off));
    }
    // SAFETY: as in `stamp`.
    let (pre, mid, post) = unsafe { bytes.align_to::<u64>() };
    assert!(pre.is_empty(), "an 8-aligned slice has no unaligned prefix");
    if let Some(i) = mid
        .iter()
        .enumerate()
        .position(|(i, &w)| w != u64::from_le(stamp_word(id, i)))
    {
        let word_start = i * 8;
        return (word_start..word_start + 8).find(|&o| bytes[o] != stamp_byte(id, o));
    }
    let post_start = mid.len() * 8;
    post.iter()
        .enumerate()
        .position(|(k, &b)| b != stamp_byte(id, post_start + k))
        .map(|k| post_start + k)
}

/// Asserts `bytes` holds `id`'s stamp everywhere.
#[track_caller]
pub fn assert_stamped(bytes: &[u8], id: u64) {
    if let Some(off) = first_mismatch(bytes, id) {
        panic!(
            "buffer {id}: byte {off} of {} is {:#04x}, stamp says {:#04x}",
            bytes.len(),
            bytes[off],
            stamp_byte(id, off)
        );
    }
}

/// `vm.max_map_count` as the library reads it (65,530 when unreadable).
pub fn max_map_count() -> usize {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65_530)
}

/// Whether `addr` lies in any mapping listed in `/proc/self/maps`.
pub fn is_mapped(addr: usize) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps is readable");
    maps.lines().any(|line| {
        let range = line
            .split_whitespace()
            .next()
            .expect("a maps line has a range");
        let (start, end) = range.split_once('-').expect("a range has a dash");
        let start = usize::from_str_radix(start, 16).expect("hex start");
        let end = usize::from_str_radix(end, 16).expect("hex end");
        (start..end).contains(&addr)
    })
}

/// Whether this kernel accepts `madvise(MADV_GUARD_INSTALL)` (Linux 6.13+),
/// probed on a scratch mapping of our own: an oracle independent of
/// `pagepool::guard_markers_supported`, which the tests compare against it.
#[cfg(target_os = "linux")]
pub fn kernel_has_guard_markers() -> bool {
    const MADV_GUARD_INSTALL: libc::c_int = 102;
    // SAFETY: `sysconf` has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).expect("page size");
    // SAFETY: a fresh private anonymous mapping that only this function uses;
    // the guard goes on its middle page, and the whole mapping is unmapped
    // before returning. Nothing dereferences it.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            3 * page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "scratch mmap");
        let ok = libc::madvise(p.cast::<u8>().add(page).cast(), page, MADV_GUARD_INSTALL) == 0;
        assert_eq!(libc::munmap(p, 3 * page), 0, "scratch munmap");
        ok
    }
}

#[cfg(not(target_os = "linux"))]
pub fn kernel_has_guard_markers() -> bool {
    false
}

/// A pool capped at one slab of four one-page slots (guard pages included),
/// and those four buffers.
pub fn full_pool(name: &str) -> (pagepool::BufferPool, Vec<pagepool::PageBuffer>) {
    let page = pagepool::page_size();
    let pool = pagepool::BufferPool::builder()
        .name(name)
        .max_bytes(9 * page)
        .slab_size(4 * page)
        .build()
        .unwrap();
    let held: Vec<pagepool::PageBuffer> = (0..4)
        .map(|_| pool.allocate_page_size_buffer(page).unwrap())
        .collect();
    assert!(matches!(
        pool.allocate_page_size_buffer(page),
        Err(pagepool::Error::Exhausted { .. })
    ));
    (pool, held)
}

/// The names of this process's threads (`/proc/self/task/*/comm`).
pub fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim_end().to_owned())
        .collect()
}
