//! Who is calling and what they may do: API keys, scopes, tiers and their verification
//! ([`auth`]), and account and key administration shared by the CLI and the admin API
//! ([`accounts`]).

pub mod accounts;
pub mod auth;
