//! `chinwag`: the chinwag WebSocket server and its tools.

use chinwag::ops::{AdminAddr, DEFAULT_ADMIN_ADDR, OpsArgs, init_logging, on_signals, on_termination, start_admin};
use chinwag::{client, echo, runtime};
use chinwag_core::Config;
use chinwag_core::deflate::DeflateConfig;
use chinwag_core::handshake::{Cidr, OriginPolicy};
use chinwag_core::limit::RateLimit;
use chinwag_driver::Runtime;
use chinwag_service::Limits;
use clap::{Parser, Subcommand};
use runtime::{Program, RuntimeFlag, RuntimeKind};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "chinwag", version, about = "chinwag: a WebSocket stack and chat server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address the chat server listens on (when no subcommand is given).
    #[arg(long, env = "CHINWAG_ADDR", default_value = "127.0.0.1:9090")]
    addr: SocketAddr,
    /// The chat's bus (when no subcommand is given): `in-process` (one node, the
    /// default: nothing else needed), or a `redis://host:port[/db]` URL to serve
    /// one chat with every other node on that Redis (names unique across nodes,
    /// one order of lines, users of a dead node announced as gone).
    #[arg(long, env = "CHINWAG_BUS", default_value = "in-process")]
    bus: chinwag_gateway::config::Bus,
    /// Lines of each room the chat keeps for `chinwag.v1` clients: shown on
    /// joining when asked for, and recovered after a reconnect (0: none).
    #[arg(long, env = "CHINWAG_HISTORY", default_value_t = chinwag_core::chat::DEFAULT_HISTORY)]
    history: usize,
    /// Runtime to run on [default: tokio; for `chinwag echo`, event-loop]. The
    /// event loops (chinwag-mio) run `chinwag echo` only.
    #[arg(long, env = "CHINWAG_RUNTIME", value_enum, global = true)]
    runtime: Option<RuntimeFlag>,
    /// Threads serving connections on tokio and on the event loops, each with a
    /// runtime or loop of its own that keeps the connections it accepted
    /// [default: one per core this process may use, a container's CPU limit
    /// included]. async-std spreads connections over its own pool instead
    /// (ASYNC_STD_THREAD_COUNT).
    #[arg(long, env = "CHINWAG_THREADS", global = true)]
    threads: Option<NonZeroUsize>,
    /// Do not use permessage-deflate (RFC 7692): by default the chat, echo and
    /// gateway servers compress for clients that offer it (every browser does),
    /// and `chinwag client` offers it. For the gateway this overrides
    /// `gateway.deflate` in the file.
    #[arg(long, env = "CHINWAG_NO_DEFLATE", global = true)]
    no_deflate: bool,
    /// Keep the compression context between messages, both ways (the chat, echo
    /// and client): better ratios on long conversations, but every connection
    /// keeps a compressor and a decompressor (up to about 300 KiB with 15-bit
    /// windows), and broadcasts are compressed for each recipient instead of
    /// once. Off by default.
    #[arg(long, env = "CHINWAG_DEFLATE_TAKEOVER", global = true, conflicts_with = "no_deflate")]
    deflate_takeover: bool,
    /// Compress every message, however short and even when that does not make it
    /// shorter (by default messages under 32 bytes, and those that do not shrink,
    /// go uncompressed, as RFC 7692 allows). For peers that mishandle uncompressed
    /// messages on a compressed connection: the conformance runs use it, as the
    /// kosoku tool fails on them.
    #[arg(long, global = true, conflicts_with = "no_deflate")]
    deflate_always: bool,
    #[command(flatten)]
    ops: OpsArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

