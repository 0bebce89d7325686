//! Routing stage: `(method, path)` to a [`Route`], by exact match on borrowed strings.
//!
//! Never allocates and never looks at the query string; a handful of fixed paths needs no trie.

use http::Method;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    ListProducts,
    Health,
    Ready,
    Webhook,
    Metrics,
    /// `GET /openapi.json`: the API's own description.
    OpenApi,
    /// The path exists but not for this method; carries the `Allow` header value.
    MethodNotAllowed(&'static str),
    NotFound,
}

const READ_ONLY: &str = "GET, HEAD";

/// Every path the router knows. `docs/openapi.json` must document each one (the `openapi`
/// integration test checks both directions), so a new arm in [`route`] belongs here too.
pub const PATHS: [&str; 6] = [
    "/products/v1",
    "/health",
    "/ready",
    "/metrics",
    "/webhook",
    "/openapi.json",
];

/// Resolves a request line to its route.
#[must_use]
pub fn route(method: &Method, path: &str) -> Route {
    let target = match path {
        "/products/v1" => Route::ListProducts,
        "/health" => Route::Health,
        "/ready" => Route::Ready,
        "/metrics" => Route::Metrics,
        "/openapi.json" => Route::OpenApi,
        "/webhook" if method == Method::POST => return Route::Webhook,
        "/webhook" => return Route::MethodNotAllowed("POST"),
        _ => return Route::NotFound,
    };
    if method == Method::GET || method == Method::HEAD {
        target
    } else {
        Route::MethodNotAllowed(READ_ONLY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_known_paths_and_methods() {
        let cases = [
            (Method::GET, "/products/v1", Route::ListProducts),
            (Method::HEAD, "/products/v1", Route::ListProducts),
            (Method::GET, "/health", Route::Health),
            (Method::GET, "/ready", Route::Ready),
            (Method::GET, "/metrics", Route::Metrics),
            (Method::GET, "/openapi.json", Route::OpenApi),
            (Method::HEAD, "/openapi.json", Route::OpenApi),
            (
                Method::POST,
                "/openapi.json",
                Route::MethodNotAllowed(READ_ONLY),
            ),
            (Method::POST, "/webhook", Route::Webhook),
            (Method::GET, "/webhook", Route::MethodNotAllowed("POST")),
            (
                Method::POST,
                "/products/v1",
                Route::MethodNotAllowed(READ_ONLY),
            ),
            (
                Method::DELETE,
                "/health",
                Route::MethodNotAllowed(READ_ONLY),
            ),
            (Method::GET, "/products/v1/", Route::NotFound),
            (Method::GET, "/products", Route::NotFound),
            (Method::GET, "/", Route::NotFound),
            (Method::GET, "/openapi", Route::NotFound),
            (Method::GET, "/docs/openapi.json", Route::NotFound),
            (Method::POST, "/nowhere", Route::NotFound),
        ];
        for (method, path, expected) in cases {
            assert_eq!(route(&method, path), expected, "{method} {path}");
        }
    }

    #[test]
    fn every_listed_path_reaches_its_own_route() {
        let mut seen = Vec::new();
        for path in PATHS {
            let target = match route(&Method::GET, path) {
                Route::MethodNotAllowed(_) => route(&Method::POST, path),
                other => other,
            };
            assert!(
                !matches!(target, Route::NotFound | Route::MethodNotAllowed(_)),
                "{path} is listed but not routed"
            );
            assert!(!seen.contains(&target), "{path} shares {target:?}");
            seen.push(target);
        }
    }
}
