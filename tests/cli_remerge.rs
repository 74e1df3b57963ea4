//! `pinv check-rules`, `pinv generate` and `pinv remerge` as a user runs them: the built
//! binary against an embedded store directory, configured through `PINV_*` variables, and
//! the store inspected afterwards through the library.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use serde_json::{json, Value};

use pinv::app::generate;
use pinv::app::rules_loader::load_rules_dir;
use pinv::app::service::{PostOptions, Service};
use pinv::core::record::{ProductRecord, WriteSet};
use pinv::core::rules::Rules;
use pinv::core::schema::Schemas;
use pinv::core::PinvId;
use pinv::store::embedded::{EmbeddedStore, FILE_NAME};
use pinv::store::Store;

const BILLING_NAME: &str = "AT&T Dedicated Internet (ADI)";
const PROVISIONING_NAME: &str = "ADI circuit";
const EVENT_TYPE: &str = "com.att.c360dataPrep.tmf637.post.v5";

fn shipped_rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("merge-rules")
}

/// Copies the shipped rules into `into`, passing `20-fields.toml` through `edit`.
fn rules_copy(into: &Path, edit: impl Fn(&str) -> String) -> PathBuf {
    std::fs::create_dir_all(into).unwrap();
    for entry in std::fs::read_dir(shipped_rules_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        let mut text = std::fs::read_to_string(&path).unwrap();
        if name == "20-fields.toml" {
            text = edit(&text);
        }
        std::fs::write(into.join(name), text).unwrap();
    }
    into.to_owned()
}

/// The shipped rules with billing ahead of provisioning for `name`.
fn billing_first_rules(into: &Path) -> PathBuf {
    rules_copy(into, |text| {
        let edited = text.replace(
            "path = \"name\"\nstrategy = \"priority\"",
            "path = \"name\"\nstrategy = \"priority\"\nprecedence = [\"billing\", \"provisioning\"]",
        );
        assert_ne!(edited, text, "the name rule was not found");
        edited
    })
}

/// The shipped rules with a strategy that does not exist for `status`.
fn invalid_rules(into: &Path) -> PathBuf {
    rules_copy(into, |text| {
        let edited = text.replace(
            "path = \"status\"\nstrategy = \"recency\"",
            "path = \"status\"\nstrategy = \"newest\"",
        );
        assert_ne!(edited, text, "the status rule was not found");
        edited
    })
}

/// `pinv` with `args`, the store and rules given, and none of the caller's `PINV_*` variables.
fn pinv_command(args: &[&str], store: &Path, rules: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pinv"));
    for (name, _) in std::env::vars() {
        if name.starts_with("PINV_") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .env("PINV_STORE", store)
        .env("PINV_RULES_DIR", rules)
        .env("RUST_LOG", "warn");
    command
}

/// Runs `pinv` with only the `PINV_*` variables given (the caller's are removed).
fn pinv(args: &[&str], store: &Path, rules: &Path) -> Output {
    pinv_command(args, store, rules)
        .output()
        .expect("the pinv binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// Opens the store directory (after the process that used it has exited), runs `f`, and
/// closes it again.
fn with_store<T>(dir: &Path, f: impl AsyncFnOnce(Arc<dyn Store>) -> T) -> T {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir).unwrap());
        f(store).await
    })
}

async fn all(store: &dyn Store) -> Vec<ProductRecord> {
    store.scan(None, 100_000).await.unwrap()
}

/// A store of `both` products with billing and provisioning contributions (written by
/// `pinv generate`) and `billing_only` products with billing's alone (written here).
fn seeded_store(dir: &Path, both: u64, billing_only: u64) {
    let count = both.to_string();
    let generated = pinv(
        &["generate", "--count", &count, "--batch", "5"],
        dir,
        &shipped_rules_dir(),
    );
    assert_ok(&generated, "pinv generate");
    assert!(
        stdout(&generated).contains(&format!("generated {both} products")),
        "{}",
        stdout(&generated)
    );
    let rules = load_rules_dir(&shipped_rules_dir()).unwrap();
    with_store(dir, async |store| {
        for n in both..both + billing_only {
            let mut set = WriteSet::default();
            let record = generate::billing_only_product(n, PinvId::new_v4(), &rules);
            generate::add_new_product(&mut set, record);
            store.commit(set).await.unwrap();
        }
    });
}

