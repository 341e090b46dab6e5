//! User-space instructions per echo, counted by callgrind: repeatable to a few
//! dozen instructions where throughput on a shared machine varies by ±15%.
//!
//! Each server runs under `valgrind --tool=callgrind` twice, on fresh processes,
//! loaded by the same echo load for a short and a long time. The difference of the
//! two instruction totals over the difference of the echoes cancels what both runs
//! share: start-up, handshakes, warm-up and shutdown.

use crate::servers::Kind;
use crate::{ServerProcess, client_runtime, load, progress, server_command};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How to load each server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    /// Connections, each keeping `in_flight` messages outstanding.
    pub(crate) connections: usize,
    /// Messages in flight per connection (1 = lock-step).
    pub(crate) in_flight: usize,
    /// The two load durations (after a warm-up of 0.5 s each), in seconds.
    pub(crate) short: f64,
    /// See `short`; must be longer.
    pub(crate) long: f64,
}

/// One server's count at one size.
struct Count {
    kind: Kind,
    size: usize,
    per_echo: u64,
}

/// Measures every server at every size and prints one table per size, with
/// each server's ratio to the one-thread peers measured in the same run.
pub(crate) fn instructions_mode(servers: &[Kind], sizes: &[usize], plan: Load) -> std::io::Result<()> {
    if plan.long <= plan.short {
        return Err(std::io::Error::other("--long must be longer than --short"));
    }
    valgrind_present()?;
    let dir = std::env::temp_dir().join(format!("chinwag-bench-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let counts = measure_all(servers, sizes, plan, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let counts = counts?;
    progress("");
    println!(
        "\n## User-space instructions per echo (callgrind; {} connections, {} in flight; {} s and {} s runs)\n",
        plan.connections, plan.in_flight, plan.short, plan.long
    );
    let peers = [Kind::RawTcpOneThread, Kind::FastwebsocketsOneThread];
    for &size in sizes {
        let at_size: Vec<&Count> = counts.iter().filter(|c| c.size == size).collect();
        let measured_peers: Vec<&Count> =
            peers.iter().filter_map(|&peer| at_size.iter().copied().find(|c| c.kind == peer)).collect();
        let mut header = format!("| {size} B | instructions per echo |");
        let mut rule = String::from("|---|---|");
        for peer in &measured_peers {
            header.push_str(&format!(" × {} |", peer.kind.label()));
            rule.push_str("---|");
        }
        println!("{header}\n{rule}");
        for count in &at_size {
            let mut row = format!("| {} | {} |", count.kind.label(), count.per_echo);
            for peer in &measured_peers {
                row.push_str(&format!(" {:.2} |", count.per_echo as f64 / peer.per_echo.max(1) as f64));
            }
            println!("{row}");
        }
        println!();
    }
    Ok(())
}

fn measure_all(servers: &[Kind], sizes: &[usize], plan: Load, dir: &Path) -> std::io::Result<Vec<Count>> {
    let mut counts = Vec::new();
    for &size in sizes {
        for &kind in servers {
            progress(&format!("instructions: {} at {size} B", kind.label()));
            let (short_ir, short_echoes) = count_once(kind, size, plan, plan.short, dir)?;
            let (long_ir, long_echoes) = count_once(kind, size, plan, plan.long, dir)?;
            let (Some(ir), Some(echoes)) =
                (long_ir.checked_sub(short_ir), long_echoes.checked_sub(short_echoes).filter(|&n| n > 0))
            else {
                return Err(std::io::Error::other(format!(
                    "{} at {size} B: the long run did no more than the short one ({short_echoes} and {long_echoes} \
                     echoes, {short_ir} and {long_ir} instructions); lengthen --long",
                    kind.label()
                )));
            };
            counts.push(Count { kind, size, per_echo: ir / echoes });
        }
    }
    Ok(counts)
}

/// One run under callgrind: the server's instruction total and the echoes done.
fn count_once(kind: Kind, size: usize, plan: Load, seconds: f64, dir: &Path) -> std::io::Result<(u64, u64)> {
    let out = dir.join(format!("{}.{size}.{seconds}.callgrind", kind.label()));
    // valgrind starts a program tens of times slower than natively.
    let server = ServerProcess::spawn_within(kind.label(), Duration::from_secs(60), |addr| {
        Ok(under_callgrind(&server_command(kind, addr)?, &out))
    })?;
    let warmup = Duration::from_millis(500);
    let measure = Duration::from_secs_f64(seconds);
    let result = client_runtime().block_on(load::echo(
        server.addr,
        kind.is_websocket(),
        plan.connections,
        size,
        plan.in_flight,
        warmup,
        measure,
        &|| Duration::ZERO,
    ));
    // Stopped either way; callgrind writes its totals as the server exits.
    server.terminate(Duration::from_secs(60))?;
    let echoes = result?.total;
    Ok((totals(&out)?, echoes))
}

/// `command`, run under callgrind writing to `out`.
fn under_callgrind(command: &Command, out: &Path) -> Command {
    let mut valgrind = Command::new("valgrind");
    valgrind.arg("--tool=callgrind").arg(format!("--callgrind-out-file={}", out.display()));
    valgrind.arg(command.get_program()).args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => valgrind.env(key, value),
            None => valgrind.env_remove(key),
        };
    }
    valgrind.stdout(Stdio::null()).stderr(Stdio::null());
    valgrind
}

