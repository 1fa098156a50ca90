//! Image files in and out, and conversions between pixels and the VAE's tensors.
//!
//! Inputs keep their file format, size and colour type on the way out. Transparent inputs are
//! flattened onto white for the model and their alpha is kept as a foreground hint.

use image::{DynamicImage, GrayImage, ImageFormat, ImageReader, RgbImage, imageops::FilterType};
use std::io::Cursor;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read image {path}: {reason}; check the path")]
    Read { path: String, reason: String },
    #[error("cannot decode image {path}: {reason}; the file is corrupt or not a PNG/JPEG image, so replace it")]
    Decode { path: String, reason: String },
    #[error("cannot write image {path}: {reason}; check that the directory exists and is writable")]
    Write { path: String, reason: String },
    #[error("output {path} names a {wanted} file but the input is {actual}; outputs keep the input's format, so name it .{ext}")]
    FormatMismatch { path: String, wanted: String, actual: String, ext: &'static str },
}

/// A decoded input with what is needed to write the output the same way.
#[derive(Debug, Clone)]
pub struct SourceImage {
    pub rgb: RgbImage,
    /// Alpha channel of RGBA/LA inputs (used as the foreground mask when present).
    pub alpha: Option<GrayImage>,
    pub format: ImageFormat,
    /// The input's colour layout, restored on output.
    pub color: image::ColorType,
}

pub fn load(path: &Path) -> Result<SourceImage, ImageError> {
    let bytes = std::fs::read(path).map_err(|e| ImageError::Read { path: path.display().to_string(), reason: e.to_string() })?;
    decode(&bytes, &path.display().to_string())
}

pub fn decode(bytes: &[u8], name: &str) -> Result<SourceImage, ImageError> {
    let decode_err = |reason: String| ImageError::Decode { path: name.to_string(), reason };
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| decode_err(e.to_string()))?;
    let format = reader.format().ok_or_else(|| decode_err("unknown file type".into()))?;
    let image = reader.decode().map_err(|e| decode_err(e.to_string()))?;
    if image.width() == 0 || image.height() == 0 {
        return Err(decode_err("it has no pixels".into()));
    }
    let color = image.color();
    let alpha = color.has_alpha().then(|| {
        let rgba = image.to_rgba8();
        GrayImage::from_fn(rgba.width(), rgba.height(), |x, y| image::Luma([rgba.get_pixel(x, y)[3]]))
    });
    let rgb = match &alpha {
        Some(_) => {
            let rgba = image.to_rgba8();
            RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
                let p = rgba.get_pixel(x, y);
                let a = p[3] as u32;
                let blend = |c: u8| ((c as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
                image::Rgb([blend(p[0]), blend(p[1]), blend(p[2])])
            })
        }
        None => image.to_rgb8(),
    };
    Ok(SourceImage { rgb, alpha, format, color })
}

/// The format an output path asks for, checked against the input's.
pub fn check_output_format(path: &Path, source: ImageFormat) -> Result<(), ImageError> {
    let Some(wanted) = ImageFormat::from_path(path).ok() else { return Ok(()) };
    if wanted == source {
        return Ok(());
    }
    Err(ImageError::FormatMismatch {
        path: path.display().to_string(),
        wanted: format!("{wanted:?}").to_uppercase(),
        actual: format!("{source:?}").to_uppercase(),
        ext: source.extensions_str().first().copied().unwrap_or("png"),
    })
}

/// Encodes `rgb` in the source's format and colour layout (alpha, where the input had it, is opaque:
/// the background is part of the new image).
pub fn encode_like(rgb: &RgbImage, source: &SourceImage) -> Result<Vec<u8>, String> {
    let image = DynamicImage::ImageRgb8(rgb.clone());
    let image = match source.color {
        image::ColorType::L8 | image::ColorType::L16 => DynamicImage::ImageLuma8(image.to_luma8()),
        image::ColorType::La8 | image::ColorType::La16 => DynamicImage::ImageLumaA8(image.to_luma_alpha8()),
        c if c.has_alpha() => DynamicImage::ImageRgba8(image.to_rgba8()),
        _ => image,
    };
    let mut out = Cursor::new(Vec::new());
    match source.format {
        ImageFormat::Jpeg => {
            let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95);
            image.to_rgb8().write_with_encoder(encoder).map_err(|e| e.to_string())?;
        }
        format => image.write_to(&mut out, format).map_err(|e| e.to_string())?,
    }
    Ok(out.into_inner())
}

