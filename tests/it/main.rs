//! End-to-end tests: the real gateway (in-process on port 0, or the `vigil` binary when a test
//! must kill it) against real MQTT clients nobody here wrote — Mosquitto's `mosquitto_pub` and
//! Eclipse Paho for Python — and a plain HTTP client.

mod support;

mod alert_partitions;
mod alerts;
mod api;
mod backup;
mod billing;
mod care_teams;
mod cli;
mod clinician_browser;
mod cluster;
mod cluster_broker;
mod cluster_lb;
mod cluster_visits;
mod conns;
mod crash;
mod dashboard;
mod db_migrate;
mod deploy;
mod device_access;
mod enrollment;
mod external;
mod faults;
mod fhir;
mod fhir_chart;
mod fhir_ehr;
mod fhir_server;
mod inbox;
mod influx;
mod ingest;
mod logs;
mod mqtt_rules;
mod news2;
mod notify_channels;
mod notify_escalation;
mod oncall;
mod oncall_browser;
mod postgres;
mod programme_browser;
mod records;
mod records_browser;
mod registry_conformance;
mod registry_db;
mod registry_postgres;
mod reports;
mod reports_browser;
mod sign_in_flood;
mod sim_backfill;
mod store_conformance;
mod tls;
mod visit_browser;
mod visits;
mod web;
mod worklist;
