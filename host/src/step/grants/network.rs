//! The `network` grant: hosts (and ports) a step may connect to: `host`,
//! `host:port`, `*.domain[:port]`, `*`.
//!
//! - Without a `network` grant a step gets no socket at all: creating one
//!   fails (`access-denied`) and the refusal is logged with the grant to add
//!   ([`NetworkPolicy`]); its started programs run in an empty network
//!   namespace.
//! - With a grant, sockets may reach only the addresses the grant names, at
//!   most [`MAX_STEP_SOCKETS`] are open at once, and a name lookup succeeds
//!   only for a name some grant covers (DNS follows the grant: a step cannot
//!   send data out through the names it asks the resolver about).
//!
//! Every refusal is logged to the step with the grant line (or the budget)
//! that explains it. The runtime links the checked WASI functions
//! (`runtime::network`), which ask [`NetworkPolicy`].

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmtime_wasi::p2::bindings::sockets::network::ErrorCode;
use wasmtime_wasi::sockets::SocketAddrUse;

use serde_json::Value;

use super::{
    none_if_empty, CapabilityUnit, Caps, CeilingSpec, Grants, NetworkAccess, PathAccess,
    ResolveContext, ResolvedGrants, SandboxPlan, WasiFuture, WasiSetup,
};
use crate::step::executor::{LogLevel, StepObserver};

/// One `network` grant line: `host`, `host:port`, `*.domain[:port]`, `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkGrant {
    /// Host name, IP address, `*.suffix` or `*`.
    pub host: String,
    /// Port, or any port when absent.
    pub port: Option<u16>,
}

impl NetworkGrant {
    /// Parse `host[:port]` (IPv6 literals in brackets: `[::1]:80`).
    pub fn parse(text: &str) -> Result<NetworkGrant, String> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("'{text}': missing ']'"))?;
            (host.to_string(), after.strip_prefix(':'))
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') => (host.to_string(), Some(port)),
                _ => (text.to_string(), None),
            }
        };
        if host.is_empty() || host.contains('/') || host.contains(' ') {
            return Err(format!("'{text}' is not host[:port]"));
        }
        let wildcard_ok = host == "*"
            || host
                .strip_prefix("*.")
                .is_some_and(|rest| !rest.contains('*'));
        if host.contains('*') && !wildcard_ok {
            return Err(format!(
                "'{text}': a wildcard must be '*' or lead the name, as in '*.example.com'"
            ));
        }
        let port = match port {
            None => None,
            Some("*") => None,
            Some(port) => Some(
                port.parse::<u16>()
                    .map_err(|_| format!("'{text}': bad port '{port}'"))?,
            ),
        };
        Ok(NetworkGrant {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// Whether this grant allows connecting to `host` (a name or an IP
    /// literal) on `port`.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.port.is_none_or(|p| p == port) && host_matches(&self.host, &host.to_ascii_lowercase())
    }

    /// Whether this grant lets a step look up the host name `name` (any
    /// port): DNS follows the grant.
    pub fn allows_name(&self, name: &str) -> bool {
        host_matches(&self.host, &name.to_ascii_lowercase())
    }

    /// Whether this grant (a ceiling line) covers everything `other` grants.
    pub fn covers(&self, other: &NetworkGrant) -> bool {
        let port_ok = match (self.port, other.port) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
        };
        port_ok && host_matches(&self.host, &other.host)
    }
}

impl std::fmt::Display for NetworkGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) if self.host.contains(':') => write!(f, "[{}]:{port}", self.host),
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" || pattern == host {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|head| head.ends_with('.')),
        None => false,
    }
}

/// What name resolution and TLS need, readable by started programs when
/// the step may use the network.
const NETWORK_FILES: &[&str] = &[
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
];
const NETWORK_DIRS: &[&str] = &["/etc/ssl", "/etc/ca-certificates", "/etc/pki"];

/// The `network` capability unit.
pub(super) struct Network;

impl CapabilityUnit for Network {
    /// Each line parsed as `host[:port]`.
    fn resolve(
        &self,
        spec: &Grants,
        _cx: &ResolveContext<'_>,
        into: &mut ResolvedGrants,
        problems: &mut Vec<String>,
    ) {
        for line in &spec.network {
            match NetworkGrant::parse(line) {
                Ok(grant) => into.network.push(grant),
                Err(error) => problems.push(format!("network grant {error}")),
            }
        }
    }

