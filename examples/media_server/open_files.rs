//! Media files kept open between requests (`--open-files`), as nginx's
//! `open_file_cache` keeps them, but checked on every request: one `statx`
//! of the path (no open, no `fstat`, no close) must find the very file that
//! was opened (device, inode, size, modification and change times), else
//! it is opened again. A file rewritten or replaced is never served stale;
//! a deleted one's descriptor closes when its path is next asked for, or
//! at the next open of another file once unused for [`IDLE`].

use std::collections::HashMap;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pagepool::direct::DirectFile;

use crate::conditional::Validators;

/// An entry unused this long is closed at the next open.
pub const IDLE: Duration = Duration::from_secs(30);

/// An open media file and what its `fstat` said.
#[derive(Debug, Clone)]
pub struct Opened {
    pub file: Arc<DirectFile>,
    pub size: u64,
    pub validators: Validators,
    /// Whether `O_DIRECT` was tried (the open may have fallen back).
    pub try_direct: bool,
}

impl Opened {
    /// `file` with what its `fstat` says (size, validators), and the
    /// `fstat` itself.
    pub fn of(file: DirectFile, try_direct: bool) -> io::Result<(Opened, Metadata)> {
        let meta = file.as_file().metadata()?;
        let opened = Opened {
            size: meta.len(),
            validators: Validators::of(&meta),
            file: Arc::new(file),
            try_direct,
        };
        Ok((opened, meta))
    }
}

/// What tells one version of a file from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    fn of(m: &Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

#[derive(Debug)]
struct Entry {
    id: FileId,
    opened: Opened,
    used: Instant,
}

/// At most `capacity` open files by path (0: every request opens its own).
#[derive(Debug)]
pub struct OpenFiles {
    entries: Mutex<HashMap<PathBuf, Entry>>,
    capacity: usize,
}

/// Whether [`OpenFiles::open`] found the file open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Open,
    Opened,
}

impl OpenFiles {
    pub fn new(capacity: usize) -> OpenFiles {
        OpenFiles {
            entries: Mutex::default(),
            capacity,
        }
    }

