//! Who is calling the HTTP API. Scripts send a bearer token (read-only for reads, operator for
//! actions). The dashboard sends its token once to `POST /api/v1/session` and gets back a signed,
//! expiring cookie instead, so the token itself never stays in the browser:
//!
//! `acufarm_session=v1.<role>.<expires unix s>.<sha256 of the token, hex>.<HMAC-SHA256, hex>`
//!
//! signed with the configured `session_key` (the same on every replica, so a cookie from one
//! works on all). A session lives until it expires or its token leaves the token files: each
//! request checks that the token digest it carries is still one of its role's.
//!
//! Requests that change something and come with the cookie must carry an `Origin` naming this
//! server (a cross-site page cannot forge one), and any request whose `Origin` names another site
//! is refused; the cookie is `SameSite=Strict` and `HttpOnly` besides (`Secure` under TLS).

use super::ApiError;
use crate::auth::Role;
use crate::service::Coordinator;
use crate::store::Store;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub const COOKIE: &str = "acufarm_session";

/// The key session cookies are signed with.
pub struct SessionKey {
    key: Vec<u8>,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(***)")
    }
}

/// A session cookie's contents, once its signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub role: Role,
    pub expires_unix: i64,
    pub token_digest: [u8; 32],
}

/// Why a cookie opens no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieError {
    /// Not a cookie this coordinator makes (or altered, or signed with another key).
    Invalid,
    Expired,
}

impl SessionKey {
    /// The configured key, or (`None`) a fresh random one for this process alone.
    pub fn new(configured: Option<&str>) -> Self {
        match configured.map(str::trim).filter(|key| !key.is_empty()) {
            Some(key) => Self { key: key.as_bytes().to_vec() },
            None => {
                let mut key = vec![0u8; 32];
                getrandom::getrandom(&mut key).expect("the operating system's random source works");
                Self { key }
            }
        }
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(payload.as_bytes());
        mac
    }

    /// The cookie value of a session.
    pub fn seal(&self, session: &Session) -> String {
        let payload = format!("v1.{}.{}.{}", session.role.as_str(), session.expires_unix, hex(&session.token_digest));
        let tag = self.mac(&payload).finalize().into_bytes();
        format!("{payload}.{}", hex(&tag))
    }

    /// Checks a cookie value: its form, its signature (in constant time), then its expiry.
    pub fn open(&self, value: &str, now_unix: i64) -> Result<Session, CookieError> {
        let (payload, tag) = value.rsplit_once('.').ok_or(CookieError::Invalid)?;
        let tag = unhex::<32>(tag).ok_or(CookieError::Invalid)?;
        self.mac(payload).verify_slice(&tag).map_err(|_| CookieError::Invalid)?;
        let session = parse_payload(payload).ok_or(CookieError::Invalid)?;
        if session.expires_unix <= now_unix {
            return Err(CookieError::Expired);
        }
        Ok(session)
    }
}

/// `v1.<role>.<expires>.<digest>` (the signed part of a cookie).
fn parse_payload(payload: &str) -> Option<Session> {
    let mut parts = payload.split('.');
    let (version, role, expires, digest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "v1" || parts.next().is_some() {
        return None;
    }
    let role = match role {
        "operator" => Role::Operator,
        "read" => Role::Read,
        _ => return None,
    };
    Some(Session { role, expires_unix: expires.parse().ok()?, token_digest: unhex::<32>(digest)? })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (index, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * index..2 * index + 2], 16).ok()?;
    }
    Some(out)
}

/// The value of one cookie in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}

/// Whether the request's `Origin` (when it has one) names this server. `tls`: the scheme it
/// must use.
fn same_origin(headers: &HeaderMap, tls: bool) -> Option<bool> {
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    let host = headers.get(header::HOST).and_then(|host| host.to_str().ok()).unwrap_or("");
    let scheme = if tls { "https://" } else { "http://" };
    Some(origin.strip_prefix(scheme).is_some_and(|authority| !host.is_empty() && authority.eq_ignore_ascii_case(host)))
}

