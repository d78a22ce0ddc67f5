//! Engines and providers: builds engines from their closed configuration enum and resolves
//! client-facing model and voice names to an engine and a native voice (a voice is a key in
//! a table, never a path).
//!
//! - [`providers`]: remote engines (OpenAI-compatible, ElevenLabs, Pollinations) through one
//!   hardened HTTP client; [`egress`]: which addresses they may reach.
//! - [`breaker`]: the circuit breaker every remote engine sits behind.
//! - [`subprocess`]: espeak-ng, festival or an operator's binary in the sandbox.
//! - [`whisper`]: Whisper, verified and loaded on first use.

pub(crate) mod breaker;
pub(crate) mod egress;
pub mod providers;
pub(crate) mod subprocess;
pub(crate) mod whisper;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use voxgate_engine::{Synthesizer, Transcriber};
use voxgate_flite::Flite;

use breaker::{BreakerConfig, CircuitBreaker, GuardedSynthesizer, GuardedTranscriber};
use providers::elevenlabs::ElevenLabs;
use providers::openai::{OpenAiSpeech, OpenAiTranscriber};
use providers::pollinations::Pollinations;

pub use crate::config::is_valid_name;
use crate::config::{self, Config, EngineConfig, InstructionsPolicy};
use crate::observe::Metrics;

/// An engine built from its configuration: it speaks or it listens.
#[derive(Debug, Clone)]
pub enum Built {
    Synthesizer(Arc<dyn Synthesizer>),
    Transcriber(Arc<dyn Transcriber>),
}

impl EngineConfig {
    /// Builds the engine this configuration describes. Recognisers load their model lazily;
    /// remote providers are wrapped in their circuit breaker.
    pub fn build(
        &self,
        id: &str,
        work_dir: &std::path::Path,
        metrics: &Arc<Metrics>,
        landlock: &dyn Fn() -> subprocess::Landlock,
    ) -> Result<Built, String> {
        let breaker = |settings: &config::BreakerSettings| {
            CircuitBreaker::new(id, BreakerConfig::from(settings), Arc::clone(metrics))
        };
        Ok(match self {
            EngineConfig::Flite { threads, .. } => {
                Built::Synthesizer(Arc::new(Flite::new(config::threads_or_cpus(*threads))))
            }
            EngineConfig::Piper {
                model_dir,
                threads,
                parallel,
                idle_unload_secs,
                ..
            } => {
                let mut settings = voxgate_piper::PiperSettings::new(model_dir.clone());
                settings.intra_threads = config::threads_or_cpus(*threads);
                settings.parallel = (*parallel).max(1);
                settings.idle_unload =
                    (*idle_unload_secs > 0).then(|| Duration::from_secs(*idle_unload_secs));
                let phonemizer = subprocess::SandboxedEspeak::new(work_dir, landlock());
                Built::Synthesizer(Arc::new(voxgate_piper::Piper::new(
                    settings,
                    Arc::new(phonemizer),
                )))
            }
            EngineConfig::Subprocess(c) => Built::Synthesizer(Arc::new(
                subprocess::SubprocessEngine::new(id, c, work_dir, landlock())?,
            )),
            EngineConfig::OpenAi(c) => Built::Synthesizer(Arc::new(GuardedSynthesizer::new(
                OpenAiSpeech::new(id, c)?,
                breaker(&c.breaker),
            ))),
            EngineConfig::ElevenLabs(c) => Built::Synthesizer(Arc::new(GuardedSynthesizer::new(
                ElevenLabs::new(id, c)?,
                breaker(&c.breaker),
            ))),
            EngineConfig::Pollinations(c) => Built::Synthesizer(Arc::new(GuardedSynthesizer::new(
                Pollinations::new(id, c)?,
                breaker(&c.breaker),
            ))),
            EngineConfig::OpenAiStt(c) => Built::Transcriber(Arc::new(GuardedTranscriber::new(
                OpenAiTranscriber::new(id, c)?,
                breaker(&c.breaker),
            ))),
            #[cfg(feature = "whisper")]
            EngineConfig::Whisper {
                model_dir,
                threads,
                parallel,
                beam_size,
            } => Built::Transcriber(Arc::new(whisper::LazyWhisper::new(
                id,
                voxgate_whisper::WhisperSettings {
                    model_dir: model_dir.clone(),
                    threads: config::threads_or_cpus(*threads),
                    parallel: *parallel,
                    beam_size: *beam_size,
                },
            ))),
            #[cfg(not(feature = "whisper"))]
            EngineConfig::Whisper { .. } => {
                Built::Transcriber(Arc::new(whisper::Unavailable::new(
                    id,
                    "this binary was built without the `whisper` feature",
                )))
            }
        })
    }
}

