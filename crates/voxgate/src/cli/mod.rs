//! The command line: `serve`, `say`, `voices`, `config`, `migrate`, `audit`, `accounts`,
//! `keys`, `bench`. Each command calls the same library functions the HTTP API uses. Any
//! command may run beside a live server on the same data directory: temporary files are
//! per process, nothing shared is swept.

pub(crate) mod bench;

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use secrecy::ExposeSecret as _;

use crate::audio::AudioFormat;
use crate::config::{self, Config, LogFormat, Overrides};
use crate::data::audit::Actor;
use crate::data::spool::WorkDir;
use crate::data::store::KeyRecord;
use crate::engines::Catalog;
use crate::http::server::{self, Application};
use crate::identity::accounts::{Accounts, KeyRequest, parse_expiry};
use crate::identity::auth::parse_scopes;
use crate::observe::Metrics;
use crate::service::speech::{Part, Runtime, SpeechJob};
use crate::service::{self as services};

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
    /// Apply database migrations (they also run at start-up).
    Migrate,
    /// Manage accounts.
    Accounts {
        #[command(subcommand)]
        action: AccountAction,
    },
    /// Manage API keys. The full key is printed once, at creation.
    Keys {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Measure engines, encoders and memory; prints figures.
    Bench {
        /// Fewer repetitions (for CI smoke runs).
        #[arg(long)]
        quick: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Recompute the Merkle tree, check every checkpoint (database and witness copies) and
    /// name the first bad position; then check that the checkpoints are fresh (the newest
    /// lags the log by at most `checkpoint_every` plus a grace, and no uncovered entry is
    /// older than the interval plus a grace). Exit status 1 when the log was tampered with or
    /// its checkpoints are missing or stale.
    Verify {
        /// The witness directory (default: audit.witness_dir). Give the copy kept off this
        /// machine.
        #[arg(long)]
        witness: Option<PathBuf>,
        /// Only checkpoints in the witness directory vouch for the log (use with the
        /// off-host copy: database access alone can then not rewrite the log unnoticed).
        #[arg(long, requires = "witness")]
        require_witness: bool,
        /// The verifier key (`<origin>+<keyid>+<key>`); default: `<witness>/vkey`. Give the
        /// copy kept off this machine.
        #[arg(long)]
        vkey: Option<String>,
    },
    /// Sign a checkpoint of the log now (the server also does it on its own).
    Checkpoint,
    /// Print this deployment's verifier key.
    Vkey,
}

#[derive(Debug, Subcommand)]
pub enum AccountAction {
    /// Create an account.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        contact: Option<String>,
        #[arg(long, default_value = "basic")]
        tier: String,
    },
    List,
    Show {
        id: String,
    },
    /// Deactivate an account: all its keys stop at once.
    Deactivate {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Create a key and print it (once).
    Create {
        #[arg(long)]
        account: String,
        #[arg(long, default_value = "")]
        name: String,
        /// A tier of lower or equal rank than the account's.
        #[arg(long)]
        tier: Option<String>,
        /// Scopes narrower than the tier's, comma-separated.
        #[arg(long)]
        scopes: Option<String>,
        /// Lifetime: 90d, 12h, 30m, 3600s.
        #[arg(long)]
        expires: Option<String>,
        /// A browser key: the web origins it works from, comma-separated
        /// (https://app.example); list them in server.cors.allowed_origins too.
        #[arg(long)]
        origins: Option<String>,
    },
    List {
        #[arg(long)]
        account: Option<String>,
    },
    Revoke {
        keyid: String,
    },
    /// Issue a replacement; the old key works until the grace deadline.
    Rotate {
        keyid: String,
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
            crate::observe::telemetry::init(&config.log, &config.data_dir)?;
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
            let (catalog, _runtime, _work) = speech_parts(&config)?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<10} {:<7} {:<8} {:<40} MODELS",
                "VOICE", "LANG", "ENGINE", "NAME"
            )?;
            for v in catalog.voices() {
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
            speech_parts(&config)?;
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
        Command::Migrate => {
            let config = Config::load(&overrides)?;
            services::prepare_data_dir(&config.data_dir)?;
            services::open_store(&config).await?;
            writeln!(std::io::stdout(), "database migrated")?;
            Ok(())
        }
        Command::Audit { action } => {
            let config = Config::load(&overrides)?;
            audit(&config, action).await
        }
        Command::Accounts { action } => {
            let config = Config::load(&overrides)?;
            accounts(&admin(&config).await?, action).await
        }
        Command::Keys { action } => {
            let config = Config::load(&overrides)?;
            keys(&admin(&config).await?, action).await
        }
        Command::Bench { quick } => {
            let config = Config::load(&overrides)?;
            bench::run(config, quick).await
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
    let (catalog, runtime, _work) = speech_parts(&config)?;
    let model = catalog
        .model(model)
        .with_context(|| format!("no model {model}"))?;
    let candidates = catalog.resolve(model, voice);
    if candidates.is_empty() {
        bail!("model {} has no voice {voice}", model.id);
    }
    let pieces = voxgate_engine::sentences::split(&text).len() as u64;
    if pieces == 0 {
        bail!("nothing to say");
    }
    let job = SpeechJob {
        model: model.id.clone(),
        voice: voice.to_owned(),
        candidates,
        reference: None,
        characters: text.chars().count(),
        script: vec![Part::Say { text, speed }],
        speed,
        format,
        deadline: tokio::time::Instant::now() + Duration::from_secs(24 * 3600),
    };
    let progress = ProgressBar::new(pieces);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} sentences {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let speech = crate::service::speech::start_job(job, &runtime).await?;
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

async fn audit(config: &Config, action: AuditAction) -> anyhow::Result<()> {
    use crate::data::audit::tlog;
    services::prepare_data_dir(&config.data_dir)?;
    let (store, _) = services::open_store(config).await?;
    let mut out = std::io::stdout().lock();
    match action {
        AuditAction::Verify {
            witness,
            require_witness,
            vkey,
        } => {
            let witness =
                witness.unwrap_or_else(|| tlog::witness_dir(&config.audit, &config.data_dir));
            let verifier = tlog::load_verifier(vkey.as_deref(), &witness)?;
            let freshness = tlog::Freshness::of(&config.audit, require_witness);
            let report =
                tlog::verify(store.as_ref(), &verifier, Some(&witness), &freshness).await?;
            if let Some((index, why)) = report.first_bad {
                writeln!(out, "audit log TAMPERED: first bad index {index}: {why}")?;
                std::process::exit(1);
            }
            if let Some(why) = report.stale {
                writeln!(
                    out,
                    "audit log NOT VOUCHED FOR: {why} ({} entries, {} checkpoint signatures verified)",
                    report.entries, report.checkpoints
                )?;
                std::process::exit(1);
            }
            writeln!(
                out,
                "audit log ok: {} entries, {} checkpoint signatures verified, {} entries covered",
                report.entries, report.checkpoints, report.covered
            )?;
            Ok(())
        }
        AuditAction::Checkpoint => {
            let log = tlog::Tlog::open(&config.audit, &config.data_dir, store)?;
            match log.checkpoint().await? {
                Some(size) => writeln!(out, "checkpoint signed at size {size}")?,
                None => writeln!(out, "nothing new to checkpoint")?,
            }
            Ok(())
        }
        AuditAction::Vkey => {
            writeln!(
                out,
                "{}",
                tlog::verifier_key(&config.audit, &config.data_dir)?
            )?;
            Ok(())
        }
    }
}

async fn admin(config: &Config) -> anyhow::Result<Accounts> {
    services::prepare_data_dir(&config.data_dir)?;
    let (store, pepper) = services::open_store(config).await?;
    Ok(Accounts::new(
        std::sync::Arc::clone(&store),
        crate::data::audit::Audit::new(store),
        pepper,
        config.tiers.clone(),
        config.auth.rotation_grace_secs,
    ))
}

fn print_key(out: &mut impl std::io::Write, k: &KeyRecord) -> std::io::Result<()> {
    let state = if k.revoked_at.is_some() {
        "revoked"
    } else if k.replaced_by.is_some() {
        "rotated"
    } else {
        "active"
    };
    writeln!(
        out,
        "{}  account={}  state={state}  tier={}  scopes={}  expires={}  requests={}  last_used={}",
        k.keyid,
        k.account_id,
        k.tier.as_deref().unwrap_or("(account)"),
        k.scopes.as_deref().unwrap_or("(tier)"),
        k.expires_at.map_or("never".into(), |e| e.to_string()),
        k.request_count,
        k.last_used_at.map_or("never".into(), |t| t.to_string()),
    )
}

async fn accounts(admin: &Accounts, action: AccountAction) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match action {
        AccountAction::Create {
            name,
            contact,
            tier,
        } => {
            let a = admin
                .create_account(Actor::Cli, &name, contact.as_deref(), &tier)
                .await?;
            writeln!(out, "{}", a.id)?;
        }
        AccountAction::List => {
            for a in admin.list(Actor::Cli).await? {
                writeln!(
                    out,
                    "{}  tier={}  active={}  name={:?}",
                    a.id, a.tier, a.active, a.name
                )?;
            }
        }
        AccountAction::Show { id } => {
            let (a, keys) = admin.show(Actor::Cli, &id).await?;
            writeln!(
                out,
                "{}  tier={}  active={}  name={:?}  contact={:?}",
                a.id, a.tier, a.active, a.name, a.contact
            )?;
            for k in &keys {
                print_key(&mut out, k)?;
            }
        }
        AccountAction::Deactivate { id } => {
            admin.deactivate_account(Actor::Cli, &id).await?;
            writeln!(out, "deactivated {id}")?;
        }
    }
    Ok(())
}

async fn keys(admin: &Accounts, action: KeyAction) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match action {
        KeyAction::Create {
            account,
            name,
            tier,
            scopes,
            expires,
            origins,
        } => {
            let origins = origins.map(|o| {
                o.split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            });
            let scopes = match scopes.as_deref() {
                Some(text) => Some(parse_scopes(text).context("unknown scope (models.read, speech, transcription, voices.manage, account.read, delete, admin)")?),
                None => None,
            };
            let expires_at = match expires.as_deref() {
                Some(text) => Some(
                    parse_expiry(text)
                        .context("--expires takes a duration like 90d, 12h, 30m or 3600s")?,
                ),
                None => None,
            };
            let created = admin
                .create_key(
                    Actor::Cli,
                    &account,
                    KeyRequest {
                        name,
                        tier,
                        scopes,
                        expires_at,
                        origins,
                    },
                    None,
                )
                .await?;
            writeln!(out, "{}", created.secret.expose_secret())?;
            writeln!(
                std::io::stderr(),
                "key {} created; the full key above is shown only once",
                created.record.keyid
            )?;
        }
        KeyAction::List { account } => {
            for k in admin.keys(Actor::Cli, account.as_deref()).await? {
                print_key(&mut out, &k)?;
            }
        }
        KeyAction::Revoke { keyid } => {
            admin.revoke_key(Actor::Cli, &keyid).await?;
            writeln!(out, "revoked {keyid}")?;
        }
        KeyAction::Rotate { keyid } => {
            let created = admin.rotate_key(Actor::Cli, &keyid, None).await?;
            writeln!(out, "{}", created.secret.expose_secret())?;
            writeln!(
                std::io::stderr(),
                "key {keyid} replaced by {}; the old key works until its grace deadline",
                created.record.keyid
            )?;
        }
    }
    Ok(())
}

/// What speaking needs without a server: the engine catalog, a runtime (encoder pool,
/// engine queues, metrics of its own) and this process's work directory (sandbox runs).
pub fn speech_parts(config: &Config) -> anyhow::Result<(Catalog, Runtime, WorkDir)> {
    services::prepare_data_dir(&config.data_dir)?;
    let work = WorkDir::create(&config.data_dir)?;
    let metrics = std::sync::Arc::new(Metrics::new());
    let catalog = Catalog::build(config, work.path(), &metrics)?;
    let runtime = Runtime {
        encoders: services::encoder_pool(config),
        concurrency: std::sync::Arc::new(services::concurrency(config)),
        metrics,
        failing: std::sync::Arc::default(),
        clones: None,
    };
    Ok((catalog, runtime, work))
}
