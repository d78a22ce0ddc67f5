//! `Config::validate`: what the types alone cannot check, each refusal naming its key.

use super::{Config, ConfigError, EngineConfig, invalid};

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
            if let Err(problem) = cidr.parse::<super::Cidr>() {
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
        let d = &self.database;
        if !(100..=60_000).contains(&d.timeout_ms) {
            return Err(invalid(
                "database.timeout_ms",
                "must be between 100 and 60000",
            ));
        }
        if d.outage_grace_secs > 86_400 {
            return Err(invalid(
                "database.outage_grace_secs",
                "must be at most 86400",
            ));
        }
        if !(1..=3600).contains(&d.hold_renew_secs) {
            return Err(invalid(
                "database.hold_renew_secs",
                "must be between 1 and 3600",
            ));
        }
        if d.hold_lease_secs < 2 * d.hold_renew_secs || d.hold_lease_secs > 86_400 {
            return Err(invalid(
                "database.hold_lease_secs",
                "must be at least twice database.hold_renew_secs and at most 86400",
            ));
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
        if self.admin.enabled && !self.admin.bind.ip().is_loopback() && !self.admin.tls.enabled {
            return Err(invalid(
                "admin.bind",
                "an admin listener off loopback needs admin.tls (keys would cross the network in the clear)",
            ));
        }
        self.validate_wyoming()?;
        let c = &self.console;
        if !(1..=super::MAX_SESSION_SECS).contains(&c.session_secs) {
            return Err(invalid(
                "console.session_secs",
                "must be between 1 and 43200 seconds",
            ));
        }
        if !(1..=super::MAX_IDLE_SECS.min(c.session_secs)).contains(&c.idle_secs) {
            return Err(invalid(
                "console.idle_secs",
                "must be between 1 and 1800 seconds, and at most session_secs",
            ));
        }
        for (key, origin) in [
            ("console.console_origin", &c.console_origin),
            ("console.playground_origin", &c.playground_origin),
        ] {
            if !origin.is_empty() && !is_origin(origin) {
                return Err(invalid(
                    key,
                    "must be a web origin: http(s)://host[:port], no path",
                ));
            }
        }
        self.validate_realtime()?;
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
                            "its rank is not above tiers.{higher_name}, so it must allow nothing more (scopes, models, voices, engines, input, concurrency, ssml, upload and stored-voice limits, caching, redaction and blocking, and every rate limit and quota of the higher tier at most as high)"
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
            // A counter is (subject, metric, window start): two periods of one metric would
            // share the windows where they start together (midnight is also an hour).
            for (i, rule) in tier.quotas.iter().enumerate() {
                if tier.quotas[..i]
                    .iter()
                    .any(|r| (r.per, r.metric) == (rule.per, rule.metric))
                {
                    return Err(invalid(
                        format!("tiers.{name}.quotas"),
                        "at most one quota per (per, metric): two periods of one metric would share counters",
                    ));
                }
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
            let transcribes = self.engines[&model.engine].is_transcriber();
            if transcribes && !model.fallback.is_empty() {
                return Err(invalid(
                    format!("models.{id}.fallback"),
                    "fallback chains are for speech models",
                ));
            }
            let mut seen = std::collections::BTreeSet::new();
            for engine in model.chain().filter(|_| !transcribes) {
                if !seen.insert(engine) {
                    return Err(invalid(
                        format!("models.{id}.fallback"),
                        format!("engine `{engine}` appears twice in the chain"),
                    ));
                }
                match self.engines.get(engine) {
                    None => {
                        return Err(invalid(
                            format!("models.{id}.fallback"),
                            format!("no engine `{engine}` is configured"),
                        ));
                    }
                    Some(e) if e.is_transcriber() => {
                        return Err(invalid(
                            format!("models.{id}.fallback"),
                            format!("engine `{engine}` does not synthesize speech"),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        for (id, engine) in &self.engines {
            check_name(&format!("engines.{id}"), id)?;
            for (alias, native) in engine.voice_aliases() {
                check_name(&format!("engines.{id}.voices.{alias}"), alias)?;
                if engine.remote().is_some() {
                    // Remote voice ids travel in URLs and bodies: identifiers only.
                    check_name(&format!("engines.{id}.voices.{alias}"), native)?;
                }
            }
            check_remote(id, engine)?;
            if let EngineConfig::Subprocess(c) = engine {
                check_subprocess(id, c)?;
            }
        }
        Ok(())
    }
}

/// A sandboxed binary's program, voices and limits (the binary itself is checked when the
/// engine is built, at start-up).
fn check_subprocess(id: &str, c: &super::SubprocessConfig) -> Result<(), ConfigError> {
    let key = |field: &str| format!("engines.{id}.{field}");
    let custom = c.program == super::Program::Custom;
    if custom == c.binary.as_os_str().is_empty() {
        return Err(invalid(
            key("binary"),
            "required for program = \"custom\" and only for it",
        ));
    }
    if !custom && !c.args.is_empty() {
        return Err(invalid(
            key("args"),
            "only program = \"custom\" takes arguments",
        ));
    }
    if custom && !c.binary.is_absolute() {
        return Err(invalid(key("binary"), "must be an absolute path"));
    }
    for voice in c.natives() {
        let ok = !voice.starts_with('-')
            && !voice.is_empty()
            && voice.len() <= 64
            && voice
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_+".contains(&b));
        if !ok {
            return Err(invalid(
                key("native_voices"),
                "voice names use A-Z, a-z, 0-9, '-', '_', '+' and do not start with '-'",
            ));
        }
    }
    for (alias, native) in &c.voices {
        if !c.natives().contains(native) {
            return Err(invalid(
                key(&format!("voices.{alias}")),
                format!("`{native}` is not one of native_voices"),
            ));
        }
    }
    if c.parallel == 0 || c.cpu_secs == 0 || c.timeout_ms == 0 || c.max_output_bytes < 1024 {
        return Err(invalid(
            key("limits"),
            "parallel, cpu_secs and timeout_ms must be positive, max_output_bytes at least 1 KiB",
        ));
    }
    if c.memory_bytes < 16 << 20 {
        return Err(invalid(key("memory_bytes"), "must be at least 16 MiB"));
    }
    super::local::run_as(&c.run_as).map_err(|p| invalid(key("run_as"), p))?;
    if let Some(p) = c.read_paths.iter().find(|p| !p.is_absolute()) {
        return Err(invalid(
            key("read_paths"),
            format!("{} is not an absolute path", p.display()),
        ));
    }
    Ok(())
}

/// A remote provider's URL, secret variable, timeouts, caps and breaker.
fn check_remote(id: &str, engine: &EngineConfig) -> Result<(), ConfigError> {
    let Some((http, breaker, var)) = engine.remote() else {
        return Ok(());
    };
    let key = |field: &str| format!("engines.{id}.{field}");
    if !var.is_empty()
        && (var.starts_with("VOXGATE_")
            || !var
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'))
    {
        return Err(invalid(
            key("api_key_env"),
            "must name an environment variable (A-Z, 0-9, _) outside the VOXGATE_ namespace",
        ));
    }
    if http.connect_timeout_ms == 0
        || http.first_byte_timeout_ms == 0
        || http.read_timeout_ms == 0
        || http.total_timeout_secs == 0
    {
        return Err(invalid(key("http"), "timeouts must be positive"));
    }
    if !(1024..=1 << 30).contains(&http.max_response_bytes) {
        return Err(invalid(
            key("http.max_response_bytes"),
            "must be between 1 KiB and 1 GiB",
        ));
    }
    if breaker.consecutive_failures == 0
        || !(breaker.failure_rate > 0.0 && breaker.failure_rate <= 1.0)
        || breaker.window_secs == 0
        || breaker.cooldown_secs == 0
    {
        return Err(invalid(
            key("breaker"),
            "consecutive_failures, window_secs and cooldown_secs must be positive and failure_rate in (0, 1]",
        ));
    }
    match engine {
        EngineConfig::OpenAi(c) if !(8_000..=48_000).contains(&c.sample_rate) => Err(invalid(
            key("sample_rate"),
            "must be between 8000 and 48000",
        )),
        EngineConfig::OpenAi(c) | EngineConfig::OpenAiStt(c) if c.model.is_empty() => {
            Err(invalid(key("model"), "must name the upstream's model"))
        }
        EngineConfig::ElevenLabs(c) if super::elevenlabs_pcm_rate(&c.output_format).is_none() => {
            Err(invalid(
                key("output_format"),
                "must be pcm_16000, pcm_22050, pcm_24000 or pcm_44100",
            ))
        }
        EngineConfig::ElevenLabs(c) if c.api_key_env.is_empty() => {
            Err(invalid(key("api_key_env"), "ElevenLabs needs a key"))
        }
        EngineConfig::Pollinations(c) if !(1..=4000).contains(&c.max_chars) => {
            Err(invalid(key("max_chars"), "must be between 1 and 4000"))
        }
        _ => Ok(()),
    }
}

impl Config {
    /// Realtime sessions: caps in sane ranges, secret lifetimes within OpenAI's bounds.
    fn validate_realtime(&self) -> Result<(), ConfigError> {
        let r = &self.transcription.realtime;
        let key = |field: &str| format!("transcription.realtime.{field}");
        for (field, value, range) in [
            ("max_sessions", r.max_sessions as u64, 1..=100_000),
            ("max_session_secs", r.max_session_secs, 10..=86_400),
            ("idle_secs", r.idle_secs, 1..=3_600),
            (
                "max_event_bytes",
                r.max_event_bytes as u64,
                1_024..=16 * 1024 * 1024,
            ),
            ("max_turn_secs", u64::from(r.max_turn_secs), 1..=30),
            (
                "send_buffer_events",
                r.send_buffer_events as u64,
                8..=65_536,
            ),
            (
                "quota_increment_secs",
                u64::from(r.quota_increment_secs),
                1..=3_600,
            ),
            (
                "secret_max_secs",
                r.secret_max_secs,
                super::MIN_SECRET_SECS..=7_200,
            ),
        ] {
            if !range.contains(&value) {
                return Err(invalid(
                    key(field),
                    format!("must be between {} and {}", range.start(), range.end()),
                ));
            }
        }
        if !(super::MIN_SECRET_SECS..=r.secret_max_secs).contains(&r.secret_default_secs) {
            return Err(invalid(
                key("secret_default_secs"),
                "must be between 10 and secret_max_secs",
            ));
        }
        Ok(())
    }

    /// Wyoming listeners: a well-formed bound key id, an allow-list for any bind off
    /// loopback, models that exist, caps in sane ranges, no address shared with another
    /// listener.
    fn validate_wyoming(&self) -> Result<(), ConfigError> {
        let mut binds = vec![self.server.bind];
        if self.admin.enabled {
            binds.push(self.admin.bind);
        }
        for (name, w) in &self.wyoming {
            let key = |field: &str| format!("wyoming.{name}.{field}");
            check_name(&format!("wyoming.{name}"), name)?;
            if w.key_id.len() != 24
                || !w
                    .key_id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
            {
                return Err(invalid(
                    key("key_id"),
                    "must be a key id (24 characters, as `voxgate keys list` shows it)",
                ));
            }
            for cidr in &w.allow {
                if let Err(problem) = cidr.parse::<super::Cidr>() {
                    return Err(invalid(key("allow"), problem));
                }
            }
            if !w.bind.ip().is_loopback() && w.allow.is_empty() {
                return Err(invalid(
                    key("bind"),
                    "a Wyoming listener off loopback needs `allow` (the protocol has no authentication: list the address blocks that may connect)",
                ));
            }
            if w.bind.port() != 0 && binds.contains(&w.bind) {
                return Err(invalid(key("bind"), "is already used by another listener"));
            }
            binds.push(w.bind);
            for (field, model, transcribes) in [
                ("tts_model", &w.tts_model, false),
                ("asr_model", &w.asr_model, true),
            ] {
                let Some(m) = self.models.get(model) else {
                    return Err(invalid(key(field), "names no configured model"));
                };
                if self
                    .engines
                    .get(&m.engine)
                    .is_some_and(|e| e.is_transcriber() != transcribes)
                {
                    let wanted = if transcribes {
                        "transcription"
                    } else {
                        "speech"
                    };
                    return Err(invalid(key(field), format!("must name a {wanted} model")));
                }
            }
            let l = &w.limits;
            for (field, value, range) in [
                (
                    "limits.max_header_bytes",
                    l.max_header_bytes,
                    256..=1024 * 1024,
                ),
                (
                    "limits.max_data_bytes",
                    l.max_data_bytes,
                    256..=16 * 1024 * 1024,
                ),
                (
                    "limits.max_payload_bytes",
                    l.max_payload_bytes,
                    1024..=16 * 1024 * 1024,
                ),
                ("limits.max_connections", l.max_connections, 1..=10_000),
                (
                    "limits.max_pending_chars",
                    l.max_pending_chars,
                    16..=100_000,
                ),
            ] {
                if !range.contains(&value) {
                    return Err(invalid(
                        key(field),
                        format!("must be between {} and {}", range.start(), range.end()),
                    ));
                }
            }
            for (field, value) in [
                ("limits.idle_secs", l.idle_secs),
                ("limits.utterance_secs", l.utterance_secs),
                ("limits.max_audio_secs", u64::from(l.max_audio_secs)),
                ("limits.max_events_per_sec", u64::from(l.max_events_per_sec)),
            ] {
                if !(1..=86_400).contains(&value) {
                    return Err(invalid(key(field), "must be between 1 and 86400"));
                }
            }
        }
        Ok(())
    }
}

/// Model, engine and voice names are identifiers: never paths, never anything to escape.
fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    if super::is_valid_name(name) {
        Ok(())
    } else {
        Err(invalid(
            key,
            "names use only a-z, A-Z, 0-9, '.', '_' and '-', up to 64 characters",
        ))
    }
}

/// `http(s)://host[:port]` and nothing else (what a browser sends as `Origin`).
fn is_origin(text: &str) -> bool {
    let Some(authority) = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
    else {
        return false;
    };
    !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}