/// What a model does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Text to speech (`POST /v1/audio/speech`).
    Speech,
    /// Speech to text (`POST /v1/audio/transcriptions`).
    Transcription,
}

/// A model clients may name.
#[derive(Debug, Clone)]
pub struct Model {
    pub id: String,
    /// The first engine of the chain (admission queue, tier checks).
    pub engine_id: String,
    /// Engines tried in order: `engine_id`, then the fallbacks.
    pub chain: Vec<String>,
    pub kind: ModelKind,
    pub instructions: InstructionsPolicy,
}

/// One voice as listed to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedVoice {
    /// The name clients send (an alias or a native id).
    pub id: String,
    pub name: String,
    pub language: String,
    /// The engine's native voice id.
    pub native: String,
    /// The engine's id.
    pub engine: String,
    /// Models that accept it.
    pub models: Vec<String>,
}

/// Everything a request is resolved against, built once at start-up.
#[derive(Debug)]
pub struct Catalog {
    engines: BTreeMap<String, Arc<dyn Synthesizer>>,
    transcribers: BTreeMap<String, Arc<dyn Transcriber>>,
    aliases: BTreeMap<String, BTreeMap<String, String>>,
    models: BTreeMap<String, Model>,
    /// Seconds since the epoch at start-up, reported as models' `created`.
    pub created: u64,
}

/// One engine of a model's chain that can speak the requested voice.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The configured engine id (`x-voxgate-engine`, admission queue, tier checks).
    pub engine_id: String,
    pub engine: Arc<dyn Synthesizer>,
    /// The engine's native voice id (empty when speaking with a stored reference).
    pub native_voice: String,
}

/// A configuration the engines refuse, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration key `{key}`: {problem}")]
pub struct CatalogError {
    key: String,
    problem: String,
}