/// The chat server's limits (docs/limits.md lists them all, with what a client sees).
#[derive(clap::Args)]
struct LimitArgs {
    /// Open connections at most; over it, requests get 503.
    #[arg(long, env = "CHINWAG_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Open connections per client address at most (0, the default: no limit);
    /// over it, requests get 429. Behind a reverse proxy, set --trusted-proxy too,
    /// or this limits the proxy: all its clients together.
    #[arg(long, env = "CHINWAG_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    max_connections_per_ip: usize,
    /// A reverse proxy whose Forwarded or X-Forwarded-For header names the client:
    /// a CIDR range or an address, IPv4 or IPv6 (repeat for several). Headers from
    /// other peers are ignored.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    trusted_proxies: Vec<Cidr>,
    /// Messages per second each connection may send on average (0: no limit); over
    /// it messages are dropped with a warning, and a client that keeps flooding is
    /// closed with 1008.
    #[arg(long, env = "CHINWAG_MESSAGE_RATE", default_value_t = 50.0)]
    message_rate: f64,
    /// Messages a connection may send at once after a quiet spell.
    #[arg(long, env = "CHINWAG_MESSAGE_BURST", default_value_t = 100)]
    message_burst: u32,
    /// Bytes queued for a client that does not read, at most; over it the client is
    /// closed with 1008.
    #[arg(long, env = "CHINWAG_MAX_BACKLOG", default_value_t = chinwag::chat::config().max_backlog)]
    max_backlog: usize,
    /// Seconds a connection may be silent before the server pings it (0: never;
    /// at most a day, as the gateway's heartbeat). Behind a proxy or load balancer
    /// that drops idle connections, keep it under the proxy's idle timeout: the
    /// ping and its answer keep the connection open.
    #[arg(long, env = "CHINWAG_KEEPALIVE", value_name = "SECONDS", default_value_t = default_seconds(chinwag::chat::config().keepalive_interval), value_parser = clap::value_parser!(u64).range(0..=MAX_KEEPALIVE_SECS))]
    keepalive: u64,
    /// Seconds a pinged connection has to answer (or send anything) before the
    /// server drops it as gone (1 s to a day).
    #[arg(long, env = "CHINWAG_KEEPALIVE_TIMEOUT", value_name = "SECONDS", default_value_t = chinwag::chat::config().keepalive_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..=MAX_KEEPALIVE_SECS))]
    keepalive_timeout: u64,
    /// Web pages from other origins allowed to connect (repeat for several; `*` for
    /// any). Pages from the server's own host are always allowed.
    #[arg(long = "allow-origin", env = "CHINWAG_ALLOW_ORIGIN", value_name = "ORIGIN", value_delimiter = ',')]
    allow_origins: Vec<String>,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        let origins = self.allow_origins.iter().fold(OriginPolicy::same_host(), |policy, o| policy.allow(o));
        Limits {
            max_connections: self.max_connections,
            max_connections_per_ip: Some(self.max_connections_per_ip).filter(|&n| n > 0),
            trusted_proxies: self.trusted_proxies.iter().copied().collect(),
            message_rate: (self.message_rate > 0.0).then(|| RateLimit::new(self.message_rate, self.message_burst)),
            origins,
        }
    }

    fn config(&self) -> Config {
        Config {
            max_backlog: self.max_backlog,
            keepalive_interval: (self.keepalive > 0).then(|| Duration::from_secs(self.keepalive)),
            keepalive_timeout: Duration::from_secs(self.keepalive_timeout),
            ..chinwag::chat::config()
        }
    }
}

/// The longest keepalive interval or timeout the flags take, in seconds: the
/// gateway's heartbeat bound (a day), for the reasons it gives.
const MAX_KEEPALIVE_SECS: u64 = chinwag_gateway::config::MAX_HEARTBEAT_SECS;

/// A default interval in whole seconds for a flag where 0 means none.
fn default_seconds(interval: Option<Duration>) -> u64 {
    interval.map_or(0, |d| d.as_secs())
}

