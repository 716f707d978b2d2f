//! Registry authentication (spec §8.2-8.4): `WWW-Authenticate` challenges, Basic, and Bearer
//! tokens with their scopes, cache and renewal.
//!
//! The first request to a host goes without credentials. A 401 challenge tells which scheme
//! the host wants; from then on every request carries credentials up front.
//!
//! A Bearer token covers the scopes of every request so far (pull and push, merged per
//! repository), so one token serves the whole run. A request whose scopes are not to be kept
//! (a `DELETE`) gets a token of its own scopes instead, which no other request carries.
//!
//! Credentials come from the host's configuration or, with `credHelper`, from the helper
//! (run lazily and cached, see [`cred_helper`](super::cred_helper)). Header values holding
//! them are marked sensitive and never logged.

use super::client::{Body, Client, Host, Response};
use super::cred_helper::Creds;
use super::header::Lexer;
use super::origin;
use super::RequestKind;
use crate::store::StoreError;
use base64::Engine as _;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::Method;
use serde::Deserialize;
use slog::{debug, warn};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;
use url::Url;

/// Tokens are used until this long before they expire (spec §8.4).
const RENEW_EARLY: Duration = Duration::from_secs(5);
/// Tokens are assumed to live at least this long, whatever `expires_in` says.
const MIN_TOKEN_LIFE: Duration = Duration::from_secs(60);
/// Tokens are renewed at least daily, whatever `expires_in` says.
const MAX_TOKEN_LIFE: Duration = Duration::from_secs(24 * 3600);
const TOKEN_BODY_LIMIT: usize = 1 << 20;

/// One challenge of a `WWW-Authenticate` header: scheme and parameters, both lower-cased
/// where the grammar says they are case-insensitive (the scheme, parameter names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// All challenges of all `WWW-Authenticate` headers of a response.
pub(crate) fn parse_challenges(headers: &HeaderMap) -> Result<Vec<Challenge>, String> {
    let mut out = Vec::new();
    for value in headers.get_all(WWW_AUTHENTICATE) {
        let value = value
            .to_str()
            .map_err(|_| "invalid WWW-Authenticate header".to_string())?;
        out.extend(parse_www_authenticate(value)?);
    }
    Ok(out)
}

/// `challenge = scheme [ param *( "," param ) ]`, several challenges separated by commas; a
/// bare token after a comma (not followed by `=`) starts the next challenge.
pub(crate) fn parse_www_authenticate(value: &str) -> Result<Vec<Challenge>, String> {
    let bad = |l: &Lexer, what: &str| {
        format!(
            "invalid WWW-Authenticate header {value:?}: {what} at byte {}",
            l.pos()
        )
    };
    let mut l = Lexer::new(value);
    let mut out = Vec::new();
    loop {
        l.take_while(|c| c == ' ' || c == '\t' || c == ',');
        if l.eof() {
            return Ok(out);
        }
        let scheme = l.token();
        if scheme.is_empty() {
            return Err(bad(&l, "expected an auth scheme"));
        }
        let mut challenge = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params: BTreeMap::new(),
        };
        loop {
            l.take_while(|c| c == ' ' || c == '\t' || c == ',');
            if l.eof() {
                break;
            }
            let start = l.pos();
            let name = l.token();
            l.skip_ws();
            if name.is_empty() || !l.eat('=') {
                if name.is_empty() {
                    return Err(bad(&l, "expected a parameter"));
                }
                // The next challenge's scheme.
                l.reset(start);
                break;
            }
            l.skip_ws();
            // token68 (`Negotiate abc==`): trailing `=` padding, no value of its own.
            if l.peek() == Some('=') {
                l.take_while(|c| c == '=');
                continue;
            }
            let v = l.value().map_err(|e| bad(&l, &e))?;
            challenge.params.insert(name.to_ascii_lowercase(), v);
            l.skip_ws();
            if !l.eof() && l.peek() != Some(',') {
                return Err(bad(&l, "expected ','"));
            }
        }
        out.push(challenge);
    }
}

