//! The drift report's PNG plots, drawn directly into an `RgbImage` (no plotting dependency):
//! `drift_points.png`, one column per point (numbered 1–8 as in drift.md) with every pair's drift as
//! a dot, the 25–75 % box, the median and the 5–95 % whiskers, on a pixel axis with labelled ticks;
//! `worst_pairs.png`, the augmented images of the worst pairs with the original's points (green
//! crosses) and the augmented image's points (red dots) joined by a line.

use acufarm_worker::drift::stats::quantile;
use anyhow::Context;
use image::{Rgb, RgbImage, imageops::FilterType};
use std::path::Path;

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([40, 40, 40]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const DOT: Rgb<u8> = Rgb([90, 130, 200]);
const BOX: Rgb<u8> = Rgb([20, 60, 140]);
const MEDIAN: Rgb<u8> = Rgb([220, 90, 20]);
const GREEN: Rgb<u8> = Rgb([0, 200, 60]);
const RED: Rgb<u8> = Rgb([235, 30, 30]);

/// 3×5 glyphs for digits and '.', one row of 3 bits per line, top first.
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
        '3' => [0b111, 0b001, 0b111, 0b001, 0b111],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' => [0b111, 0b100, 0b111, 0b001, 0b111],
        '6' => [0b111, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b010, 0b010, 0b010],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b111],
        '.' => [0, 0, 0, 0, 0b010],
        _ => return None,
    })
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

/// Draws `text` with its top-left at (x, y), each glyph pixel a `scale`×`scale` square.
fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, scale: i64, c: Rgb<u8>) {
    for (k, ch) in s.chars().enumerate() {
        let Some(rows) = glyph(ch) else { continue };
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..3 {
                if bits & (0b100 >> col) != 0 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            put(img, x + (k as i64 * 4 + col) * scale + dx, y + r as i64 * scale + dy, c);
                        }
                    }
                }
            }
        }
    }
}

fn text_width(s: &str, scale: i64) -> i64 {
    (s.chars().count() as i64 * 4 - 1) * scale
}

fn rect(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb<u8>) {
    for x in x0.min(x1)..=x0.max(x1) {
        put(img, x, y0, c);
        put(img, x, y1, c);
    }
    for y in y0.min(y1)..=y0.max(y1) {
        put(img, x0, y, c);
        put(img, x1, y, c);
    }
}

fn line(img: &mut RgbImage, (x0, y0): (f32, f32), (x1, y1): (f32, f32), c: Rgb<u8>) {
    let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as usize;
    for i in 0..=steps {
        let t = i as f32 / steps as f32;
        put(img, (x0 + (x1 - x0) * t).round() as i64, (y0 + (y1 - y0) * t).round() as i64, c);
    }
}

/// A round axis maximum at or above `v`: 1, 2 or 5 times a power of ten.
fn nice_ceiling(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|&c| c >= v).unwrap_or(10.0 * p)
}

fn save(img: &RgbImage, path: &Path) -> anyhow::Result<()> {
    img.save(path).with_context(|| format!("cannot write {}; check that --out is writable", path.display()))
}

/// Per-point distribution plot of the drifts in pixels.
pub fn distributions(path: &Path, samples: &[Vec<f64>; 8]) -> anyhow::Result<()> {
    let (w, h) = (880i64, 420i64);
    let (left, right, top, bottom) = (60i64, 20i64, 20i64, 40i64);
    let mut img = RgbImage::from_pixel(w as u32, h as u32, WHITE);
    let ymax = nice_ceiling(samples.iter().flatten().copied().fold(0.0, f64::max));
    let plot_h = (h - top - bottom) as f64;
    let y_of = |v: f64| top as f64 + plot_h * (1.0 - (v / ymax).clamp(0.0, 1.0));
    for k in 0..=5 {
        let v = ymax * k as f64 / 5.0;
        let y = y_of(v).round() as i64;
        for x in left..w - right {
            put(&mut img, x, y, GRID);
        }
        let label = if ymax >= 5.0 { format!("{v:.0}") } else { format!("{v:.1}") };
        text(&mut img, left - 8 - text_width(&label, 2), y - 5, &label, 2, INK);
    }
    rect(&mut img, left, top, w - right, h - bottom, INK);
    let col_w = (w - left - right) as f64 / 8.0;
    for (i, values) in samples.iter().enumerate() {
        let cx = left as f64 + col_w * (i as f64 + 0.5);
        let label = (i + 1).to_string();
        text(&mut img, cx as i64 - text_width(&label, 3) / 2, h - bottom + 10, &label, 3, INK);
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        // Every pair as a dot, spread sideways by a fixed pattern so equal values stay visible.
        for (j, &v) in values.iter().enumerate() {
            let dx = ((j * 37) % 41) as f64 / 40.0 - 0.5;
            let (x, y) = ((cx + dx * col_w * 0.5).round() as i64, y_of(v).round() as i64);
            for (ox, oy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                put(&mut img, x + ox, y + oy, DOT);
            }
        }
        let (Some(q1), Some(q3), Some(med), Some(p5), Some(p95)) =
            (quantile(&sorted, 0.25), quantile(&sorted, 0.75), quantile(&sorted, 0.5), quantile(&sorted, 0.05), quantile(&sorted, 0.95))
        else {
            continue;
        };
        let half = (col_w * 0.3) as i64;
        let x = cx as i64;
        rect(&mut img, x - half, y_of(q3).round() as i64, x + half, y_of(q1).round() as i64, BOX);
        for dy in 0..2 {
            line(&mut img, ((x - half) as f32, y_of(med) as f32 + dy as f32), ((x + half) as f32, y_of(med) as f32 + dy as f32), MEDIAN);
        }
        line(&mut img, (x as f32, y_of(q3) as f32), (x as f32, y_of(p95) as f32), BOX);
        line(&mut img, (x as f32, y_of(q1) as f32), (x as f32, y_of(p5) as f32), BOX);
        for v in [p5, p95] {
            line(&mut img, ((x - half / 2) as f32, y_of(v) as f32), ((x + half / 2) as f32, y_of(v) as f32), BOX);
        }
    }
    save(&img, path)
}

