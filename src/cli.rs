//! The `pinv` command line: `serve`, `token`, `check-rules`, `remerge`, `generate`.
//!
//! Each command flattens the setting groups of [`crate::config`] it uses, so its `--help`
//! offers only those. A failed command prints its error with the chain of causes and exits
//! non-zero.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::{json, Value};

use crate::api::auth::{mint_hs256, mint_hs256_with, ANY_SOURCE};
use crate::config::{
    checked, ignore_empty_env, JwtArgs, JwtKey, JwtSettings, MongoSettings, RulesSettings,
    SettingsArgs, StoreSetting, StoreSettings,
};
use crate::startup::Application;

mod adapt;

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

impl Cli {
    /// Parses the process's arguments and `PINV_*` variables (an empty variable counts as
    /// unset); on a usage error or a bad value, prints it and exits.
    pub fn from_env_and_args() -> Self {
        let matches = ignore_empty_env(Self::command()).get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API.
    Serve(ServeArgs),
    /// Mint a token signed with the HS256 secret of PINV_JWT_SECRET and print it.
    Token(TokenArgs),
    /// Validate a merge-rules directory.
    CheckRules(CheckRulesArgs),
    /// Validate an adapters directory (against the merge rules).
    CheckAdapters(adapt::CheckAdaptersArgs),
    /// Print what an adapter makes of a native payload (envelopes or patches); writes nothing.
    Adapt(adapt::AdaptArgs),
    /// Re-apply the merge rules to every stored product (or those matching filters).
    Remerge(RemergeArgs),
    /// Fill the store with synthetic products (for benchmarks).
    Generate(GenerateArgs),
}

/// `pinv serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Development mode: with no JWT key configured, make (once) a secret in the data
    /// directory and print a ready-to-paste curl line with a token.
    #[arg(long)]
    pub dev: bool,
    /// Every setting.
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// `pinv token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// A source the token may write for (repeatable); `*` is every source.
    #[arg(long = "source", required_unless_present = "admin")]
    pub sources: Vec<String>,
    /// Add the claim `"pinv_admin": true`, which the /admin routes need.
    #[arg(long)]
    pub admin: bool,
    /// Lifetime: a number with s, m, h or d (e.g. 30m, 1h, 7d).
    #[arg(long, default_value = "1h", value_parser = checked(parse_ttl))]
    pub ttl: u64,
    /// The secret, issuer and audience.
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// The store whose `serve --dev` secret to fall back on.
    #[command(flatten)]
    pub store: StoreSettings,
}

/// `pinv check-rules`.
#[derive(Debug, Args)]
pub struct CheckRulesArgs {
    /// The directory (default: --rules-dir).
    pub dir: Option<PathBuf>,
    /// The rules.
    #[command(flatten)]
    pub rules: RulesSettings,
}

