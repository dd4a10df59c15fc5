//! The state every handler gets: the registry, the store, the live feed, the settings the
//! handlers need.

use std::sync::Arc;
use std::time::Duration;

use super::bootstrap::BootstrapToken;
use super::live_hub::LiveHub;
use super::login_throttle::LoginThrottle;
use super::panel_cache::PanelCache;
use crate::registry::Registry;
use crate::store::Store;
use crate::telemetry::Metrics;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    pub store: Store,
    pub metrics: Metrics,
    pub bootstrap: Option<Arc<BootstrapToken>>,
    pub crm: crate::crm::Crm,
    /// Latest values and sparklines for the panel.
    pub panel: PanelCache,
    /// The live feed's fan-out.
    pub live: LiveHub,
    /// Failed sign-ins.
    pub throttle: Arc<LoginThrottle>,
    /// How long a dashboard session lasts.
    pub session_lifetime: Duration,
    /// Whether cookies get `Secure` (the dashboard is served over TLS).
    pub secure_cookies: bool,
    /// Signs and checks video visits' join links.
    pub visit_key: Arc<crate::video::token::TokenKey>,
    /// How long a visit's join links work.
    pub visit_link_ttl: Duration,
    /// Signs and checks notifications' acknowledgement links (`notify::ack`).
    pub ack_key: Arc<crate::notify::ack::AckKey>,
    /// The origin join links point at (`http.public_url`, or derived from the listener); never
    /// a request's `Host`, which a client chooses.
    pub public_url: Arc<str>,
    /// Where the other instances reach this one (`http.internal_url`, or derived from the
    /// listener): recorded as the host of the visits whose call is here.
    pub internal_url: Option<Arc<str>>,
    /// How to reach the other instances at `https://` internal URLs.
    pub relay_tls: Option<Arc<super::relay_tls::RelayTls>>,
    /// The video relay's calls.
    pub rooms: Arc<crate::video::relay::Rooms>,
    /// The `[video]` settings (ICE servers for the browsers).
    pub video: Arc<crate::config::VideoConfig>,
    /// How devices reach Vigil (told to the admin who provisions one).
    pub device_access: Arc<crate::ingest::access::DeviceAccess>,
    /// The zone patients' days are counted in unless their record names one
    /// (`clinic.timezone`).
    pub clinic_zone: Arc<crate::domain::zone::Zone>,
    /// The units the clinic reads glucose and temperature in (`clinic.glucose_unit`,
    /// `clinic.temperature_unit`), sent with the session for the dashboard.
    pub units: crate::domain::DisplayUnits,
    /// Which patients each user was last shown by the panel, the alert list and the live
    /// feed, so that their audit lines name the patients without a line per poll.
    pub seen: Arc<super::seen::SeenLedger>,
}
