//! The dashboard's files, compiled into the binary (`coordinator/assets/`: plain HTML, CSS and
//! JavaScript with no build step and nothing fetched from elsewhere), served at `/` and
//! `/assets/…`. Pages load only these files (the CSP allows nothing else).

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

const FILES: &[(&str, &str, &[u8])] = &[
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/app.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("../../assets/style.css")),
    ("icon.svg", "image/svg+xml", include_bytes!("../../assets/icon.svg")),
];
const INDEX: &[u8] = include_bytes!("../../assets/index.html");

/// The dashboard's page (every view is a `#/…` route of it).
pub async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], INDEX).into_response()
}

pub async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(file, ..)| *file == name) {
        Some((_, kind, bytes)) => ([(header::CONTENT_TYPE, *kind), (header::CACHE_CONTROL, "no-cache")], *bytes).into_response(),
        None => super::ApiError::not_found(format!("the dashboard has no file {name}")).into_response(),
    }
}
