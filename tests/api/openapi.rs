//! `GET /openapi.json` serves `docs/openapi.json` byte for byte, and that document describes
//! every path the router knows (and no other).

use http::Method;
use product_api::route::{route, Route, PATHS};
use serde_json::Value;

use crate::helpers::{spawn_app, Options, TestDatabase};

const ON_DISK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");

/// The operation keys of an `OpenAPI` 3.1 path item.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

#[tokio::test]
async fn serves_the_committed_document_with_an_etag() {
    let database = TestDatabase::create().await;
    let app = spawn_app(&Options::new(&database)).await;
    let on_disk = std::fs::read(ON_DISK).unwrap();

    let reply = app.get("/openapi.json").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("public, max-age=300"));
    assert!(reply.body == on_disk, "served bytes differ from {ON_DISK}");
    let version = reply.json()["openapi"].as_str().unwrap().to_owned();
    assert!(version.starts_with("3.1."), "openapi is {version}");

    let etag = reply.header("etag").unwrap().to_owned();
    let again = app
        .get_with("/openapi.json", &[("if-none-match", &etag)])
        .await;
    assert_eq!(again.status, 304);
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    assert!(again.body.is_empty());
    app.stop().await;
    database.drop_database().await;
}

#[test]
fn documents_every_route_the_router_knows_and_no_other() {
    let document: Value = serde_json::from_slice(&std::fs::read(ON_DISK).unwrap()).unwrap();
    let paths = document["paths"].as_object().unwrap();
    for path in PATHS {
        assert!(
            paths.contains_key(path),
            "{path} is routed but not documented"
        );
    }
    for (path, item) in paths {
        let operations: Vec<&str> = METHODS
            .into_iter()
            .filter(|method| item.get(*method).is_some())
            .collect();
        assert!(!operations.is_empty(), "{path} documents no operation");
        for operation in operations {
            let method = Method::from_bytes(operation.to_ascii_uppercase().as_bytes()).unwrap();
            let target = route(&method, path);
            assert!(
                !matches!(target, Route::NotFound | Route::MethodNotAllowed(_)),
                "{operation} {path} is documented but the router answers {target:?}"
            );
        }
    }
}
