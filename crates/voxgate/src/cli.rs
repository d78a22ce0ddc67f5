//! The command line: `serve`, `say`, `voices`, `config`, `bench`. Each command calls the same
//! library functions the HTTP API uses.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::audio::AudioFormat;
use crate::config::{self, Config, LogFormat, Overrides};
use crate::server::{self, Application};
use crate::speech::{self, SpeechJob};

#[derive(Debug, Parser)]
#[command(
    name = "voxgate",
    version,
    about = "An OpenAI-compatible speech gateway"
)]
pub struct Cli {
    /// A TOML configuration file layered over the embedded defaults.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long)]
        bind: Option<SocketAddr>,
        /// Directory for voxgate's state.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Log format: json or pretty.
        #[arg(long, value_parser = parse_log_format)]
        log_format: Option<LogFormat>,
    },
    /// Speak text into an audio file.
    Say {
        /// The text, or `-` to read standard input.
        text: String,
        /// Output file.
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long, default_value = "tts-1")]
        model: String,
        #[arg(long, default_value = "alloy")]
        voice: String,
        /// mp3, opus, flac, wav or pcm (default: from the file extension, else mp3).
        #[arg(long)]
        format: Option<String>,
        #[arg(long, default_value_t = 1.0)]
        speed: f32,
    },
    /// List the voices clients may name.
    Voices,
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Measure engines, encoders and memory; prints figures.
    Bench {
        /// Fewer repetitions (for CI smoke runs).
        #[arg(long)]
        quick: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Load and validate the effective configuration, building every engine.
    Check,
    /// Print the embedded, commented defaults.
    PrintDefault,
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "json" => Ok(LogFormat::Json),
        "pretty" => Ok(LogFormat::Pretty),
        _ => Err("expected json or pretty".into()),
    }
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut overrides = Overrides {
        config_file: cli.config.clone(),
        ..Overrides::default()
    };
    match cli.command {
        Command::Serve {
            bind,
            data_dir,
            log_format,
        } => {
            overrides.bind = bind;
            overrides.data_dir = data_dir;
            overrides.log_format = log_format;
            let config = Config::load(&overrides)?;
            crate::telemetry::init(&config.log);
            let app = Application::build(config).await?;
            app.run_until_stopped(server::shutdown_signal()).await
        }
        Command::Say {
            text,
            output,
            model,
            voice,
            format,
            speed,
        } => {
            let config = Config::load(&overrides)?;
            say(
                config,
                text,
                output,
                &model,
                &voice,
                format.as_deref(),
                speed,
            )
            .await
        }
        Command::Voices => {
            let config = Config::load(&overrides)?;
            let state = server::app_state(config)?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<10} {:<7} {:<8} {:<40} MODELS",
                "VOICE", "LANG", "ENGINE", "NAME"
            )?;
            for v in state.catalog.voices() {
                writeln!(
                    out,
                    "{:<10} {:<7} {:<8} {:<40} {}",
                    v.id,
                    v.language,
                    v.engine,
                    v.name,
                    v.models.join(",")
                )?;
            }
            Ok(())
        }
        Command::Config {
            action: ConfigAction::Check,
        } => {
            let config = Config::load(&overrides)?;
            server::app_state(config.clone())?;
            writeln!(
                std::io::stdout(),
                "configuration ok: listening on {} with {} model(s)",
                config.server.bind,
                config.models.len()
            )?;
            Ok(())
        }
        Command::Config {
            action: ConfigAction::PrintDefault,
        } => {
            std::io::stdout().write_all(config::DEFAULT_TOML.as_bytes())?;
            Ok(())
        }
        Command::Bench { quick } => {
            let config = Config::load(&overrides)?;
            crate::bench::run(config, quick).await
        }
    }
}

async fn say(
    config: Config,
    text: String,
    output: PathBuf,
    model: &str,
    voice: &str,
    format: Option<&str>,
    speed: f32,
) -> anyhow::Result<()> {
    let text = if text == "-" {
        let mut buf = String::new();
        std::io::stdin().read_to_string(&mut buf)?;
        buf
    } else {
        text
    };
    let format_name = format
        .map(str::to_owned)
        .or_else(|| {
            output
                .extension()
                .map(|e| e.to_string_lossy().to_lowercase())
        })
        .unwrap_or_else(|| "mp3".into());
    let format: AudioFormat =
        serde_json::from_value(serde_json::Value::String(format_name.clone()))
            .with_context(|| format!("unknown format {format_name}"))?;
    if !format.is_available() {
        bail!(
            "format {format_name} is not available; use one of {}",
            AudioFormat::available_list()
        );
    }
    if !(0.25..=4.0).contains(&speed) {
        bail!("--speed must be between 0.25 and 4.0");
    }
    let state = server::app_state(config)?;
    let model = state
        .catalog
        .model(model)
        .with_context(|| format!("no model {model}"))?;
    let resolved = state
        .catalog
        .resolve(model, voice)
        .with_context(|| format!("model {} has no voice {voice}", model.id))?;
    let pieces = voxgate_engine::sentences::split(&text).len() as u64;
    if pieces == 0 {
        bail!("nothing to say");
    }
    let job = SpeechJob {
        engine: resolved.engine,
        voice: resolved.native_voice,
        text,
        speed,
        format,
        deadline: tokio::time::Instant::now() + Duration::from_secs(24 * 3600),
    };
    let progress = ProgressBar::new(pieces);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} sentences {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let speech = speech::start(job, state.encoders.clone()).await?;
    let mut file = std::fs::File::create(&output)
        .with_context(|| format!("cannot create {}", output.display()))?;
    let mut audio = speech.audio;
    while let Some(chunk) = audio.next().await {
        file.write_all(&chunk?)?;
        progress.inc(1);
    }
    progress.finish_and_clear();
    let secs = speech.stats.output_seconds();
    writeln!(
        std::io::stderr(),
        "wrote {} ({secs:.1} s of audio)",
        output.display()
    )?;
    Ok(())
}