#[derive(Subcommand)]
enum Command {
    /// Echo every text and binary message back (messages up to 64 MiB).
    Echo {
        /// Address to listen on.
        #[arg(long, env = "CHINWAG_ADDR", default_value = "127.0.0.1:9001")]
        addr: SocketAddr,
    },
    /// The socket gateway, configured from a YAML file (see the README): typed JSON
    /// messages to an event bus, sends to users in namespaces, broadcasts.
    Gateway {
        /// The configuration file.
        #[arg(long, env = "CHINWAG_CONFIG", default_value = "conf/socket.yaml")]
        config: std::path::PathBuf,
        /// Listen here instead of the file's `gateway.listen` (several nodes from
        /// one file).
        #[arg(long, env = "CHINWAG_LISTEN")]
        listen: Option<SocketAddr>,
        /// Use this bus instead of the file's `gateway.bus`: `in-process` or a
        /// `redis://host:port` URL.
        #[arg(long, env = "CHINWAG_BUS")]
        bus: Option<chinwag_gateway::config::Bus>,
    },
    /// A token for the gateway in `--config` (HS256, its secret from the
    /// environment), printed for a cookie or a Bearer header: for trying it out.
    Token {
        /// The gateway's configuration file.
        #[arg(long, default_value = "conf/socket.yaml")]
        config: std::path::PathBuf,
        /// The user (the token's preferred_username).
        #[arg(long)]
        username: String,
        /// A namespace the user may join, put in the gateway's namespaces claim
        /// (repeat for several; `*` for any). Without one, a gateway that reads
        /// the claim lets the token join no namespace.
        #[arg(long = "namespace", value_name = "NAMESPACE")]
        namespaces: Vec<String>,
        /// How long the token is valid, in seconds.
        #[arg(long, default_value_t = 3600)]
        lifetime_secs: u64,
    },
    /// Connect to a WebSocket URL: send lines from standard input, print messages.
    Client {
        /// The ws:// URL.
        url: String,
        /// A header for the handshake, as `Name: value` (repeat for several), such
        /// as `Cookie: ID_TOKEN=...` for the gateway.
        #[arg(long = "header", value_name = "NAME: VALUE")]
        headers: Vec<String>,
        /// Act as the client of an Autobahn fuzzing server at URL (ws://host:port):
        /// run every case, echoing, then ask for the report.
        #[arg(long)]
        autobahn: bool,
    },
}

/// `chinwag`: the chat server, until Ctrl-C or SIGTERM.
struct ChatServer {
    bus: chinwag_gateway::config::Bus,
    history: usize,
    addr: SocketAddr,
    threads: NonZeroUsize,
    config: Config,
    limits: Limits,
    deflate: Option<DeflateConfig>,
    admin: AdminAddr,
    drain_delay: std::time::Duration,
}

