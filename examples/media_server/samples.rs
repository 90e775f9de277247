//! The sample files made when no `--media-dir` is given: MPEG-TS for the
//! `.ts` names, the byte pattern for the `.bin` ones (see `wire.rs`).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::common::pattern;
use crate::wire::{self, Content, FrameWriter, FILE_FRAME_LEN};

/// The largest whole number of `.ts` sample frames within `about` bytes.
const fn ts_size(about: u64) -> u64 {
    about / FILE_FRAME_LEN as u64 * FILE_FRAME_LEN as u64
}

/// Name and size of each sample. The last one has an odd size, so its tail
/// is a partial page; the `.ts` ones are whole frames (a multiple of 188).
pub const SAMPLES: [(&str, u64); 4] = [
    ("sample-tiny.bin", 1000),
    ("sample-1m.ts", ts_size(1 << 20)),
    ("sample-8m.ts", ts_size(8 << 20)),
    ("sample-33m.bin", (33 << 20) + 123),
];

/// Writes the [`SAMPLES`] into a fresh directory under the system temp dir.
pub fn generate_samples() -> io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("pagepool-media-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for (name, size) in SAMPLES {
        write_sample(&dir, name, size)?;
    }
    Ok(dir)
}

/// Writes sample `name` of `size` bytes into `dir`.
pub fn write_sample(dir: &Path, name: &str, size: u64) -> io::Result<()> {
    let seed = wire::sample_seed(name);
    let mut out = BufWriter::new(File::create(dir.join(name))?);
    match Content::of_sample(name) {
        Content::MpegTs => {
            let mut frames = FrameWriter::file();
            let mut frame = vec![0u8; FILE_FRAME_LEN];
            for k in 0..size / FILE_FRAME_LEN as u64 {
                frames.write(&mut frame, seed, k);
                out.write_all(&frame)?;
            }
        }
        _ => {
            let mut block = vec![0u8; 1 << 20];
            let mut at = 0u64;
            while at < size {
                let n = (size - at).min(block.len() as u64) as usize;
                pattern::fill_pattern(seed, at, &mut block[..n]);
                out.write_all(&block[..n])?;
                at += n as u64;
            }
        }
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

#[cfg(test)]
pub mod tests {
    use std::collections::HashMap;
    use std::process::{Command, Output, Stdio};
    use std::time::{Duration, Instant};

    use mpeg2ts::es::StreamType;
    use mpeg2ts::ts::{ReadTsPacket, TsPacketReader, TsPayload};

    use super::*;
    use crate::common::ts;
    use crate::wire::Stamp;

    /// What [`check_ts`] found.
    #[derive(Debug, Default)]
    pub struct Summary {
        pub packets: usize,
        pub pcrs: usize,
        /// Stamps of the access units, in order, each checked byte for byte.
        pub stamps: Vec<Stamp>,
    }

    /// Reads `data` with the `mpeg2ts` crate (which checks the PSI CRCs) and
    /// checks: continuity counters on every PID, the PMT's H.264 stream,
    /// PCRs and PTSs going up with the PCR behind the PTS, and each video
    /// access unit equal to the one its stamp names (`frames` writes them).
    /// `ours`: the stream is media_server's own (a PCR in every PES start).
    pub fn check_ts(data: &[u8], frames: &mut FrameWriter, ours: bool) -> Summary {
        assert!(data.len().is_multiple_of(ts::PACKET), "not whole packets");
        let mut reader = TsPacketReader::new(data);
        let mut sum = Summary::default();
        let mut cc: HashMap<u16, u8> = HashMap::new();
        let (mut video, mut pmt_seen) = (None, false);
        let mut es: Vec<u8> = Vec::new();
        let (mut last_pcr, mut last_pts) = (None, None);
        let mut finish_au = |es: &mut Vec<u8>, sum: &mut Summary| {
            if es.is_empty() {
                return;
            }
            let at = es
                .windows(16)
                .position(|w| w == wire::STAMP_UUID)
                .expect("a stamp in the access unit")
                + 16;
            let stamp = Stamp::parse(&es[at..at + wire::STAMP_LEN]).expect("a stamp");
            assert_eq!(
                frames.access_unit(stamp.id, stamp.seq),
                &es[..],
                "access unit of {stamp:?}"
            );
            sum.stamps.push(stamp);
            es.clear();
        };
        while let Some(packet) = reader.read_ts_packet().expect("a valid TS packet") {
            sum.packets += 1;
            let pid = packet.header.pid.as_u16();
            let counter = packet.header.continuity_counter.as_u8();
            if packet.payload.is_some() {
                if let Some(prev) = cc.insert(pid, counter) {
                    assert_eq!(
                        counter,
                        (prev + 1) & 15,
                        "PID {pid:#x}, packet {}",
                        sum.packets
                    );
                }
            }
            let pcr = packet.adaptation_field.as_ref().and_then(|a| a.pcr);
            if let Some(pcr) = pcr {
                let pcr = pcr.as_u64();
                assert!(last_pcr.is_none_or(|l| pcr > l), "PCR went back");
                last_pcr = Some(pcr);
                sum.pcrs += 1;
            }
            match packet.payload {
                Some(TsPayload::Pmt(pmt)) => {
                    let v = pmt
                        .es_info
                        .iter()
                        .find(|e| e.stream_type == StreamType::H264)
                        .expect("an H.264 stream in the PMT");
                    video = Some(v.elementary_pid.as_u16());
                    assert_eq!(pmt.pcr_pid.map(|p| p.as_u16()), video);
                    pmt_seen = true;
                }
                Some(TsPayload::PesStart(pes)) if Some(pid) == video => {
                    finish_au(&mut es, &mut sum);
                    let pts = pes.header.pts.expect("a PTS").as_u64();
                    assert!(last_pts.is_none_or(|l| pts > l), "PTS went back");
                    last_pts = Some(pts);
                    if ours {
                        let pcr = pcr.expect("a PCR where the PES starts").as_u64();
                        assert!(pcr < pts * 300, "PCR {pcr} not behind PTS {pts}");
                    }
                    es.extend_from_slice(&pes.data);
                }
                Some(TsPayload::PesContinuation(b)) if Some(pid) == video => {
                    es.extend_from_slice(&b)
                }
                _ => {}
            }
        }
        finish_au(&mut es, &mut sum);
        assert!(pmt_seen, "no PMT");
        sum
    }

    /// `ffprobe`'s or `ffmpeg`'s path, or `None` (with a note) without it.
    pub fn tool(name: &str) -> Option<&str> {
        let found = Command::new(name).arg("-version").output().is_ok();
        if !found {
            println!("SKIPPED: {name} not found (Debian: apt-get install ffmpeg)");
        }
        found.then_some(name)
    }

    /// Runs `cmd` to its end, killing it (and failing) after `limit`.
    pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the tool starts");
        let deadline = Instant::now() + limit;
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("wait");
                panic!(
                    "{cmd:?} still running after {limit:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().expect("wait")
    }

    /// The stream and format facts `ffprobe` reports for `input`, as
    /// `key=value` lines; its stderr (errors only) must be empty.
    pub fn ffprobe(input: &str) -> String {
        let out = run_bounded(
            Command::new("ffprobe")
                .args(["-v", "error", "-show_entries"])
                .arg("stream=codec_name,codec_type,profile,width,height,r_frame_rate:format=format_name")
                .args(["-of", "default=noprint_wrappers=1", input]),
            Duration::from_secs(60),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "ffprobe {input}: {stderr}"
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes sample `name` into a directory of its own; returns its path
    /// and content. [`remove`] takes both away.
    fn sample(name: &str, size: u64) -> (PathBuf, Vec<u8>) {
        let dir = std::env::temp_dir().join(format!("pagepool-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_sample(&dir, name, size).unwrap();
        let path = dir.join(name);
        let data = std::fs::read(&path).unwrap();
        (path, data)
    }

    fn remove(path: &Path) {
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn ts_samples_are_mpeg_ts_with_every_frame_stamped() {
        let (path, data) = sample("check-structure.ts", SAMPLES[1].1);
        remove(&path);
        assert_eq!(data.len() as u64, SAMPLES[1].1);
        let frames = data.len() / FILE_FRAME_LEN;
        let sum = check_ts(&data, &mut FrameWriter::file(), true);
        assert_eq!(sum.packets, data.len() / ts::PACKET);
        assert_eq!(sum.pcrs, frames);
        let id = wire::sample_seed("check-structure.ts");
        let want: Vec<Stamp> = (0..frames as u64).map(|seq| Stamp { id, seq }).collect();
        assert_eq!(sum.stamps, want);
    }

    #[test]
    fn live_frames_are_mpeg_ts_with_every_frame_stamped() {
        let mut w = FrameWriter::live(500);
        let id = wire::channel_id("news");
        let mut data = vec![0u8; 600 * wire::FRAME_LEN];
        for (seq, f) in data.chunks_exact_mut(wire::FRAME_LEN).enumerate() {
            w.write(f, id, seq as u64);
        }
        let sum = check_ts(&data, &mut FrameWriter::live(500), true);
        assert_eq!(sum.pcrs, 600);
        let want: Vec<Stamp> = (0..600).map(|seq| Stamp { id, seq }).collect();
        assert_eq!(sum.stamps, want);
    }

    #[test]
    #[should_panic(expected = "CRC32")]
    fn a_damaged_pmt_fails_its_crc() {
        let mut frame = vec![0u8; FILE_FRAME_LEN];
        FrameWriter::file().write(&mut frame, 1, 0);
        frame[ts::PACKET + 10] ^= 1; // inside the PMT section
        check_ts(&frame, &mut FrameWriter::file(), true);
    }

    #[test]
    fn ffprobe_sees_h264_in_mpegts_and_ffmpeg_decodes_every_frame() {
        let (Some(_), Some(ffmpeg)) = (tool("ffprobe"), tool("ffmpeg")) else {
            return;
        };
        let (path, _) = sample("check-ffprobe.ts", SAMPLES[1].1);
        let file = path.to_str().unwrap().to_owned();
        let probed = ffprobe(&file);
        for fact in [
            "codec_name=h264",
            "codec_type=video",
            "width=160",
            "height=96",
            "r_frame_rate=25/1",
            "format_name=mpegts",
        ] {
            assert!(
                probed.lines().any(|l| l == fact),
                "{fact} not in:\n{probed}"
            );
        }
        // Decoding every picture reports no error.
        let out = run_bounded(
            Command::new(ffmpeg).args(["-v", "error", "-i", &file, "-f", "null", "-"]),
            Duration::from_secs(60),
        );
        remove(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "ffmpeg decode: {stderr}"
        );
    }
}
