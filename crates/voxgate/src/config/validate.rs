//! `Config::validate`: what the types alone cannot check, each refusal naming its key.

use super::{Config, ConfigError, invalid};

impl Config {
    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        for (key, value) in [
            (
                "server.header_read_timeout_secs",
                s.header_read_timeout_secs,
            ),
            ("server.request_timeout_secs", s.request_timeout_secs),
            ("server.stream_timeout_secs", s.stream_timeout_secs),
        ] {
            if !(1..=86_400).contains(&value) {
                return Err(invalid(key, "must be between 1 and 86400 seconds"));
            }
        }
        if !(1024..=16 * 1024 * 1024).contains(&s.json_body_limit_bytes) {
            return Err(invalid(
                "server.json_body_limit_bytes",
                "must be between 1 KiB and 16 MiB",
            ));
        }
        for cidr in &s.trusted_proxies {
            if let Err(problem) = cidr.parse::<crate::api::client_ip::Cidr>() {
                return Err(invalid("server.trusted_proxies", problem));
            }
        }
        if s.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be at least 1"));
        }
        if !(1..=100_000).contains(&self.speech.max_input_chars) {
            return Err(invalid(
                "speech.max_input_chars",
                "must be between 1 and 100000",
            ));
        }
        if self.speech.max_instructions_chars > 100_000 {
            return Err(invalid(
                "speech.max_instructions_chars",
                "must be at most 100000",
            ));
        }
        if self
            .auth
            .pepper
            .as_ref()
            .is_some_and(|p| secrecy::ExposeSecret::expose_secret(p).len() < 32)
        {
            return Err(invalid("auth.pepper", "must be at least 32 bytes"));
        }
        if !(1..=60_000).contains(&self.auth.cache_ttl_ms) {
            return Err(invalid("auth.cache_ttl_ms", "must be between 1 and 60000"));
        }
        if self.auth.failure_threshold == 0
            || self.auth.failure_window_secs == 0
            || self.auth.block_secs == 0
        {
            return Err(invalid(
                "auth",
                "failure_threshold, failure_window_secs and block_secs must be positive",
            ));
        }
        if self.admin.enabled && self.admin.bind == self.server.bind {
            return Err(invalid("admin.bind", "must differ from server.bind"));
        }
        if self.tiers.is_empty() {
            return Err(invalid("tiers", "at least one tier is required"));
        }
        let rules = self
            .tiers
            .iter()
            .flat_map(|(name, t)| {
                t.rate_limits
                    .iter()
                    .map(move |r| (format!("tiers.{name}.rate_limits"), r))
            })
            .chain(
                self.limits
                    .per_ip
                    .iter()
                    .map(|r| ("limits.per_ip".to_owned(), r)),
            )
            .chain(
                self.limits
                    .per_ip_unauthenticated
                    .iter()
                    .map(|r| ("limits.per_ip_unauthenticated".to_owned(), r)),
            );
        for (key, rule) in rules {
            if rule.limit == 0 || rule.burst == Some(0) || rule.limit > 1_000_000_000 {
                return Err(invalid(key, "limit and burst must be between 1 and 10^9"));
            }
        }
        if !(0.01..=1.0).contains(&self.limits.fallback_fraction) {
            return Err(invalid(
                "limits.fallback_fraction",
                "must be between 0.01 and 1",
            ));
        }
        if !(1..=10_000).contains(&self.limits.redis_timeout_ms) {
            return Err(invalid(
                "limits.redis_timeout_ms",
                "must be between 1 and 10000",
            ));
        }
        {
            use secrecy::ExposeSecret as _;
            let backend = self.limits.backend.expose_secret();
            if backend != "memory"
                && !backend.starts_with("redis://")
                && !backend.starts_with("rediss://")
            {
                return Err(invalid(
                    "limits.backend",
                    "must be \"memory\" or a redis:// URL",
                ));
            }
        }
        for (name, tier) in &self.tiers {
            check_name(&format!("tiers.{name}"), name)?;
            for model in tier.models.iter().filter(|m| *m != "*") {
                if !self.models.contains_key(model) {
                    return Err(invalid(
                        format!("tiers.{name}.models"),
                        format!("no model `{model}` is configured"),
                    ));
                }
            }
            for engine in tier.engines.iter().filter(|e| *e != "*") {
                if !self.engines.contains_key(engine) {
                    return Err(invalid(
                        format!("tiers.{name}.engines"),
                        format!("no engine `{engine}` is configured"),
                    ));
                }
            }
            if !(1..=100_000).contains(&tier.max_input_chars) {
                return Err(invalid(
                    format!("tiers.{name}.max_input_chars"),
                    "must be between 1 and 100000",
                ));
            }
        }
        for (lower_name, lower) in &self.tiers {
            for (higher_name, higher) in &self.tiers {
                if lower_name != higher_name
                    && lower.rank <= higher.rank
                    && !lower.is_within(higher)
                {
                    return Err(invalid(
                        format!("tiers.{lower_name}"),
                        format!(
                            "its rank is not above tiers.{higher_name}, so it must allow nothing more (scopes, models, voices, engines, input, concurrency, ssml, upload and stored-voice limits)"
                        ),
                    ));
                }
            }
        }
        let ssml = &self.speech.ssml;
        if !(0.1..=1.0).contains(&ssml.min_rate)
            || !(1.0..=4.0).contains(&ssml.max_rate)
            || ssml.max_depth == 0
            || ssml.max_nodes == 0
            || !(64..=1024 * 1024).contains(&ssml.max_bytes)
        {
            return Err(invalid(
                "speech.ssml",
                "min_rate must be in 0.1..=1, max_rate in 1..=4, max_bytes in 64..=1048576, max_depth and max_nodes positive",
            ));
        }
        if !(0.5..=60.0).contains(&self.voices.min_secs)
            || !(self.voices.min_secs..=120.0).contains(&self.voices.max_secs)
        {
            return Err(invalid(
                "voices",
                "min_secs must be in 0.5..=60 and max_secs in min_secs..=120",
            ));
        }
        if !(1..=256).contains(&self.voices.max_name_chars) {
            return Err(invalid(
                "voices.max_name_chars",
                "must be between 1 and 256",
            ));
        }
        if self
            .storage
            .master_key
            .as_ref()
            .is_some_and(|k| secrecy::ExposeSecret::expose_secret(k).len() < 32)
        {
            return Err(invalid("storage.master_key", "must be at least 32 bytes"));
        }
        for (name, tier) in &self.tiers {
            if !(1..=1024 * 1024 * 1024).contains(&tier.max_upload_bytes) {
                return Err(invalid(
                    format!("tiers.{name}.max_upload_bytes"),
                    "must be between 1 byte and 1 GiB",
                ));
            }
            if !(1..=3600).contains(&tier.max_upload_secs) {
                return Err(invalid(
                    format!("tiers.{name}.max_upload_secs"),
                    "must be between 1 and 3600",
                ));
            }
        }
        if self.engines.is_empty() {
            return Err(invalid("engines", "at least one engine is required"));
        }
        if self.models.is_empty() {
            return Err(invalid("models", "at least one model is required"));
        }
        if !self.engines.values().any(|e| !e.is_transcriber()) {
            return Err(invalid("engines", "at least one speech engine is required"));
        }
        for (id, model) in &self.models {
            check_name(&format!("models.{id}"), id)?;
            if !self.engines.contains_key(&model.engine) {
                return Err(invalid(
                    format!("models.{id}.engine"),
                    format!("no engine `{}` is configured", model.engine),
                ));
            }
        }
        for (id, engine) in &self.engines {
            check_name(&format!("engines.{id}"), id)?;
            for alias in engine.voice_aliases().keys() {
                check_name(&format!("engines.{id}.voices.{alias}"), alias)?;
            }
        }
        Ok(())
    }
}

/// Model, engine and voice names are identifiers: never paths, never anything to escape.
fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    if crate::engines::is_valid_name(name) {
        Ok(())
    } else {
        Err(invalid(
            key,
            "names use only a-z, A-Z, 0-9, '.', '_' and '-', up to 64 characters",
        ))
    }
}
