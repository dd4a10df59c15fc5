//! The HTTP API: authentication, input checking, the shown-once device secret, the audit trail.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Gateway, TOKEN, publish_readings};

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

/// Recomputes one exported line's hash as `docs/security.md` describes it, independently of the
/// gateway's code.
fn export_hash(prev_hex: &str, line: &Value) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(hex::decode(prev_hex).unwrap());
    h.update(line["time_ms"].as_i64().unwrap().to_be_bytes());
    let patient = line["patient_id"].as_str().unwrap_or("\u{0}");
    for key in ["actor", "action", "patient", "target", "remote"] {
        let v = if key == "patient" {
            patient
        } else {
            line[key].as_str().unwrap()
        };
        h.update((v.len() as u64).to_be_bytes());
        h.update(v.as_bytes());
    }
    hex::encode(h.finalize())
}

async fn export(gw: &Gateway, query: &str) -> (StatusCode, Option<String>, String) {
    let resp = reqwest::Client::new()
        .get(format!("http://{}/api/v1/audit/export{query}", gw.http))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    (resp.status(), ct, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_exports_as_a_verifiable_chain_and_a_changed_line_is_found() {
    let gw = Gateway::start().await;
    let api = &gw.client;
    // More lines than one export page (1000), so the stream's paging is exercised.
    api.patient("p1").await;
    for _ in 0..1100 {
        let (s, _) = api.get("/api/v1/patients/p1").await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, v) = api.get("/api/v1/audit/verify").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["intact"], true, "{v}");
    let verified = v["lines"].as_u64().unwrap();
    assert!(verified >= 1101, "{v}");

    // Newest first: the latest lines, the query's own line on top.
    let (s, v) = api.get("/api/v1/audit?order=newest&limit=3").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let newest = v["audit"].as_array().unwrap();
    assert_eq!(newest.len(), 3);
    assert_eq!(newest[0]["action"], "audit.read");
    assert!(
        newest
            .windows(2)
            .all(|w| w[0]["id"].as_i64() > w[1]["id"].as_i64())
    );
    let (s, v) = api.get("/api/v1/audit?order=sideways").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    let (s, ct, body) = export(&gw, "").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(ct.as_deref(), Some("application/x-ndjson"));
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The export includes its own line, written before it was read.
    assert_eq!(lines.last().unwrap()["action"], "audit.export");
    assert!(lines.len() as u64 > verified, "{} lines", lines.len());
    let mut prev = "0".repeat(64);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(
            l["prev_hash"],
            prev.as_str(),
            "line {i} links to its predecessor"
        );
        let h = export_hash(&prev, l);
        assert_eq!(l["hash"], h.as_str(), "line {i} hashes to its stored hash");
        prev = h;
    }
    let reads = lines
        .iter()
        .filter(|l| l["action"] == "patient.read" && l["patient_id"] == "p1")
        .count();
    assert_eq!(reads, 1100);

    // Browsers ask for compression; the compressed export is the same, whole.
    let gz = reqwest::Client::new()
        .get(format!("http://{}/api/v1/audit/export", gw.http))
        .bearer_auth(TOKEN)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gz.status(), StatusCode::OK);
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&gz.bytes().await.unwrap()[..]),
        &mut text,
    )
    .unwrap();
    let n = text.lines().count();
    assert_eq!(
        n,
        lines.len() + 1,
        "the gzip export is whole (plus its own line)"
    );
    assert!(text.starts_with(body.lines().next().unwrap()));

    // A time window exports only its lines, still carrying the links to check them.
    let (s, _, empty) = export(&gw, "?from=2000-01-01T00:00:00Z&to=2000-01-02T00:00:00Z").await;
    assert_eq!((s, empty.as_str()), (StatusCode::OK, ""));
    let (s, _, bad) = export(&gw, "?from=2030-01-01T00:00:00Z&to=2000-01-02T00:00:00Z").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");

    // Someone with write access to the database changes who read the record: the chain breaks
    // at that line, both for the gateway's check and for the exported copy's.
    let target = lines
        .iter()
        .position(|l| l["action"] == "patient.read")
        .unwrap()
        + 5;
    let target_id = lines[target]["id"].as_i64().unwrap();
    let db = gw.registry_db();
    let changed = db
        .rows(&format!(
            "UPDATE audit SET actor = 'somebody-else' WHERE id = {target_id} RETURNING id"
        ))
        .await;
    assert_eq!(changed, [target_id.to_string()]);
    let (s, v) = api.get("/api/v1/audit/verify").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["intact"], false, "{v}");
    assert_eq!(
        v["error"],
        format!("audit line {target_id} does not match the chain")
    );
    let (_, _, body) = export(&gw, "").await;
    let changed: Value = serde_json::from_str(body.lines().nth(target).unwrap()).unwrap();
    assert_eq!(changed["actor"], "somebody-else");
    assert_ne!(
        export_hash(changed["prev_hash"].as_str().unwrap(), &changed),
        changed["hash"].as_str().unwrap()
    );

    // Only admins export or verify.
    let (s, _) = api.call("GET", "/api/v1/audit/export", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    gw.stop().await;
}

