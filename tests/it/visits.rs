//! Video visits' links and record: `POST /visits` gives two signed, expiring join links; a link
//! opens its own visit in its own role and nothing else; expired, tampered and other-visit
//! links are refused; the visit's end lands on the patient's timeline.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Gateway, TOKEN};
use vigil::video::token::{Claims, JoinRole, TokenKey};

async fn join(g: &Gateway, visit: &str, token: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .get(format!("http://{}/api/v1/visits/{visit}/join", g.http))
        .header("authorization", format!("Visit {token}"))
        .send()
        .await
        .unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// The token in a join link (after `#`), and the visit id in its path.
fn parts(url: &str) -> (String, String) {
    let (path, token) = url.split_once('#').expect("the token is in the fragment");
    let visit = path.rsplit('/').next().unwrap().to_owned();
    (visit, token.to_owned())
}

#[tokio::test]
async fn join_links_open_their_own_visit_and_nothing_else() {
    let g = Gateway::start().await;
    let api = &g.client;
    for (id, team) in [("pv1", "north"), ("pv2", "south")] {
        let (s, v) = api
            .post("/api/v1/teams", json!({"id": team, "name": team}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, v) = api
            .post(
                "/api/v1/patients",
                json!({"id": id, "name": format!("Patient {id}"), "care_team": team}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, v) = api
        .post("/api/v1/visits", json!({"patient_id": "pv1"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let visit = v["id"].as_str().unwrap().to_owned();
    let patient_url = v["patient_join_url"].as_str().unwrap();
    let clinician_url = v["clinician_join_url"].as_str().unwrap();
    assert!(
        patient_url.starts_with(&format!("http://{}/visit/{visit}#", g.http)),
        "{patient_url}"
    );
    let (pv, pt) = parts(patient_url);
    let (cv, ct) = parts(clinician_url);
    assert_eq!((pv.as_str(), cv.as_str()), (visit.as_str(), visit.as_str()));
    assert_ne!(pt, ct, "one token per role");

    let (s, v) = join(&g, &visit, &pt).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["role"].as_str(), v["status"].as_str()),
        (Some("patient"), Some("waiting"))
    );
    let (s, v) = join(&g, &visit, &ct).await;
    assert_eq!((s, v["role"].as_str()), (StatusCode::OK, Some("clinician")));

    // A second visit: the first visit's links do not open it.
    let (_, v2) = api
        .post("/api/v1/visits", json!({"patient_id": "pv2"}))
        .await;
    let other = v2["id"].as_str().unwrap();
    let (s, v) = join(&g, other, &pt).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"], "the link is for another visit");

    // One character changed: refused.
    let mut tampered = pt.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'x' { b'y' } else { b'x' };
    let (s, v) = join(&g, &visit, &String::from_utf8(tampered).unwrap()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");

    // Expired: a link signed with this Vigil's own key, but an hour past its expiry.
    let key = TokenKey::load_or_create(&g.dir.path().join("visit-signing.key")).unwrap();
    let expired = key.sign(&Claims {
        v: visit.clone(),
        r: JoinRole::Patient,
        exp: vigil::domain::now_ms() / 1000 - 3600,
    });
    let (s, v) = join(&g, &visit, &expired).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(
        v["error"],
        "the link has expired; ask the clinic for a new one"
    );

    // No link, or a session-less bearer of nothing: 401; the join route opens nothing else.
    let r = reqwest::Client::new()
        .get(format!("http://{}/api/v1/visits/{visit}", g.http))
        .header("authorization", format!("Visit {pt}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "a link is not a session"
    );

    // Ending the visit: recorded on the timeline; the links stop working.
    let (s, v) = api
        .call(
            "POST",
            &format!("/api/v1/visits/{visit}/end"),
            Some(json!({})),
            Some(TOKEN),
        )
        .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::OK, Some("ended")),
        "{v}"
    );
    let (s, _) = join(&g, &visit, &pt).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (_, rec) = api.get("/api/v1/patients/pv1/record").await;
    let ended = rec["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "visit.ended")
        .cloned()
        .expect("visit.ended on the timeline");
    assert_eq!(ended["visit_id"], visit.as_str());

    // Using a link is audited, as the link's role.
    let (_, a) = api.get("/api/v1/audit?patient_id=pv1").await;
    assert!(
        a["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["action"] == "visit.join_link" && x["actor"] == "visit-link:patient"),
        "{a}"
    );
    // No patient, or a bad body: clear 4xx.
    let (s, _) = api
        .post("/api/v1/visits", json!({"patient_id": "nobody"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api.post("/api/v1/visits", json!({"patient": "pv1"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    g.stop().await;
}

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a visit's signalling socket (with a bearer token when given) and sends `join`.
async fn signal(g: &Gateway, visit: &str, bearer: Option<&str>, join: Value) -> Ws {
    let headers: Vec<(&'static str, String)> = bearer
        .map(|b| ("authorization", format!("Bearer {b}")))
        .into_iter()
        .collect();
    signal_with(g, visit, &headers, join).await
}

/// Opens a visit's signalling socket with these request headers (a bearer token, or a session
/// cookie and Vigil's own `Origin`) and sends `join`.
pub(crate) async fn signal_with(
    g: &Gateway,
    visit: &str,
    headers: &[(&'static str, String)],
    join: Value,
) -> Ws {
    use futures_util::SinkExt as _;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut req = format!("ws://{}/api/v1/visits/{visit}/signal", g.http)
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        req.headers_mut().insert(*name, value.parse().unwrap());
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        join.to_string().into(),
    ))
    .await
    .unwrap();
    ws
}

/// The next message of type `kind` (others are skipped), or the close frame's code and reason
/// as `{"type":"close","code","reason"}`.
pub(crate) async fn next(ws: &mut Ws, kind: &str) -> Value {
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["type"] == kind {
                        return v;
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    let v = json!({"type": "close", "code": f.as_ref().map(|f| u16::from(f.code)), "reason": f.map(|f| f.reason.to_string())});
                    if kind == "close" {
                        return v;
                    }
                    panic!("closed while waiting for {kind}: {v}");
                }
                Some(Ok(_)) => {}
                other => panic!("socket ended while waiting for {kind}: {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind} within 10 s"))
}

async fn send(ws: &mut Ws, v: Value) {
    use futures_util::SinkExt as _;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        v.to_string().into(),
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn signalling_admits_from_the_waiting_room_and_refuses_bad_links() {
    let g = Gateway::start_with(|c| c.video.bind_ip = [127, 0, 0, 1].into()).await;
    let api = &g.client;
    let (s, v) = api
        .post("/api/v1/teams", json!({"id": "north", "name": "North"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = api
        .post(
            "/api/v1/patients",
            json!({"id": "ps1", "name": "Patient ps1", "care_team": "north"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, v) = api
        .post("/api/v1/visits", json!({"patient_id": "ps1"}))
        .await;
    let visit = v["id"].as_str().unwrap().to_owned();
    let (_, pt) = parts(v["patient_join_url"].as_str().unwrap());
    let (_, v2) = api
        .post("/api/v1/visits", json!({"patient_id": "ps1"}))
        .await;
    let (_, other_pt) = parts(v2["patient_join_url"].as_str().unwrap());

    // Bad links: refused in words, closed with 4001; no link and no session: 4001 too.
    let mut tampered = pt.clone().into_bytes();
    let i = tampered.len() - 3;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for (token, why) in [
        (Some(tampered.as_str()), "signature does not match"),
        (Some(other_pt.as_str()), "for another visit"),
        (None, "a visit link or a dashboard session is needed"),
    ] {
        let mut ws = signal(&g, &visit, None, json!({"type": "join", "token": token})).await;
        let e = next(&mut ws, "error").await;
        assert!(e["message"].as_str().unwrap().contains(why), "{e}");
        assert_eq!(next(&mut ws, "close").await["code"], 4001);
    }
    // Not a join first: refused.
    let mut ws = signal(&g, &visit, None, json!({"type": "offer", "sdp": "v=0"})).await;
    assert_eq!(next(&mut ws, "close").await["code"], 4001);

    // The patient waits; the clinician (here the admin's bearer token, as the dashboard's
    // session would) is admitted at once and sees the patient waiting.
    let mut patient = signal(
        &g,
        &visit,
        None,
        json!({"type": "join", "token": pt, "name": "Ana"}),
    )
    .await;
    let hello = next(&mut patient, "hello").await;
    assert_eq!(hello["role"], "patient");
    assert_eq!(hello["visit"]["id"], visit.as_str());
    assert_eq!(hello["ice_servers"], json!([]));
    next(&mut patient, "waiting").await;
    // A waiting patient cannot offer yet.
    send(&mut patient, json!({"type": "offer", "sdp": "v=0"})).await;
    assert!(
        next(&mut patient, "error").await["message"]
            .as_str()
            .unwrap()
            .contains("admitted")
    );

    let mut clin = signal(&g, &visit, Some(TOKEN), json!({"type": "join"})).await;
    let ch = next(&mut clin, "hello").await;
    assert_eq!(ch["role"], "clinician");
    next(&mut clin, "admitted").await;
    let roster = next(&mut clin, "participants").await;
    let waiting: Vec<&Value> = roster["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "waiting")
        .collect();
    assert_eq!(waiting.len(), 1, "{roster}");
    assert_eq!(
        (waiting[0]["name"].as_str(), waiting[0]["role"].as_str()),
        (Some("Ana"), Some("patient"))
    );
    let pid = waiting[0]["id"].as_str().unwrap().to_owned();
    // An offer that is not SDP is refused with the parser's reason; the socket stays open and
    // the participant may offer again.
    send(&mut clin, json!({"type": "offer", "sdp": "hello"})).await;
    let e = next(&mut clin, "error").await;
    assert!(
        e["message"].as_str().unwrap().contains("not valid SDP"),
        "{e}"
    );

    // The patient cannot admit; the clinician can, once.
    send(&mut patient, json!({"type": "admit", "participant": pid})).await;
    assert!(
        next(&mut patient, "error").await["message"]
            .as_str()
            .unwrap()
            .contains("only a clinician")
    );
    send(&mut clin, json!({"type": "admit", "participant": pid})).await;
    next(&mut patient, "admitted").await;
    let (_, v) = api.get(&format!("/api/v1/visits/{visit}")).await;
    assert_eq!(v["status"], "in_progress", "{v}");
    send(&mut clin, json!({"type": "admit", "participant": pid})).await;
    assert!(
        next(&mut clin, "error").await["message"]
            .as_str()
            .unwrap()
            .contains("not waiting")
    );

    // Mute shows in the others' roster.
    send(
        &mut patient,
        json!({"type": "mute", "audio": true, "video": false}),
    )
    .await;
    let r = loop {
        let r = next(&mut clin, "participants").await;
        if r["participants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == pid.as_str() && p["audio"] == true)
        {
            break r;
        }
    };
    assert!(
        r["participants"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["video"] == false)
    );

    // Nonsense is answered with a reason, and the socket stays open.
    send(&mut patient, json!({"type": "dance"})).await;
    next(&mut patient, "error").await;
    send(
        &mut patient,
        json!({"type": "mute", "audio": false, "video": false}),
    )
    .await;
    next(&mut patient, "participants").await;

    // The clinician ends the visit: everyone is told; it is on the record; links stop working.
    send(&mut clin, json!({"type": "end"})).await;
    assert!(
        next(&mut patient, "ended").await["reason"]
            .as_str()
            .unwrap()
            .contains("ended")
    );
    let (_, v) = api.get(&format!("/api/v1/visits/{visit}")).await;
    assert_eq!(v["status"], "ended", "{v}");
    let mut late = signal(&g, &visit, None, json!({"type": "join", "token": pt})).await;
    assert_eq!(next(&mut late, "close").await["code"], 4009);
    let (_, rec) = api.get("/api/v1/patients/ps1/record").await;
    let kinds: Vec<&str> = rec["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .filter(|k| k.starts_with("visit."))
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "visit.started").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "visit.ended").count(),
        1,
        "{kinds:?}"
    );

    // A guest link: its own role, refused once the visit has ended.
    let (s, v) = api
        .post(
            &format!("/api/v1/visits/{}/links", v2["id"].as_str().unwrap()),
            json!({"role": "guest"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (_, gt) = parts(v["join_url"].as_str().unwrap());
    let (s, j) = join(&g, v2["id"].as_str().unwrap(), &gt).await;
    assert_eq!((s, j["role"].as_str()), (StatusCode::OK, Some("guest")));
    let (s, _) = api
        .post(
            &format!("/api/v1/visits/{visit}/links"),
            json!({"role": "guest"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = api
        .post(
            &format!("/api/v1/visits/{visit}/links"),
            json!({"role": "boss"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    g.stop().await;
}

/// Starts a visit and a guest link with a forged `Host`; the visit id and its three links.
async fn links_with_a_forged_host(g: &Gateway) -> (String, [String; 3]) {
    g.client.patient("ph1").await;
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        http.post(format!("http://{}{path}", g.http))
            .header("host", "evil.example")
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    let r = post("/api/v1/visits".into(), json!({"patient_id": "ph1"}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    let id = v["id"].as_str().unwrap().to_owned();
    let r = post(
        format!("/api/v1/visits/{id}/links"),
        json!({"role": "guest"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let guest: Value = r.json().await.unwrap();
    let urls = [
        &v["patient_join_url"],
        &v["clinician_join_url"],
        &guest["join_url"],
    ]
    .map(|u| u.as_str().unwrap().to_owned());
    (id, urls)
}

/// Links point at `http.public_url` (or, without it, the listener's own address), never at the
/// `Host` a client sent: a forged one would send the patient, token and all, to another site.
#[tokio::test]
async fn join_links_use_the_public_url_never_the_request_s_host() {
    let g =
        Gateway::start_with(|c| c.http.public_url = "https://vigil.clinic.example/".into()).await;
    let (id, urls) = links_with_a_forged_host(&g).await;
    for url in &urls {
        assert!(
            url.starts_with(&format!("https://vigil.clinic.example/visit/{id}#")),
            "{url}"
        );
        assert!(!url.contains("evil"), "{url}");
    }
    g.stop().await;

    let g = Gateway::start().await;
    let (id, urls) = links_with_a_forged_host(&g).await;
    for url in &urls {
        assert!(
            url.starts_with(&format!("http://{}/visit/{id}#", g.http)),
            "{url}"
        );
    }
    g.stop().await;
}

#[tokio::test]
async fn staff_leave_a_visit_when_their_access_ends_and_read_only_tokens_cannot_join() {
    use crate::web::{Browser, PASSWORD, clinic};
    let g = Gateway::start_with(|c| c.video.bind_ip = [127, 0, 0, 1].into()).await;
    clinic(&g).await;
    let api = &g.client;
    let mut nina = Browser::new(&g);
    nina.sign_in("nina", PASSWORD).await;
    let (_, v) = api
        .post("/api/v1/visits", json!({"patient_id": "pn1"}))
        .await;
    let visit = v["id"].as_str().unwrap().to_owned();
    let (_, pt) = parts(v["patient_join_url"].as_str().unwrap());
    let bearer = |t: &str| vec![("authorization", format!("Bearer {t}"))];
    let session = |b: &Browser| {
        vec![
            (
                "cookie",
                format!("vigil_session={}", b.cookie.clone().unwrap()),
            ),
            ("origin", format!("http://{}", g.http)),
        ]
    };
    let join = json!({"type": "join"});

    // A read-only token cannot take part: joining as staff (and so admitting or ending) is an
    // action. Refused in words, closed with 4003.
    let (_, read) = nina.token("read").await;
    let mut ws = signal_with(&g, &visit, &bearer(&read), join.clone()).await;
    let e = next(&mut ws, "error").await;
    assert!(e["message"].as_str().unwrap().contains("read-only"), "{e}");
    assert_eq!(next(&mut ws, "close").await["code"], 4003);

    // The patient waits; nina joins with a write token and admits her.
    let mut patient = signal(&g, &visit, None, json!({"type": "join", "token": pt})).await;
    next(&mut patient, "waiting").await;
    let (write_id, write) = nina.token("write").await;
    let mut clin = signal_with(&g, &visit, &bearer(&write), join.clone()).await;
    next(&mut clin, "admitted").await;
    let roster = next(&mut clin, "participants").await;
    let waiting = roster["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["state"] == "waiting")
        .unwrap()["id"]
        .clone();
    send(&mut clin, json!({"type": "admit", "participant": waiting})).await;
    next(&mut patient, "admitted").await;

    /// Whether the roster the patient is sent next still lists a clinician (each change sends
    /// one: the patient's socket stays open, and the relay has let the clinician go).
    async fn clinician_gone(patient: &mut Ws) {
        loop {
            let r = next(patient, "participants").await;
            let list = r["participants"].as_array().unwrap();
            if !list.iter().any(|p| p["role"] == "clinician") {
                return;
            }
        }
    }
    let closed = |v: Value, code: u16, why: &str| {
        assert_eq!(v["code"], code, "{v}");
        assert!(v["reason"].as_str().unwrap().contains(why), "{why:?}: {v}");
    };

    // The token revoked mid-call: nina is removed (4001), the patient stays, alone.
    let (s, _) = nina
        .call("DELETE", &format!("/api/v1/tokens/{write_id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    closed(next(&mut clin, "close").await, 4001, "revoked");
    clinician_gone(&mut patient).await;

    // With her session: moved off the patient's team mid-call, she is removed (4003).
    let mut clin = signal_with(&g, &visit, &session(&nina), join.clone()).await;
    next(&mut clin, "admitted").await;
    let teams = |t: Value| async move {
        let (s, v) = api.patch("/api/v1/users/nina", json!({ "teams": t })).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    };
    teams(json!(["south"])).await;
    closed(next(&mut clin, "close").await, 4003, "care teams");
    clinician_gone(&mut patient).await;

    // Back on the team, then signed out mid-call: removed (4001).
    teams(json!(["north"])).await;
    let mut clin = signal_with(&g, &visit, &session(&nina), join.clone()).await;
    next(&mut clin, "admitted").await;
    nina.call("DELETE", "/api/v1/session", None).await;
    closed(next(&mut clin, "close").await, 4001, "ended");
    clinician_gone(&mut patient).await;

    // The visit was not ended by any of this, and each removal is on the record.
    let (_, v) = api.get(&format!("/api/v1/visits/{visit}")).await;
    assert_eq!(v["status"], "in_progress", "{v}");
    let (_, a) = api.get("/api/v1/audit?patient_id=pn1").await;
    let removed = a["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["action"] == "visit.removed")
        .count();
    assert_eq!(removed, 3, "{a}");
    g.stop().await;
}