impl Program for ChatServer {
    type Output = std::io::Result<()>;
    async fn run<R: Runtime>(self) -> std::io::Result<()> {
        let cluster = match &self.bus {
            chinwag_gateway::config::Bus::InProcess => None,
            chinwag_gateway::config::Bus::Redis(url) => {
                Some(chinwag::cluster::Cluster::new(url).map_err(std::io::Error::other)?)
            }
        };
        let server = match &cluster {
            None => chinwag::chat::server_with(self.config, self.limits),
            Some(cluster) => chinwag::chat::clustered_server_with(self.config, self.limits, cluster.clone()),
        }
        .deflate(self.deflate);
        server.service().set_history_len(self.history);
        let handle = server.handle();
        if let Some(cluster) = &cluster {
            cluster.start::<R>(handle.clone());
            tracing::info!(node = cluster.node(), "chat node on Redis");
        }
        let drain = handle.clone();
        on_termination(self.drain_delay, move || drain.drain(), move || handle.shutdown())?;
        start_admin::<R>(self.admin, server.admin()).await?;
        let listeners = runtime::bind::<R>(self.addr, self.threads)?;
        let addr = listeners.local_addr()?;
        tracing::info!(
            threads = listeners.count(),
            "chat server on http://{addr} (WebSocket at ws://{addr}{})",
            chinwag::chat::ROUTE
        );
        server.serve_threads::<R>(listeners).await?;
        if let Some(cluster) = &cluster {
            cluster.flush_queue::<R>(std::time::Duration::from_secs(5)).await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// `chinwag gateway`: the socket gateway, until Ctrl-C or SIGTERM.
struct GatewayServer {
    gateway: chinwag_gateway::Gateway,
    listen: SocketAddr,
    threads: NonZeroUsize,
    path: String,
    admin: AdminAddr,
    drain_delay: std::time::Duration,
}

impl Program for GatewayServer {
    type Output = std::io::Result<()>;
    async fn run<R: Runtime>(self) -> std::io::Result<()> {
        let GatewayServer { gateway, listen, threads, path, admin, drain_delay } = self;
        let handle = gateway.handle();
        let (drain, keys) = (handle.clone(), handle.clone());
        // SIGHUP reads the JWT keys again (the outcome is logged and counted).
        let reload = Box::new(move || {
            if keys.reload_keys().is_none() {
                tracing::info!("SIGHUP: development mode has no keys to reload");
            }
        });
        on_signals(drain_delay, move || drain.service().drain(), move || handle.service().shutdown(), Some(reload))?;
        start_admin::<R>(admin, gateway.admin()).await?;
        let listeners = runtime::bind::<R>(listen, threads)?;
        let (addr, threads) = (listeners.local_addr()?, listeners.count());
        match gateway.handle().bus_status() {
            Some(bus) => tracing::info!(
                threads,
                "gateway node {} on ws://{addr}{path}?namespace=NAMESPACE, bus on Redis",
                bus.node
            ),
            None => tracing::info!(threads, "gateway on ws://{addr}{path}?namespace=NAMESPACE, in-process bus"),
        }
        gateway.serve_threads::<R>(listeners).await?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Reads the gateway's configuration and key: refused at start, with the reason.
fn gateway(
    path: &std::path::Path,
    listen: Option<SocketAddr>,
    bus: Option<chinwag_gateway::config::Bus>,
    threads: NonZeroUsize,
    ops: &OpsArgs,
    no_deflate: bool,
) -> Result<GatewayServer, String> {
    use chinwag_gateway::config::Auth;
    let mut config = chinwag_gateway::Config::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
    config.listen = listen.unwrap_or(config.listen);
    config.bus = bus.unwrap_or(config.bus);
    config.deflate &= !no_deflate;
    let authenticator = match &config.auth {
        Auth::Jwt(jwt) => {
            let verifier = chinwag_gateway::Verifier::from_config(jwt)
                .map_err(|e| format!("{}: gateway.auth.jwt: {e}", path.display()))?;
            tracing::info!("JWT keys loaded from {}", verifier.summary());
            chinwag_gateway::Authenticator::Jwt(Box::new(verifier))
        }
        Auth::DevelopmentUsernames => {
            tracing::warn!(
                "development mode: clients name themselves with ?username=, unchecked; never use this in production"
            );
            chinwag_gateway::Authenticator::DevelopmentUsernames
        }
    };
    let (listen, route) = (config.listen, config.path.clone());
    // The flag (or CHINWAG_ADMIN_ADDR) wins over the file, so that several nodes
    // can run from one file.
    let admin = ops.admin_addr.unwrap_or(match config.admin {
        Some(addr) => AdminAddr::At(addr),
        None => AdminAddr::Off,
    });
    let drain_delay = ops.drain_delay()?;
    let gateway = chinwag_gateway::Gateway::new(config, authenticator, chinwag_gateway::Handlers::new())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(GatewayServer { gateway, listen, threads, path: route, admin, drain_delay })
}

/// `chinwag token`: prints a token the gateway in `path` accepts.
fn token(path: &std::path::Path, username: &str, namespaces: &[String], lifetime_secs: u64) -> std::io::Result<()> {
    let config =
        chinwag_gateway::Config::load(path).map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
    let chinwag_gateway::config::Auth::Jwt(jwt) = &config.auth else {
        return Err(std::io::Error::other(format!("{}: the gateway does not use JWT", path.display())));
    };
    if let (Some(chinwag_gateway::config::NamespacePolicy::Claim(claim)), true) =
        (&jwt.namespaces, namespaces.is_empty())
    {
        eprintln!(
            "chinwag token: the gateway reads the namespaces a user may join from the {claim} claim; without \
             --namespace this token may join none"
        );
    }
    let now = chinwag_gateway::auth::unix_now();
    let token = chinwag_gateway::auth::hs256_token(jwt, username, namespaces, now, lifetime_secs)
        .map_err(std::io::Error::other)?;
    println!("{token}");
    Ok(())
}

/// mimalloc instead of glibc's allocator: smaller idle connections, memory
/// returned after a spike, cheaper handshakes (see the `mimalloc` feature in
/// Cargo.toml for the figures). The libraries leave the choice to their users.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: chinwag::allocator::MiMalloc = chinwag::allocator::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.ops.log_format);
    let is_echo = matches!(cli.command, Some(Command::Echo { .. }));
    let rt = match cli.runtime.map_or(Some(RuntimeKind::Tokio), RuntimeFlag::asynchronous) {
        Some(rt) => rt,
        // Unused: the echo runs on its loops.
        None if is_echo => RuntimeKind::Tokio,
        None => {
            eprintln!(
                "chinwag: --runtime event-loop runs `chinwag echo` only; the chat, the gateway and the client run on \
                 tokio or async-std"
            );
            return ExitCode::from(2);
        }
    };
    let threads = cli.threads.unwrap_or_else(chinwag_service::threads::default_threads);
    let drain_delay = match cli.ops.drain_delay() {
        Ok(delay) => delay,
        Err(e) => {
            eprintln!("chinwag: {e}");
            return ExitCode::FAILURE;
        }
    };
    let default_admin = DEFAULT_ADMIN_ADDR.parse().expect("a valid default");
    let deflate = match (cli.no_deflate, cli.deflate_takeover) {
        (true, _) => None,
        (false, false) => Some(DeflateConfig::default()),
        (false, true) => Some(DeflateConfig::default().with_context_takeover()),
    }
    .map(|d| if cli.deflate_always { d.compress_everything() } else { d });
    let result = match cli.command {
        None => rt.run(ChatServer {
            bus: cli.bus,
            history: cli.history,
            threads,
            addr: cli.addr,
            config: cli.limits.config(),
            limits: cli.limits.limits(),
            deflate,
            admin: cli.ops.admin_addr.unwrap_or(default_admin),
            drain_delay,
        }),
        Some(Command::Echo { addr }) => {
            // The benchmark server: no admin listener unless asked for.
            let admin = cli.ops.admin_addr.unwrap_or(AdminAddr::Off);
            let server = echo::EchoServer { addr, threads, admin, drain_delay, deflate };
            match cli.runtime.and_then(RuntimeFlag::asynchronous) {
                None => server.serve_on_event_loops(),
                Some(rt) => rt.run(server),
            }
        }
        Some(Command::Gateway { config, listen, bus }) => {
            match gateway(&config, listen, bus, threads, &cli.ops, cli.no_deflate) {
                Ok(server) => rt.run(server),
                Err(e) => Err(std::io::Error::other(e)),
            }
        }
        Some(Command::Token { config, username, namespaces, lifetime_secs }) => {
            token(&config, &username, &namespaces, lifetime_secs)
        }
        Some(Command::Client { url, autobahn: true, .. }) => rt.run(client::Autobahn(url, deflate)),
        Some(Command::Client { url, autobahn: false, headers }) => {
            rt.run(client::Interactive { url, headers, deflate })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chinwag: {e}");
            ExitCode::FAILURE
        }
    }
}