/// Bearer scopes, merged per resource: `repository:a:pull` + `repository:a:push` make
/// `repository:a:pull,push` (spec §8.4).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Scopes(Vec<(String, Vec<String>)>);

impl Scopes {
    /// Add a scope; true when it grants something new (the current token then falls short).
    pub fn add(&mut self, scope: &str) -> bool {
        let scope = scope.trim();
        if scope.is_empty() {
            return false;
        }
        // `type:name:actions`; the name itself may hold a `:` (a registry port).
        let (resource, actions) = match scope.rsplit_once(':') {
            Some((resource, actions)) if resource.contains(':') => (resource, actions),
            _ => (scope, ""),
        };
        let mut changed = false;
        let idx = match self.0.iter().position(|(r, _)| r == resource) {
            Some(i) => i,
            None => {
                self.0.push((resource.to_string(), Vec::new()));
                changed = true;
                self.0.len() - 1
            }
        };
        let have = &mut self.0[idx].1;
        for action in actions.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            if !have.iter().any(|a| a == action) {
                have.push(action.to_string());
                changed = true;
            }
        }
        changed
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(resource, actions)| {
                if actions.is_empty() {
                    resource.clone()
                } else {
                    format!("{resource}:{}", actions.join(","))
                }
            })
            .collect()
    }
}

/// The auth state of one host (or one repository with `repoAuth`).
#[derive(Default)]
pub(crate) struct Auth {
    // A tokio mutex: it is held across the token fetch so that concurrent requests wait for
    // one token instead of each fetching their own.
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The host asked for Basic.
    basic: bool,
    bearer: Option<Bearer>,
}

struct Bearer {
    realm: Url,
    service: String,
    /// The token of every request whose scopes are kept, for all those scopes.
    kept: Slot,
    /// The token of the last request whose scopes are not kept (a delete), for its scopes
    /// only (widened by the challenge, if any): the deletes it covers share it.
    own: Slot,
    /// From a previous token response; used for the POST flow.
    refresh_token: Option<String>,
    /// The configured (or helper-given) identity token the token server refused: not
    /// offered again until it changes.
    refused_identity: Option<String>,
}

struct Token {
    header: HeaderValue,
    renew_at: Instant,
}

/// Scopes and the token fetched for them (None until fetched, or once it falls short).
#[derive(Default)]
struct Slot {
    scopes: Scopes,
    token: Option<Token>,
}

