//! Outbound stage, catalogue: pages of the external DummyJSON-compatible product list, mapped
//! to this service's vocabulary.
//!
//! `GET {api_url}?limit=L&skip=S` with the bearer token answers
//! `{"products":[…],"total":N,"skip":S,"limit":L}`; each product becomes a
//! [`CatalogueProduct`] (or a [`RejectedProduct`] saying why not: one bad product does not fail
//! its page). Owns the catalogue's retry loop (attempt timeout, overall deadline, full-jitter
//! backoff, `Retry-After`), its circuit breaker, and the one retry after a 401 with a fresh
//! token.
//!
//! Never runs on the listing request path; never retries anything but connect errors, timeouts,
//! 429, 502, 503 and 504; never sleeps past the deadline; never converts a price through
//! arithmetic on a float (the float's shortest decimal form is rounded as text).

use std::sync::{Mutex, PoisonError};

use reqwest::header::ACCEPT;
use serde::Deserialize;
use tokio::time::Instant;

use super::breaker::{Breaker, BreakerState};
use super::retry::{self, Stopped};
use super::token::{AccessToken, TokenError, TokenProvider};
use super::transport::{self, Failure};
use super::{BuildError, CatalogueSettings, UpstreamError};
use crate::domain::Price;

/// A product of the external catalogue, in this service's terms: the same shape webhooks
/// deliver, so the sync and webhooks share one write path.
pub use crate::domain::event::ExternalProduct as CatalogueProduct;

/// A product of the page that could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedProduct {
    /// The upstream id, when the product had one.
    pub external_id: Option<String>,
    pub reason: MappingError,
}

/// Why a product could not be mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("the price is negative")]
    NegativePrice,
    #[error("the price is not a finite number")]
    NotFinitePrice,
    #[error("the price is larger than 9999999999.99")]
    PriceTooLarge,
}

/// One page of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CataloguePage {
    pub products: Vec<CatalogueProduct>,
    /// Products of this page that could not be mapped, in page order.
    pub rejected: Vec<RejectedProduct>,
    /// Products in the whole catalogue.
    pub total: u64,
    pub skip: u64,
    /// As DummyJSON sends it: the number of products on this page.
    pub limit: u64,
}

/// The client of one catalogue; cheap to share by reference.
pub struct CatalogueClient {
    settings: CatalogueSettings,
    http: reqwest::Client,
    tokens: TokenProvider,
    breaker: Breaker,
}

impl CatalogueClient {
    /// Builds the client; connects nothing yet.
    pub fn new(settings: CatalogueSettings, tokens: TokenProvider) -> Result<Self, BuildError> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.retry.attempt_timeout)
            .build()
            .map_err(BuildError::Http)?;
        let breaker = Breaker::new(&settings.breaker, "catalogue");
        Ok(CatalogueClient {
            settings,
            http,
            tokens,
            breaker,
        })
    }

    /// The products from `skip` on, at most `limit` of them (`limit` 0: DummyJSON sends all).
    /// Retries transient failures until the deadline; a 401 replaces the token and retries once.
    pub async fn fetch_page(&self, skip: u64, limit: u64) -> Result<CataloguePage, UpstreamError> {
        let deadline = Instant::now() + self.settings.retry.deadline;
        let used = Mutex::new(None);
        let outcome = self.fetch_with_retries(skip, limit, deadline, &used).await;
        let rejected = used.lock().unwrap_or_else(PoisonError::into_inner).take();
        match (outcome, rejected) {
            (Err(UpstreamError::Status { status: 401, .. }), Some(rejected)) => {
                tracing::info!(
                    "the catalogue rejected the access token; replacing it, retrying once"
                );
                match tokio::time::timeout_at(deadline, self.tokens.replace_rejected(&rejected))
                    .await
                {
                    Ok(replaced) => replaced?,
                    Err(_elapsed) => return Err(UpstreamError::Token(TokenError::Timeout)),
                };
                self.fetch_with_retries(skip, limit, deadline, &used).await
            }
            (outcome, _) => outcome,
        }
    }

    /// The token provider the client authenticates with.
    #[must_use]
    pub fn tokens(&self) -> &TokenProvider {
        &self.tokens
    }

    /// The breaker's state, for `/ready` and metrics.
    #[must_use]
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    async fn fetch_with_retries(
        &self,
        skip: u64,
        limit: u64,
        deadline: Instant,
        used: &Mutex<Option<AccessToken>>,
    ) -> Result<CataloguePage, UpstreamError> {
        let outcome = retry::run(&self.settings.retry, deadline, "catalogue page", || {
            self.attempt(skip, limit, deadline, used)
        })
        .await;
        match outcome {
            Ok(page) => Ok(page),
            Err(Stopped::Failed(error)) => Err(error),
            Err(Stopped::DeadlineExceeded { attempts, last }) => {
                Err(UpstreamError::DeadlineExceeded {
                    attempts,
                    last: Box::new(last),
                })
            }
        }
    }

    /// One request; `used` keeps the token it carried, for a 401.
    async fn attempt(
        &self,
        skip: u64,
        limit: u64,
        deadline: Instant,
        used: &Mutex<Option<AccessToken>>,
    ) -> Result<CataloguePage, UpstreamError> {
        // Usually the in-process token; a refresh in flight may take longer than the deadline
        // allows, and then this call gives up (the refresh goes on for the next call).
        let token = match tokio::time::timeout_at(deadline, self.tokens.token()).await {
            Ok(token) => token?,
            Err(_elapsed) => return Err(UpstreamError::Token(TokenError::Timeout)),
        };
        *used.lock().unwrap_or_else(PoisonError::into_inner) = Some(token.clone());
        let request = self
            .http
            .get(self.settings.api_url.clone())
            .query(&[("limit", limit), ("skip", skip)])
            .bearer_auth(token.expose())
            .header(ACCEPT, "application/json");
        let timeout = retry::attempt_timeout(&self.settings.retry, deadline);
        let max_body_bytes = self.settings.max_body_bytes;
        self.breaker
            .call(UpstreamError::counts_against_breaker, async move {
                let mut reply = transport::exchange(request, timeout, max_body_bytes)
                    .await
                    .map_err(|failure| match failure {
                        Failure::Timeout => UpstreamError::Timeout,
                        Failure::Connect => UpstreamError::Connect,
                        Failure::Transport => UpstreamError::Transport,
                        Failure::TooLarge => {
                            UpstreamError::Decode("the page is larger than allowed".into())
                        }
                    })?;
                if !reply.status.is_success() {
                    return Err(UpstreamError::Status {
                        status: reply.status.as_u16(),
                        retry_after: reply.retry_after,
                    });
                }
                decode_page(&mut reply.body)
            })
            .await
    }
}

