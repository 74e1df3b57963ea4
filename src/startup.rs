//! Builds and runs the HTTP application.
//!
//! [`Application::build`] binds its own listener, so tests bind port 0 and ask [`port`]
//! which one they got.
//!
//! [`port`]: Application::port

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{middleware, web, App, HttpServer};

use crate::api::admin::AdminRuns;
use crate::api::auth::{AuthConfigError, Authenticator};
use crate::api::limits::BodyBudget;
use crate::api::metrics::Metrics;
use crate::app::adapters::{load_adapters_dir, LoadAdaptersError};
use crate::app::rules_loader::{load_rules_dir, LoadRulesError};
use crate::app::service::Service;
use crate::config::{MongoSettings, Settings, StoreSetting, StoreSettings};
use crate::core::schema::Schemas;
use crate::store::embedded::EmbeddedStore;
use crate::store::memory::MemoryStore;
use crate::store::mongo::{MongoOptions, MongoStore};
use crate::store::{Store, StoreError};

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The merge rules are invalid or unreadable.
    #[error(transparent)]
    Rules(#[from] LoadRulesError),
    /// The bundled schemas do not compile (a bug).
    #[error("the bundled JSON Schemas do not compile: {0}")]
    Schemas(String),
    /// The store could not be opened.
    // The cause is the source, not part of the message: the CLI prints the chain once.
    #[error("cannot open the store")]
    Store(#[from] StoreError),
    /// The MongoDB store is configured but not built into this version.
    #[error(
        "PINV_STORE: the MongoDB store is not available yet; use a directory path or `memory`"
    )]
    MongoNotAvailable,
    /// The adapters are invalid or unreadable.
    #[error(transparent)]
    Adapters(#[from] LoadAdaptersError),
    /// Token validation could not be set up.
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    /// The address could not be bound.
    #[error("PINV_BIND: cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A bound, ready-to-run HTTP server.
pub struct Application {
    port: u16,
    server: Server,
    /// The hub dispatcher, stopped with the server so that it lets go of the store.
    dispatcher: Option<tokio::task::JoinHandle<()>>,
}

/// Request workers when `PINV_WORKERS` is unset: twice the CPUs (actix-web's default is
/// one per physical core). A POST spends most of its time on its worker's CPU and the rest
/// waiting for the writer's group commit; with more workers than cores, more POSTs reach the
/// writer together (fewer, larger commits: less CPU and fewer bytes written per POST), and a
/// worker busy with one request holds up fewer connections. On 2 cores, 4 workers against 2
/// gave about 5% more POSTs a second at a fifth lower p99 and a quarter fewer bytes written,
/// and about as many GETs at a higher p99 (BENCHMARKS.md, issue 9 round 9); 8 and 16 gave
/// fewer POSTs than 4 and more memory.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
}

/// Threads of each request worker's blocking pool (actix-web's default is 512 shared among
/// the workers). The pool runs the embedded store's reads other than point reads (lists,
/// history, scans) and large bodies' validation: on a machine with a couple of
/// cores, more threads than this only add allocator heaps (memory) and context switches.
const BLOCKING_THREADS_PER_WORKER: usize = 4;