/// One worst pair for the overlay.
pub struct Panel {
    pub image: RgbImage,
    pub original: [Option<[f32; 2]>; 8],
    pub augmented: [Option<[f32; 2]>; 8],
    pub max_drift: f32,
}

/// The square around a panel's points (both sets) with a margin, inside the image: the face, so
/// drifts of a few pixels stay visible. Returns (x, y, side) in image pixels.
fn face_window(panel: &Panel) -> (u32, u32, u32) {
    let (iw, ih) = (panel.image.width() as f32, panel.image.height() as f32);
    let pts: Vec<[f32; 2]> = panel.original.iter().chain(&panel.augmented).flatten().copied().collect();
    if pts.is_empty() {
        return (0, 0, panel.image.width().min(panel.image.height()));
    }
    let (mut x0, mut y0, mut x1, mut y1) = (f32::INFINITY, f32::INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY);
    for p in &pts {
        (x0, y0, x1, y1) = (x0.min(p[0]), y0.min(p[1]), x1.max(p[0]), y1.max(p[1]));
    }
    let side = ((x1 - x0).max(y1 - y0) * 2.2).max(64.0).min(iw.min(ih));
    let cx = ((x0 + x1) / 2.0 - side / 2.0).clamp(0.0, iw - side);
    let cy = ((y0 + y1) / 2.0 - side / 2.0).clamp(0.0, ih - side);
    (cx as u32, cy as u32, side as u32)
}

/// The worst pairs side by side (3 per row): each the augmented image's face region scaled to
/// 320 px, labelled with the pair's largest drift in pixels.
pub fn overlay(path: &Path, panels: &[Panel]) -> anyhow::Result<()> {
    const SIDE: u32 = 320;
    const GAP: u32 = 8;
    let cols = panels.len().clamp(1, 3) as u32;
    let rows = panels.len().div_ceil(3).max(1) as u32;
    let mut sheet = RgbImage::from_pixel(cols * (SIDE + GAP) + GAP, rows * (SIDE + GAP) + GAP, WHITE);
    for (k, panel) in panels.iter().enumerate() {
        let (ox, oy) = (GAP + (k as u32 % 3) * (SIDE + GAP), GAP + (k as u32 / 3) * (SIDE + GAP));
        let (wx, wy, side) = face_window(panel);
        let window = image::imageops::crop_imm(&panel.image, wx, wy, side.max(1), side.max(1)).to_image();
        let scale = SIDE as f32 / side.max(1) as f32;
        let zoomed = image::imageops::resize(&window, SIDE, SIDE, FilterType::Triangle);
        image::imageops::replace(&mut sheet, &zoomed, ox as i64, oy as i64);
        let at = |p: [f32; 2]| (ox as f32 + (p[0] - wx as f32) * scale, oy as f32 + (p[1] - wy as f32) * scale);
        for (o, a) in panel.original.iter().zip(&panel.augmented) {
            if let (Some(o), Some(a)) = (o, a) {
                line(&mut sheet, at(*o), at(*a), Rgb([255, 220, 0]));
            }
            if let Some(o) = o {
                let (x, y) = at(*o);
                line(&mut sheet, (x - 4.0, y), (x + 4.0, y), GREEN);
                line(&mut sheet, (x, y - 4.0), (x, y + 4.0), GREEN);
            }
            if let Some(a) = a {
                let (x, y) = at(*a);
                for dy in -1..=1 {
                    for dx in -1..=1 {
                        put(&mut sheet, x.round() as i64 + dx, y.round() as i64 + dy, RED);
                    }
                }
            }
        }
        let label = format!("{:.1}", panel.max_drift);
        let (lx, ly) = (ox as i64 + 4, oy as i64 + 4);
        for y in ly - 2..ly + 17 {
            for x in lx - 2..lx + text_width(&label, 3) + 2 {
                put(&mut sheet, x, y, WHITE);
            }
        }
        text(&mut sheet, lx, ly, &label, 3, INK);
    }
    save(&sheet, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_maxima_are_round() {
        for (v, want) in [(0.0, 1.0), (0.7, 1.0), (1.0, 1.0), (1.2, 2.0), (3.0, 5.0), (7.0, 10.0), (12.0, 20.0), (49.0, 50.0), (51.0, 100.0)] {
            assert_eq!(nice_ceiling(v), want, "{v}");
        }
    }

    #[test]
    fn digits_are_drawn_and_other_characters_skipped() {
        let mut img = RgbImage::from_pixel(20, 10, WHITE);
        text(&mut img, 0, 0, "1x", 1, INK);
        // '1' has its top-middle pixel set and its top-left pixel clear; 'x' draws nothing.
        assert_eq!(*img.get_pixel(1, 0), INK);
        assert_eq!(*img.get_pixel(0, 0), WHITE);
        assert!((4..8).all(|x| (0..5).all(|y| *img.get_pixel(x, y) == WHITE)));
    }
}
