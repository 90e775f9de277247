//! A synthetic H.264 elementary stream (Annex B byte stream) that decoders
//! take as it is: Constrained Baseline, every picture an IDR of one slice
//! whose macroblocks are all `I_PCM`, so the picture's samples are carried
//! raw and any bytes can ride in them. An access unit is
//!
//! | NAL unit | what |
//! |---|---|
//! | access unit delimiter | primary_pic_type 0 (I) |
//! | SPS (with the frame rate), PPS | repeated in every access unit: a player can start at any one |
//! | SEI user_data_unregistered | a 16-byte UUID and the caller's bytes |
//! | IDR slice | `I_PCM` macroblocks: 256 luma then 2 × 64 chroma samples each (4:2:0, 8 bits) |
//!
//! Emulation prevention (`00 00 0x` → `00 00 03 0x`) is applied everywhere,
//! so the sizes stay fixed only when the caller's bytes hold no zero (the
//! samples) or no `00 00` (the SEI).

/// Sample bytes one `I_PCM` macroblock carries.
pub const MB_SAMPLES: usize = 384;

/// A picture size in 16×16 macroblocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picture {
    pub width_mbs: u32,
    pub height_mbs: u32,
}

impl Picture {
    /// Sample bytes of one picture.
    pub const fn samples(self) -> usize {
        (self.width_mbs * self.height_mbs) as usize * MB_SAMPLES
    }
}

/// NAL unit types used here.
const NAL_IDR: u8 = 5;
const NAL_SEI: u8 = 6;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;

/// Writes one NAL unit (start code, header, escaped RBSP) at the end of `out`.
struct Nal<'a> {
    out: &'a mut Vec<u8>,
    /// Zero bytes just written (for emulation prevention).
    zeros: u8,
    /// Bits waiting for a whole byte, and how many.
    acc: u32,
    pending: u32,
}

