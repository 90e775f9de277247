//! `O_DIRECT` reads straight into a `PageBuffer` (Linux): the point of
//! page-aligned buffers. The file lives under `CARGO_TARGET_TMPDIR`.
#![cfg(target_os = "linux")]

mod common;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use common::{assert_stamped, stamp};
use pagepool::{page_size, BufferPool, PageBuffer};

const MIB: usize = 1 << 20;

/// Filesystems known to check the alignment of `O_DIRECT` buffers (rather
/// than accept any buffer or fall back to the page cache): ext2/3/4 and XFS.
const STRICT_FILESYSTEMS: [i64; 2] = [0xef53, 0x5846_5342];

/// Writes a 1 MiB file holding `id`'s stamp, flushed to the disk.
fn pattern_file(name: &str, id: u64) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}-{}.bin", std::process::id()));
    let mut data = vec![0u8; MIB];
    stamp(&mut data, id);
    let mut f = File::create(&path).unwrap();
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
    path
}

fn open_direct(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

fn refused(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

/// The `statfs` magic number of the filesystem holding `path`.
fn fs_magic(path: &Path) -> i64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `statfs` fills the zeroed struct we own and reads the C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; both pointers are valid for the call.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statfs: {}", io::Error::last_os_error());
    #[allow(clippy::unnecessary_cast)] // `f_type`'s type differs between targets
    let magic = st.f_type as i64;
    magic
}

/// Reads all of `f` into `buf`'s max slice with `read` calls of whole blocks,
/// as O_DIRECT requires; returns the bytes read.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read(&mut buf[done..])? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

#[test]
fn o_direct_read_into_a_page_buffer() {
    let path = pattern_file("o-direct", 0xd1);
    let pool = BufferPool::builder().name("direct-io").build().unwrap();
    let mut buf: PageBuffer = pool.allocate_page_size_buffer(MIB).unwrap();
    assert_eq!(buf.as_ptr() as usize % page_size(), 0);
    buf.as_max_slice_mut().fill(0);

    let mut f = match open_direct(&path) {
        Ok(f) => f,
        Err(e) if refused(&e) => {
            println!("O_DIRECT refused by this filesystem: skipped ({e})");
            std::fs::remove_file(&path).ok();
            return;
        }
        Err(e) => panic!("opening {} with O_DIRECT: {e}", path.display()),
    };
    let n = match read_full(&mut f, buf.as_max_slice_mut()) {
        Ok(n) => n,
        Err(e) if refused(&e) => {
            println!("O_DIRECT refused by this filesystem: skipped ({e})");
            std::fs::remove_file(&path).ok();
            return;
        }
        Err(e) => panic!("O_DIRECT read into a page buffer: {e}"),
    };
    assert_eq!(n, MIB, "the whole file was read");
    buf.set_len(n).unwrap();
    assert_eq!(buf.len(), MIB);
    assert_stamped(&buf, 0xd1);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn o_direct_needs_the_alignment() {
    let path = pattern_file("o-direct-misaligned", 0xd2);
    let magic = fs_magic(&path);
    let pool = BufferPool::builder().name("direct-io").build().unwrap();
    let mut buf = pool.allocate_page_size_buffer(MIB).unwrap();

    let mut f = match open_direct(&path) {
        Ok(f) => f,
        Err(e) if refused(&e) => {
            println!("O_DIRECT refused by this filesystem: skipped ({e})");
            std::fs::remove_file(&path).ok();
            return;
        }
        Err(e) => panic!("opening {} with O_DIRECT: {e}", path.display()),
    };
    // The aligned read works here (else O_DIRECT is refused altogether)...
    match f.read(&mut buf.as_max_slice_mut()[..page_size()]) {
        Ok(n) => assert_eq!(n, page_size()),
        Err(e) if refused(&e) => {
            println!("O_DIRECT refused by this filesystem: skipped ({e})");
            std::fs::remove_file(&path).ok();
            return;
        }
        Err(e) => panic!("aligned O_DIRECT read: {e}"),
    }
    // ...and the same read one byte off the page boundary does not.
    let misaligned = f.read(&mut buf.as_max_slice_mut()[1..=page_size()]);
    std::fs::remove_file(&path).unwrap();
    match misaligned {
        Err(e) => assert!(refused(&e), "misaligned O_DIRECT read: {e}"),
        Ok(n) if STRICT_FILESYSTEMS.contains(&magic) => panic!(
            "a misaligned O_DIRECT read of {n} bytes succeeded on a filesystem \
             (magic {magic:#x}) that checks alignment"
        ),
        Ok(n) => println!(
            "this filesystem (magic {magic:#x}) served a misaligned O_DIRECT read \
             ({n} bytes) instead of refusing it; alignment not demonstrated here"
        ),
    }
}
