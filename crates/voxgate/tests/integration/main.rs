//! The integration suite: one binary, a module per feature, every test against a real server
//! started by `helpers::spawn_app` on 127.0.0.1:0 with its own temp dir.

mod audit_log;
mod auth;
mod browser;
mod cli;
mod console;
mod decode;
mod errors;
mod faults;
mod helpers;
mod input;
mod limits;
mod local_engines;
mod logs;
mod metering;
mod metrics;
mod models;
mod perimeter;
mod privacy;
mod providers;
mod ratelimit;
mod realtime;
mod server;
mod speech;
mod store;
mod streaming;
mod transcription;
mod voices;
mod wyoming;
