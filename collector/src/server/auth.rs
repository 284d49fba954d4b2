//! Authorisation of every gRPC call: the bearer token (see [`super::token`]) is verified
//! and its role checked against the method before the request reaches a service.
//!
//! This is a tower layer on the tonic server rather than a per-service
//! `tonic::service::Interceptor`, because an interceptor never sees the method path: with
//! one place that maps `/package.Service/Method` to the roles allowed, a method added
//! later is refused (PERMISSION_DENIED) until it is given a role here, instead of being
//! open by default. The verified caller is put in the request extensions ([`Caller`]) so
//! the services can name it in the audit log.
//!
//! Answers: no or malformed `authorization: Bearer` header, bad signature or expiry →
//! `UNAUTHENTICATED`; a valid token whose role does not cover the method →
//! `PERMISSION_DENIED`. The standard health service is open (load balancers probe it).
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{SystemTime, UNIX_EPOCH},
};

use tonic::Status;
use tower::{Layer, Service};

use super::token::{
    self, valid_tenant, Role, TokenError, TokenSecret, DEFAULT_TENANT, MAX_TENANT_LEN,
};

/// Who made a call, as the services see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Token subject, or [`ANONYMOUS`] when authentication is off.
    pub subject: String,
    /// Token role (`None` when authentication is off).
    pub role: Option<Role>,
    /// The tenant every read, write and erasure of this caller is confined to: the token's
    /// tenant; `None` for a provider token, and when authentication is off (loopback), where
    /// the caller sees every tenant and an agent's CDRs go to [`DEFAULT_TENANT`].
    pub tenant: Option<String>,
}

/// The actor recorded when the server runs without authentication (loopback only).
pub const ANONYMOUS: &str = "anonymous";

impl Caller {
    /// The caller of a request (anonymous if none was attached).
    pub fn of<T>(request: &tonic::Request<T>) -> Caller {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(Caller::anonymous)
    }

    /// The caller when authentication is off.
    pub fn anonymous() -> Caller {
        Caller {
            subject: ANONYMOUS.into(),
            role: None,
            tenant: None,
        }
    }

    /// The tenant this caller's agent streams write to.
    pub fn ingest_tenant(&self) -> &str {
        self.tenant.as_deref().unwrap_or(DEFAULT_TENANT)
    }

    /// The tenant a request of this caller works on when the request may name one
    /// (`requested`, empty = none): a tenant-scoped caller gets its own tenant, and naming
    /// another is refused; a provider (or anonymous) caller gets the one it names, or `None`
    /// (every tenant) when it names none.
    pub fn scope(&self, requested: &str) -> Result<Option<String>, Status> {
        if !requested.is_empty() && !valid_tenant(requested) {
            return Err(Status::invalid_argument(format!(
                "tenant must be 1..={MAX_TENANT_LEN} letters, digits, '-', '_' or '.'"
            )));
        }
        match &self.tenant {
            Some(own) if requested.is_empty() || requested == own => Ok(Some(own.clone())),
            Some(_) => Err(Status::permission_denied(
                "this token may only see its own tenant",
            )),
            None if requested.is_empty() => Ok(None),
            None => Ok(Some(requested.to_owned())),
        }
    }

    /// [`Caller::scope`] for a request that acts on exactly one tenant (rates, usage,
    /// re-rating): a provider must name it; with none named the default tenant is meant.
    pub fn one_tenant(&self, requested: &str) -> Result<String, Status> {
        Ok(self
            .scope(requested)?
            .unwrap_or_else(|| DEFAULT_TENANT.to_owned()))
    }
}

/// Longest agent identifier accepted, in bytes.
pub const MAX_AGENT_ID_LEN: usize = 128;

/// Why a stream's agent id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentIdError {
    /// Empty or longer than [`MAX_AGENT_ID_LEN`].
    #[error("agent_id must be 1..={MAX_AGENT_ID_LEN} bytes")]
    Length,
    /// A later message of the stream named another agent.
    #[error("agent_id changed within a stream")]
    Changed,
    /// An ingest token may only speak for the agent it was issued to (its subject).
    #[error("this ingest token was issued to another agent")]
    NotTokenSubject,
}

