//! voxgate: an OpenAI-compatible speech gateway, safe to put on the internet.
//!
//! Code map, lowest layer first (ARCHITECTURE.md has the request paths and invariants; the
//! `tidy` test enforces that no layer imports a higher one):
//!
//! - [`config`]: the one typed configuration tree; the only reader of the environment. It
//!   imports nothing from the crate.
//! - [`util`]: small shared helpers: hex, random bytes, private directories, time.
//! - [`error`]: the one table of error codes (code, OpenAI type, status) every front door
//!   speaks, and the domain [`error::Error`] services return, classified by `ErrorClass`.
//! - [`observe`]: the per-application metrics registry, logging set-up, in-process alerts.
//! - [`audio`]: output formats, resampling and streaming encoders.
//! - [`engines`]: the engine catalog (models, voices, fallback chains), remote providers
//!   behind circuit breakers, the egress policy, sandboxed subprocess engines, Whisper.
//! - [`data`]: what is kept: the store (SQLite, PostgreSQL), the vault, secrets, the audit
//!   log, the speech cache, stored voices and their provider-side clones, the upload
//!   spool.
//! - [`identity`]: keys, scopes, tiers, verification ([`identity::auth`]) and account and
//!   key administration ([`identity::accounts`]).
//! - [`limits`]: rate limits, quotas, concurrency and engine admission.
//! - [`service`]: the metered services every front door calls: speech, transcription,
//!   stored voices, account export and erasure. Admission, reservation, settlement and
//!   audit live here and nowhere else.
//! - [`http`]: the HTTP front door: router, middleware, extractors, wire types, the
//!   HTTP error envelope, the server with TLS and the Unix socket.
//! - [`wyoming`]: the Wyoming front door (Home Assistant's speech protocol), beside HTTP.
//! - [`cli`]: the command line, and `voxgate bench`.
//!
//! Engines implement `voxgate_engine::Synthesizer` (Flite lives in `voxgate-flite`) or
//! `voxgate_engine::Transcriber` (Whisper lives in `voxgate-whisper`, behind the `whisper`
//! feature). Input checks (text pipeline, SSML, upload probe) live in `voxgate-input`.

pub mod audio;
pub mod cli;
pub mod config;
pub mod data;
pub mod engines;
pub mod error;
pub mod http;
pub mod identity;
pub mod limits;
pub mod observe;
pub mod service;
pub mod util;
pub mod wyoming;

#[cfg(test)]
mod tidy;
