//! Browser sessions for the web console and the playground: signing in with a key (through
//! the same authentication, brute-force guard, rate limits and scope check as any request),
//! the session a later request presents, signing out. Every opening and closing is audited
//! with the key's id.

use std::net::IpAddr;

use super::Services;
use super::caller::Refusal;
use crate::data::audit::{Actor, AuditEvent};
use crate::error::{Code, Error};
use crate::identity::auth::web::{Lifetimes, Opened, Surface, WebSession};
use crate::identity::auth::{AuthError, Principal};
use crate::util::now;

impl Services {
    fn lifetimes(&self) -> Lifetimes {
        let c = &self.config.console;
        Lifetimes {
            absolute_secs: i64::try_from(c.session_secs).unwrap_or(i64::MAX),
            idle_secs: i64::try_from(c.idle_secs).unwrap_or(i64::MAX),
        }
    }

    /// Signs in to `surface` with the key in `authorization`: authenticated, rate limited
    /// and checked for the surface's scopes like any request on `route`, then a session is
    /// opened and audited. A browser key (one bound to web origins) is refused: it belongs
    /// to its own pages, which call the API themselves.
    pub async fn sign_in(
        &self,
        surface: Surface,
        authorization: Option<&str>,
        source: IpAddr,
        route: &str,
        origin: Option<&str>,
    ) -> Result<(Principal, Opened), Refusal> {
        let principal = self.authenticate(authorization, source, route).await?;
        let (first, rest) = surface
            .scopes()
            .split_first()
            .expect("a surface needs a scope");
        self.authorize(&principal, route, *first, origin).await?;
        let refusal = if let Some(missing) = rest.iter().find(|s| !principal.has(**s)) {
            Some(Error::refused(
                Code::InsufficientScope,
                format!(
                    "Signing in here needs a key with the `{}` scope.",
                    missing.as_str()
                ),
            ))
        } else if principal.origins.is_some() {
            Some(Error::refused(
                Code::OriginNotAllowed,
                "A browser key works only from its own web origins; sign in with another key.",
            ))
        } else {
            None
        };
        if let Some(err) = refusal {
            self.audit_denial(&principal, route, &err).await;
            return Err(err.into());
        }
        let opened = self
            .auth
            .open_web_session(&principal, surface, now(), self.lifetimes())
            .await
            .map_err(Error::internal)?;
        self.audit
            .record(
                Actor::Key(principal.keyid.clone()),
                Some(principal.source),
                AuditEvent::SessionOpened {
                    keyid: principal.keyid.clone(),
                    account_id: principal.account_id.clone(),
                    surface: surface.as_str(),
                    expires_at: opened.expires_at,
                },
            )
            .await;
        Ok((principal, opened))
    }

    /// The caller behind the session id a request to `route` presented (`None`: no
    /// cookie). Refused like a key: 401 with a reason, counted and throttled per source.
    /// `active`: a use that keeps the session from idling out.
    pub async fn web_caller(
        &self,
        surface: Surface,
        id: Option<&str>,
        source: IpAddr,
        route: &str,
        active: bool,
    ) -> Result<WebSession, Error> {
        let Some(id) = id else {
            if let Some(limited) = self.throttle_anonymous(source, route).await {
                return Err(limited);
            }
            return Err(Error::from_code(Code::MissingSession));
        };
        match self
            .auth
            .web_session(id, surface, source, now(), self.lifetimes(), active)
            .await
        {
            Ok(session) => Ok(session),
            Err(failure) => {
                let session_code = match failure.error {
                    AuthError::Invalid if failure.keyid.is_none() => Some(Code::InvalidSession),
                    AuthError::Expired if failure.reason == "session_ended" => {
                        Some(Code::InvalidSession)
                    }
                    _ => None,
                };
                Err(self
                    .refused_caller_as(source, route, failure, session_code)
                    .await)
            }
        }
    }

    /// A change from a session without its CSRF token or from another origin: refused and
    /// audited as an access denial of the session's key.
    pub async fn refuse_csrf(&self, principal: &Principal, route: &str) -> Error {
        let err = Error::from_code(Code::CsrfRefused);
        self.audit_denial(principal, route, &err).await;
        err
    }

    /// Ends the session `id` of `principal` (sign-out), audited.
    pub async fn sign_out(
        &self,
        surface: Surface,
        id: &str,
        principal: &Principal,
    ) -> Result<(), Error> {
        if self
            .auth
            .close_web_session(id)
            .await
            .map_err(Error::internal)?
        {
            self.audit
                .record(
                    Actor::Key(principal.keyid.clone()),
                    Some(principal.source),
                    AuditEvent::SessionClosed {
                        keyid: principal.keyid.clone(),
                        account_id: principal.account_id.clone(),
                        surface: surface.as_str(),
                    },
                )
                .await;
        }
        Ok(())
    }
}