/// `pinv remerge`.
#[derive(Debug, Args)]
pub struct RemergeArgs {
    /// Report what would change (per product and per field); write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Only products matching PATH=VALUE, as in GET /products (repeatable).
    #[arg(long = "filter", value_parser = parse_filter)]
    pub filters: Vec<(String, String)>,
    /// Products read and written per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// The running `pinv serve` (http://HOST:PORT) to have re-merge instead: used when given,
    /// and when the embedded store is in use (then by default the address of PINV_BIND).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// The rules to apply.
    #[command(flatten)]
    pub rules: RulesSettings,
    /// The store.
    #[command(flatten)]
    pub store: StoreSettings,
    /// The MongoDB connection, when the store is MongoDB.
    #[command(flatten)]
    pub mongodb: MongoSettings,
    /// The secret, issuer and audience of the admin token minted to drive a server
    /// (unless PINV_ADMIN_TOKEN gives one).
    #[command(flatten)]
    pub jwt: JwtArgs,
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
    /// The rules the products are merged with.
    #[command(flatten)]
    pub rules: RulesSettings,
    /// The store.
    #[command(flatten)]
    pub store: StoreSettings,
    /// The MongoDB connection, when the store is MongoDB.
    #[command(flatten)]
    pub mongodb: MongoSettings,
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
        Command::CheckAdapters(args) => adapt::check_adapters(args),
        Command::Adapt(args) => adapt::adapt(args),
        Command::Remerge(args) => remerge(args),
        Command::Generate(args) => generate(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:?}` of anyhow is the message, then "Caused by:" and each cause.
            eprintln!("Error: {error:?}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut settings = args.settings.settings()?;
    crate::telemetry::init();
    let mut dev_secret = None;
    if args.dev && settings.jwt.key.is_none() {
        let (secret, file) = dev_secret_for(&settings.store.location)
            .context("cannot make or read the dev JWT secret")?;
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
        return Err(crate::api::auth::AuthConfigError::NoKey.into());
    }
    runtime()?.block_on(async move {
        let issuer = settings.jwt.issuer.clone();
        let audience = settings.jwt.audience.clone();
        let bind = settings.server.bind;
        let app = Application::build(settings).await?;
        if let Some(secret) = dev_secret {
            let token = mint_hs256(
                &secret,
                &[ANY_SOURCE.to_owned()],
                DEV_TOKEN_TTL_SECONDS,
                issuer.as_deref(),
                audience.as_deref(),
            )
            .context("cannot mint the dev token")?;
            let url = format!(
                "{}/products",
                local_url(std::net::SocketAddr::new(bind.ip(), app.port()))
            );
            println!("PINV dev mode. Try:\n\n{}\n", dev_curl_line(&url, &token));
            let _ = std::io::stdout().flush();
        }
        app.run_until_stopped().await.context("server error")
    })
}

/// The HS256 secret tokens are minted with: PINV_JWT_SECRET, else the `serve --dev`
/// secret of the embedded store's directory; `None` when there is neither.
fn minting_secret(jwt: &JwtSettings, store: &StoreSetting) -> anyhow::Result<Option<String>> {
    match &jwt.key {
        Some(JwtKey::Hs256 { secret }) => Ok(Some(secret.clone())),
        Some(JwtKey::PublicKey { .. }) => {
            bail!("tokens for RS256/ES256 are minted by your identity provider; `pinv token` needs PINV_JWT_SECRET")
        }
        None => match store {
            StoreSetting::Embedded(dir) if dir.join(DEV_SECRET_FILE).is_file() => {
                eprintln!(
                    "pinv: PINV_JWT_SECRET is not set; using the dev secret of {}",
                    dir.display()
                );
                let secret = read_secret(&dir.join(DEV_SECRET_FILE))
                    .context("cannot read the dev secret")?;
                Ok(Some(secret))
            }
            _ => Ok(None),
        },
    }
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let jwt = args.jwt.settings()?;
    for s in &args.sources {
        if s != ANY_SOURCE {
            crate::core::Source::parse(s).with_context(|| format!("--source '{s}'"))?;
        }
    }
    let Some(secret) = minting_secret(&jwt, &args.store.location)? else {
        bail!("PINV_JWT_SECRET is not set (and no `serve --dev` secret exists)")
    };
    let token = mint_hs256_with(
        &secret,
        &args.sources,
        args.ttl,
        jwt.issuer.as_deref(),
        jwt.audience.as_deref(),
        args.admin,
    )
    .context("cannot mint the token")?;
    println!("{token}");
    Ok(())
}

fn check_rules(args: CheckRulesArgs) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or(args.rules.dir);
    let rules = crate::app::rules_loader::load_rules_dir(&dir)?;
    for warning in rules.warnings() {
        eprintln!("warning: {warning}");
    }
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn remerge(args: RemergeArgs) -> anyhow::Result<()> {
    let rules_dir = args.rules.dir;
    crate::telemetry::init();
    // Invalid rules stop the run before the store is even opened.
    let rules = crate::app::rules_loader::load_rules_dir(&rules_dir)?;
    let options = crate::app::remerge::RemergeOptions {
        dry_run: args.dry_run,
        filters: args.filters,
        batch: args.batch,
    };
    let jwt = args.jwt;
    let store_setting = args.store;
    runtime()?.block_on(async move {
        let server = match args.server {
            Some(url) => Some(url),
            None => match crate::startup::open_store(&store_setting, &args.mongodb).await {
                Ok(store) => {
                    eprintln!(
                        "pinv remerge: rules {} (hash {}){}",
                        rules_dir.display(),
                        rules.hash,
                        if options.dry_run { ", dry run" } else { "" }
                    );
                    let mut out = std::io::stdout();
                    let summary =
                        crate::app::remerge::run(store, Arc::new(rules), &options, &mut out)
                            .await
                            .context("re-merge stopped; run it again to finish")?;
                    return print_remerge_summary(&summary, options.dry_run);
                }
                // A running `pinv serve` holds the embedded store: it re-merges instead.
                Err(crate::startup::StartupError::Store(ref s))
                    if crate::store::embedded::is_in_use(s) =>
                {
                    eprintln!("pinv remerge: {s}; asking the running server to re-merge");
                    None
                }
                Err(e) => return Err(e.into()),
            },
        };
        let url = match server {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => local_url(bind_from_env()?),
        };
        let token = admin_token(jwt, &store_setting.location)?;
        eprintln!(
            "pinv remerge: rules {} (hash {}){}, run by the server at {url}",
            rules_dir.display(),
            rules.hash,
            if options.dry_run { ", dry run" } else { "" }
        );
        let summary = remerge_on_server(&url, &token, &rules.hash, &options).await?;
        print_remerge_summary(&summary, options.dry_run)
    })
}

/// The summary lines of a run, local or on a server; an error when products failed.
fn print_remerge_summary(
    summary: &crate::app::remerge::RemergeSummary,
    dry_run: bool,
) -> anyhow::Result<()> {
    let verb = if dry_run { "would change" } else { "changed" };
    for (field, n) in &summary.fields {
        println!("field {field}: {verb} in {n} products");
    }
    println!("run {}: {}", summary.run_id, summary.line());
    if summary.failed > 0 {
        return Err(anyhow!(
            "{} products kept changing under live writes and were left as they were; run it again",
            summary.failed
        ));
    }
    Ok(())
}

/// `http://HOST:PORT` of a server listening on `bind`, as a local client reaches it.
fn local_url(bind: std::net::SocketAddr) -> String {
    let host = if bind.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else if bind.is_ipv6() {
        format!("[{}]", bind.ip())
    } else {
        bind.ip().to_string()
    };
    format!("http://{host}:{}", bind.port())
}

/// The address `pinv serve` listens on by the same environment (PINV_BIND, or its default).
fn bind_from_env() -> anyhow::Result<std::net::SocketAddr> {
    let text = std::env::var("PINV_BIND")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_BIND.to_owned());
    text.trim().parse().map_err(|_| {
        anyhow!(
            "PINV_BIND: '{text}' is not an address such as {DEFAULT_BIND}; or give --server URL"
        )
    })
}

