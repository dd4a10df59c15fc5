//! The process's file-descriptor budget. Every connection holds a descriptor, so the listeners'
//! caps (`http.max_connections`, `mqtt.max_connections`) protect Vigil only if together they fit
//! its descriptor limit with room left for everything else: the databases (each concurrent reader
//! opens its own files), the outward clients (FHIR, webhooks, InfluxDB, an external broker), the
//! video relay's UDP sockets, the listeners and the log.
//!
//! At start Vigil raises its soft `RLIMIT_NOFILE` to the hard limit (shells and services often
//! start with a soft limit of 1,024 under a far higher hard one), then [`fit`]s the caps into it:
//! when `http.max_connections` + `mqtt.max_connections` + [`RESERVE`] exceed the limit, both are
//! lowered, each to at least half of what is left unless it asked for less, and the caller logs
//! one warning naming the keys. A limit too small for even [`MIN_CAP`] each is an error.

/// Descriptors kept for everything but the listeners' connections. Vigil idles at about 25.
pub const RESERVE: u64 = 256;
/// The least a listener's cap is lowered to; a limit that cannot give both this is refused.
pub const MIN_CAP: usize = 16;

/// The listeners' connection caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// `http.max_connections`.
    pub http: usize,
    /// `mqtt.max_connections` of the embedded endpoint (0 with an external broker).
    pub mqtt: usize,
}

/// Why the caps cannot fit.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error(
        "the file-descriptor limit ({limit}) is too low: Vigil needs at least {needed} \
         (raise it with `ulimit -n`, systemd's LimitNOFILE= or docker's --ulimit nofile=)"
    )]
    TooLow { limit: u64, needed: u64 },
}

/// The caps that fit `limit` descriptors: `wanted` when it fits; otherwise each listener gets
/// what it asked for or at least half of the room, whichever is less, and the other the rest.
pub fn fit(limit: u64, wanted: Caps) -> Result<Caps, BudgetError> {
    let least = |c: usize| c.min(MIN_CAP) as u64;
    let needed = RESERVE + least(wanted.http) + least(wanted.mqtt);
    if limit < needed {
        return Err(BudgetError::TooLow { limit, needed });
    }
    let room = usize::try_from(limit - RESERVE).unwrap_or(usize::MAX);
    if wanted.http.saturating_add(wanted.mqtt) <= room {
        return Ok(wanted);
    }
    let http = wanted
        .http
        .min((room / 2).max(room.saturating_sub(wanted.mqtt)));
    Ok(Caps {
        http,
        mqtt: wanted.mqtt.min(room - http),
    })
}

/// Raises the soft descriptor limit to the hard one; returns the limit in effect, or `None` when
/// it cannot be read or is unlimited.
pub fn raise_soft_limit() -> Option<u64> {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    // An unlimited hard limit: the kernel still stops at fs.nr_open.
    let target = if hard == RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(soft)
    } else {
        hard
    };
    if target > soft && setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok() {
        tracing::debug!(from = soft, to = target, "file-descriptor limit raised");
        return Some(target);
    }
    (soft != RLIM_INFINITY).then_some(soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Caps = Caps {
        http: 1024,
        mqtt: 20_000,
    };

    #[test]
    fn caps_that_fit_are_kept() {
        assert_eq!(fit(1 << 20, DEFAULTS).unwrap(), DEFAULTS);
        let exact = 1024 + 20_000 + RESERVE;
        assert_eq!(fit(exact, DEFAULTS).unwrap(), DEFAULTS);
    }

    #[test]
    fn caps_that_do_not_fit_share_the_room_without_starving_either() {
        // A 1,024 limit: 768 left, half each.
        assert_eq!(
            fit(1024, DEFAULTS).unwrap(),
            Caps {
                http: 384,
                mqtt: 384
            }
        );
        // A 20,000 limit: HTTP keeps its 1,024, MQTT takes the rest.
        assert_eq!(
            fit(20_000, DEFAULTS).unwrap(),
            Caps {
                http: 1024,
                mqtt: 20_000 - RESERVE as usize - 1024
            }
        );
        // One listener asking for little leaves the rest to the other.
        let small_http = Caps {
            http: 50,
            mqtt: 20_000,
        };
        assert_eq!(
            fit(1024, small_http).unwrap(),
            Caps {
                http: 50,
                mqtt: 718
            }
        );
        // External broker: no MQTT endpoint, HTTP takes the room.
        let external = Caps {
            http: 4096,
            mqtt: 0,
        };
        assert_eq!(fit(1024, external).unwrap(), Caps { http: 768, mqtt: 0 });
        for limit in [RESERVE + 32, 300, 1024, 4096, 20_000] {
            let c = fit(limit, DEFAULTS).unwrap();
            assert!(
                c.http + c.mqtt + RESERVE as usize <= limit as usize,
                "{limit}: {c:?}"
            );
            assert!(c.http >= MIN_CAP && c.mqtt >= MIN_CAP, "{limit}: {c:?}");
        }
    }

    #[test]
    fn a_limit_too_low_for_anything_is_refused_with_the_figures() {
        let e = fit(200, DEFAULTS).unwrap_err().to_string();
        assert!(e.contains("(200)") && e.contains("288"), "{e}");
    }
}
