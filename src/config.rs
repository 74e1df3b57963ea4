//! Typed settings, read once at start from command-line flags and `PINV_*` variables.
//!
//! Every setting is declared once, as a field of the group it belongs to ([`ServerSettings`],
//! [`StoreSettings`], [`MongoSettings`], [`RulesSettings`], [`JwtArgs`]): its flag, its
//! variable, its default, its help text and the function that checks it sit in the field's
//! `#[arg(...)]`. clap reads the flag, else the variable, else the default (an empty
//! variable counts as unset, see [`ignore_empty_env`]), and runs the check; a bad value
//! stops the start with `PINV_X (--x): what is wrong`. Commands flatten only the groups
//! they use, so `--help` offers only what the command reads.
//!
//! # Adding a setting
//!
//! Add one field to its group, e.g. in [`ServerSettings`]:
//!
//! ```ignore
//! /// Help text, shown by --help.
//! #[arg(long, env = "PINV_NEW_THING", default_value = "10", value_parser = checked(parse_positive_usize))]
//! pub new_thing: usize,
//! ```
//!
//! The parser is a `fn(&str) -> Result<T, String>` wrapped in [`checked`] (which names the
//! variable and the flag in the error); the field's type is the typed value, so
//! `settings.server.new_thing` is ready to use. Then add the row to README's configuration
//! table (a test compares the two). [`JwtArgs`] is the one group that is not its own typed
//! result: its key settings are checked together, so a new JWT setting is also copied into
//! [`JwtSettings`] in [`JwtArgs::settings`].

use std::ffi::OsStr;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// The verification key; `None` when nothing is configured (only `serve --dev` accepts that).
    pub key: Option<JwtKey>,
    /// Required `iss`, when configured.
    pub issuer: Option<String>,
    /// Required `aud`, when configured.
    pub audience: Option<String>,
    /// Seconds a token is still accepted after its `exp` and already before its `nbf`,
    /// for clocks that disagree.
    pub leeway_seconds: u64,
}

impl Default for JwtSettings {
    fn default() -> Self {
        Self {
            key: None,
            issuer: None,
            audience: None,
            leeway_seconds: DEFAULT_JWT_LEEWAY_SECONDS,
        }
    }
}

/// Everything `pinv serve` is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The HTTP server.
    pub server: ServerSettings,
    /// Where products live.
    pub store: StoreSettings,
    /// How the MongoDB store connects (when the store is MongoDB).
    pub mongodb: MongoSettings,
    /// The merge rules.
    pub rules: RulesSettings,
    /// The adapters of native payloads.
    pub adapters: AdaptersSettings,
    /// Token validation.
    pub jwt: JwtSettings,
    /// Change notifications (the TMF637 hub).
    pub hub: HubSettings,
}

#[cfg(any(test, feature = "testing"))]
impl Settings {
    /// Settings for tests: bind `127.0.0.1:0`, memory store, the given rules directory and
    /// HS256 secret, the declared defaults elsewhere (the environment is not read).
    pub fn for_tests(rules_dir: impl Into<PathBuf>, secret: &str) -> Self {
        let args: SettingsArgs = parse_without_env(&["--bind", "127.0.0.1:0", "--store", "memory"])
            .expect("the declared defaults are valid");
        let mut settings = args.settings().expect("the declared defaults are valid");
        settings.rules.dir = rules_dir.into();
        settings.jwt.key = Some(JwtKey::Hs256 {
            secret: secret.into(),
        });
        settings
    }
}

/// Parses `args` (flags only, no program name) into `A` with the `PINV_*` variables
/// ignored: the declared defaults apply to what the flags leave unset.
#[cfg(any(test, feature = "testing"))]
pub fn parse_without_env<A: clap::Args + clap::FromArgMatches>(
    args: &[&str],
) -> Result<A, clap::Error> {
    // clap reads a variable when the argument is built; forgetting the set ones is enough,
    // and keeps the names of the others for the error messages.
    let command = A::augment_args(clap::Command::new("pinv")).mut_args(|a| match a.get_env() {
        Some(name) if std::env::var_os(name).is_some() => a.env(None::<&str>),
        _ => a,
    });
    let matches =
        command.try_get_matches_from(std::iter::once("pinv").chain(args.iter().copied()))?;
    A::from_arg_matches(&matches)
}