impl Bearer {
    fn slot(&mut self, keep: bool) -> &mut Slot {
        if keep {
            &mut self.kept
        } else {
            &mut self.own
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    expires_in: u64,
    #[serde(default)]
    refresh_token: String,
}

impl Auth {
    /// The `Authorization` value for a request needing `scopes`, fetching a token when the
    /// cached one lacks a scope or is about to expire. With `keep`, the scopes join those of
    /// the token every such request carries; without, the request gets a token of its own
    /// scopes (reused by the next request with the same ones). None until the host has
    /// challenged.
    pub async fn authorization(
        &self,
        client: &Client,
        host: &Host,
        scopes: &[String],
        keep: bool,
    ) -> Result<Option<HeaderValue>, StoreError> {
        let mut state = self.state.lock().await;
        if let Some(bearer) = state.bearer.as_mut() {
            let slot = bearer.slot(keep);
            if keep {
                for scope in scopes {
                    if slot.scopes.add(scope) {
                        slot.token = None;
                    }
                }
            } else {
                // Reused while it covers the request: a challenge may have widened the last
                // delete's scopes (`repository:X:*` from older distribution), and the next
                // delete in X asks for `delete` alone again.
                let mut widened = slot.scopes.clone();
                if scopes.iter().any(|scope| widened.add(scope)) {
                    let mut own = Scopes::default();
                    for scope in scopes {
                        own.add(scope);
                    }
                    *slot = Slot {
                        scopes: own,
                        token: None,
                    };
                }
            }
            if let Some(token) = &slot.token {
                if Instant::now() < token.renew_at {
                    return Ok(Some(token.header.clone()));
                }
            }
            let wanted = slot.scopes.to_strings();
            let token = fetch_token(client, host, bearer, &wanted, keep).await?;
            let header = token.header.clone();
            bearer.slot(keep).token = Some(token);
            return Ok(Some(header));
        }
        if state.basic {
            return Ok(basic_header(&host_creds(client, host).await));
        }
        Ok(None)
    }

    /// Learn from a 401's challenges; a Bearer challenge's scopes join the request's
    /// `scopes` (kept or not, as the request's own are). True when retrying with (new)
    /// credentials may succeed; false when nothing new was learned, so the request fails as
    /// unauthorized (spec §8.2).
    pub async fn on_challenge(
        &self,
        request_url: &Url,
        challenges: &[Challenge],
        sent: Option<&HeaderValue>,
        scopes: &mut Vec<String>,
        client: &Client,
        host: &Host,
    ) -> bool {
        let log = &client.log;
        let mut state = self.state.lock().await;
        for c in challenges {
            match c.scheme.as_str() {
                "bearer" => {
                    let Some(realm) = c.params.get("realm") else {
                        warn!(log, "Bearer challenge without realm"; "host" => &host.config.name);
                        continue;
                    };
                    let realm = match request_url.join(realm) {
                        Ok(r) => r,
                        Err(e) => {
                            warn!(log, "Invalid bearer realm"; "host" => &host.config.name, "error" => %e);
                            continue;
                        }
                    };
                    // The realm may live on another origin (Docker Hub's auth.docker.io);
                    // it gets only what the token protocol sends it.
                    if let Err(why) = origin::check(request_url, &realm) {
                        warn!(log, "Refusing bearer realm"; "host" => &host.config.name, "reason" => %why);
                        continue;
                    }
                    let service = c.params.get("service").cloned().unwrap_or_default();
                    let bearer = state.bearer.get_or_insert_with(|| Bearer {
                        realm: realm.clone(),
                        service: service.clone(),
                        kept: Slot::default(),
                        own: Slot::default(),
                        refresh_token: None,
                        refused_identity: None,
                    });
                    if bearer.realm != realm || bearer.service != service {
                        warn!(log, "Bearer challenge changed realm or service, rejected";
                            "host" => &host.config.name);
                        continue;
                    }
                    let asked = c.params.get("scope").map(String::as_str).unwrap_or("");
                    for scope in asked.split_whitespace() {
                        if !scopes.iter().any(|s| s == scope) {
                            scopes.push(scope.to_string());
                        }
                    }
                    // The token we sent (if any) was refused, or lacks a scope: get another.
                    for slot in [&mut bearer.kept, &mut bearer.own] {
                        let current = slot.token.as_ref().map(|t| &t.header);
                        if sent.is_none() || sent == current {
                            slot.token = None;
                        }
                    }
                    return true;
                }
                "basic" => {
                    let Some(header) = basic_header(&host_creds(client, host).await) else {
                        debug!(log, "Basic challenge but no credentials"; "host" => &host.config.name);
                        continue;
                    };
                    let was_basic = std::mem::replace(&mut state.basic, true);
                    if !was_basic || sent != Some(&header) {
                        return true;
                    }
                }
                other => {
                    warn!(log, "Unsupported auth type"; "host" => &host.config.name, "type" => other)
                }
            }
        }
        false
    }
}

/// The credentials for requests to `host`: configured, or from its credential helper.
async fn host_creds(client: &Client, host: &Host) -> Creds {
    client.cred_helpers.creds(&host.config, &client.log).await
}

/// `Basic base64(user:pass)`, only when both are set (spec §8.3).
fn basic_header(c: &Creds) -> Option<HeaderValue> {
    if c.user.is_empty() || c.pass.is_empty() {
        return None;
    }
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.user, c.pass));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Spec §8.4: POST `grant_type=refresh_token` when a refresh or identity token is known,
/// else (or when that is refused) GET with `service`, `scope`s and basic credentials.
/// `kept`: the token is the one every pull and push carries (see [`Auth::authorization`]).
async fn fetch_token(
    client: &Client,
    host: &Host,
    bearer: &mut Bearer,
    scopes: &[String],
    kept: bool,
) -> Result<Token, StoreError> {
    let creds = host_creds(client, host).await;
    let identity = Some(creds.token.clone())
        .filter(|t| !t.is_empty() && bearer.refused_identity.as_ref() != Some(t));
    let refresh = bearer.refresh_token.clone().or(identity);
    if let Some(refresh) = refresh {
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "refresh_token")
            .append_pair("refresh_token", &refresh)
            .append_pair("service", &bearer.service)
            .append_pair("scope", &scopes.join(" "))
            .append_pair("client_id", &client.user_agent)
            .finish();
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let mut body = Body::Bytes(Bytes::from(form));
        let resp = client
            .execute(
                host,
                RequestKind::Token,
                &Method::POST,
                &bearer.realm,
                headers,
                &mut body,
            )
            .await?;
        if resp.status() == 200 {
            return token_from(resp, bearer).await;
        }
        debug!(client.log, "refresh token refused, requesting a token with GET";
            "host" => &host.config.name, "status" => resp.status());
        // A token server may refuse a delete's scope alone: that says nothing of the refresh
        // or identity token, which every later pull and push still needs.
        if kept && bearer.refresh_token.take().is_none() {
            bearer.refused_identity = Some(refresh);
        }
    }

