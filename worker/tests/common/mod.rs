//! Fixtures shared by the worker's integration tests.

/// A 64×64 PNG: a skin-toned disc (its green channel shifted by `seed`) on light gray.
pub fn png(seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 64, |x, y| {
        if (x as i32 - 32).pow(2) + (y as i32 - 30).pow(2) < 300 { image::Rgb([200, 150 + seed, 120]) } else { image::Rgb([236, 236, 236]) }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}
