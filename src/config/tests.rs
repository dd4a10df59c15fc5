//! Loading as a whole: defaults, file, environment and flags; what `Config::validate` refuses,
//! each time naming the key; and that README's reference lists every key.

use super::*;

fn load(file: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vigil.toml");
    std::fs::write(&path, file).unwrap();
    Config::load(
        Some(&path),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        &Overrides::default(),
    )
}

#[test]
fn the_database_url_comes_from_the_environment_and_its_password_is_never_shown() {
    let c = load(
        "",
        &[(
            "VIGIL_DATABASE__URL",
            "postgres://vigil:s3cret@db.clinic.example:5432/vigil",
        )],
    )
    .unwrap();
    let d = c
        .database
        .as_ref()
        .expect("[database] from the environment");
    assert_eq!(
        d.url,
        "postgres://vigil:s3cret@db.clinic.example:5432/vigil"
    );
    let shown = format!("{c:?}");
    assert!(shown.contains("db.clinic.example:5432/vigil"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(load("", &[]).unwrap().database.is_none());
    let e = load("[database]\nurl = \"mysql://v:s@h/vigil\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("database.url") && e.contains("postgres://"),
        "{e}"
    );
}

#[test]
fn lists_come_from_the_environment_as_toml_arrays() {
    let c = load(
        "",
        &[
            ("VIGIL_VIDEO__PUBLIC_IPS", r#"["203.0.113.5"]"#),
            ("VIGIL_VIDEO__UDP_PORTS", "41000-41099"),
        ],
    )
    .unwrap();
    assert_eq!(
        c.video.public_ips,
        vec!["203.0.113.5".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(c.video.port_range().unwrap(), 41000..=41099);
    let e = load("", &[("VIGIL_VIDEO__UDP_PORTS", "41099-41000")]).unwrap_err();
    assert!(e.to_string().contains("video.udp_ports"), "{e}");
    let e = load("[video]\nturn_urls = [\"turn:t.example:3478\"]\n", &[]).unwrap_err();
    assert!(e.to_string().contains("video.turn_secret"), "{e}");
}

#[test]
fn defaults_need_no_file() {
    let c = Config::load(None, Vec::new(), &Overrides::default()).unwrap();
    assert_eq!(c.http.listen, "127.0.0.1:8080");
    assert_eq!(c.mqtt.listen, "0.0.0.0:1883");
    assert_eq!(c.data_dir, PathBuf::from("./vigil-data"));
    assert_eq!(c.mqtt.mode, MqttMode::Embedded);
}

#[test]
fn connection_limits_default_to_sane_values_and_are_checked() {
    let c = Config::load(None, Vec::new(), &Overrides::default()).unwrap();
    let h = &c.http;
    // Deadlines a real client never meets (a head arrives in one packet; a browser's idle
    // connection is simply opened again) and an attacker always does, within a minute.
    assert_eq!(
        (
            h.header_timeout_s,
            h.idle_timeout_s,
            h.tls_handshake_timeout_s
        ),
        (10, 30, 10)
    );
    assert!(h.header_timeout_s < h.request_timeout_s);
    assert_eq!((h.max_connections, c.mqtt.max_connections), (1024, 20_000));
    for (var, value, key) in [
        ("VIGIL_HTTP__MAX_CONNECTIONS", "0", "http.max_connections"),
        ("VIGIL_HTTP__HEADER_TIMEOUT_S", "0", "http.header_timeout_s"),
        ("VIGIL_HTTP__IDLE_TIMEOUT_S", "86400", "http.idle_timeout_s"),
        (
            "VIGIL_HTTP__TLS_HANDSHAKE_TIMEOUT_S",
            "0",
            "http.tls_handshake_timeout_s",
        ),
        ("VIGIL_MQTT__MAX_CONNECTIONS", "0", "mqtt.max_connections"),
    ] {
        let e = load("", &[(var, value)]).unwrap_err().to_string();
        assert!(e.contains(key), "{e}");
    }
}

#[test]
fn environment_overrides_the_file_and_flags_override_both() {
    let c = load(
        "[mqtt]\nmax_inflight = 10\n[http]\nlisten = \"127.0.0.1:1\"\n",
        &[
            ("VIGIL_MQTT__MAX_INFLIGHT", "20"),
            ("VIGIL_HTTP__LISTEN", "127.0.0.1:2"),
            ("VIGIL_BOOTSTRAP_TOKEN", "ignored"),
            ("VIGIL_DASHBOARD_DIR", "/srv/dashboard"),
            ("VIGIL_BIN", "/usr/bin/vigil"),
            ("PATH", "/bin"),
        ],
    )
    .unwrap();
    assert_eq!(c.mqtt.max_inflight, 20);
    assert_eq!(c.http.listen, "127.0.0.1:2");

    let flags = Overrides {
        http_listen: Some("127.0.0.1:3".into()),
        ..Overrides::default()
    };
    let c = Config::load(
        None,
        vec![("VIGIL_HTTP__LISTEN".into(), "127.0.0.1:2".into())],
        &flags,
    )
    .unwrap();
    assert_eq!(c.http.listen, "127.0.0.1:3");
}

#[test]
fn errors_name_the_key() {
    let e = load("[mqtt]\nlisten = \"nowhere\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("mqtt.listen"), "{e}");
    let e = load("[mqtt]\nlistn = \"x\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("listn"), "{e}");
    let e = load("", &[("VIGIL_MQTT__MAX_INFLIGHT", "lots")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_inflight"), "{e}");
    let e = load("[log]\nformat = \"xml\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("xml"), "{e}");
}

#[test]
fn a_log_level_must_be_a_level_or_target_level_pairs() {
    for good in [
        "info",
        "WARN",
        "off",
        "vigil=debug,info",
        "vigil::ingest=trace, warn",
    ] {
        let c = load("", &[("VIGIL_LOG__LEVEL", good)]).unwrap();
        assert_eq!(c.log.level, good);
    }
    for bad in [
        "verbose",
        "",
        " , ",
        "vigil=loud",
        "=info",
        "info,debug",
        "vigil",
    ] {
        let e = load("", &[("VIGIL_LOG__LEVEL", bad)])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("config: log.level: "), "{bad:?}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    let e = load("[log]\nlevel = \"verbose\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("log.level") && e.contains("\"verbose\""), "{e}");
    // RUST_LOG wins over log.level, and is held to the same rule.
    let c = load("[log]\nlevel = \"warn\"\n", &[("RUST_LOG", "debug")]).unwrap();
    assert_eq!(c.log.level, "debug");
    let e = load("", &[("RUST_LOG", "verbose")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("RUST_LOG"), "{e}");
}

#[test]
fn counts_names_and_credentials_that_cannot_work_are_refused() {
    let refused = |file: &str, env: &[(&str, &str)], key: &str| {
        let e = load(file, env).unwrap_err().to_string();
        assert!(e.contains(&format!("config: {key}: ")), "{key}: {e}");
    };
    for (var, key) in [
        ("VIGIL_HTTP__MAX_BODY_BYTES", "http.max_body_bytes"),
        ("VIGIL_MQTT__MAX_CONNECTIONS", "mqtt.max_connections"),
        (
            "VIGIL_MQTT__DEVICE_CONNECTS_PER_MINUTE",
            "mqtt.device_connects_per_minute",
        ),
        ("VIGIL_STORE__BATCH_MAX", "store.batch_max"),
        ("VIGIL_STORE__QUEUE_CAPACITY", "store.queue_capacity"),
    ] {
        refused("", &[(var, "0")], key);
    }
    refused("", &[("VIGIL_DATA_DIR", "")], "data_dir");
    let influx =
        "[influxdb]\nurl = \"http://127.0.0.1:8086\"\norg = \"o\"\nbucket = \"b\"\ntoken = \"t\"\n";
    assert!(load(influx, &[]).is_ok());
    refused(
        influx,
        &[("VIGIL_INFLUXDB__BUCKET", " ")],
        "influxdb.bucket",
    );
    refused(
        influx,
        &[("VIGIL_INFLUXDB__TIMEOUT_S", "0")],
        "influxdb.timeout_s",
    );
    refused(
        influx,
        &[("VIGIL_INFLUXDB__FLUSH_INTERVAL_MS", "0")],
        "influxdb.flush_interval_ms",
    );
    let fhir = "[fhir]\nbase_url = \"https://fhir.example.org/r4\"\n";
    refused(
        fhir,
        &[("VIGIL_FHIR__RETRY_MAX_S", "0")],
        "fhir.retry_max_s",
    );
    refused(
        fhir,
        &[("VIGIL_FHIR__GIVE_UP_AFTER_S", "0")],
        "fhir.give_up_after_s",
    );
    refused(fhir, &[("VIGIL_FHIR__TOKEN", "")], "fhir.token");
    let smart = format!(
        "{fhir}token = \"t\"\n[fhir.smart]\ntoken_url = \"https://a.example/token\"\n\
         client_id = \"vigil\"\nkey_file = \"/k.pem\"\nkid = \"k1\"\n"
    );
    refused(&smart, &[], "fhir.token");
    let smart = smart.replace("token = \"t\"\n", "");
    assert!(load(&smart, &[]).is_ok());
    refused(&smart, &[("VIGIL_FHIR__SMART__KID", "")], "fhir.smart.kid");
    for bad in [
        "mrn",
        "urn:",
        "urn:oid:1.2 3",
        "https://x.example/a|b",
        "1urn:x",
    ] {
        refused(
            fhir,
            &[("VIGIL_FHIR__PATIENT_IDENTIFIER_SYSTEM", bad)],
            "fhir.patient_identifier_system",
        );
    }
    refused(
        fhir,
        &[("VIGIL_FHIR__READINGS_BATCH_MAX", "0")],
        "fhir.readings_batch_max",
    );
    refused(
        fhir,
        &[("VIGIL_FHIR__READINGS_PER_S", "0")],
        "fhir.readings_per_s",
    );
}

#[test]
fn the_fhir_matching_keys_have_their_contract_names_and_defaults() {
    let c = load("[fhir]\nbase_url = \"https://fhir.example.org/r4\"\n", &[]).unwrap();
    let f = c.fhir.unwrap();
    assert_eq!(f.patient_identifier_system, "");
    assert!(!f.create_patients && !f.all_readings && f.create_devices);
    assert_eq!((f.readings_batch_max, f.readings_per_s), (100, 50));
    let c = load(
        r#"
        [fhir]
        base_url = "https://fhir.example.org/r4"
        patient_identifier_system = "urn:oid:2.16.840.1.113883.3.0000"
        create_patients = true
        all_readings = true
        create_devices = false
        "#,
        &[("VIGIL_FHIR__READINGS_PER_S", "5")],
    )
    .unwrap();
    let f = c.fhir.unwrap();
    assert_eq!(
        f.patient_identifier_system,
        "urn:oid:2.16.840.1.113883.3.0000"
    );
    assert!(f.create_patients && f.all_readings && !f.create_devices);
    assert_eq!(f.readings_per_s, 5);
}

#[test]
fn nested_sections_take_environment_overrides() {
    let c = load(
        "[mqtt.tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n",
        &[("VIGIL_MQTT__TLS__LISTEN", "127.0.0.1:8884")],
    )
    .unwrap();
    let tls = c.mqtt.tls.unwrap();
    assert_eq!(tls.listen, "127.0.0.1:8884");
    assert_eq!(tls.cert, PathBuf::from("/c.pem"));
    assert!(tls.client_ca.is_none());
    assert!(
        tls.only,
        "with [mqtt.tls], MQTTS only unless said otherwise"
    );
    let both = load(
        "[mqtt.tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n",
        &[("VIGIL_MQTT__TLS__ONLY", "false")],
    )
    .unwrap();
    assert!(!both.mqtt.tls.unwrap().only);
}

#[test]
fn the_contract_sections_are_accepted() {
    let c = load(
        r#"
        [influxdb]
        url = "http://127.0.0.1:8086"
        org = "clinic"
        bucket = "vitals"
        token = "t"
        [fhir]
        base_url = "https://fhir.example.org/r4"
        token = "t"
        [webhook]
        url = "https://crm.example.org/hooks/vigil"
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        "#,
        &[],
    )
    .unwrap();
    assert_eq!(c.influxdb.unwrap().bucket, "vitals");
}

#[test]
fn the_public_url_is_an_origin_and_links_fall_back_to_the_bound_address() {
    for ok in [
        "https://vigil.clinic.example",
        "https://vigil.clinic.example/",
        "http://192.0.2.7:8080",
        "https://[2001:db8::1]:8443",
        "http://localhost",
    ] {
        let c = load(&format!("[http]\npublic_url = \"{ok}\"\n"), &[])
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
        assert_eq!(
            c.http.public_origin("127.0.0.1:1".parse().unwrap()),
            ok.trim_end_matches('/')
        );
    }
    for bad in [
        "vigil.clinic.example",
        "ftp://vigil.clinic.example",
        "https://",
        "https://vigil.clinic.example/vigil",
        "https://vigil.clinic.example?x=1",
        "https://vigil.clinic.example#x",
        "https://user@vigil.clinic.example",
        "https://vigil.clinic.example:0",
        "https://vigil.clinic.example:99999",
        "https://vigil clinic",
        "https://[::1",
    ] {
        let e = load("", &[("VIGIL_HTTP__PUBLIC_URL", bad)])
            .expect_err(bad)
            .to_string();
        assert!(e.contains("http.public_url"), "{bad}: {e}");
    }

    let mut http = HttpConfig::default();
    assert_eq!(
        http.public_origin("127.0.0.1:8080".parse().unwrap()),
        "http://127.0.0.1:8080"
    );
    assert_eq!(
        http.public_origin("0.0.0.0:8080".parse().unwrap()),
        "http://localhost:8080"
    );
    assert_eq!(
        http.public_origin("[::1]:8080".parse().unwrap()),
        "http://[::1]:8080"
    );
    http.tls = Some(HttpTlsConfig {
        cert: "c.pem".into(),
        key: "k.pem".into(),
    });
    assert_eq!(
        http.public_origin("192.0.2.7:443".parse().unwrap()),
        "https://192.0.2.7:443"
    );
}

#[test]
fn email_and_sms_are_off_unless_configured_and_the_contract_sections_are_accepted() {
    let c = load("", &[]).unwrap();
    assert!(c.smtp.is_none() && c.sms.is_none());
    assert!(!c.notify.include_details);
    assert_eq!(c.notify.patient_label, PatientLabel::Initials);
    assert_eq!(c.notify.ack_link_hours, 24);
    let c = load(
        r#"
        [smtp]
        url = "smtp://127.0.0.1:2525"
        from = "Vigil <vigil@clinic.example>"
        [sms]
        url = "https://sms.example/send"
        token = "sms-s3cret"
        [notify]
        include_details = true
        patient_label = "id"
        "#,
        &[
            ("VIGIL_SMTP__PASSWORD", "mail-s3cret"),
            ("VIGIL_SMTP__USERNAME", "vigil"),
        ],
    )
    .unwrap();
    let m = c.smtp.as_ref().unwrap();
    assert_eq!(
        parse_smtp_url(&m.url).unwrap(),
        SmtpEndpoint {
            host: "127.0.0.1".into(),
            port: 2525,
            security: SmtpSecurity::Plain
        }
    );
    assert_eq!(
        (m.timeout_s, m.password.as_deref()),
        (10, Some("mail-s3cret"))
    );
    assert_eq!(c.sms.as_ref().unwrap().token, "sms-s3cret");
    assert!(c.notify.include_details);
    assert_eq!(c.notify.patient_label, PatientLabel::Id);
    let shown = format!("{c:?}");
    assert!(shown.contains("smtp://127.0.0.1:2525"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn bad_email_and_sms_settings_name_the_key() {
    let refused = |file: &str, env: &[(&str, &str)], key: &str| {
        let e = load(file, env).unwrap_err().to_string();
        assert!(e.contains(&format!("config: {key}")), "{key}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    };
    let smtp = "[smtp]\nurl = \"smtp://127.0.0.1:2525\"\nfrom = \"Vigil <vigil@clinic.example>\"\n";
    assert!(load(smtp, &[]).is_ok());
    refused(
        smtp,
        &[("VIGIL_SMTP__URL", "mail.clinic.example")],
        "smtp.url",
    );
    refused(
        smtp,
        &[("VIGIL_SMTP__URL", "imap://mail.clinic.example")],
        "smtp.url",
    );
    refused(
        "[smtp]\nurl = \"smtp://127.0.0.1:2525\"\n",
        &[],
        "smtp.from",
    );
    refused(smtp, &[("VIGIL_SMTP__FROM", "Vigil")], "smtp.from");
    refused(smtp, &[("VIGIL_SMTP__FROM", "vigil@@clinic")], "smtp.from");
    refused(smtp, &[("VIGIL_SMTP__USERNAME", "vigil")], "smtp.password");
    refused(smtp, &[("VIGIL_SMTP__PASSWORD", "pw")], "smtp.username");
    refused(smtp, &[("VIGIL_SMTP__TIMEOUT_S", "0")], "smtp.timeout_s");
    refused(
        smtp,
        &[("VIGIL_SMTP__HELLO_NAME", "my host")],
        "smtp.hello_name",
    );
    refused(smtp, &[("VIGIL_SMTP__FRM", "x")], "smtp.frm");
    // A password crosses the network only inside TLS (to this machine, as it likes).
    let remote = [
        ("VIGIL_SMTP__URL", "smtp://mail.clinic.example"),
        ("VIGIL_SMTP__USERNAME", "vigil"),
        ("VIGIL_SMTP__PASSWORD", "pw"),
    ];
    refused(smtp, &remote, "smtp.url");
    let opportunistic = [
        (
            "VIGIL_SMTP__URL",
            "smtp://mail.clinic.example?starttls=opportunistic",
        ),
        remote[1],
        remote[2],
    ];
    refused(smtp, &opportunistic, "smtp.url");
    for url in [
        "smtps://mail.clinic.example",
        "smtp://mail.clinic.example?starttls=required",
    ] {
        assert!(load(smtp, &[("VIGIL_SMTP__URL", url), remote[1], remote[2]]).is_ok());
    }
    assert!(load(smtp, &remote[1..]).is_ok(), "plain to 127.0.0.1");

    let sms = "[sms]\nurl = \"https://sms.example/send\"\ntoken = \"t\"\n";
    assert!(load(sms, &[]).is_ok());
    assert!(load(sms, &[("VIGIL_SMS__URL", "http://127.0.0.1:9/send")]).is_ok());
    refused(
        sms,
        &[("VIGIL_SMS__URL", "http://sms.example/send")],
        "sms.url",
    );
    refused(
        sms,
        &[("VIGIL_SMS__URL", "ftp://sms.example/send")],
        "sms.url",
    );
    refused(
        sms,
        &[("VIGIL_SMS__URL", "https://u:p@sms.example/send")],
        "sms.url",
    );
    refused(sms, &[("VIGIL_SMS__TOKEN", " ")], "sms.token");
    refused(sms, &[("VIGIL_SMS__TIMEOUT_S", "0")], "sms.timeout_s");
    refused("[sms]\nurl = \"https://sms.example/send\"\n", &[], "sms");
    refused(
        "",
        &[("VIGIL_NOTIFY__PATIENT_LABEL", "name")],
        "notify.patient_label",
    );
    for hours in ["0", "169"] {
        refused(
            "",
            &[("VIGIL_NOTIFY__ACK_LINK_HOURS", hours)],
            "notify.ack_link_hours",
        );
    }
}

#[test]
fn every_key_is_in_the_readme_reference() {
    let readme = include_str!("../../README.md");
    let value = toml::Value::try_from(Config::default()).unwrap();
    let mut missing = Vec::new();
    let toml::Value::Table(t) = value else {
        unreachable!()
    };
    for (k, v) in t {
        match v {
            toml::Value::Table(inner) => {
                for key in inner.keys() {
                    let full = format!("{k}.{key}");
                    if !readme.contains(&format!("`{full}`")) {
                        missing.push(full);
                    }
                }
            }
            _ => {
                if !readme.contains(&format!("`{k}`")) {
                    missing.push(k);
                }
            }
        }
    }
    assert!(missing.is_empty(), "README lacks {missing:?}");
}