fn by_id(records: Vec<ProductRecord>) -> BTreeMap<PinvId, ProductRecord> {
    records.into_iter().map(|r| (r.id, r)).collect()
}

#[test]
fn check_rules_accepts_a_valid_changed_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = billing_first_rules(&tmp.path().join("rules"));
    let expected_hash = load_rules_dir(&rules).unwrap().hash;
    let out = pinv(
        &["check-rules", rules.to_str().unwrap()],
        &tmp.path().join("unused-store"),
        &shipped_rules_dir(),
    );
    assert_ok(&out, "check-rules");
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "one summary line: {text}");
    assert!(text.contains("valid merge rules"), "{text}");
    assert!(text.contains(&expected_hash), "{text}");
    assert!(!tmp.path().join("unused-store").exists());
}

#[test]
fn dry_run_reports_and_changes_nothing_then_remerge_changes_exactly_the_affected_products() {
    let tmp = tempfile::tempdir().unwrap();
    let store_dir = tmp.path().join("store");
    let rules = billing_first_rules(&tmp.path().join("rules"));
    let new_hash = load_rules_dir(&rules).unwrap().hash;
    seeded_store(&store_dir, 12, 3);
    let before = with_store(&store_dir, async |s| by_id(all(&*s).await));
    assert_eq!(before.len(), 15);
    let two_sources: Vec<PinvId> = before
        .values()
        .filter(|r| r.contributions.len() == 2)
        .map(|r| r.id)
        .collect();
    assert_eq!(two_sources.len(), 12);
    for r in before.values() {
        let expected = if r.contributions.len() == 2 {
            PROVISIONING_NAME
        } else {
            BILLING_NAME
        };
        assert_eq!(r.merged["name"], expected);
    }

    // Dry run: one line per product that would change, the field totals, the summary.
    let dry = pinv(
        &["remerge", "--dry-run", "--rules", rules.to_str().unwrap()],
        &store_dir,
        &shipped_rules_dir(),
    );
    assert_ok(&dry, "remerge --dry-run");
    let report = stdout(&dry);
    let product_lines: Vec<&str> = report.lines().filter(|l| l.contains('\t')).collect();
    assert_eq!(product_lines.len(), 12, "{report}");
    let mut reported: Vec<PinvId> = product_lines
        .iter()
        .map(|l| {
            let mut parts = l.split('\t');
            let id = PinvId::parse(parts.next().unwrap()).unwrap();
            assert_eq!(parts.next(), Some("1 patch operations"), "{l}");
            assert_eq!(parts.next(), Some("name"), "{l}");
            id
        })
        .collect();
    reported.sort();
    assert_eq!(reported, two_sources);
    assert!(
        report.contains("field name: would change in 12 products"),
        "{report}"
    );
    assert!(
        report.contains("scanned 15, changed 12, unchanged 3, conflicts retried 0, failed 0"),
        "{report}"
    );
    assert!(stderr(&dry).contains(&new_hash), "{}", stderr(&dry));
    let after_dry = with_store(&store_dir, async |s| by_id(all(&*s).await));
    assert_eq!(after_dry, before, "a dry run writes nothing");

    // The real run: the same counts, and exactly the two-source products rewritten.
    let real = pinv(
        &["remerge", "--rules", rules.to_str().unwrap()],
        &store_dir,
        &shipped_rules_dir(),
    );
    assert_ok(&real, "remerge");
    let summary = stdout(&real);
    assert!(
        summary.contains("field name: changed in 12 products"),
        "{summary}"
    );
    assert!(
        summary.contains("scanned 15, changed 12, unchanged 3, conflicts retried 0, failed 0"),
        "{summary}"
    );
    assert!(!summary.lines().any(|l| l.contains('\t')), "{summary}");
    let run_id = summary
        .lines()
        .find_map(|l| l.strip_prefix("run "))
        .and_then(|l| l.split(':').next())
        .expect("a run line")
        .to_owned();

    let (after, histories) = with_store(&store_dir, async |s| {
        let after = by_id(all(&*s).await);
        let mut histories = BTreeMap::new();
        for id in after.keys() {
            histories.insert(*id, s.history(id).await.unwrap());
        }
        (after, histories)
    });
    assert_eq!(after.len(), 15);
    for (id, old) in &before {
        let new = &after[id];
        assert_eq!(new.merged["name"], BILLING_NAME, "{id}");
        let history = &histories[id];
        if two_sources.contains(id) {
            assert_eq!(new.revision, old.revision + 1);
            assert_eq!(new.rules_hash, new_hash);
            let mut expected = old.merged.clone();
            expected["name"] = json!(BILLING_NAME);
            assert_eq!(new.merged, expected, "only the name changed");
            assert_eq!(new.contributions, old.contributions);
            assert_eq!(new.match_keys, old.match_keys);
            let last = history.last().unwrap();
            assert_eq!(last.event.source, "pinv-remerge");
            assert_eq!(last.event.id, run_id);
            assert_eq!(last.rules_hash, new_hash);
            assert_eq!(last.revision, new.revision);
            assert_eq!(
                last.patch,
                json!([{"op": "replace", "path": "/name", "value": BILLING_NAME}])
            );
            assert_eq!(history.len(), 2, "generate's entry, then the re-merge's");
        } else {
            assert_eq!(new, old, "a product the rules do not affect is not written");
            assert!(history.iter().all(|e| e.event.source != "pinv-remerge"));
        }
    }

    // Running it again finds nothing left to do.
    let again = pinv(
        &["remerge", "--rules", rules.to_str().unwrap()],
        &store_dir,
        &shipped_rules_dir(),
    );
    assert_ok(&again, "second remerge");
    assert!(
        stdout(&again).contains("scanned 15, changed 0, unchanged 15"),
        "{}",
        stdout(&again)
    );
    let after_again = with_store(&store_dir, async |s| by_id(all(&*s).await));
    assert_eq!(after_again, after);
}

