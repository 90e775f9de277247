//! What `media_server` and `load` agree on: the content of the generated
//! sample files, the frames of the synthetic live streams, and the `/media`
//! listing. `load` includes this file with `#[path]`; it needs only `std`
//! and `common/`'s byte pattern, MPEG-TS and H.264 writers (`pattern.rs`,
//! `ts.rs`, `h264.rs`).
//!
//! # Pattern files
//!
//! Byte `i` of a generated `.bin` sample called `NAME` is byte `i % 8` of the
//! little-endian word
//!
//! ```text
//! w(k) = splitmix64(fnv1a64(NAME) + k * 0x9E3779B97F4A7C15),  k = i / 8
//! ```
//!
//! (`splitmix64` is the finaliser of SplitMix64), so any range of any sample
//! can be checked without a reference copy, and a byte served from the wrong
//! offset or the wrong file does not match.
//!
//! # MPEG-TS frames (`.ts` samples and `/live/{channel}`)
//!
//! Both are MPEG-TS (`ffprobe`: format `mpegts`, one H.264 stream) made of
//! fixed-size *frames*, frame `seq` of stream `id` being
//!
//! | packets | content |
//! |---|---|
//! | 1 | PAT (program 1 → PMT PID 0x1000), continuity counter `seq % 16` |
//! | 1 | PMT (H.264 on PID 0x100, which carries the PCR), counter `seq % 16` |
//! | the rest | one PES (stream 0xE0, PTS) holding one access unit: see `common/h264.rs` |
//!
//! The video packets' counters run on from frame to frame; the first has a
//! PCR 100 ms behind the PTS and random_access_indicator, the last the
//! stuffing. PTS = 1 s + `seq` / rate. Every frame is a random access point
//! (PAT, PMT, SPS, PPS and an IDR picture), so a player can start at any.
//! The access unit's SEI carries the *stamp* `id=<16 hex> seq=<16 hex>`
//! after the UUID `pagepool-stamp-1`, and its samples are the pattern above
//! with seed `id ^ splitmix64(seq)`, each byte's low bit set (no zero bytes:
//! nothing to escape, so the size stays fixed). A frame is thus a function
//! of `(id, seq)` and can be checked byte for byte from its stamp alone.
//!
//! | stream | id | picture | frame | rate |
//! |---|---|---|---|---|
//! | `/live/{channel}` | `fnv1a64(channel)` | 32×16 | [`FRAME_LEN`] (7 packets) | `--live-rate` (header `x-pagepool-frame-rate`) |
//! | sample `NAME.ts` | `fnv1a64(NAME)` | 160×96 | [`FILE_FRAME_LEN`] | [`FILE_RATE`] |
//!
//! A live subscriber sees the sequence numbers go up by one; a jump is a
//! gap (frames the producer dropped, or a lagging subscriber skipped), where
//! the continuity counters jump too, as they do in any TS that lost packets.
//!
//! # `/media` listing
//!
//! One line per file: `NAME \t SIZE \t CONTENT`, where `CONTENT` is
//! [`SAMPLE_PATTERN`] for generated `.bin` samples, [`SAMPLE_MPEGTS`] for
//! generated `.ts` samples, and `-` for other files.

// Each program uses its own half of this file.
#![allow(dead_code)]

use crate::common::h264::{self, Picture};
use crate::common::pattern::{fnv1a64, pattern_word, splitmix64};
use crate::common::ts;

/// The content column of the `/media` listing for generated pattern files.
pub const SAMPLE_PATTERN: &str = "splitmix64";
/// The content column of the `/media` listing for generated MPEG-TS files.
pub const SAMPLE_MPEGTS: &str = "mpegts-v1";

/// The packets of one frame, and the picture they carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub picture: Picture,
    pub packets: usize,
}

impl Layout {
    /// Bytes in one frame.
    pub const fn frame_len(self) -> usize {
        self.packets * ts::PACKET
    }
}