/// All of [`Settings`], as `pinv serve` reads them.
#[derive(Debug, Clone, clap::Args)]
pub struct SettingsArgs {
    #[command(flatten)]
    server: ServerSettings,
    #[command(flatten)]
    store: StoreSettings,
    #[command(flatten)]
    mongodb: MongoSettings,
    #[command(flatten)]
    rules: RulesSettings,
    #[command(flatten)]
    adapters: AdaptersSettings,
    #[command(flatten)]
    jwt: JwtArgs,
    #[command(flatten)]
    hub: HubSettings,
}

impl SettingsArgs {
    /// The settings, once the JWT settings agree with each other.
    pub fn settings(self) -> Result<Settings, ConfigError> {
        if self.server.body_budget_bytes < self.server.max_body_bytes {
            return Err(ConfigError::new(
                "PINV_BODY_BUDGET_BYTES",
                format!(
                    "{} is less than PINV_MAX_BODY_BYTES ({}): one largest body must fit",
                    self.server.body_budget_bytes, self.server.max_body_bytes
                ),
            ));
        }
        Ok(Settings {
            server: self.server,
            store: self.store,
            mongodb: self.mongodb,
            rules: self.rules,
            adapters: self.adapters,
            jwt: self.jwt.settings()?,
            hub: self.hub,
        })
    }
}

/// Delivery of product events to hub subscribers.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct HubSettings {
    /// Comma-separated URL prefixes a callback must start with (empty: any http/https URL).
    #[arg(long, env = "PINV_HUB_CALLBACK_ALLOW", value_delimiter = ',')]
    pub hub_callback_allow: Vec<String>,
    /// How often the dispatcher looks for events to deliver, in milliseconds.
    #[arg(long, env = "PINV_HUB_POLL_MS", default_value = "100", value_parser = checked(parse_millis))]
    pub hub_poll: Duration,
    /// Time a listener has to answer one delivery, in milliseconds.
    #[arg(long, env = "PINV_HUB_TIMEOUT_MS", default_value = "5000", value_parser = checked(parse_millis))]
    pub hub_timeout: Duration,
    /// Subscriptions delivered to at once.
    #[arg(long, env = "PINV_HUB_CONCURRENCY", default_value = "16", value_parser = checked(parse_positive_usize))]
    pub hub_concurrency: usize,
    /// Outbox entries one subscription's delivery round reads.
    #[arg(long, env = "PINV_HUB_BATCH", default_value = "256", value_parser = checked(parse_positive_usize))]
    pub hub_batch: usize,
    /// First retry delay, in milliseconds; each retry doubles it (with jitter).
    #[arg(long, env = "PINV_HUB_RETRY_BASE_MS", default_value = "500", value_parser = checked(parse_millis))]
    pub hub_retry_base: Duration,
    /// Longest retry delay, in milliseconds.
    #[arg(long, env = "PINV_HUB_RETRY_MAX_MS", default_value = "60000", value_parser = checked(parse_millis))]
    pub hub_retry_max: Duration,
    /// How long an event is retried before it is kept as dead, in seconds.
    #[arg(long, env = "PINV_HUB_RETRY_WINDOW_SECS", default_value = "86400", value_parser = checked(parse_seconds))]
    pub hub_retry_window: Duration,
    /// Most events waiting for one subscriber; beyond it the oldest are kept as dead.
    #[arg(long, env = "PINV_HUB_OUTBOX_MAX", default_value = "100000", value_parser = checked(parse_positive_usize))]
    pub hub_outbox_max: usize,
}

