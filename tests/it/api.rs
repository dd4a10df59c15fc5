//! The HTTP API: authentication, input checking, the shown-once device secret, the audit trail.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Gateway, TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_route_needs_a_credential_but_health_and_metrics_do_not() {
    let gw = Gateway::start().await;
    let api = &gw.client;
    let (mut wrong, mut throttled_from) = (0, None);
    for (method, path) in [
        ("GET", "/api/v1/patients"),
        ("POST", "/api/v1/patients"),
        ("GET", "/api/v1/patients/p1"),
        ("GET", "/api/v1/patients/p1/observations"),
        ("POST", "/api/v1/devices"),
        ("GET", "/api/v1/devices/d1"),
        ("GET", "/api/v1/dead-letters"),
        ("GET", "/api/v1/audit"),
        ("GET", "/api/v1/profiles"),
        ("GET", "/api/v1/influxdb/rejected"),
        ("GET", "/api/v1/no-such-route"),
    ] {
        let (s, v) = api.call(method, path, Some(json!({})), None).await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token"
        );
        assert!(v["error"].is_string(), "{v}");
        // A wrong token: 401, until the address has failed too often; from then on 429 (the
        // throttle of bad bearer tokens), never anything else.
        let (s, v) = api
            .call(method, path, Some(json!({})), Some("wrong-token"))
            .await;
        wrong += 1;
        if throttled_from.is_none() && s == StatusCode::TOO_MANY_REQUESTS {
            throttled_from = Some(wrong);
        }
        let want = if throttled_from.is_some() {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(s, want, "{method} {path} with a wrong token (#{wrong})");
        assert!(v["error"].is_string(), "{v}");
    }
    assert!(
        throttled_from.is_some_and(|n| n > 5),
        "bad tokens throttled only after the free failures: {throttled_from:?}"
    );
    let (s, v) = api.call("GET", "/healthz", None, None).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"status": "ok"})));
    let (s, _) = api.call("GET", "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_4xx_with_a_reason() {
    let gw = Gateway::start().await;
    let api = &gw.client;
    let cases = [
        (
            "POST",
            "/api/v1/patients",
            Some(json!({"id": "bad id!", "name": "X"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/v1/patients",
            Some(json!({"id": "p1"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/v1/patients",
            Some(json!({"id": "p1", "name": "X", "birth_date": "yesterday"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/v1/patients",
            Some(json!({"id": "p1", "name": "X", "colour": "red"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/api/v1/patients/nobody",
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "GET",
            "/api/v1/patients/no%20body",
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/v1/devices",
            Some(json!({"id": "d1", "patient_id": "nobody", "profile": "scale"})),
            StatusCode::NOT_FOUND,
        ),
        ("GET", "/api/v1/devices/d1", None, StatusCode::NOT_FOUND),
        (
            "GET",
            "/api/v1/patients/p1/observations?from=last-week",
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/api/v1/patients/p1/observations?metric=pulse",
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/api/v1/patients/p1/observations?limit=0",
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/api/v1/dead-letters?device_id=a/b",
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "DELETE",
            "/api/v1/patients",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    for (method, path, body, want) in cases {
        let (s, v) = api.call(method, path, body.clone(), Some(TOKEN)).await;
        assert_eq!(s, want, "{method} {path} {body:?}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{method} {path}: {v}"
        );
    }
    // A body that is not JSON at all.
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/patients", gw.http))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.json::<serde_json::Value>().await.unwrap()["error"].is_string());

    // A body over http.max_body_bytes, and one that is not declared JSON.
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/patients", gw.http))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(vec![b' '; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(resp.json::<serde_json::Value>().await.unwrap()["error"].is_string());
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/patients", gw.http))
        .bearer_auth(TOKEN)
        .body(r#"{"id":"p9","name":"X"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    api.patient("p1").await;
    let (s, v) = api
        .post("/api/v1/patients", json!({"id": "p1", "name": "Again"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, v) = api
        .post(
            "/api/v1/devices",
            json!({"id": "d1", "patient_id": "p1", "profile": "toaster"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("pulse-oximeter"),
        "lists the profiles: {v}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_secret_is_shown_once_and_reads_are_audited() {
    let gw = Gateway::start().await;
    let api = &gw.client;
    api.patient("p1").await;
    let (s, created) = api
        .post(
            "/api/v1/devices",
            json!({"id": "d1", "patient_id": "p1", "profile": "scale"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(created["mqtt"]["username"], "d1");
    assert!(
        created["mqtt"]["password"]
            .as_str()
            .unwrap()
            .starts_with("vgd_")
    );
    let (s, device) = api.get("/api/v1/devices/d1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(device["patient_id"], "p1");
    assert!(
        device.get("mqtt").is_none()
            && !device
                .to_string()
                .contains(created["mqtt"]["password"].as_str().unwrap())
    );

    let (s, p) = api.get("/api/v1/patients/p1").await;
    assert_eq!(
        (s, p["name"].as_str()),
        (StatusCode::OK, Some("Patient p1"))
    );
    api.observations("p1", "metric=body_weight").await;

    let (s, v) = api.get("/api/v1/audit?patient_id=p1").await;
    assert_eq!(s, StatusCode::OK);
    let actions: Vec<&str> = v["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    for want in [
        "patient.create",
        "device.create",
        "device.read",
        "patient.read",
        "observations.read",
        "audit.read",
    ] {
        assert!(actions.contains(&want), "audit lacks {want}: {actions:?}");
    }
    let first = &v["audit"][0];
    assert_eq!(first["actor"], "bootstrap");
    assert_eq!(first["remote"], "127.0.0.1");
    gw.stop().await;
}
