//! What the binary gives operators, the same way for the chat, the gateway and
//! the echo server: the admin listener, a shutdown a load balancer can follow, and
//! logs in text or JSON.

use chinwag_driver::Runtime;
use chinwag_service::ops::{Admin, admin};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Where the admin listener listens: an address, or nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAddr {
    /// Listen here.
    At(SocketAddr),
    /// No admin listener.
    Off,
}

impl std::str::FromStr for AdminAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Self::Off),
            addr => addr.parse().map(Self::At).map_err(|e| format!("{addr:?} is neither an address nor `off`: {e}")),
        }
    }
}

/// The admin listener's default address: loopback, so that metrics and readiness
/// are not on the network unless the operator says so (a container sets
/// `0.0.0.0:9091` for its probes and scrapes).
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9091";

/// Flags every server of the binary takes.
#[derive(clap::Args, Debug, Clone)]
pub struct OpsArgs {
    /// The admin listener: GET /metrics (Prometheus), /health (liveness), /ready
    /// (readiness). An address, or `off`. Never the public port. Default
    /// 127.0.0.1:9091; for the gateway, its file's `gateway.admin`; for `echo`, off.
    #[arg(long, env = "CHINWAG_ADMIN_ADDR", global = true, value_name = "ADDR|off")]
    pub admin_addr: Option<AdminAddr>,
    /// Seconds between SIGTERM and closing every connection with 1001. Meanwhile
    /// /ready answers 503 and clients are still served, so that a load balancer
    /// stops sending new clients first. 0 on a developer's machine; about 10 under
    /// Kubernetes (deploy/kubernetes). A second SIGTERM or Ctrl-C exits at once.
    #[arg(long, env = "CHINWAG_DRAIN_DELAY", global = true, default_value_t = 0.0, value_name = "SECONDS")]
    pub drain_delay: f64,
    /// Log lines as human-readable text or as JSON objects (one per line).
    #[arg(long, env = "CHINWAG_LOG_FORMAT", global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl OpsArgs {
    /// The drain delay, refused if negative or not a number.
    pub fn drain_delay(&self) -> Result<Duration, String> {
        Duration::try_from_secs_f64(self.drain_delay)
            .map_err(|_| format!("--drain-delay {}: must be a number of seconds, 0 or more", self.drain_delay))
    }
}

/// The format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Sets up logging to standard error in `format`, filtered by `RUST_LOG` (default
/// `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).init(),
    }
}

/// Binds the admin listener (if not off) and serves `admin` on it in a task of its
/// own. An address that cannot be bound stops the server at start, naming the flag.
pub async fn start_admin<R: Runtime>(addr: AdminAddr, admin: Arc<dyn Admin>) -> std::io::Result<()> {
    let AdminAddr::At(addr) = addr else { return Ok(()) };
    let listener = R::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("--admin-addr {addr} (CHINWAG_ADMIN_ADDR): cannot listen: {e}"))
    })?;
    let bound = R::local_addr(&listener)?;
    tracing::info!("admin on http://{bound} (/metrics, /health, /ready)");
    R::spawn(admin::serve::<R>(listener, admin));
    Ok(())
}

/// Installs the handler of SIGTERM and Ctrl-C (SIGINT): the first one calls
/// `drain` at once (readiness turns 503), then `shutdown` after `delay` (every
/// connection gets 1001; the server returns once their close handshakes are
/// done); a second one exits the process at once, with status 1. SIGHUP does not
/// shut down: it calls `reload`, if any (the gateway reads its JWT keys again),
/// else it is logged and ignored.
pub fn on_signals(
    delay: Duration,
    drain: impl Fn() + Send + 'static,
    shutdown: impl Fn() + Send + Sync + 'static,
    reload: Option<Box<dyn Fn() + Send>>,
) -> std::io::Result<()> {
    let signals = AtomicUsize::new(0);
    let shutdown = Arc::new(shutdown);
    let terminate = move || {
        if signals.fetch_add(1, Ordering::AcqRel) > 0 {
            tracing::warn!("second signal: exiting at once, without waiting for close handshakes");
            std::process::exit(1);
        }
        drain();
        if delay.is_zero() {
            tracing::info!("shutting down: closing every connection with 1001");
            shutdown();
            return;
        }
        tracing::info!(?delay, "draining: /ready answers 503; closing every connection with 1001 after the delay");
        let shutdown = shutdown.clone();
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            tracing::info!("shutting down: closing every connection with 1001");
            shutdown();
        });
    };
    let reload = move || match &reload {
        Some(reload) => reload(),
        None => tracing::info!("SIGHUP: nothing to reload"),
    };
    listen(terminate, reload)
}

/// [`on_signals`] without anything to reload.
pub fn on_termination(
    delay: Duration,
    drain: impl Fn() + Send + 'static,
    shutdown: impl Fn() + Send + Sync + 'static,
) -> std::io::Result<()> {
    on_signals(delay, drain, shutdown, None)
}

/// Runs `terminate` at each SIGTERM or SIGINT and `reload` at each SIGHUP, on a
/// thread of their own (never in the signal handler itself, where almost nothing
/// is allowed).
#[cfg(unix)]
fn listen(terminate: impl Fn() + Send + 'static, reload: impl Fn() + Send + 'static) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for signal in signals.forever() {
            if signal == SIGHUP { reload() } else { terminate() }
        }
    })?;
    Ok(())
}

/// Without Unix signals, Ctrl-C is the one there is: nothing reloads.
#[cfg(not(unix))]
fn listen(terminate: impl Fn() + Send + 'static, _reload: impl Fn() + Send + 'static) -> std::io::Result<()> {
    ctrlc::set_handler(terminate).map_err(std::io::Error::other)
}