/// Live frames: 32×16 pictures in 7 packets.
pub const LIVE: Layout = Layout {
    picture: Picture {
        width_mbs: 2,
        height_mbs: 1,
    },
    packets: 7,
};
/// Frames of the `.ts` samples: 160×96 pictures.
pub const FILE: Layout = Layout {
    picture: Picture {
        width_mbs: 10,
        height_mbs: 6,
    },
    packets: 129,
};
/// Bytes in one live frame.
pub const FRAME_LEN: usize = LIVE.frame_len();
/// Bytes in one frame of a `.ts` sample.
pub const FILE_FRAME_LEN: usize = FILE.frame_len();
/// Frames per second of the `.ts` samples.
pub const FILE_RATE: u32 = 25;
/// The live response header that tells the frame rate (the PTS follows it).
pub const FRAME_RATE_HEADER: &str = "x-pagepool-frame-rate";
/// The highest frame rate, `--live-rate`'s limit (above 90000, the PTS's
/// clock, some frames share a PTS).
pub const MAX_RATE: u32 = 100_000;
/// The UUID of the stamp's SEI.
pub const STAMP_UUID: [u8; 16] = *b"pagepool-stamp-1";
/// Bytes of the stamp text after the UUID.
pub const STAMP_LEN: usize = 40;

/// The PTS of frame 0 (90 kHz), and how far the PCR runs behind the PTS.
const PTS_START: u64 = 90_000;
const PCR_DELAY: u64 = 9_000;

/// The seed of a sample file's pattern.
pub fn sample_seed(name: &str) -> u64 {
    fnv1a64(name.as_bytes())
}

/// The id of a live channel.
pub fn channel_id(name: &str) -> u64 {
    fnv1a64(name.as_bytes())
}

fn frame_seed(id: u64, seq: u64) -> u64 {
    id ^ splitmix64(seq)
}

fn hex16(out: &mut [u8], v: u64) {
    for (i, b) in out[..16].iter_mut().enumerate() {
        *b = b"0123456789abcdef"[(v >> (60 - 4 * i)) as usize & 0xf];
    }
}

fn parse_hex16(text: &[u8]) -> Option<u64> {
    text.iter().try_fold(0u64, |v, &c| {
        let d = (c as char).to_digit(16)?;
        Some((v << 4) | u64::from(d))
    })
}

/// What a frame's SEI says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub id: u64,
    pub seq: u64,
}

impl Stamp {
    /// The stamp text: `id=<16 hex> seq=<16 hex>`.
    pub fn text(self) -> [u8; STAMP_LEN] {
        let mut t = *b"id=0000000000000000 seq=0000000000000000";
        hex16(&mut t[3..19], self.id);
        hex16(&mut t[24..40], self.seq);
        t
    }

    /// Reads a stamp text.
    pub fn parse(text: &[u8]) -> Option<Stamp> {
        if text.len() != STAMP_LEN || &text[..3] != b"id=" || &text[19..24] != b" seq=" {
            return None;
        }
        Some(Stamp {
            id: parse_hex16(&text[3..19])?,
            seq: parse_hex16(&text[24..40])?,
        })
    }
}

/// Writes the frames of one stream layout, reusing its scratch buffers.
#[derive(Debug)]
pub struct FrameWriter {
    layout: Layout,
    rate: u32,
    samples: Vec<u8>,
    es: Vec<u8>,
    /// Where the stamp text sits in every frame.
    stamp_at: usize,
}

impl FrameWriter {
    /// A writer of `layout` frames at `rate` frames per second (1 to
    /// [`MAX_RATE`]).
    pub fn new(layout: Layout, rate: u32) -> FrameWriter {
        assert!((1..=MAX_RATE).contains(&rate), "frame rate {rate}");
        let mut w = FrameWriter {
            layout,
            rate,
            samples: vec![0; layout.picture.samples()],
            es: Vec::new(),
            stamp_at: 0,
        };
        let mut frame = vec![0; layout.frame_len()];
        w.write(&mut frame, 0, 0);
        w.stamp_at = frame
            .windows(STAMP_UUID.len())
            .position(|win| win == STAMP_UUID)
            .expect("the stamp is in the first video packet")
            + STAMP_UUID.len();
        w
    }

