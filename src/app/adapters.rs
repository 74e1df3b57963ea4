//! Adapters in the shell: reading an adapters directory, and feeding a native payload
//! through its mapping into the write path: snapshots as `POST /products` bodies, changes
//! as merge patches of the source's own contribution.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use crate::app::service::{IngestError, PostOptions, PostStatus, Service};
use crate::app::tmf_write::{ProductPatch, WriteError};
use crate::core::adapter::{Adapter, AdapterProblem, Adapters, AdaptersError, Input, Kind, Mapped};
use crate::core::rules::Rules;
use crate::core::{identity, EventId, PinvId, Source, Violation, Violations};
use crate::store::StoreError;

/// Why an adapters directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadAdaptersError {
    /// The directory or a file could not be read.
    #[error("cannot read adapters from {path}: {reason}")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The files are invalid.
    #[error(transparent)]
    Invalid(#[from] AdaptersError),
}

/// Loads every `*.toml` file of `dir` (hidden files skipped) and checks the adapters
/// against the merge rules. A directory without adapter files is valid: no system is served.
pub fn load_adapters_dir(dir: &Path, rules: &Rules) -> Result<Adapters, LoadAdaptersError> {
    let io = |path: &Path, e: std::io::Error| LoadAdaptersError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.extension().is_some_and(|x| x == "toml") && !name.starts_with('.') && path.is_file()
        {
            paths.push((name, path));
        }
    }
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    for (name, path) in paths {
        files.push((
            name,
            std::fs::read_to_string(&path).map_err(|e| io(&path, e))?,
        ));
    }
    let adapters = Adapters::from_files(&files)?;
    let problems = check_against_rules(&adapters, rules);
    if problems.is_empty() {
        Ok(adapters)
    } else {
        Err(AdaptersError(problems).into())
    }
}

/// What the rules must allow for the adapters to work: a change adapter finds products by
/// an identity type of the rules.
pub fn check_against_rules(adapters: &Adapters, rules: &Rules) -> Vec<AdapterProblem> {
    let mut out = Vec::new();
    for a in adapters.by_system.values() {
        if let Kind::Change { identity_type, .. } = &a.kind {
            if !rules.identity_types.contains(identity_type) {
                out.push(AdapterProblem {
                    file: format!("{}.toml", a.system),
                    field: "find.type".into(),
                    problem: format!(
                        "'{identity_type}' is not an identity type of the merge rules \
                         ([identity] external_reference_types), so it finds no product"
                    ),
                });
            }
        }
    }
    out
}

/// Why a whole payload was refused (nothing was written).
#[derive(Debug, thiserror::Error)]
pub enum AdaptError {
    /// No adapter for that system: `404`.
    #[error("no adapter for system '{0}'")]
    UnknownSystem(String),
    /// The token may not write for the adapter's source: `403`.
    #[error("the token may not write for source '{0}'")]
    Forbidden(Source),
    /// The payload does not fit the mapping: `400`, pointers into the payload.
    #[error("the payload does not fit the {0} mapping")]
    Invalid(String, Violations),
}

/// One product of a payload, and what became of it.
#[derive(Debug)]
pub struct Adapted {
    /// The mapped product (its pointer in the payload, event id, body).
    pub mapped: Mapped,
    /// Stored (created or unchanged) as that product, or refused. Pointers of a refusal's
    /// violations point into the native payload.
    pub result: Result<(PostStatus, PinvId), WriteError>,
}

/// Maps `payload` with `adapter` (secrets dropped first), as the shell would send it.
pub fn map_payload(
    adapter: &Adapter,
    mut payload: Value,
    headers: &BTreeMap<String, String>,
    rules: &Rules,
    received: DateTime<Utc>,
) -> Result<Vec<Mapped>, Violations> {
    adapter.drop_secrets(&mut payload);
    let received = received.to_rfc3339_opts(SecondsFormat::Millis, true);
    let event_type = rules.accepted_types.first().map_or("", String::as_str);
    let mut mapped = adapter.apply(&Input {
        payload: &payload,
        headers,
        received: &received,
        event_type,
    })?;
    // Event ids and times are checked here so that a bad one points into the payload
    // rather than into an envelope the caller never saw.
    let mut problems = Violations::new();
    for m in &mut mapped {
        if let Err(e) = EventId::parse(&m.event_id) {
            problems.push(Violation::new(m.at.clone(), format!("event id: {e}")));
        }
        if matches!(adapter.kind, Kind::Change { .. })
            && DateTime::parse_from_rfc3339(&m.time).is_err()
        {
            problems.push(Violation::new(
                m.at.clone(),
                format!("event time '{}' is not an RFC 3339 date-time", m.time),
            ));
        }
    }
    if problems.is_empty() {
        Ok(mapped)
    } else {
        Err(problems)
    }
}

