//! Bearer-token authentication of `/products` routes (`docs/reference.md` §3.3).
//!
//! [`Authenticator`] is built once from the settings; [`Claims`] is an extractor, so a
//! handler that takes one cannot run without a valid token.
//!
//! `exp` and `nbf` are checked with a clock-skew leeway (`PINV_JWT_LEEWAY_SECONDS`, 60 s
//! by default): a token is still accepted that many seconds after it expired, and already
//! that many seconds before it becomes valid.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};

use crate::api::error::{ApiError, ErrorCode};
use crate::config::{JwtKey, JwtSettings, PublicKeyAlgorithm};
use crate::core::Source;

/// The claim value that allows every source.
pub const ANY_SOURCE: &str = "*";

/// Why token validation could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// No key is configured.
    #[error("no JWT key configured: set PINV_JWT_SECRET (HS256) or PINV_JWT_PUBLIC_KEY_FILE with PINV_JWT_ALGORITHM (RS256/ES256), or run `pinv serve --dev`")]
    NoKey,
    /// The public key file cannot be read.
    #[error("PINV_JWT_PUBLIC_KEY_FILE: cannot read {path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The public key file is not a PEM key of the configured kind.
    #[error("PINV_JWT_PUBLIC_KEY_FILE: {path} is not a PEM {algorithm} public key: {reason}")]
    BadKey {
        /// The file.
        path: String,
        /// The configured algorithm.
        algorithm: &'static str,
        /// What the parser said.
        reason: String,
    },
}

/// Verifies bearer tokens with the configured key and algorithm only.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
    /// Tokens whose signature and claims were already checked, with their claims: a source
    /// sends the same token with every request until it expires, and decoding and checking
    /// it again cost about 2% of a POST. Only good tokens enter, so bad ones cannot crowd
    /// them out; `exp` and `nbf` are still checked on every use.
    verified: quick_cache::sync::Cache<String, Claims>,
}

/// Distinct good tokens remembered (a few hundred bytes each).
const VERIFIED_TOKENS: usize = 1024;

/// A longer token is verified on every request instead: the cache stays under 4 MiB of
/// tokens whatever a key holder signs.
const REMEMBERED_TOKEN_MAX_BYTES: usize = 4096;

impl Authenticator {
    /// Reads the key (the PEM file for RS256/ES256) and fixes the validation rules.
    pub fn from_settings(jwt: &JwtSettings) -> Result<Self, AuthConfigError> {
        let (key, algorithm) = match jwt.key.as_ref().ok_or(AuthConfigError::NoKey)? {
            JwtKey::Hs256 { secret } => (
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            ),
            JwtKey::PublicKey { algorithm, file } => {
                let path = file.display().to_string();
                let pem = std::fs::read(file).map_err(|e| AuthConfigError::KeyFile {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let (parsed, alg, name) = match algorithm {
                    PublicKeyAlgorithm::Rs256 => {
                        (DecodingKey::from_rsa_pem(&pem), Algorithm::RS256, "RS256")
                    }
                    PublicKeyAlgorithm::Es256 => {
                        (DecodingKey::from_ec_pem(&pem), Algorithm::ES256, "ES256")
                    }
                };
                let key = parsed.map_err(|e| AuthConfigError::BadKey {
                    path,
                    algorithm: name,
                    reason: e.to_string(),
                })?;
                (key, alg)
            }
        };
        // Exactly one algorithm: a token cannot choose a weaker one (or `none`).
        let mut validation = Validation::new(algorithm);
        validation.leeway = jwt.leeway_seconds;
        // `exp` and `nbf` are checked in `verify`, on whole seconds (see `Claims`).
        let mut required = vec![];
        validation.validate_exp = false;
        validation.validate_nbf = false;
        if let Some(iss) = &jwt.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &jwt.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            // Without a configured audience a token's `aud` means nothing to us.
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(Self {
            key,
            validation,
            verified: quick_cache::sync::Cache::new(VERIFIED_TOKENS),
        })
    }

    /// Checks a token and returns its claims; the error is the `401` to answer.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        self.verify_at(token, jsonwebtoken::get_current_timestamp())
    }

    /// [`Self::verify`] at time `now` (seconds since the epoch).
    fn verify_at(&self, token: &str, now: u64) -> Result<Claims, ApiError> {
        let claims = match self.verified.get(token) {
            Some(claims) => claims,
            None => {
                let claims = self.decode(token)?;
                if token.len() <= REMEMBERED_TOKEN_MAX_BYTES {
                    self.verified.insert(token.to_owned(), claims.clone());
                }
                claims
            }
        };
        let leeway = self.validation.leeway;
        match (claims.exp, claims.nbf) {
            (None, _) => Err(ApiError::unauthorized(describe(
                &ErrorKind::MissingRequiredClaim("exp".into()),
            ))),
            (Some(exp), _) if exp.saturating_add(leeway) < now => Err(ApiError::unauthorized(
                describe(&ErrorKind::ExpiredSignature),
            )),
            (_, Some(nbf)) if nbf > now.saturating_add(leeway) => Err(ApiError::unauthorized(
                describe(&ErrorKind::ImmatureSignature),
            )),
            _ => Ok(claims),
        }
    }

    /// The token's claims once its signature, algorithm, issuer and audience are checked
    /// (not its times, which change their verdict as the clock moves).
    fn decode(&self, token: &str) -> Result<Claims, ApiError> {
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| {
                // `none` is not an algorithm jsonwebtoken knows, so it fails reading the
                // header as if the token were garbled; say what really happened.
                if declares_alg_none(token) {
                    ApiError::unauthorized(
                        "the token is unsigned (alg none), which is never accepted",
                    )
                } else {
                    ApiError::unauthorized(describe(e.kind()))
                }
            })
    }
}

