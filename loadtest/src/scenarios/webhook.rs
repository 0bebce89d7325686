//! `webhook`: signed Standard Webhooks deliveries of `product.updated` events. One
//! delivery in five repeats an earlier event of the same user (same id, same body,
//! a fresh timestamp and signature, as a sender's retry does) and must be answered
//! `200 {"status":"duplicate"}`; a new event must be answered `processed`.
//!
//! Events update a fixed pool of products (`loadtest-0` … `loadtest-999`), so runs do
//! not grow the table. Each product has the name and description of one product of the
//! real catalogue (`tests/fixtures/dummyjson-products.json`, the same one every time),
//! so the search pages an event moves (the service keeps them per word of the changed
//! text) are those real changes would move: ~16 distinct word starts a product. Every
//! processed event moves the cached pages of its category, of its words and of listings
//! without a filter, which is why `mixed` sends few of them.

use std::sync::OnceLock;
use std::time::Duration;

use goose::prelude::*;

use super::{Pace, RunDefaults};
use crate::api;
use crate::signing::Signer;

pub const DEFAULTS: RunDefaults = RunDefaults {
    users: 8,
    increase_rate: "8",
    run_time: "20s",
};

/// Percent of deliveries that repeat an earlier event (once a user has sent one).
pub const DUPLICATE_PERCENT: u32 = 20;
/// Earlier events a user remembers for duplicates; older ones are replaced.
const HISTORY: usize = 64;
/// Products the events touch.
const PRODUCTS: u32 = 1_000;
/// A webhook user's pause in `mixed`: a few catalogue changes per second in all,
/// each of which moves the pages of its category, its words and the unfiltered listings.
const MIXED_WAIT: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(5));

/// The real catalogue the events' texts come from.
const CATALOGUE: &str = include_str!("../../../tests/fixtures/dummyjson-products.json");

static SIGNER: OnceLock<Signer> = OnceLock::new();
static TEXTS: OnceLock<Vec<Text>> = OnceLock::new();

/// A catalogue product's name and description.
#[derive(Debug, serde::Deserialize)]
struct Text {
    title: String,
    description: String,
}

/// The name and description of pool product `product`: always the same for a product.
fn text_of(product: u32) -> &'static Text {
    let texts = TEXTS.get_or_init(|| {
        serde_json::from_str(CATALOGUE).expect("tests/fixtures/dummyjson-products.json parses")
    });
    &texts[product as usize % texts.len()]
}
static RUN_ID: OnceLock<u64> = OnceLock::new();

/// Sets the key deliveries are signed with; call once before the run starts.
pub fn set_signer(signer: Signer) {
    let _ = SIGNER.set(signer);
}

/// One delivery this user sent, kept to be sent again.
#[derive(Debug, Clone)]
struct Sent {
    id: String,
    body: String,
}

/// A user's deliveries so far; goose session data.
#[derive(Debug, Clone, Default)]
struct History {
    sent: Vec<Sent>,
    next_sequence: u64,
}

/// What the next delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    New,
    /// Repeat the earlier delivery at this index of the history.
    Duplicate(usize),
}

/// The next delivery for a roll in `0..100`, a history of `remembered` deliveries
/// and any `index` (taken modulo `remembered`): below [`DUPLICATE_PERCENT`] repeats
/// one, unless there is nothing to repeat yet.
pub fn plan(roll: u32, remembered: usize, index: usize) -> Plan {
    if remembered > 0 && roll < DUPLICATE_PERCENT {
        Plan::Duplicate(index % remembered)
    } else {
        Plan::New
    }
}

pub fn scenario(pace: Pace) -> Result<Scenario, GooseError> {
    let scenario =
        scenario!("webhook").register_transaction(transaction!(deliver).set_name("webhook"));
    match pace {
        Pace::Closed => Ok(scenario),
        Pace::Think => scenario.set_wait_time(MIXED_WAIT.0, MIXED_WAIT.1),
    }
}

async fn deliver(user: &mut GooseUser) -> TransactionResult {
    let mut history = user
        .get_session_data::<History>()
        .cloned()
        .unwrap_or_default();
    let planned = plan(
        rand::random_range(0..100),
        history.sent.len(),
        rand::random_range(0..usize::MAX),
    );
    let (sent, expected, name) = match planned {
        Plan::Duplicate(index) => (
            history.sent[index].clone(),
            "duplicate",
            "webhook: duplicate",
        ),
        Plan::New => {
            let sent = new_event(user.weighted_users_index, history.next_sequence);
            history.next_sequence += 1;
            (sent, "processed", "webhook: new event")
        }
    };
    // Saved before sending, so a failed delivery's sequence number is never reused.
    user.set_session_data(history);
    post(user, &sent, expected, name).await?;
    // Only an event the service processed is a duplicate when sent again: a failed
    // delivery is rolled back, and its retry is (rightly) processed.
    if planned == Plan::New {
        if let Some(history) = user.get_session_data_mut::<History>() {
            remember(&mut history.sent, sent, rand::random_range(0..usize::MAX));
        }
    }
    Ok(())
}

/// Adds a delivery to the history, replacing a random one once it is full.
fn remember(sent: &mut Vec<Sent>, delivery: Sent, index: usize) {
    if sent.len() < HISTORY {
        sent.push(delivery);
    } else {
        sent[index % HISTORY] = delivery;
    }
}

