//! Serving one address on several threads, each with an executor of its own.
//!
//! A connection's reads and writes are a chain of wake-ups: bytes arrive, its
//! task runs, it writes. On a work-stealing runtime that chain may hop between
//! threads, and every hop costs a cross-thread wake-up. With one single-threaded
//! executor per thread, a connection stays on the thread that accepted it from
//! its first byte to its last; only what connections share (a broadcast, the
//! hub's lock) crosses threads.
//!
//! Each thread accepts from a listener of its own, all bound to the same address
//! with `SO_REUSEPORT`: the kernel spreads new connections over them by a hash of
//! the client's address and port, so each thread gets its share of a burst of
//! connections. (With one listener shared by every thread, the first thread to
//! wake takes a whole burst: long-lived WebSocket connections would stay
//! unevenly spread for their lifetime.)

use chinwag_driver::Runtime;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The number of threads a server uses by default: one per core the process may
/// use (`std::thread::available_parallelism`, which on Linux also honours the
/// CPU quota of a container's cgroup and the process's affinity mask), or one if
/// that cannot be told.
pub fn default_threads() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// How many connections the kernel may queue for `accept` on each listener
/// (completed handshakes not yet accepted). The kernel caps it at
/// `net.core.somaxconn` (4096 by default since Linux 5.4). A burst of
/// reconnecting clients after a restart or a network blip must not be refused
/// for want of room while the threads catch up.
pub const LISTEN_BACKLOG: i32 = 1024;

/// The listeners of one address, one per thread that serves it.
#[derive(Debug)]
pub struct Listeners(Vec<std::net::TcpListener>);

impl Listeners {
    /// Binds `count` listeners to `addr` (port 0: one free port for all), each
    /// with `SO_REUSEADDR` (a restarted server binds at once, with the old
    /// connections in `TIME_WAIT`) and a backlog of [`LISTEN_BACKLOG`]; with more
    /// than one, `SO_REUSEPORT` too. Binds now, so that an address in use is an
    /// error at start: the address is first bound without `SO_REUSEPORT`, which
    /// fails if anything listens there already (another chinwag included, which
    /// `SO_REUSEPORT` alone would let share the port silently).
    pub fn bind(addr: SocketAddr, count: NonZeroUsize) -> io::Result<Self> {
        if count.get() == 1 {
            return Ok(Self(vec![listen(addr, false)?]));
        }
        // Bound, not listening: a client that connects meanwhile is refused, as
        // before the server started, instead of landing in this socket's queue
        // and being reset when it is dropped (which a load generator that waits
        // for the port and connects at once saw under valgrind).
        let addr = {
            let probe = socket(addr)?;
            probe.bind(&addr.into())?;
            probe.local_addr()?.as_socket().ok_or_else(|| io::Error::other("not an IP socket"))?
        };
        let listeners = (0..count.get()).map(|_| listen(addr, true)).collect::<io::Result<_>>()?;
        Ok(Self(listeners))
    }

    /// The address the listeners are bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0[0].local_addr()
    }

    /// The listening sockets, for a server that runs its own threads (the event
    /// loops of chinwag-mio).
    pub fn into_std(self) -> Vec<std::net::TcpListener> {
        self.0
    }

    /// How many listeners, so how many threads serve them.
    pub fn count(&self) -> NonZeroUsize {
        NonZeroUsize::new(self.0.len()).expect("at least one listener")
    }
}

/// A TCP socket for `addr`'s family, with `SO_REUSEADDR`.
fn socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    Ok(socket)
}

