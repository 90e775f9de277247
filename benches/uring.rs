//! `O_DIRECT` reads from one file into pooled buffers: io_uring
//! `READ_FIXED` into registered buffers (`Registry::read_fixed`) against
//! plain `pread` into the same buffers (`DirectFile::read_at`), `pread` on
//! a `tokio::task::spawn_blocking` thread, and, to separate the fixed
//! buffer from the ring, io_uring `READ` into an unregistered buffer. One
//! read in flight at a time (queue depth 1), at pseudo-random aligned
//! offsets, 64 KiB and 1 MiB.
//!
//! ```text
//! cargo bench -p pagepool-benches --features io-uring --bench uring
//! ```
//!
//! Every repetition runs each mode once, in a rotated order, so drift on
//! the machine falls on all of them alike; the table gives the median
//! throughput and CPU time (`getrusage(RUSAGE_SELF)` user + sys, every
//! thread of the process, io_uring workers included) per read, with the
//! range over repetitions, and each mode's ratio to `pread` computed within
//! each repetition (median, min–max).
//!
//! The file (`PAGEPOOL_URING_BENCH_FILE`, default
//! `$TMPDIR/pagepool-uring-bench.dat`, 256 MiB) is written once and kept
//! for later runs; its filesystem must take `O_DIRECT`. `PAGEPOOL_URING_REPS`
//! sets the repetitions (default 7).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagepool::direct::DirectFile;
use pagepool::uring::{self, Registry};
use pagepool::{BufferPool, PageBuffer};

const FILE_BYTES: u64 = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    ReadFixed,
    UringRead,
    Pread,
    SpawnBlocking,
}

impl Mode {
    const ALL: [Mode; 4] = [
        Mode::ReadFixed,
        Mode::UringRead,
        Mode::Pread,
        Mode::SpawnBlocking,
    ];

    fn name(self) -> &'static str {
        match self {
            Mode::ReadFixed => "io_uring READ_FIXED (registered)",
            Mode::UringRead => "io_uring READ (unregistered)",
            Mode::Pread => "pread",
            Mode::SpawnBlocking => "pread in spawn_blocking",
        }
    }
}

/// One run of one mode: wall time and CPU time for `reads` reads.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Duration,
    reads: usize,
    bytes: u64,
}

impl Sample {
    fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / (1 << 20) as f64 / self.wall.as_secs_f64()
    }
    fn cpu_us_per_read(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.reads as f64
    }
}

/// User + system CPU time of the whole process so far.
fn cpu_time() -> Duration {
    // SAFETY: `rusage` is plain integers; all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `getrusage` writes only into `ru`, which lives across the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn bench_file() -> PathBuf {
    let path = std::env::var_os("PAGEPOOL_URING_BENCH_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("pagepool-uring-bench.dat"));
    let fresh = std::fs::metadata(&path).map_or(true, |m| m.len() != FILE_BYTES);
    if fresh {
        eprintln!("writing {} ({} MiB)...", path.display(), FILE_BYTES >> 20);
        let mut f = std::fs::File::create(&path).expect("bench file");
        let mut chunk = vec![0u8; 1 << 20];
        for i in 0..FILE_BYTES >> 20 {
            for (k, b) in chunk.iter_mut().enumerate() {
                *b = (i as usize).wrapping_mul(31).wrapping_add(k) as u8;
            }
            f.write_all(&chunk).expect("bench file write");
        }
        f.sync_all().expect("bench file sync");
    }
    path
}

/// Pseudo-random offsets, multiples of `size`, inside the file.
fn offsets(size: usize, n: usize, seed: u64) -> Vec<u64> {
    let slots = FILE_BYTES / size as u64;
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % slots * size as u64
        })
        .collect()
}

struct Bench {
    file: Arc<DirectFile>,
    registry: Registry,
    rt: tokio::runtime::Runtime,
    /// Registered in `registry`.
    fixed: Option<PageBuffer>,
    /// From another pool: never registered.
    plain: PageBuffer,
}

