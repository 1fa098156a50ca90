//! The drift report's PNG charts, drawn with plotters in an embedded DejaVu Sans
//! (`cli/assets/`, its licence beside it), so the reports carry titles, axis labels and point names:
//! - `drift_points.png`: one column per point (named as in drift.md) with every pair's drift as a
//!   dot, the 25–75 % box, the median and the 5–95 % whiskers (NumPy-linear quantiles, as the
//!   tables), on a labelled pixel axis;
//! - `worst_pairs.png`: the augmented images of the worst pairs (face regions), the original's
//!   points as green crosses and the augmented image's as red dots joined by yellow lines, each
//!   panel titled with its file and largest drift.

use acufarm_worker::drift::points::NAMES;
use acufarm_worker::drift::stats::quantile;
use anyhow::Context;
use image::{RgbImage, imageops::FilterType};
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::Once;

const FONT: &str = "sans-serif";
const INK: RGBColor = RGBColor(40, 40, 40);
const DOT: RGBColor = RGBColor(90, 130, 200);
const BOX: RGBColor = RGBColor(20, 60, 140);
const MEDIAN: RGBColor = RGBColor(220, 90, 20);
const ORIGINAL: RGBColor = RGBColor(0, 200, 60);
const AUGMENTED: RGBColor = RGBColor(235, 30, 30);
const JOIN: RGBColor = RGBColor(255, 220, 0);

/// Registers the embedded font once (plotters' ab_glyph text needs it before any drawing).
fn font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        if plotters::style::register_font(FONT, FontStyle::Normal, include_bytes!("../../assets/DejaVuSans.ttf")).is_err() {
            tracing::warn!("the embedded chart font could not be read; the drift charts will have no text");
        }
    });
}

/// A plotters failure as one sentence (they carry no path of ours).
fn drawing<E: std::fmt::Debug>(path: &Path) -> impl Fn(E) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("cannot draw {} ({e:?})", path.display())
}

fn save(img: &RgbImage, path: &Path) -> anyhow::Result<()> {
    img.save(path).with_context(|| format!("cannot write {}; check that --out is writable", path.display()))
}

/// The smallest 1, 2 or 5 × 10ⁿ at or above `v` (an axis maximum), 1 for nothing.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|&m| m >= v - 1e-9).unwrap_or(10.0 * magnitude)
}

/// Per-point distribution chart of the drifts in pixels.
pub fn distributions(path: &Path, samples: &[Vec<f64>; 8]) -> anyhow::Result<()> {
    font();
    let (w, h) = (1000u32, 480u32);
    let mut buffer = vec![255u8; (w * h * 3) as usize];
    let pairs = samples.iter().map(Vec::len).max().unwrap_or(0);
    let ymax = nice_ceiling(samples.iter().flatten().copied().fold(0.0, f64::max));
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (w, h)).into_drawing_area();
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("Landmark drift per point ({pairs} measured pairs)"), (FONT, 22).into_font().color(&INK))
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.5f64..7.5f64, 0f64..ymax)
            .map_err(drawing(path))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(RGBColor(246, 246, 246))
            .x_labels(8)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && (0.0..8.0).contains(&i) { NAMES[i as usize].to_string() } else { String::new() }
            })
            .x_desc("Face Mesh point")
            .y_desc("drift (px)")
            .label_style((FONT, 14).into_font().color(&INK))
            .axis_desc_style((FONT, 15).into_font().color(&INK))
            .draw()
            .map_err(drawing(path))?;
        for (i, values) in samples.iter().enumerate() {
            let cx = i as f64;
            // Every pair as a dot, spread sideways by a fixed pattern so equal values stay visible.
            let dots = values.iter().enumerate().map(|(j, &v)| Circle::new((cx + (((j * 37) % 41) as f64 / 40.0 - 0.5) * 0.5, v), 2, DOT.filled()));
            chart.draw_series(dots).map_err(drawing(path))?;
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let (Some(q1), Some(q3), Some(med), Some(p5), Some(p95)) =
                (quantile(&sorted, 0.25), quantile(&sorted, 0.75), quantile(&sorted, 0.5), quantile(&sorted, 0.05), quantile(&sorted, 0.95))
            else {
                continue;
            };
            let half = 0.3;
            chart.draw_series([Rectangle::new([(cx - half, q1), (cx + half, q3)], BOX.stroke_width(2))]).map_err(drawing(path))?;
            let lines = [
                vec![(cx - half, med), (cx + half, med)],
                vec![(cx, q3), (cx, p95)],
                vec![(cx, q1), (cx, p5)],
                vec![(cx - half / 2.0, p95), (cx + half / 2.0, p95)],
                vec![(cx - half / 2.0, p5), (cx + half / 2.0, p5)],
            ];
            for (k, points) in lines.into_iter().enumerate() {
                let style = if k == 0 { MEDIAN.stroke_width(3) } else { BOX.stroke_width(2) };
                chart.draw_series([PathElement::new(points, style)]).map_err(drawing(path))?;
            }
        }
        root.present().map_err(drawing(path))?;
    }
    let img = RgbImage::from_raw(w, h, buffer).expect("the buffer has the chart's size");
    save(&img, path)
}