impl Application {
    /// Loads rules and schemas, opens the configured store, binds the listener. Rules come
    /// first: a bad rules file should fail the start at once, not after a store timeout.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let (rules, schemas) = load_rules_and_schemas(&settings)?;
        let store = open_store(&settings.store, &settings.mongodb).await?;
        Self::build_with_service(
            settings,
            Service {
                store,
                rules,
                schemas,
            },
        )
    }

    /// Like [`build`](Self::build) with a store that is already open (tests use this).
    pub fn build_with_store(
        settings: Settings,
        store: Arc<dyn Store>,
    ) -> Result<Self, StartupError> {
        let (rules, schemas) = load_rules_and_schemas(&settings)?;
        Self::build_with_service(
            settings,
            Service {
                store,
                rules,
                schemas,
            },
        )
    }

    /// Binds the listener and serves `service` (tests that need no rules use this).
    pub fn build_with_service(settings: Settings, service: Service) -> Result<Self, StartupError> {
        let adapters = load_adapters_dir(&settings.adapters.dir, &service.rules)?;
        tracing::info!(
            adapters_dir = %settings.adapters.dir.display(),
            systems = ?adapters.by_system.keys().collect::<Vec<_>>(),
            "adapters loaded"
        );
        let adapters = web::Data::new(adapters);
        let authenticator = web::Data::new(Authenticator::from_settings(&settings.jwt)?);
        let addr = settings.server.bind.to_string();
        let bind_error = |source| StartupError::Bind {
            addr: addr.clone(),
            source,
        };
        let listener = TcpListener::bind(settings.server.bind).map_err(bind_error)?;
        let port = listener.local_addr().map_err(bind_error)?.port();
        let workers = settings.server.workers.unwrap_or_else(default_workers);
        tracing::info!(
            address = %listener.local_addr().map_err(bind_error)?,
            store = %settings.store.location,
            workers,
            "listening"
        );

        let metrics = web::Data::new(Metrics::new());
        let hub_metrics = crate::app::dispatch::HubMetrics::new();
        for collector in hub_metrics.collectors() {
            metrics.register(collector);
        }
        // Delivery runs beside the server on the runtime building the app (`pinv serve`'s
        // main one, or a test's); without a runtime there is no server to serve either.
        let dispatcher = tokio::runtime::Handle::try_current().is_ok().then(|| {
            crate::app::dispatch::spawn(
                std::sync::Arc::clone(&service.store),
                settings.hub.clone(),
                hub_metrics,
            )
        });
        let service = web::Data::new(service);
        let budget = web::Data::new(BodyBudget::new(settings.server.body_budget_bytes));
        // Re-merge runs go to the runtime building the app (`pinv serve`'s main one), not to
        // a request worker's.
        let admin_runs = web::Data::new(AdminRuns::new(tokio::runtime::Handle::try_current().ok()));
        let settings = web::Data::new(settings);
        let server = HttpServer::new(move || {
            App::new()
                .wrap(middleware::from_fn(crate::api::middleware::observe))
                .app_data(service.clone())
                .app_data(authenticator.clone())
                .app_data(metrics.clone())
                .app_data(admin_runs.clone())
                .app_data(settings.clone())
                .app_data(budget.clone())
                .app_data(adapters.clone())
                .configure(crate::api::configure)
                .configure(crate::api::ui::configure)
                .default_service(web::to(crate::api::route_not_found))
        })
        .workers(workers)
        .worker_max_blocking_threads(BLOCKING_THREADS_PER_WORKER)
        .listen(listener)
        .map_err(bind_error)?
        .run();
        Ok(Self {
            port,
            server,
            dispatcher,
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server (tests restart the app with it).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped (signal or [`handle`](Self::handle)).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        if let Some(dispatcher) = self.dispatcher {
            dispatcher.abort();
            let _ = dispatcher.await;
        }
        served
    }
}

fn load_rules_and_schemas(
    settings: &Settings,
) -> Result<(Arc<crate::core::rules::Rules>, Arc<Schemas>), StartupError> {
    let rules = load_rules_dir(&settings.rules.dir)?;
    tracing::info!(
        rules_dir = %settings.rules.dir.display(),
        rules_hash = %rules.hash,
        "merge rules loaded"
    );
    let schemas = Schemas::compile().map_err(StartupError::Schemas)?;
    Ok((Arc::new(rules), Arc::new(schemas)))
}

/// The MongoDB options `settings` configure.
pub fn mongo_options(settings: &MongoSettings) -> MongoOptions {
    MongoOptions {
        w: settings.write_concern.to_string(),
        timeout: settings.timeout,
        one_at_a_time: settings.one_at_a_time,
        ..MongoOptions::default()
    }
}

/// Opens the store `store` names (`mongodb` applies to MongoDB only).
pub async fn open_store(
    store: &StoreSettings,
    mongodb: &MongoSettings,
) -> Result<Arc<dyn Store>, StartupError> {
    match &store.location {
        StoreSetting::Embedded(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::unavailable_from(format!("cannot create {}", dir.display()), e)
            })?;
            Ok(Arc::new(EmbeddedStore::open_indexed(
                dir,
                store.indexed_paths.clone(),
            )?))
        }
        StoreSetting::Memory => Ok(Arc::new(MemoryStore::new())),
        StoreSetting::Mongo(uri) => {
            let options = MongoOptions {
                indexed_paths: store.indexed_paths.clone(),
                ..mongo_options(mongodb)
            };
            let store = MongoStore::connect(uri, &mongodb.database, options).await?;
            Ok(Arc::new(store))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WriteConcernSetting;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    async fn open(location: StoreSetting) -> Result<Arc<dyn Store>, StartupError> {
        let settings = Settings::for_tests("unused", SECRET);
        let store = StoreSettings {
            location,
            ..settings.store
        };
        open_store(&store, &settings.mongodb).await
    }

    #[test]
    fn mongo_options_follow_the_settings() {
        let mut settings = Settings::for_tests("unused", SECRET).mongodb;
        assert_eq!(mongo_options(&settings).w, "majority");
        assert_eq!(
            mongo_options(&settings).timeout,
            std::time::Duration::from_secs(5)
        );
        assert!(!mongo_options(&settings).one_at_a_time);
        settings.write_concern = WriteConcernSetting::Nodes(1);
        settings.timeout = std::time::Duration::from_millis(250);
        settings.one_at_a_time = true;
        let options = mongo_options(&settings);
        assert_eq!(options.w, "1");
        assert_eq!(options.timeout, std::time::Duration::from_millis(250));
        assert!(options.one_at_a_time);
        settings.write_concern = WriteConcernSetting::Tag("twoDCs".into());
        assert_eq!(mongo_options(&settings).w, "twoDCs");
    }

    #[tokio::test]
    async fn malformed_mongodb_uri_is_a_store_error() {
        let e = open(StoreSetting::Mongo("mongodb://".into()))
            .await
            .err()
            .unwrap();
        assert!(matches!(e, StartupError::Store(_)), "{e}");
    }

    #[tokio::test]
    async fn embedded_store_directory_is_created_and_answers() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(StoreSetting::Embedded(dir.path().join("a/b")))
            .await
            .unwrap();
        store.ping().await.unwrap();
        assert!(dir.path().join("a/b").is_dir());
    }

    #[tokio::test]
    async fn bind_error_names_the_variable() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut settings = Settings::for_tests("unused", SECRET);
        settings.server.bind = taken.local_addr().unwrap();
        let service = Service {
            store: open(StoreSetting::Memory).await.unwrap(),
            rules: Arc::new(
                crate::app::rules_loader::load_rules_dir(std::path::Path::new(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/merge-rules"
                )))
                .unwrap(),
            ),
            schemas: Arc::new(Schemas::compile().unwrap()),
        };
        let e = Application::build_with_service(settings, service)
            .err()
            .unwrap();
        assert!(e.to_string().starts_with("PINV_BIND"), "{e}");
    }
}
