//! Command implementations: each parses nothing (clap did), calls the engine, and prints.

mod containerfs;
mod containers;
mod images;
mod lifecycle;
mod monitor;
mod serve;
mod system;
mod volumes;

use std::io::{BufRead, Write};

use anyhow::Result;

use carrel_engine::{Engine, EngineOptions};

use crate::cli::{
    Cli, Command, ContainerCommand, GlobalOptions, ImageCommand, SystemCommand, VolumeCommand,
};

/// An explicit exit status for a command that already printed its errors.
#[derive(Debug)]
pub struct ExitStatus(pub u8);

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for ExitStatus {}

/// The engine options the global options name.
pub fn engine_options(global: &GlobalOptions) -> EngineOptions {
    EngineOptions {
        root: global.root.clone(),
        storage_driver: global.storage_driver.clone(),
    }
}

/// Open the engine named by the global options.
pub fn open(global: &GlobalOptions) -> Result<Engine> {
    Ok(Engine::open(&engine_options(global))?)
}

/// Run a parsed command line; the value is the process exit status.
pub fn run(cli: Cli) -> Result<u8> {
    let g = &cli.global;
    match cli.command {
        Command::Version => system::version(),
        Command::Images(a) => images::list(&open(g)?, &a),
        Command::Image(c) => match c {
            ImageCommand::Ls(a) => images::list(&open(g)?, &a),
            ImageCommand::Inspect(a) => images::inspect(&open(g)?, &a),
            ImageCommand::Rm(a) => images::remove(&open(g)?, &a),
            ImageCommand::Tag(a) => images::tag(&open(g)?, &a),
            ImageCommand::History(a) => images::history(&open(g)?, &a),
            ImageCommand::Prune(a) => images::prune(&open(g)?, &a),
            ImageCommand::Load(a) => images::load(&open(g)?, &a),
            ImageCommand::Save(a) => images::save(&open(g)?, &a),
            ImageCommand::Import(a) => images::import(&open(g)?, &a),
            ImageCommand::ImportBusybox(a) => images::import_busybox(&open(g)?, &a),
        },
        Command::Load(a) => images::load(&open(g)?, &a),
        Command::Save(a) => images::save(&open(g)?, &a),
        Command::Import(a) => images::import(&open(g)?, &a),
        Command::Tag(a) => images::tag(&open(g)?, &a),
        Command::Rmi(a) => images::remove(&open(g)?, &a),
        Command::History(a) => images::history(&open(g)?, &a),
        Command::Inspect(a) => images::inspect_objects(&open(g)?, &a, None),
        Command::Create(a) => containers::create(&open(g)?, &a),
        Command::Ps(a) => containers::ps(&open(g)?, &a),
        Command::Rm(a) => containers::rm(&open(g)?, &a),
        Command::Rename(a) => containers::rename(&open(g)?, &a),
        Command::Run(a) => lifecycle::run(g, &a),
        Command::Start(a) => lifecycle::start(&open(g)?, &a),
        Command::Stop(a) => lifecycle::stop(&open(g)?, &a),
        Command::Kill(a) => lifecycle::kill(&open(g)?, &a),
        Command::Restart(a) => lifecycle::restart(&open(g)?, &a),
        Command::Wait(a) => lifecycle::wait(&open(g)?, &a),
        Command::Logs(a) => lifecycle::logs(&open(g)?, &a),
        Command::Attach(a) => lifecycle::attach(&open(g)?, &a),
        Command::Exec(a) => lifecycle::exec(&open(g)?, &a),
        Command::Container(c) => match c {
            ContainerCommand::Create(a) => containers::create(&open(g)?, &a),
            ContainerCommand::Run(a) => lifecycle::run(g, &a),
            ContainerCommand::Start(a) => lifecycle::start(&open(g)?, &a),
            ContainerCommand::Stop(a) => lifecycle::stop(&open(g)?, &a),
            ContainerCommand::Kill(a) => lifecycle::kill(&open(g)?, &a),
            ContainerCommand::Restart(a) => lifecycle::restart(&open(g)?, &a),
            ContainerCommand::Wait(a) => lifecycle::wait(&open(g)?, &a),
            ContainerCommand::Logs(a) => lifecycle::logs(&open(g)?, &a),
            ContainerCommand::Attach(a) => lifecycle::attach(&open(g)?, &a),
            ContainerCommand::Exec(a) => lifecycle::exec(&open(g)?, &a),
            ContainerCommand::Ls(a) => containers::ps(&open(g)?, &a),
            ContainerCommand::Inspect(a) => containers::inspect(&open(g)?, &a),
            ContainerCommand::Rm(a) => containers::rm(&open(g)?, &a),
            ContainerCommand::Rename(a) => containers::rename(&open(g)?, &a),
            ContainerCommand::Prune(a) => containers::prune(&open(g)?, &a),
            ContainerCommand::Diff(a) => containerfs::diff(&open(g)?, &a),
            ContainerCommand::Commit(a) => containerfs::commit(&open(g)?, &a),
            ContainerCommand::Export(a) => containerfs::export(g, &a),
            ContainerCommand::Cp(a) => containerfs::cp(&open(g)?, &a),
        },
        Command::Diff(a) => containerfs::diff(&open(g)?, &a),
        Command::Commit(a) => containerfs::commit(&open(g)?, &a),
        Command::Export(a) => containerfs::export(g, &a),
        Command::Cp(a) => containerfs::cp(&open(g)?, &a),
        Command::ContainerMonitor(a) => monitor::run(g, &a),
        Command::Serve(a) => serve::run(open(g)?, &a),
        Command::Info(a) => system::info(&open(g)?, &a),
        Command::System(c) => match c {
            SystemCommand::Info(a) => system::info(&open(g)?, &a),
            SystemCommand::Check(a) => system::check(&open(g)?, &a),
            SystemCommand::Df(a) => system::df(&open(g)?, &a),
            SystemCommand::Prune(a) => system::prune(&open(g)?, &a),
        },
        Command::Volume(c) => match c {
            VolumeCommand::Create(a) => volumes::create(&open(g)?, &a),
            VolumeCommand::Ls(a) => volumes::list(&open(g)?, &a),
            VolumeCommand::Inspect(a) => volumes::inspect(&open(g)?, &a),
            VolumeCommand::Rm(a) => volumes::remove(&open(g)?, &a),
            VolumeCommand::Prune(a) => volumes::prune(&open(g)?, &a),
            VolumeCommand::Export(a) => volumes::export(&open(g)?, &a),
            VolumeCommand::Import(a) => volumes::import(&open(g)?, &a),
        },
    }
}

/// Ask `question [y/N]` as Docker does (prompt on stdout, answer on stdin); anything but `y` or
/// `yes` is no.
pub fn confirm(question: &str) -> bool {
    print!("{question} [y/N] ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}