/// The HTTP server (`pinv serve`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ServerSettings {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "PINV_BIND", default_value = "127.0.0.1:8080", value_parser = checked(parse_bind))]
    pub bind: SocketAddr,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "PINV_MAX_BODY_BYTES", default_value = "1048576", value_parser = checked(parse_positive_usize))]
    pub max_body_bytes: usize,
    /// Time a request body has to arrive in full once its headers are read, in seconds.
    #[arg(id = "body_timeout", long = "body-timeout-secs", value_name = "SECS", env = "PINV_BODY_TIMEOUT_SECS", default_value = "15", value_parser = checked(parse_seconds))]
    pub body_timeout: Duration,
    /// Bytes of request bodies handled at once (at least --max-body-bytes).
    #[arg(long, env = "PINV_BODY_BUDGET_BYTES", default_value = "8388608", value_parser = checked(parse_positive_usize))]
    pub body_budget_bytes: usize,
    /// Request worker threads; unset, twice the CPUs (see `startup::default_workers`).
    #[arg(long, env = "PINV_WORKERS", value_parser = checked(parse_positive_usize))]
    pub workers: Option<usize>,
    /// Base URL of `href` on the TMF637 surface (e.g. `https://pinv.example.com`); unset,
    /// the request's scheme and host.
    #[arg(long = "public-url", value_name = "URL", env = "PINV_PUBLIC_URL", value_parser = checked(parse_public_url))]
    pub public_url: Option<String>,
}

/// Where products are stored.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct StoreSettings {
    /// Store: a directory (embedded store), `memory` (nothing survives a restart), or a
    /// `mongodb://` / `mongodb+srv://` URI.
    #[arg(id = "store", long = "store", value_name = "STORE",
        hide_env_values = true, env = "PINV_STORE", default_value = "./pinv-data", value_parser = checked(StoreSetting::parse))]
    pub location: StoreSetting,
    /// Comma-separated dotted paths that list filters find through an index (embedded and
    /// MongoDB stores); changing them rebuilds the index when the store opens.
    #[arg(long = "indexed-paths", value_name = "PATHS", env = "PINV_INDEXED_PATHS",
        default_value = "status,externalReference.id,externalIdentifier.id,relatedParty.id,productSpecification.id,productOffering.id,startDate",
        value_parser = checked(parse_indexed_paths))]
    pub indexed_paths: crate::core::index::IndexedPaths,
}

/// How the MongoDB store connects; ignored by the other stores.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct MongoSettings {
    /// MongoDB database name.
    #[arg(id = "mongodb_database", long = "mongodb-database",
        value_name = "NAME", env = "PINV_MONGODB_DATABASE", default_value = "pinv", value_parser = checked(parse_database))]
    pub database: String,
    /// MongoDB write concern `w`: majority, a number of nodes (0 is refused), or a tag name.
    #[arg(id = "mongodb_write_concern", long = "mongodb-write-concern",
        value_name = "W", env = "PINV_MONGODB_WRITE_CONCERN", default_value = "majority", value_parser = checked(WriteConcernSetting::parse))]
    pub write_concern: WriteConcernSetting,
    /// Bound on server selection, connecting and every store call, in milliseconds.
    #[arg(id = "mongodb_timeout_ms", long = "mongodb-timeout-ms",
        value_name = "MS", env = "PINV_MONGODB_TIMEOUT_MS", default_value = "5000", value_parser = checked(parse_millis))]
    pub timeout: Duration,
    /// One store call at a time (true/false), for test servers that do not isolate
    /// concurrent transactions such as nx-27017; never for MongoDB. With `false` the store
    /// checks the server at connect and turns it on, with a warning, when it is needed.
    #[arg(id = "mongodb_one_at_a_time", long = "mongodb-one-at-a-time",
        value_name = "BOOL", env = "PINV_MONGODB_ONE_AT_A_TIME", default_value = "false", action = clap::ArgAction::Set, value_parser = checked(parse_bool))]
    pub one_at_a_time: bool,
}

