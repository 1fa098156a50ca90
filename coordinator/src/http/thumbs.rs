//! `GET /api/v1/jobs/{id}/image?which=source|output&size=N`: a job's source or output image,
//! scaled to fit N×N for one of a fixed set of sizes, as JPEG. The coordinator reads the image from
//! the run's storage once, scales it on a blocking thread and keeps the result in a bounded LRU, so
//! a gallery of the newest outputs costs one read per image.

use super::ApiError;
use super::session::Reader;
use crate::service::Coordinator;
use crate::store::Store;
use acufarm_core::{JobId, JobSpec, JobState};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// The sizes thumbnails come in (the longer side, in pixels).
pub const SIZES: [u32; 3] = [128, 256, 512];
/// Bytes of thumbnails kept.
const CACHE_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Which {
    Source,
    Output,
}

/// Thumbnails by (job, which, size), least recently used first out.
#[derive(Default)]
pub struct Thumbs {
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<(i64, Which, u32), Bytes>,
    order: VecDeque<(i64, Which, u32)>,
    bytes: usize,
}

impl Thumbs {
    fn get(&self, key: (i64, Which, u32)) -> Option<Bytes> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let found = cache.entries.get(&key).cloned()?;
        cache.order.retain(|held| *held != key);
        cache.order.push_back(key);
        Some(found)
    }

    fn put(&self, key: (i64, Which, u32), image: Bytes) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = cache.entries.insert(key, image.clone()) {
            cache.bytes -= old.len();
            cache.order.retain(|held| *held != key);
        }
        cache.bytes += image.len();
        cache.order.push_back(key);
        while cache.bytes > CACHE_BYTES {
            let Some(oldest) = cache.order.pop_front() else { break };
            if let Some(gone) = cache.entries.remove(&oldest) {
                cache.bytes -= gone.len();
            }
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImageQuery {
    /// `source` (the input image) or `output` (the rendered one, once the job succeeded).
    pub which: String,
    /// 128, 256 or 512 (default 256): the longer side.
    pub size: Option<u32>,
}

/// Scales an encoded image to fit `size`×`size` and encodes it as JPEG.
fn thumbnail(bytes: &[u8], size: u32) -> Result<Vec<u8>, String> {
    let image = image::load_from_memory(bytes).map_err(|e| e.to_string())?;
    let small = image.thumbnail(size, size).to_rgb8();
    let mut out = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85).encode_image(&small).map_err(|e| e.to_string())?;
    Ok(out.into_inner())
}

/// A job's source or output as a JPEG thumbnail.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/image", tag = "jobs", params(("id" = i64, Path, description = "The job id"), ImageQuery),
    responses((status = 200, description = "image/jpeg"), (status = 400, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
pub async fn image<S: Store>(
    State(coordinator): State<Coordinator<S>>,
    _: Reader,
    Path(id): Path<String>,
    super::Params(query): super::Params<ImageQuery>,
) -> Result<Response, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::bad_request(format!("`{id}` is not a job id; job ids are whole numbers")))?;
    let which = match query.which.as_str() {
        "source" => Which::Source,
        "output" => Which::Output,
        other => return Err(ApiError::bad_request(format!("`which={other}` is not an image of a job; use source or output"))),
    };
    let size = query.size.unwrap_or(256);
    if !SIZES.contains(&size) {
        return Err(ApiError::bad_request(format!("`size={size}` is not a thumbnail size; use 128, 256 or 512")));
    }
    let key = (id, which, size);
    if let Some(cached) = coordinator.thumbs().get(key) {
        return Ok(jpeg(cached));
    }
    let record = coordinator.store().job_records(&[JobId(id)]).await.map_err(ApiError::from_store)?.into_iter().next();
    let record = record.ok_or_else(|| ApiError::not_found(format!("there is no job {id}")))?;
    let spec: JobSpec = serde_json::from_str(&record.spec).map_err(|e| ApiError::unavailable(format!("job {id}'s spec cannot be read ({e})")))?;
    let run = coordinator.run_context(record.run).await?;
    let (storage, path) = match which {
        Which::Source => (&run.input, spec.source.as_str()),
        Which::Output if record.state == JobState::Succeeded => (&run.output, spec.output.as_str()),
        Which::Output => {
            return Err(ApiError::not_found(format!("job {id} is {}, so it has no output image; only succeeded jobs do", record.state)));
        }
    };
    let bytes = storage.get(path).await.map_err(|e| ApiError::not_found(format!("cannot read {path} of job {id} ({e})")))?;
    let small = tokio::task::spawn_blocking(move || thumbnail(&bytes, size))
        .await
        .map_err(|e| ApiError::unavailable(format!("the thumbnail task stopped ({e}); ask again")))?
        .map_err(|e| ApiError::failed_precondition(format!("{path} of job {id} is not an image this coordinator can read ({e})")))?;
    let small = Bytes::from(small);
    coordinator.thumbs().put(key, small.clone());
    Ok(jpeg(small))
}

fn jpeg(bytes: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "private, max-age=300")], bytes).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_fit_the_size_and_the_cache_stays_bounded() {
        let mut png = std::io::Cursor::new(Vec::new());
        image::RgbImage::from_pixel(600, 300, image::Rgb([200, 10, 10])).write_to(&mut png, image::ImageFormat::Png).unwrap();
        let small = image::load_from_memory(&thumbnail(png.get_ref(), 128).unwrap()).unwrap();
        assert_eq!((small.width(), small.height()), (128, 64));
        let thumbs = Thumbs::default();
        let big = Bytes::from(vec![0u8; CACHE_BYTES / 2 + 1]);
        thumbs.put((1, Which::Source, 128), big.clone());
        thumbs.put((2, Which::Source, 128), big.clone());
        assert!(thumbs.get((1, Which::Source, 128)).is_none(), "the oldest went");
        assert!(thumbs.get((2, Which::Source, 128)).is_some());
    }
}