    /// A writer of live frames at `rate` frames per second.
    pub fn live(rate: u32) -> FrameWriter {
        FrameWriter::new(LIVE, rate)
    }

    /// A writer of `.ts` sample frames.
    pub fn file() -> FrameWriter {
        FrameWriter::new(FILE, FILE_RATE)
    }

    pub fn frame_len(&self) -> usize {
        self.layout.frame_len()
    }

    /// The H.264 access unit of frame `seq` of stream `id`.
    pub fn access_unit(&mut self, id: u64, seq: u64) -> &[u8] {
        let seed = frame_seed(id, seq);
        for (k, out) in self.samples.chunks_exact_mut(8).enumerate() {
            let w = pattern_word(seed, k as u64) | 0x0101_0101_0101_0101;
            out.copy_from_slice(&w.to_le_bytes());
        }
        self.es.clear();
        h264::write_access_unit(
            &mut self.es,
            self.layout.picture,
            self.rate,
            (seq & 1) as u32,
            &STAMP_UUID,
            &Stamp { id, seq }.text(),
            &self.samples,
        );
        &self.es
    }

    /// Writes frame `seq` of stream `id` into `out[..frame_len()]`.
    pub fn write(&mut self, out: &mut [u8], id: u64, seq: u64) {
        let len = self.frame_len();
        let video_packets = self.layout.packets as u64 - 2;
        let pts = PTS_START + seq * 90_000 / u64::from(self.rate);
        let pcr = (pts - PCR_DELAY) * 300;
        let cc = ((seq * video_packets) & 0x0f) as u8;
        ts::write_psi(&mut out[..2 * ts::PACKET], (seq & 0x0f) as u8);
        self.access_unit(id, seq);
        ts::write_pes(&mut out[2 * ts::PACKET..len], cc, pcr, pts, true, &self.es);
    }

    /// The stamp of a frame of this layout, read where the writer puts it.
    pub fn stamp(&self, frame: &[u8]) -> Option<Stamp> {
        Stamp::parse(frame.get(self.stamp_at..self.stamp_at + STAMP_LEN)?)
    }
}

/// What is wrong with a live frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Not [`FRAME_LEN`] bytes.
    Length,
    /// Packet `n` of the frame does not start with the sync byte 0x47.
    Sync(usize),
    /// Packet `n` has another PID than the layout's.
    Pid(usize),
    /// Packet `n`'s continuity counter does not follow its PID's last one.
    Continuity(usize),
    /// No stamp where the stamp goes.
    Stamp,
    /// Another channel's frame.
    Channel,
    /// The sequence number did not go up.
    Backwards { from: u64, to: u64 },
    /// Byte `n` of the frame is not what frame `seq` holds.
    Content { seq: u64, offset: usize },
}

/// The first index where `a` and `b` differ.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    (a != b).then(|| a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(0))
}

/// Checks the frames of one live channel in order: the TS packet headers
/// (sync byte, PID, continuity across frames), the stamp, then every byte
/// against the frame the stamp names.
#[derive(Debug)]
pub struct LiveChecker {
    writer: FrameWriter,
    id: u64,
    expected: Vec<u8>,
    last: Option<u64>,
    /// The next continuity counter of the PAT, the PMT and the video PID.
    next_cc: [u8; 3],
}

impl LiveChecker {
    pub fn new(channel: &str, rate: u32) -> LiveChecker {
        LiveChecker {
            writer: FrameWriter::live(rate),
            id: channel_id(channel),
            expected: vec![0; FRAME_LEN],
            last: None,
            next_cc: [0; 3],
        }
    }