/// The merge rules.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct RulesSettings {
    /// Merge-rules directory (`*.toml`, loaded in name order).
    #[arg(
        id = "rules_dir",
        long = "rules-dir",
        value_name = "DIR",
        visible_alias = "rules",
        env = "PINV_RULES_DIR",
        default_value = "./merge-rules"
    )]
    pub dir: PathBuf,
}

/// The adapters: one TOML mapping per system that posts native payloads.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct AdaptersSettings {
    /// Adapters directory (`*.toml`, one per system, named after it).
    #[arg(
        id = "adapters_dir",
        long = "adapters-dir",
        value_name = "DIR",
        env = "PINV_ADAPTERS_DIR",
        default_value = "./adapters"
    )]
    pub dir: PathBuf,
}

/// Token validation, as read; [`JwtArgs::settings`] checks that the key settings agree.
#[derive(Clone, Default, clap::Args)]
pub struct JwtArgs {
    // Environment only, deliberately: command lines are visible to every local user. clap
    // makes an argument without a flag positional, so it is hidden and refuses a value
    // from the command line.
    #[arg(id = "jwt_secret", env = "PINV_JWT_SECRET", hide = true, value_parser = EnvOnlySecret)]
    secret: Option<String>,
    /// PEM public key for RS256/ES256 tokens, instead of an HS256 secret in PINV_JWT_SECRET
    /// (which has no flag).
    #[arg(long, env = "PINV_JWT_PUBLIC_KEY_FILE")]
    jwt_public_key_file: Option<PathBuf>,
    /// RS256 or ES256, required with the public key (HS256 goes with PINV_JWT_SECRET).
    #[arg(long, env = "PINV_JWT_ALGORITHM", value_parser = checked(JwtAlgorithm::parse))]
    jwt_algorithm: Option<JwtAlgorithm>,
    /// When set, tokens must carry this `iss`.
    #[arg(long, env = "PINV_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// When set, tokens must carry this `aud`.
    #[arg(long, env = "PINV_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// Seconds of clock skew allowed on a token's exp and nbf (0 to 86400).
    #[arg(long, env = "PINV_JWT_LEEWAY_SECONDS", default_value = "60", value_parser = checked(parse_leeway))]
    jwt_leeway_seconds: u64,
}

// Hand-written so that the secret never reaches a log line.
impl fmt::Debug for JwtArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtArgs")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("jwt_public_key_file", &self.jwt_public_key_file)
            .field("jwt_algorithm", &self.jwt_algorithm)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_leeway_seconds", &self.jwt_leeway_seconds)
            .finish()
    }
}

impl JwtArgs {
    /// The token settings, once the key, the public key file and the algorithm agree.
    pub fn settings(self) -> Result<JwtSettings, ConfigError> {
        Ok(JwtSettings {
            key: self.key()?,
            issuer: self.jwt_issuer,
            audience: self.jwt_audience,
            leeway_seconds: self.jwt_leeway_seconds,
        })
    }

    fn key(&self) -> Result<Option<JwtKey>, ConfigError> {
        match (&self.secret, &self.jwt_public_key_file, self.jwt_algorithm) {
            (Some(_), Some(_), _) => Err(ConfigError::new(
                "PINV_JWT_SECRET",
                "set either PINV_JWT_SECRET (HS256) or PINV_JWT_PUBLIC_KEY_FILE (RS256/ES256), not both",
            )),
            (Some(secret), None, None | Some(JwtAlgorithm::Hs256)) => Ok(Some(JwtKey::Hs256 {
                secret: secret.clone(),
            })),
            (Some(_), None, Some(alg)) => Err(ConfigError::new(
                "PINV_JWT_ALGORITHM",
                format!("'{alg}' does not go with PINV_JWT_SECRET, which is HS256"),
            )),
            (None, Some(file), Some(JwtAlgorithm::PublicKey(algorithm))) => {
                Ok(Some(JwtKey::PublicKey {
                    algorithm,
                    file: file.clone(),
                }))
            }
            (None, Some(_), _) => Err(ConfigError::new(
                "PINV_JWT_ALGORITHM",
                "is required with PINV_JWT_PUBLIC_KEY_FILE (RS256 or ES256)",
            )),
            (None, None, Some(alg)) => Err(ConfigError::new(
                "PINV_JWT_ALGORITHM",
                format!("'{alg}' is set but no key is: set PINV_JWT_SECRET or PINV_JWT_PUBLIC_KEY_FILE"),
            )),
            (None, None, None) => Ok(None),
        }
    }
}

