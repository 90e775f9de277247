//! The crate's one error type.

use std::fmt;
use std::io;
use std::time::Duration;

/// Everything that can go wrong in pagepool.
///
/// Every public entry point returns this type for a caller's bad input or an
/// exhausted resource; none of them panics on either.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A buffer of zero bytes was requested. `AllocatePageSizeBuffer(0)` has no
    /// page to align, so pagepool refuses it rather than inventing one.
    ZeroSize,
    /// The request is larger than the pool's largest size class
    /// ([`PoolBuilder::max_buffer_size`](crate::PoolBuilder::max_buffer_size)).
    TooLarge {
        /// The `max_size` that was asked for.
        requested: usize,
        /// The largest buffer this pool hands out.
        max: usize,
    },
    /// No free slot of the request's class exists, and mapping one more slab
    /// (even a one-slot slab, after trimming idle slabs of other classes) would
    /// pass [`PoolBuilder::max_bytes`](crate::PoolBuilder::max_bytes); or
    /// others wait for room (the async and `_timeout` forms) and the request
    /// missed its thread's cache: waiters are served first come, first
    /// served, so an immediate call does not take what they wait for.
    /// Allocation succeeds again once buffers come back.
    Exhausted {
        /// The `max_size` that was asked for.
        requested: usize,
        /// The pool's cap on reserved bytes.
        limit: usize,
    },
    /// A [`Quota`](crate::Quota)'s allocation would take it past its own
    /// cap: the quota holds `held` bytes of slots, and this buffer's slot
    /// (`charge` bytes, its size class) does not fit under `limit`. The pool
    /// itself may have room. Allocation succeeds again once the quota's
    /// buffers come back.
    QuotaExceeded {
        /// The `max_size` that was asked for.
        requested: usize,
        /// The bytes the request would count against the quota: its slot's.
        charge: usize,
        /// The bytes of slots the quota's live buffers hold.
        held: usize,
        /// The quota's cap.
        limit: usize,
    },
    /// The pool was closed ([`BufferPool::close`](crate::BufferPool::close)):
    /// it makes no more buffers, and a wait for one ends with this error.
    /// Buffers already out keep working and still go back to it.
    Closed,
    /// [`BufferPool::allocate_page_size_buffer_timeout`](crate::BufferPool::allocate_page_size_buffer_timeout)
    /// (or a quota's) waited its whole timeout and stayed
    /// [`Exhausted`](Self::Exhausted) or [`QuotaExceeded`](Self::QuotaExceeded).
    TimedOut {
        /// The `max_size` that was asked for.
        requested: usize,
        /// How long the call waited.
        waited: Duration,
    },
    /// [`PageBuffer::set_len`](crate::PageBuffer::set_len) (or a write) asked
    /// for more than the buffer's `max_len`, the seed's `SetLength` failure.
    LengthExceedsMax {
        /// The length that was asked for.
        requested: usize,
        /// The buffer's `max_len`.
        max: usize,
    },
    /// A [`PoolBuilder`](crate::PoolBuilder) setting is out of range; the
    /// text says which and why.
    InvalidConfig(&'static str),
    /// The Prometheus exporter could not start (feature `prometheus`): the
    /// address is in use or not local, or a global `metrics` recorder is
    /// already installed; the [`ExporterError`](crate::prometheus::ExporterError)
    /// says which (it is also the error's `source`).
    #[cfg(feature = "prometheus")]
    #[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
    Exporter(Box<crate::prometheus::ExporterError>),
    /// The operating system refused a mapping (or another call); the pool is
    /// still consistent and usable.
    Os(io::Error),
}

// Every allocation returns `Result<PageBuffer, Error>`, and the async
// future's `Poll` of it passes through memory: large payloads stay boxed.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Error>() <= 40);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ZeroSize => f.write_str("a buffer of zero bytes was requested"),
            Error::TooLarge { requested, max } => write!(
                f,
                "requested {requested} bytes, more than the pool's largest buffer of {max} bytes"
            ),
            Error::Exhausted { requested, limit } => write!(
                f,
                "pool exhausted: no free slot for {requested} bytes and mapping more would pass the cap of {limit} bytes"
            ),
            Error::QuotaExceeded {
                requested,
                charge,
                held,
                limit,
            } => write!(
                f,
                "quota exceeded: {requested} bytes (a {charge}-byte slot) would take the quota's {held} bytes past its cap of {limit} bytes"
            ),
            Error::Closed => f.write_str("the pool is closed: it makes no more buffers"),
            Error::TimedOut { requested, waited } => write!(
                f,
                "pool exhausted: no buffer of {requested} bytes came back within {waited:?}"
            ),
            Error::LengthExceedsMax { requested, max } => write!(
                f,
                "length {requested} exceeds the buffer's maximum length {max}"
            ),
            Error::InvalidConfig(why) => write!(f, "invalid pool configuration: {why}"),
            #[cfg(feature = "prometheus")]
            Error::Exporter(why) => write!(f, "Prometheus exporter: {why}"),
            Error::Os(e) => write!(f, "the operating system refused: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Os(e) => Some(e),
            #[cfg(feature = "prometheus")]
            Error::Exporter(e) => Some(&**e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Os(e)
    }
}

impl From<Error> for io::Error {
    /// Lets pagepool errors flow through `std::io` code (`?` in a `Read`
    /// loop): `Os` keeps its OS error; the rest map to the nearest kind.
    fn from(e: Error) -> Self {
        match e {
            Error::Os(e) => e,
            Error::ZeroSize | Error::TooLarge { .. } | Error::InvalidConfig(_) => {
                io::Error::new(io::ErrorKind::InvalidInput, e)
            }
            Error::LengthExceedsMax { .. } => io::Error::new(io::ErrorKind::WriteZero, e),
            Error::Exhausted { .. } | Error::QuotaExceeded { .. } => {
                io::Error::new(io::ErrorKind::OutOfMemory, e)
            }
            Error::Closed => io::Error::new(io::ErrorKind::BrokenPipe, e),
            Error::TimedOut { .. } => io::Error::new(io::ErrorKind::TimedOut, e),
            #[cfg(feature = "prometheus")]
            Error::Exporter(_) => io::Error::other(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_numbers() {
        let e = Error::TooLarge {
            requested: 10,
            max: 5,
        };
        assert_eq!(
            e.to_string(),
            "requested 10 bytes, more than the pool's largest buffer of 5 bytes"
        );
        let e = Error::LengthExceedsMax {
            requested: 7,
            max: 6,
        };
        assert!(e.to_string().contains("length 7 exceeds"));
    }

    #[test]
    fn converts_to_io_error_kinds() {
        let io: io::Error = Error::Exhausted {
            requested: 1,
            limit: 2,
        }
        .into();
        assert_eq!(io.kind(), io::ErrorKind::OutOfMemory);
        let io: io::Error = Error::Closed.into();
        assert_eq!(io.kind(), io::ErrorKind::BrokenPipe);
        let e = Error::QuotaExceeded {
            requested: 5000,
            charge: 8192,
            held: 65536,
            limit: 65536,
        };
        assert!(e.to_string().contains("a 8192-byte slot"), "{e}");
        let io: io::Error = Error::ZeroSize.into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidInput);
        let raw = io::Error::from_raw_os_error(libc::ENOMEM);
        let io: io::Error = Error::Os(raw).into();
        assert_eq!(io.raw_os_error(), Some(libc::ENOMEM));
    }
}
