//! SMART Backend Services (SMART App Launch 2.x): how Vigil, a system without a user, gets an
//! access token for the FHIR server.
//!
//! Vigil is registered with the server's authorization service as a confidential client with an
//! EC P-384 key (its public half, as a JWK from [`SmartClient::public_jwk`], goes into the
//! registration). For a token it signs a short-lived client assertion (a JWT, ES384: `iss` =
//! `sub` = client id, `aud` = token URL, `exp` at most five minutes ahead, a random `jti`) and
//! posts it with `grant_type=client_credentials`. The token is cached until 30 s before it
//! expires.
//!
//! The assertion is built from the time passed in ([`SmartClient::assertion`] is pure apart from
//! the random `jti`), so it is testable without a clock. Neither the key nor a token is ever
//! logged or shown by `Debug`.

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;
use serde::Deserialize;
use serde_json::{Value, json};

/// How long a client assertion is valid: SMART allows at most five minutes.
const ASSERTION_LIFETIME_S: i64 = 300;
/// A cached token is replaced this long before it expires.
const REFRESH_MARGIN_S: i64 = 30;
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Bytes of one P-384 coordinate.
const COORDINATE_LEN: usize = 48;

/// Why no assertion or no access token could be had.
#[derive(Debug, thiserror::Error)]
pub enum SmartError {
    #[error(
        "the SMART private key is not a usable EC P-384 key (give an unencrypted PKCS#8 \
         \"PRIVATE KEY\" or SEC1 \"EC PRIVATE KEY\" PEM): {0}"
    )]
    Key(String),
    #[error("could not sign the SMART client assertion: {0}")]
    Sign(&'static str),
    #[error("SMART token request to {url} failed: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("SMART token endpoint {url} refused the request with HTTP {status}: {error}")]
    Refused {
        url: String,
        status: u16,
        /// The server's `error` and `error_description`, or the start of its answer.
        error: String,
    },
    #[error("SMART token endpoint {url} answered with no usable bearer token: {reason}")]
    BadAnswer { url: String, reason: String },
}

/// A token and when to replace it.
struct Cached {
    token: String,
    refresh_at_s: i64,
}

/// A SMART Backend Services client: its registration, its signing key and the current token.
pub struct SmartClient {
    token_url: String,
    client_id: String,
    scope: String,
    kid: String,
    key: EcdsaKeyPair,
    /// Held across the token request, so concurrent callers share one request.
    cached: tokio::sync::Mutex<Option<Cached>>,
}

impl fmt::Debug for SmartClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmartClient")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The fields of a token answer Vigil uses (RFC 6749 §5.1 and §5.2).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<i64>,
    error: Option<String>,
    error_description: Option<String>,
}

impl SmartClient {
    /// A client for `token_url` registered as `client_id`, asking for `scope` (e.g.
    /// `system/Observation.c system/Flag.cu system/Communication.c`), signing with the EC P-384
    /// private key in `pem` published under key id `kid`.
    pub fn from_pem(
        token_url: String,
        client_id: String,
        scope: String,
        kid: String,
        pem: &[u8],
    ) -> Result<SmartClient, SmartError> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| SmartError::Key(e.to_string()))?;
        let key = match &der {
            PrivateKeyDer::Pkcs8(d) => {
                EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, d.secret_pkcs8_der())
            }
            PrivateKeyDer::Sec1(d) => EcdsaKeyPair::from_private_key_der(
                &ECDSA_P384_SHA384_FIXED_SIGNING,
                d.secret_sec1_der(),
            ),
            _ => return Err(SmartError::Key("the PEM holds an RSA key".into())),
        }
        .map_err(|e| SmartError::Key(e.to_string()))?;
        Ok(SmartClient {
            token_url,
            client_id,
            scope,
            kid,
            key,
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// The public key as a JWK (`kty` EC, `crv` P-384, `alg` ES384, `kid`), for the client's
    /// registration or a JWKS document.
    pub fn public_jwk(&self) -> Value {
        // Uncompressed SEC1 point: 0x04 || x || y.
        let point = self.key.public_key().as_ref();
        let (x, y) = point[1..].split_at(COORDINATE_LEN);
        json!({
            "kty": "EC",
            "crv": "P-384",
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
            "kid": self.kid,
            "alg": "ES384",
            "use": "sig",
        })
    }

    /// The signed client assertion (a compact JWS), valid from `now_s` (Unix seconds) for five
    /// minutes.
    pub fn assertion(&self, now_s: i64) -> Result<String, SmartError> {
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).map_err(|_| SmartError::Sign("no randomness for the jti"))?;
        let header = json!({"alg": "ES384", "typ": "JWT", "kid": self.kid});
        let claims = json!({
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "iat": now_s,
            "exp": now_s + ASSERTION_LIFETIME_S,
            "jti": hex::encode(jti),
        });
        let mut jws = String::with_capacity(512);
        jws.push_str(&URL_SAFE_NO_PAD.encode(header.to_string()));
        jws.push('.');
        jws.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = self
            .key
            .sign(&SystemRandom::new(), jws.as_bytes())
            .map_err(|_| SmartError::Sign("ES384 signing failed"))?;
        jws.push('.');
        jws.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
        Ok(jws)
    }

    /// A bearer token for the FHIR server: the cached one while it has more than 30 s left at
    /// `now_s`, else a new one from the token endpoint. Concurrent callers wait for one request,
    /// so give `http` a timeout.
    pub async fn access_token(
        &self,
        http: &reqwest::Client,
        now_s: i64,
    ) -> Result<String, SmartError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| now_s < c.refresh_at_s) {
            return Ok(c.token.clone());
        }
        let (token, expires_in) = self.request_token(http, now_s).await?;
        tracing::debug!(
            token_url = %self.token_url,
            expires_in_s = expires_in,
            "smart access token obtained"
        );
        *cached = Some(Cached {
            token: token.clone(),
            refresh_at_s: now_s + expires_in - REFRESH_MARGIN_S,
        });
        Ok(token)
    }

    /// Drops the cached token (after the FHIR server refused it with 401).
    pub async fn forget_token(&self) {
        *self.cached.lock().await = None;
    }

    /// Asks the token endpoint; returns the token and its lifetime in seconds (0 if unstated,
    /// so it is not reused).
    async fn request_token(
        &self,
        http: &reqwest::Client,
        now_s: i64,
    ) -> Result<(String, i64), SmartError> {
        let assertion = self.assertion(now_s)?;
        let form = [
            ("grant_type", "client_credentials"),
            ("scope", self.scope.as_str()),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion.as_str()),
        ];
        let request_failed = |source| SmartError::Request {
            url: self.token_url.clone(),
            source,
        };
        let resp = http
            .post(&self.token_url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(request_failed)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(request_failed)?;
        let answer: Option<TokenAnswer> = serde_json::from_slice(&body).ok();

        if !status.is_success() {
            let error = match answer {
                Some(TokenAnswer {
                    error: Some(e),
                    error_description,
                    ..
                }) => match error_description {
                    Some(d) => format!("{e} ({d})"),
                    None => e,
                },
                _ => excerpt(&body),
            };
            return Err(SmartError::Refused {
                url: self.token_url.clone(),
                status: status.as_u16(),
                error,
            });
        }
        let bad = |reason: &str| SmartError::BadAnswer {
            url: self.token_url.clone(),
            reason: reason.to_owned(),
        };
        let answer = answer.ok_or_else(|| bad("the answer is not a JSON token response"))?;
        let token = answer
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("no access_token"))?;
        if !answer
            .token_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
        {
            return Err(bad("token_type is not bearer"));
        }
        Ok((token, answer.expires_in.unwrap_or(0).max(0)))
    }
}

