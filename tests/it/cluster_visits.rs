//! A video visit with two Vigil instances on one PostgreSQL: its call lives on one instance,
//! and a participant whose signalling reaches the other is passed on to it.

use std::time::Duration;

use futures_util::SinkExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::cli::spawn_serve;
use crate::postgres::Postgres;
use crate::support::{Api, TOKEN};
use crate::visits::{Ws, next};

/// The clinician joins through the first instance (which then holds the call) and the patient,
/// with a join link, through the second: the second passes the patient's signalling on, so
/// both are in one call — the clinician sees the patient waiting, admits them, and the end
/// reaches the patient. The host records the patient's own address (signed by the relaying
/// instance), and a visit link made through one instance opens through the other (the key
/// that signs links is shared through the database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visit_joined_through_two_instances_is_one_call() {
    let pg = Postgres::start().await;
    let url = pg.database("vigil").await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let env = [
        ("VIGIL_DATABASE__URL", url.as_str()),
        ("VIGIL_VIDEO__BIND_IP", "127.0.0.1"),
    ];
    let spawn = |dir: std::path::PathBuf| async move {
        spawn_serve(
            tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil")),
            &dir,
            "127.0.0.1:0",
            &env,
        )
        .await
    };
    let a = spawn(dir_a.path().to_owned()).await;
    let b = spawn(dir_b.path().to_owned()).await;
    let api_a = Api::new(a.http);
    api_a.patient("p-call").await;
    let (s, v) = api_a
        .post("/api/v1/visits", json!({"patient_id": "p-call"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let visit = v["id"].as_str().unwrap().to_owned();
    let token = v["patient_join_url"]
        .as_str()
        .unwrap()
        .split_once('#')
        .unwrap()
        .1
        .to_owned();

    // The link, made through a, is good on b.
    let (s, j) = reqwest::Client::new()
        .get(format!("http://{}/api/v1/visits/{visit}/join", b.http))
        .header("authorization", format!("Visit {token}"))
        .send()
        .await
        .map(|r| (r.status(), r))
        .unwrap();
    assert_eq!(s, StatusCode::OK, "{:?}", j.text().await);

    let mut clinician = open(a.http, &visit, Some(TOKEN), None, json!({"type": "join"})).await;
    assert_eq!(next(&mut clinician, "hello").await["role"], "clinician");
    next(&mut clinician, "admitted").await;
    // The patient, from an address of their own, through b.
    let mut patient = open(
        b.http,
        &visit,
        None,
        Some("127.0.0.2"),
        json!({"type": "join", "token": token, "name": "Ana"}),
    )
    .await;
    let hello = next(&mut patient, "hello").await;
    assert_eq!(hello["role"], "patient");
    next(&mut patient, "waiting").await;
    let waiting = loop {
        let roster = next(&mut clinician, "participants").await;
        if let Some(p) = roster["participants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["state"] == "waiting")
        {
            break p.clone();
        }
    };
    assert_eq!(waiting["name"], "Ana", "{waiting}");
    clinician
        .send(tokio_tungstenite::tungstenite::Message::Text(
            json!({"type": "admit", "participant": waiting["id"]})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    next(&mut patient, "admitted").await;
    let relayed = crate::support::metric(b.http, "vigil_visit_signalling_relayed_total").await;
    assert_eq!(relayed, Some(1.0), "b passed the patient on");

    // The host (a) audited the patient's join with the patient's address, not b's.
    let (_, audit) = api_a.get("/api/v1/audit?patient_id=p-call").await;
    let lines = audit["audit"]
        .as_array()
        .or_else(|| audit["entries"].as_array())
        .cloned()
        .unwrap_or_default();
    let joined: Vec<&Value> = lines
        .iter()
        .filter(|l| l["action"] == "visit.join" && l["actor"] == "visit-link:patient")
        .collect();
    assert_eq!(joined.len(), 1, "{audit}");
    assert_eq!(joined[0]["remote"], "127.0.0.2", "{audit}");

    // The clinician ends the visit on a; the patient, on b, is told.
    clinician
        .send(tokio_tungstenite::tungstenite::Message::Text(
            json!({"type": "end"}).to_string().into(),
        ))
        .await
        .unwrap();
    let closed = next(&mut patient, "close").await;
    assert_eq!(
        (closed["code"].as_u64(), closed["reason"].as_str()),
        (Some(1000), Some("the visit has ended")),
        "the host's close, passed on: {closed}"
    );
    eprintln!(
        "cluster-report visits: a patient joined through the other instance was in the clinician's call"
    );
}

/// Opens a visit's signalling socket at `http` (with a bearer token, from `from` when given)
/// and sends `join`.
async fn open(
    http: std::net::SocketAddr,
    visit: &str,
    bearer: Option<&str>,
    from: Option<&str>,
    join: Value,
) -> Ws {
    let mut req = format!("ws://{http}/api/v1/visits/{visit}/signal")
        .into_client_request()
        .unwrap();
    if let Some(b) = bearer {
        req.headers_mut()
            .insert("authorization", format!("Bearer {b}").parse().unwrap());
    }
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(ip) = from {
        socket
            .bind(std::net::SocketAddr::new(ip.parse().unwrap(), 0))
            .unwrap();
    }
    let tcp = tokio::time::timeout(Duration::from_secs(10), socket.connect(http))
        .await
        .unwrap()
        .unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async(req, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        join.to_string().into(),
    ))
    .await
    .unwrap();
    ws
}
