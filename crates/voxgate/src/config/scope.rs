//! Scopes: the closed set of things a key may be allowed to do.

use serde::{Deserialize, Serialize};

/// One permission. Tiers grant sets of these; keys may narrow them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// List models and voices.
    #[serde(rename = "models.read")]
    ModelsRead,
    /// Synthesize speech.
    #[serde(rename = "speech")]
    Speech,
    /// Transcribe audio.
    #[serde(rename = "transcription")]
    Transcription,
    /// Manage one's own stored voices.
    #[serde(rename = "voices.manage")]
    VoicesManage,
    /// Read one's own account: the export of everything kept about it (contact, keys and
    /// their last addresses, stored voices, audit history). Not implied by `models.read`.
    #[serde(rename = "account.read")]
    AccountRead,
    /// Delete one's own data.
    #[serde(rename = "delete")]
    Delete,
    /// Manage keys and accounts (the admin API).
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::ModelsRead,
        Scope::Speech,
        Scope::Transcription,
        Scope::VoicesManage,
        Scope::AccountRead,
        Scope::Delete,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ModelsRead => "models.read",
            Scope::Speech => "speech",
            Scope::Transcription => "transcription",
            Scope::VoicesManage => "voices.manage",
            Scope::AccountRead => "account.read",
            Scope::Delete => "delete",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Parses a space- or comma-separated scope list; `None` if any entry is unknown.
pub fn parse_list(text: &str) -> Option<Vec<Scope>> {
    text.split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(Scope::parse)
        .collect()
}

/// The stored form of a scope list.
pub fn join(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_names_round_trip() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
            let json = serde_json::to_string(&scope).expect("json");
            assert_eq!(json, format!("\"{}\"", scope.as_str()));
        }
        assert_eq!(
            parse_list("speech, models.read"),
            Some(vec![Scope::Speech, Scope::ModelsRead])
        );
        assert_eq!(parse_list("speech root"), None);
    }
}