pub fn save_like(path: &Path, rgb: &RgbImage, source: &SourceImage) -> Result<(), ImageError> {
    let write_err = |reason: String| ImageError::Write { path: path.display().to_string(), reason };
    let bytes = encode_like(rgb, source).map_err(write_err)?;
    // Write beside the target, then rename: a crash never leaves a half-written output.
    let tmp = path.with_extension(format!("{}.partial", path.extension().and_then(|e| e.to_str()).unwrap_or("out")));
    std::fs::write(&tmp, bytes).map_err(|e| write_err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| write_err(e.to_string()))
}

/// The processing size: each side rounded to the nearest multiple of 64 (the UNet halves the
/// latent three times), at least 64.
pub fn model_size(width: u32, height: u32) -> (u32, u32) {
    let round = |v: u32| (((v as f64) / 64.0).round() as u32).max(1) * 64;
    (round(width), round(height))
}

pub fn resize(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    if img.width() == width && img.height() == height {
        return img.clone();
    }
    image::imageops::resize(img, width, height, FilterType::Lanczos3)
}

/// Scales to cover `width`×`height` and centre-crops (scene images used as backgrounds).
pub fn cover(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let scale = (width as f64 / img.width() as f64).max(height as f64 / img.height() as f64);
    let (w, h) = (((img.width() as f64 * scale).round() as u32).max(width), ((img.height() as f64 * scale).round() as u32).max(height));
    let scaled = resize(img, w, h);
    image::imageops::crop_imm(&scaled, (w - width) / 2, (h - height) / 2, width, height).to_image()
}

/// Planar CHW floats in [−1, 1] (`x·2 − 1`), the VAE encoder's input.
pub fn to_vae_input(img: &RgbImage, out: &mut Vec<f32>) {
    let plane = (img.width() * img.height()) as usize;
    let start = out.len();
    out.resize(start + 3 * plane, 0.0);
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            out[start + c * plane + i] = p[c] as f32 / 255.0 * 2.0 - 1.0;
        }
    }
}

/// The VAE decoder's planar output to pixels: `clamp((y + 1)/2, 0, 1)`, rounded to 8 bits.
pub fn from_vae_output(data: &[f32], width: u32, height: u32) -> RgbImage {
    let plane = (width * height) as usize;
    RgbImage::from_fn(width, height, |x, y| {
        let i = (y * width + x) as usize;
        let px = |c: usize| (((data[c * plane + i] + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).round() as u8;
        image::Rgb([px(0), px(1), px(2)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_sizes() {
        assert_eq!(model_size(512, 512), (512, 512));
        assert_eq!(model_size(500, 700), (512, 704));
        assert_eq!(model_size(10, 64), (64, 64));
    }

    #[test]
    fn vae_round_trip_is_exact_for_8_bits() {
        let img = RgbImage::from_fn(3, 2, |x, y| image::Rgb([(x * 80) as u8, (y * 200) as u8, 255]));
        let mut t = Vec::new();
        to_vae_input(&img, &mut t);
        assert_eq!(t.len(), 18);
        assert_eq!(from_vae_output(&t, 3, 2), img);
    }

    #[test]
    fn formats_are_kept() {
        let img = RgbImage::from_pixel(8, 8, image::Rgb([10, 20, 30]));
        for format in [ImageFormat::Png, ImageFormat::Jpeg] {
            let source = SourceImage { rgb: img.clone(), alpha: None, format, color: image::ColorType::Rgb8 };
            let bytes = encode_like(&img, &source).unwrap();
            let back = decode(&bytes, "x").unwrap();
            assert_eq!(back.format, format);
            assert_eq!(back.rgb.dimensions(), (8, 8));
        }
        assert!(check_output_format(Path::new("a.jpg"), ImageFormat::Png).unwrap_err().to_string().contains("name it .png"));
        assert!(check_output_format(Path::new("a.PNG"), ImageFormat::Png).is_ok());
    }

    #[test]
    fn corrupt_bytes_are_a_clear_error() {
        let mut png = Vec::new();
        let source = SourceImage { rgb: RgbImage::new(4, 4), alpha: None, format: ImageFormat::Png, color: image::ColorType::Rgb8 };
        png.extend(encode_like(&source.rgb, &source).unwrap());
        for bad in [&b""[..], b"hello", &png[..png.len() / 2]] {
            let err = decode(bad, "bad.png").unwrap_err().to_string();
            assert!(err.starts_with("cannot decode image bad.png"), "{err}");
        }
    }
}
