//! The local Unix socket: created with its mode and group before anyone can reach it, a stale
//! socket from a crash removed (never a live one, never anything that is not a socket), and
//! every connection's peer credentials (`SO_PEERCRED`) checked against the allow-lists.
//! Refused peers are closed at once and logged as security events. What a peer may then do is
//! decided as on TCP: keys, scopes, limits and audit all apply.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use tokio::net::{UnixListener, UnixStream};

use crate::config::UnixSocketConfig;

/// Who is on the other end of a Unix connection, as the kernel says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// Which peers may connect.
#[derive(Debug)]
pub struct PeerPolicy {
    uids: Vec<u32>,
    gids: Vec<u32>,
}

impl PeerPolicy {
    /// Empty lists admit only the server's own uid.
    pub fn new(config: &UnixSocketConfig) -> Self {
        let mut uids = config.allowed_uids.clone();
        if uids.is_empty() && config.allowed_gids.is_empty() {
            uids.push(current_uid());
        }
        Self {
            uids,
            gids: config.allowed_gids.clone(),
        }
    }

    pub fn allows(&self, cred: &PeerCred) -> bool {
        self.uids.contains(&cred.uid) || self.gids.contains(&cred.gid)
    }

    /// The peer's credentials if it may connect; otherwise logs a security event (and the
    /// caller drops the stream, closing it).
    pub fn admit(&self, stream: &UnixStream) -> Option<PeerCred> {
        let cred = match stream.peer_cred() {
            Ok(c) => PeerCred {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            },
            Err(e) => {
                tracing::warn!(target: "voxgate::security", event = "socket_peer_unknown", error = %e, "could not read a unix peer's credentials; closed");
                return None;
            }
        };
        if self.allows(&cred) {
            Some(cred)
        } else {
            tracing::warn!(target: "voxgate::security", event = "socket_peer_refused", uid = cred.uid, gid = cred.gid, pid = cred.pid, "a unix socket peer is not allowed; closed");
            None
        }
    }
}

fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Binds the socket: removes a stale one, creates the new one inside a private directory,
/// sets its mode and group there, and only then moves it into place, so it is never
/// reachable with looser permissions.
pub fn bind(config: &UnixSocketConfig) -> anyhow::Result<(UnixListener, Arc<PeerPolicy>)> {
    let path = &config.path;
    let mode = u32::from_str_radix(config.mode.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .with_context(|| {
            format!(
                "server.unix_socket.mode {:?} is not an octal mode",
                config.mode
            )
        })?;
    let gid = if config.group.is_empty() {
        None
    } else {
        Some(resolve_group(&config.group)?)
    };
    remove_stale(path)?;
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = tempfile::Builder::new()
        .prefix(".voxgate-sock-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a private directory in {}", parent.display()))?;
    let staged = staging.path().join("sock");
    let listener = std::os::unix::net::UnixListener::bind(&staged)
        .with_context(|| format!("cannot bind {}", staged.display()))?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(&staged, None, Some(gid))
            .with_context(|| format!("cannot give the socket to group {gid}"))?;
    }
    std::fs::rename(&staged, path)
        .with_context(|| format!("cannot move the socket to {}", path.display()))?;
    listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(listener)?;
    Ok((listener, Arc::new(PeerPolicy::new(config))))
}

/// A socket at `path` that nobody answers is stale and removed; a live one, or anything that
/// is not a socket, is an error (never deleted).
fn remove_stale(path: &Path) -> anyhow::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "server.unix_socket.path {} exists and is not a socket; not touching it",
            path.display()
        );
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => bail!(
            "server.unix_socket.path {} is in use by a running server",
            path.display()
        ),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing a stale unix socket");
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove the stale socket {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("cannot probe {}", path.display())),
    }
}

/// A group name (from /etc/group) or a numeric gid.
fn resolve_group(group: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group").context("cannot read /etc/group")?;
    groups
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let gid = fields.nth(1)?.parse().ok()?;
            (name == group).then_some(gid)
        })
        .next()
        .with_context(|| format!("server.unix_socket.group: no group {group:?}"))
}

/// Removes the socket file at shutdown, if it is still ours.
#[derive(Debug)]
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.0).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(path: &Path) -> UnixSocketConfig {
        UnixSocketConfig {
            path: path.to_owned(),
            mode: "0660".into(),
            group: String::new(),
            allowed_uids: Vec::new(),
            allowed_gids: Vec::new(),
        }
    }

    #[tokio::test]
    async fn stale_sockets_go_live_ones_and_other_files_stay() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("voxgate.sock");
        // A stale socket: bound, then its listener dropped.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        let (live, _) = bind(&config(&path)).expect("stale removed");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let err = bind(&config(&path)).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        drop(live);
        let file = dir.path().join("file");
        std::fs::write(&file, "keep me").expect("write");
        let err = bind(&config(&file)).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "keep me");
        assert!(
            std::fs::read_dir(dir.path()).expect("dir").all(|e| !e
                .expect("e")
                .file_name()
                .to_string_lossy()
                .starts_with(".voxgate-sock-")),
            "staging directories are cleaned up"
        );
    }

    #[test]
    fn the_default_policy_admits_only_our_own_uid() {
        let dir = tempfile::tempdir().expect("dir");
        let policy = PeerPolicy::new(&config(&dir.path().join("s")));
        let me = current_uid();
        assert!(policy.allows(&PeerCred {
            uid: me,
            gid: 12345,
            pid: None
        }));
        assert!(!policy.allows(&PeerCred {
            uid: me + 1,
            gid: 12345,
            pid: None
        }));
        let by_group = PeerPolicy::new(&UnixSocketConfig {
            allowed_gids: vec![4242],
            ..config(&dir.path().join("s"))
        });
        assert!(by_group.allows(&PeerCred {
            uid: 99,
            gid: 4242,
            pid: None
        }));
        assert!(
            !by_group.allows(&PeerCred {
                uid: me,
                gid: 1,
                pid: None
            }),
            "a gid list alone does not add our uid"
        );
    }
}
