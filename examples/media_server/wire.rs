//! What `media_server` and `load` agree on: the content of the generated
//! sample files, the frames of the synthetic live streams, and the `/media`
//! listing. `load` includes this file with `#[path]`, so it has no
//! dependencies beyond `std`.
//!
//! # Sample files
//!
//! Byte `i` of a generated sample file called `NAME` is byte `i % 8` of the
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
//! # Live frames
//!
//! A live stream is a sequence of [`FRAME_LEN`]-byte frames (7 MPEG-TS packets
//! worth, 1316 bytes), each
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `PPLV` |
//! | 4..12 | channel id: `fnv1a64(channel name)`, u64 LE |
//! | 12..20 | sequence number, u64 LE, +1 per frame the producer made |
//! | 20..28 | `fnv1a64(payload)`, u64 LE |
//! | 28..1316 | payload: the sample pattern above with seed `channel_id ^ splitmix64(seq)` |
//!
//! A jump in the sequence numbers is a gap (chunks the producer dropped, or
//! that a lagging subscriber skipped); it never goes backwards.
//!
//! # `/media` listing
//!
//! One line per file: `NAME \t SIZE \t PATTERN`, where `PATTERN` is
//! [`SAMPLE_PATTERN`] for generated samples and `-` for other files.

// Each program uses its own half of this file.
#![allow(dead_code)]

/// The pattern column of the `/media` listing for generated samples.
pub const SAMPLE_PATTERN: &str = "splitmix64";
/// Bytes in one live frame: 7 TS packets of 188 bytes.
pub const FRAME_LEN: usize = 7 * 188;
/// Bytes before a live frame's payload.
pub const FRAME_HEADER: usize = 28;
/// The first four bytes of every live frame.
pub const FRAME_MAGIC: [u8; 4] = *b"PPLV";

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// FNV-1a, 64 bits.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The SplitMix64 finaliser.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of a sample file's pattern.
pub fn sample_seed(name: &str) -> u64 {
    fnv1a64(name.as_bytes())
}

#[inline]
fn word(seed: u64, k: u64) -> [u8; 8] {
    splitmix64(seed.wrapping_add(k.wrapping_mul(GOLDEN))).to_le_bytes()
}

/// Writes the pattern of `seed` for offsets `offset..offset + out.len()`.
pub fn fill_pattern(seed: u64, offset: u64, out: &mut [u8]) {
    let mut pos = offset;
    let mut i = 0;
    while i < out.len() {
        let w = word(seed, pos / 8);
        let from = (pos % 8) as usize;
        let n = (8 - from).min(out.len() - i);
        out[i..i + n].copy_from_slice(&w[from..from + n]);
        i += n;
        pos += n as u64;
    }
}

/// Checks `data` against the pattern of `seed` at `offset`; returns the index
/// in `data` of the first wrong byte.
pub fn check_pattern(seed: u64, offset: u64, data: &[u8]) -> Option<usize> {
    let mut pos = offset;
    let mut i = 0;
    while i < data.len() {
        let w = word(seed, pos / 8);
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

/// The id of a live channel.
pub fn channel_id(name: &str) -> u64 {
    fnv1a64(name.as_bytes())
}

fn frame_seed(channel: u64, seq: u64) -> u64 {
    channel ^ splitmix64(seq)
}

/// Writes live frame `seq` of `channel` into `out[..FRAME_LEN]`.
pub fn write_frame(out: &mut [u8], channel: u64, seq: u64) {
    let out = &mut out[..FRAME_LEN];
    let (header, payload) = out.split_at_mut(FRAME_HEADER);
    fill_pattern(frame_seed(channel, seq), 0, payload);
    header[0..4].copy_from_slice(&FRAME_MAGIC);
    header[4..12].copy_from_slice(&channel.to_le_bytes());
    header[12..20].copy_from_slice(&seq.to_le_bytes());
    header[20..28].copy_from_slice(&fnv1a64(payload).to_le_bytes());
}

/// What is wrong with a live frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Not [`FRAME_LEN`] bytes.
    Length,
    /// The first four bytes are not [`FRAME_MAGIC`].
    Magic,
    /// Another channel's frame.
    Channel,
    /// The payload does not match its checksum.
    Checksum,
    /// The checksum matches but the payload is not the pattern.
    Payload,
}

/// Checks a whole frame of `channel`, every byte; returns its sequence number.
pub fn check_frame(frame: &[u8], channel: u64) -> Result<u64, FrameError> {
    if frame.len() != FRAME_LEN {
        return Err(FrameError::Length);
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&frame[at..at + 8]);
        u64::from_le_bytes(b)
    };
    if frame[0..4] != FRAME_MAGIC {
        return Err(FrameError::Magic);
    }
    if u64_at(4) != channel {
        return Err(FrameError::Channel);
    }
    let seq = u64_at(12);
    let payload = &frame[FRAME_HEADER..];
    if fnv1a64(payload) != u64_at(20) {
        return Err(FrameError::Checksum);
    }
    if check_pattern(frame_seed(channel, seq), 0, payload).is_some() {
        return Err(FrameError::Payload);
    }
    Ok(seq)
}

/// One line of the `/media` listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The file name, as used in `/media/{name}`.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Whether its content is the sample pattern of its name.
    pub pattern: bool,
}

/// Formats one line of the `/media` listing (with its newline).
pub fn listing_line(name: &str, size: u64, pattern: bool) -> String {
    let p = if pattern { SAMPLE_PATTERN } else { "-" };
    format!("{name}\t{size}\t{p}\n")
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
            Ok(Listed {
                name: name.to_owned(),
                size,
                pattern: f.next() == Some(SAMPLE_PATTERN),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_checks_any_window() {
        let seed = sample_seed("sample-1m.ts");
        let mut whole = vec![0u8; 100];
        fill_pattern(seed, 0, &mut whole);
        let mut part = vec![0u8; 37];
        fill_pattern(seed, 13, &mut part);
        assert_eq!(&whole[13..50], &part[..]);
        assert_eq!(check_pattern(seed, 13, &part), None);
        part[20] ^= 1;
        assert_eq!(check_pattern(seed, 13, &part), Some(20));
    }

    #[test]
    fn frames_round_trip() {
        let ch = channel_id("news");
        let mut f = vec![0u8; FRAME_LEN];
        write_frame(&mut f, ch, 42);
        assert_eq!(check_frame(&f, ch), Ok(42));
        assert_eq!(check_frame(&f, ch + 1), Err(FrameError::Channel));
        f[100] ^= 1;
        assert_eq!(check_frame(&f, ch), Err(FrameError::Checksum));
    }
}