impl Catalog {
    /// Builds every configured engine and checks every alias against its voices. Sandboxed
    /// engines keep their per-run directories under `work_dir` (this process's own).
    pub fn build(
        config: &Config,
        work_dir: &std::path::Path,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, CatalogError> {
        let mut engines = BTreeMap::new();
        let mut transcribers = BTreeMap::new();
        let mut aliases = BTreeMap::new();
        // Probed once, and only when a sandboxed engine is configured.
        let probed = std::sync::OnceLock::new();
        let landlock =
            || *probed.get_or_init(|| subprocess::Landlock::probe(config.sandbox.require_landlock));
        for (id, engine_config) in &config.engines {
            if let Some((base, http)) = engine_config.base_url() {
                providers::check_base_url(base, http).map_err(|problem| CatalogError {
                    key: format!("engines.{id}.base_url"),
                    problem,
                })?;
            }
            let built = engine_config
                .build(id, work_dir, metrics, &landlock)
                .map_err(|problem| CatalogError {
                    key: format!("engines.{id}"),
                    problem,
                })?;
            let engine = match built {
                Built::Synthesizer(engine) => engine,
                Built::Transcriber(engine) => {
                    transcribers.insert(id.clone(), engine);
                    continue;
                }
            };
            for (alias, native) in engine_config.voice_aliases() {
                if !engine.voices().iter().any(|v| &v.id == native) {
                    return Err(CatalogError {
                        key: format!("engines.{id}.voices.{alias}"),
                        problem: format!("engine has no voice `{native}`"),
                    });
                }
            }
            aliases.insert(id.clone(), engine_config.voice_aliases().clone());
            engines.insert(id.clone(), engine);
        }
        let models = config
            .models
            .iter()
            .map(|(id, m)| {
                let kind = if transcribers.contains_key(&m.engine) {
                    ModelKind::Transcription
                } else {
                    ModelKind::Speech
                };
                let model = Model {
                    id: id.clone(),
                    engine_id: m.engine.clone(),
                    chain: m.chain().cloned().collect(),
                    kind,
                    instructions: m.instructions,
                };
                (id.clone(), model)
            })
            .collect();
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(Self {
            engines,
            transcribers,
            aliases,
            models,
            created,
        })
    }

    pub fn models(&self) -> impl Iterator<Item = &Model> {
        self.models.values()
    }

    /// Looks a model up by its exact id.
    pub fn model(&self, id: &str) -> Option<&Model> {
        self.models.get(id)
    }

    /// Every engine, by id.
    pub fn engines(&self) -> impl Iterator<Item = (&str, &Arc<dyn Synthesizer>)> {
        self.engines.iter().map(|(id, e)| (id.as_str(), e))
    }

    /// The recogniser serving a transcription model.
    pub fn transcriber(&self, model: &Model) -> Option<Arc<dyn Transcriber>> {
        self.transcribers.get(&model.engine_id).cloned()
    }

    /// Whether every speech model has a ready engine in its chain (an optional engine that
    /// failed to load, with a fallback behind it, does not take the instance out of service).
    pub fn ready(&self) -> bool {
        self.models
            .values()
            .filter(|m| m.kind == ModelKind::Speech)
            .all(|m| {
                m.chain
                    .iter()
                    .any(|id| self.engines.get(id).is_some_and(|e| e.ready()))
            })
    }

    /// Resolves a voice name (alias or native) on every engine of the model's chain, by exact
    /// table lookup; engines that lack the voice are left out. Empty: no engine has it.
    pub fn resolve(&self, model: &Model, voice: &str) -> Vec<Candidate> {
        model
            .chain
            .iter()
            .filter_map(|engine_id| {
                let engine = self.engines.get(engine_id)?;
                let native = self
                    .aliases
                    .get(engine_id)
                    .and_then(|a| a.get(voice))
                    .map(String::as_str)
                    .or_else(|| {
                        engine
                            .voices()
                            .iter()
                            .find(|v| v.id == voice)
                            .map(|v| v.id.as_str())
                    })?;
                Some(Candidate {
                    engine_id: engine_id.clone(),
                    engine: Arc::clone(engine),
                    native_voice: native.to_owned(),
                })
            })
            .collect()
    }

    /// The engines of the model's chain that can speak with a stored voice reference.
    pub fn cloners(&self, model: &Model) -> Vec<Candidate> {
        model
            .chain
            .iter()
            .filter_map(|engine_id| {
                let engine = self.engines.get(engine_id)?;
                engine.supports_cloning().then(|| Candidate {
                    engine_id: engine_id.clone(),
                    engine: Arc::clone(engine),
                    native_voice: String::new(),
                })
            })
            .collect()
    }

    /// Every voice clients may name, with the models that accept it.
    pub fn voices(&self) -> Vec<ListedVoice> {
        let mut listed: Vec<ListedVoice> = Vec::new();
        for (engine_id, engine) in &self.engines {
            let models: Vec<String> = self
                .models
                .values()
                .filter(|m| m.chain.contains(engine_id))
                .map(|m| m.id.clone())
                .collect();
            let describe = |id: &str, native: &str| {
                engine
                    .voices()
                    .iter()
                    .find(|v| v.id == native)
                    .map(|v| ListedVoice {
                        id: id.to_owned(),
                        name: if id == native {
                            v.name.clone()
                        } else {
                            format!("{id} ({})", v.name)
                        },
                        language: v.language.clone(),
                        native: native.to_owned(),
                        engine: engine_id.clone(),
                        models: models.clone(),
                    })
            };
            let aliases = self.aliases.get(engine_id);
            for (alias, native) in aliases.into_iter().flatten() {
                listed.extend(describe(alias, native));
            }
            for voice in engine.voices() {
                listed.extend(describe(&voice.id, &voice.id));
            }
        }
        listed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(config: &Config) -> Result<Catalog, CatalogError> {
        let dir = tempfile::tempdir().expect("tempdir");
        Catalog::build(config, dir.path(), &Arc::new(Metrics::new()))
    }

    #[test]
    fn names_are_identifiers_not_paths() {
        for good in ["alloy", "tts-1", "en_US-joe-medium", "v1.2"] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in [
            "",
            "..",
            "../x",
            "/etc/passwd",
            "a/b",
            "a\\b",
            "a\0b",
            "．．／",
            ".hidden",
            "a b",
            "%2e%2e",
        ] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
        assert!(!is_valid_name(&"a".repeat(65)));
    }

    #[test]
    fn resolves_aliases_and_native_names_only() {
        let catalog = catalog(&Config::defaults().expect("config")).expect("catalog");
        let model = catalog.model("tts-1").expect("tts-1");
        assert_eq!(catalog.resolve(model, "alloy")[0].native_voice, "slt");
        assert_eq!(catalog.resolve(model, "kal16")[0].native_voice, "kal16");
        for bad in ["../../etc/passwd", "ALLOY", "alloy ", "slt\0"] {
            assert!(catalog.resolve(model, bad).is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn aliases_must_name_real_voices() {
        let config =
            Config::from_toml("[engines.flite.voices]\nalloy = \"nobody\"").expect("parses");
        let err = catalog(&config).unwrap_err();
        assert!(
            err.to_string().contains("engines.flite.voices.alloy"),
            "{err}"
        );
    }

    #[test]
    fn voices_list_every_alias_and_native_voice_with_models() {
        let catalog = catalog(&Config::defaults().expect("config")).expect("catalog");
        let voices = catalog.voices();
        let alloy = voices.iter().find(|v| v.id == "alloy").expect("alloy");
        assert_eq!(alloy.language, "en-US");
        assert!(alloy.models.contains(&"tts-1".to_owned()));
        assert!(
            voices
                .iter()
                .any(|v| v.id == "awb" && v.language == "en-GB")
        );
    }
}