/// The value of `PINV_JWT_ALGORITHM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// HS256, the algorithm of `PINV_JWT_SECRET`.
    Hs256,
    /// An algorithm for `PINV_JWT_PUBLIC_KEY_FILE`.
    PublicKey(PublicKeyAlgorithm),
}

impl JwtAlgorithm {
    /// Reads `HS256`, `RS256` or `ES256` (case-insensitive).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("HS256") {
            Ok(Self::Hs256)
        } else {
            PublicKeyAlgorithm::parse(s).map(Self::PublicKey)
        }
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Hs256 => "HS256",
            Self::PublicKey(PublicKeyAlgorithm::Rs256) => "RS256",
            Self::PublicKey(PublicKeyAlgorithm::Es256) => "ES256",
        })
    }
}

/// Settings that do not agree with each other (each one alone was valid).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    /// The environment variable (or its flag) at fault, e.g. `PINV_JWT_ALGORITHM`.
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

/// A setting's check, `fn(&str) -> Result<T, String>`, as a clap value parser whose error
/// names the variable and the flag: `PINV_BIND (--bind): 'x' is not an address ...`.
pub fn checked<T>(check: fn(&str) -> Result<T, String>) -> Checked<T> {
    Checked(check)
}

/// See [`checked`].
#[derive(Clone, Copy)]
pub struct Checked<T>(fn(&str) -> Result<T, String>);

impl<T: Clone + Send + Sync + 'static> clap::builder::TypedValueParser for Checked<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let text = value
            .to_str()
            .ok_or_else(|| invalid(cmd, arg, "is not valid UTF-8"))?;
        (self.0)(text).map_err(|problem| invalid(cmd, arg, &problem))
    }
}

/// The value parser of `PINV_JWT_SECRET`: long enough, and from the environment only.
#[derive(Clone, Copy)]
struct EnvOnlySecret;

impl clap::builder::TypedValueParser for EnvOnlySecret {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        self.parse_ref_(cmd, arg, value, clap::parser::ValueSource::CommandLine)
    }

    fn parse_ref_(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
        source: clap::parser::ValueSource,
    ) -> Result<String, clap::Error> {
        if source != clap::parser::ValueSource::EnvVariable {
            return Err(clap::Error::raw(
                clap::error::ErrorKind::UnknownArgument,
                // Never echo what may be a secret typed on the command line.
                "unexpected argument: the HS256 secret is read from PINV_JWT_SECRET only, never from the command line\n",
            )
            .with_cmd(cmd));
        }
        let secret = value
            .to_str()
            .ok_or_else(|| invalid(cmd, arg, "is not valid UTF-8"))?;
        // Shorter HS256 secrets can be brute-forced offline from one token.
        if secret.len() < 32 {
            return Err(invalid(cmd, arg, "must be at least 32 characters"));
        }
        Ok(secret.to_owned())
    }
}