    /// Checks the next whole frame; returns its sequence number.
    pub fn check(&mut self, frame: &[u8]) -> Result<u64, FrameError> {
        if frame.len() != FRAME_LEN {
            return Err(FrameError::Length);
        }
        let stamp = self.writer.stamp(frame).ok_or(FrameError::Stamp)?;
        if stamp.id != self.id {
            return Err(FrameError::Channel);
        }
        let seq = stamp.seq;
        if let Some(from) = self.last.filter(|&l| seq <= l) {
            return Err(FrameError::Backwards { from, to: seq });
        }
        // Counters carry on from the last frame unless frames went missing.
        let follows = self.last.is_some_and(|l| seq == l + 1);
        for (n, p) in frame.chunks_exact(ts::PACKET).enumerate() {
            if p[0] != ts::SYNC {
                return Err(FrameError::Sync(n));
            }
            let (slot, pid) = match n {
                0 => (0, ts::PAT_PID),
                1 => (1, ts::PMT_PID),
                _ => (2, ts::VIDEO_PID),
            };
            if u16::from_be_bytes([p[1] & 0x1f, p[2]]) != pid {
                return Err(FrameError::Pid(n));
            }
            let cc = p[3] & 0x0f;
            // Within a frame the video counters always follow each other.
            if (follows || n > 2) && cc != self.next_cc[slot] {
                return Err(FrameError::Continuity(n));
            }
            self.next_cc[slot] = (cc + 1) & 0x0f;
        }
        self.writer.write(&mut self.expected, self.id, seq);
        if let Some(offset) = first_difference(frame, &self.expected) {
            return Err(FrameError::Content { seq, offset });
        }
        self.last = Some(seq);
        Ok(seq)
    }
}

/// Checks ranges of a generated `.ts` sample against its frames, made
/// again from the file's name (one frame at a time, reused while a range
/// stays in it).
#[derive(Debug)]
pub struct FileChecker {
    writer: FrameWriter,
    id: u64,
    frame: Vec<u8>,
    index: Option<u64>,
}

impl FileChecker {
    pub fn new(name: &str) -> FileChecker {
        FileChecker {
            writer: FrameWriter::file(),
            id: sample_seed(name),
            frame: vec![0; FILE_FRAME_LEN],
            index: None,
        }
    }

    /// Checks `data` found at file offset `offset`; returns the index in
    /// `data` of the first wrong byte.
    pub fn check(&mut self, offset: u64, data: &[u8]) -> Option<usize> {
        let len = FILE_FRAME_LEN as u64;
        let mut i = 0;
        while i < data.len() {
            let at = offset + i as u64;
            let k = at / len;
            if self.index != Some(k) {
                self.writer.write(&mut self.frame, self.id, k);
                self.index = Some(k);
            }
            let from = (at % len) as usize;
            let n = (FILE_FRAME_LEN - from).min(data.len() - i);
            if let Some(bad) = first_difference(&data[i..i + n], &self.frame[from..from + n]) {
                return Some(i + bad);
            }
            i += n;
        }
        None
    }
}

/// What a listed file holds, so `load` knows how to check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// A generated pattern file: the pattern of its name.
    Pattern,
    /// A generated MPEG-TS file: the frames of its name.
    MpegTs,
    /// Anything else.
    Other,
}

impl Content {
    /// What a generated sample called `name` holds: MPEG-TS for `.ts`,
    /// the pattern for the rest.
    pub fn of_sample(name: &str) -> Content {
        if name.ends_with(".ts") {
            Content::MpegTs
        } else {
            Content::Pattern
        }
    }

    fn label(self) -> &'static str {
        match self {
            Content::Pattern => SAMPLE_PATTERN,
            Content::MpegTs => SAMPLE_MPEGTS,
            Content::Other => "-",
        }
    }
}

/// One line of the `/media` listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The file name, as used in `/media/{name}`.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// What it holds.
    pub content: Content,
}

/// Formats one line of the `/media` listing (with its newline); `sample`:
/// whether `name` is one of the generated samples.
pub fn listing_line(name: &str, size: u64, sample: bool) -> String {
    let content = if sample {
        Content::of_sample(name)
    } else {
        Content::Other
    };
    format!("{name}\t{size}\t{}\n", content.label())
}

