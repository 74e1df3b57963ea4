//! The `pinv` command line: `serve`, `token`, `check-rules`.
//!
//! Commands turn flags and environment into [`Settings`] and call into the library; every
//! failure is printed as one message and a non-zero exit code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use crate::api::auth::{mint_hs256, ANY_SOURCE};
use crate::config::{JwtKey, RawSettings, Settings, StoreSetting};
use crate::startup::Application;

/// File (in the embedded store's directory) holding the secret `serve --dev` made.
pub const DEV_SECRET_FILE: &str = "dev-jwt-secret";
/// Lifetime of the token `serve --dev` prints.
pub const DEV_TOKEN_TTL_SECONDS: u64 = 24 * 3600;
/// Event type of the `serve --dev` example (the default accepted type).
pub const DEV_EXAMPLE_TYPE: &str = "com.att.c360dataPrep.tmf637.post.v5";

/// PINV, the product-inventory merge store.
#[derive(Debug, Parser)]
#[command(name = "pinv", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API.
    Serve(ServeArgs),
    /// Mint a token with the configured HS256 secret and print it.
    Token(TokenArgs),
    /// Validate a merge-rules directory.
    CheckRules(CheckRulesArgs),
    /// Re-apply the merge rules to every stored product (or those matching filters).
    Remerge(RemergeArgs),
    /// Fill the store with synthetic products (for benchmarks).
    Generate(GenerateArgs),
}

/// Flags that override `PINV_*` variables of the same meaning. There is deliberately no
/// flag for the HS256 secret: command lines are visible to every local user.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigFlags {
    /// Address to listen on [env: PINV_BIND] (default 127.0.0.1:8080).
    #[arg(long)]
    pub bind: Option<String>,
    /// Store: a directory, `memory`, or a MongoDB URI [env: PINV_STORE] (default ./pinv-data).
    #[arg(long)]
    pub store: Option<String>,
    /// MongoDB database [env: PINV_MONGODB_DATABASE] (default pinv).
    #[arg(long)]
    pub mongodb_database: Option<String>,
    /// MongoDB write concern: majority, a number of nodes, or a tag
    /// [env: PINV_MONGODB_WRITE_CONCERN] (default majority).
    #[arg(long)]
    pub mongodb_write_concern: Option<String>,
    /// Bound on every MongoDB call, in milliseconds [env: PINV_MONGODB_TIMEOUT_MS]
    /// (default 5000).
    #[arg(long)]
    pub mongodb_timeout_ms: Option<String>,
    /// One MongoDB call at a time, for test servers without transaction isolation such as
    /// nx-27017 (never for MongoDB) [env: PINV_MONGODB_ONE_AT_A_TIME] (default false).
    #[arg(long)]
    pub mongodb_one_at_a_time: Option<String>,
    /// Merge-rules directory [env: PINV_RULES_DIR] (default ./merge-rules).
    #[arg(long)]
    pub rules_dir: Option<String>,
    /// PEM public key for RS256/ES256 tokens [env: PINV_JWT_PUBLIC_KEY_FILE].
    #[arg(long)]
    pub jwt_public_key_file: Option<String>,
    /// RS256 or ES256, with --jwt-public-key-file [env: PINV_JWT_ALGORITHM].
    #[arg(long)]
    pub jwt_algorithm: Option<String>,
    /// Required token issuer [env: PINV_JWT_ISSUER].
    #[arg(long)]
    pub jwt_issuer: Option<String>,
    /// Required token audience [env: PINV_JWT_AUDIENCE].
    #[arg(long)]
    pub jwt_audience: Option<String>,
    /// Largest request body in bytes [env: PINV_MAX_BODY_BYTES] (default 1048576).
    #[arg(long)]
    pub max_body_bytes: Option<String>,
    /// Seconds a request body has to arrive in full [env: PINV_BODY_TIMEOUT_SECS] (default 15).
    #[arg(long)]
    pub body_timeout_secs: Option<String>,
    /// Bytes of request bodies handled at once [env: PINV_BODY_BUDGET_BYTES] (default 8388608).
    #[arg(long)]
    pub body_budget_bytes: Option<String>,
}

impl ConfigFlags {
    fn raw(&self) -> RawSettings {
        RawSettings {
            bind: self.bind.clone(),
            store: self.store.clone(),
            mongodb_database: self.mongodb_database.clone(),
            mongodb_write_concern: self.mongodb_write_concern.clone(),
            mongodb_timeout_ms: self.mongodb_timeout_ms.clone(),
            mongodb_one_at_a_time: self.mongodb_one_at_a_time.clone(),
            rules_dir: self.rules_dir.clone(),
            jwt_secret: None,
            jwt_public_key_file: self.jwt_public_key_file.clone(),
            jwt_algorithm: self.jwt_algorithm.clone(),
            jwt_issuer: self.jwt_issuer.clone(),
            jwt_audience: self.jwt_audience.clone(),
            max_body_bytes: self.max_body_bytes.clone(),
            body_timeout_secs: self.body_timeout_secs.clone(),
            body_budget_bytes: self.body_budget_bytes.clone(),
        }
    }

