//! Logging: JSON (production) or pretty (terminal) `tracing` output on stderr, and the
//! security-event stream in its own file. Request text is never logged anywhere.

use std::path::Path;

use tracing_subscriber::EnvFilter;

use super::json_lines;
use crate::config::{LogConfig, LogFormat};

/// The target of the security-event stream.
pub const SECURITY: &str = "voxgate::security";

/// Installs the global subscriber: the main stream on stderr (JSON or pretty, filtered by
/// `log.level`) and the security-event stream appended to its own file whatever the level.
/// A second call is a no-op.
pub fn init(config: &LogConfig, data_dir: &Path) -> anyhow::Result<()> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = EnvFilter::try_new(filter_directives(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let main = match config.format {
        LogFormat::Json => json_lines::layer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let security = security_file(config, data_dir)?.map(|file| {
        // The main stream's JSON format. This layer's filter hides every span (none has the
        // security target), so its lines carry no `span`: a request's id is in the main
        // stream's line about the same request.
        json_lines::layer(std::sync::Mutex::new(file)).with_filter(
            tracing_subscriber::filter::Targets::new().with_target(SECURITY, tracing::Level::TRACE),
        )
    });
    let _ = tracing_subscriber::registry()
        .with(main)
        .with(security)
        .try_init();
    Ok(())
}

/// Crates whose debug and trace lines name the URLs voxgate calls (a provider's path or query
/// may carry the request's text): capped at `info` unless `log.level` names them itself.
const URL_LOGGING_CRATES: [&str; 5] = ["reqwest", "hyper", "hyper_util", "h2", "rustls"];

/// `log.level` plus the caps on crates that would log URLs.
fn filter_directives(level: &str) -> String {
    let mut directives = level.to_owned();
    for krate in URL_LOGGING_CRATES {
        if !level
            .split(',')
            .any(|d| d.trim().split('=').next() == Some(krate))
        {
            directives.push_str(&format!(",{krate}=info"));
        }
    }
    directives
}

/// The security-event file, opened for appending with mode 0600 (its directory 0700).
fn security_file(config: &LogConfig, data_dir: &Path) -> anyhow::Result<Option<std::fs::File>> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    if config.security_file.as_os_str() == "-" {
        return Ok(None);
    }
    let path = if config.security_file.as_os_str().is_empty() {
        data_dir.join("security.log")
    } else {
        config.security_file.clone()
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("log.security_file {}: {e}", path.display()))?;
    Ok(Some(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_logging_crates_are_capped_unless_named() {
        assert_eq!(
            filter_directives("trace"),
            "trace,reqwest=info,hyper=info,hyper_util=info,h2=info,rustls=info"
        );
        let named = filter_directives("debug,reqwest=trace");
        assert!(named.contains("reqwest=trace") && !named.contains("reqwest=info"));
        assert!(EnvFilter::try_new(filter_directives("info")).is_ok());
    }
}