    /// The ceiling's lines, parsed like grants.
    fn load_cap(&self, spec: &CeilingSpec, _base: &Path, into: &mut Caps) -> Result<(), String> {
        into.network = spec
            .network
            .as_ref()
            .map(|lines| {
                lines
                    .iter()
                    .map(|l| NetworkGrant::parse(l))
                    .collect::<Result<_, _>>()
            })
            .transpose()
            .map_err(|e| format!("network: {e}"))?;
        Ok(())
    }

    /// A grant is within the ceiling when one ceiling line covers it.
    fn check_cap(
        &self,
        caps: &Caps,
        source: &str,
        grants: &ResolvedGrants,
        _timeout: Duration,
        problems: &mut Vec<String>,
    ) {
        for grant in &grants.network {
            problems.extend(cap_problem(
                caps,
                source,
                grant,
                &format!("network grant '{grant}'"),
            ));
        }
    }

    /// Without a grant TCP, UDP and name lookup are off; otherwise every
    /// address is checked against the grants' addresses (resolved now).
    fn configure_wasi<'a>(
        &'a self,
        grants: &'a ResolvedGrants,
        wasi: &'a mut WasiSetup<'_>,
    ) -> WasiFuture<'a> {
        Box::pin(async move {
            configure(wasi, &grants.network).await;
            Ok(())
        })
    }

    /// Programs of a networked step may read the resolver's and TLS's
    /// files, keep the host's network and connect to the granted ports.
    fn sandbox(&self, grants: &ResolvedGrants, plan: &mut SandboxPlan) {
        if grants.network.is_empty() {
            plan.network = NetworkAccess::None;
            return;
        }
        for path in NETWORK_FILES.iter().chain(NETWORK_DIRS) {
            plan.paths.push((PathBuf::from(path), PathAccess::Read));
        }
        plan.network = if grants.network.iter().all(|g| g.port.is_some()) {
            let mut ports: Vec<u16> = grants.network.iter().filter_map(|g| g.port).collect();
            ports.sort_unstable();
            ports.dedup();
            NetworkAccess::Ports(ports)
        } else {
            NetworkAccess::AnyPort
        };
    }

    fn describe(&self, grants: &ResolvedGrants, out: &mut serde_json::Map<String, Value>) {
        let network = grants.network.iter().map(|g| Value::String(g.to_string()));
        out.insert("network".into(), network.collect());
    }

    fn summarize(&self, grants: &ResolvedGrants, parts: &mut Vec<String>) {
        let network: Vec<String> = grants.network.iter().map(ToString::to_string).collect();
        if !network.is_empty() {
            parts.push(format!("network: {}", network.join(", ")));
        }
    }
}

/// Why connecting as `grant` allows (described as `what`) exceeds the
/// ceiling's `network` caps, if it does.
pub(crate) fn cap_problem(
    caps: &Caps,
    source: &str,
    grant: &NetworkGrant,
    what: &str,
) -> Option<String> {
    let allowed = caps.network.as_ref()?;
    (!allowed.iter().any(|ceiling| ceiling.covers(grant))).then(|| {
        let lines: Vec<String> = allowed.iter().map(ToString::to_string).collect();
        format!(
            "{what} exceeds the operator ceiling in {source} (ceiling network: {})",
            none_if_empty(&lines)
        )
    })
}

/// The check an agent's `http_get` of `url` (to `host`, `port`) makes
/// against the `network` grants; the error names the grant to add.
pub fn tool_check(grants: &ResolvedGrants, url: &str, host: &str, port: u16) -> Result<(), String> {
    if grants.network.iter().any(|g| g.allows(host, port)) {
        return Ok(());
    }
    let shown = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Err(format!(
        "http_get of '{url}' denied: no network grant covers {shown} (add grants: {{ network: [\"{shown}\"] }})"
    ))
}

/// Most sockets (TCP and UDP, listening, connected or accepted) one step
/// attempt may hold open at once.
pub const MAX_STEP_SOCKETS: usize = 64;

/// What a step's sockets may do: its network grants, and where refusals go.
pub struct NetworkPolicy {
    grants: Vec<NetworkGrant>,
    observer: Arc<dyn StepObserver>,
}

impl NetworkPolicy {
    /// The policy of a step with these grants.
    pub fn new(grants: &[NetworkGrant], observer: Arc<dyn StepObserver>) -> NetworkPolicy {
        NetworkPolicy {
            grants: grants.to_vec(),
            observer,
        }
    }