    /// The environment overlaid with these flags, parsed.
    pub fn settings(&self) -> Result<Settings, String> {
        RawSettings::from_process_env()
            .overlay(self.raw())
            .parse()
            .map_err(|e| e.to_string())
    }
}

/// `pinv serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Development mode: with no JWT key configured, make (once) a secret in the data
    /// directory and print a ready-to-paste curl line with a token.
    #[arg(long)]
    pub dev: bool,
    /// Configuration.
    #[command(flatten)]
    pub config: ConfigFlags,
}

/// `pinv token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// A source the token may write for (repeatable); `*` is every source.
    #[arg(long = "source", required = true)]
    pub sources: Vec<String>,
    /// Lifetime: a number with s, m, h or d (e.g. 30m, 1h, 7d).
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// Configuration (issuer, audience, and the store whose dev secret to fall back on).
    #[command(flatten)]
    pub config: ConfigFlags,
}

/// `pinv check-rules`.
#[derive(Debug, Args)]
pub struct CheckRulesArgs {
    /// The directory (default: PINV_RULES_DIR or ./merge-rules).
    pub dir: Option<PathBuf>,
}

/// `pinv remerge`.
#[derive(Debug, Args)]
pub struct RemergeArgs {
    /// Report what would change (per product and per field); write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The rules to apply (default: PINV_RULES_DIR or ./merge-rules).
    #[arg(long = "rules")]
    pub rules: Option<PathBuf>,
    /// Only products matching PATH=VALUE, as in GET /products (repeatable).
    #[arg(long = "filter", value_parser = parse_filter)]
    pub filters: Vec<(String, String)>,
    /// Products read and written per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Configuration (the store).
    #[command(flatten)]
    pub config: ConfigFlags,
}

/// `pinv generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// How many products to write.
    #[arg(long)]
    pub count: u64,
    /// Number of the first product (use different ranges to add to a store).
    #[arg(long, default_value_t = 0)]
    pub first: u64,
    /// Products per write.
    #[arg(long, default_value_t = 1000)]
    pub batch: u64,
    /// Configuration (the store and the rules).
    #[command(flatten)]
    pub config: ConfigFlags,
}

