//! Every client mistake gets a 400 problem naming the parameter; unknown paths and methods too.

use crate::helpers::{spawn_app, Options, TestDatabase};

#[tokio::test]
async fn each_class_of_bad_input_is_a_400_problem_naming_the_parameter() {
    let database = TestDatabase::seeded(50).await;
    let app = spawn_app(&Options::new(&database)).await;
    let first = app.get("/products/v1?take=2&category=tops").await.json();
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let mut tampered = cursor.clone().into_bytes();
    tampered[30] = if tampered[30] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let long_category = "x".repeat(65);
    let long_search = "y".repeat(101);
    let cases: Vec<(String, &str, &str)> = vec![
        ("take=0".into(), "invalid-parameter", "take"),
        ("take=ten".into(), "invalid-parameter", "take"),
        ("take=101".into(), "page-too-large", "take"),
        ("sort=name".into(), "unsupported-sort", "sort"),
        (
            "sort=-created_at&sort=price".into(),
            "invalid-parameter",
            "sort",
        ),
        ("colour=red".into(), "invalid-parameter", "colour"),
        (
            format!("category={long_category}"),
            "invalid-parameter",
            "category",
        ),
        ("category=".into(), "invalid-parameter", "category"),
        (
            format!("search={long_search}"),
            "invalid-parameter",
            "search",
        ),
        (
            "search=%25%2B%2A%28%29".into(),
            "invalid-parameter",
            "search",
        ),
        ("search=the+of+a".into(), "invalid-parameter", "search"),
        (
            "search=a+b+c+d+e+f+g+h+i".into(),
            "invalid-parameter",
            "search",
        ),
        ("min_price=-1".into(), "invalid-parameter", "min_price"),
        ("max_price=1.999".into(), "invalid-parameter", "max_price"),
        (
            "min_price=9&max_price=1".into(),
            "invalid-parameter",
            "min_price",
        ),
        ("min_price=%FF".into(), "invalid-parameter", "min_price"),
        ("cursor=garbage".into(), "invalid-cursor", "cursor"),
        (
            format!("take=2&category=tops&cursor={tampered}"),
            "invalid-cursor",
            "cursor",
        ),
        (
            format!("take=2&category=tablets&cursor={cursor}"),
            "invalid-cursor",
            "cursor",
        ),
        (
            format!("take=2&category=tops&sort=price&cursor={cursor}"),
            "invalid-cursor",
            "cursor",
        ),
    ];
    for (query, kind, parameter) in cases {
        let reply = app.get(&format!("/products/v1?{query}")).await;
        assert_eq!(reply.status, 400, "{query}");
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json"),
            "{query}"
        );
        let problem = reply.json();
        assert_eq!(
            problem["type"],
            format!("/problems/{kind}"),
            "{query}: {problem}"
        );
        assert_eq!(problem["status"], 400);
        assert_eq!(problem["parameter"], parameter, "{query}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(parameter),
            "{problem}"
        );
    }
    // The same cursor with its own filters (and another page size) is fine.
    let ok = app
        .get(&format!(
            "/products/v1?category=tops&take=5&cursor={cursor}"
        ))
        .await;
    assert_eq!(ok.status, 200);
    app.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405_with_allow() {
    let database = TestDatabase::create().await;
    let app = spawn_app(&Options::new(&database)).await;
    let missing = app.get("/products/v2").await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.header("content-type"),
        Some("application/problem+json")
    );
    let response = app
        .client
        .delete(app.url("/products/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let health = app.get("/health").await;
    assert_eq!(health.status, 200);
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["mysql"], "up");
    assert_eq!(ready.json()["redis"], "up");
    app.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn metrics_expose_requests_by_route_template_and_cache_results() {
    let database = TestDatabase::seeded(20).await;
    let app = spawn_app(&Options::new(&database)).await;
    assert_eq!(app.get("/products/v1?take=2").await.status, 200);
    assert_eq!(app.get("/no/such/path/12345").await.status, 404);
    let reply = app.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = String::from_utf8(reply.body).unwrap();
    for expected in [
        "http_server_request_duration_seconds_bucket{http_request_method=\"GET\",http_route=\"/products/v1\",http_response_status_code=\"200\",le=\"0.005\"}",
        "http_route=\"_other\",http_response_status_code=\"404\"",
        "cache_results_total{level=\"miss\"}",
    ] {
        assert!(text.contains(expected), "missing {expected} in:\n{text}");
    }
    assert!(!text.contains("12345"), "raw paths never become labels");
    app.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn request_ids_are_echoed_in_headers_and_problem_bodies() {
    let database = TestDatabase::create().await;
    let app = spawn_app(&Options::new(&database)).await;
    let reply = app
        .get_with("/products/v1?take=0", &[("x-request-id", "client-id-42")])
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.header("x-request-id"), Some("client-id-42"));
    assert_eq!(reply.json()["request_id"], "client-id-42");
    assert_eq!(
        reply.json()["parameter"],
        "take",
        "the problem is otherwise unchanged"
    );
    let traced = app
        .get_with(
            "/health",
            &[(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )],
        )
        .await;
    assert_eq!(
        traced.header("x-request-id"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    let generated = app.get("/health").await;
    assert_eq!(generated.header("x-request-id").map(str::len), Some(32));
    app.stop().await;
    database.drop_database().await;
}
