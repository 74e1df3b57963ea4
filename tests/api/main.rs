//! Black-box tests of the HTTP API: each test starts a real server on a random port.

mod adapters;
mod admin;
mod auth;
mod cli;
mod cli_adapt;
mod concurrency;
mod errors;
mod health;
mod helpers;
mod hub;
mod integrity;
mod metrics;
mod mongo_instances;
mod mongo_isolation;
mod mongo_outage;
mod openapi;
mod packages;
mod products;
mod provenance;
mod reads;
mod restart;
mod schema;
mod tmf_query;
mod tmf_write;
mod ui;