/// A new `product.updated` event with an id unique to this run, user and sequence.
fn new_event(user: usize, sequence: u64) -> Sent {
    let run = *RUN_ID.get_or_init(rand::random);
    let product = rand::random_range(0..PRODUCTS);
    let text = text_of(product);
    let cents: u32 = rand::random_range(50..=500_000);
    let body = serde_json::json!({
        "type": "product.updated",
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "data": {
            "external_id": format!("loadtest-{product}"),
            "name": text.title,
            "description": text.description,
            "price": f64::from(cents) / 100.0,
            "category": api::pick(&api::CATEGORIES),
        }
    });
    Sent {
        id: format!("evt_loadtest_{run:016x}_{user}_{sequence}"),
        body: body.to_string(),
    }
}

/// Signs and posts one delivery; anything but `200 {"status":"<expected>"}` is a
/// failed request.
async fn post(user: &mut GooseUser, sent: &Sent, expected: &str, name: &str) -> TransactionResult {
    let Some(signer) = SIGNER.get() else {
        return Err(Box::new(TransactionError::Custom(
            "no webhook secret was set".into(),
        )));
    };
    let timestamp = chrono::Utc::now().timestamp();
    let builder = user
        .get_request_builder(&GooseMethod::Post, "/webhook")?
        .header("content-type", "application/json")
        .header("webhook-id", &sent.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            signer.sign(&sent.id, timestamp, sent.body.as_bytes()),
        )
        .body(sent.body.clone());
    let request = GooseRequest::builder()
        .method(GooseMethod::Post)
        .path("/webhook")
        .name(name)
        .set_request_builder(builder)
        .build();
    let mut goose = user.request(request).await?;
    let response = match goose.response {
        Ok(response) => response,
        Err(e) => return api::fail(user, &e.to_string(), &mut goose.request),
    };
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    match check_answer(status.as_u16(), &body, expected) {
        Ok(()) => Ok(()),
        Err(reason) => api::fail(user, &reason, &mut goose.request),
    }
}

/// Whether an answer is `200 {"status":"<expected>"}`.
fn check_answer(status: u16, body: &str, expected: &str) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        status: String,
    }
    if status != 200 {
        return Err(format!("status {status}"));
    }
    match serde_json::from_str::<Answer>(body) {
        Ok(answer) if answer.status == expected => Ok(()),
        Ok(answer) => Err(format!(
            "answered {:?}, expected {expected:?}",
            answer.status
        )),
        Err(e) => Err(format!("body is not a webhook answer: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_delivery_in_five_is_a_duplicate() {
        let duplicates = (0..100)
            .filter(|&roll| matches!(plan(roll, 10, 0), Plan::Duplicate(_)))
            .count();
        assert_eq!(duplicates, 20);
    }

    #[test]
    fn nothing_to_repeat_means_a_new_event() {
        assert!((0..100).all(|roll| plan(roll, 0, 7) == Plan::New));
    }

    #[test]
    fn duplicates_pick_a_remembered_delivery() {
        assert_eq!(plan(0, 3, 7), Plan::Duplicate(1));
        assert_eq!(plan(0, 3, usize::MAX), Plan::Duplicate(usize::MAX % 3));
    }

    #[test]
    fn history_is_bounded() {
        let mut sent = Vec::new();
        for n in 0..HISTORY * 2 {
            let delivery = Sent {
                id: n.to_string(),
                body: String::new(),
            };
            remember(&mut sent, delivery, n);
        }
        assert_eq!(sent.len(), HISTORY);
        assert_eq!(sent[HISTORY - 1].id, (HISTORY * 2 - 1).to_string());
    }

    #[test]
    fn events_are_unique_and_valid_json() {
        let first = new_event(3, 0);
        let second = new_event(3, 1);
        assert_ne!(first.id, second.id);
        assert!(first.id.len() <= 255);
        let body: serde_json::Value = serde_json::from_str(&first.body).unwrap();
        assert_eq!(body["type"], "product.updated");
        let price = body["data"]["price"].as_f64().unwrap();
        assert!((0.5..=5000.0).contains(&price));
        // Two decimal places at most: the service refuses more.
        assert!(((price * 100.0).round() - price * 100.0).abs() < 1e-6);
        assert!(!body["data"]["name"].as_str().unwrap().is_empty());
        assert!(!body["data"]["description"].as_str().unwrap().is_empty());
    }

    #[test]
    fn a_product_keeps_its_catalogue_text_and_every_catalogue_product_is_used() {
        // Every event about a pool product carries that product's one catalogue text.
        for sequence in 0..50 {
            let body: serde_json::Value =
                serde_json::from_str(&new_event(1, sequence).body).unwrap();
            let data = &body["data"];
            let product: u32 = data["external_id"].as_str().unwrap()["loadtest-".len()..]
                .parse()
                .unwrap();
            assert_eq!(data["name"], text_of(product).title.as_str());
            assert_eq!(data["description"], text_of(product).description.as_str());
        }
        let titles: std::collections::HashSet<&str> = (0..PRODUCTS)
            .map(|product| text_of(product).title.as_str())
            .collect();
        let catalogue: std::collections::HashSet<&str> = TEXTS
            .get()
            .unwrap()
            .iter()
            .map(|text| text.title.as_str())
            .collect();
        assert_eq!(titles, catalogue);
        assert!(titles.len() > 100);
    }

    #[test]
    fn answers_are_checked() {
        assert!(check_answer(200, r#"{"status":"duplicate"}"#, "duplicate").is_ok());
        assert!(check_answer(200, r#"{"status":"processed"}"#, "duplicate").is_err());
        assert!(check_answer(409, r#"{"status":"duplicate"}"#, "duplicate").is_err());
        assert!(check_answer(200, "<html>", "processed").is_err());
    }
}