impl Bench {
    fn run(&mut self, mode: Mode, offs: &[u64]) -> Sample {
        let size = self.plain.max_len();
        let (wall0, cpu0) = (Instant::now(), cpu_time());
        let mut bytes = 0u64;
        match mode {
            Mode::ReadFixed | Mode::UringRead | Mode::Pread => {
                let buf = match mode {
                    Mode::UringRead => &mut self.plain,
                    _ => self.fixed.as_mut().expect("present"),
                };
                for &off in offs {
                    let n = match mode {
                        Mode::Pread => self.file.read_at(buf, off),
                        _ => self.registry.read_fixed(&self.file, buf, off),
                    }
                    .expect("read");
                    assert_eq!(n, size);
                    bytes += n as u64;
                }
            }
            Mode::SpawnBlocking => {
                let mut buf = self.fixed.take().expect("present");
                let file = Arc::clone(&self.file);
                let (back, read) = self.rt.block_on(async move {
                    let mut bytes = 0u64;
                    for &off in offs {
                        let f = Arc::clone(&file);
                        let (b, n) = tokio::task::spawn_blocking(move || {
                            let n = f.read_at(&mut buf, off).expect("read");
                            (buf, n)
                        })
                        .await
                        .expect("blocking task");
                        buf = b;
                        assert_eq!(n, size);
                        bytes += n as u64;
                    }
                    (buf, bytes)
                });
                bytes = read;
                self.fixed = Some(back);
            }
        }
        Sample {
            wall: wall0.elapsed(),
            cpu: cpu_time() - cpu0,
            reads: offs.len(),
            bytes,
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn range(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter is not supported.
    let reps: usize = std::env::var("PAGEPOOL_URING_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let path = bench_file();
    let file = match DirectFile::open(&path) {
        Ok(f) => Arc::new(f),
        Err(e) => {
            eprintln!("SKIPPED: {} refuses O_DIRECT: {e}", path.display());
            return;
        }
    };
    let pool = BufferPool::builder()
        .name("bench-uring")
        .metrics(false)
        .build()
        .expect("pool");
    let other = BufferPool::builder()
        .name("bench-plain")
        .metrics(false)
        .build()
        .expect("pool");
    let mut registry = match Registry::new(&pool) {
        Ok(r) => r,
        Err(e) if uring::is_unavailable(&e) => {
            eprintln!("SKIPPED: io_uring unavailable: {e}");
            return;
        }
        Err(e) => panic!("registry: {e}"),
    };
    let mut rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    println!(
        "O_DIRECT reads, queue depth 1, {} MiB file {} (alignment {}), {reps} repetitions",
        FILE_BYTES >> 20,
        path.display(),
        file.alignment()
    );
    for (size, reads) in [(64usize << 10, 2048usize), (1 << 20, 256)] {
        let fixed = pool.allocate_page_size_buffer(size).expect("buffer");
        assert!(fixed.fixed_index(&registry).is_some(), "registered");
        let plain = other.allocate_page_size_buffer(size).expect("buffer");
        let mut bench = Bench {
            file: Arc::clone(&file),
            registry,
            rt,
            fixed: Some(fixed),
            plain,
        };
        // Warm-up: one short pass of each.
        for mode in Mode::ALL {
            bench.run(mode, &offsets(size, 32, 99));
        }
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); Mode::ALL.len()];
        for rep in 0..reps {
            let offs = offsets(size, reads, 1 + rep as u64);
            for k in 0..Mode::ALL.len() {
                let m = (k + rep) % Mode::ALL.len();
                samples[m].push(bench.run(Mode::ALL[m], &offs));
            }
        }
        let pread = Mode::ALL.iter().position(|&m| m == Mode::Pread).unwrap();
        println!();
        println!(
            "{} KiB x {reads} reads per run, median [min-max] over {reps} runs",
            size >> 10
        );
        println!(
            "| mode | MiB/s | CPU us/read | throughput / pread | CPU / pread |\n|---|---:|---:|---:|---:|"
        );
        for (m, mode) in Mode::ALL.iter().enumerate() {
            let tput: Vec<f64> = samples[m].iter().map(Sample::mib_per_s).collect();
            let cpu: Vec<f64> = samples[m].iter().map(Sample::cpu_us_per_read).collect();
            let rt: Vec<f64> = (0..reps)
                .map(|r| tput[r] / samples[pread][r].mib_per_s())
                .collect();
            let rc: Vec<f64> = (0..reps)
                .map(|r| cpu[r] / samples[pread][r].cpu_us_per_read())
                .collect();
            let (tl, th) = range(&tput);
            let (cl, ch) = range(&cpu);
            let (rtl, rth) = range(&rt);
            let (rcl, rch) = range(&rc);
            println!(
                "| {} | {:.0} [{:.0}-{:.0}] | {:.1} [{:.1}-{:.1}] | {:.2} [{:.2}-{:.2}] | {:.2} [{:.2}-{:.2}] |",
                mode.name(),
                median(tput.clone()),
                tl,
                th,
                median(cpu.clone()),
                cl,
                ch,
                median(rt),
                rtl,
                rth,
                median(rc),
                rcl,
                rch
            );
        }
        let Bench {
            registry: r, rt: t, ..
        } = bench;
        registry = r;
        rt = t;
    }
}