/// The instruction total of a callgrind output file (its `totals:` line, or
/// `summary:` in older formats).
fn totals(out: &Path) -> std::io::Result<u64> {
    let text = std::fs::read_to_string(out)
        .map_err(|e| std::io::Error::other(format!("no callgrind output at {}: {e}", out.display())))?;
    text.lines()
        .find_map(|line| line.strip_prefix("totals:").or_else(|| line.strip_prefix("summary:")))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no instruction total in {}", out.display())))
}

/// Fails clearly when valgrind is not installed.
fn valgrind_present() -> std::io::Result<()> {
    match Command::new("valgrind").arg("--version").stdout(Stdio::null()).status() {
        Ok(status) if status.success() => Ok(()),
        _ => Err(std::io::Error::other("valgrind is missing (apt-get install valgrind)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_is_read_from_either_format_and_its_absence_is_an_error() {
        let dir = std::env::temp_dir().join(format!("chinwag-bench-totals-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("out");
        std::fs::write(&file, "version: 1\nevents: Ir\nfn=main\n0x1 3 5\ntotals: 123456\n").unwrap();
        assert_eq!(totals(&file).unwrap(), 123_456);
        std::fs::write(&file, "events: Ir\nsummary: 987\n").unwrap();
        assert_eq!(totals(&file).unwrap(), 987);
        std::fs::write(&file, "events: Ir\n").unwrap();
        assert!(totals(&file).is_err());
        assert!(totals(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The server runs under valgrind with its own program, arguments and
    /// environment (`CHINWAG_THREADS=1` makes the one-thread `chinwag echo`).
    #[test]
    fn the_wrapped_command_keeps_the_servers_program_arguments_and_environment() {
        let mut server = Command::new("/bin/server");
        server.args(["echo", "--addr", "127.0.0.1:1"]).env("CHINWAG_THREADS", "1").env_remove("RUST_LOG");
        let wrapped = under_callgrind(&server, Path::new("/tmp/out"));
        assert_eq!(wrapped.get_program(), "valgrind");
        let args: Vec<_> = wrapped.get_args().collect();
        assert_eq!(
            args,
            ["--tool=callgrind", "--callgrind-out-file=/tmp/out", "/bin/server", "echo", "--addr", "127.0.0.1:1"]
        );
        let envs: Vec<_> = wrapped.get_envs().collect();
        assert!(envs.contains(&("CHINWAG_THREADS".as_ref(), Some("1".as_ref()))));
        assert!(envs.contains(&("RUST_LOG".as_ref(), None)));
    }
}
