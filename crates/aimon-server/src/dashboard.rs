//! The web dashboard: the files of `crates/aimon-server/dashboard/`, compiled into the binary.
//!
//! `GET /` answers `index.html` and `GET /ui/{path}` every other file. The files are public
//! (they hold no data: every figure comes from `/api/v1` with the browser's token), so no token
//! is asked for them. A release build embeds them; a debug build reads them from the source
//! tree at each request, so the pages can be edited without rebuilding.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;

use crate::error::ApiError;

#[derive(Embed)]
#[folder = "$CARGO_MANIFEST_DIR/dashboard/"]
struct Assets;

/// What the pages may load and run: only this server's own files and API, no inline script.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// `GET /`: the dashboard's page.
pub async fn index(headers: HeaderMap) -> Response {
    asset("index.html", &headers)
}

/// `GET /ui/{path}`: its scripts, styles and the bundled charting library.
pub async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    asset(&path, &headers)
}

/// The file at `path`, or `304` when the browser's copy (its `If-None-Match`) is current.
fn asset(path: &str, headers: &HeaderMap) -> Response {
    // Only names inside the folder: a debug build reads the disk, so no `..` or absolute path.
    let inside = !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && path.split('/').all(|part| !part.is_empty() && part != "..");
    let Some(file) = inside.then(|| Assets::get(path)).flatten() else {
        return ApiError::not_found(format!("no dashboard file {path:?}")).into_response();
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let etag = HeaderValue::from_str(&etag).expect("hex is a valid header value");
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tags| tags.as_bytes() == etag.as_bytes())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mime = HeaderValue::from_str(file.metadata.mimetype())
            .unwrap_or(HeaderValue::from_static("application/octet-stream"));
        ([(header::CONTENT_TYPE, mime)], file.data.into_owned()).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, etag);
    // Revalidate every time: a new binary serves new files under the same names.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_names_is_embedded() {
        let index = Assets::get("index.html").expect("index.html");
        let html = std::str::from_utf8(&index.data).unwrap();
        let mut named = 0;
        for part in html.split("\"/ui/").skip(1) {
            let path = part.split('"').next().unwrap();
            assert!(Assets::get(path).is_some(), "index.html names /ui/{path}");
            named += 1;
        }
        assert!(
            named >= 2,
            "index.html loads its script and style from /ui/"
        );
    }
}