    let mut url = bearer.realm.clone();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("client_id", &client.user_agent);
        if !bearer.service.is_empty() {
            q.append_pair("service", &bearer.service);
        }
        for scope in scopes {
            q.append_pair("scope", scope);
        }
        if !creds.user.is_empty() {
            q.append_pair("account", &creds.user);
        }
    }
    let mut headers = HeaderMap::new();
    if let Some(basic) = basic_header(&creds) {
        headers.insert(AUTHORIZATION, basic);
    }
    let resp = client
        .execute(
            host,
            RequestKind::Token,
            &Method::GET,
            &url,
            headers,
            &mut Body::Empty,
        )
        .await?;
    match resp.status() {
        200 => token_from(resp, bearer).await,
        // Server trouble is not a verdict on the credentials: keep it transient.
        429 | 500.. => Err(resp.into_error().await),
        status => Err(StoreError::Unauthorized {
            status,
            detail: Some(format!("token request refused by {}", host_of(&url))),
        }),
    }
}

async fn token_from(resp: Response, bearer: &mut Bearer) -> Result<Token, StoreError> {
    let body = resp.bytes(TOKEN_BODY_LIMIT).await?;
    let parsed: TokenResponse = serde_json::from_slice(&body)
        .map_err(|e| StoreError::Invalid(format!("token response: {e}")))?;
    let token = if parsed.token.is_empty() {
        parsed.access_token
    } else {
        parsed.token
    };
    if token.is_empty() {
        return Err(StoreError::Unauthorized {
            status: 200,
            detail: Some("token response without a token".into()),
        });
    }
    if !parsed.refresh_token.is_empty() {
        bearer.refresh_token = Some(parsed.refresh_token);
    }
    let mut header = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| StoreError::Invalid("token response: token is not a valid header".into()))?;
    header.set_sensitive(true);
    Ok(Token {
        header,
        renew_at: renew_at(Instant::now(), parsed.expires_in),
    })
}