#[test]
fn invalid_rules_fail_both_commands_before_any_data_is_touched() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = invalid_rules(&tmp.path().join("bad-rules"));

    let check = pinv(
        &["check-rules", rules.to_str().unwrap()],
        &tmp.path().join("unused"),
        &shipped_rules_dir(),
    );
    assert!(!check.status.success());
    let message = stderr(&check);
    for part in [
        "20-fields.toml",
        "field[1].strategy",
        "unknown strategy \"newest\"",
    ] {
        assert!(message.contains(part), "'{part}' missing from: {message}");
    }

    // No store yet: the directory is not even created.
    let missing = tmp.path().join("no-store");
    let out = pinv(
        &["remerge", "--rules", rules.to_str().unwrap()],
        &missing,
        &shipped_rules_dir(),
    );
    assert!(!out.status.success());
    let message = stderr(&out);
    for part in [
        "20-fields.toml",
        "field[1].strategy",
        "unknown strategy \"newest\"",
    ] {
        assert!(message.contains(part), "'{part}' missing from: {message}");
    }
    assert!(!missing.exists(), "remerge created {}", missing.display());

    // An existing store: its file is neither rewritten nor touched.
    let store_dir = tmp.path().join("store");
    seeded_store(&store_dir, 3, 0);
    let file = store_dir.join(FILE_NAME);
    let (bytes, modified) = (
        std::fs::read(&file).unwrap(),
        std::fs::metadata(&file).unwrap().modified().unwrap(),
    );
    for args in [
        vec!["remerge", "--rules", rules.to_str().unwrap()],
        vec!["remerge", "--dry-run", "--rules", rules.to_str().unwrap()],
        // The rules from the environment instead of --rules.
        vec!["remerge"],
    ] {
        let out = pinv(&args, &store_dir, &rules);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr(&out).contains("newest"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
    assert_eq!(
        std::fs::metadata(&file).unwrap().modified().unwrap(),
        modified
    );
}

// ---- packages ----------------------------------------------------------------------

fn part(local: &str, spec: &str, name: &str, related: &[&str]) -> Value {
    json!({
        "@type": "AttProduct",
        "id": local,
        "name": name,
        "status": "active",
        "productSpecification": {"@type": "ProductSpecificationRef", "id": spec},
        "externalReference": [{"@type": "ExternalIdentifier", "externalIdentifierType": "CircuitID",
                               "id": format!("CIRCUIT-{local}"), "owner": "INSTAR"}],
        "productRelationship": related.iter()
            .map(|r| json!({"@type": "ProductRelationship", "id": r, "relationshipType": "bundles"}))
            .collect::<Vec<_>>(),
    })
}

/// The same four-part package as `source` sees it, every name prefixed with the source.
fn package_event(source: &str, event_id: &str) -> Value {
    let name = |local: &str| format!("{source} {local}");
    json!({
        "headers": {"id": event_id, "source": source, "type": EVENT_TYPE,
                    "time": "2024-10-03 12:00:00Z", "datacontenttype": "application/json"},
        "value": [
            part("adi-1", "PR-ADI-EMBEDDED-BASE", &name("adi-1"), &["acc-1", "port-1", "dd-1"]),
            part("acc-1", "PR-ACCESS-FIBER", &name("acc-1"), &["adi-1"]),
            part("port-1", "PR-PORT-10G", &name("port-1"), &["adi-1", "acc-1"]),
            part("dd-1", "PR-DD-STANDARD", &name("dd-1"), &["adi-1"]),
        ]
    })
}

fn relationship_ids(doc: &Value) -> Vec<String> {
    doc["productRelationship"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn relationship_ids_and_package_roots_survive_a_remerge() {
    let tmp = tempfile::tempdir().unwrap();
    let store_dir = tmp.path().join("store");
    let rules_dir = billing_first_rules(&tmp.path().join("rules"));

    // Both sources report the package, through the write path a POST takes.
    let shipped: Rules = load_rules_dir(&shipped_rules_dir()).unwrap();
    let ids: Vec<PinvId> = with_store(&store_dir, async |store| {
        let service = Service {
            store,
            rules: Arc::new(shipped),
            schemas: Arc::new(Schemas::compile().unwrap()),
        };
        let mut ids = Vec::new();
        for (source, event) in [("provisioning", "p-1"), ("billing", "b-1")] {
            let outcome = service
                .post(
                    package_event(source, event),
                    PostOptions::default(),
                    &|_| true,
                )
                .await
                .unwrap_or_else(|e| panic!("{source}'s package was refused: {e:?}"));
            ids = outcome.parts.iter().map(|p| p.product).take(4).collect();
        }
        ids
    });
    assert_eq!(ids.len(), 4);

    type Snapshot = (BTreeMap<PinvId, ProductRecord>, Vec<PinvId>);
    let snapshot = |dir: &Path| -> Snapshot {
        with_store(dir, async |s| {
            let records = by_id(all(&*s).await);
            let root = records.values().next().unwrap().package_root.unwrap();
            (records, s.package_members(&root).await.unwrap())
        })
    };
    let (before, members_before) = snapshot(&store_dir);
    assert_eq!(
        before.len(),
        4,
        "one product per part, both sources on each"
    );
    let mut sorted_ids = ids.clone();
    sorted_ids.sort();
    assert_eq!(members_before, sorted_ids);
    for r in before.values() {
        assert_eq!(r.contributions.len(), 2);
        assert!(r.merged["name"]
            .as_str()
            .unwrap()
            .starts_with("provisioning "));
        for rel in relationship_ids(&r.merged) {
            let id = PinvId::parse(&rel).expect("relationship ids are PINV ids");
            assert!(ids.contains(&id), "{rel} is a part of the package");
        }
    }

    let out = pinv(
        &["remerge", "--rules", rules_dir.to_str().unwrap()],
        &store_dir,
        &shipped_rules_dir(),
    );
    assert_ok(&out, "remerge");
    assert!(
        stdout(&out).contains("scanned 4, changed 4, unchanged 0"),
        "{}",
        stdout(&out)
    );

    let (after, members_after) = snapshot(&store_dir);
    assert_eq!(members_after, members_before, "package members unchanged");
    for (id, old) in &before {
        let new = &after[id];
        assert!(new.merged["name"].as_str().unwrap().starts_with("billing "));
        assert_eq!(new.package_root, old.package_root);
        assert_eq!(new.links, old.links);
        assert_eq!(
            relationship_ids(&new.merged),
            relationship_ids(&old.merged),
            "relationship ids stay the rewritten PINV ids"
        );
        assert_eq!(
            new.merged["productRelationship"],
            old.merged["productRelationship"]
        );
    }
}

const SECRET: &str = "cli-remerge-test-secret-0123456789abcdef";

/// A port nobody listens on (bound, then let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `pinv serve` process, stopped when dropped.
struct Server {
    child: std::process::Child,
    url: String,
}

impl Server {
    /// Starts `pinv serve` on `store` with `rules` and waits until it answers.
    fn start(store: &Path, rules: &Path, port: u16) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pinv"));
        for (name, _) in std::env::vars() {
            if name.starts_with("PINV_") {
                command.env_remove(name);
            }
        }
        let child = command
            .arg("serve")
            .env("PINV_STORE", store)
            .env("PINV_RULES_DIR", rules)
            .env("PINV_BIND", format!("127.0.0.1:{port}"))
            .env("PINV_JWT_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("pinv serve starts");
        let mut server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        // The deadline only guards against a server that never comes up.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while http_get(&format!("{}/health/ready", server.url)).map(|(s, _)| s) != Some(200) {
            assert!(
                server.child.try_wait().unwrap().is_none(),
                "pinv serve exited"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "pinv serve never answered"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET with a token for every source: status and JSON body, `None` when nothing answers.
fn http_get(url: &str) -> Option<(u16, Value)> {
    let token = pinv::api::auth::mint_hs256(SECRET, &["*".into()], 600, None, None).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let res = reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .ok()?;
        let status = res.status().as_u16();
        Some((status, res.json().await.unwrap_or(Value::Null)))
    })
}

/// Runs `pinv` as [`pinv`] does, with the server's address and secret.
fn pinv_beside(args: &[&str], store: &Path, rules: &Path, port: u16) -> Output {
    pinv_command(args, store, rules)
        .env("PINV_BIND", format!("127.0.0.1:{port}"))
        .env("PINV_JWT_SECRET", SECRET)
        .output()
        .expect("the pinv binary runs")
}

/// Beside a running `pinv serve`, which holds the embedded store, `pinv remerge` has the
/// server re-merge with the rules it loaded, and refuses when those are not the rules it
/// was given.
#[test]
fn remerge_beside_a_running_server_has_the_server_re_merge() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    // Stored under the shipped rules (A)...
    seeded_store(&store_dir, 3, 2);
    let before = with_store(&store_dir, async |store| by_id(all(&*store).await));
    // ...served with billing first for the name (B).
    let rules_b = billing_first_rules(&dir.path().join("rules"));
    let hash_b = load_rules_dir(&rules_b).unwrap().hash;
    let port = free_port();
    let server = Server::start(&store_dir, &rules_b, port);

    // Rules A are not the server's: refused, with what to do.
    let refused = pinv_beside(&["remerge"], &store_dir, &shipped_rules_dir(), port);
    assert!(!refused.status.success(), "remerge with other rules ran");
    let message = stderr(&refused);
    assert!(
        message.contains("Restart `pinv serve` so it loads the new rules")
            && message.contains(&hash_b),
        "{message}"
    );

    let dry = pinv_beside(&["remerge", "--dry-run"], &store_dir, &rules_b, port);
    assert_ok(&dry, "pinv remerge --dry-run beside the server");
    assert!(
        stdout(&dry).contains("field name: would change in 3 products"),
        "{}",
        stdout(&dry)
    );

    let ran = pinv_beside(&["remerge"], &store_dir, &rules_b, port);
    assert_ok(&ran, "pinv remerge beside the server");
    assert!(
        stderr(&ran).contains(&format!("run by the server at {}", server.url)),
        "{}",
        stderr(&ran)
    );
    let summary = stdout(&ran);
    assert!(
        summary.contains("field name: changed in 3 products"),
        "{summary}"
    );
    assert!(
        summary.contains("scanned 5, changed 3, unchanged 2, conflicts retried 0, failed 0"),
        "{summary}"
    );
    let run_id = summary
        .lines()
        .find_map(|l| l.strip_prefix("run "))
        .and_then(|l| l.split(':').next())
        .expect("a run line")
        .to_owned();

    let mut changed = 0;
    for (id, old) in &before {
        let (status, doc) = http_get(&format!("{}/products/{id}", server.url)).unwrap();
        assert_eq!(status, 200);
        assert_eq!(doc["name"], BILLING_NAME, "{id}");
        let (_, history) = http_get(&format!("{}/products/{id}/history", server.url)).unwrap();
        // Products written here directly (billing alone) have no history.
        let last = history.as_array().unwrap().last().cloned();
        let last = last.unwrap_or(Value::Null);
        if old.merged["name"] != BILLING_NAME {
            changed += 1;
            assert_eq!(last["event"]["source"], "pinv-remerge", "{last}");
            assert_eq!(last["event"]["id"], run_id.as_str(), "{last}");
            assert_eq!(last["rulesHash"], hash_b.as_str(), "{last}");
        } else {
            assert_ne!(last["event"]["source"], "pinv-remerge", "{last}");
        }
    }
    assert_eq!(changed, 3);
    drop(server);
}

/// With the embedded store held by another process and no server answering, `pinv
/// remerge` touches nothing and says what to do; once the holder has stopped, the same
/// command re-merges.
#[test]
fn remerge_beside_a_process_holding_the_embedded_store_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    seeded_store(&store_dir, 3, 2);
    let rules = billing_first_rules(&dir.path().join("rules"));
    let before = with_store(&store_dir, async |store| by_id(all(&*store).await));

    // Held open here, as a running `pinv serve` holds it, but nothing listens.
    let held = EmbeddedStore::open(&store_dir).unwrap();
    let port = free_port();
    let refused = pinv_beside(&["remerge"], &store_dir, &rules, port);
    assert!(!refused.status.success(), "remerge ran beside the holder");
    let message = stderr(&refused);
    assert!(
        message.contains("in use by another process"),
        "the error says the store is in use: {message}"
    );
    assert!(
        message.contains(&format!(
            "no PINV server answers at http://127.0.0.1:{port}"
        )) && message.contains("--server URL")
            && message.contains("stop the process holding the store"),
        "the error says what to do: {message}"
    );
    drop(held);
    let after = with_store(&store_dir, async |store| by_id(all(&*store).await));
    assert_eq!(after, before, "nothing was written");

    // Once the holder has stopped, the same command re-merges.
    let ran = pinv(&["remerge"], &store_dir, &rules);
    assert_ok(&ran, "pinv remerge after the holder stopped");
    let after = with_store(&store_dir, async |store| by_id(all(&*store).await));
    let changed = after
        .iter()
        .filter(|(id, r)| before[*id].merged != r.merged)
        .count();
    assert_eq!(
        changed, 3,
        "the products with both sources changed by the new rules"
    );
}