impl From<AgentIdError> for Status {
    fn from(e: AgentIdError) -> Self {
        match e {
            AgentIdError::Length | AgentIdError::Changed => Status::invalid_argument(e.to_string()),
            AgentIdError::NotTokenSubject => Status::permission_denied(e.to_string()),
        }
    }
}

/// The agent one agent stream (`Ingest.Stream`, `Watch.Publish`) speaks for: fixed by its
/// first message and, when the caller holds an ingest token, equal to the token's subject,
/// so one SBC's token cannot write another's CDRs or sequence cursor.
#[derive(Debug, Clone)]
pub struct StreamAgent {
    caller: Caller,
    id: Option<String>,
}

impl StreamAgent {
    /// The agent of a stream opened by `caller`.
    pub fn new(caller: Caller) -> Self {
        Self { caller, id: None }
    }

    /// Checks the agent id of the stream's next message.
    pub fn check(&mut self, agent_id: &str) -> Result<(), AgentIdError> {
        if agent_id.is_empty() || agent_id.len() > MAX_AGENT_ID_LEN {
            return Err(AgentIdError::Length);
        }
        if self.caller.role == Some(Role::Ingest) && self.caller.subject != agent_id {
            return Err(AgentIdError::NotTokenSubject);
        }
        match &self.id {
            Some(a) if a != agent_id => Err(AgentIdError::Changed),
            Some(_) => Ok(()),
            None => {
                self.id = Some(agent_id.to_owned());
                Ok(())
            }
        }
    }
}

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token.
    Public,
    /// Holders of one of these roles.
    Roles(&'static [Role]),
    /// Nobody: the method is not known to this table.
    Unknown,
}

const READERS: &[Role] = &[Role::Read, Role::Admin, Role::Provider];
const ADMINS: &[Role] = &[Role::Admin, Role::Provider];

/// The access rule of a gRPC method path (`/package.Service/Method`).
pub fn access(path: &str) -> Access {
    if path.starts_with("/grpc.health.v1.Health/") {
        return Access::Public;
    }
    match path {
        "/collector.v1.Ingest/Stream" | "/collector.v1.Watch/Publish" => {
            Access::Roles(&[Role::Ingest])
        }
        "/collector.v1.Query/ListCdrs"
        | "/collector.v1.Query/ListCalls"
        | "/collector.v1.Query/Usage"
        | "/collector.v1.Watch/Flows"
        | "/collector.v1.Admin/Stats"
        | "/collector.v1.Admin/RetentionStatus" => Access::Roles(READERS),
        "/collector.v1.Admin/Erase"
        | "/collector.v1.Admin/ImportRates"
        | "/collector.v1.Admin/Rerate" => Access::Roles(ADMINS),
        "/collector.v1.Admin/RotateKey" => Access::Roles(ADMINS),
        "/collector.v1.Admin/Tenants" | "/collector.v1.Admin/DeleteTenant" => {
            Access::Roles(&[Role::Provider])
        }
        _ => Access::Unknown,
    }
}

