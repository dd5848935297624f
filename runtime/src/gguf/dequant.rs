//! GGML tensor types and their dequantization to f32.
//!
//! Block layouts (all little-endian, `d`/`m`/`dmin` are IEEE halves):
//! - `Q4_0`: 32 values in 18 bytes: `d`, 16 bytes of nibbles; `x = (q - 8) · d`. Low nibbles are
//!   values 0..16, high nibbles 16..32.
//! - `Q4_1`: 32 values in 20 bytes: `d`, `m`, 16 bytes of nibbles; `x = q · d + m`.
//! - `Q8_0`: 32 values in 34 bytes: `d`, 32 signed bytes; `x = q · d`.
//! - `Q4_K`: 256 values in 144 bytes: `d`, `dmin`, 12 bytes packing eight 6-bit (scale, min)
//!   pairs, 128 bytes of nibbles; each 64 values use two pairs, low nibbles then high nibbles:
//!   `x = d · scale · q − dmin · min`.
//! - `Q6_K`: 256 values in 210 bytes: 128 bytes of low nibbles `ql`, 64 bytes of high 2-bit
//!   pairs `qh`, 16 signed 8-bit scales, `d`; `x = d · scale · (q − 32)` with 16 values a scale.

use half::{bf16, f16};

/// The GGML storage types this runtime reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    /// f32.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 4-bit, one scale per 32.
    Q4_0,
    /// 4-bit, scale and offset per 32.
    Q4_1,
    /// 8-bit, one scale per 32.
    Q8_0,
    /// 4-bit k-quant, 256 a super-block.
    Q4K,
    /// 6-bit k-quant, 256 a super-block.
    Q6K,
}

impl GgmlType {
    /// From the GGML type id; `None` for the ones not supported.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4K,
            14 => GgmlType::Q6K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    /// GGML's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q6K => "Q6_K",
        }
    }

    /// (values per block, bytes per block).
    pub fn block(self) -> (u64, u64) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q4K => (256, 144),
            GgmlType::Q6K => (256, 210),
        }
    }

    /// Bytes of `elements` values stored in rows of `row` values; `None` if rows are not
    /// whole blocks.
    pub fn byte_size(self, elements: u64, row: u64) -> Option<u64> {
        let (per, bytes) = self.block();
        if row == 0 || !row.is_multiple_of(per) {
            return None;
        }
        (elements / per).checked_mul(bytes)
    }
}

fn half_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes `data` (whole blocks of `ty`) into `out`, which must hold exactly the values.
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) {
    let (per, bytes) = ty.block();
    let (per, bytes) = (per as usize, bytes as usize);
    debug_assert_eq!(data.len() / bytes * per, out.len());
    for (b, y) in data.chunks_exact(bytes).zip(out.chunks_exact_mut(per)) {
        match ty {
            GgmlType::F32 => y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            GgmlType::F16 => y[0] = half_at(b, 0),
            GgmlType::BF16 => y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            GgmlType::Q4_0 => {
                let d = half_at(b, 0);
                for (j, q) in b[2..18].iter().enumerate() {
                    y[j] = (f32::from(q & 0xF) - 8.0) * d;
                    y[j + 16] = (f32::from(q >> 4) - 8.0) * d;
                }
            }
            GgmlType::Q4_1 => {
                let (d, m) = (half_at(b, 0), half_at(b, 2));
                for (j, q) in b[4..20].iter().enumerate() {
                    y[j] = f32::from(q & 0xF) * d + m;
                    y[j + 16] = f32::from(q >> 4) * d + m;
                }
            }
            GgmlType::Q8_0 => {
                let d = half_at(b, 0);
                for (j, q) in b[2..34].iter().enumerate() {
                    y[j] = f32::from(*q as i8) * d;
                }
            }
            GgmlType::Q4K => q4k_block(b, y),
            GgmlType::Q6K => q6k_block(b, y),
        }
    }
}

/// The `j`-th 6-bit (scale, min) pair of a `Q4_K` super-block's 12 packed bytes.
fn q4k_scale_min(j: usize, s: &[u8]) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    };
    (f32::from(sc), f32::from(m))
}

