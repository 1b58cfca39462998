//! Network grants for wasm guests: WASI sockets may reach only the
//! addresses the step's `network` grant names; every refusal is logged to
//! the step with the grant line that would allow it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::WasiCtxBuilder;

use crate::engine::executor::{LogLevel, StepObserver};
use crate::engine::grants::NetworkGrant;

/// An address a guest may use, with the grant it came from.
#[derive(Debug, Clone)]
struct Allowed {
    ip: IpAddr,
    port: Option<u16>,
}

/// Resolve the grants' host names to addresses (wildcard patterns cannot
/// be resolved ahead and do not open raw sockets).
async fn resolve(grants: &[NetworkGrant]) -> Vec<Allowed> {
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
        if let Ok(found) =
            tokio::net::lookup_host((grant.host.as_str(), grant.port.unwrap_or(0))).await
        {
            allowed.extend(found.map(|addr| Allowed {
                ip: addr.ip(),
                port: grant.port,
            }));
        }
    }
    allowed
}

/// Configure WASI sockets for a step: without a network grant no address
/// is reachable (and name lookup is off); otherwise TCP/UDP and name lookup,
/// checked per address. Every refusal is logged with the missing grant.
pub async fn configure(
    builder: &mut WasiCtxBuilder,
    grants: &[NetworkGrant],
    observer: Arc<dyn StepObserver>,
) {
    // Sockets may always be created: refusing them outright would leave
    // the step without an explanation. The address check refuses every
    // address no grant covers, and logs it.
    let allowed = Arc::new(resolve(grants).await);
    let any_grant = !grants.is_empty();
    builder
        .allow_tcp(true)
        .allow_udp(true)
        .allow_ip_name_lookup(!grants.is_empty());
    builder.socket_addr_check(move |addr, use_| {
        let allowed = allowed.clone();
        let observer = observer.clone();
        Box::pin(async move {
            let ok = match use_ {
                // Clients bind an ephemeral port before connecting; without
                // any grant even that is refused, so nothing can listen.
                SocketAddrUse::TcpBind | SocketAddrUse::UdpBind if addr.port() == 0 => any_grant,
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
    if addr.port() == 0 && matches!(use_, SocketAddrUse::TcpBind | SocketAddrUse::UdpBind) {
        observer.log(
            LogLevel::Warn,
            "network access denied: the step has no network grant (add grants: { network: [\"host:port\"] })",
        );
        return;
    }
    let what = match use_ {
        SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => "binding",
        _ => "connecting to",
    };
    observer.log(
        LogLevel::Warn,
        &format!("network access denied: {what} {addr}: no network grant covers it (add grants: {{ network: [\"{addr}\"] }})"),
    );
}
