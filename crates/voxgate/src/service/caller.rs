//! Who is calling, for every front door: authentication, the rate limits, the scope and a
//! browser key's origin, in an order that keeps floods out of the audit log. A refusal that
//! carries no valid key is throttled by the per-address limits first and only then written
//! down (and then per source and minute, see `identity::auth`); an authenticated caller
//! passes its rate limits before a scope or origin denial is audited.

use std::net::IpAddr;

use super::Services;
use crate::config::Scope;
use crate::data::audit::{Actor, AuditEvent};
use crate::error::{Code, Error};
use crate::identity::auth::ephemeral::Ephemeral;
use crate::identity::auth::{AuthError, AuthFailure, Principal, key};
use crate::limits::{Decision, Verdict};

/// A refusal, with the tightest rate-limit decision when the limits answered it (for the
/// `x-ratelimit-*` headers).
#[derive(Debug)]
pub struct Refusal {
    pub error: Error,
    pub tightest: Option<Decision>,
}

impl From<Error> for Refusal {
    fn from(error: Error) -> Self {
        Self {
            error,
            tightest: None,
        }
    }
}

impl Services {
    /// Verifies a bearer token for a request from `source` to `route`.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        source: IpAddr,
        route: &str,
    ) -> Result<Principal, Error> {
        match self.auth.authenticate(authorization, source).await {
            Ok(principal) => Ok(principal),
            Err(failure) => Err(self.refused_caller(source, route, failure).await),
        }
    }

    /// Verifies the caller of a realtime session: a key or a client secret (`ek_…`) in
    /// `authorization`, or a client secret `offered` in `Sec-WebSocket-Protocol` (a browser
    /// cannot set headers on a WebSocket). A long-lived key is refused there: a page must
    /// never hold one. With a client secret, the session configuration it was minted with
    /// comes back too.
    pub async fn authenticate_session(
        &self,
        authorization: Option<&str>,
        offered: Option<&str>,
        source: IpAddr,
        route: &str,
    ) -> Result<(Principal, Option<Ephemeral>), Error> {
        let bearer = authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::trim);
        let secret = match (bearer, offered) {
            (Some(token), _) if token.starts_with(key::EPHEMERAL_PREFIX) => token,
            (Some(_), _) | (None, None) => {
                return Ok((self.authenticate(authorization, source, route).await?, None));
            }
            (None, Some(token)) if token.starts_with(key::EPHEMERAL_PREFIX) => token,
            (None, Some(_)) => {
                return Err(self
                    .refuse_credentials(source, route, Code::CredentialsInProtocol)
                    .await);
            }
        };
        match self
            .auth
            .client_secret(secret, source, crate::util::now())
            .await
        {
            Ok(ephemeral) => Ok((ephemeral.principal.clone(), Some(ephemeral))),
            Err(failure) => Err(self.refused_caller(source, route, failure).await),
        }
    }

    /// The caller a listener is bound to by configuration (a Wyoming listener: the
    /// protocol carries no credentials). Refused like any key: revoked, expired, or its
    /// account deactivated (seen within the authentication cache's lifetime).
    ///
    /// `request`: whether this is a request (counted as a use of the key) or a check that
    /// the key still works.
    pub async fn bound_caller(
        &self,
        keyid: &str,
        source: IpAddr,
        route: &str,
        request: bool,
    ) -> Result<Principal, Error> {
        match self.auth.bound(keyid, source, request).await {
            Ok(principal) => Ok(principal),
            Err(failure) => Err(self.refused_caller(source, route, failure).await),
        }
    }

    /// Credentials where they must not be (a query string, a cookie, a body): throttled,
    /// counted and written down like a failed authentication.
    pub async fn refuse_credentials(&self, source: IpAddr, route: &str, code: Code) -> Error {
        let reason = code.as_str().unwrap_or("misplaced_credentials");
        let failure = self.auth.refuse(source, reason);
        match failure.error {
            AuthError::Blocked { .. } => self.refused_caller(source, route, failure).await,
            _ => {
                if let Some(limited) = self.throttle_anonymous(source, route).await {
                    return limited;
                }
                self.auth.record_failure(source, &failure).await;
                Error::from_code(code)
            }
        }
    }

    /// An authenticated caller sent what looks like a key in a request body (its own or
    /// another's, about to leak into wherever the body goes): refused and audited.
    pub async fn refuse_credentials_in_body(&self, principal: &Principal, route: &str) -> Error {
        let code = Code::CredentialsInBody;
        self.audit
            .record(
                Actor::Key(principal.keyid.clone()),
                Some(principal.source),
                AuditEvent::AccessDenied {
                    keyid: principal.keyid.clone(),
                    route: route.to_owned(),
                    reason: code.as_str().unwrap_or("credentials_in_body"),
                },
            )
            .await;
        Error::from_code(code)
    }

    async fn refused_caller(&self, source: IpAddr, route: &str, failure: AuthFailure) -> Error {
        self.refused_caller_as(source, route, failure, None).await
    }

    /// As `refused_caller`, answered with `code` instead of the key's (a browser session's
    /// refusal) unless the source is blocked or the store is away.
    pub(super) async fn refused_caller_as(
        &self,
        source: IpAddr,
        route: &str,
        failure: AuthFailure,
        code: Option<Code>,
    ) -> Error {
        let key_code = match failure.error {
            AuthError::Blocked { retry_after } => {
                return Error::limited(Code::TooManyFailedAuthentications, retry_after);
            }
            AuthError::Store(e) => return Error::internal(e), // 503 when the store is away
            AuthError::Missing => Code::MissingApiKey,
            AuthError::Invalid => Code::InvalidApiKey,
            AuthError::Expired => Code::ExpiredApiKey,
            AuthError::Revoked => Code::RevokedApiKey,
            AuthError::AccountInactive => Code::AccountInactive,
        };
        let code = code.unwrap_or(key_code);
        // Requests without a valid key count against the stricter per-address limits, and a
        // throttled one is not written down.
        if let Some(limited) = self.throttle_anonymous(source, route).await {
            return limited;
        }
        self.auth.record_failure(source, &failure).await;
        Error::from_code(code)
    }

    pub(super) async fn throttle_anonymous(&self, source: IpAddr, route: &str) -> Option<Error> {
        match self.gate.unauthenticated(source, route).await {
            Verdict::Limited { retry_after, .. } | Verdict::Blocked { retry_after } => {
                Some(Error::limited(Code::RateLimitExceeded, retry_after))
            }
            Verdict::Allowed(_) => None,
        }
    }

    /// An authenticated caller on `route`: its rate limits (per address, account and key),
    /// then `scope`, then a browser key's `origin`. Denials of scope and origin are audited;
    /// the tightest rate-limit decision comes back for the response headers.
    pub async fn authorize(
        &self,
        principal: &Principal,
        route: &str,
        scope: Scope,
        origin: Option<&str>,
    ) -> Result<Option<Decision>, Refusal> {
        let tightest = match self.gate.authenticated(principal, route).await {
            Verdict::Allowed(tightest) => tightest,
            Verdict::Limited {
                retry_after,
                tightest,
            } => {
                return Err(Refusal {
                    error: Error::limited(Code::RateLimitExceeded, retry_after),
                    tightest: Some(tightest),
                });
            }
            Verdict::Blocked { retry_after } => {
                return Err(Error::limited(Code::RateLimitExceeded, retry_after).into());
            }
        };
        if !principal.has(scope) {
            let err = Error::refused(
                Code::InsufficientScope,
                format!("This key lacks the `{}` scope.", scope.as_str()),
            );
            self.audit_denial(principal, route, &err).await;
            return Err(Refusal {
                error: err,
                tightest,
            });
        }
        // A browser key works only from its own pages: the Origin must name one of them.
        if let Some(origins) = &principal.origins
            && !origin.is_some_and(|o| origins.iter().any(|a| a == o))
        {
            let err = Error::from_code(Code::OriginNotAllowed);
            self.audit_denial(principal, route, &err).await;
            return Err(Refusal {
                error: err,
                tightest,
            });
        }
        Ok(tightest)
    }
}
