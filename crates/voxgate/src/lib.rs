//! voxgate: an OpenAI-compatible speech gateway, safe to put on the internet.
//!
//! Code map (see ARCHITECTURE.md for the request path and invariants):
//! - [`config`]: the one typed configuration tree; the only reader of the environment.
//! - [`api`]: the HTTP surface: routes, wire types, the JSON extractor, middleware.
//! - [`error`]: the one HTTP-facing error type and its status/type/code table.
//! - [`speech`]: orchestration of a speech request: engine → resample → encode.
//! - [`transcription`]: orchestration of a transcription: decoded upload → 16 kHz →
//!   recogniser → json/text/srt/vtt/verbose_json.
//! - [`upload`]: multipart reading with caps enforced while reading, private temp files.
//! - [`voices`]: stored voice references (cloning inputs), sealed by [`vault`].
//! - [`vault`]: encryption at rest under per-account keys; [`secrets`]: secrets kept out of
//!   the database (pepper, master key).
//! - [`engines`]: builds engines from configuration; resolves models and voices by table.
//! - [`store`]: the `Store` trait (SQLite, PostgreSQL): accounts, keys, audit events.
//! - [`auth`]: keys, scopes, tiers, verification, the brute-force guard.
//! - [`accounts`]: account and key administration (CLI and admin API).
//! - [`audit`]: typed audit events written through the store.
//! - [`limits`]: rate limits, quotas, concurrency. [`metrics`]: Prometheus counters.
//! - [`audio`]: output formats, resampling and streaming encoders.
//! - [`server`]: start-up, the listener, graceful shutdown.
//! - [`telemetry`]: logging and the request span.
//! - [`breaker`]: the per-provider circuit breaker; [`egress`]: which addresses outbound
//!   connections may reach (both for the remote providers of #6).
//! - [`cli`]: the command line. [`bench`]: the `voxgate bench` measurements.
//!
//! Engines implement `voxgate_engine::Synthesizer` (Flite lives in `voxgate-flite`) or
//! `voxgate_engine::Transcriber` (Whisper lives in `voxgate-whisper`, behind the `whisper`
//! feature). Input checks (text pipeline, SSML, upload probe) live in `voxgate-input`.

pub mod accounts;
pub mod alerts;
pub mod api;
pub mod audio;
pub mod audit;
pub mod auth;
pub mod bench;
pub mod breaker;
pub mod cache;
pub mod cli;
pub mod config;
pub mod egress;
pub mod engines;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod privacy;
pub mod providers;
pub mod retention;
pub mod secrets;
pub mod server;
pub mod socket;
pub mod speech;
pub mod store;
pub mod subprocess;
pub mod telemetry;
pub mod tls;
pub mod transcription;
pub mod upload;
pub mod vault;
pub mod voices;
