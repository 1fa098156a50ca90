//! NumPy `.npy` files of float32, C order — the format of `--noise-in` and `--latents-out`, so a
//! run can be reproduced or checked from Python.

use std::path::Path;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NpyError {
    #[error("{0} is not a NumPy .npy file (bad magic); write it with numpy.save")]
    Magic(String),
    #[error("{path}: unsupported .npy header ({reason}); save a C-ordered float32 array with numpy.save(path, arr.astype('float32'))")]
    Header { path: String, reason: String },
    #[error("{path}: holds {found} bytes of data but its shape needs {needed}; the file is truncated or corrupt")]
    Size { path: String, found: usize, needed: usize },
}

/// A float32 array with its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

pub fn encode(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims = match shape {
        [one] => format!("({one},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    // Pad so that magic (6) + version (2) + length (2) + header is a multiple of 64, ending in '\n'.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    data.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    out
}

pub fn decode(bytes: &[u8], path: &str) -> Result<NpyArray, NpyError> {
    let header_err = |reason: &str| NpyError::Header { path: path.to_string(), reason: reason.to_string() };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(NpyError::Magic(path.to_string()));
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(header_err(&format!("format version {v}"))),
    };
    let end = start.checked_add(header_len).filter(|&e| e <= bytes.len()).ok_or_else(|| header_err("header runs past the end"))?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| header_err("header is not text"))?;
    let descr = dict_value(header, "descr").ok_or_else(|| header_err("no 'descr'"))?;
    if descr.trim_matches(|c| c == '\'' || c == '"') != "<f4" {
        return Err(header_err(&format!("dtype {descr}, not float32 '<f4'")));
    }
    match dict_value(header, "fortran_order") {
        Some("False") => {}
        _ => return Err(header_err("array is not C-ordered")),
    }
    let shape_text = dict_value(header, "shape").ok_or_else(|| header_err("no 'shape'"))?;
    let inner = shape_text.strip_prefix('(').and_then(|s| s.strip_suffix(')')).ok_or_else(|| header_err("shape is not a tuple"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| header_err(&format!("shape entry `{s}`"))))
        .collect::<Result<Vec<_>, _>>()?;
    let needed = shape.iter().try_fold(4usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| header_err("shape is too large"))?;
    let payload = &bytes[end..];
    if payload.len() != needed {
        return Err(NpyError::Size { path: path.to_string(), found: payload.len(), needed });
    }
    let data = payload.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok(NpyArray { shape, data })
}

/// The text of `'key': value` in a Python dict literal; tuples are returned with their parentheses.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
    let len = if rest.starts_with('(') { rest.find(')')? + 1 } else { rest.find([',', '}'])? };
    Some(rest[..len].trim())
}

pub fn read(path: &Path) -> Result<NpyArray, Box<dyn std::error::Error + Send + Sync>> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}; check the path", path.display()))?;
    Ok(decode(&bytes, &path.display().to_string())?)
}

pub fn write(path: &Path, shape: &[usize], data: &[f32]) -> std::io::Result<()> {
    std::fs::write(path, encode(shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for shape in [vec![1, 4, 8, 8], vec![3], vec![]] {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 1.0).collect();
            let bytes = encode(&shape, &data);
            assert_eq!((10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize) % 64, 0);
            assert_eq!(decode(&bytes, "x.npy").unwrap(), NpyArray { shape, data });
        }
    }

    #[test]
    fn numpy_written_header() {
        // Exactly what numpy 2.x writes for np.zeros((1, 2), 'float32').
        let mut bytes = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }".to_vec();
        bytes.resize(10 + 118 - 1, b' ');
        bytes.push(b'\n');
        bytes.extend_from_slice(&[0; 8]);
        assert_eq!(decode(&bytes, "z.npy").unwrap().shape, vec![1, 2]);
    }

    #[test]
    fn table_of_bad_files() {
        let good = encode(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let swap = |from: &str, to: &str| {
            let at = good.windows(from.len()).position(|w| w == from.as_bytes()).expect("pattern in header");
            let mut bytes = good.clone();
            bytes[at..at + from.len()].copy_from_slice(to.as_bytes());
            bytes
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"PK\x03\x04 not npy".to_vec(), "bad magic"),
            (good[..good.len() - 4].to_vec(), "truncated"),
            (swap("<f4", "<f8"), "not float32"),
            (swap("False", "True "), "not C-ordered"),
            (swap("(2, 2)", "(2, x)"), "shape entry"),
            (good[..20].to_vec(), "past the end"),
        ];
        for (bytes, want) in cases {
            let err = decode(&bytes, "bad.npy").unwrap_err().to_string();
            assert!(err.contains(want), "wanted `{want}` in `{err}`");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let good = encode(&[1, 4, 2, 2], &[0.0; 16]);
        let mut state = 0x9E3779B97F4A7C15u64;
        for _ in 0..50_000 {
            let mut bytes = good.clone();
            for _ in 0..(state % 4 + 1) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state % bytes.len() as u64) as usize;
                bytes[at] = (state >> 32) as u8;
            }
            let cut = (state >> 40) as usize % (bytes.len() + 1);
            let _ = decode(&bytes[..cut.max(bytes.len() / 2)], "fuzz.npy");
        }
    }
}
