//! Typed settings, read once at start from the environment and command-line flags.
//!
//! Everything arrives as strings ([`RawSettings`]); [`RawSettings::parse`] turns them into
//! [`Settings`] or names the variable at fault, so the rest of the program never sees an
//! unchecked value.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default `PINV_BIND`.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
/// Default `PINV_STORE`.
pub const DEFAULT_STORE: &str = "./pinv-data";
/// Default `PINV_MONGODB_DATABASE`.
pub const DEFAULT_MONGODB_DATABASE: &str = "pinv";
/// Default `PINV_MONGODB_WRITE_CONCERN`.
pub const DEFAULT_MONGODB_WRITE_CONCERN: WriteConcernSetting = WriteConcernSetting::Majority;
/// Default `PINV_MONGODB_TIMEOUT_MS` (5 s).
pub const DEFAULT_MONGODB_TIMEOUT: Duration = Duration::from_millis(5000);
/// Default `PINV_RULES_DIR`.
pub const DEFAULT_RULES_DIR: &str = "./merge-rules";
/// Default `PINV_MAX_BODY_BYTES` (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1_048_576;
/// Default `PINV_BODY_TIMEOUT_SECS` (15 s).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(15);
/// Default `PINV_BODY_BUDGET_BYTES` (8 MiB).
pub const DEFAULT_BODY_BUDGET_BYTES: usize = 8 * 1_048_576;

/// Where products are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSetting {
    /// The embedded store in this directory.
    Embedded(PathBuf),
    /// The in-memory store (nothing survives a restart).
    Memory,
    /// A MongoDB deployment (`mongodb://` or `mongodb+srv://` URI).
    Mongo(String),
}

impl StoreSetting {
    /// Reads a `PINV_STORE` value: `memory`, a MongoDB URI, or else a directory path.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s == "memory" {
            Ok(Self::Memory)
        } else if s.starts_with("mongodb://") || s.starts_with("mongodb+srv://") {
            Ok(Self::Mongo(s.to_owned()))
        } else {
            Ok(Self::Embedded(PathBuf::from(s)))
        }
    }
}

impl fmt::Display for StoreSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Embedded(p) => write!(f, "embedded:{}", p.display()),
            Self::Memory => f.write_str("memory"),
            // The URI may carry a password: never print it.
            Self::Mongo(_) => f.write_str("mongodb"),
        }
    }
}

/// The MongoDB write concern `w` (`PINV_MONGODB_WRITE_CONCERN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteConcernSetting {
    /// `majority`: acknowledged once a majority of the replica set has the write.
    Majority,
    /// A number of nodes (at least 1: PINV needs every write acknowledged).
    Nodes(u32),
    /// A custom write-concern name (a tag set configured on the replica set).
    Tag(String),
}

impl WriteConcernSetting {
    /// Reads `majority`, a positive number of nodes, or a tag name.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s == "majority" {
            return Ok(Self::Majority);
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<u32>() {
                // w=0 is fire-and-forget: a 2xx would no longer mean the product is stored.
                Ok(0) => {
                    Err("'0' (unacknowledged) is not allowed: use 1, majority or a tag".into())
                }
                Ok(n) => Ok(Self::Nodes(n)),
                Err(_) => Err(format!("'{s}' is too large a number of nodes")),
            };
        }
        if s.starts_with('-') || s.chars().any(char::is_whitespace) {
            return Err(format!(
                "'{s}' is not 1, majority, a number of nodes or a tag name"
            ));
        }
        Ok(Self::Tag(s.to_owned()))
    }
}

impl fmt::Display for WriteConcernSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Majority => f.write_str("majority"),
            Self::Nodes(n) => write!(f, "{n}"),
            Self::Tag(t) => f.write_str(t),
        }
    }
}

/// An asymmetric algorithm for verifying tokens with a public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicKeyAlgorithm {
    /// RSA PKCS#1 v1.5 with SHA-256.
    Rs256,
    /// ECDSA P-256 with SHA-256.
    Es256,
}