/// Whether the token's header says `"alg": "none"` (in any case).
fn declares_alg_none(token: &str) -> bool {
    let Some(header) = token.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
        .and_then(|h| {
            h.get("alg")?
                .as_str()
                .map(|a| a.eq_ignore_ascii_case("none"))
        })
        .unwrap_or(false)
}

fn describe(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
        ErrorKind::InvalidSignature => "the token signature is invalid",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "the token is not signed with the accepted algorithm"
        }
        ErrorKind::InvalidIssuer => "the token issuer is not accepted",
        ErrorKind::InvalidAudience => "the token audience is not accepted",
        ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
        ErrorKind::InvalidClaimFormat(_) | ErrorKind::Json(_) => "the token claims are invalid",
        _ => "the token is malformed",
    }
}

/// The claims PINV reads from a token.
///
/// Times are RFC 7519 NumericDates, which may have a fractional part; the whole seconds
/// are kept, and [`Authenticator::verify`] checks `exp` and `nbf` on them itself
/// (jsonwebtoken's own check does not read fractional times once serde_json keeps numbers
/// exactly, `arbitrary_precision`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The sources the token may write for; `*` is every source.
    pub sources: Vec<String>,
    /// Expiry (seconds since the epoch); required: a token without it is refused.
    #[serde(
        default,
        deserialize_with = "optional_numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub exp: Option<u64>,
    /// Issued at.
    #[serde(
        default,
        deserialize_with = "optional_numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub iat: Option<u64>,
    /// Not before.
    #[serde(
        default,
        deserialize_with = "optional_numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub nbf: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// `"pinv_admin": true` allows the admin routes (`/admin/...`); absent means false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinv_admin: bool,
}

/// The `aud` claim: one audience, or several (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "pinv"`.
    One(String),
    /// `"aud": ["pinv", "other"]`.
    Many(Vec<String>),
}

fn whole_seconds<E: serde::de::Error>(n: &serde_json::Number) -> Result<u64, E> {
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
                .map(|f| f as u64)
        })
        .ok_or_else(|| E::custom(format!("{n} is not a NumericDate")))
}

fn optional_numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<serde_json::Number>::deserialize(d)?
        .map(|n| whole_seconds(&n))
        .transpose()
}

