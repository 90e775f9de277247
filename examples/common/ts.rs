//! A small MPEG-TS muxer (ISO/IEC 13818-1): 188-byte packets, a PAT and a
//! PMT with their CRC-32, and PES packets with a PTS, split over transport
//! packets whose continuity counters the caller carries, the first with a
//! PCR in its adaptation field. One program, one video stream; enough for
//! `ffprobe` and `ffmpeg` to take the stream for what it is.

/// Bytes in a transport stream packet.
pub const PACKET: usize = 188;
/// Payload bytes in a packet without an adaptation field.
pub const PAYLOAD: usize = PACKET - 4;
/// The first byte of every packet.
pub const SYNC: u8 = 0x47;
/// The PAT's PID.
pub const PAT_PID: u16 = 0x0000;
/// The PMT's PID.
pub const PMT_PID: u16 = 0x1000;
/// The video stream's PID (it carries the PCR too).
pub const VIDEO_PID: u16 = 0x0100;
/// The one program's number.
pub const PROGRAM: u16 = 1;
/// `stream_type` of H.264 video (ITU-T H.264 | ISO/IEC 14496-10).
pub const STREAM_TYPE_H264: u8 = 0x1b;
/// The PES `stream_id` of the first video stream.
pub const STREAM_ID_VIDEO: u8 = 0xe0;
/// Bytes of the PES header this muxer writes (start code to PTS).
pub const PES_HEADER: usize = 14;
/// Bytes of an adaptation field that carries only a PCR (with its length byte).
const PCR_FIELD: usize = 8;
/// PTS and DTS are 33-bit counts of a 90 kHz clock.
pub const PTS_MASK: u64 = (1 << 33) - 1;

/// CRC-32/MPEG-2 (polynomial 0x04C11DB7, initial value all ones, no
/// reflection, no final xor), the checksum of PSI sections.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Writes a packet header: `start` sets payload_unit_start_indicator,
/// `adaptation` says whether an adaptation field follows (a payload always does).
fn header(out: &mut [u8], pid: u16, start: bool, adaptation: bool, cc: u8) {
    out[0] = SYNC;
    out[1] = (u8::from(start) << 6) | (pid >> 8) as u8 & 0x1f;
    out[2] = pid as u8;
    out[3] = if adaptation { 0x30 } else { 0x10 } | (cc & 0x0f);
}

/// Writes one PSI section (its CRC appended) as a single packet.
fn psi_packet(out: &mut [u8], pid: u16, cc: u8, section: &[u8]) {
    let out = &mut out[..PACKET];
    header(out, pid, true, false, cc);
    out[4] = 0; // pointer_field: the section starts right after it
    let end = 5 + section.len();
    out[5..end].copy_from_slice(section);
    out[end..end + 4].copy_from_slice(&crc32_mpeg2(section).to_be_bytes());
    out[end + 4..].fill(0xff);
}

/// Writes the PAT and the PMT (H.264 video on [`VIDEO_PID`], which carries
/// the PCR) as two packets into `out[..2 * PACKET]`, both with counter `cc`.
pub fn write_psi(out: &mut [u8], cc: u8) {
    let pmt_pid = PMT_PID.to_be_bytes();
    let program = PROGRAM.to_be_bytes();
    // table_id 0, section_length 13, transport_stream_id 1, version 0
    // current, section 0 of 0, then program -> PMT PID.
    let pat = [
        0x00,
        0xb0,
        13,
        0x00,
        0x01,
        0xc1,
        0x00,
        0x00,
        program[0],
        program[1],
        0xe0 | pmt_pid[0],
        pmt_pid[1],
    ];
    let video = VIDEO_PID.to_be_bytes();
    // table_id 2, section_length 18, the program, version 0 current, PCR
    // PID, no program info, one stream: H.264 on VIDEO_PID, no ES info.
    let pmt = [
        0x02,
        0xb0,
        18,
        program[0],
        program[1],
        0xc1,
        0x00,
        0x00,
        0xe0 | video[0],
        video[1],
        0xf0,
        0x00,
        STREAM_TYPE_H264,
        0xe0 | video[0],
        video[1],
        0xf0,
        0x00,
    ];
    psi_packet(&mut out[..PACKET], PAT_PID, cc, &pat);
    psi_packet(&mut out[PACKET..2 * PACKET], PMT_PID, cc, &pmt);
}

/// Transport packets one PES of `es_len` elementary-stream bytes takes
/// with [`write_pes`].
pub fn pes_packets(es_len: usize) -> usize {
    (PES_HEADER + es_len + PCR_FIELD).div_ceil(PAYLOAD)
}

/// The 5 bytes of a PTS (only a PTS: prefix `0010`).
fn pts_bytes(pts: u64) -> [u8; 5] {
    let p = pts & PTS_MASK;
    [
        0x21 | ((p >> 29) as u8 & 0x0e),
        (p >> 22) as u8,
        ((p >> 14) as u8 & 0xfe) | 1,
        (p >> 7) as u8,
        ((p << 1) as u8 & 0xfe) | 1,
    ]
}

