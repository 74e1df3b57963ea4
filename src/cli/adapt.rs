//! `pinv adapt` and `pinv check-adapters`: the adapters for mapping authors, without a
//! server or a store.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::Args;
use serde_json::{json, Value};

use crate::app::adapters::{load_adapters_dir, map_payload};
use crate::app::rules_loader::load_rules_dir;
use crate::config::{AdaptersSettings, RulesSettings};
use crate::core::adapter::Kind;

/// `pinv adapt`.
#[derive(Debug, Args)]
pub struct AdaptArgs {
    /// The system whose adapter maps the payload (`<adapters dir>/<system>.toml`).
    #[arg(long)]
    pub system: String,
    /// The native payload (JSON); `-` reads standard input.
    pub file: PathBuf,
    /// An HTTP header the payload would come with, as `Name: value` (repeatable), e.g.
    /// `X-ATT-MessageId: 75-1692896937466`.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The adapters.
    #[command(flatten)]
    pub adapters: AdaptersSettings,
    /// The rules (the event type and identity types the adapters are checked against).
    #[command(flatten)]
    pub rules: RulesSettings,
}

/// `pinv check-adapters`.
#[derive(Debug, Args)]
pub struct CheckAdaptersArgs {
    /// The directory (default: --adapters-dir).
    pub dir: Option<PathBuf>,
    /// The adapters.
    #[command(flatten)]
    pub adapters: AdaptersSettings,
    /// The rules the adapters are checked against.
    #[command(flatten)]
    pub rules: RulesSettings,
}

/// Validates an adapters directory against the rules; prints a summary.
pub fn check_adapters(args: CheckAdaptersArgs) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or(args.adapters.dir);
    let rules = load_rules_dir(&args.rules.dir)?;
    let adapters = load_adapters_dir(&dir, &rules)?;
    let systems: Vec<&str> = adapters.by_system.keys().map(String::as_str).collect();
    println!(
        "{}: valid adapters ({} systems: {})",
        dir.display(),
        systems.len(),
        systems.join(", ")
    );
    Ok(())
}

/// Prints what a payload becomes: per product, the envelope (snapshot) or the merge patch
/// and the key that finds the product (change). Writes nothing.
pub fn adapt(args: AdaptArgs) -> anyhow::Result<()> {
    let rules = load_rules_dir(&args.rules.dir)?;
    let adapters = load_adapters_dir(&args.adapters.dir, &rules)?;
    let adapter = adapters.get(&args.system).ok_or_else(|| {
        anyhow!(
            "no adapter for system '{}' in {} (systems: {})",
            args.system,
            args.adapters.dir.display(),
            adapters
                .by_system
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?
    };
    let payload: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", args.file.display()))?;
    let mut headers = BTreeMap::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| anyhow!("--header '{h}': expected NAME: VALUE"))?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let mapped = match map_payload(adapter, payload, &headers, &rules, chrono::Utc::now()) {
        Ok(m) => m,
        Err(problems) => {
            let lines: Vec<String> = problems
                .into_vec()
                .into_iter()
                .map(|v| format!("  - {}: {}", v.pointer, v.message))
                .collect();
            return Err(anyhow!(
                "the payload does not fit the {} mapping:\n{}",
                args.system,
                lines.join("\n")
            ));
        }
    };
    let out: Vec<Value> = mapped
        .into_iter()
        .map(|m| match &adapter.kind {
            Kind::Snapshot => json!({"pointer": m.at, "post": "/products", "body": m.body}),
            Kind::Change { .. } => {
                let (ty, id) = m.find.unwrap_or_default();
                json!({"pointer": m.at, "patch": {"source": adapter.source.as_str(),
                    "find": {"externalIdentifierType": ty, "id": id},
                    "eventId": m.event_id, "time": m.time,
                    "mergePatch": m.body}})
            }
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