    /// Whether a socket may be created now (`open`: sockets already held);
    /// a refusal is logged.
    pub fn may_create(&self, open: usize) -> Result<(), ErrorCode> {
        if self.grants.is_empty() {
            self.observer.log(LogLevel::Warn, NO_GRANT);
            return Err(ErrorCode::AccessDenied);
        }
        if open >= MAX_STEP_SOCKETS {
            self.observer.log(
                LogLevel::Warn,
                &format!(
                    "network access denied: the step already holds {open} sockets, its budget of \
                     {MAX_STEP_SOCKETS} open sockets per step (close sockets it no longer uses)"
                ),
            );
            return Err(ErrorCode::NewSocketLimit);
        }
        Ok(())
    }

    /// Whether `name` may be looked up: an IP literal (no query is sent) or
    /// a plain host name some grant covers. A refusal is logged.
    pub fn may_resolve(&self, name: &str) -> bool {
        if self.grants.is_empty() {
            self.observer.log(LogLevel::Warn, NO_GRANT);
            return false;
        }
        if is_ip_literal(name) {
            return true;
        }
        // Only letters, digits, '-', '_' and '.' are compared with the
        // grants: anything else (percent escapes, unicode) could be read
        // differently by the resolver than by the check.
        let plain = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if plain && self.grants.iter().any(|grant| grant.allows_name(name)) {
            return true;
        }
        let shown: String = name
            .chars()
            .take(256)
            .collect::<String>()
            .escape_debug()
            .to_string();
        self.observer.log(
            LogLevel::Warn,
            &format!(
                "network access denied: resolving '{shown}': no network grant names it (add grants: {{ network: [\"{shown}:PORT\"] }})"
            ),
        );
        false
    }
}

const NO_GRANT: &str =
    "network access denied: the step has no network grant (add grants: { network: [\"host:port\"] })";

fn is_ip_literal(name: &str) -> bool {
    let bare = name
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(name);
    bare.parse::<IpAddr>().is_ok()
}

/// Resolve the grants' host names to addresses (wildcard patterns cannot
/// be resolved ahead and do not open raw sockets).
async fn addresses(grants: &[NetworkGrant]) -> Vec<Allowed> {
    let mut allowed = Vec::new();
    for grant in grants {
        if grant.host.contains('*') {
            continue;
        }
        if let Ok(ip) = grant.host.parse::<IpAddr>() {
            allowed.push(Allowed {
                ip,
                port: grant.port,
            });
            continue;
        }
        allowed.extend(
            resolved(&grant.host, grant.port.unwrap_or(0))
                .await
                .into_iter()
                .map(|ip| Allowed {
                    ip,
                    port: grant.port,
                }),
        );
    }
    allowed
}

/// How long a name's addresses are reused by the steps that start after
/// its lookup (an empty answer: a fifth of it).
const RESOLVED_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// The addresses of `host`, looked up at most once per [`RESOLVED_FOR`] in
/// this process: a fan-out of steps with the same grant would otherwise
/// send the resolver one query per step at once (200 parallel lookups
/// here drew 5-second resolver timeouts, 180 ms per step on average).
async fn resolved(host: &str, port: u16) -> Vec<IpAddr> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Instant;
    type Cache = Mutex<HashMap<(String, u16), (Instant, Vec<IpAddr>)>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (host.to_string(), port);
    if let Some((at, ips)) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        let fresh_for = if ips.is_empty() {
            RESOLVED_FOR / 5
        } else {
            RESOLVED_FOR
        };
        if at.elapsed() < fresh_for {
            return ips.clone();
        }
    }
    let ips: Vec<IpAddr> = match tokio::net::lookup_host((host, port)).await {
        Ok(found) => found.map(|addr| addr.ip()).collect(),
        Err(_) => Vec::new(),
    };
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, (Instant::now(), ips.clone()));
    ips
}

/// An address a guest may use, with the port its grant allows.
#[derive(Debug, Clone)]
struct Allowed {
    ip: IpAddr,
    port: Option<u16>,
}