/// When a token given `expires_in` seconds at `now` is renewed. Local clock, not `issued_at`:
/// immune to skew between us and the token server. Clamped to [`MAX_TOKEN_LIFE`]: a token
/// server's "never expires" (`expires_in` near `i64::MAX`) must not overflow the clock.
fn renew_at(now: Instant, expires_in: u64) -> Instant {
    let life = Duration::from_secs(expires_in.min(MAX_TOKEN_LIFE.as_secs())).max(MIN_TOKEN_LIFE);
    now + life - RENEW_EARLY
}

fn host_of(url: &Url) -> String {
    url.host_str().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_a_bearer_challenge() {
        let c = parse_www_authenticate(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        )
        .unwrap();
        assert_eq!(
            c,
            vec![Challenge {
                scheme: "bearer".into(),
                params: params(&[
                    ("realm", "https://auth.docker.io/token"),
                    ("service", "registry.docker.io"),
                    ("scope", "repository:library/alpine:pull"),
                ]),
            }]
        );
    }

    #[test]
    fn parses_several_challenges_escapes_and_case() {
        let c = parse_www_authenticate(
            r#"BASIC Realm="a \"quoted\" realm, with comma" , Bearer realm=http://x/token, error="insufficient_scope",Negotiate abc=="#,
        )
        .unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].params["realm"], r#"a "quoted" realm, with comma"#);
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].params["realm"], "http://x/token");
        assert_eq!(c[1].params["error"], "insufficient_scope");
        assert_eq!(c[2].scheme, "negotiate");
        assert!(parse_www_authenticate("Basic").unwrap()[0]
            .params
            .is_empty());
    }

    #[test]
    fn rejects_broken_headers() {
        assert!(parse_www_authenticate(r#"Bearer realm="unterminated"#).is_err());
        assert!(parse_www_authenticate(r#"Bearer realm="x" service="y""#).is_err());
        assert!(parse_www_authenticate("=oops").is_err());
    }

    #[test]
    fn multiple_headers_are_combined() {
        let mut h = HeaderMap::new();
        h.append(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Basic realm="r""#),
        );
        h.append(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="t""#),
        );
        let c = parse_challenges(&h).unwrap();
        assert_eq!(
            c.iter().map(|c| c.scheme.as_str()).collect::<Vec<_>>(),
            ["basic", "bearer"]
        );
    }

    #[test]
    fn scopes_merge_per_repository() {
        let mut s = Scopes::default();
        assert!(s.add("repository:a:pull"));
        assert!(!s.add("repository:a:pull"));
        assert!(s.add("repository:b:pull"));
        assert!(s.add("repository:a:pull,push"));
        assert!(!s.add("repository:a:push"));
        assert!(s.add("registry:catalog:*"));
        assert!(s.add("repository:reg:5000/x:pull"));
        assert_eq!(
            s.to_strings(),
            [
                "repository:a:pull,push",
                "repository:b:pull",
                "registry:catalog:*",
                "repository:reg:5000/x:pull"
            ]
        );
    }

    #[test]
    fn any_expires_in_gives_a_renewal_time() {
        let now = Instant::now();
        for expires_in in [0, 1, 300, i64::MAX as u64 - 1, i64::MAX as u64, u64::MAX] {
            let at = renew_at(now, expires_in);
            assert!(at > now, "{expires_in}");
        }
        assert_eq!(renew_at(now, 300), now + Duration::from_secs(295));
        assert_eq!(renew_at(now, 0), now + MIN_TOKEN_LIFE - RENEW_EARLY);
        assert_eq!(renew_at(now, u64::MAX), now + MAX_TOKEN_LIFE - RENEW_EARLY);
    }

    #[test]
    fn basic_needs_user_and_pass() {
        let mut h = Creds::default();
        assert!(basic_header(&h).is_none());
        h.user = "testuser".into();
        assert!(basic_header(&h).is_none());
        h.user = "testuser".into();
        h.pass = "testpass".into();
        let v = basic_header(&h).unwrap();
        assert_eq!(v.to_str().unwrap(), "Basic dGVzdHVzZXI6dGVzdHBhc3M=");
        assert!(v.is_sensitive());
    }
}