impl PublicKeyAlgorithm {
    /// Reads `RS256` or `ES256` (case-insensitive).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_uppercase().as_str() {
            "RS256" => Ok(Self::Rs256),
            "ES256" => Ok(Self::Es256),
            other => Err(format!("must be RS256 or ES256, not '{other}'")),
        }
    }
}

/// The key that verifies tokens.
#[derive(Clone, PartialEq, Eq)]
pub enum JwtKey {
    /// HS256 with a shared secret.
    Hs256 {
        /// The secret, as bytes of the configured string.
        secret: String,
    },
    /// RS256 or ES256 with a PEM public key.
    PublicKey {
        /// The algorithm.
        algorithm: PublicKeyAlgorithm,
        /// The PEM file.
        file: PathBuf,
    },
}

// Hand-written so that the secret never reaches a log line.
impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hs256 { .. } => f.write_str("Hs256 { secret: <redacted> }"),
            Self::PublicKey { algorithm, file } => f
                .debug_struct("PublicKey")
                .field("algorithm", algorithm)
                .field("file", file)
                .finish(),
        }
    }
}

/// Token validation settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwtSettings {
    /// The verification key; `None` when nothing is configured (only `serve --dev` accepts that).
    pub key: Option<JwtKey>,
    /// Required `iss`, when configured.
    pub issuer: Option<String>,
    /// Required `aud`, when configured.
    pub audience: Option<String>,
}

/// Everything PINV is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Address to listen on (port 0 picks a free port).
    pub bind: SocketAddr,
    /// Where products live.
    pub store: StoreSetting,
    /// MongoDB database name.
    pub mongodb_database: String,
    /// MongoDB write concern `w`.
    pub mongodb_write_concern: WriteConcernSetting,
    /// Bound on MongoDB server selection, connecting, and every store call.
    pub mongodb_timeout: Duration,
    /// Run one MongoDB store call at a time (for test servers that do not isolate
    /// concurrent transactions, such as nx-27017; never for MongoDB).
    pub mongodb_one_at_a_time: bool,
    /// Merge-rules directory.
    pub rules_dir: PathBuf,
    /// Token validation.
    pub jwt: JwtSettings,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Time a request body has to arrive in full once its headers are read.
    pub body_timeout: Duration,
    /// Bytes of request bodies handled at once (declared length, or `max_body_bytes` when
    /// undeclared); requests beyond it wait.
    pub body_budget_bytes: usize,
}

impl Settings {
    /// Settings for tests: bind `127.0.0.1:0`, memory store, the given rules directory and
    /// HS256 secret, defaults elsewhere.
    pub fn for_tests(rules_dir: impl Into<PathBuf>, secret: &str) -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            store: StoreSetting::Memory,
            mongodb_database: DEFAULT_MONGODB_DATABASE.into(),
            mongodb_write_concern: DEFAULT_MONGODB_WRITE_CONCERN,
            mongodb_timeout: DEFAULT_MONGODB_TIMEOUT,
            mongodb_one_at_a_time: false,
            rules_dir: rules_dir.into(),
            jwt: JwtSettings {
                key: Some(JwtKey::Hs256 {
                    secret: secret.into(),
                }),
                issuer: None,
                audience: None,
            },
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            body_budget_bytes: DEFAULT_BODY_BUDGET_BYTES,
        }
    }
}

/// A setting that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    /// The environment variable (or its flag) at fault, e.g. `PINV_BIND`.
    pub variable: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    fn new(variable: &'static str, problem: impl Into<String>) -> Self {
        Self {
            variable,
            problem: problem.into(),
        }
    }
}