/// Checks a call's path and headers; the caller on success, the status to answer
/// otherwise. `secret` `None` means authentication is off (every call is anonymous).
pub fn authorize(
    secret: Option<&TokenSecret>,
    path: &str,
    headers: &http::HeaderMap,
    now_s: u64,
) -> Result<Caller, Status> {
    let rule = access(path);
    let Some(secret) = secret else {
        return Ok(Caller::anonymous());
    };
    if rule == Access::Public {
        return Ok(Caller::anonymous());
    }
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?;
    let claims = token::verify(secret, token, now_s).map_err(|e| match e {
        TokenError::Expired => Status::unauthenticated("token expired"),
        _ => Status::unauthenticated("invalid token"),
    })?;
    let allowed = match rule {
        Access::Public => true,
        Access::Roles(roles) => roles.contains(&claims.role),
        Access::Unknown => false,
    };
    if !allowed {
        return Err(Status::permission_denied(format!(
            "role {} may not call {path}",
            claims.role.as_str()
        )));
    }
    Ok(Caller {
        tenant: claims.scope(),
        subject: claims.sub,
        role: Some(claims.role),
    })
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The layer that checks every call (see the module docs).
#[derive(Debug, Clone)]
pub struct AuthLayer {
    secret: Option<Arc<TokenSecret>>,
}

impl AuthLayer {
    /// Checks tokens against `secret`; `None` lets every call through as anonymous.
    pub fn new(secret: Option<TokenSecret>) -> Self {
        Self {
            secret: secret.map(Arc::new),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            secret: self.secret.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the server's routes.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    secret: Option<Arc<TokenSecret>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B, R> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match authorize(
            self.secret.as_deref(),
            req.uri().path(),
            req.headers(),
            now_s(),
        ) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                Box::pin(self.inner.call(req))
            }
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use tonic::Code;

    fn headers(token: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn an_ingest_token_speaks_only_for_its_agent() {
        let ingest = |sub: &str| Caller {
            subject: sub.into(),
            role: Some(Role::Ingest),
            tenant: Some(DEFAULT_TENANT.into()),
        };
        let mut a = StreamAgent::new(ingest("sbc-1"));
        assert_eq!(a.check("sbc-2"), Err(AgentIdError::NotTokenSubject));
        assert_eq!(a.check("sbc-1"), Ok(()));
        assert_eq!(a.check("sbc-1"), Ok(()));
        assert_eq!(a.check(""), Err(AgentIdError::Length));
        assert_eq!(
            a.check(&"x".repeat(MAX_AGENT_ID_LEN + 1)),
            Err(AgentIdError::Length)
        );
        assert_eq!(
            Status::from(AgentIdError::NotTokenSubject).code(),
            Code::PermissionDenied
        );
        // Without authentication (loopback) the first message fixes the agent.
        let mut anon = StreamAgent::new(Caller::anonymous());
        assert_eq!(anon.check("sbc-2"), Ok(()));
        assert_eq!(anon.check("sbc-3"), Err(AgentIdError::Changed));
        assert_eq!(
            Status::from(AgentIdError::Changed).code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn roles_cover_exactly_their_methods() {
        let s = TokenSecret::from_bytes(&[3; 32]);
        let tok = |role| token::issue(&s, "who", role, 100, 60).unwrap();
        let code = |path: &str, role: Role| {
            authorize(Some(&s), path, &headers(&tok(role)), 110)
                .err()
                .map(|e| e.code())
        };
        let deny = Some(Code::PermissionDenied);
        assert_eq!(code("/collector.v1.Ingest/Stream", Role::Ingest), None);
        assert_eq!(code("/collector.v1.Ingest/Stream", Role::Read), deny);
        assert_eq!(code("/collector.v1.Ingest/Stream", Role::Admin), deny);
        assert_eq!(code("/collector.v1.Query/ListCdrs", Role::Read), None);
        assert_eq!(code("/collector.v1.Query/ListCdrs", Role::Admin), None);
        assert_eq!(code("/collector.v1.Query/ListCdrs", Role::Ingest), deny);
        assert_eq!(code("/collector.v1.Query/ListCalls", Role::Read), None);
        assert_eq!(code("/collector.v1.Query/ListCalls", Role::Admin), None);
        assert_eq!(code("/collector.v1.Query/ListCalls", Role::Ingest), deny);
        assert_eq!(code("/collector.v1.Admin/Erase", Role::Read), deny);
        assert_eq!(code("/collector.v1.Admin/Erase", Role::Ingest), deny);
        assert_eq!(code("/collector.v1.Admin/Erase", Role::Admin), None);
        assert_eq!(code("/collector.v1.Admin/Rerate", Role::Read), deny);
        assert_eq!(code("/collector.v1.Admin/Rerate", Role::Admin), None);
        assert_eq!(code("/collector.v1.Admin/Stats", Role::Read), None);
        assert_eq!(code("/collector.v1.Admin/NewThing", Role::Admin), deny);
        // The provider's operators may read and administer, never stream as an agent;
        // only they list the tenants.
        assert_eq!(code("/collector.v1.Query/ListCdrs", Role::Provider), None);
        assert_eq!(code("/collector.v1.Watch/Flows", Role::Provider), None);
        assert_eq!(code("/collector.v1.Admin/Erase", Role::Provider), None);
        assert_eq!(code("/collector.v1.Ingest/Stream", Role::Provider), deny);
        assert_eq!(code("/collector.v1.Admin/Tenants", Role::Provider), None);
        assert_eq!(code("/collector.v1.Admin/Tenants", Role::Admin), deny);
        assert_eq!(code("/collector.v1.Admin/Tenants", Role::Read), deny);
        assert_eq!(
            code("/collector.v1.Admin/DeleteTenant", Role::Provider),
            None
        );
        assert_eq!(code("/collector.v1.Admin/DeleteTenant", Role::Admin), deny);
        assert_eq!(code("/collector.v1.Admin/RotateKey", Role::Admin), None);
        assert_eq!(code("/collector.v1.Admin/RotateKey", Role::Read), deny);
        let caller = authorize(
            Some(&s),
            "/collector.v1.Admin/Erase",
            &headers(&tok(Role::Admin)),
            110,
        )
        .unwrap();
        assert_eq!(caller.subject, "who");
    }

    #[test]
    fn a_tenant_token_is_confined_to_its_tenant_a_provider_token_to_none() {
        let s = TokenSecret::from_bytes(&[3; 32]);
        let path = "/collector.v1.Query/ListCdrs";
        let t = token::issue_for(&s, "ops", Role::Read, Some("acme"), 100, 60).unwrap();
        let acme = authorize(Some(&s), path, &headers(&t), 110).unwrap();
        assert_eq!(acme.tenant.as_deref(), Some("acme"));
        assert_eq!(acme.scope("").unwrap().as_deref(), Some("acme"));
        assert_eq!(acme.scope("acme").unwrap().as_deref(), Some("acme"));
        assert_eq!(
            acme.scope("globex").unwrap_err().code(),
            Code::PermissionDenied
        );
        assert_eq!(acme.one_tenant("").unwrap(), "acme");
        // Tokens from before tenants belong to the default tenant.
        let old = token::issue(&s, "ops", Role::Admin, 100, 60).unwrap();
        let old = authorize(Some(&s), path, &headers(&old), 110).unwrap();
        assert_eq!(old.tenant.as_deref(), Some(DEFAULT_TENANT));
        let p = token::issue_for(&s, "noc", Role::Provider, None, 100, 60).unwrap();
        let noc = authorize(Some(&s), path, &headers(&p), 110).unwrap();
        assert_eq!(noc.scope("").unwrap(), None);
        assert_eq!(noc.scope("globex").unwrap().as_deref(), Some("globex"));
        assert_eq!(noc.one_tenant("").unwrap(), DEFAULT_TENANT);
        assert_eq!(
            noc.scope("no tenant").unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn missing_bad_or_expired_tokens_are_unauthenticated() {
        let s = TokenSecret::from_bytes(&[3; 32]);
        let path = "/collector.v1.Query/ListCdrs";
        let none = authorize(Some(&s), path, &http::HeaderMap::new(), 0).unwrap_err();
        assert_eq!(none.code(), Code::Unauthenticated);
        let other = TokenSecret::from_bytes(&[4; 32]);
        let foreign = token::issue(&other, "x", Role::Admin, 0, 60).unwrap();
        let err = authorize(Some(&s), path, &headers(&foreign), 1).unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        let old = token::issue(&s, "x", Role::Admin, 0, 60).unwrap();
        let err = authorize(Some(&s), path, &headers(&old), 60).unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        let mut basic = http::HeaderMap::new();
        basic.insert(http::header::AUTHORIZATION, "Basic eDp5".parse().unwrap());
        assert_eq!(
            authorize(Some(&s), path, &basic, 1).unwrap_err().code(),
            Code::Unauthenticated
        );
        // Health is open; with authentication off everything is anonymous.
        assert!(authorize(
            Some(&s),
            "/grpc.health.v1.Health/Check",
            &http::HeaderMap::new(),
            0
        )
        .is_ok());
        assert_eq!(
            authorize(None, path, &http::HeaderMap::new(), 0)
                .unwrap()
                .subject,
            ANONYMOUS
        );
    }
}
