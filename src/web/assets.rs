//! The clinician dashboard's files: `GET /` (the page), `GET /visit/{id}` (the video visit page a
//! join link opens) and `GET /assets/{path}`, embedded at build time (see `build.rs`), with the
//! security headers every response carries.
//!
//! For work on the dashboard, `VIGIL_DASHBOARD_DIR` names a `dashboards/web` directory to
//! serve from disk instead, so a page edit needs a reload, not a rebuild.

use std::path::{Component, Path, PathBuf};

use axum::extract::{Path as UrlPath, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;

include!(concat!(env!("OUT_DIR"), "/dashboard_assets.rs"));

/// The Content-Security-Policy of every response: only Vigil's own scripts, styles and
/// connections; no inline script or style, no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; media-src 'self' blob:; font-src 'self'; \
    object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Middleware: the usual security headers on every response.
pub(super) async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(self), microphone=(self), geolocation=(), payment=()"),
    );
    resp
}

/// HSTS on every response when Vigil serves HTTPS itself (the state is whether it does): a
/// browser that has seen it never again tries plain HTTP for a year.
pub(super) async fn strict_transport_security(
    axum::extract::State(https): axum::extract::State<bool>,
    req: Request,
    next: Next,
) -> Response {
    let mut resp = next.run(req).await;
    if https {
        resp.headers_mut().insert(
            "strict-transport-security",
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    resp
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "json" => "application/json",
        "woff2" => "font/woff2",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// A relative path with only normal components (no `..`, no root).
fn safe(path: &str) -> Option<&str> {
    let ok = !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    ok.then_some(path)
}

fn from_disk(dir: &Path, path: &str) -> Option<Vec<u8>> {
    let file: PathBuf = match path.strip_prefix("vendor/") {
        Some("uPlot.esm.js") => dir.join("node_modules/uplot/dist/uPlot.esm.js"),
        Some("uPlot.min.css") => dir.join("node_modules/uplot/dist/uPlot.min.css"),
        Some(_) => return None,
        None => dir.join("src").join(path),
    };
    std::fs::read(file).ok()
}

fn lookup(path: &str) -> Option<std::borrow::Cow<'static, [u8]>> {
    let path = safe(path)?;
    if let Some(dir) = std::env::var_os("VIGIL_DASHBOARD_DIR") {
        return from_disk(Path::new(&dir), path).map(std::borrow::Cow::Owned);
    }
    ASSETS
        .iter()
        .find(|(name, _)| *name == path)
        .map(|(_, bytes)| std::borrow::Cow::Borrowed(*bytes))
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(body) = lookup(path) else {
        return ApiError::NotFound(format!("no dashboard file {path}")).into_response();
    };
    let etag = format!("\"{}\"", hex(&Sha256::digest(&body)[..12]));
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, content_type(path).to_owned()),
            // Revalidate every time: the ETag makes that a 304 when nothing changed.
            (header::CACHE_CONTROL, "no-cache".to_owned()),
            (header::ETAG, etag),
        ],
        body.into_owned(),
    )
        .into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET /`: the dashboard page.
pub(super) async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /visit/{id}`: the page a visit's join link opens, for patients and guests on any browser.
/// It needs no session: the join token sits in the URL's fragment, which never reaches the
/// server, and the page presents it to the API itself. The page is the same for every visit, so
/// the id is not looked at here (the API checks it with the token).
pub(super) async fn visit_page(headers: HeaderMap) -> Response {
    serve("visit.html", &headers)
}

/// `GET /assets/{*path}`.
pub(super) async fn asset(UrlPath(path): UrlPath<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_climb_out() {
        assert_eq!(safe("app.js"), Some("app.js"));
        assert_eq!(safe("css/site.css"), Some("css/site.css"));
        assert_eq!(safe("../Cargo.toml"), None);
        assert_eq!(safe("/etc/passwd"), None);
        assert_eq!(safe("a/../../b"), None);
        assert_eq!(safe(""), None);
    }

    #[test]
    fn the_page_and_its_chart_library_are_embedded() {
        assert!(
            ASSETS.iter().any(|(n, _)| *n == "index.html"),
            "dashboards/web/src/index.html is embedded"
        );
        assert!(
            ASSETS.iter().any(|(n, _)| *n == "visit.html"),
            "dashboards/web/src/visit.html (the visit page) is embedded"
        );
        assert!(
            ASSETS.iter().any(|(n, _)| *n == "vendor/uPlot.esm.js"),
            "uPlot from npm is embedded"
        );
    }
}