fn invalid(cmd: &clap::Command, arg: Option<&clap::Arg>, problem: &str) -> clap::Error {
    let name = match arg.map(|a| (a.get_env(), a.get_long())) {
        Some((Some(env), Some(long))) => format!("{} (--{long})", env.to_string_lossy()),
        Some((Some(env), None)) => env.to_string_lossy().into_owned(),
        Some((None, Some(long))) => format!("--{long}"),
        _ => arg.map_or_else(|| "value".to_owned(), |a| a.get_id().to_string()),
    };
    clap::Error::raw(
        clap::error::ErrorKind::ValueValidation,
        format!("{name}: {problem}\n"),
    )
    .with_cmd(cmd)
}

/// `cmd` with every argument whose variable is set but empty treated as if it were unset:
/// `PINV_BIND=` means the default, as an unset variable does.
pub fn ignore_empty_env(cmd: clap::Command) -> clap::Command {
    let cmd = cmd.mut_args(|a| match a.get_env() {
        Some(name) if std::env::var_os(name).is_some_and(|v| v.is_empty()) => a.env(None::<&str>),
        _ => a,
    });
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    names
        .iter()
        .fold(cmd, |cmd, name| cmd.mut_subcommand(name, ignore_empty_env))
}

fn parse_indexed_paths(text: &str) -> Result<crate::core::index::IndexedPaths, String> {
    crate::core::index::IndexedPaths::parse(text.split(',').filter(|p| !p.trim().is_empty()))
}

fn parse_public_url(text: &str) -> Result<String, String> {
    let base = text.trim_end_matches('/');
    let rest = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['?', '#', ' ']) => Ok(base.to_owned()),
        _ => Err(format!(
            "'{text}' is not an http(s) base URL such as https://pinv.example.com"
        )),
    }
}

fn parse_bind(text: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("'{text}' is not an address such as 127.0.0.1:8080"))
}

fn parse_database(name: &str) -> Result<String, String> {
    // MongoDB refuses these characters in database names; say so now, not on first write.
    if name
        .chars()
        .any(|c| matches!(c, '/' | '\\' | '.' | ' ' | '"' | '$' | '\0'))
    {
        return Err(format!(
            "'{name}' contains a character MongoDB does not allow in a database name"
        ));
    }
    Ok(name.to_owned())
}

fn parse_millis(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(format!("'{text}' is not a positive number of milliseconds")),
    }
}

/// The default of `PINV_JWT_LEEWAY_SECONDS` (its flag's `default_value` says the same).
pub const DEFAULT_JWT_LEEWAY_SECONDS: u64 = 60;

/// Largest accepted `PINV_JWT_LEEWAY_SECONDS` (a day): more would make `exp` meaningless.
const MAX_JWT_LEEWAY_SECONDS: u64 = 86_400;

fn parse_leeway(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(s) if s <= MAX_JWT_LEEWAY_SECONDS => Ok(s),
        _ => Err(format!(
            "'{text}' is not a number of seconds from 0 to {MAX_JWT_LEEWAY_SECONDS}"
        )),
    }
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(format!("'{text}' is not a positive number of seconds")),
    }
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim() {
        "0" | "false" => Ok(false),
        "1" | "true" => Ok(true),
        other => Err(format!("'{other}' is not true, false, 1 or 0")),
    }
}