/// Settings as strings, before parsing. Built from the environment, then overlaid with flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawSettings {
    /// `PINV_BIND` / `--bind`.
    pub bind: Option<String>,
    /// `PINV_STORE` / `--store`.
    pub store: Option<String>,
    /// `PINV_MONGODB_DATABASE` / `--mongodb-database`.
    pub mongodb_database: Option<String>,
    /// `PINV_MONGODB_WRITE_CONCERN` / `--mongodb-write-concern`.
    pub mongodb_write_concern: Option<String>,
    /// `PINV_MONGODB_TIMEOUT_MS` / `--mongodb-timeout-ms`.
    pub mongodb_timeout_ms: Option<String>,
    /// `PINV_MONGODB_ONE_AT_A_TIME` / `--mongodb-one-at-a-time`.
    pub mongodb_one_at_a_time: Option<String>,
    /// `PINV_RULES_DIR` / `--rules-dir`.
    pub rules_dir: Option<String>,
    /// `PINV_JWT_SECRET` / `--jwt-secret`.
    pub jwt_secret: Option<String>,
    /// `PINV_JWT_PUBLIC_KEY_FILE` / `--jwt-public-key-file`.
    pub jwt_public_key_file: Option<String>,
    /// `PINV_JWT_ALGORITHM` / `--jwt-algorithm`.
    pub jwt_algorithm: Option<String>,
    /// `PINV_JWT_ISSUER` / `--jwt-issuer`.
    pub jwt_issuer: Option<String>,
    /// `PINV_JWT_AUDIENCE` / `--jwt-audience`.
    pub jwt_audience: Option<String>,
    /// `PINV_MAX_BODY_BYTES` / `--max-body-bytes`.
    pub max_body_bytes: Option<String>,
    /// `PINV_BODY_TIMEOUT_SECS` / `--body-timeout-secs`.
    pub body_timeout_secs: Option<String>,
    /// `PINV_BODY_BUDGET_BYTES` / `--body-budget-bytes`.
    pub body_budget_bytes: Option<String>,
}