fn parse_filter(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((path, value)) if !path.is_empty() => Ok((path.to_owned(), value.to_owned())),
        _ => Err(format!("'{text}' is not PATH=VALUE")),
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Token(args) => token(args),
        Command::CheckRules(args) => check_rules(args),
        Command::Remerge(args) => remerge(args),
        Command::Generate(args) => generate(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("pinv: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let mut settings = args.config.settings()?;
    crate::telemetry::init();
    let mut dev_secret = None;
    if args.dev && settings.jwt.key.is_none() {
        let (secret, file) = dev_secret_for(&settings.store).map_err(|e| e.to_string())?;
        match &file {
            Some(f) => tracing::info!(file = %f.display(), "dev mode: using the dev JWT secret"),
            None => tracing::info!("dev mode: using a temporary JWT secret"),
        }
        settings.jwt.key = Some(JwtKey::Hs256 {
            secret: secret.clone(),
        });
        dev_secret = Some(secret);
    }
    if settings.jwt.key.is_none() {
        // Refuse before opening the store: there is nothing to serve without auth.
        return Err(crate::api::auth::AuthConfigError::NoKey.to_string());
    }
    runtime()?.block_on(async move {
        let issuer = settings.jwt.issuer.clone();
        let audience = settings.jwt.audience.clone();
        let bind = settings.bind;
        let app = Application::build(settings)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(secret) = dev_secret {
            let token = mint_hs256(
                &secret,
                &[ANY_SOURCE.to_owned()],
                DEV_TOKEN_TTL_SECONDS,
                issuer.as_deref(),
                audience.as_deref(),
            )
            .map_err(|e| format!("cannot mint the dev token: {e}"))?;
            let host = if bind.ip().is_unspecified() {
                "127.0.0.1".to_owned()
            } else if bind.is_ipv6() {
                format!("[{}]", bind.ip())
            } else {
                bind.ip().to_string()
            };
            let url = format!("http://{host}:{}/products", app.port());
            println!("PINV dev mode. Try:\n\n{}\n", dev_curl_line(&url, &token));
            let _ = std::io::stdout().flush();
        }
        app.run_until_stopped()
            .await
            .map_err(|e| format!("server error: {e}"))
    })
}

fn token(args: TokenArgs) -> Result<(), String> {
    let settings = args.config.settings()?;
    let ttl = parse_ttl(&args.ttl).map_err(|e| format!("--ttl: {e}"))?;
    for s in &args.sources {
        if s != ANY_SOURCE {
            crate::core::Source::parse(s).map_err(|e| format!("--source '{s}': {e}"))?;
        }
    }
    let secret = match &settings.jwt.key {
        Some(JwtKey::Hs256 { secret }) => secret.clone(),
        Some(JwtKey::PublicKey { .. }) => {
            return Err("tokens for RS256/ES256 are minted by your identity provider; `pinv token` needs PINV_JWT_SECRET".into())
        }
        None => match &settings.store {
            StoreSetting::Embedded(dir) if dir.join(DEV_SECRET_FILE).is_file() => {
                eprintln!(
                    "pinv: PINV_JWT_SECRET is not set; using the dev secret of {}",
                    dir.display()
                );
                read_secret(&dir.join(DEV_SECRET_FILE)).map_err(|e| e.to_string())?
            }
            _ => return Err("PINV_JWT_SECRET is not set (and no `serve --dev` secret exists)".into()),
        },
    };
    let token = mint_hs256(
        &secret,
        &args.sources,
        ttl,
        settings.jwt.issuer.as_deref(),
        settings.jwt.audience.as_deref(),
    )
    .map_err(|e| format!("cannot mint the token: {e}"))?;
    println!("{token}");
    Ok(())
}

fn check_rules(args: CheckRulesArgs) -> Result<(), String> {
    let dir = match args.dir {
        Some(d) => d,
        None => PathBuf::from(
            std::env::var("PINV_RULES_DIR")
                .ok()
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| crate::config::DEFAULT_RULES_DIR.to_owned()),
        ),
    };
    let rules = crate::app::rules_loader::load_rules_dir(&dir).map_err(|e| e.to_string())?;
    println!(
        "{}: valid merge rules ({} field rules, {} ranked sources, {} accepted event types, hash {})",
        dir.display(),
        rules.fields.len(),
        rules.precedence.len(),
        rules.accepted_types.len(),
        rules.hash
    );
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn remerge(args: RemergeArgs) -> Result<(), String> {
    let mut settings = args.config.settings()?;
    if let Some(dir) = args.rules {
        settings.rules_dir = dir;
    }
    crate::telemetry::init();
    // Invalid rules stop the run before the store is even opened.
    let rules =
        crate::app::rules_loader::load_rules_dir(&settings.rules_dir).map_err(|e| e.to_string())?;
    let options = crate::app::remerge::RemergeOptions {
        dry_run: args.dry_run,
        filters: args.filters,
        batch: args.batch,
    };
    runtime()?.block_on(async move {
        let store = crate::startup::open_store(&settings)
            .await
            .map_err(|e| e.to_string())?;
        eprintln!(
            "pinv remerge: rules {} (hash {}){}",
            settings.rules_dir.display(),
            rules.hash,
            if options.dry_run { ", dry run" } else { "" }
        );
        let mut out = std::io::stdout();
        let summary = crate::app::remerge::run(store, Arc::new(rules), &options, &mut out)
            .await
            .map_err(|e| format!("re-merge stopped: {e}; run it again to finish"))?;
        let verb = if options.dry_run { "would change" } else { "changed" };
        for (field, n) in &summary.fields {
            println!("field {field}: {verb} in {n} products");
        }
        println!("run {}: {}", summary.run_id, summary.line());
        if summary.failed > 0 {
            return Err(format!(
                "{} products kept changing under live writes and were left as they were; run it again",
                summary.failed
            ));
        }
        Ok(())
    })
}

fn generate(args: GenerateArgs) -> Result<(), String> {
    let settings = args.config.settings()?;
    let rules =
        crate::app::rules_loader::load_rules_dir(&settings.rules_dir).map_err(|e| e.to_string())?;
    runtime()?.block_on(async move {
        let store = crate::startup::open_store(&settings)
            .await
            .map_err(|e| e.to_string())?;
        let started = std::time::Instant::now();
        let bar = indicatif::ProgressBar::new(args.count);
        let written = crate::app::generate::generate(
            store,
            Arc::new(rules),
            args.first,
            args.count,
            args.batch,
            |n| bar.set_position(n),
        )
        .await
        .map_err(|e| format!("generation stopped: {e}"))?;
        bar.finish_and_clear();
        println!(
            "generated {written} products in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    })
}

/// Reads a lifetime such as `90s`, `30m`, `1h`, `7d` or `3600` (seconds) into seconds.
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration such as 30m, 1h or 7d"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("'{text}': unit must be s, m, h or d")),
    };
    match n.checked_mul(factor) {
        Some(0) => Err("must be longer than zero".into()),
        Some(s) => Ok(s),
        None => Err(format!("'{text}' is too long")),
    }
}

/// A fresh random 32-byte secret, hex-encoded.
fn random_secret() -> String {
    // Two v4 UUIDs: 244 random bits from the OS generator, which `uuid` already uses;
    // plenty for an HMAC key and no extra dependency.
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    a.as_bytes()
        .iter()
        .chain(b.as_bytes())
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read_secret(path: &Path) -> std::io::Result<String> {
    let secret = std::fs::read_to_string(path)?.trim().to_owned();
    if secret.len() < 32 {
        return Err(std::io::Error::other(format!(
            "{} holds no usable secret; delete it to make a new one",
            path.display()
        )));
    }
    Ok(secret)
}

/// The `serve --dev` secret: kept in `<data dir>/dev-jwt-secret` (made once, mode 0600) for
/// the embedded store, temporary otherwise. Returns the secret and the file, if any.
pub fn dev_secret_for(store: &StoreSetting) -> std::io::Result<(String, Option<PathBuf>)> {
    let StoreSetting::Embedded(dir) = store else {
        return Ok((random_secret(), None));
    };
    std::fs::create_dir_all(dir)?;
    let path = dir.join(DEV_SECRET_FILE);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(&path) {
        Ok(mut f) => {
            let secret = random_secret();
            f.write_all(secret.as_bytes())?;
            f.sync_all()?;
            Ok((secret, Some(path)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok((read_secret(&path)?, Some(path)))
        }
        Err(e) => Err(e),
    }
}

/// The small valid event the dev `curl` line posts (single product, source `dev`).
pub fn dev_example() -> Value {
    json!({
        "headers": {
            "id": "dev-example-1",
            "source": "dev",
            "type": DEV_EXAMPLE_TYPE,
            "time": "2024-10-03 12:34:56.123Z",
            "datacontenttype": "application/json"
        },
        "value": {
            "@type": "Product",
            "id": "dev-product-1",
            "name": "Example product",
            "status": "active",
            "externalReference": [{
                "@type": "ExternalIdentifier",
                "externalIdentifierType": "CircuitID",
                "id": "DEV.CIRCUIT.1",
                "owner": "dev"
            }]
        }
    })
}

/// The ready-to-paste `curl` line of `serve --dev`.
pub fn dev_curl_line(url: &str, token: &str) -> String {
    // The example has no single quote, so single-quoting it is safe for POSIX shells.
    format!(
        "curl -sS -X POST '{url}' -H 'Content-Type: application/json' -H 'Authorization: Bearer {token}' -d '{}'",
        dev_example()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn token_needs_a_source_and_accepts_several() {
        assert!(Cli::try_parse_from(["pinv", "token"]).is_err());
        let cli = Cli::try_parse_from(["pinv", "token", "--source", "a", "--source", "*"]).unwrap();
        let Command::Token(t) = cli.command else {
            panic!("not token")
        };
        assert_eq!(t.sources, vec!["a", "*"]);
        assert_eq!(t.ttl, "1h");
    }

    #[test]
    fn serve_flags_are_read() {
        let cli = Cli::try_parse_from([
            "pinv",
            "serve",
            "--dev",
            "--bind",
            "0.0.0.0:1",
            "--store",
            "memory",
        ])
        .unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        assert!(s.dev);
        assert_eq!(s.config.bind.as_deref(), Some("0.0.0.0:1"));
        assert_eq!(s.config.store.as_deref(), Some("memory"));
    }

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("30m"), Ok(1800));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("2d"), Ok(172_800));
        assert_eq!(parse_ttl("3600"), Ok(3600));
        for bad in ["", "h", "1w", "0h", "-1h", "1.5h", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dev_secret_is_made_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = StoreSetting::Embedded(dir.path().join("data"));
        let (first, file) = dev_secret_for(&store).unwrap();
        let file = file.unwrap();
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (second, _) = dev_secret_for(&store).unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn memory_store_gets_a_temporary_secret() {
        let (a, file) = dev_secret_for(&StoreSetting::Memory).unwrap();
        assert!(file.is_none());
        assert_ne!(a, dev_secret_for(&StoreSetting::Memory).unwrap().0);
    }

    #[test]
    fn curl_line_carries_token_and_example() {
        let line = dev_curl_line("http://127.0.0.1:8080/products", "TOKEN");
        assert!(line.contains("Authorization: Bearer TOKEN"));
        assert!(line.contains("\"source\":\"dev\""));
        assert_eq!(line.matches('\'').count(), 8, "quotes must pair up: {line}");
    }
}