impl Service {
    /// Feeds one native payload of `system` through its adapter: every product is mapped
    /// first (any problem refuses the whole payload, nothing written), then stored one by
    /// one; each product's outcome is reported on its own.
    pub async fn adapt(
        &self,
        adapters: &Adapters,
        system: &str,
        payload: Value,
        headers: &BTreeMap<String, String>,
        may_write: &(dyn Fn(&Source) -> bool + Sync),
    ) -> Result<Vec<Adapted>, AdaptError> {
        let adapter = adapters
            .get(system)
            .ok_or_else(|| AdaptError::UnknownSystem(system.to_owned()))?;
        if !may_write(&adapter.source) {
            return Err(AdaptError::Forbidden(adapter.source.clone()));
        }
        let mapped = map_payload(adapter, payload, headers, &self.rules, Utc::now())
            .map_err(|v| AdaptError::Invalid(system.to_owned(), v))?;
        let mut out = Vec::with_capacity(mapped.len());
        for m in mapped {
            let result = match &adapter.kind {
                Kind::Snapshot => self.adapt_snapshot(&m).await,
                Kind::Change { .. } => self.adapt_change(&adapter.source, &m).await,
            };
            let result = result.map_err(|e| native_pointers(e, &m));
            out.push(Adapted { mapped: m, result });
        }
        Ok(out)
    }

    async fn adapt_snapshot(&self, m: &Mapped) -> Result<(PostStatus, PinvId), WriteError> {
        let options = PostOptions {
            as_adi_package: false,
            body_bytes: 0,
        };
        let outcome = self.post(m.body.clone(), options, &|_| true).await?;
        let product = outcome
            .parts
            .first()
            .map(|p| p.product)
            .ok_or_else(|| StoreError::other("a stored product read back as nothing"))?;
        Ok((outcome.status, product))
    }

    async fn adapt_change(
        &self,
        source: &Source,
        m: &Mapped,
    ) -> Result<(PostStatus, PinvId), WriteError> {
        let event_id =
            EventId::parse(&m.event_id).map_err(|e| invalid(&m.at, format!("event id: {e}")))?;
        // A redelivered change is answered from what it did, even when later changes have
        // moved the contribution on (applying it again would then be another value).
        if let Some(done) = self.store.get_processed(source, &event_id).await? {
            if let Some(id) = done.products.first() {
                let current = self.store.get_products(&[*id]).await?;
                if let Some(record) = current.into_iter().next() {
                    return Ok((PostStatus::Unchanged, record.id));
                }
            }
        }
        let (ty, number) = m.find.clone().unwrap_or_default();
        let key = identity::external_key(&ty, &number, &self.rules);
        let owners = self.store.resolve_keys(std::slice::from_ref(&key)).await?;
        let Some(id) = owners.get(&key).copied() else {
            return Err(WriteError::NotFound(format!(
                "no product has the {ty} '{number}' (a change needs the line to exist)"
            )));
        };
        let time = DateTime::parse_from_rfc3339(&m.time)
            .map_err(|_| invalid(&m.at, "the event time is not an RFC 3339 date-time"))?
            .with_timezone(&Utc);
        let written = self
            .patch_product(
                source,
                id,
                &ProductPatch::Merge(m.body.clone()),
                &event_id,
                time,
            )
            .await?;
        Ok((written.status, written.id))
    }
}

fn invalid(at: &str, message: impl Into<String>) -> WriteError {
    WriteError::Ingest(IngestError::Invalid(Violations::from(vec![
        Violation::new(at, message),
    ])))
}

/// Rewrites the pointers of a refusal from the mapped body to the native payload.
fn native_pointers(e: WriteError, m: &Mapped) -> WriteError {
    match e {
        WriteError::Ingest(IngestError::Invalid(v)) => {
            let moved: Vec<Violation> = v
                .into_vec()
                .into_iter()
                .map(|v| Violation::new(m.native_pointer(&v.pointer), v.message))
                .collect();
            WriteError::Ingest(IngestError::Invalid(Violations::from(moved)))
        }
        other => other,
    }
}
