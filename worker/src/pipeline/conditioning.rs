//! Conditioning inputs built from pixels: the IC-Light foreground (subject on flat gray), its mask,
//! the `fbc` background, and the CLIP image for IP-Adapter (DESIGN §4).

use crate::pipeline::image_io::{self, SourceImage};
use acufarm_core::choice::Foreground;
use image::{GrayImage, RgbImage, imageops::FilterType};

/// Where the background was, in the foreground image.
pub const GRAY: u8 = 127;
const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ForegroundMode {
    /// Pixels within `tolerance` (per channel, 0–255) of the border's median colour are background;
    /// an input with an alpha channel uses its alpha instead.
    ColorKey { tolerance: u8 },
    /// `depth > 0` is foreground (nearest-neighbour resampled to the image size).
    Depth,
    /// The whole image is foreground.
    None,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConditioningError {
    #[error("depth map is {dw}×{dh} but the image is {iw}×{ih}: the aspect ratios differ, so it belongs to another image; pass the matching depth map")]
    DepthAspect { dw: u32, dh: u32, iw: u32, ih: u32 },
    #[error("--foreground depth needs a depth map; pass --depth IMG or choose --foreground color_key")]
    DepthMissing,
}

impl ForegroundMode {
    /// The mask rule of a spec's (or flag's) foreground choice.
    pub fn new(choice: Foreground, tolerance: u8) -> Self {
        match choice {
            Foreground::ColorKey => Self::ColorKey { tolerance },
            Foreground::Depth => Self::Depth,
            Foreground::None => Self::None,
        }
    }
}

/// Foreground mask at the source image's size (true = subject).
pub fn foreground_mask(source: &SourceImage, mode: ForegroundMode, depth: Option<&GrayImage>) -> Result<Vec<bool>, ConditioningError> {
    let (w, h) = source.rgb.dimensions();
    match mode {
        ForegroundMode::None => Ok(vec![true; (w * h) as usize]),
        ForegroundMode::ColorKey { tolerance } => Ok(match &source.alpha {
            Some(alpha) => alpha.pixels().map(|p| p[0] > 0).collect(),
            None => {
                let key = border_median(&source.rgb);
                source.rgb.pixels().map(|p| (0..3).any(|c| p[c].abs_diff(key[c]) > tolerance)).collect()
            }
        }),
        ForegroundMode::Depth => {
            let depth = depth.ok_or(ConditioningError::DepthMissing)?;
            let (dw, dh) = depth.dimensions();
            if (dw as f64 / dh as f64 - w as f64 / h as f64).abs() > 0.01 * (w as f64 / h as f64) {
                return Err(ConditioningError::DepthAspect { dw, dh, iw: w, ih: h });
            }
            let resized = image::imageops::resize(depth, w, h, FilterType::Nearest);
            Ok(resized.pixels().map(|p| p[0] > 0).collect())
        }
    }
}

/// Per-channel median of the one-pixel border: the render's plain background colour.
pub fn border_median(img: &RgbImage) -> [u8; 3] {
    let (w, h) = img.dimensions();
    let mut channels: [Vec<u8>; 3] = Default::default();
    let mut push = |x: u32, y: u32| {
        let p = img.get_pixel(x, y);
        (0..3).for_each(|c| channels[c].push(p[c]));
    };
    for x in 0..w {
        push(x, 0);
        push(x, h - 1);
    }
    for y in 0..h {
        push(0, y);
        push(w - 1, y);
    }
    channels.map(|mut v| {
        v.sort_unstable();
        v[v.len() / 2]
    })
}

/// The subject composited on flat gray where the background was.
pub fn foreground_on_gray(rgb: &RgbImage, mask: &[bool]) -> RgbImage {
    let mut out = rgb.clone();
    for (p, &fg) in out.pixels_mut().zip(mask) {
        if !fg {
            *p = image::Rgb([GRAY; 3]);
        }
    }
    out
}

pub fn flat_gray(width: u32, height: u32) -> RgbImage {
    RgbImage::from_pixel(width, height, image::Rgb([GRAY; 3]))
}

/// CLIP image-encoder input: short side resized to `size` (bicubic), centre crop, CLIP mean/std,
/// appended to `out` as planar CHW.
pub fn clip_pixels(img: &RgbImage, size: u32, out: &mut Vec<f32>) {
    let (w, h) = img.dimensions();
    let scale = size as f64 / w.min(h) as f64;
    let (rw, rh) = (((w as f64 * scale).round() as u32).max(size), ((h as f64 * scale).round() as u32).max(size));
    let resized = if (rw, rh) == (w, h) { img.clone() } else { image::imageops::resize(img, rw, rh, FilterType::CatmullRom) };
    let crop = image::imageops::crop_imm(&resized, (rw - size) / 2, (rh - size) / 2, size, size).to_image();
    let plane = (size * size) as usize;
    let start = out.len();
    out.resize(start + 3 * plane, 0.0);
    for (i, p) in crop.pixels().enumerate() {
        for c in 0..3 {
            out[start + c * plane + i] = (p[c] as f32 / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
        }
    }
}

/// The `fbc` background at the model size.
pub fn background_for(kind: &Background, width: u32, height: u32, scene: Option<&RgbImage>) -> RgbImage {
    match kind {
        Background::Gray => flat_gray(width, height),
        Background::Image(img) => image_io::cover(img, width, height),
        Background::Scene => scene.map(|s| image_io::cover(s, width, height)).unwrap_or_else(|| flat_gray(width, height)),
    }
}

/// Source of the `fbc` background latent.
#[derive(Debug, Clone)]
pub enum Background {
    Scene,
    Gray,
    Image(RgbImage),
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ImageFormat;

    fn source(rgb: RgbImage) -> SourceImage {
        SourceImage { rgb, alpha: None, format: ImageFormat::Png, color: image::ColorType::Rgb8 }
    }

    #[test]
    fn color_key_finds_the_subject() {
        let mut img = RgbImage::from_pixel(8, 8, image::Rgb([250, 250, 250]));
        img.put_pixel(3, 4, image::Rgb([200, 150, 120]));
        img.put_pixel(4, 4, image::Rgb([245, 248, 252])); // within tolerance: background
        let mask = foreground_mask(&source(img.clone()), ForegroundMode::ColorKey { tolerance: 12 }, None).unwrap();
        assert_eq!(mask.iter().filter(|&&m| m).count(), 1);
        assert!(mask[4 * 8 + 3]);
        let fg = foreground_on_gray(&img, &mask);
        assert_eq!(fg.get_pixel(0, 0), &image::Rgb([GRAY; 3]));
        assert_eq!(fg.get_pixel(3, 4), &image::Rgb([200, 150, 120]));
    }

    #[test]
    fn depth_masks_and_aspect_check() {
        let img = source(RgbImage::new(4, 4));
        let mut depth = GrayImage::new(8, 8);
        for (x, y) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            depth.put_pixel(x, y, image::Luma([9]));
        }
        let mask = foreground_mask(&img, ForegroundMode::Depth, Some(&depth)).unwrap();
        assert_eq!(mask.iter().filter(|&&m| m).count(), 1);
        let wide = GrayImage::new(8, 4);
        assert_eq!(foreground_mask(&img, ForegroundMode::Depth, Some(&wide)), Err(ConditioningError::DepthAspect { dw: 8, dh: 4, iw: 4, ih: 4 }));
        assert_eq!(foreground_mask(&img, ForegroundMode::Depth, None), Err(ConditioningError::DepthMissing));
    }

    #[test]
    fn clip_input_shape_and_normalisation() {
        let img = RgbImage::from_pixel(300, 224, image::Rgb([255, 0, 128]));
        let mut out = Vec::new();
        clip_pixels(&img, 224, &mut out);
        assert_eq!(out.len(), 3 * 224 * 224);
        assert!((out[0] - (1.0 - CLIP_MEAN[0]) / CLIP_STD[0]).abs() < 1e-5);
        assert!((out[224 * 224] - (0.0 - CLIP_MEAN[1]) / CLIP_STD[1]).abs() < 1e-5);
    }
}
