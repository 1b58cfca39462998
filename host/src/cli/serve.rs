//! `wfhost serve` and `wfhost token create`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use super::Invalid;

/// Arguments of `wfhost serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback needs a bearer token on
    /// every request (`wfhost token create`).
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR:PORT")]
    bind: String,
    /// Require a bearer token on loopback too: without it, every user of
    /// this machine can use a loopback server (and start runs as you).
    #[arg(long)]
    require_token: bool,
    /// Where runs live, and the host config.
    #[command(flatten)]
    pub(crate) place: super::Place,
}

/// Arguments of `wfhost token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TokenCommand {
    /// Make a bearer token for `wfhost serve`: printed once, only its hash is kept.
    Create(super::lazy::Lazy<TokenCreateArgs>),
}

/// Arguments of `wfhost token create`.
#[derive(Debug, clap::Args)]
pub struct TokenCreateArgs {
    /// A name to remember it by.
    #[arg(long, default_value = "default")]
    name: String,
    /// Where runs live, and the host config.
    #[command(flatten)]
    pub(crate) place: super::Place,
}

/// The `--home`/`--config` of a `token` command.
pub(crate) fn token_place(args: &TokenArgs) -> Option<&super::Place> {
    match &args.command {
        TokenCommand::Create(create) => Some(&create.place),
    }
}

/// `wfhost serve`.
pub fn serve(home: &Path, config: Option<&Path>, args: ServeArgs) -> Result<ExitCode> {
    let bind: SocketAddr = args.bind.parse().map_err(|_| {
        Invalid(format!(
            "--bind '{}': expected ADDRESS:PORT, e.g. 127.0.0.1:7070",
            args.bind
        ))
    })?;
    crate::server::serve(crate::server::ServeOptions {
        home: home.to_path_buf(),
        config: config.map(Path::to_path_buf),
        bind,
        require_token: args.require_token,
        store: super::store_url().map(str::to_string),
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `wfhost token create`.
pub fn token(home: &Path, args: TokenArgs) -> Result<ExitCode> {
    let TokenCommand::Create(super::lazy::Lazy(create)) = args.command;
    let name = create.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(
            Invalid("--name: give 1 to 100 characters without control characters".into()).into(),
        );
    }
    let store = super::create_store(home)?;
    let token = crate::server::new_token();
    store.add_token(name, &crate::server::token_hash(&token))?;
    super::say::out_line(&token);
    eprintln!(
        "token '{name}' created: it is shown only now (the home keeps its hash); send it as `Authorization: Bearer <token>`"
    );
    Ok(ExitCode::SUCCESS)
}