/// `GET /patients/{id}/observations` gives the first `limit` readings oldest first (the default),
/// or with `order=newest` the latest newest first, and says when the limit cut the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observations_come_oldest_or_newest_first_and_say_when_the_limit_cut_them() {
    let gw = Gateway::start().await;
    let api = &gw.client;
    api.patient("pg1").await;
    let secret = api.device("oxg1", "pg1", "pulse-oximeter").await;
    // Five readings a minute apart, ten minutes ago onwards; values 91..=95 in time order.
    let start = vigil::domain::now_ms() - 600_000;
    let body: Vec<Value> = (0..5)
        .map(|i| {
            json!({
                "metric": "spo2",
                "value": 91 + i,
                "time": vigil::domain::format_rfc3339(start + i * 60_000),
            })
        })
        .collect();
    publish_readings(gw.mqtt, "oxg1", &secret, &Value::from(body)).await;

    let page = |query: &'static str| async move {
        let (s, v) = api
            .get(&format!("/api/v1/patients/pg1/observations?{query}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{query}: {v}");
        let values: Vec<f64> = v["observations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["value"].as_f64().unwrap())
            .collect();
        (values, v["truncated"].as_bool())
    };
    assert_eq!(page("limit=2").await, (vec![91.0, 92.0], Some(true)));
    assert_eq!(
        page("limit=2&order=oldest&metric=spo2").await,
        (vec![91.0, 92.0], Some(true))
    );
    assert_eq!(
        page("limit=2&order=newest").await,
        (vec![95.0, 94.0], Some(true))
    );
    assert_eq!(
        page("order=newest&metric=spo2").await,
        (vec![95.0, 94.0, 93.0, 92.0, 91.0], Some(false))
    );
    assert_eq!(
        page("limit=5").await,
        (vec![91.0, 92.0, 93.0, 94.0, 95.0], Some(false))
    );
    let (s, v) = api
        .get("/api/v1/patients/pg1/observations?order=sideways")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"], "order must be oldest or newest");
    gw.stop().await;
}

/// The MRN: set at creation or by a PATCH, unique per clinic (409, naming neither the other
/// patient nor the MRN), checked (400), cleared by `null` or `""`, and every change audited on a
/// line of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mrn_is_unique_checked_clearable_and_audited() {
    let gw = Gateway::start().await;
    let api = &gw.client;
    let (s, v) = api
        .post(
            "/api/v1/patients",
            json!({"id": "p-m1", "name": "Ada", "mrn": "MRN-0042"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["mrn"], "MRN-0042");
    let (s, v) = api
        .post(
            "/api/v1/patients",
            json!({"id": "p-m2", "name": "Bo", "mrn": "MRN-0042"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(
        v["error"], "another patient with this mrn already exists",
        "{v}"
    );
    let (s, _) = api.get("/api/v1/patients/p-m2").await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "a refused creation creates nothing"
    );
    api.patient("p-m2").await;
    let (s, v) = api
        .patch("/api/v1/patients/p-m2", json!({"mrn": "MRN-0042"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    for bad in ["MRN 42", "a|b", &"9".repeat(65)] {
        let (s, v) = api
            .patch("/api/v1/patients/p-m2", json!({"mrn": bad}))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(v["error"].as_str().unwrap().starts_with("mrn "), "{v}");
    }
    let (s, v) = api
        .patch("/api/v1/patients/p-m2", json!({"mrn": " 77/B "}))
        .await;
    assert_eq!((s, &v["mrn"]), (StatusCode::OK, &json!("77/B")), "{v}");
    // Another change leaves the MRN as it is, and writes no MRN line.
    let (s, v) = api
        .patch("/api/v1/patients/p-m2", json!({"phone": "555"}))
        .await;
    assert_eq!((s, &v["mrn"]), (StatusCode::OK, &json!("77/B")), "{v}");
    let (s, v) = api
        .patch("/api/v1/patients/p-m1", json!({"mrn": null}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v.get("mrn").is_none(), "{v}");
    // Cleared, MRN-0042 is free again.
    let (s, v) = api
        .patch("/api/v1/patients/p-m2", json!({"mrn": "MRN-0042"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, audit) = api.get("/api/v1/audit?limit=1000").await;
    let mrn_lines: Vec<(&str, &str)> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["action"] == "patient.mrn")
        .map(|l| {
            (
                l["patient_id"].as_str().unwrap(),
                l["target"].as_str().unwrap(),
            )
        })
        .collect();
    let mut got = mrn_lines.clone();
    got.sort();
    assert_eq!(
        got,
        [
            ("p-m1", "patient/p-m1/mrn"),
            ("p-m1", "patient/p-m1/mrn"),
            ("p-m2", "patient/p-m2/mrn"),
            ("p-m2", "patient/p-m2/mrn"),
        ],
        "created with one, set, cleared, set: {mrn_lines:?}"
    );
    gw.stop().await;
}