fn q4k_block(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (half_at(b, 0), half_at(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    for chunk in 0..4 {
        let (s1, m1) = q4k_scale_min(2 * chunk, scales);
        let (s2, m2) = q4k_scale_min(2 * chunk + 1, scales);
        let q = &qs[32 * chunk..32 * chunk + 32];
        let out = &mut y[64 * chunk..64 * chunk + 64];
        for l in 0..32 {
            out[l] = d * s1 * f32::from(q[l] & 0xF) - dmin * m1;
            out[l + 32] = d * s2 * f32::from(q[l] >> 4) - dmin * m2;
        }
    }
}

fn q6k_block(b: &[u8], y: &mut [f32]) {
    let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = half_at(b, 208);
    for half in 0..2 {
        let (ql, qh) = (&ql[64 * half..], &qh[32 * half..]);
        let sc = &sc[8 * half..];
        let out = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q =
                |low: u8, shift: u32| f32::from((low | (((qh[l] >> shift) & 3) << 4)) as i8 - 32);
            let s = |k: usize| d * f32::from(sc[is + k] as i8);
            out[l] = s(0) * q(ql[l] & 0xF, 0);
            out[l + 32] = s(2) * q(ql[l + 32] & 0xF, 2);
            out[l + 64] = s(4) * q(ql[l] >> 4, 4);
            out[l + 96] = s(6) * q(ql[l + 32] >> 4, 6);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q4_0_q4_1_q8_0_follow_their_formulas() {
        let mut b = h(0.5).to_vec();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut y = [0f32; 32];
        dequantize(GgmlType::Q4_0, &b, &mut y);
        assert_eq!(y[0], -4.0);
        assert_eq!(y[15], 3.5);
        assert_eq!(y[16], 3.5);
        assert_eq!(y[31], -4.0);

        let mut b = h(0.25).to_vec();
        b.extend(h(-1.0));
        b.extend((0..16u8).map(|j| j | (j << 4)));
        dequantize(GgmlType::Q4_1, &b, &mut y);
        assert_eq!(y[3], 3.0 * 0.25 - 1.0);
        assert_eq!(y[19], 3.0 * 0.25 - 1.0);

        let mut b = h(2.0).to_vec();
        b.extend((0..32i8).map(|j| (j - 16) as u8));
        dequantize(GgmlType::Q8_0, &b, &mut y);
        assert_eq!(y[0], -32.0);
        assert_eq!(y[31], 30.0);
    }

    #[test]
    fn q4_k_uses_six_bit_scales_and_mins() {
        let mut b = h(1.0).to_vec();
        b.extend(h(0.5));
        // Pairs 0..4 take the low 6 bits of bytes 0..4 (scales) and 4..8 (mins); pairs 4..8 take
        // nibbles of bytes 8..12 plus the top two bits of bytes 0..8.
        let mut scales = [0u8; 12];
        scales[0] = 3 | (1 << 6); // scale 0 = 3, and scale 4 gets 1 << 4 from these top bits
        scales[4] = 5; // min 0 = 5
        scales[8] = 2 | (7 << 4); // scale 4 low nibble 2, min 4 low nibble 7
        b.extend(scales);
        b.extend(std::iter::repeat_n(0x21u8, 128)); // low nibble 1, high nibble 2
        let mut y = [0f32; 256];
        dequantize(GgmlType::Q4K, &b, &mut y);
        assert_eq!(y[0], 3.0 * 1.0 - 0.5 * 5.0);
        // Pair 4 = (2 | 16, 7): first value of the third 64-chunk uses the low nibble (1).
        assert_eq!(y[128], 18.0 * 1.0 - 0.5 * 7.0);
    }

    #[test]
    fn q6_k_combines_low_and_high_bits() {
        let mut b = vec![0u8; 210];
        b[0] = 0x0F; // value 0: low nibble 15; value 64: high nibble 0
        b[128] = 0b10; // value 0 high bits 2 -> q = 15 + 32 - 32 = 15
        b[192] = 2; // scale 0
        b[196] = (-1i8) as u8; // scale 4 (values 64..80)
        b[208..210].copy_from_slice(&h(0.5));
        let mut y = [0f32; 256];
        dequantize(GgmlType::Q6K, &b, &mut y);
        assert_eq!(y[0], 0.5 * 2.0 * 15.0);
        assert_eq!(y[64], 16.0);
        assert_eq!(y[1], 0.5 * 2.0 * -32.0);
    }
}
