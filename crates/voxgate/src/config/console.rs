//! `[console]`: the web console on the admin listener (`/console/`) and the playground on
//! the public listener (`/playground/`, off by default). Both sign in with a key that is
//! exchanged for a browser session; these are the session's lifetimes.

use serde::Deserialize;

/// The longest a session may last, whatever the configuration says.
pub const MAX_SESSION_SECS: u64 = 12 * 3600;
/// The longest a session may stay unused.
pub const MAX_IDLE_SECS: u64 = 30 * 60;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console on the admin listener (it needs the admin listener and a key with
    /// the `admin` scope to sign in).
    pub enabled: bool,
    /// Serve the playground on the public listener (any key with `speech` signs in).
    pub playground: bool,
    /// A session's absolute lifetime (at most 12 h).
    pub session_secs: u64,
    /// How long a session may go unused (at most 30 min).
    pub idle_secs: u64,
    /// The origin browsers see the console at when a reverse proxy serves it
    /// (`https://admin.example`); empty: the admin listener's own. Changes must come from
    /// it, and an `https` origin makes the session cookie `Secure`.
    pub console_origin: String,
    /// The same for the playground and the public listener.
    pub playground_origin: String,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            playground: false,
            session_secs: MAX_SESSION_SECS,
            idle_secs: MAX_IDLE_SECS,
            console_origin: String::new(),
            playground_origin: String::new(),
        }
    }
}