/// The 6 bytes of a PCR, `pcr` in 27 MHz ticks (33-bit base at 90 kHz, 9-bit
/// extension).
fn pcr_bytes(pcr: u64) -> [u8; 6] {
    let base = (pcr / 300) & PTS_MASK;
    let ext = (pcr % 300) as u16;
    [
        (base >> 25) as u8,
        (base >> 17) as u8,
        (base >> 9) as u8,
        (base >> 1) as u8,
        ((base as u8 & 1) << 7) | 0x7e | (ext >> 8) as u8,
        ext as u8,
    ]
}

/// One video access unit as a PES packet with `pts`, over exactly
/// `out.len() / PACKET` packets of [`VIDEO_PID`] (which must be
/// [`pes_packets`]`(es.len())`): the first has payload_unit_start, a PCR
/// (`pcr`, 27 MHz) and random_access_indicator (`random_access`), the last
/// the stuffing. Counters run from `cc`; returns the next one.
pub fn write_pes(out: &mut [u8], cc: u8, pcr: u64, pts: u64, random_access: bool, es: &[u8]) -> u8 {
    let packets = out.len() / PACKET;
    assert!(
        packets == pes_packets(es.len()) && out.len().is_multiple_of(PACKET),
        "{} bytes of elementary stream take {} packets, not {packets}",
        es.len(),
        pes_packets(es.len())
    );
    let pes_len = PES_HEADER + es.len();
    // PES_packet_length counts the bytes after it; 0 ("unbounded", video
    // only) when that does not fit in 16 bits.
    let length = u16::try_from(pes_len - 6).unwrap_or(0).to_be_bytes();
    let mut pes_header = [0u8; PES_HEADER];
    pes_header[..4].copy_from_slice(&[0, 0, 1, STREAM_ID_VIDEO]);
    pes_header[4..6].copy_from_slice(&length);
    // '10', data_alignment_indicator; PTS only; 5 header bytes.
    pes_header[6..9].copy_from_slice(&[0x84, 0x80, 5]);
    pes_header[9..].copy_from_slice(&pts_bytes(pts));
    let stuffing = packets * PAYLOAD - PCR_FIELD - pes_len;

    let mut parts = [&pes_header[..], es];
    let mut cc = cc;
    for (i, packet) in out.chunks_exact_mut(PACKET).enumerate() {
        let (first, last) = (i == 0, i + 1 == packets);
        // Adaptation field bytes in this packet, its length byte included.
        let field = if first { PCR_FIELD } else { 0 } + if last { stuffing } else { 0 };
        header(packet, VIDEO_PID, first, field > 0, cc);
        cc = (cc + 1) & 0x0f;
        let mut at = 4;
        if field > 0 {
            packet[4] = (field - 1) as u8;
            at = 5;
            if field > 1 {
                // discontinuity 0, random_access_indicator, PCR_flag.
                packet[5] = if first {
                    (u8::from(random_access) << 6) | 0x10
                } else {
                    0
                };
                at = 6;
                if first {
                    packet[6..12].copy_from_slice(&pcr_bytes(pcr));
                    at = 12;
                }
                packet[at..4 + field].fill(0xff);
                at = 4 + field;
            }
        }
        take(&mut parts, &mut packet[at..]);
    }
    debug_assert!(parts.iter().all(|p| p.is_empty()));
    cc
}

/// Fills `out` from the front of `parts`, consuming what it copies.
fn take(parts: &mut [&[u8]], out: &mut [u8]) {
    let mut at = 0;
    for part in parts.iter_mut() {
        let n = part.len().min(out.len() - at);
        out[at..at + n].copy_from_slice(&part[..n]);
        *part = &part[n..];
        at += n;
    }
    assert_eq!(at, out.len(), "pes_packets counted the bytes");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_the_check_string() {
        // The catalogue's check value of CRC-32/MPEG-2.
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_e6e7);
    }

    #[test]
    fn pes_fills_its_packets_exactly() {
        for es_len in [0, 1, 100, 161, 162, 163, 345, 346, 347, 5000] {
            let n = pes_packets(es_len);
            let es: Vec<u8> = (0..es_len).map(|i| i as u8).collect();
            let mut out = vec![0u8; n * PACKET];
            assert_eq!(
                write_pes(&mut out, 15, 0, 0, true, &es),
                (15 + n as u8) & 15
            );
            let mut pes = Vec::new();
            for (i, p) in out.chunks(PACKET).enumerate() {
                assert_eq!(p[0], SYNC);
                assert_eq!(p[3] & 0x0f, ((15 + i) & 15) as u8, "packet {i} of {es_len}");
                let at = if p[3] & 0x20 != 0 {
                    5 + usize::from(p[4])
                } else {
                    4
                };
                pes.extend_from_slice(&p[at..]);
            }
            assert_eq!(pes[..4], [0, 0, 1, STREAM_ID_VIDEO]);
            assert_eq!(pes[PES_HEADER..], es[..], "{es_len}");
        }
    }
}