impl RawSettings {
    /// Reads the `PINV_*` variables through `lookup` (tests pass a map, `main` the process
    /// environment). Empty values count as unset.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
        Self {
            bind: get("PINV_BIND"),
            store: get("PINV_STORE"),
            mongodb_database: get("PINV_MONGODB_DATABASE"),
            mongodb_write_concern: get("PINV_MONGODB_WRITE_CONCERN"),
            mongodb_timeout_ms: get("PINV_MONGODB_TIMEOUT_MS"),
            mongodb_one_at_a_time: get("PINV_MONGODB_ONE_AT_A_TIME"),
            rules_dir: get("PINV_RULES_DIR"),
            jwt_secret: get("PINV_JWT_SECRET"),
            jwt_public_key_file: get("PINV_JWT_PUBLIC_KEY_FILE"),
            jwt_algorithm: get("PINV_JWT_ALGORITHM"),
            jwt_issuer: get("PINV_JWT_ISSUER"),
            jwt_audience: get("PINV_JWT_AUDIENCE"),
            max_body_bytes: get("PINV_MAX_BODY_BYTES"),
            body_timeout_secs: get("PINV_BODY_TIMEOUT_SECS"),
            body_budget_bytes: get("PINV_BODY_BUDGET_BYTES"),
        }
    }

    /// The process environment.
    pub fn from_process_env() -> Self {
        Self::from_env(|name| std::env::var(name).ok())
    }

    /// `self` with every value that `flags` sets replaced: flags win over the environment.
    pub fn overlay(self, flags: RawSettings) -> Self {
        Self {
            bind: flags.bind.or(self.bind),
            store: flags.store.or(self.store),
            mongodb_database: flags.mongodb_database.or(self.mongodb_database),
            mongodb_write_concern: flags.mongodb_write_concern.or(self.mongodb_write_concern),
            mongodb_timeout_ms: flags.mongodb_timeout_ms.or(self.mongodb_timeout_ms),
            mongodb_one_at_a_time: flags.mongodb_one_at_a_time.or(self.mongodb_one_at_a_time),
            rules_dir: flags.rules_dir.or(self.rules_dir),
            jwt_secret: flags.jwt_secret.or(self.jwt_secret),
            jwt_public_key_file: flags.jwt_public_key_file.or(self.jwt_public_key_file),
            jwt_algorithm: flags.jwt_algorithm.or(self.jwt_algorithm),
            jwt_issuer: flags.jwt_issuer.or(self.jwt_issuer),
            jwt_audience: flags.jwt_audience.or(self.jwt_audience),
            max_body_bytes: flags.max_body_bytes.or(self.max_body_bytes),
            body_timeout_secs: flags.body_timeout_secs.or(self.body_timeout_secs),
            body_budget_bytes: flags.body_budget_bytes.or(self.body_budget_bytes),
        }
    }

    /// Checks every value and applies the defaults.
    pub fn parse(self) -> Result<Settings, ConfigError> {
        let bind_text = self.bind.as_deref().unwrap_or(DEFAULT_BIND);
        let bind = bind_text.trim().parse::<SocketAddr>().map_err(|_| {
            ConfigError::new(
                "PINV_BIND",
                format!("'{bind_text}' is not an address such as 127.0.0.1:8080"),
            )
        })?;

        let store = StoreSetting::parse(self.store.as_deref().unwrap_or(DEFAULT_STORE))
            .map_err(|p| ConfigError::new("PINV_STORE", p))?;

        let mongodb_database = self
            .mongodb_database
            .unwrap_or_else(|| DEFAULT_MONGODB_DATABASE.into());
        // MongoDB refuses these characters in database names; say so now, not on first write.
        if mongodb_database
            .chars()
            .any(|c| matches!(c, '/' | '\\' | '.' | ' ' | '"' | '$' | '\0'))
        {
            return Err(ConfigError::new(
                "PINV_MONGODB_DATABASE",
                format!("'{mongodb_database}' contains a character MongoDB does not allow in a database name"),
            ));
        }

        let mongodb_write_concern = match &self.mongodb_write_concern {
            None => DEFAULT_MONGODB_WRITE_CONCERN,
            Some(text) => WriteConcernSetting::parse(text)
                .map_err(|p| ConfigError::new("PINV_MONGODB_WRITE_CONCERN", p))?,
        };

        let mongodb_timeout = match &self.mongodb_timeout_ms {
            None => DEFAULT_MONGODB_TIMEOUT,
            Some(text) => match text.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err(ConfigError::new(
                        "PINV_MONGODB_TIMEOUT_MS",
                        format!("'{text}' is not a positive number of milliseconds"),
                    ))
                }
            },
        };

        let mongodb_one_at_a_time = match self.mongodb_one_at_a_time.as_deref().map(str::trim) {
            None | Some("0" | "false") => false,
            Some("1" | "true") => true,
            Some(other) => {
                return Err(ConfigError::new(
                    "PINV_MONGODB_ONE_AT_A_TIME",
                    format!("'{other}' is not true, false, 1 or 0"),
                ))
            }
        };

        let rules_dir = PathBuf::from(self.rules_dir.as_deref().unwrap_or(DEFAULT_RULES_DIR));

        let key = match (self.jwt_secret, self.jwt_public_key_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "PINV_JWT_SECRET",
                    "set either PINV_JWT_SECRET (HS256) or PINV_JWT_PUBLIC_KEY_FILE (RS256/ES256), not both",
                ))
            }
            (Some(secret), None) => {
                if let Some(alg) = &self.jwt_algorithm {
                    if !alg.trim().eq_ignore_ascii_case("HS256") {
                        return Err(ConfigError::new(
                            "PINV_JWT_ALGORITHM",
                            format!("'{alg}' does not go with PINV_JWT_SECRET, which is HS256"),
                        ));
                    }
                }
                // Shorter HS256 secrets can be brute-forced offline from one token.
                if secret.len() < 32 {
                    return Err(ConfigError::new(
                        "PINV_JWT_SECRET",
                        "must be at least 32 characters",
                    ));
                }
                Some(JwtKey::Hs256 { secret })
            }
            (None, Some(file)) => {
                let algorithm = match &self.jwt_algorithm {
                    None => {
                        return Err(ConfigError::new(
                            "PINV_JWT_ALGORITHM",
                            "is required with PINV_JWT_PUBLIC_KEY_FILE (RS256 or ES256)",
                        ))
                    }
                    Some(a) => PublicKeyAlgorithm::parse(a)
                        .map_err(|p| ConfigError::new("PINV_JWT_ALGORITHM", p))?,
                };
                Some(JwtKey::PublicKey {
                    algorithm,
                    file: PathBuf::from(file),
                })
            }
            (None, None) => {
                if let Some(alg) = &self.jwt_algorithm {
                    return Err(ConfigError::new(
                        "PINV_JWT_ALGORITHM",
                        format!("'{alg}' is set but no key is: set PINV_JWT_SECRET or PINV_JWT_PUBLIC_KEY_FILE"),
                    ));
                }
                None
            }
        };

        let max_body_bytes = match self.max_body_bytes {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(text) => match text.trim().parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(ConfigError::new(
                        "PINV_MAX_BODY_BYTES",
                        format!("'{text}' is not a positive number of bytes"),
                    ))
                }
            },
        };

        let body_timeout = match &self.body_timeout_secs {
            None => DEFAULT_BODY_TIMEOUT,
            Some(text) => match text.trim().parse::<u64>() {
                Ok(secs) if secs > 0 => Duration::from_secs(secs),
                _ => {
                    return Err(ConfigError::new(
                        "PINV_BODY_TIMEOUT_SECS",
                        format!("'{text}' is not a positive number of seconds"),
                    ))
                }
            },
        };

        let body_budget_bytes = match &self.body_budget_bytes {
            None => DEFAULT_BODY_BUDGET_BYTES.max(max_body_bytes),
            Some(text) => match text.trim().parse::<usize>() {
                Ok(n) if n >= max_body_bytes => n,
                _ => {
                    return Err(ConfigError::new(
                        "PINV_BODY_BUDGET_BYTES",
                        format!("'{text}' is not a number of bytes of at least PINV_MAX_BODY_BYTES ({max_body_bytes})"),
                    ))
                }
            },
        };

        Ok(Settings {
            bind,
            store,
            mongodb_database,
            mongodb_write_concern,
            mongodb_timeout,
            mongodb_one_at_a_time,
            rules_dir,
            jwt: JwtSettings {
                key,
                issuer: self.jwt_issuer,
                audience: self.jwt_audience,
            },
            max_body_bytes,
            body_timeout,
            body_budget_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> RawSettings {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RawSettings::from_env(move |k| map.get(k).cloned())
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s = env(&[]).parse().unwrap();
        assert_eq!(s.bind, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.store, StoreSetting::Embedded("./pinv-data".into()));
        assert_eq!(s.mongodb_database, "pinv");
        assert_eq!(s.mongodb_write_concern, WriteConcernSetting::Majority);
        assert_eq!(s.mongodb_timeout, Duration::from_millis(5000));
        assert!(!s.mongodb_one_at_a_time);
        assert_eq!(s.rules_dir, PathBuf::from("./merge-rules"));
        assert_eq!(s.jwt, JwtSettings::default());
        assert_eq!(s.max_body_bytes, 1_048_576);
    }

    #[test]
    fn store_setting_recognises_memory_mongodb_and_paths() {
        assert_eq!(StoreSetting::parse("memory"), Ok(StoreSetting::Memory));
        assert_eq!(
            StoreSetting::parse("mongodb://localhost:27017"),
            Ok(StoreSetting::Mongo("mongodb://localhost:27017".into()))
        );
        assert_eq!(
            StoreSetting::parse("mongodb+srv://c.example.net"),
            Ok(StoreSetting::Mongo("mongodb+srv://c.example.net".into()))
        );
        assert_eq!(
            StoreSetting::parse("/var/lib/pinv"),
            Ok(StoreSetting::Embedded("/var/lib/pinv".into()))
        );
        assert!(StoreSetting::parse("  ").is_err());
    }

    #[test]
    fn mongo_uri_is_not_printed() {
        let s = StoreSetting::Mongo("mongodb://user:pw@h".into());
        assert!(!s.to_string().contains("pw"));
    }

    #[test]
    fn flags_win_over_environment() {
        let flags = RawSettings {
            bind: Some("0.0.0.0:9000".into()),
            ..Default::default()
        };
        let s = env(&[("PINV_BIND", "127.0.0.1:1"), ("PINV_STORE", "memory")])
            .overlay(flags)
            .parse()
            .unwrap();
        assert_eq!(s.bind, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(s.store, StoreSetting::Memory);
    }

    #[test]
    fn bad_bind_names_the_variable() {
        let e = env(&[("PINV_BIND", "localhost")]).parse().unwrap_err();
        assert_eq!(e.variable, "PINV_BIND");
        assert!(e.to_string().starts_with("PINV_BIND: "), "{e}");
    }

    #[test]
    fn bad_max_body_bytes_is_refused() {
        for v in ["abc", "0", "-5"] {
            let e = env(&[("PINV_MAX_BODY_BYTES", v)]).parse().unwrap_err();
            assert_eq!(e.variable, "PINV_MAX_BODY_BYTES", "{v}");
        }
        let s = env(&[("PINV_MAX_BODY_BYTES", "2048")]).parse().unwrap();
        assert_eq!(s.max_body_bytes, 2048);
    }

    #[test]
    fn body_timeout_is_positive_seconds() {
        assert_eq!(
            env(&[]).parse().unwrap().body_timeout,
            Duration::from_secs(15)
        );
        for v in ["0", "-1", "1.5", "x"] {
            let e = env(&[("PINV_BODY_TIMEOUT_SECS", v)]).parse().unwrap_err();
            assert_eq!(e.variable, "PINV_BODY_TIMEOUT_SECS", "{v}");
        }
        let s = env(&[("PINV_BODY_TIMEOUT_SECS", "3")]).parse().unwrap();
        assert_eq!(s.body_timeout, Duration::from_secs(3));
    }

    #[test]
    fn body_budget_holds_at_least_one_largest_body() {
        assert_eq!(env(&[]).parse().unwrap().body_budget_bytes, 8 * 1_048_576);
        let big = env(&[("PINV_MAX_BODY_BYTES", "67108864")]).parse().unwrap();
        assert_eq!(big.body_budget_bytes, 67_108_864);
        for v in ["0", "1048575", "x"] {
            let e = env(&[("PINV_BODY_BUDGET_BYTES", v)]).parse().unwrap_err();
            assert_eq!(e.variable, "PINV_BODY_BUDGET_BYTES", "{v}");
        }
        let s = env(&[("PINV_BODY_BUDGET_BYTES", "2097152")])
            .parse()
            .unwrap();
        assert_eq!(s.body_budget_bytes, 2_097_152);
    }

    #[test]
    fn hs256_secret_is_read_and_must_be_long_enough() {
        let s = env(&[("PINV_JWT_SECRET", SECRET)]).parse().unwrap();
        assert_eq!(
            s.jwt.key,
            Some(JwtKey::Hs256 {
                secret: SECRET.into()
            })
        );
        let e = env(&[("PINV_JWT_SECRET", "short")]).parse().unwrap_err();
        assert_eq!(e.variable, "PINV_JWT_SECRET");
    }

    #[test]
    fn public_key_needs_an_asymmetric_algorithm() {
        let e = env(&[("PINV_JWT_PUBLIC_KEY_FILE", "k.pem")])
            .parse()
            .unwrap_err();
        assert_eq!(e.variable, "PINV_JWT_ALGORITHM");
        let e = env(&[
            ("PINV_JWT_PUBLIC_KEY_FILE", "k.pem"),
            ("PINV_JWT_ALGORITHM", "HS256"),
        ])
        .parse()
        .unwrap_err();
        assert_eq!(e.variable, "PINV_JWT_ALGORITHM");
        let s = env(&[
            ("PINV_JWT_PUBLIC_KEY_FILE", "k.pem"),
            ("PINV_JWT_ALGORITHM", "es256"),
            ("PINV_JWT_ISSUER", "idp"),
            ("PINV_JWT_AUDIENCE", "pinv"),
        ])
        .parse()
        .unwrap();
        assert_eq!(
            s.jwt,
            JwtSettings {
                key: Some(JwtKey::PublicKey {
                    algorithm: PublicKeyAlgorithm::Es256,
                    file: "k.pem".into()
                }),
                issuer: Some("idp".into()),
                audience: Some("pinv".into()),
            }
        );
    }

    #[test]
    fn secret_and_public_key_together_are_refused() {
        let e = env(&[
            ("PINV_JWT_SECRET", SECRET),
            ("PINV_JWT_PUBLIC_KEY_FILE", "k.pem"),
        ])
        .parse()
        .unwrap_err();
        assert_eq!(e.variable, "PINV_JWT_SECRET");
    }

    #[test]
    fn secret_is_not_in_debug_output() {
        let s = env(&[("PINV_JWT_SECRET", SECRET)]).parse().unwrap();
        assert!(!format!("{s:?}").contains(SECRET));
    }

    #[test]
    fn bad_database_name_is_refused() {
        let e = env(&[("PINV_MONGODB_DATABASE", "a.b")])
            .parse()
            .unwrap_err();
        assert_eq!(e.variable, "PINV_MONGODB_DATABASE");
    }

    #[test]
    fn write_concern_is_majority_a_number_of_nodes_or_a_tag() {
        let wc = |v: &str| {
            env(&[("PINV_MONGODB_WRITE_CONCERN", v)])
                .parse()
                .map(|s| s.mongodb_write_concern)
        };
        assert_eq!(wc("majority"), Ok(WriteConcernSetting::Majority));
        assert_eq!(wc("1"), Ok(WriteConcernSetting::Nodes(1)));
        assert_eq!(wc(" 3 "), Ok(WriteConcernSetting::Nodes(3)));
        assert_eq!(wc("twoDCs"), Ok(WriteConcernSetting::Tag("twoDCs".into())));
        assert_eq!(WriteConcernSetting::Nodes(2).to_string(), "2");
        assert_eq!(WriteConcernSetting::Majority.to_string(), "majority");
    }

    #[test]
    fn unacknowledged_or_malformed_write_concern_is_refused() {
        for v in ["0", "-1", "two words", "99999999999"] {
            let e = env(&[("PINV_MONGODB_WRITE_CONCERN", v)])
                .parse()
                .unwrap_err();
            assert_eq!(e.variable, "PINV_MONGODB_WRITE_CONCERN", "{v}");
            assert!(
                e.to_string().starts_with("PINV_MONGODB_WRITE_CONCERN: "),
                "{e}"
            );
        }
    }

    #[test]
    fn mongodb_timeout_is_positive_milliseconds() {
        let s = env(&[("PINV_MONGODB_TIMEOUT_MS", "250")]).parse().unwrap();
        assert_eq!(s.mongodb_timeout, Duration::from_millis(250));
        for v in ["0", "-5", "5s", "1.5"] {
            let e = env(&[("PINV_MONGODB_TIMEOUT_MS", v)]).parse().unwrap_err();
            assert_eq!(e.variable, "PINV_MONGODB_TIMEOUT_MS", "{v}");
        }
    }

    #[test]
    fn one_at_a_time_is_a_boolean() {
        let on = |v: &str| {
            env(&[("PINV_MONGODB_ONE_AT_A_TIME", v)])
                .parse()
                .map(|s| s.mongodb_one_at_a_time)
        };
        assert_eq!(on("1"), Ok(true));
        assert_eq!(on("true"), Ok(true));
        assert_eq!(on("0"), Ok(false));
        assert_eq!(on("false"), Ok(false));
        assert_eq!(
            on("yes").unwrap_err().variable,
            "PINV_MONGODB_ONE_AT_A_TIME"
        );
    }

    #[test]
    fn mongodb_flags_win_over_environment() {
        let flags = RawSettings {
            mongodb_write_concern: Some("1".into()),
            mongodb_timeout_ms: Some("100".into()),
            ..Default::default()
        };
        let s = env(&[
            ("PINV_MONGODB_WRITE_CONCERN", "majority"),
            ("PINV_MONGODB_TIMEOUT_MS", "9000"),
        ])
        .overlay(flags)
        .parse()
        .unwrap();
        assert_eq!(s.mongodb_write_concern, WriteConcernSetting::Nodes(1));
        assert_eq!(s.mongodb_timeout, Duration::from_millis(100));
    }
}
