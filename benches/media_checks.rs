//! What the `load` example's content checks cost per byte, on one thread:
//! the byte pattern of the `.bin` samples (`check_pattern`, what the `.ts`
//! samples were checked with before they were MPEG-TS), a `.ts` sample's
//! MPEG-TS frames made again and compared (`FileChecker`), and live frames
//! (`LiveChecker`: TS headers, continuity, stamp, every byte); and, as the
//! baselines, the checks these replaced: `pattern_before` (the pattern
//! compared 8 bytes at a time as slices) and `live_before` (the private
//! 1316-byte live frames: FNV-1a over the payload, then the pattern).
//! Prints the ratios to `pattern_before` at the end.
//!
//! ```text
//! cargo bench -p pagepool-benches --bench media_checks
//! ```

#[path = "support/estimates.rs"]
mod estimates;

// The parts of `common/` that `wire` needs, not the examples' command-line parts. (The
// unit tests inside are compiled here too, never run.)
#[allow(dead_code, unused_imports)]
#[path = "../examples/common/h264.rs"]
mod h264;
#[allow(dead_code, unused_imports)]
#[path = "../examples/common/pattern.rs"]
mod pattern;
#[allow(dead_code, unused_imports)]
#[path = "../examples/common/ts.rs"]
mod ts;
mod common {
    pub(crate) use super::{h264, pattern, ts};
}
#[allow(unused_imports)]
#[path = "../examples/media_server/wire.rs"]
mod wire;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wire::{FileChecker, FrameWriter, LiveChecker, FILE_FRAME_LEN, FRAME_LEN};

/// The pattern check as it was: a slice compare per 8 bytes.
fn check_pattern_before(seed: u64, offset: u64, data: &[u8]) -> Option<usize> {
    let mut pos = offset;
    let mut i = 0;
    while i < data.len() {
        let w = pattern::pattern_word(seed, pos / 8).to_le_bytes();
        let from = (pos % 8) as usize;
        let n = (8 - from).min(data.len() - i);
        if data[i..i + n] != w[from..from + n] {
            let bad = (0..n).find(|&j| data[i + j] != w[from + j]).unwrap_or(0);
            return Some(i + bad);
        }
        i += n;
        pos += n as u64;
    }
    None
}

/// The old live frame check: header fields, FNV-1a of the 1288-byte
/// payload, then the payload against the pattern.
fn check_live_before(frame: &[u8], seed: u64, sum: u64) -> bool {
    let payload = &frame[28..];
    frame[..4] == *b"PPLV"
        && pattern::fnv1a64(payload) == sum
        && check_pattern_before(seed, 0, payload).is_none()
}

/// Bytes checked per iteration: 1 MiB in 64 KiB pieces, as bodies arrive.
const BYTES: usize = 1 << 20;
const PIECE: usize = 64 << 10;

fn media_checks(c: &mut Criterion) {
    let mut g = c.benchmark_group("media_checks");
    g.throughput(Throughput::Bytes(BYTES as u64));

    let seed = wire::sample_seed("sample-1m.bin");
    let mut pattern = vec![0u8; BYTES];
    pattern::fill_pattern(seed, 0, &mut pattern);
    g.bench_function("pattern_before", |b| {
        b.iter(|| {
            for (i, piece) in pattern.chunks(PIECE).enumerate() {
                let at = (i * PIECE) as u64;
                assert_eq!(check_pattern_before(seed, at, black_box(piece)), None);
            }
        })
    });
    g.bench_function("pattern", |b| {
        b.iter(|| {
            for (i, piece) in pattern.chunks(PIECE).enumerate() {
                let at = (i * PIECE) as u64;
                assert_eq!(pattern::check_pattern(seed, at, black_box(piece)), None);
            }
        })
    });

    let frames = BYTES / FILE_FRAME_LEN + 1;
    let mut file = vec![0u8; frames * FILE_FRAME_LEN];
    let mut w = FrameWriter::file();
    let id = wire::sample_seed("sample-1m.ts");
    for (k, f) in file.chunks_exact_mut(FILE_FRAME_LEN).enumerate() {
        w.write(f, id, k as u64);
    }
    let file = &file[..BYTES];
    let mut checker = FileChecker::new("sample-1m.ts");
    g.bench_function("mpegts_file", |b| {
        b.iter(|| {
            for (i, piece) in file.chunks(PIECE).enumerate() {
                let at = (i * PIECE) as u64;
                assert_eq!(checker.check(at, black_box(piece)), None);
            }
        })
    });

    // Live frames: a fresh checker per pass (sequence numbers only go up).
    let n = BYTES / FRAME_LEN;
    let mut live = vec![0u8; n * FRAME_LEN];
    let mut w = FrameWriter::live(500);
    let ch = wire::channel_id("load-0");
    for (seq, f) in live.chunks_exact_mut(FRAME_LEN).enumerate() {
        w.write(f, ch, seq as u64);
    }
    g.throughput(Throughput::Bytes(live.len() as u64));
    let mut old = vec![0u8; n * FRAME_LEN];
    for f in old.chunks_exact_mut(FRAME_LEN) {
        f[..4].copy_from_slice(b"PPLV");
        pattern::fill_pattern(ch, 0, &mut f[28..]);
    }
    let old_sum = pattern::fnv1a64(&old[28..FRAME_LEN]);
    g.bench_function("live_before", |b| {
        b.iter(|| {
            for f in old.chunks_exact(FRAME_LEN) {
                assert!(check_live_before(black_box(f), ch, old_sum));
            }
        })
    });
    g.bench_function("mpegts_live", |b| {
        b.iter_batched_ref(
            || LiveChecker::new("load-0", 500),
            |checker| {
                for f in live.chunks_exact(FRAME_LEN) {
                    assert!(checker.check(black_box(f)).is_ok());
                }
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
    estimates::print_ratios(
        "media_checks",
        &[
            "pattern_before",
            "pattern",
            "mpegts_file",
            "live_before",
            "mpegts_live",
        ],
    );
}

criterion_group!(benches, media_checks);
criterion_main!(benches);
