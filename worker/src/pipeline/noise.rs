//! Seeded Gaussian noise from a counter-based generator, so the same seed gives the same latents on
//! every machine and for any thread count.
//!
//! Generator: Philox4x32-10 (Salmon et al., SC'11), key = the 64-bit seed (low word first), counter =
//! (block index as u64, low word first, 0, 0). Each block yields four u32 words `w`, mapped to
//! `u = (w + 0.5)·2⁻³²` in (0, 1) and turned into four normals by Box–Muller on (u0, u1) and (u2, u3):
//! `z = √(−2 ln u_a)·(cos 2πu_b, sin 2πu_b)`, computed in f64 and stored as f32. Element `i` of a
//! tensor (row-major) is normal `i mod 4` of block `i / 4`.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// One Philox4x32-10 block.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let p0 = (M0 as u64) * (c[0] as u64);
        let p1 = (M1 as u64) * (c[2] as u64);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// `len` standard normals for `seed`.
pub fn gaussian(seed: u64, len: usize) -> Vec<f32> {
    let key = [seed as u32, (seed >> 32) as u32];
    let mut out = Vec::with_capacity(len.next_multiple_of(4));
    let unit = |w: u32| (w as f64 + 0.5) * (1.0 / 4_294_967_296.0);
    for block in 0..len.div_ceil(4) as u64 {
        let w = philox4x32_10([block as u32, (block >> 32) as u32, 0, 0], key);
        for pair in [(w[0], w[1]), (w[2], w[3])] {
            let r = (-2.0 * unit(pair.0).ln()).sqrt();
            let theta = std::f64::consts::TAU * unit(pair.1);
            out.push((r * theta.cos()) as f32);
            out.push((r * theta.sin()) as f32);
        }
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors from the Random123 distribution (kat_vectors, philox4x32 R=10).
    #[test]
    fn philox_known_answers() {
        assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
        assert_eq!(philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]), [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]);
    }

    #[test]
    fn gaussian_is_standard_and_seeded() {
        let a = gaussian(42, 100_001);
        assert_eq!(a.len(), 100_001);
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.02, "mean {mean} var {var}");
        assert_eq!(gaussian(42, 10), a[..10]);
        assert_ne!(gaussian(43, 10), a[..10]);
    }
}
