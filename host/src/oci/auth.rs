//! Registries that ask who is calling. A request answered `401` with a `WWW-Authenticate`
//! challenge is sent again once:
//!
//! - `Basic`: with the registry's user name and password;
//! - `Bearer realm=…,service=…,scope=…` (the distribution token protocol, which public
//!   registries ask for even of anonymous readers): a token is fetched from the realm — with
//!   the user name and password when there are any — and sent as `Bearer TOKEN`.
//!
//! Credentials come from an auth file in the format `docker login`, `podman login` and
//! `oras login` write (`{"auths": {"REGISTRY": {"auth": "BASE64(USER:PASSWORD)"}}}`).
//! The last header that worked is kept per registry, so a pull asks for a token once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;

use super::http::{self, Answer};

/// A user name and password (or a token used as one) for a registry.
#[derive(Clone)]
pub struct Credential {
    user: String,
    password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({}, …)", self.user)
    }
}

impl Credential {
    fn basic(&self) -> String {
        let pair = format!("{}:{}", self.user, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
    }
}

/// Who the relay is to each registry, and the headers that last worked.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// By registry (`host[:port]`).
    credentials: HashMap<String, Credential>,
    /// The file they came from, for messages.
    file: Option<PathBuf>,
    /// The last `Authorization` that worked, by registry.
    headers: Arc<Mutex<HashMap<String, String>>>,
}

impl Auth {
    /// The credentials in `path` (a Docker/Podman auth file).
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let failed = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| failed(&e))?;
        let file: serde_json::Value = serde_json::from_str(&text).map_err(|e| failed(&e))?;
        let mut credentials = HashMap::new();
        for (name, entry) in file["auths"].as_object().into_iter().flatten() {
            let credential = if let Some(encoded) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|e| failed(&format!("auths.{name}.auth: {e}")))?;
                let pair =
                    String::from_utf8(decoded).map_err(|e| failed(&format!("auths.{name}.auth: {e}")))?;
                let (user, password) = pair
                    .split_once(':')
                    .ok_or_else(|| failed(&format!("auths.{name}.auth: not base64 of USER:PASSWORD")))?;
                Credential { user: user.into(), password: password.into() }
            } else if let (Some(user), Some(password)) =
                (entry["username"].as_str(), entry["password"].as_str())
            {
                Credential { user: user.into(), password: password.into() }
            } else if entry["identitytoken"].is_string() {
                return Err(failed(&format!(
                    "auths.{name}: an identitytoken (OAuth refresh token) is not supported; give a user name and a password or access token"
                )));
            } else {
                // An entry a credential helper fills: nothing here to use.
                continue;
            };
            credentials.insert(registry_name(name), credential);
        }
        Ok(Self { credentials, file: Some(path.to_path_buf()), headers: Arc::default() })
    }

    /// The auth file a command uses without `--auth-file`: `$REGISTRY_AUTH_FILE`, then
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` when it exists.
    pub fn default_file() -> Option<PathBuf> {
        if let Some(file) = std::env::var_os("REGISTRY_AUTH_FILE") {
            return Some(PathBuf::from(file));
        }
        let docker = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker")))?;
        Some(docker.join("config.json")).filter(|file| file.exists())
    }

    fn credential(&self, registry: &str) -> Option<&Credential> {
        self.credentials.get(registry).or_else(|| {
            // Docker Hub's API host, under the name `docker login` files it.
            (registry == "registry-1.docker.io").then(|| self.credentials.get("docker.io")).flatten()
        })
    }

    /// `method url` to `registry`, answering its challenge once if it makes one.
    pub async fn send(
        &self,
        registry: &str,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        plain: bool,
    ) -> Result<Answer, String> {
        let known = self.headers.lock().map(|h| h.get(registry).cloned()).unwrap_or_default();
        let answer =
            http::request(method, url, &with_authorization(headers, known.as_deref()), body.clone(), plain)
                .await?;
        if answer.status != 401 {
            return Ok(answer);
        }
        let Some(challenge) = answer.header("www-authenticate").map(str::to_string) else {
            return Ok(answer);
        };
        let authorization =
            self.answer(registry, &challenge, plain).await.map_err(|e| format!("{url}: {e}"))?;
        let Some(authorization) = authorization else {
            return Err(format!("{url}: the registry asks for credentials, and {}", self.none_for(registry)));
        };
        let retried =
            http::request(method, url, &with_authorization(headers, Some(&authorization)), body, plain)
                .await?;
        if retried.status == 401 || retried.status == 403 {
            let who = match self.credential(registry) {
                Some(c) => format!("as {}", c.user),
                None => self.none_for(registry),
            };
            return Err(format!("{url}: the registry refused the request ({}) {who}", retried.status));
        }
        if let Ok(mut known) = self.headers.lock() {
            known.insert(registry.to_string(), authorization);
        }
        Ok(retried)
    }

    fn none_for(&self, registry: &str) -> String {
        match &self.file {
            Some(file) => format!("{} has none for {registry}", file.display()),
            None => format!("no auth file names {registry} ([oci] auth_file, --auth-file)"),
        }
    }

    /// The `Authorization` that answers `challenge`: `None` when it needs credentials the
    /// relay does not have.
    async fn answer(&self, registry: &str, challenge: &str, plain: bool) -> Result<Option<String>, String> {
        let (scheme, params) = parse_challenge(challenge);
        let credential = self.credential(registry);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Ok(credential.map(Credential::basic)),
            "bearer" => {
                let realm = params.get("realm").ok_or("a Bearer challenge without a realm")?;
                let realm_plain = realm.starts_with("http://");
                if realm_plain && !plain {
                    return Err(format!("the token service {realm} is plain HTTP for an HTTPS registry"));
                }
                let mut query = Vec::new();
                for key in ["service", "scope"] {
                    if let Some(value) = params.get(key) {
                        query.push(format!("{key}={}", crate::spool::filter::encode(value)));
                    }
                }
                let separator = if realm.contains('?') { '&' } else { '?' };
                let url = format!("{realm}{separator}{}", query.join("&"));
                let basic = credential.map(Credential::basic);
                let mut headers = vec![("accept", "application/json")];
                headers.extend(basic.as_deref().map(|value| ("authorization", value)));
                let answer = http::request("GET", &url, &headers, Vec::new(), realm_plain).await?;
                if answer.status == 401 || answer.status == 403 {
                    return match credential {
                        Some(c) => Err(format!("the token service {realm} refused {}", c.user)),
                        None => Ok(None),
                    };
                }
                if answer.status != 200 {
                    return Err(format!("the token service {realm} answered {}", answer.status));
                }
                let token: serde_json::Value = serde_json::from_slice(&answer.body)
                    .map_err(|e| format!("the token service {realm}: {e}"))?;
                let token = token["token"]
                    .as_str()
                    .or(token["access_token"].as_str())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| format!("the token service {realm} gave no token"))?;
                Ok(Some(format!("Bearer {token}")))
            }
            other => Err(format!("an authentication scheme this relay does not speak: {other}")),
        }
    }
}

/// `headers` and, when given, `Authorization: authorization`.
fn with_authorization<'a>(
    headers: &[(&'a str, &'a str)],
    authorization: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut all = headers.to_vec();
    all.extend(authorization.map(|value| ("authorization", value)));
    all
}

/// The registry an auth file's key names: `https://index.docker.io/v1/` is Docker Hub
/// (`docker.io`); a scheme and a path are left out.
fn registry_name(key: &str) -> String {
    let host = key.trim_start_matches("https://").trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    if host == "index.docker.io" { "docker.io".into() } else { host.to_string() }
}

