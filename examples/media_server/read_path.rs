//! How media files are read (`--read-path`): through io_uring into
//! registered pooled buffers (`uring.rs`, feature `io-uring`), or with a
//! `pread` on tokio's blocking pool. `auto` takes io_uring where the build
//! has it, the kernel allows it and `O_DIRECT` is on; the startup banner
//! says which runs. A buffered read whose bytes are all in the page cache
//! takes neither: the worker copies them (`DirectFile::try_read_cached_at`).
//! The `x-pagepool-read-path` header and the `path` label of
//! `media_server_read_bytes_total` say which path a read took.

use std::sync::Arc;

use pagepool::BufferPool;

#[cfg(feature = "io-uring")]
pub use crate::uring::{Slot, UringReads};

/// The response header naming the read path.
pub const READ_PATH_HEADER: &str = "x-pagepool-read-path";

/// `--read-path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Auto,
    IoUring,
    Blocking,
}

impl std::str::FromStr for Choice {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Choice, &'static str> {
        match s {
            "auto" => Ok(Choice::Auto),
            "io_uring" => Ok(Choice::IoUring),
            "blocking" => Ok(Choice::Blocking),
            _ => Err("not auto, io_uring or blocking"),
        }
    }
}

/// The path a read took: the header value and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPath {
    IoUring,
    Blocking,
    /// A buffered read the page cache served on the worker.
    PageCache,
}

impl ReadPath {
    pub fn label(self) -> &'static str {
        match self {
            ReadPath::IoUring => "io_uring",
            ReadPath::Blocking => "blocking",
            ReadPath::PageCache => "page_cache",
        }
    }
}

/// The io_uring path, for a build without feature `io-uring`: never made.
#[cfg(not(feature = "io-uring"))]
#[derive(Debug)]
pub enum UringReads {}

/// A completion slot, for a build without feature `io-uring`: never used.
#[cfg(not(feature = "io-uring"))]
#[derive(Debug, Default)]
pub struct Slot;

#[cfg(not(feature = "io-uring"))]
impl UringReads {
    pub async fn read(
        &self,
        _slot: &Arc<Slot>,
        _file: &Arc<pagepool::direct::DirectFile>,
        buf: pagepool::PageBuffer,
        _offset: u64,
    ) -> (pagepool::PageBuffer, std::io::Result<usize>) {
        drop(buf);
        match *self {}
    }
}

/// The io_uring reads `choice` asks for, given whether `O_DIRECT` is on;
/// `Err` when `io_uring` was asked for and cannot be had. Logs the choice.
pub fn choose(
    choice: Choice,
    direct: bool,
    pool: &BufferPool,
) -> Result<Option<Arc<UringReads>>, String> {
    let why_not = match (choice, direct) {
        (Choice::Blocking, _) => return Ok(None),
        (_, false) => "O_DIRECT is off".to_owned(),
        (_, true) => match build(pool) {
            Ok(reads) => {
                tracing::info!("read path: io_uring (registered buffers, no blocked thread)");
                return Ok(Some(reads));
            }
            Err(e) => e,
        },
    };
    if choice == Choice::IoUring {
        return Err(format!("--read-path io_uring: {why_not}"));
    }
    tracing::info!("read path: blocking pread on tokio's blocking pool (io_uring: {why_not})");
    Ok(None)
}

#[cfg(feature = "io-uring")]
fn build(pool: &BufferPool) -> Result<Arc<UringReads>, String> {
    UringReads::new(pool)
}

#[cfg(not(feature = "io-uring"))]
fn build(_pool: &BufferPool) -> Result<Arc<UringReads>, String> {
    Err("this build lacks feature io-uring (cargo run --features io-uring)".to_owned())
}
