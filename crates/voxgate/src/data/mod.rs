//! What voxgate keeps, and how: the [`store`] (accounts, keys, quotas, audit events, voice
//! records; SQLite or PostgreSQL), the [`vault`] (encryption at rest under per-account
//! keys), [`secrets`] kept out of the database, the tamper-evident [`audit`] log, the
//! encrypted speech [`cache`], stored [`voices`] and the [`clones`] providers made of them, and the per-process [`spool`] of
//! temporary files. Only `store/` contains SQL.

pub mod audit;
pub(crate) mod cache;
pub(crate) mod clones;
pub mod journal;
pub(crate) mod secrets;
pub(crate) mod spool;
pub mod store;
pub mod vault;
pub(crate) mod voices;