impl Claims {
    /// Whether the token may write for `source`.
    pub fn may_write(&self, source: &Source) -> bool {
        self.sources
            .iter()
            .any(|s| s == ANY_SOURCE || s == source.as_str())
    }
}

/// Mints an HS256 token (`pinv token`, `serve --dev`, tests).
pub fn mint_hs256(
    secret: &str,
    sources: &[String],
    ttl_seconds: u64,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Result<String, jsonwebtoken::errors::Error> {
    mint_hs256_with(secret, sources, ttl_seconds, issuer, audience, false)
}

/// Mints an HS256 token, with the admin claim when `admin` (`pinv token --admin`,
/// `pinv remerge` beside a server).
pub fn mint_hs256_with(
    secret: &str,
    sources: &[String],
    ttl_seconds: u64,
    issuer: Option<&str>,
    audience: Option<&str>,
    admin: bool,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sources: sources.to_vec(),
        exp: Some(now + ttl_seconds),
        iat: Some(now),
        nbf: None,
        iss: issuer.map(str::to_owned),
        aud: audience.map(|a| Audience::One(a.to_owned())),
        pinv_admin: admin,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

fn bearer_token(req: &HttpRequest) -> Result<&str, ApiError> {
    let mut values = req.headers().get_all(header::AUTHORIZATION);
    let value = values
        .next()
        .ok_or_else(|| ApiError::unauthorized("missing Authorization header"))?;
    // Two credentials are ambiguous: a proxy and the server could each read another one.
    if values.next().is_some() {
        return Err(ApiError::unauthorized("more than one Authorization header"));
    }
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthorized("Authorization must be 'Bearer <token>'"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::unauthorized(
            "Authorization must be 'Bearer <token>'",
        ));
    }
    Ok(token.trim())
}

impl FromRequest for Claims {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = match req.app_data::<web::Data<Authenticator>>() {
            Some(auth) => bearer_token(req).and_then(|t| auth.verify(t)),
            None => {
                tracing::error!("no Authenticator registered: every token is refused");
                Err(ApiError::unauthorized("authentication is not configured"))
            }
        };
        ready(result)
    }
}

/// The claims of a token that carries `"pinv_admin": true`: a handler that takes one
/// cannot run for anybody else (`401` without a valid token, `403 ADMIN_REQUIRED` with a
/// token that lacks the claim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin(pub Claims);