/// The start of a non-JSON answer, on one line, for an error message.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None if line.is_empty() => "(empty answer)".into(),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED, UnparsedPublicKey};

    use super::*;

    fn test_client() -> SmartClient {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pem = pem("PRIVATE KEY", pkcs8.as_ref());
        SmartClient::from_pem(
            "https://auth.example.org/token".into(),
            "vigil-backend".into(),
            "system/Observation.c".into(),
            "key-1".into(),
            pem.as_bytes(),
        )
        .unwrap()
    }

    fn pem(label: &str, der: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let mut s = format!("-----BEGIN {label}-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            s.push_str(std::str::from_utf8(chunk).unwrap());
            s.push('\n');
        }
        s.push_str(&format!("-----END {label}-----\n"));
        s
    }

    fn part(jwt: &str, i: usize) -> Value {
        let seg = jwt.split('.').nth(i).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(seg).unwrap()).unwrap()
    }

    #[test]
    fn the_assertion_is_an_es384_jwt_with_the_smart_claims() {
        let client = test_client();
        let jwt = client.assertion(1_800_000_000).unwrap();
        assert_eq!(jwt.split('.').count(), 3);
        assert_eq!(
            part(&jwt, 0),
            json!({"alg": "ES384", "typ": "JWT", "kid": "key-1"})
        );
        let claims = part(&jwt, 1);
        assert_eq!(claims["iss"], "vigil-backend");
        assert_eq!(claims["sub"], "vigil-backend");
        assert_eq!(claims["aud"], "https://auth.example.org/token");
        assert_eq!(claims["exp"], 1_800_000_300);
        assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
        let other = part(&client.assertion(1_800_000_000).unwrap(), 1);
        assert_ne!(claims["jti"], other["jti"], "a fresh jti every time");

        let (signed, sig) = jwt.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        assert_eq!(sig.len(), 2 * COORDINATE_LEN, "raw r || s");
        let public = UnparsedPublicKey::new(
            &ECDSA_P384_SHA384_FIXED,
            client.key.public_key().as_ref().to_vec(),
        );
        public.verify(signed.as_bytes(), &sig).unwrap();
        assert!(public.verify(b"tampered", &sig).is_err());
    }

    #[test]
    fn the_public_jwk_holds_the_signing_key() {
        let client = test_client();
        let jwk = client.public_jwk();
        assert_eq!(jwk["crv"], "P-384");
        assert_eq!(jwk["kid"], "key-1");
        let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
        let y = URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap();
        let point = [&[4u8][..], &x, &y].concat();
        assert_eq!(point, client.key.public_key().as_ref());
    }

    #[test]
    fn refuses_keys_it_cannot_sign_with() {
        let p256 = EcdsaKeyPair::generate_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .unwrap();
        for pem in [
            pem("PRIVATE KEY", p256.as_ref()),
            "not a pem".to_owned(),
            pem("PRIVATE KEY", b"garbage"),
        ] {
            let err = SmartClient::from_pem(
                "u".into(),
                "c".into(),
                "s".into(),
                "k".into(),
                pem.as_bytes(),
            )
            .unwrap_err();
            assert!(err.to_string().contains("P-384"), "{err}");
        }
    }

    #[test]
    fn debug_shows_no_key_material() {
        let shown = format!("{:?}", test_client());
        assert!(shown.contains("vigil-backend"), "{shown}");
        assert!(!shown.contains("key:"), "{shown}");
    }

    #[test]
    fn an_error_answer_is_quoted_briefly() {
        assert_eq!(excerpt(b""), "(empty answer)");
        assert_eq!(
            excerpt(b"<html>\n  Bad\n gateway</html>"),
            "<html> Bad gateway</html>"
        );
        assert!(excerpt(&[b'x'; 500]).chars().count() <= 201);
    }
}