/// One worst pair for the overlay.
pub struct Panel {
    /// The augmented image's path, for the panel's title.
    pub name: String,
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

/// The worst pairs side by side (3 per row) under a title with the legend: each the augmented
/// image's face region scaled to 320 px, titled with its file and largest drift in pixels.
pub fn overlay(path: &Path, panels: &[Panel]) -> anyhow::Result<()> {
    const SIDE: u32 = 320;
    const GAP: u32 = 8;
    const TITLE: u32 = 40;
    const CAPTION: u32 = 22;
    font();
    let cols = panels.len().clamp(1, 3) as u32;
    let rows = panels.len().div_ceil(3).max(1) as u32;
    let (w, h) = (cols * (SIDE + GAP) + GAP, TITLE + rows * (SIDE + CAPTION + GAP) + GAP);
    let mut sheet = RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
    let mut places = Vec::with_capacity(panels.len());
    for (k, panel) in panels.iter().enumerate() {
        let (ox, oy) = (GAP + (k as u32 % 3) * (SIDE + GAP), TITLE + CAPTION + (k as u32 / 3) * (SIDE + CAPTION + GAP));
        let (wx, wy, side) = face_window(panel);
        let window = image::imageops::crop_imm(&panel.image, wx, wy, side.max(1), side.max(1)).to_image();
        let zoomed = image::imageops::resize(&window, SIDE, SIDE, FilterType::Triangle);
        image::imageops::replace(&mut sheet, &zoomed, ox as i64, oy as i64);
        places.push((ox, oy, wx, wy, SIDE as f32 / side.max(1) as f32));
    }
    {
        let (w, h) = sheet.dimensions();
        let root = BitMapBackend::with_buffer(&mut sheet, (w, h)).into_drawing_area();
        let title = "Worst pairs: original points (green +) and augmented points (red •), joined in yellow";
        root.draw(&Text::new(title, (GAP as i32, 10), (FONT, 17).into_font().color(&INK))).map_err(drawing(path))?;
        for (panel, &(ox, oy, wx, wy, scale)) in panels.iter().zip(&places) {
            let at = |p: [f32; 2]| ((ox as f32 + (p[0] - wx as f32) * scale) as i32, (oy as f32 + (p[1] - wy as f32) * scale) as i32);
            for (o, a) in panel.original.iter().zip(&panel.augmented) {
                if let (Some(o), Some(a)) = (o, a) {
                    root.draw(&PathElement::new(vec![at(*o), at(*a)], JOIN.stroke_width(2))).map_err(drawing(path))?;
                }
                if let Some(o) = o {
                    let (x, y) = at(*o);
                    root.draw(&PathElement::new(vec![(x - 5, y), (x + 5, y)], ORIGINAL.stroke_width(2))).map_err(drawing(path))?;
                    root.draw(&PathElement::new(vec![(x, y - 5), (x, y + 5)], ORIGINAL.stroke_width(2))).map_err(drawing(path))?;
                }
                if let Some(a) = a {
                    root.draw(&Circle::new(at(*a), 3, AUGMENTED.filled())).map_err(drawing(path))?;
                }
            }
            let file = Path::new(&panel.name).file_name().map_or(panel.name.clone(), |f| f.to_string_lossy().into_owned());
            let caption = format!("{file}: max drift {:.1} px", panel.max_drift);
            root.draw(&Text::new(caption, (ox as i32, (oy - CAPTION + 3) as i32), (FONT, 14).into_font().color(&INK))).map_err(drawing(path))?;
        }
        root.present().map_err(drawing(path))?;
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
    fn the_chart_has_its_title_and_point_names_in_ink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("points.png");
        let samples: [Vec<f64>; 8] = std::array::from_fn(|i| (0..20).map(|j| (i + j % 5) as f64 * 0.5).collect());
        distributions(&path, &samples).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (1000, 480));
        // Text is drawn in the ink colour (antialiased): the title strip and the label strip
        // under the axis hold dark pixels; without the font they would be blank.
        let dark = |y0: u32, y1: u32| (y0..y1).flat_map(|y| (0..img.width()).map(move |x| (x, y))).filter(|&(x, y)| img.get_pixel(x, y).0[0] < 100).count();
        assert!(dark(0, 40) > 200, "no title");
        assert!(dark(430, 480) > 200, "no axis labels");
    }
}