/// `pinv serve`'s default address.
const DEFAULT_BIND: &str = "127.0.0.1:8080";

/// How long the token `pinv remerge` mints to drive a server lives: a long run is followed
/// with it until the end.
const REMERGE_TOKEN_TTL_SECONDS: u64 = 24 * 3600;

/// The admin token to drive a server with: PINV_ADMIN_TOKEN, else one minted (admin claim,
/// no source) with the secret `pinv token` would use.
fn admin_token(jwt: JwtArgs, store: &StoreSetting) -> anyhow::Result<String> {
    if let Some(token) = std::env::var("PINV_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        return Ok(token.trim().to_owned());
    }
    let jwt = jwt.settings()?;
    let secret = minting_secret(&jwt, store)
        .context("set PINV_ADMIN_TOKEN to an admin token from your identity provider")?
        .ok_or_else(|| {
            anyhow!(
                "driving the server needs an admin token: set PINV_JWT_SECRET as the server has \
                 it, or PINV_ADMIN_TOKEN to a token with \"pinv_admin\": true (`pinv token --admin`)"
            )
        })?;
    mint_hs256_with(
        &secret,
        &[],
        REMERGE_TOKEN_TTL_SECONDS,
        jwt.issuer.as_deref(),
        jwt.audience.as_deref(),
        true,
    )
    .context("cannot mint the admin token")
}

