//! `chinwag`: the chinwag WebSocket server and its tools.

mod client;
mod echo;
mod runtime;

use clap::{Parser, Subcommand};
use runtime::RuntimeKind;
use std::net::SocketAddr;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "chinwag", version, about = "chinwag: a WebSocket stack and chat server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to listen on (when no subcommand is given).
    #[arg(long, default_value = "127.0.0.1:9090")]
    addr: SocketAddr,
    /// Runtime to run on.
    #[arg(long, value_enum, default_value = "tokio", global = true)]
    runtime: RuntimeKind,
}

#[derive(Subcommand)]
enum Command {
    /// Echo every text and binary message back (messages up to 64 MiB).
    Echo {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9001")]
        addr: SocketAddr,
    },
    /// Connect to a WebSocket URL: send lines from standard input, print messages.
    Client {
        /// The ws:// URL.
        url: String,
        /// Act as the client of an Autobahn fuzzing server at URL (ws://host:port):
        /// run every case, echoing, then ask for the report.
        #[arg(long)]
        autobahn: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = cli.runtime;
    let result = match cli.command {
        // Until the chat server lands, the default is the echo server.
        None => rt.run(echo::EchoServer(cli.addr)),
        Some(Command::Echo { addr }) => rt.run(echo::EchoServer(addr)),
        Some(Command::Client { url, autobahn: true }) => rt.run(client::Autobahn(url)),
        Some(Command::Client { url, autobahn: false }) => rt.run(client::Interactive(url)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chinwag: {e}");
            ExitCode::FAILURE
        }
    }
}