    /// The regular file at `path`: the open one if it is still the file
    /// there, else `open(path, its statx)` (which returns the file and its
    /// own `fstat`), kept if nothing replaced the file in between. Not a
    /// regular file (a directory, or a FIFO whose open would block):
    /// `NotFound`.
    pub fn open(
        &self,
        path: &Path,
        wants_direct: impl FnOnce(&Metadata) -> bool,
        open: impl FnOnce(&Path, bool) -> io::Result<(Opened, Metadata)>,
    ) -> io::Result<(Opened, Found)> {
        let meta = match std::fs::metadata(path) {
            Ok(m) if m.is_file() => m,
            gone => {
                // Deleted, or something else now: close what we held.
                if self.capacity > 0 {
                    self.lock().remove(path);
                }
                return Err(gone.err().unwrap_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "not a regular file")
                }));
            }
        };
        let id = FileId::of(&meta);
        let try_direct = wants_direct(&meta);
        if self.capacity > 0 {
            let mut entries = self.lock();
            if let Some(e) = entries.get_mut(path) {
                if e.id == id && e.opened.try_direct == try_direct {
                    e.used = Instant::now();
                    return Ok((e.opened.clone(), Found::Open));
                }
                entries.remove(path); // another file now, or another mode
            }
        }
        let (opened, fstat) = open(path, try_direct)?;
        if self.capacity > 0 && FileId::of(&fstat) == id {
            self.keep(path, id, opened.clone());
        }
        Ok((opened, Found::Opened))
    }

    /// Files open now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn keep(&self, path: &Path, id: FileId, opened: Opened) {
        let now = Instant::now();
        let mut entries = self.lock();
        entries.retain(|_, e| now.duration_since(e.used) < IDLE);
        if entries.len() >= self.capacity {
            // Full of files in use: one makes way (any; a miss reopens it).
            if let Some(victim) = entries.keys().next().cloned() {
                entries.remove(&victim);
            }
        }
        entries.insert(
            path.to_owned(),
            Entry {
                id,
                opened,
                used: now,
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Entry>> {
        // A panic while holding it leaves the map whole.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::TempDir;

    /// Opens buffered, counting the opens.
    fn open_counted(
        opens: &mut u32,
    ) -> impl FnMut(&Path, bool) -> io::Result<(Opened, Metadata)> + '_ {
        move |path, try_direct| {
            *opens += 1;
            Opened::of(DirectFile::open_buffered(path)?, try_direct)
        }
    }

    fn get(files: &OpenFiles, path: &Path, opens: &mut u32) -> io::Result<(Opened, Found)> {
        files.open(path, |_| false, open_counted(opens))
    }

    #[test]
    fn an_unchanged_file_stays_open_and_a_changed_one_is_opened_again() {
        let dir = TempDir::new("open-files");
        dir.file("a.ts", 5000);
        let path = dir.0.join("a.ts");
        let files = OpenFiles::new(4);
        let mut opens = 0;
        let (first, found) = get(&files, &path, &mut opens).unwrap();
        assert_eq!((found, opens), (Found::Opened, 1));
        let (again, found) = get(&files, &path, &mut opens).unwrap();
        assert_eq!((found, opens), (Found::Open, 1));
        assert!(Arc::ptr_eq(&first.file, &again.file));

        // Rewritten in place: same inode, another size and times.
        std::fs::write(&path, b"shorter").unwrap();
        let (rewritten, found) = get(&files, &path, &mut opens).unwrap();
        assert_eq!((found, opens, rewritten.size), (Found::Opened, 2, 7));
        assert_ne!(rewritten.validators.etag, first.validators.etag);

        // Replaced by a rename: another inode.
        let tmp = dir.0.join("a.ts.new");
        std::fs::write(&tmp, b"renamed").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let (renamed, found) = get(&files, &path, &mut opens).unwrap();
        assert_eq!((found, opens), (Found::Opened, 3));
        let mut buf = pagepool::BufferPool::new()
            .allocate_page_size_buffer(4096)
            .unwrap();
        assert_eq!(renamed.file.read_at(&mut buf, 0).unwrap(), 7);
        assert_eq!(&buf[..], b"renamed");

        // Deleted: not found, and no longer held open.
        std::fs::remove_file(&path).unwrap();
        let e = get(&files, &path, &mut opens).unwrap_err();
        assert_eq!((e.kind(), files.len()), (io::ErrorKind::NotFound, 0));
        dir.file("a.ts", 10);
        get(&files, &path, &mut opens).unwrap();
        assert_eq!((opens, files.len()), (4, 1));
    }

    #[test]
    fn the_cache_is_bounded_and_zero_turns_it_off() {
        let dir = TempDir::new("open-files-bound");
        let files = OpenFiles::new(3);
        let off = OpenFiles::new(0);
        let mut opens = 0;
        let mut opens_off = 0;
        for i in 0..10 {
            dir.file(&format!("{i}.ts"), 100);
            let path = dir.0.join(format!("{i}.ts"));
            get(&files, &path, &mut opens).unwrap();
            assert!(files.len() <= 3);
            for _ in 0..2 {
                let (_, found) = get(&off, &path, &mut opens_off).unwrap();
                assert_eq!(found, Found::Opened);
            }
        }
        assert_eq!((files.len(), off.len(), opens_off), (3, 0, 20));
    }

    #[test]
    fn another_read_mode_or_a_directory_is_not_taken_for_the_open_file() {
        let dir = TempDir::new("open-files-mode");
        dir.file("b.ts", 100);
        let path = dir.0.join("b.ts");
        let files = OpenFiles::new(4);
        let mut opens = 0;
        files
            .open(&path, |_| false, open_counted(&mut opens))
            .unwrap();
        let (o, found) = files
            .open(&path, |_| true, open_counted(&mut opens))
            .unwrap();
        assert_eq!((found, o.try_direct, opens), (Found::Opened, true, 2));
        let e = get(&files, &dir.0, &mut opens).unwrap_err();
        assert_eq!((e.kind(), opens), (io::ErrorKind::NotFound, 2));
    }
}
