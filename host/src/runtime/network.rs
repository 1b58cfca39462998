//! Network grants for wasm guests.
//!
//! - Without a `network` grant a step gets no socket at all: creating one
//!   fails (`access-denied`) and the refusal is logged with the grant to add.
//! - With a grant, sockets may reach only the addresses the grant names, at
//!   most [`MAX_STEP_SOCKETS`] are open at once, and a name lookup succeeds
//!   only for a name some grant covers (DNS follows the grant: a step cannot
//!   send data out through the names it asks the resolver about).
//!
//! Every refusal is logged to the step with the grant line (or the budget)
//! that explains it. The three WASI functions involved (`create-tcp-socket`,
//! `create-udp-socket`, `resolve-addresses`) are linked by [`add_to_linker`]
//! in place of wasmtime-wasi's, which they call once the checks pass.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{
    self, HostResolveAddressStream, ResolveAddressStream,
};
use wasmtime_wasi::p2::bindings::sockets::network::{
    self, ErrorCode, IpAddress, IpAddressFamily, Network,
};
use wasmtime_wasi::p2::bindings::sockets::{tcp_create_socket, udp_create_socket};
use wasmtime_wasi::p2::{DynPollable, SocketError, SocketResult, TcpSocket, UdpSocket};
use wasmtime_wasi::sockets::{SocketAddrUse, WasiSocketsCtxView};
use wasmtime_wasi::WasiCtxBuilder;

use super::state::StepState;
use crate::step::executor::{LogLevel, StepObserver};
use crate::step::grants::NetworkGrant;

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
    fn may_create(&self, open: usize) -> Result<(), ErrorCode> {
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
    fn may_resolve(&self, name: &str) -> bool {
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

/// An address a guest may use, with the port its grant allows.
#[derive(Debug, Clone)]
struct Allowed {
    ip: IpAddr,
    port: Option<u16>,
}

/// Configure WASI sockets for a step: without a network grant TCP, UDP and
/// name lookup are off; otherwise every address is checked against the
/// grants. Every refusal is logged with the missing grant.
pub async fn configure(
    builder: &mut WasiCtxBuilder,
    grants: &[NetworkGrant],
    observer: Arc<dyn StepObserver>,
) {
    let any_grant = !grants.is_empty();
    builder
        .allow_tcp(any_grant)
        .allow_udp(any_grant)
        .allow_ip_name_lookup(any_grant);
    if !any_grant {
        builder.socket_addr_check(|_, _| Box::pin(async { false }));
        return;
    }
    let allowed = Arc::new(resolve(grants).await);
    builder.socket_addr_check(move |addr, use_| {
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

/// Link the checked socket-creation and name-lookup functions over
/// wasmtime-wasi's (which must already be in `linker`).
pub fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    tcp_create_socket::add_to_linker::<StepState, CheckedSockets>(linker, checked)?;
    udp_create_socket::add_to_linker::<StepState, CheckedSockets>(linker, checked)?;
    ip_name_lookup::add_to_linker::<StepState, CheckedSockets>(linker, checked)?;
    linker.allow_shadowing(false);
    Ok(())
}

fn checked(state: &mut StepState) -> Checked<'_> {
    Checked {
        inner: WasiSocketsCtxView {
            ctx: state.wasi.sockets(),
            table: &mut state.table,
        },
        policy: &state.network,
    }
}

/// [`HasData`] for the checked functions.
struct CheckedSockets;

impl HasData for CheckedSockets {
    type Data<'a> = Checked<'a>;
}

/// wasmtime-wasi's sockets view plus the step's policy.
struct Checked<'a> {
    inner: WasiSocketsCtxView<'a>,
    policy: &'a NetworkPolicy,
}

impl Checked<'_> {
    /// Sockets the step holds now.
    fn open_sockets(&mut self) -> usize {
        self.inner
            .table
            .iter_mut()
            .filter(|entry| entry.is::<TcpSocket>() || entry.is::<UdpSocket>())
            .count()
    }
}

// The socket interfaces `use` `wasi:sockets/network`; its functions are
// linked by wasmtime-wasi, these impls only satisfy the trait bounds.
impl network::Host for Checked<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        network::Host::convert_error_code(&mut self.inner, error)
    }

    fn network_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        network::Host::network_error_code(&mut self.inner, err)
    }
}

impl network::HostNetwork for Checked<'_> {
    fn drop(&mut self, this: Resource<Network>) -> wasmtime::Result<()> {
        network::HostNetwork::drop(&mut self.inner, this)
    }
}

impl tcp_create_socket::Host for Checked<'_> {
    fn create_tcp_socket(
        &mut self,
        address_family: IpAddressFamily,
    ) -> SocketResult<Resource<TcpSocket>> {
        let open = self.open_sockets();
        self.policy.may_create(open)?;
        tcp_create_socket::Host::create_tcp_socket(&mut self.inner, address_family)
    }
}

impl udp_create_socket::Host for Checked<'_> {
    async fn create_udp_socket(
        &mut self,
        address_family: IpAddressFamily,
    ) -> SocketResult<Resource<UdpSocket>> {
        let open = self.open_sockets();
        self.policy.may_create(open)?;
        udp_create_socket::Host::create_udp_socket(&mut self.inner, address_family).await
    }
}

impl ip_name_lookup::Host for Checked<'_> {
    fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> SocketResult<Resource<ResolveAddressStream>> {
        if !self.policy.may_resolve(&name) {
            return Err(ErrorCode::AccessDenied.into());
        }
        ip_name_lookup::Host::resolve_addresses(&mut self.inner, network, name)
    }
}

impl HostResolveAddressStream for Checked<'_> {
    fn resolve_next_address(
        &mut self,
        resource: Resource<ResolveAddressStream>,
    ) -> SocketResult<Option<IpAddress>> {
        HostResolveAddressStream::resolve_next_address(&mut self.inner, resource)
    }

    fn subscribe(
        &mut self,
        resource: Resource<ResolveAddressStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        HostResolveAddressStream::subscribe(&mut self.inner, resource)
    }

    fn drop(&mut self, resource: Resource<ResolveAddressStream>) -> wasmtime::Result<()> {
        HostResolveAddressStream::drop(&mut self.inner, resource)
    }
}
