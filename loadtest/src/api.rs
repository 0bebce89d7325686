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
pub fn pick<T: Copy>(items: &[T]) -> T {
    items[rand::random_range(0..items.len())]
}

/// One page of `GET /products/v1`. Only what the load test needs is typed: `data`
/// must be an array of JSON values, and the cursor and `has_more` drive pagination.
/// The items are checked and skipped (`IgnoredAny`), not built: the load generator
/// shares the machine's two cores with the service, and building a `Value` tree of
/// every page cost it more CPU than the check needs.
#[derive(Debug, Deserialize)]
pub struct Page {
    pub data: Vec<serde::de::IgnoredAny>,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

/// The query of one listing request. A follow-up page repeats the first page's
/// `take`, filters and `sort` next to the cursor, as a client paging a list does.
#[derive(Debug, Clone, Copy)]
pub struct Listing<'a> {
    pub take: usize,
    pub category: Option<&'a str>,
    pub sort: Option<&'a str>,
    pub cursor: Option<&'a str>,
    /// `search`: words that must all appear in name or description.
    pub search: Option<&'a str>,
    /// `min_price`, in cents (sent as a decimal with two places).
    pub min_price_cents: Option<u64>,
    /// `max_price`, in cents.
    pub max_price_cents: Option<u64>,
}

impl<'a> Listing<'a> {
    /// A first page of `take` items with no filter and the default sort; scenarios
    /// set what they need with struct update syntax.
    pub fn new(take: usize) -> Listing<'a> {
        Listing {
            take,
            category: None,
            sort: None,
            cursor: None,
            search: None,
            min_price_cents: None,
            max_price_cents: None,
        }
    }

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
        if let Some(search) = self.search {
            query.append_pair("search", search);
        }
        if let Some(cents) = self.min_price_cents {
            query.append_pair("min_price", &format_price(cents));
        }
        if let Some(cents) = self.max_price_cents {
            query.append_pair("max_price", &format_price(cents));
        }
        if let Some(cursor) = self.cursor {
            query.append_pair("cursor", cursor);
        }
        format!("/products/v1?{}", query.finish())
    }
}

/// Cents as the API's decimal price (`1234` → `12.34`), without a float on the way:
/// the service takes at most two decimal places.
pub fn format_price(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
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

/// Reads `first`, then follows `next_cursor` for up to `more_pages` pages with the
/// same query, as a client paging a list does. A last page (`next_cursor` null) ends
/// the walk early without an error.
pub async fn follow(
    user: &mut GooseUser,
    first: Listing<'_>,
    more_pages: usize,
    first_name: &str,
    next_name: &str,
) -> TransactionResult {
    let mut page = fetch_page(user, first, first_name).await?;
    for _ in 0..more_pages {
        let Some(cursor) = page.next_cursor.take() else {
            break;
        };
        let next = Listing {
            cursor: Some(&cursor),
            ..first
        };
        page = fetch_page(user, next, next_name).await?;
    }
    Ok(())
}

/// Marks a request failed and returns the error that ends the transaction.
pub fn fail<T>(
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
            category: Some("mens-shoes"),
            sort: Some("-price"),
            cursor: Some("a+b/c=="),
            search: Some("oak lamp"),
            min_price_cents: Some(1_005),
            max_price_cents: Some(250_000),
            ..Listing::new(20)
        };
        assert_eq!(
            listing.path(),
            "/products/v1?take=20&category=mens-shoes&sort=-price&search=oak+lamp\
             &min_price=10.05&max_price=2500.00&cursor=a%2Bb%2Fc%3D%3D"
        );
    }

    #[test]
    fn path_leaves_out_unset_values() {
        assert_eq!(Listing::new(5).path(), "/products/v1?take=5");
    }

    #[test]
    fn prices_keep_two_places() {
        assert_eq!(format_price(0), "0.00");
        assert_eq!(format_price(7), "0.07");
        assert_eq!(format_price(1_250), "12.50");
        assert_eq!(format_price(500_000), "5000.00");
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