/// The page as DummyJSON sends it; unknown fields are skipped.
#[derive(Deserialize)]
struct RawPage {
    products: Vec<RawProduct>,
    total: u64,
    skip: u64,
    limit: u64,
}

#[derive(Deserialize)]
struct RawProduct {
    id: Option<RawId>,
    title: Option<String>,
    description: Option<String>,
    category: Option<String>,
    price: Option<f64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawId {
    Number(u64),
    Text(String),
}

/// Parses a page body (simd-json parses in place, hence `&mut`).
fn decode_page(body: &mut [u8]) -> Result<CataloguePage, UpstreamError> {
    let raw: RawPage = simd_json::serde::from_slice(body)
        .map_err(|error| UpstreamError::Decode(error.to_string()))?;
    let mut products = Vec::with_capacity(raw.products.len());
    let mut rejected = Vec::new();
    for mut product in raw.products {
        let external_id = product.id.take().map(|id| match id {
            RawId::Number(number) => number.to_string(),
            RawId::Text(text) => text,
        });
        match map_product(external_id.clone(), product) {
            Ok(mapped) => products.push(mapped),
            Err(reason) => {
                tracing::debug!(?external_id, %reason, "skipping a catalogue product");
                rejected.push(RejectedProduct {
                    external_id,
                    reason,
                });
            }
        }
    }
    Ok(CataloguePage {
        products,
        rejected,
        total: raw.total,
        skip: raw.skip,
        limit: raw.limit,
    })
}

/// `product.id` has been taken out as `external_id`.
fn map_product(
    external_id: Option<String>,
    product: RawProduct,
) -> Result<CatalogueProduct, MappingError> {
    Ok(CatalogueProduct {
        external_id: external_id.ok_or(MappingError::Missing("id"))?,
        name: product.title.ok_or(MappingError::Missing("title"))?,
        description: product.description.unwrap_or_default(),
        price: price_from_float(product.price.ok_or(MappingError::Missing("price"))?)?,
        category: product.category.ok_or(MappingError::Missing("category"))?,
    })
}

/// A JSON price such as `9.99` in cents, rounded half up to 2 places.
///
/// The float never enters arithmetic: its shortest round-trip decimal form (ryu), which is the
/// text the catalogue wrote whenever that text had at most 15 significant digits, is rounded as
/// text. So `1.005` is 101 cents, where `(1.005 * 100.0).round()` gives 100 (1.005 is stored as
/// 1.00499999999999989…).
pub fn price_from_float(value: f64) -> Result<Price, MappingError> {
    if !value.is_finite() {
        return Err(MappingError::NotFinitePrice);
    }
    if value < 0.0 {
        return Err(MappingError::NegativePrice);
    }
    // ryu writes values from 1e16 on (and below 1e-5) with an exponent; the former are far
    // above the largest price, the latter round to 0 cents.
    if value >= 1e16 {
        return Err(MappingError::PriceTooLarge);
    }
    if value < 1e-5 {
        return Ok(Price(0));
    }
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(value);
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let cents_digits = fraction.get(..2).unwrap_or(fraction);
    let round_up = fraction
        .as_bytes()
        .get(2)
        .is_some_and(|&digit| digit >= b'5');
    let truncated = if cents_digits.is_empty() {
        whole.to_owned()
    } else {
        format!("{whole}.{cents_digits}")
    };
    let price = Price::parse(truncated.as_bytes()).map_err(|_| MappingError::PriceTooLarge)?;
    let cents = price.0 + i64::from(round_up);
    if cents > crate::domain::price::MAX_CENTS {
        return Err(MappingError::PriceTooLarge);
    }
    Ok(Price(cents))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prices_round_half_up_to_cents() {
        let cases: [(f64, Result<Price, MappingError>); 13] = [
            (9.99, Ok(Price(999))),
            (0.0, Ok(Price(0))),
            (-0.0, Ok(Price(0))),
            (12.0, Ok(Price(1200))),
            (12.5, Ok(Price(1250))),
            (1.005, Ok(Price(101))),
            (0.125, Ok(Price(13))),
            (2.994, Ok(Price(299))),
            (9.995, Ok(Price(1000))),
            (0.000_001, Ok(Price(0))),
            (-0.01, Err(MappingError::NegativePrice)),
            (f64::NAN, Err(MappingError::NotFinitePrice)),
            (1e13, Err(MappingError::PriceTooLarge)),
        ];
        for (value, expected) in cases {
            assert_eq!(price_from_float(value), expected, "{value}");
        }
        assert_eq!(
            price_from_float(f64::INFINITY),
            Err(MappingError::NotFinitePrice)
        );
    }

    proptest! {
        #[test]
        fn two_place_prices_map_exactly(cents in 0..=crate::domain::price::MAX_CENTS) {
            let text = Price(cents).to_decimal_string();
            let value: f64 = text.parse().unwrap();
            prop_assert_eq!(price_from_float(value), Ok(Price(cents)));
        }
    }

    #[test]
    fn decodes_a_dummyjson_page_and_keeps_bad_products_apart() {
        let mut body = br#"{
            "products": [
                {"id": 1, "title": "Essence Mascara", "description": "Lashes.", "category": "beauty",
                 "price": 9.99, "rating": 2.56, "tags": ["beauty"], "dimensions": {"width": 15.14},
                 "reviews": [{"rating": 3, "comment": "no"}], "meta": {"barcode": "9164035109868"}},
                {"id": "sku-2", "title": "Caf\u00e9 \"Noir\"", "category": "groceries", "price": 4},
                {"id": 3, "title": "Refund", "description": "", "category": "misc", "price": -1.5},
                {"title": "No id", "category": "misc", "price": 1.0}
            ],
            "total": 194, "skip": 0, "limit": 4
        }"#
        .to_vec();
        let page = decode_page(&mut body).unwrap();
        assert_eq!((page.total, page.skip, page.limit), (194, 0, 4));
        assert_eq!(
            page.products,
            vec![
                CatalogueProduct {
                    external_id: "1".into(),
                    name: "Essence Mascara".into(),
                    description: "Lashes.".into(),
                    price: Price(999),
                    category: "beauty".into(),
                },
                CatalogueProduct {
                    external_id: "sku-2".into(),
                    name: "Café \"Noir\"".into(),
                    description: String::new(),
                    price: Price(400),
                    category: "groceries".into(),
                },
            ]
        );
        assert_eq!(
            page.rejected,
            vec![
                RejectedProduct {
                    external_id: Some("3".into()),
                    reason: MappingError::NegativePrice,
                },
                RejectedProduct {
                    external_id: None,
                    reason: MappingError::Missing("id"),
                },
            ]
        );
    }

    #[test]
    fn a_body_that_is_not_a_page_is_a_decode_error() {
        for body in [&b"<html>busy</html>"[..], br#"{"products": 3}"#, b""] {
            assert!(matches!(
                decode_page(&mut body.to_vec()),
                Err(UpstreamError::Decode(_))
            ));
        }
    }
}