/// The error a server answered: its code and message.
async fn server_error(res: reqwest::Response) -> (u16, String, String) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
    let message = body["error"]["message"]
        .as_str()
        .map_or_else(|| format!("HTTP {status}"), str::to_owned);
    (status, code, message)
}

/// Has the server at `url` re-merge with its loaded rules (which must have `rules_hash`),
/// prints progress every few seconds and returns the summary.
async fn remerge_on_server(
    url: &str,
    token: &str,
    rules_hash: &str,
    options: &crate::app::remerge::RemergeOptions,
) -> anyhow::Result<crate::app::remerge::RemergeSummary> {
    const POLL_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
    const PRINT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .context("cannot make the HTTP client")?;
    let mut filter = serde_json::Map::new();
    for (path, value) in &options.filters {
        // The route takes one value per path; two different ones would match nothing anyway.
        if let Some(other) = filter.insert(path.clone(), Value::String(value.clone())) {
            if other != *value {
                bail!(
                    "--filter {path}: given twice with different values, which matches no product"
                );
            }
        }
    }
    let body = json!({
        "dryRun": options.dry_run,
        "filter": filter,
        "batch": options.batch,
        "rulesHash": rules_hash,
    });
    let res = client
        .post(format!("{url}/admin/remerge"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .with_context(|| {
            format!(
                "no PINV server answers at {url}. If `pinv serve` listens elsewhere, give \
                 --server URL (or the PINV_BIND it was started with); if no server runs, stop \
                 the process holding the store and run `pinv remerge` again"
            )
        })?;
    if res.status() != reqwest::StatusCode::ACCEPTED {
        let (status, code, message) = server_error(res).await;
        match code.as_str() {
            "RULES_HASH_MISMATCH" => bail!(
                "the server at {url} merges with other rules than {rules_hash}: {message}.\n\
                 Restart `pinv serve` so it loads the new rules, then run `pinv remerge` again."
            ),
            "UNAUTHORIZED" | "ADMIN_REQUIRED" => bail!(
                "the server at {url} refused the admin token ({code}: {message}); give \
                 PINV_JWT_SECRET (and PINV_JWT_ISSUER/PINV_JWT_AUDIENCE) as the server has them, \
                 or PINV_ADMIN_TOKEN"
            ),
            "ROUTE_NOT_FOUND" => {
                bail!("the server at {url} has no /admin/remerge route (an older pinv?): {message}")
            }
            _ => bail!(
                "the server at {url} did not start the re-merge: HTTP {status} {code}: {message}"
            ),
        }
    }
    let location = res
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .map(str::to_owned);
    let mut run: Value = res
        .json()
        .await
        .context("the server's answer is not JSON")?;
    let id = run["id"].as_str().unwrap_or_default().to_owned();
    let run_url = format!(
        "{url}{}",
        location.unwrap_or_else(|| format!("/admin/remerge/{id}"))
    );
    eprintln!("pinv remerge: run {id} started on the server; following {run_url}");
    if options.dry_run {
        eprintln!("pinv remerge: a dry run on the server counts changes; it lists no product");
    }
    let started = std::time::Instant::now();
    let mut printed = std::time::Instant::now();
    while run["status"] == "running" {
        tokio::time::sleep(POLL_EVERY).await;
        let lost = |e: &dyn std::fmt::Display| {
            anyhow!(
                "lost the server while following run {id}: {e}. If it stopped, the run was \
                 interrupted: each product is either old or re-merged; run `pinv remerge` again \
                 to finish"
            )
        };
        let res = client
            .get(&run_url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| lost(&e))?;
        if !res.status().is_success() {
            let (status, code, message) = server_error(res).await;
            return Err(lost(&format!("HTTP {status} {code}: {message}")));
        }
        run = res.json().await.map_err(|e| lost(&e))?;
        if printed.elapsed() >= PRINT_EVERY {
            printed = std::time::Instant::now();
            let read = run["progress"]["read"].as_u64().unwrap_or(0);
            let rate = read as f64 / started.elapsed().as_secs_f64().max(1e-9);
            eprintln!(
                "remerge: {read}/{} products read, {rate:.0}/s, {}",
                run["progress"]["total"].as_u64().unwrap_or(0),
                summary_of(&id, &run).line()
            );
        }
    }
    if run["status"] != "finished" {
        bail!(
            "run {id} failed on the server: {}",
            run["error"].as_str().unwrap_or("no reason given")
        );
    }
    Ok(summary_of(&id, &run))
}

/// The summary in a server's run answer.
fn summary_of(id: &str, run: &Value) -> crate::app::remerge::RemergeSummary {
    let s = &run["summary"];
    let n = |name: &str| s[name].as_u64().unwrap_or(0);
    crate::app::remerge::RemergeSummary {
        run_id: id.to_owned(),
        scanned: n("scanned"),
        changed: n("changed"),
        unchanged: n("unchanged"),
        conflicts_retried: n("conflictsRetried"),
        failed: n("failed"),
        fields: s["fields"]
            .as_object()
            .map(|f| {
                f.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let rules = crate::app::rules_loader::load_rules_dir(&args.rules.dir)?;
    runtime()?.block_on(async move {
        let store = crate::startup::open_store(&args.store, &args.mongodb).await?;
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
        .context("generation stopped")?;
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
        assert_eq!(t.ttl, 3600);
    }

    #[test]
    fn admin_token_needs_no_source() {
        let cli = Cli::try_parse_from(["pinv", "token", "--admin"]).unwrap();
        let Command::Token(t) = cli.command else {
            panic!("not token")
        };
        assert!(t.admin && t.sources.is_empty());
    }

    #[test]
    fn local_url_reaches_the_bound_address() {
        assert_eq!(
            local_url("0.0.0.0:9000".parse().unwrap()),
            "http://127.0.0.1:9000"
        );
        assert_eq!(local_url("[::1]:80".parse().unwrap()), "http://[::1]:80");
        assert_eq!(
            local_url("10.1.2.3:8080".parse().unwrap()),
            "http://10.1.2.3:8080"
        );
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
        let settings = s.settings.settings().unwrap();
        assert_eq!(settings.server.bind, "0.0.0.0:1".parse().unwrap());
        assert_eq!(settings.store.location, StoreSetting::Memory);
    }

    /// The long flags (and their aliases) of a subcommand.
    fn flags(command: &str) -> Vec<String> {
        let cli = Cli::command();
        let sub = cli.find_subcommand(command).unwrap();
        sub.get_arguments()
            .filter_map(|a| a.get_long().map(|l| (a, l)))
            .flat_map(|(a, l)| {
                std::iter::once(l)
                    .chain(a.get_visible_aliases().unwrap_or_default())
                    .map(|f| format!("--{f}"))
            })
            .collect()
    }

    /// The variables a subcommand reads.
    fn variables(command: &str) -> Vec<String> {
        let cli = Cli::command();
        let sub = cli.find_subcommand(command).unwrap();
        sub.get_arguments()
            .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .collect()
    }

    #[test]
    fn each_command_offers_only_the_settings_it_uses() {
        let generate = flags("generate");
        for f in ["--store", "--mongodb-timeout-ms", "--rules-dir", "--count"] {
            assert!(generate.contains(&f.to_owned()), "generate lacks {f}");
        }
        for f in generate.iter().chain(&flags("remerge")) {
            assert!(!f.starts_with("--bind"), "{f}");
            assert!(f != "--max-body-bytes", "{f}");
        }
        assert!(!generate.iter().any(|f| f.starts_with("--jwt")));
        // remerge mints an admin token to drive a running server.
        assert!(variables("remerge").contains(&"PINV_JWT_SECRET".to_owned()));
        assert!(flags("remerge").contains(&"--server".to_owned()));
        let token = flags("token");
        assert!(
            token.contains(&"--store".to_owned()) && token.contains(&"--jwt-issuer".to_owned())
        );
        assert!(
            !token
                .iter()
                .any(|f| f.starts_with("--mongodb") || f == "--bind"),
            "{token:?}"
        );
        assert!(variables("token").contains(&"PINV_JWT_SECRET".to_owned()));
        assert_eq!(variables("check-rules"), ["PINV_RULES_DIR"]);
        assert!(!flags("serve").iter().any(|f| f.contains("secret")));
    }

    #[test]
    fn generate_help_offers_neither_bind_nor_jwt() {
        let help = Cli::command()
            .find_subcommand_mut("generate")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("--store"), "{help}");
        assert!(
            !help.contains("--bind") && !help.contains("JWT") && !help.contains("jwt"),
            "{help}"
        );
    }

    const README: &str = include_str!("../README.md");

    /// README's configuration table: variable and default (`—` for none).
    fn readme_configuration() -> Vec<(String, String)> {
        README
            .lines()
            .filter(|l| l.starts_with("| `PINV_"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (
                    cells[1].trim_matches('`').to_owned(),
                    cells[2].trim_matches('`').to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn readme_configuration_table_matches_the_declared_settings() {
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").unwrap();
        let declared: Vec<(String, String)> = serve
            .get_arguments()
            .filter_map(|a| {
                let env = a.get_env()?.to_string_lossy().into_owned();
                let default = match a.get_default_values() {
                    [] => "—".to_owned(),
                    [d] => d.to_string_lossy().into_owned(),
                    more => panic!("{env}: several defaults {more:?}"),
                };
                Some((env, default))
            })
            .collect();
        let mut readme = readme_configuration();
        let mut declared_sorted = declared.clone();
        readme.sort();
        declared_sorted.sort();
        assert_eq!(
            readme, declared_sorted,
            "README.md's configuration table vs serve's settings"
        );
        // Every other command reads a subset of serve's settings.
        for sub in cli.get_subcommands() {
            for env in variables(sub.get_name()) {
                assert!(declared.iter().any(|(e, _)| *e == env), "{env}");
            }
        }
    }

    #[test]
    fn readme_command_table_matches_the_commands() {
        let cli = Cli::command();
        let rows: Vec<&str> = README
            .lines()
            .filter(|l| l.starts_with("| `pinv "))
            .collect();
        for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
            let name = sub.get_name();
            let row = rows
                .iter()
                .find(|r| {
                    r.starts_with(&format!("| `pinv {name} "))
                        || r.starts_with(&format!("| `pinv {name}`"))
                })
                .unwrap_or_else(|| panic!("README.md has no row for `pinv {name}`"));
            let usage = row.split('|').nth(1).unwrap();
            let offered = flags(name);
            for flag in usage.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
                // `--mongodb-...` stands for the flags with that prefix.
                if let Some(prefix) = flag.strip_suffix('-').filter(|f| f.starts_with("--")) {
                    assert!(
                        offered.iter().any(|f| f.starts_with(prefix)),
                        "README: `pinv {name}` has no {flag}..."
                    );
                } else if flag.starts_with("--") {
                    assert!(
                        offered.contains(&flag.to_owned()),
                        "README: `pinv {name}` has no {flag}"
                    );
                }
            }
        }
        assert_eq!(
            rows.len(),
            cli.get_subcommands().count(),
            "a README row per command"
        );
    }

    #[test]
    fn jwt_leeway_flag_reaches_the_settings() {
        let cli = Cli::try_parse_from(["pinv", "serve", "--jwt-leeway-seconds", "7"]).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(s.settings.settings().unwrap().jwt.leeway_seconds, 7);
        assert!(Cli::try_parse_from(["pinv", "serve", "--jwt-leeway-seconds", "86401"]).is_err());
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