/// A positive number (of bytes, items, ...).
pub fn parse_positive_usize(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("'{text}' is not a positive number")),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn parse(flags: &[&str]) -> Result<Settings, String> {
        parse_without_env::<SettingsArgs>(flags)
            .map_err(|e| e.to_string())?
            .settings()
            .map_err(|e| e.to_string())
    }

    fn jwt(secret: Option<&str>, file: Option<&str>, alg: Option<&str>) -> JwtArgs {
        JwtArgs {
            secret: secret.map(Into::into),
            jwt_public_key_file: file.map(Into::into),
            jwt_algorithm: alg.map(|a| JwtAlgorithm::parse(a).unwrap()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.server.bind, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            s.store.location,
            StoreSetting::Embedded("./pinv-data".into())
        );
        assert_eq!(s.mongodb.database, "pinv");
        assert_eq!(s.mongodb.write_concern, WriteConcernSetting::Majority);
        assert_eq!(s.mongodb.timeout, Duration::from_millis(5000));
        assert!(!s.mongodb.one_at_a_time);
        assert_eq!(s.rules.dir, PathBuf::from("./merge-rules"));
        assert_eq!(s.jwt, JwtSettings::default());
        assert_eq!(s.server.max_body_bytes, 1_048_576);
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
    fn flags_are_read() {
        let s = parse(&[
            "--bind",
            "0.0.0.0:9000",
            "--store",
            "memory",
            "--rules",
            "r",
        ])
        .unwrap();
        assert_eq!(s.server.bind, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(s.store.location, StoreSetting::Memory);
        assert_eq!(s.rules.dir, PathBuf::from("r"));
    }

    #[test]
    fn bad_value_names_the_variable_and_the_flag() {
        let e = parse(&["--bind", "localhost"]).unwrap_err();
        assert!(
            e.contains("PINV_BIND (--bind): 'localhost' is not an address"),
            "{e}"
        );
    }

    #[test]
    fn bad_max_body_bytes_is_refused() {
        for v in ["abc", "0", "-5"] {
            let e = parse(&[&format!("--max-body-bytes={v}")]).unwrap_err();
            assert!(
                e.contains("PINV_MAX_BODY_BYTES (--max-body-bytes): "),
                "{v}: {e}"
            );
        }
        let s = parse(&["--max-body-bytes", "2048"]).unwrap();
        assert_eq!(s.server.max_body_bytes, 2048);
    }

    #[test]
    fn workers_are_a_positive_count_or_unset() {
        assert_eq!(parse(&[]).unwrap().server.workers, None);
        assert_eq!(parse(&["--workers", "3"]).unwrap().server.workers, Some(3));
        for v in ["0", "many"] {
            let e = parse(&[&format!("--workers={v}")]).unwrap_err();
            assert!(e.contains("PINV_WORKERS (--workers): "), "{v}: {e}");
        }
    }

    #[test]
    fn body_budget_must_hold_one_largest_body() {
        let e = parse(&["--max-body-bytes", "2048", "--body-budget-bytes", "1024"]).unwrap_err();
        assert!(e.starts_with("PINV_BODY_BUDGET_BYTES: "), "{e}");
        let s = parse(&["--max-body-bytes", "2048", "--body-budget-bytes", "2048"]).unwrap();
        assert_eq!(s.server.body_budget_bytes, 2048);
        let e = parse(&["--body-timeout-secs", "0"]).unwrap_err();
        assert!(
            e.contains("PINV_BODY_TIMEOUT_SECS (--body-timeout-secs): "),
            "{e}"
        );
    }

    #[test]
    fn hs256_secret_is_read() {
        let s = jwt(Some(SECRET), None, None).settings().unwrap();
        assert_eq!(
            s.key,
            Some(JwtKey::Hs256 {
                secret: SECRET.into()
            })
        );
        let s = jwt(Some(SECRET), None, Some("hs256")).settings().unwrap();
        assert!(matches!(s.key, Some(JwtKey::Hs256 { .. })));
        let e = jwt(Some(SECRET), None, Some("RS256"))
            .settings()
            .unwrap_err();
        assert_eq!(e.variable, "PINV_JWT_ALGORITHM");
    }

    #[test]
    fn secret_is_refused_on_the_command_line() {
        // Whatever its length: a secret typed there is visible to every local user.
        let e = parse(&[SECRET]).unwrap_err();
        assert!(e.contains("PINV_JWT_SECRET only"), "{e}");
        assert!(!e.contains(SECRET), "{e}");
    }

    #[test]
    fn public_key_needs_an_asymmetric_algorithm() {
        let e = jwt(None, Some("k.pem"), None).settings().unwrap_err();
        assert_eq!(e.variable, "PINV_JWT_ALGORITHM");
        let e = jwt(None, Some("k.pem"), Some("HS256"))
            .settings()
            .unwrap_err();
        assert_eq!(e.variable, "PINV_JWT_ALGORITHM");
        let e = parse(&["--jwt-algorithm", "none"]).unwrap_err();
        assert!(e.contains("PINV_JWT_ALGORITHM (--jwt-algorithm): "), "{e}");
        let s = parse(&[
            "--jwt-public-key-file",
            "k.pem",
            "--jwt-algorithm",
            "es256",
            "--jwt-issuer",
            "idp",
            "--jwt-audience",
            "pinv",
        ])
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
                leeway_seconds: DEFAULT_JWT_LEEWAY_SECONDS,
            }
        );
    }

    #[test]
    fn algorithm_without_a_key_is_refused() {
        let e = parse(&["--jwt-algorithm", "RS256"]).unwrap_err();
        assert!(e.starts_with("PINV_JWT_ALGORITHM: "), "{e}");
    }

    #[test]
    fn secret_and_public_key_together_are_refused() {
        let e = jwt(Some(SECRET), Some("k.pem"), None)
            .settings()
            .unwrap_err();
        assert_eq!(e.variable, "PINV_JWT_SECRET");
    }

    #[test]
    fn secret_is_not_in_debug_output() {
        let args = jwt(Some(SECRET), None, None);
        assert!(!format!("{args:?}").contains(SECRET));
        let s = args.settings().unwrap();
        assert!(!format!("{s:?}").contains(SECRET));
    }

    #[test]
    fn bad_database_name_is_refused() {
        let e = parse(&["--mongodb-database", "a.b"]).unwrap_err();
        assert!(
            e.contains("PINV_MONGODB_DATABASE (--mongodb-database): "),
            "{e}"
        );
    }

    #[test]
    fn write_concern_is_majority_a_number_of_nodes_or_a_tag() {
        let wc = |v: &str| parse(&["--mongodb-write-concern", v]).map(|s| s.mongodb.write_concern);
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
            let e = WriteConcernSetting::parse(v);
            assert!(e.is_err(), "{v}");
            let e = parse(&[&format!("--mongodb-write-concern={v}")]).unwrap_err();
            assert!(
                e.contains("PINV_MONGODB_WRITE_CONCERN (--mongodb-write-concern): "),
                "{v}: {e}"
            );
        }
    }

    #[test]
    fn mongodb_timeout_is_positive_milliseconds() {
        let s = parse(&["--mongodb-timeout-ms", "250"]).unwrap();
        assert_eq!(s.mongodb.timeout, Duration::from_millis(250));
        for v in ["0", "-5", "5s", "1.5"] {
            let e = parse(&[&format!("--mongodb-timeout-ms={v}")]).unwrap_err();
            assert!(
                e.contains("PINV_MONGODB_TIMEOUT_MS (--mongodb-timeout-ms): "),
                "{v}: {e}"
            );
        }
    }

    #[test]
    fn one_at_a_time_is_a_boolean() {
        let on = |v: &str| parse(&["--mongodb-one-at-a-time", v]).map(|s| s.mongodb.one_at_a_time);
        assert_eq!(on("1"), Ok(true));
        assert_eq!(on("true"), Ok(true));
        assert_eq!(on("0"), Ok(false));
        assert_eq!(on("false"), Ok(false));
        assert!(on("yes")
            .unwrap_err()
            .contains("PINV_MONGODB_ONE_AT_A_TIME"));
    }

    #[test]
    fn for_tests_uses_the_declared_defaults() {
        let s = Settings::for_tests("rules", SECRET);
        let defaults = parse(&[]).unwrap();
        assert_eq!(s.mongodb, defaults.mongodb);
        assert_eq!(s.server.max_body_bytes, defaults.server.max_body_bytes);
        assert_eq!(s.server.bind.port(), 0);
        assert_eq!(s.store.location, StoreSetting::Memory);
    }
}