/// Configure WASI sockets for a step: without a network grant TCP, UDP and
/// name lookup are off; otherwise every address is checked against the
/// grants. Every refusal is logged with the missing grant.
async fn configure(wasi: &mut WasiSetup<'_>, grants: &[NetworkGrant]) {
    let any_grant = !grants.is_empty();
    wasi.builder
        .allow_tcp(any_grant)
        .allow_udp(any_grant)
        .allow_ip_name_lookup(any_grant);
    if !any_grant {
        wasi.builder
            .socket_addr_check(|_, _| Box::pin(async { false }));
        return;
    }
    let allowed = Arc::new(addresses(grants).await);
    let observer = wasi.observer.clone();
    wasi.builder.socket_addr_check(move |addr, use_| {
        let allowed = allowed.clone();
        let observer = observer.clone();
        Box::pin(async move {
            let ok = match use_ {
                // Clients bind an ephemeral port before connecting.
                SocketAddrUse::TcpBind | SocketAddrUse::UdpBind if addr.port() == 0 => true,
                _ => allowed
                    .iter()
                    .any(|a| a.ip == addr.ip() && a.port.is_none_or(|p| p == addr.port())),
            };
            if !ok {
                deny(&*observer, addr, use_);
            }
            ok
        })
    });
}

fn deny(observer: &dyn StepObserver, addr: SocketAddr, use_: SocketAddrUse) {
    let what = match use_ {
        SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => "binding",
        _ => "connecting to",
    };
    observer.log(
        LogLevel::Warn,
        &format!("network access denied: {what} {addr}: no network grant covers it (add grants: {{ network: [\"{addr}\"] }})"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_grants_parse_and_match() {
        let exact = NetworkGrant::parse("api.github.com:443").unwrap();
        assert!(exact.allows("api.github.com", 443));
        assert!(exact.allows("API.github.com", 443));
        assert!(!exact.allows("api.github.com", 80));
        assert!(!exact.allows("github.com", 443));
        let wild = NetworkGrant::parse("*.example.com").unwrap();
        assert!(wild.allows("a.example.com", 1) && wild.allows("a.b.example.com", 2));
        assert!(!wild.allows("example.com", 1) && !wild.allows("badexample.com", 1));
        let v6 = NetworkGrant::parse("[::1]:8080").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", Some(8080)));
        assert_eq!(v6.to_string(), "[::1]:8080");
        assert!(NetworkGrant::parse("a.*.com").is_err());
        assert!(NetworkGrant::parse("host:http")
            .unwrap_err()
            .contains("bad port"));
        assert!(NetworkGrant::parse("http://x").is_err());
    }

    #[test]
    fn ceiling_lines_cover_narrower_grants() {
        let ceiling = NetworkGrant::parse("*.github.com").unwrap();
        assert!(ceiling.covers(&NetworkGrant::parse("api.github.com:443").unwrap()));
        assert!(!ceiling.covers(&NetworkGrant::parse("github.io").unwrap()));
        let port = NetworkGrant::parse("127.0.0.1:80").unwrap();
        assert!(
            !port.covers(&NetworkGrant::parse("127.0.0.1").unwrap()),
            "any port exceeds one port"
        );
    }

    fn plan(lines: &[&str]) -> SandboxPlan {
        let grants = ResolvedGrants {
            network: lines
                .iter()
                .map(|l| NetworkGrant::parse(l).unwrap())
                .collect(),
            ..ResolvedGrants::default()
        };
        let mut plan = SandboxPlan::default();
        Network.sandbox(&grants, &mut plan);
        plan
    }

    #[test]
    fn started_programs_get_the_granted_ports_only() {
        let none = plan(&[]);
        assert_eq!(none.network, NetworkAccess::None);
        assert!(none.paths.is_empty(), "no resolver files without a grant");
        let ports = plan(&["a.example:443", "b.example:80", "c.example:443"]);
        assert_eq!(ports.network, NetworkAccess::Ports(vec![80, 443]));
        assert!(ports
            .paths
            .contains(&(PathBuf::from("/etc/resolv.conf"), PathAccess::Read)));
        assert_eq!(
            plan(&["a.example:443", "*.b.example"]).network,
            NetworkAccess::AnyPort
        );
    }

    #[test]
    fn http_get_is_checked_against_host_and_port() {
        let grants = ResolvedGrants {
            network: vec![NetworkGrant::parse("*.example.com:443").unwrap()],
            ..ResolvedGrants::default()
        };
        assert!(tool_check(&grants, "https://a.example.com/", "a.example.com", 443).is_ok());
        let error = tool_check(&grants, "http://a.example.com/", "a.example.com", 80).unwrap_err();
        assert_eq!(
            error,
            "http_get of 'http://a.example.com/' denied: no network grant covers a.example.com:80 (add grants: { network: [\"a.example.com:80\"] })"
        );
        let error = tool_check(&grants, "http://[::1]/", "::1", 80).unwrap_err();
        assert!(error.contains("covers [::1]:80"), "{error}");
    }
}
