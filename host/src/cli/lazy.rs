//! Subcommand arguments that clap builds only for the subcommand used.
//!
//! clap's derive builds every subcommand's arguments (their names, help
//! texts, value parsers) before it parses anything: ~0.35 ms of each
//! `wfhost` command's start, most of it for the 27 subcommands not asked
//! for. [`Lazy`] hands a subcommand's arguments to [`clap::Command::defer`],
//! so they are built when clap parses (or shows help for, or completes) that
//! subcommand only. Nothing else changes: the same arguments, help and
//! errors. A subcommand with subcommands of its own (`plugin`, `token`)
//! is not deferred (clap builds `wfhost help <command> <subcommand>` from
//! them before any deferred part would be); theirs are.

use clap::{ArgMatches, Args, Command, FromArgMatches};

/// `T`'s arguments, built when their subcommand is used.
#[derive(Debug, Clone)]
pub struct Lazy<T>(pub T);

impl<T: Args> Args for Lazy<T> {
    fn augment_args(cmd: Command) -> Command {
        cmd.defer(|cmd| keeping_about(cmd, T::augment_args))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        cmd.defer(|cmd| keeping_about(cmd, T::augment_args_for_update))
    }

    fn group_id() -> Option<clap::Id> {
        T::group_id()
    }
}

/// `augment(cmd)` with `cmd`'s description kept: the subcommand's own
/// (its variant's doc comment, set on it before the deferred arguments
/// are built), not that of its arguments' struct, as without deferring.
fn keeping_about(cmd: Command, augment: fn(Command) -> Command) -> Command {
    let about = cmd.get_about().cloned();
    let long_about = cmd.get_long_about().cloned();
    let cmd = augment(cmd);
    let cmd = match about {
        Some(about) => cmd.about(about),
        None => cmd.about(None::<&str>),
    };
    match long_about {
        Some(long_about) => cmd.long_about(long_about),
        None => cmd.long_about(None::<&str>),
    }
}

impl<T: FromArgMatches> FromArgMatches for Lazy<T> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(matches).map(Lazy)
    }

    fn from_arg_matches_mut(matches: &mut ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches_mut(matches).map(Lazy)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)
    }

    fn update_from_arg_matches_mut(&mut self, matches: &mut ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches_mut(matches)
    }
}

impl<T> std::ops::Deref for Lazy<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}
