//! How many round trips a POST costs on the MongoDB store, counted with the driver's command
//! monitoring: every command the driver sends is one round trip (`BENCHMARKS.md` states
//! the number). Needs a server: `./scripts/test.sh --test mongo_round_trips -- --ignored`.

use std::sync::{Arc, Mutex};

use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;
use serde_json::Value;

use pinv::app::service::{PostOptions, PostStatus, Service};
use pinv::core::schema::Schemas;
use pinv::store::mongo::MongoStore;
use pinv::testing::mongo::{options, uri};

fn seed() -> Value {
    serde_json::from_str(include_str!("../docs/examples/seed-adi-request.json")).unwrap()
}

/// The names of the commands sent since the last call.
#[derive(Clone, Default)]
struct Commands(Arc<Mutex<Vec<String>>>);

impl Commands {
    fn handler(&self) -> EventHandler<CommandEvent> {
        let seen = self.0.clone();
        EventHandler::callback(move |event| {
            if let CommandEvent::Started(started) = event {
                seen.lock().unwrap().push(started.command_name);
            }
        })
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Posts `body`, checks the answer's status, and returns the commands the POST sent.
async fn post(
    service: &Service,
    commands: &Commands,
    body: Value,
    status: PostStatus,
) -> Vec<String> {
    let outcome = service
        .post(body, PostOptions::default(), &|_| true)
        .await
        .expect("the POST is stored or recognised");
    assert_eq!(outcome.status, status);
    commands.take()
}

#[tokio::test]
#[ignore = "needs a MongoDB wire-protocol server: run ./scripts/test.sh"]
async fn a_new_product_post_takes_ten_round_trips() {
    let commands = Commands::default();
    let database = format!("pinv_test_{}", uuid::Uuid::new_v4().simple());
    let store = MongoStore::connect_observed(&uri(), &database, options(), commands.handler())
        .await
        .expect("connect");
    let service = Service {
        store: Arc::new(store.clone()),
        rules: Arc::new(pinv::testing::rules::shipped_rules()),
        schemas: Arc::new(Schemas::compile().unwrap()),
    };
    commands.take();

    let sent = post(&service, &commands, seed(), PostStatus::Created).await;
    // Reads: the processed event, the owners of the keys, the waiters of the new keys (one
    // find each; no records to read for a new product). The transaction: the event, the
    // keys (guarded by their unique ids, not read first), the product (one insert each);
    // its list-index entries (insert; a new product has none to drop); its history
    // (insert); the hub subscriptions, read inside the transaction so that a subscription
    // made on another instance gets the change's event; then the commit.
    assert_eq!(
        sent,
        [
            "find",
            "find",
            "find",
            "insert",
            "insert",
            "insert",
            "insert",
            "insert",
            "find",
            "commitTransaction"
        ],
        "{} round trips",
        sent.len()
    );

    let sent = post(&service, &commands, seed(), PostStatus::Unchanged).await;
    // The processed event, then the products it stored, for the answer.
    assert_eq!(sent, ["find", "find"]);

    // The same product from the same source, with another status: an update.
    let mut changed = seed();
    changed["headers"]["id"] = "round-trips-update".into();
    changed["value"]["status"] = "suspended".into();
    let sent = post(&service, &commands, changed, PostStatus::Created).await;
    // Reads: the processed event, the owners of the keys, the product. The transaction: the
    // event; the product, replaced at its revision by a findAndModify that returns the
    // replaced document, whose list-index entries are the ones to drop (so no list of each
    // product's entries is read or written: 12 round trips before); the entries that went
    // (delete) and came (insert); the history; the hub subscriptions; the commit.
    assert_eq!(
        sent,
        [
            "find",
            "find",
            "find",
            "insert",
            "findAndModify",
            "delete",
            "insert",
            "insert",
            "find",
            "commitTransaction"
        ],
        "{} round trips",
        sent.len()
    );

    store.drop_database().await.expect("drop the test database");
}