/// Parses the `/media` listing.
pub fn parse_listing(text: &str) -> Result<Vec<Listed>, String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut f = line.split('\t');
            let (Some(name), Some(size)) = (f.next(), f.next()) else {
                return Err(format!("bad listing line {line:?}"));
            };
            let size = size
                .parse()
                .map_err(|e| format!("bad size in listing line {line:?}: {e}"))?;
            let content = match f.next() {
                Some(SAMPLE_PATTERN) => Content::Pattern,
                Some(SAMPLE_MPEGTS) => Content::MpegTs,
                _ => Content::Other,
            };
            Ok(Listed {
                name: name.to_owned(),
                size,
                content,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_fill_their_packets() {
        // Each access unit takes the layout's packets after the PAT and the
        // PMT, with less than a packet of stuffing.
        for (layout, rate) in [(LIVE, 500), (LIVE, 1), (LIVE, MAX_RATE), (FILE, FILE_RATE)] {
            let mut w = FrameWriter::new(layout, rate);
            let au = w.access_unit(7, 3).len();
            assert_eq!(
                2 + ts::pes_packets(au),
                layout.packets,
                "{layout:?}: {au} bytes"
            );
        }
    }

    #[test]
    fn live_frames_check_and_any_damage_is_caught() {
        let mut w = FrameWriter::live(500);
        let ch = channel_id("news");
        let mut frames = vec![0u8; 3 * FRAME_LEN];
        for (seq, f) in frames.chunks_exact_mut(FRAME_LEN).enumerate() {
            w.write(f, ch, 40 + seq as u64);
        }
        let mut c = LiveChecker::new("news", 500);
        for (seq, f) in frames.chunks_exact(FRAME_LEN).enumerate() {
            assert_eq!(c.check(f), Ok(40 + seq as u64));
        }
        assert_eq!(
            LiveChecker::new("sport", 500).check(&frames[..FRAME_LEN]),
            Err(FrameError::Channel)
        );
        // One flipped bit anywhere in a frame: a pixel, a PTS, a counter, a CRC.
        for at in [5, 187, 188 + 20, 376 + 3, 376 + 12, 900, FRAME_LEN - 1] {
            let mut c = LiveChecker::new("news", 500);
            let mut f = frames[..FRAME_LEN].to_vec();
            f[at] ^= 0x10;
            assert!(c.check(&f).is_err(), "damage at {at} passed");
        }
        // A frame sent twice goes backwards; a lost one is a gap, not an error.
        let mut c = LiveChecker::new("news", 500);
        assert_eq!(c.check(&frames[..FRAME_LEN]), Ok(40));
        assert_eq!(
            c.check(&frames[..FRAME_LEN]),
            Err(FrameError::Backwards { from: 40, to: 40 })
        );
        assert_eq!(c.check(&frames[2 * FRAME_LEN..]), Ok(42));
    }

    #[test]
    fn file_ranges_check_across_frames() {
        let mut w = FrameWriter::file();
        let id = sample_seed("a.ts");
        let mut file = vec![0u8; 3 * FILE_FRAME_LEN];
        for (k, f) in file.chunks_exact_mut(FILE_FRAME_LEN).enumerate() {
            w.write(f, id, k as u64);
        }
        let mut c = FileChecker::new("a.ts");
        let from = FILE_FRAME_LEN - 100;
        assert_eq!(c.check(from as u64, &file[from..from + 5000]), None);
        assert_eq!(c.check(0, &file), None);
        file[FILE_FRAME_LEN + 1234] ^= 1;
        assert_eq!(c.check(from as u64, &file[from..]), Some(1334));
        // The PAT and PMT are the same in every file; the pictures are not.
        assert!(FileChecker::new("b.ts")
            .check(1000, &file[1000..1200])
            .is_some());
    }

    #[test]
    fn listing_round_trip() {
        let text: String = [
            listing_line("a.bin", 10, true),
            listing_line("b.ts", 20, true),
            listing_line("c.ts", 30, false),
        ]
        .concat();
        let got = parse_listing(&text).unwrap();
        let content: Vec<_> = got.iter().map(|l| l.content).collect();
        assert_eq!(content, [Content::Pattern, Content::MpegTs, Content::Other]);
        assert_eq!(got[1].size, 20);
    }
}
