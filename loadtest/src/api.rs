//! The product-api contract as the scenarios see it: paths, query values and the
//! listing page shape. Kept apart from the scenarios so each one checks responses
//! the same way, and so the checks can be unit-tested without a server.

use goose::metrics::GooseRequestMetric;
use goose::prelude::*;
use serde::Deserialize;

/// The 24 `DummyJSON` categories the catalogue is seeded with.
pub const CATEGORIES: [&str; 24] = [
    "beauty",
    "fragrances",
    "furniture",
    "groceries",
    "home-decoration",
    "kitchen-accessories",
    "laptops",
    "mens-shirts",
    "mens-shoes",
    "mens-watches",
    "mobile-accessories",
    "motorcycle",
    "skin-care",
    "smartphones",
    "sports-accessories",
    "sunglasses",
    "tablets",
    "tops",
    "vehicle",
    "womens-bags",
    "womens-dresses",
    "womens-jewellery",
    "womens-shoes",
    "womens-watches",
];

/// Every sort order the listing accepts.
pub const SORTS: [&str; 4] = ["-created_at", "created_at", "price", "-price"];

/// A random element of `items`: scenarios spread load over categories and sorts so
/// one cached page does not answer every request.
pub fn pick<'a>(items: &[&'a str]) -> &'a str {
    items[rand::random_range(0..items.len())]
}

/// One page of `GET /products/v1`. Only what the load test needs is typed: `data`
/// must be an array, and the cursor and `has_more` drive pagination.
#[derive(Debug, Deserialize)]
pub struct Page {
    pub data: Vec<serde_json::Value>,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

/// The query of one listing request. A follow-up page repeats the first page's
/// `take`, `category` and `sort` next to the cursor, as a client paging a list does.
#[derive(Debug, Clone, Copy)]
pub struct Listing<'a> {
    pub take: usize,
    pub category: Option<&'a str>,
    pub sort: Option<&'a str>,
    pub cursor: Option<&'a str>,
}

impl Listing<'_> {
    /// The request path with its query, every value percent-encoded: cursors are
    /// base64url today, but they are opaque and may not stay URL-safe.
    pub fn path(&self) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("take", &self.take.to_string());
        if let Some(category) = self.category {
            query.append_pair("category", category);
        }
        if let Some(sort) = self.sort {
            query.append_pair("sort", sort);
        }
        if let Some(cursor) = self.cursor {
            query.append_pair("cursor", cursor);
        }
        format!("/products/v1?{}", query.finish())
    }
}

/// Parses and checks a listing body: `data` is an array of at most `take` items,
/// and `has_more` agrees with whether there is a `next_cursor`.
pub fn parse_page(body: &[u8], take: usize) -> Result<Page, String> {
    let page: Page =
        serde_json::from_slice(body).map_err(|e| format!("body is not a listing page: {e}"))?;
    if page.data.len() > take {
        return Err(format!("{} items for take={take}", page.data.len()));
    }
    if page.has_more != page.next_cursor.is_some() {
        return Err(format!(
            "has_more={} but next_cursor is {}",
            page.has_more,
            if page.next_cursor.is_some() {
                "set"
            } else {
                "null"
            }
        ));
    }
    Ok(page)
}

/// GETs `path` under the metrics name `name` and expects a 200 with no further
/// checks. Anything else is recorded as a failed request.
pub async fn get_ok(user: &mut GooseUser, path: &str, name: &str) -> TransactionResult {
    let mut goose = user.get_named(path, name).await?;
    match &goose.response {
        Ok(response) if response.status().as_u16() == 200 => Ok(()),
        Ok(response) => {
            let tag = format!("status {}", response.status());
            user.set_failure(&tag, &mut goose.request, None, None)
        }
        Err(e) => {
            let tag = e.to_string();
            user.set_failure(&tag, &mut goose.request, None, None)
        }
    }
}

/// GETs one listing page under the metrics name `name` and validates it: status 200,
/// a JSON content type and a body [`parse_page`] accepts. A request that fails any
/// check is recorded as failed, so it counts in the error rate, and the transaction
/// stops there.
pub async fn fetch_page(
    user: &mut GooseUser,
    listing: Listing<'_>,
    name: &str,
) -> Result<Page, Box<TransactionError>> {
    let mut goose = user.get_named(&listing.path(), name).await?;
    let response = match goose.response {
        Ok(response) => response,
        Err(e) => {
            let tag = e.to_string();
            return fail(user, &tag, &mut goose.request);
        }
    };
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(e) => {
            let tag = format!("reading body: {e}");
            return fail(user, &tag, &mut goose.request);
        }
    };
    let checked = if status.as_u16() != 200 {
        Err(format!("status {status}"))
    } else if !content_type.starts_with("application/json") {
        Err(format!("content-type {content_type:?}"))
    } else {
        parse_page(&body, listing.take)
    };
    match checked {
        Ok(page) => Ok(page),
        Err(reason) => fail(user, &reason, &mut goose.request),
    }
}

/// Marks a request failed and returns the error that ends the transaction.
fn fail<T>(
    user: &mut GooseUser,
    tag: &str,
    request: &mut GooseRequestMetric,
) -> Result<T, Box<TransactionError>> {
    user.set_failure(tag, request, None, None)?;
    // `set_failure` always returns `Err`; this line only satisfies the type.
    Err(Box::new(TransactionError::Custom(tag.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_encodes_every_value() {
        let listing = Listing {
            take: 20,
            category: Some("mens-shoes"),
            sort: Some("-price"),
            cursor: Some("a+b/c=="),
        };
        assert_eq!(
            listing.path(),
            "/products/v1?take=20&category=mens-shoes&sort=-price&cursor=a%2Bb%2Fc%3D%3D"
        );
    }

    #[test]
    fn path_leaves_out_unset_values() {
        let listing = Listing {
            take: 5,
            category: None,
            sort: None,
            cursor: None,
        };
        assert_eq!(listing.path(), "/products/v1?take=5");
    }

    #[test]
    fn page_with_cursor_parses() {
        let body = br#"{"data":[{"id":1}],"next_cursor":"abc","has_more":true}"#;
        let page = parse_page(body, 10).unwrap();
        assert_eq!(page.data.len(), 1);
        assert_eq!(page.next_cursor.as_deref(), Some("abc"));
    }

    #[test]
    fn last_page_parses() {
        let body = br#"{"data":[],"next_cursor":null,"has_more":false}"#;
        assert!(parse_page(body, 10).unwrap().next_cursor.is_none());
    }

    #[test]
    fn bad_pages_are_refused() {
        for body in [
            &br#"{"data":{},"next_cursor":null,"has_more":false}"#[..],
            br#"{"next_cursor":null,"has_more":false}"#,
            br#"{"data":[],"next_cursor":null,"has_more":true}"#,
            br#"{"data":[],"next_cursor":"x","has_more":false}"#,
            br#"{"data":[1,2,3],"next_cursor":null,"has_more":false}"#,
            b"<html>",
        ] {
            assert!(
                parse_page(body, 2).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
