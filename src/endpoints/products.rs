//! `GET /products/v1`: parse → cache (L1 → L2 → store) → serialize → conditional response.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LINK};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Uri};
use http_body_util::Full;

use crate::app::App;
use crate::cache::{CacheStatus, CachedPage};
use crate::error::ApiError;
use crate::request::{self, query_string, Listing};
use crate::response::{self, etag, HttpResponse, JSON};
use crate::store::StoreError;

/// `X-Cache`: which level answered.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Answers one listing request.
pub async fn list(app: &App, uri: &Uri, headers: &HeaderMap) -> Result<HttpResponse, ApiError> {
    let listing = request::parse_listing(uri.query(), app.cursor_key())?;
    let key = app.cache().key_for(&listing);
    let (page, status) = app
        .cache()
        .get_or_load(&key, || build_page(app, &listing))
        .await
        .map_err(ApiError::Database)?;
    crate::meter::cache_result(status);
    Ok(respond(page, status, headers, app.cache_control()))
}

/// A miss of both cache levels: the store's rows as a finished, cacheable response.
async fn build_page(app: &App, listing: &Listing) -> Result<CachedPage, StoreError> {
    let page = app.store().list(&listing.query).await?;
    let sort = listing.query.sort;
    let next_cursor = page.next_position(sort).map(|position| {
        app.cursor_key()
            .encode(sort, listing.fingerprint(), position)
    });
    let body = response::page_body(&page, next_cursor.as_deref());
    let etag = etag::of(&body);
    let next_link = next_cursor.map(|cursor| next_link(listing, &cursor));
    Ok(CachedPage {
        body: Bytes::from(body),
        etag,
        next_link,
    })
}

/// Takes the page by value: its parts move into the response.
fn respond(
    page: CachedPage,
    status: CacheStatus,
    request_headers: &HeaderMap,
    cache_control: &HeaderValue,
) -> HttpResponse {
    let CachedPage {
        body,
        etag: tag,
        next_link,
    } = page;
    let not_modified = request_headers
        .get(IF_NONE_MATCH)
        .is_some_and(|value| etag::matches(value.as_bytes(), tag.as_bytes()));
    let mut response = if not_modified {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let mut response = Response::new(Full::new(body));
        response.headers_mut().insert(CONTENT_TYPE, JSON);
        response
    };
    let headers = response.headers_mut();
    headers.insert(ETAG, tag);
    headers.insert(CACHE_CONTROL, cache_control.clone());
    headers.insert(X_CACHE, status.header_value());
    if let Some(link) = next_link {
        headers.insert(LINK, link);
    }
    response
}

/// `</products/v1?sort=…&take=…&cursor=…>; rel="next"`.
fn next_link(listing: &Listing, cursor: &str) -> HeaderValue {
    let mut link = String::with_capacity(listing.canonical_filters.len() + cursor.len() + 48);
    link.push_str("</products/v1?");
    link.push_str(&listing.canonical_filters);
    link.push_str("&take=");
    link.push_str(itoa::Buffer::new().format(listing.query.take));
    link.push_str("&cursor=");
    query_string::encode_into(cursor, &mut link);
    link.push_str(">; rel=\"next\"");
    HeaderValue::try_from(link).expect("percent-encoded ASCII is a valid header value")
}