impl<'a> Nal<'a> {
    fn start(out: &'a mut Vec<u8>, ref_idc: u8, kind: u8) -> Nal<'a> {
        out.extend_from_slice(&[0, 0, 0, 1, (ref_idc << 5) | kind]);
        Nal {
            out,
            zeros: 0,
            acc: 0,
            pending: 0,
        }
    }

    fn byte(&mut self, b: u8) {
        if self.zeros >= 2 && b <= 3 {
            self.out.push(3);
            self.zeros = 0;
        }
        self.out.push(b);
        self.zeros = if b == 0 { self.zeros + 1 } else { 0 };
    }

    /// The low `n` (at most 24) bits of `v`, most significant first.
    fn bits(&mut self, v: u32, n: u32) {
        debug_assert!(n <= 24);
        self.acc = (self.acc << n) | (v & ((1 << n) - 1));
        self.pending += n;
        while self.pending >= 8 {
            self.pending -= 8;
            let b = (self.acc >> self.pending) as u8;
            self.byte(b);
        }
        self.acc &= (1 << self.pending) - 1;
    }

    fn flag(&mut self, v: bool) {
        self.bits(u32::from(v), 1);
    }

    /// Exp-Golomb `ue(v)`.
    fn ue(&mut self, v: u32) {
        let x = v + 1;
        let len = 32 - x.leading_zeros();
        self.bits(0, len - 1);
        self.bits(x, len);
    }

    /// Zero bits up to the next byte boundary.
    fn align(&mut self) {
        if self.pending > 0 {
            self.bits(0, 8 - self.pending);
        }
    }

    /// Whole bytes, at a byte boundary.
    fn bytes(&mut self, data: &[u8]) {
        debug_assert_eq!(self.pending, 0);
        match data.split_first() {
            // The fast path: after the first byte, no zero means nothing to escape.
            Some((&first, rest)) if !rest.contains(&0) => {
                self.byte(first);
                self.out.extend_from_slice(rest);
                if !rest.is_empty() {
                    self.zeros = 0;
                }
            }
            _ => data.iter().for_each(|&b| self.byte(b)),
        }
    }

    /// rbsp_trailing_bits: a one, then zeros to the byte boundary.
    fn finish(mut self) {
        self.bits(1, 1);
        self.align();
    }
}

/// 32 bits, most significant first.
fn u32_bits(n: &mut Nal, v: u32) {
    n.bits(v >> 16, 16);
    n.bits(v & 0xffff, 16);
}

fn sps(out: &mut Vec<u8>, pic: Picture, fps: u32) {
    let mut n = Nal::start(out, 3, NAL_SPS);
    n.bits(66, 8); // profile_idc: Baseline
    n.bits(0b1100_0000, 8); // constraint_set0 and set1: Constrained Baseline
    n.bits(30, 8); // level_idc 3.0
    n.ue(0); // seq_parameter_set_id
    n.ue(0); // log2_max_frame_num_minus4
    n.ue(2); // pic_order_cnt_type 2: output order is decoding order
    n.ue(1); // max_num_ref_frames
    n.flag(false); // gaps_in_frame_num_value_allowed_flag
    n.ue(pic.width_mbs - 1);
    n.ue(pic.height_mbs - 1);
    n.flag(true); // frame_mbs_only_flag
    n.flag(true); // direct_8x8_inference_flag
    n.flag(false); // frame_cropping_flag
    n.flag(true); // vui_parameters_present_flag
    n.bits(0, 4); // no aspect ratio, overscan, video signal or chroma location info
    n.flag(true); // timing_info_present_flag: fps = time_scale / (2 num_units_in_tick)
    u32_bits(&mut n, 1); // num_units_in_tick
    u32_bits(&mut n, 2 * fps); // time_scale
    n.flag(true); // fixed_frame_rate_flag
    n.bits(0, 4); // no HRD parameters, pic_struct, bitstream restriction
    n.finish();
}

fn pps(out: &mut Vec<u8>) {
    let mut n = Nal::start(out, 3, NAL_PPS);
    n.ue(0); // pic_parameter_set_id
    n.ue(0); // seq_parameter_set_id
    n.flag(false); // entropy_coding_mode_flag: CAVLC
    n.flag(false); // bottom_field_pic_order_in_frame_present_flag
    n.ue(0); // num_slice_groups_minus1
    n.ue(0); // num_ref_idx_l0_default_active_minus1
    n.ue(0); // num_ref_idx_l1_default_active_minus1
    n.flag(false); // weighted_pred_flag
    n.bits(0, 2); // weighted_bipred_idc
    n.ue(0); // pic_init_qp_minus26: se(0) is ue(0)
    n.ue(0); // pic_init_qs_minus26
    n.ue(0); // chroma_qp_index_offset
    n.flag(true); // deblocking_filter_control_present_flag
    n.flag(false); // constrained_intra_pred_flag
    n.flag(false); // redundant_pic_cnt_present_flag
    n.finish();
}

/// Writes one access unit (see the module docs) at the end of `out`:
/// `fps` pictures a second, `idr_pic_id` differing between consecutive
/// pictures, `user_data`
/// follows `uuid` in the SEI, and `samples` (of [`Picture::samples`] bytes)
/// fill the macroblocks in raster order.
pub fn write_access_unit(
    out: &mut Vec<u8>,
    pic: Picture,
    fps: u32,
    idr_pic_id: u32,
    uuid: &[u8; 16],
    user_data: &[u8],
    samples: &[u8],
) {
    assert_eq!(samples.len(), pic.samples(), "samples of a {pic:?}");
    let mut aud = Nal::start(out, 0, NAL_AUD);
    aud.bits(0, 3); // primary_pic_type 0: I slices only
    aud.finish();
    sps(out, pic, fps);
    pps(out);

    let mut sei = Nal::start(out, 0, NAL_SEI);
    let mut size = uuid.len() + user_data.len();
    sei.bits(5, 8); // payloadType: user_data_unregistered
    while size >= 255 {
        sei.bits(255, 8);
        size -= 255;
    }
    sei.bits(size as u32, 8);
    sei.bytes(uuid);
    sei.bytes(user_data);
    sei.finish();

    let mut slice = Nal::start(out, 3, NAL_IDR);
    slice.ue(0); // first_mb_in_slice
    slice.ue(7); // slice_type: I, and every slice of the picture is I
    slice.ue(0); // pic_parameter_set_id
    slice.bits(0, 4); // frame_num (IDR)
    slice.ue(idr_pic_id);
    slice.flag(false); // no_output_of_prior_pics_flag
    slice.flag(false); // long_term_reference_flag
    slice.ue(0); // slice_qp_delta: se(0)
    slice.ue(1); // disable_deblocking_filter_idc: off, the samples stay as sent
    for mb in samples.chunks_exact(MB_SAMPLES) {
        slice.ue(25); // mb_type I_PCM
        slice.align(); // pcm_alignment_zero_bit
        slice.bytes(mb);
    }
    slice.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb_and_escapes() {
        let mut out = Vec::new();
        let mut n = Nal::start(&mut out, 0, NAL_SEI);
        n.ue(0); // 1
        n.ue(3); // 00100
        n.bits(0, 2);
        n.bytes(&[0, 0, 1, 7]);
        n.finish();
        // 1 00100 00 = 0x90; then 00 00 (03) 01 07; then the stop bit 0x80.
        assert_eq!(out, [0, 0, 0, 1, NAL_SEI, 0x90, 0, 0, 3, 1, 7, 0x80]);
    }

    #[test]
    fn the_pps_is_the_familiar_one() {
        let mut out = Vec::new();
        pps(&mut out);
        assert_eq!(out, [0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80]);
    }
}