/// Checks the caller's token or session for `role`; the session when the caller came with the
/// cookie (`None` for a bearer token).
fn authorize<S: Store>(coordinator: &Coordinator<S>, parts: &Parts, role: Role) -> Result<Option<Session>, ApiError> {
    let tls = coordinator.server_tls().is_some();
    if same_origin(&parts.headers, tls) == Some(false) {
        return Err(ApiError::forbidden("the request came from another site's page (its Origin is not this coordinator); open the dashboard itself"));
    }
    if let Some(header) = parts.headers.get(header::AUTHORIZATION) {
        coordinator.tokens().check(Some(header.as_bytes()), role)?;
        return Ok(None);
    }
    let Some(value) = cookie(&parts.headers, COOKIE) else {
        return Err(ApiError::unauthenticated(
            "the request carried no token; send `Authorization: Bearer <token>` with a read-only or operator token, or sign in on the dashboard",
        ));
    };
    let session = coordinator.session_key().open(value, chrono::Utc::now().timestamp()).map_err(|error| match error {
        CookieError::Expired => ApiError::unauthenticated("your dashboard session expired; sign in again with your token"),
        CookieError::Invalid => ApiError::unauthenticated("the session cookie is not one this farm signed (or its session_key changed); sign in again"),
    })?;
    if !coordinator.tokens().digest_allows(&session.token_digest, session.role) {
        return Err(ApiError::unauthenticated("the token this session was opened with is no longer accepted; sign in again with a current token"));
    }
    if role == Role::Operator && session.role != Role::Operator {
        return Err(ApiError::forbidden("this session was opened with a read-only token, and this action needs an operator token; sign in with one"));
    }
    // A cookie rides along on any request the browser sends, so a change must prove it comes
    // from this dashboard's own page.
    if parts.method != Method::GET && parts.method != Method::HEAD && same_origin(&parts.headers, tls).is_none() {
        return Err(ApiError::forbidden(
            "a change made with a session cookie must carry this coordinator's Origin; use the dashboard, or a bearer token from scripts",
        ));
    }
    Ok(Some(session))
}

/// A caller allowed to read (a read-only or operator token, or a session of either).
pub struct Reader;

/// A caller allowed to act (an operator token, or an operator session).
pub struct Operator;

impl<S: Store> FromRequestParts<Coordinator<S>> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, coordinator: &Coordinator<S>) -> Result<Self, ApiError> {
        authorize(coordinator, parts, Role::Read).map(|_| Reader)
    }
}

impl<S: Store> FromRequestParts<Coordinator<S>> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, coordinator: &Coordinator<S>) -> Result<Self, ApiError> {
        authorize(coordinator, parts, Role::Operator).map(|_| Operator)
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct SignIn {
    /// A read-only or operator token.
    pub token: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionInfo {
    /// Whether the request carried a valid session cookie.
    pub signed_in: bool,
    /// `read` or `operator`.
    pub role: Option<String>,
    /// RFC 3339.
    pub expires_at: Option<String>,
    /// Why there is no session, when there is none.
    pub reason: Option<String>,
}

fn session_info(session: &Session) -> SessionInfo {
    let expires = chrono::DateTime::from_timestamp(session.expires_unix, 0).unwrap_or_default();
    SessionInfo { signed_in: true, role: Some(session.role.as_str().to_string()), expires_at: Some(expires.to_rfc3339()), reason: None }
}

fn set_cookie(value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")).expect("cookie text is ASCII")
}

/// Opens a dashboard session: the token is checked once and turned into a signed cookie.
#[utoipa::path(post, path = "/api/v1/session", tag = "session", request_body = SignIn,
    responses((status = 200, description = "Signed in; the session cookie is set", body = SessionInfo),
              (status = 401, description = "Unknown token", body = super::ErrorBody),
              (status = 403, description = "A worker token, or another site's page", body = super::ErrorBody)))]
pub async fn sign_in<S: Store>(State(coordinator): State<Coordinator<S>>, headers: HeaderMap, body: super::Body<SignIn>) -> Response {
    let tls = coordinator.server_tls().is_some();
    if same_origin(&headers, tls) == Some(false) {
        return ApiError::forbidden("the sign-in came from another site's page (its Origin is not this coordinator); open the dashboard itself")
            .into_response();
    }
    let (token_digest, role) = match coordinator.tokens().session_role(body.0.token.trim().as_bytes()) {
        Ok(found) => found,
        Err(status) => return ApiError::from(status).into_response(),
    };
    let lifetime = i64::try_from(coordinator.config().session_seconds).unwrap_or(i64::MAX / 2);
    let session = Session { role, expires_unix: chrono::Utc::now().timestamp().saturating_add(lifetime), token_digest };
    let cookie = set_cookie(&coordinator.session_key().seal(&session), lifetime, tls);
    ([(header::SET_COOKIE, cookie)], axum::Json(session_info(&session))).into_response()
}