/// One non-blocking listening socket on `addr`.
fn listen(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = socket(addr)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Runs `serve` on as many threads as there are `listeners`: this one and one
/// new thread per other listener, named `chinwag-N` (short: Linux shows 15
/// characters of a thread's name to `top` and `/proc`), each running its own
/// executor ([`Runtime::block_on_thread`]) with a listener of its own; returns
/// once every one of them has returned. `serve` must return after the server
/// shuts down (it typically accepts until then, then drains its connections).
///
/// With one listener, `serve` runs once, here. A runtime whose executor is a pool
/// of its own (`!R::THREAD_PER_CORE`: async-std, smol) spreads tasks itself: bind
/// one listener for it.
///
/// # Errors
/// When a listener cannot be registered or a thread cannot start: `stop` is
/// called so that the threads already serving return, they are waited for, and
/// the error is returned.
pub async fn serve_on_threads<R, F, Fut>(listeners: Listeners, serve: F, stop: impl FnOnce()) -> io::Result<()>
where
    R: Runtime,
    F: Fn(R::Listener) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()>,
{
    let mut listeners = listeners.0.into_iter();
    let own = listeners.next().expect("at least one listener");
    let serve = Arc::new(serve);
    let running = Arc::new(Running::default());
    let mut started = Ok(());
    for (index, listener) in (1..).zip(listeners) {
        started = start_worker::<R, F, Fut>(index, listener, &serve, &running);
        if started.is_err() {
            break;
        }
    }
    let result = match started.and_then(|()| R::listener_from_std(own)) {
        Ok(listener) => {
            serve(listener).await;
            Ok(())
        }
        Err(e) => {
            stop();
            Err(e)
        }
    };
    loop {
        let listener = running.done.listen();
        if running.threads.load(Ordering::Acquire) == 0 {
            break;
        }
        listener.await;
    }
    result
}

/// Starts worker thread `index`, and waits until its listener is registered: a
/// failure is then a failure to start, not a thread that silently serves nothing.
fn start_worker<R, F, Fut>(
    index: usize,
    listener: std::net::TcpListener,
    serve: &Arc<F>,
    running: &Arc<Running>,
) -> io::Result<()>
where
    R: Runtime,
    F: Fn(R::Listener) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()>,
{
    let (serve, worker) = (serve.clone(), running.clone());
    let (ready, registered) = std::sync::mpsc::channel();
    running.threads.fetch_add(1, Ordering::AcqRel);
    let spawned = std::thread::Builder::new().name(format!("chinwag-{index}")).spawn(move || {
        R::block_on_thread(async {
            match R::listener_from_std(listener) {
                Ok(listener) => {
                    let _ = ready.send(Ok(()));
                    serve(listener).await;
                }
                Err(e) => drop(ready.send(Err(e))),
            }
        });
        worker.finished();
    });
    if let Err(e) = spawned {
        running.finished();
        return Err(e);
    }
    // Registering a listener takes microseconds.
    registered.recv().unwrap_or_else(|_| Err(io::Error::other("a worker thread ended as it started")))
}

/// The worker threads still running.
#[derive(Default)]
struct Running {
    threads: AtomicUsize,
    done: event_listener::Event,
}

impl Running {
    fn finished(&self) {
        self.threads.fetch_sub(1, Ordering::AcqRel);
        self.done.notify(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_at_least_one() {
        assert!(default_threads().get() >= 1);
    }

    #[test]
    fn listeners_share_one_port_and_refuse_a_port_in_use() {
        let three = NonZeroUsize::new(3).unwrap();
        let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap(), three).unwrap();
        let addr = listeners.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        assert_eq!(listeners.count(), three);
        assert!(listeners.0.iter().all(|l| l.local_addr().unwrap() == addr));
        // A second server on the same address fails, with or without threads.
        for count in [NonZeroUsize::MIN, three] {
            let err = Listeners::bind(addr, count).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        }
        // Connections spread over the listeners by the client's port.
        let clients: Vec<_> = (0..64).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let accepted: Vec<usize> = listeners.0.iter().map(|l| std::iter::from_fn(|| l.accept().ok()).count()).collect();
        assert_eq!(accepted.iter().sum::<usize>(), clients.len());
        assert!(accepted.iter().all(|&n| n > 0), "every listener gets connections: {accepted:?}");
    }
}
