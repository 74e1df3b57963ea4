//! The seed product's contributions (`tests/golden/*-adi.json`), as the golden merge test
//! and the merge bench (`benches/merge.rs`) merge and explain them.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::core::envelope::EventTime;
use crate::core::package::Links;
use crate::core::record::Contribution;
use crate::core::{EventId, PinvId, Source};

/// A file of `tests/golden/`.
pub fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// Reads an envelope fixture of `tests/golden/` as the contribution its source would have
/// stored.
pub fn contribution(file: &str) -> Contribution {
    let text = std::fs::read_to_string(golden(file)).expect("the fixture is readable");
    let envelope: Value = serde_json::from_str(&text).expect("the fixture is JSON");
    let headers = &envelope["headers"];
    let time = EventTime::parse(headers["time"].as_str().expect("headers.time"))
        .expect("a valid time")
        .instant;
    Contribution {
        source: Source::parse(headers["source"].as_str().expect("headers.source"))
            .expect("a valid source"),
        event_id: EventId::parse(headers["id"].as_str().expect("headers.id"))
            .expect("a valid event id"),
        time,
        received_at: time,
        value: envelope["value"].clone().into(),
    }
}

/// What merging the seed product takes besides the rules.
pub struct SeedProduct {
    /// Its PINV id.
    pub id: PinvId,
    /// Billing's, provisioning's and inventory's contributions, in that order.
    pub contributions: [Contribution; 3],
    /// One of provisioning's relationships (`prov-access-77`) names a product PINV
    /// already knows.
    pub links: Links,
}

/// The seed product, from `billing-adi.json`, `provisioning-adi.json` and
/// `inventory-adi.json`.
pub fn seed_product() -> SeedProduct {
    let contributions = [
        contribution("billing-adi.json"),
        contribution("provisioning-adi.json"),
        contribution("inventory-adi.json"),
    ];
    let access = PinvId::parse("5b0c1e2a-7d4f-4c3b-9a61-2f8e0d9c4b17").expect("a uuid");
    let mut links = Links::default();
    links.insert(&contributions[1].source, "prov-access-77", access);
    SeedProduct {
        id: PinvId::parse("9ffb3182-409d-48cb-a266-1379117bff58").expect("a uuid"),
        contributions,
        links,
    }
}