/// The current dashboard session, or why there is none (the dashboard then asks for a token);
/// always 200, so a page that is not signed in logs no error.
#[utoipa::path(get, path = "/api/v1/session", tag = "session", responses((status = 200, body = SessionInfo)))]
pub async fn current<S: Store>(State(coordinator): State<Coordinator<S>>, parts: Parts) -> Response {
    let none = |reason: String| axum::Json(SessionInfo { signed_in: false, role: None, expires_at: None, reason: Some(reason) }).into_response();
    if cookie(&parts.headers, COOKIE).is_none() {
        return none("not signed in".into());
    }
    match authorize(&coordinator, &parts, Role::Read) {
        Ok(Some(session)) => axum::Json(session_info(&session)).into_response(),
        // A bearer token came too: report the cookie's session, as a page would see it.
        Ok(None) => match coordinator.session_key().open(cookie(&parts.headers, COOKIE).unwrap_or_default(), chrono::Utc::now().timestamp()) {
            Ok(session) => axum::Json(session_info(&session)).into_response(),
            Err(_) => none("not signed in".into()),
        },
        Err(error) => none(error.message),
    }
}

/// Ends the dashboard session (the cookie is cleared).
#[utoipa::path(delete, path = "/api/v1/session", tag = "session", responses((status = 204, description = "Signed out")))]
pub async fn sign_out<S: Store>(State(coordinator): State<Coordinator<S>>) -> Response {
    let cookie = set_cookie("", 0, coordinator.server_tls().is_some());
    (axum::http::StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn session(role: Role, expires_unix: i64) -> Session {
        Session { role, expires_unix, token_digest: crate::auth::digest(b"tok") }
    }

    #[test]
    fn a_sealed_session_opens_until_it_expires_and_only_with_its_key() {
        let key = SessionKey::new(Some("k".repeat(32).as_str()));
        let sealed = key.seal(&session(Role::Operator, 1_000));
        assert!(sealed.starts_with("v1.operator.1000."), "{sealed}");
        assert_eq!(key.open(&sealed, 999), Ok(session(Role::Operator, 1_000)));
        assert_eq!(key.open(&sealed, 1_000), Err(CookieError::Expired));
        let other = SessionKey::new(Some("x".repeat(32).as_str()));
        assert_eq!(other.open(&sealed, 0), Err(CookieError::Invalid), "another replica's key must not open it");
        // Changing the role or the expiry breaks the signature.
        let forged = sealed.replacen("operator", "read", 1);
        assert_eq!(key.open(&forged, 0), Err(CookieError::Invalid));
        let later = sealed.replacen(".1000.", ".9999.", 1);
        assert_eq!(key.open(&later, 0), Err(CookieError::Invalid));
        // Two processes without a configured key do not share sessions.
        assert_ne!(SessionKey::new(None).seal(&session(Role::Read, 5)), SessionKey::new(None).seal(&session(Role::Read, 5)));
    }

    #[test]
    fn cookies_are_found_among_others_and_origins_compared_with_the_host() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("theme=dark; acufarm_session=abc.def; x=1"));
        assert_eq!(cookie(&headers, COOKIE), Some("abc.def"));
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7172"));
        assert_eq!(same_origin(&headers, false), None, "no Origin header");
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:7172"));
        assert_eq!(same_origin(&headers, false), Some(true));
        assert_eq!(same_origin(&headers, true), Some(false), "https is required under TLS");
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert_eq!(same_origin(&headers, false), Some(false));
    }

    proptest! {
        /// Whatever a browser (or an attacker) sends as the cookie, opening it never panics and
        /// never yields a session this key did not seal.
        #[test]
        fn no_cookie_text_opens_a_session_it_was_not_sealed_with(text in "\\PC{0,200}", now in any::<i64>()) {
            let key = SessionKey::new(Some("k".repeat(32).as_str()));
            prop_assert!(key.open(&text, now).is_err());
        }

        #[test]
        fn sealed_sessions_round_trip(expires in 1i64..i64::MAX, operator in any::<bool>(), digest in any::<[u8; 32]>()) {
            let key = SessionKey::new(Some("k".repeat(40).as_str()));
            let role = if operator { Role::Operator } else { Role::Read };
            let session = Session { role, expires_unix: expires, token_digest: digest };
            prop_assert_eq!(key.open(&key.seal(&session), expires - 1), Ok(session));
        }
    }
}