/// `Bearer realm="…",service="…",scope="a,b"`: the scheme and its parameters (quoted values
/// may hold commas).
fn parse_challenge(text: &str) -> (String, HashMap<String, String>) {
    let text = text.trim();
    let (scheme, mut rest) = text.split_once(' ').unwrap_or((text, ""));
    let mut params = HashMap::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        let Some((key, after)) = rest.split_once('=') else { break };
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            after.split_once(',').unwrap_or((after, ""))
        };
        params.insert(key.trim().to_ascii_lowercase(), value.to_string());
        rest = remaining;
    }
    (scheme.to_string(), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_and_auth_file_keys() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(params["realm"], "https://auth.example/token");
        assert_eq!(params["service"], "registry.example");
        assert_eq!(params["scope"], "repository:a/b:pull,push");
        assert_eq!(parse_challenge("Basic realm=registry").1["realm"], "registry");
        assert_eq!(registry_name("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_name("registry.example:5000"), "registry.example:5000");
        assert_eq!(
            crate::spool::filter::encode("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }

    #[test]
    fn an_auth_file_as_docker_login_writes_it() {
        let dir = std::env::temp_dir().join(format!("sluice-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.json");
        std::fs::write(
            &file,
            r#"{"auths": {"ghcr.io": {"auth": "dXNlcjpzM2NyZXQ="}, "https://index.docker.io/v1/": {"username": "hub", "password": "pw"}, "helped.example": {}}, "credsStore": "desktop"}"#,
        )
        .unwrap();
        let auth = Auth::from_file(&file).unwrap();
        assert_eq!(auth.credential("ghcr.io").unwrap().basic(), "Basic dXNlcjpzM2NyZXQ=");
        assert_eq!(auth.credential("registry-1.docker.io").unwrap().user, "hub");
        assert!(auth.credential("helped.example").is_none());
        std::fs::write(&file, r#"{"auths": {"acr.example": {"identitytoken": "x"}}}"#).unwrap();
        assert!(Auth::from_file(&file).unwrap_err().contains("identitytoken"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