impl Admin {
    /// Checks the admin claim of already verified claims.
    pub fn check(claims: Claims) -> Result<Self, ApiError> {
        if claims.pinv_admin {
            Ok(Self(claims))
        } else {
            Err(ApiError::new(
                ErrorCode::AdminRequired,
                "this route needs a token with the claim \"pinv_admin\": true (`pinv token --admin`)",
            ))
        }
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let claims = Claims::from_request(req, payload).into_inner();
        ready(claims.and_then(Self::check))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "test-secret-test-secret-test-secret!";

    fn hs(issuer: Option<&str>, audience: Option<&str>) -> Authenticator {
        Authenticator::from_settings(&JwtSettings {
            key: Some(JwtKey::Hs256 {
                secret: SECRET.into(),
            }),
            issuer: issuer.map(Into::into),
            audience: audience.map(Into::into),
            ..Default::default()
        })
        .unwrap()
    }

    fn hs_json(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn audience_array_containing_the_configured_one_is_accepted() {
        let auth = hs(None, Some("pinv"));
        let t = hs_json(serde_json::json!({"sources": ["*"], "exp": now() + 60,
            "aud": ["other", "pinv"]}));
        let c = auth.verify(&t).unwrap();
        assert_eq!(
            c.aud,
            Some(Audience::Many(vec!["other".into(), "pinv".into()]))
        );
        let t = hs_json(serde_json::json!({"sources": ["*"], "exp": now() + 60,
            "aud": ["other", "another"]}));
        let e = auth.verify(&t).unwrap_err();
        assert!(e.message.contains("audience"), "{}", e.message);
    }

    #[test]
    fn fractional_numeric_dates_are_accepted() {
        let t = hs_json(serde_json::json!({"sources": ["*"],
            "exp": now() as f64 + 3600.5, "nbf": now() as f64 - 10.25, "iat": now() as f64 - 10.75}));
        let c = hs(None, None).verify(&t).unwrap();
        assert_eq!(c.exp, Some(now() + 3600));
        assert!(c.nbf.is_some() && c.iat.is_some());
        let expired = hs_json(serde_json::json!({"sources": ["*"], "exp": 1.5}));
        assert!(hs(None, None).verify(&expired).is_err());
    }

    #[test]
    fn a_remembered_token_is_still_refused_once_it_expires() {
        let auth = hs(None, None);
        let exp = now() + 3600;
        let t = hs_json(serde_json::json!({"sources": ["billing"], "exp": exp, "nbf": now()}));
        let first = auth.verify_at(&t, now()).unwrap();
        assert_eq!(auth.verified.len(), 1, "a good token is remembered");
        assert_eq!(auth.verify_at(&t, now()).unwrap(), first);
        // 60 s of leeway by default.
        assert!(auth.verify_at(&t, exp + 60).is_ok());
        let e = auth.verify_at(&t, exp + 61).unwrap_err();
        assert!(e.message.contains("expired"), "{}", e.message);
        let e = auth.verify_at(&t, now() - 61).unwrap_err();
        assert!(e.message.contains("not valid yet"), "{}", e.message);
    }

    #[test]
    fn a_bad_token_is_not_remembered() {
        let auth = hs(None, None);
        let good = hs_json(serde_json::json!({"sources": ["*"], "exp": now() + 60}));
        auth.verify(&good).unwrap();
        // The same claims signed with another key, and the good token with a changed payload.
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sources": ["*"], "exp": now() + 60}),
            &EncodingKey::from_secret(b"another-secret-another-secret-another"),
        )
        .unwrap();
        let mut parts: Vec<&str> = good.split('.').collect();
        let other_payload = hs_json(serde_json::json!({"sources": ["*"], "exp": now() + 61}));
        parts[1] = other_payload.split('.').nth(1).unwrap();
        let tampered = parts.join(".");
        for bad in [forged, tampered] {
            for _ in 0..2 {
                let e = auth.verify(&bad).unwrap_err();
                assert!(e.message.contains("signature"), "{}", e.message);
            }
        }
        assert_eq!(auth.verified.len(), 1, "only the good token is remembered");
    }

    #[test]
    fn a_very_long_token_is_verified_but_not_remembered() {
        let auth = hs(None, None);
        let padding = "x".repeat(REMEMBERED_TOKEN_MAX_BYTES);
        let long = hs_json(serde_json::json!({"sources": ["*"], "exp": now() + 60,
            "padding": padding}));
        assert!(long.len() > REMEMBERED_TOKEN_MAX_BYTES);
        auth.verify(&long).unwrap();
        assert_eq!(auth.verified.len(), 0);
    }

    #[test]
    fn alg_none_is_refused_saying_so() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        for alg in ["none", "None"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            let payload =
                URL_SAFE_NO_PAD.encode(format!(r#"{{"sources":["*"],"exp":{}}}"#, now() + 60));
            let e = hs(None, None)
                .verify(&format!("{header}.{payload}."))
                .unwrap_err();
            assert!(e.message.contains("alg none"), "{}", e.message);
        }
        // A garbled token is not mistaken for one.
        let e = hs(None, None).verify("x.y.z").unwrap_err();
        assert!(!e.message.contains("alg none"), "{}", e.message);
    }

    #[test]
    fn leeway_is_configurable() {
        let t = hs_json(serde_json::json!({"sources": ["*"], "exp": now() - 30}));
        let with = |leeway_seconds| {
            Authenticator::from_settings(&JwtSettings {
                key: Some(JwtKey::Hs256 {
                    secret: SECRET.into(),
                }),
                leeway_seconds,
                ..Default::default()
            })
            .unwrap()
        };
        assert!(with(crate::config::DEFAULT_JWT_LEEWAY_SECONDS)
            .verify(&t)
            .is_ok());
        assert!(with(0).verify(&t).is_err());
    }

    #[test]
    fn two_authorization_headers_are_refused() {
        use actix_web::test::TestRequest;
        let t = mint_hs256(SECRET, &["*".into()], 60, None, None).unwrap();
        let req = TestRequest::default()
            .append_header((header::AUTHORIZATION, format!("Bearer {t}")))
            .append_header((header::AUTHORIZATION, format!("Bearer {t}")))
            .to_http_request();
        let e = bearer_token(&req).unwrap_err();
        assert!(e.message.contains("more than one"), "{}", e.message);
    }

    #[test]
    fn minted_token_verifies_and_carries_sources() {
        let t = mint_hs256(SECRET, &["billing".into()], 60, None, None).unwrap();
        let c = hs(None, None).verify(&t).unwrap();
        assert_eq!(c.sources, vec!["billing".to_string()]);
        assert!(c.may_write(&Source::parse("billing").unwrap()));
        assert!(!c.may_write(&Source::parse("provisioning").unwrap()));
    }

    #[test]
    fn only_a_token_with_the_admin_claim_is_admin() {
        let auth = hs(None, None);
        let plain = mint_hs256(SECRET, &["*".into()], 60, None, None).unwrap();
        let claims = auth.verify(&plain).unwrap();
        assert!(!claims.pinv_admin);
        assert_eq!(
            Admin::check(claims).unwrap_err().code,
            ErrorCode::AdminRequired
        );
        let admin = mint_hs256_with(SECRET, &[], 60, None, None, true).unwrap();
        let claims = auth.verify(&admin).unwrap();
        assert!(Admin::check(claims).unwrap().0.pinv_admin);
        // The claim must be the JSON `true`, not a truthy string.
        let text =
            hs_json(serde_json::json!({"sources": [], "exp": now() + 60, "pinv_admin": "true"}));
        assert!(auth.verify(&text).is_err());
    }

    #[test]
    fn star_allows_every_source() {
        let c = Claims {
            sources: vec!["*".into()],
            exp: Some(0),
            iat: None,
            nbf: None,
            iss: None,
            aud: None,
            pinv_admin: false,
        };
        assert!(c.may_write(&Source::parse("anything").unwrap()));
    }

    #[test]
    fn issuer_and_audience_are_required_when_configured() {
        let auth = hs(Some("idp"), Some("pinv"));
        let good = mint_hs256(SECRET, &["*".into()], 60, Some("idp"), Some("pinv")).unwrap();
        assert!(auth.verify(&good).is_ok());
        for (iss, aud) in [
            (None, Some("pinv")),
            (Some("idp"), None),
            (Some("other"), Some("pinv")),
            (Some("idp"), Some("other")),
        ] {
            let t = mint_hs256(SECRET, &["*".into()], 60, iss, aud).unwrap();
            let e = auth.verify(&t).unwrap_err();
            assert_eq!(e.code, ErrorCode::Unauthorized, "{iss:?} {aud:?}");
            assert!(e.www_authenticate.is_some());
        }
    }

    #[test]
    fn wrong_secret_is_refused() {
        let t = mint_hs256(&"x".repeat(40), &["*".into()], 60, None, None).unwrap();
        let e = hs(None, None).verify(&t).unwrap_err();
        assert!(e.message.contains("signature"), "{}", e.message);
    }

    #[test]
    fn missing_key_is_a_config_error() {
        assert!(matches!(
            Authenticator::from_settings(&JwtSettings::default()),
            Err(AuthConfigError::NoKey)
        ));
    }

    #[test]
    fn unreadable_public_key_file_names_the_variable() {
        let e = Authenticator::from_settings(&JwtSettings {
            key: Some(JwtKey::PublicKey {
                algorithm: PublicKeyAlgorithm::Rs256,
                file: "/nonexistent/key.pem".into(),
            }),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(e.to_string().starts_with("PINV_JWT_PUBLIC_KEY_FILE"), "{e}");
    }
}
