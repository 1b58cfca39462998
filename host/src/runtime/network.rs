//! The checked WASI socket functions: `create-tcp-socket`,
//! `create-udp-socket` and `resolve-addresses` are linked by
//! [`add_to_linker`] in place of wasmtime-wasi's, which they call once the
//! step's [`NetworkPolicy`] (the `network` grant's unit,
//! [`crate::step::grants::network`]) allows them. Addresses are checked by
//! the socket address check that unit installs in the WASI context.

use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{
    self, HostResolveAddressStream, ResolveAddressStream,
};
use wasmtime_wasi::p2::bindings::sockets::network::{
    self, ErrorCode, IpAddress, IpAddressFamily, Network,
};
use wasmtime_wasi::p2::bindings::sockets::{tcp_create_socket, udp_create_socket};
use wasmtime_wasi::p2::{DynPollable, SocketError, SocketResult, TcpSocket, UdpSocket};
use wasmtime_wasi::sockets::WasiSocketsCtxView;

use super::state::StepState;
use crate::step::grants::network::NetworkPolicy;

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
