//! Small builders the core's unit tests share (sources, ids, contributions, field rules).

use chrono::{TimeZone, Utc};
use serde_json::Value;

use crate::core::record::Contribution;
use crate::core::rules::{ElementStrategy, FieldRule, Strategy};
use crate::core::{EventId, PinvId, Source};

pub(crate) fn src(name: &str) -> Source {
    Source::parse(name).unwrap()
}

pub(crate) fn pid(n: u128) -> PinvId {
    PinvId::from_uuid(uuid::Uuid::from_u128(n))
}

/// A contribution sent at `secs` seconds after 2024-01-01, event id `<source>-<secs>`.
pub(crate) fn contribution(source: &str, secs: i64, value: Value) -> Contribution {
    let time = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(secs);
    Contribution {
        source: src(source),
        event_id: EventId::parse(&format!("{source}-{secs}")).unwrap(),
        time,
        received_at: time,
        value: value.into(),
    }
}

/// A field rule with the defaults a rules file gives.
pub(crate) fn rule(path: &str, strategy: Strategy) -> FieldRule {
    FieldRule {
        path: path.to_owned(),
        strategy,
        precedence: None,
        owners: Vec::new(),
        key: Vec::new(),
        element_strategy: ElementStrategy::Merge,
        keep_empty: false,
        declared_in: "test.toml".to_owned(),
    }
}
