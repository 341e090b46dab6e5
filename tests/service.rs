//! The service API as an embedding application uses it: a service of its own with
//! named connections and groups, a handle pushing from outside the hooks, and an
//! asynchronous admission before the hooks. The same services run unchanged on
//! every runtime.

use chinwag_core::chat::{ConnId, HubError};
use chinwag_core::http::StatusCode;
use chinwag_core::{CloseCode, Closed, Config, HttpResponse, Message, Request, Utf8Bytes};
use chinwag_driver::{Runtime, WebSocket, connect, parse_url};
use chinwag_service::ops::Admin;
use chinwag_service::{Admit, AdmitRequest, Context, Decision, Handle, Limits, Server, Service};
use chinwag_tests::{raw_answer, read_some, read_to_end, server_frames, timeout, upgrade_request, write_all};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(10);

/// The closes a service saw: user, code, reason.
type Closes = Arc<Mutex<Vec<(String, u16, String)>>>;

/// Stores each connection under its path's name and puts it in the group its query
/// names; echoes text to the sender and relays it to the group; records closes.
struct Desk {
    closes: Closes,
}

impl Service for Desk {
    fn on_upgrade(&self, cx: &mut Context<'_>) -> Decision {
        let user = cx.param("user").unwrap().to_owned();
        if user == "banned" {
            return Decision::reject(chinwag_core::http::StatusCode::FORBIDDEN, "banned");
        }
        if cx.query("early").is_some() {
            // Delivered before the socket opens: must not be lost.
            cx.push_text("early bird");
        }
        if cx.query("refuse_late").is_some() {
            let _ = cx.close(CloseCode(4002), "not today");
            return Decision::accept();
        }
        cx.store_name(&user);
        cx.set_attribute("user", user);
        if let Some(group) = cx.query("group").map(|g| g.into_owned()) {
            cx.add_to_group(&group);
        }
        Decision::accept()
    }

    fn on_open(&self, cx: &mut Context<'_>) {
        let greeting = format!("welcome {}", cx.attribute("user").unwrap());
        cx.push_text(greeting);
    }

    fn on_text(&self, cx: &mut Context<'_>, text: &Utf8Bytes) {
        if let Some(args) = text.strip_prefix("close ") {
            // "close CODE LENGTH": close this connection with CODE and a reason of
            // LENGTH bytes; a refused call is reported to the sender.
            let (code, length) = args.split_once(' ').expect("close CODE LENGTH");
            let reason = "r".repeat(length.parse().unwrap());
            if let Err(refused) = cx.close(CloseCode(code.parse().unwrap()), &reason) {
                cx.push_text(format!("close refused: {refused}"));
            }
            return;
        }
        cx.push_text(format!("you said {text}"));
        let groups: Vec<String> = cx.groups().map(str::to_owned).collect();
        for group in groups {
            let _ = cx.push_to_group(&group, &Message::text(format!("[{group}] {text}")));
        }
    }

    fn on_close(&self, cx: &mut Context<'_>, closed: &Closed) {
        let user = cx.attribute("user").unwrap_or("?").to_owned();
        self.closes.lock().unwrap().push((user, closed.code.0, closed.reason.clone()));
    }
}

type Client<C> = WebSocket<<C as Runtime>::Io, <C as Runtime>::Timer>;

fn start<S: Runtime>() -> (SocketAddr, Handle, Closes) {
    start_with::<S>(Limits::default())
}

fn start_with<S: Runtime>(limits: Limits) -> (SocketAddr, Handle, Closes) {
    let closes = Arc::new(Mutex::new(Vec::new()));
    let service = Desk { closes: closes.clone() };
    let (addr, handle) = serve::<S, _>(move || Server::new(service).route("/desk/{user}").unwrap().limits(limits));
    (addr, handle, closes)
}

/// Runs the server `make` builds on runtime `S`, in a thread of its own (built
/// there: a server belongs to the runtime that serves it).
fn serve<S: Runtime, V: Service>(make: impl FnOnce() -> Server<V> + Send + 'static) -> (SocketAddr, Handle) {
    let (addr, handle, _) = serve_with_admin::<S, V>(make);
    (addr, handle)
}

/// [`serve`], also returning what the server's admin listener would serve (its
/// metrics).
fn serve_with_admin<S: Runtime, V: Service>(
    make: impl FnOnce() -> Server<V> + Send + 'static,
) -> (SocketAddr, Handle, Arc<dyn Admin>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        S::block_on(async move {
            let server = make();
            let listener = S::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            tx.send((S::local_addr(&listener).unwrap(), server.handle(), server.admin())).unwrap();
            server.serve::<S>(listener).await.unwrap();
        })
    });
    rx.recv().unwrap()
}

async fn open<C: Runtime>(addr: SocketAddr, path: &str) -> Client<C> {
    let (ws, welcome) = welcomed::<C>(addr, path).await;
    assert!(welcome.starts_with("welcome "), "{welcome}");
    ws
}

/// Connects to `path` and reads the first message, the welcome.
async fn welcomed<C: Runtime>(addr: SocketAddr, path: &str) -> (Client<C>, String) {
    let mut ws = connect::<C>(&parse_url(&format!("ws://{addr}{path}")).unwrap(), Config::default()).await.unwrap();
    let welcome = next::<C>(&mut ws).await;
    (ws, welcome)
}

async fn next<C: Runtime>(ws: &mut Client<C>) -> String {
    match timeout::<C, _>(LIMIT, ws.recv()).await {
        Some(Some(Message::Text(t))) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

async fn names_groups_and_the_handle<S: Runtime, C: Runtime>() {
    let (addr, handle, closes) = start::<S>();
    let mut ann = open::<C>(addr, "/desk/ann?group=red").await;
    let mut bob = open::<C>(addr, "/desk/bob?group=red").await;
    let mut cy = open::<C>(addr, "/desk/cy?group=blue").await;

    // Hooks: push to the sender, push to a group.
    ann.send(&Message::text("hi")).await.unwrap();
    assert_eq!(next::<C>(&mut ann).await, "you said hi");
    assert_eq!(next::<C>(&mut ann).await, "[red] hi");
    assert_eq!(next::<C>(&mut bob).await, "[red] hi");

    // The handle, from outside any hook: names, groups, everyone. Cy's first
    // message is "to cy": had "[red] hi" reached cy (not in red), it would have
    // come before it.
    assert!(handle.push_to_name("cy", &Message::text("to cy")).is_ok());
    assert_eq!(handle.push_to_group("red", &Message::text("to red")), Ok(2));
    assert_eq!(handle.broadcast(&Message::text("to all")), 3);
    assert_eq!(handle.push_to_name("nobody", &Message::text("x")), Err(HubError::NoSuchName("nobody".into())));
    assert_eq!(next::<C>(&mut cy).await, "to cy");
    assert_eq!(next::<C>(&mut cy).await, "to all");
    assert_eq!(next::<C>(&mut ann).await, "to red");
    assert_eq!(next::<C>(&mut ann).await, "to all");
    assert_eq!(next::<C>(&mut bob).await, "to red");
    assert_eq!(next::<C>(&mut bob).await, "to all");

    // A later connection stored under the same name replaces the earlier one; the
    // earlier one stays open.
    let mut ann2 = open::<C>(addr, "/desk/ann").await;
    handle.push_to_name("ann", &Message::text("to the new ann")).unwrap();
    assert_eq!(next::<C>(&mut ann2).await, "to the new ann");
    // The earlier ann got nothing of it: the answer to what she says next is the
    // next thing she gets.
    ann.send(&Message::text("still here")).await.unwrap();
    assert_eq!(next::<C>(&mut ann).await, "you said still here");

    // Removing a group leaves its members connected, and the group gone.
    next::<C>(&mut ann).await; // [red] still here
    next::<C>(&mut bob).await;
    handle.with_hub(|hub| hub.remove_group("red")).unwrap();
    assert!(handle.push_to_group("red", &Message::text("x")).is_err());
    assert_eq!(handle.connection_count(), 4);

    // A refused upgrade never opens, never closes.
    assert!(connect::<C>(&parse_url(&format!("ws://{addr}/desk/banned")).unwrap(), Config::default()).await.is_err());

    // on_close gets the code and reason, with the attributes still there.
    bob.close(CloseCode(4001), "gone fishing").await.unwrap();
    for _ in 0..100 {
        if !closes.lock().unwrap().is_empty() {
            break;
        }
        C::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*closes.lock().unwrap(), [("bob".to_owned(), 4001, "gone fishing".to_owned())]);
    assert_eq!(handle.connection_count(), 3);
}

/// `Context::close` with a code that may not be sent or a reason over 123 bytes is
/// refused and changes nothing: the connection stays in the hub and open, its
/// socket usable. A valid call closes the socket and frees its place.
async fn closing_from_a_hook<S: Runtime, C: Runtime>() {
    let (addr, handle, closes) = start_with::<S>(Limits { max_connections: 2, ..Limits::default() });
    let mut ann = open::<C>(addr, "/desk/ann").await;
    let mut bob = open::<C>(addr, "/desk/bob").await;
    for (code, length, refusal) in [
        (1005, 0, "close code 1005 may not be sent"),
        (1006, 0, "close code 1006 may not be sent"),
        (999, 0, "close code 999 may not be sent"),
        (2999, 5, "close code 2999 may not be sent"),
        (5000, 5, "close code 5000 may not be sent"),
        (1000, 124, "close reason longer than 123 bytes"),
        (4000, 200, "close reason longer than 123 bytes"),
    ] {
        let case = format!("close {code} {length}");
        ann.send(&Message::text(case.as_str())).await.unwrap();
        assert_eq!(next::<C>(&mut ann).await, format!("close refused: cannot close with that: {refusal}"), "{case}");
        // Untouched: still in the hub under its name, and its socket still open.
        assert_eq!(handle.connection_count(), 2, "{case}");
        handle.push_to_name("ann", &Message::text("still yours")).unwrap();
        assert_eq!(next::<C>(&mut ann).await, "still yours", "{case}");
        ann.send(&Message::text("hi")).await.unwrap();
        assert_eq!(next::<C>(&mut ann).await, "you said hi", "{case}");
    }
    assert!(closes.lock().unwrap().is_empty());

    // The longest reason and an application code: closed, and out of the hub.
    let reason = "r".repeat(123);
    ann.send(&Message::text("close 4000 123")).await.unwrap();
    assert!(timeout::<C, _>(LIMIT, ann.recv()).await.expect("closed in time").is_none());
    let closed = ann.close_info().expect("closed");
    assert_eq!((closed.code, closed.reason.as_str()), (CloseCode(4000), reason.as_str()));
    assert!(closed.is_clean(), "{closed:?}");
    assert_eq!(handle.connection_count(), 1);
    assert!(handle.push_to_name("ann", &Message::text("x")).is_err());
    // Its place (of 2) is given back once the close handshake is over.
    let mut cy = None;
    for _ in 0..100 {
        if let Ok(ws) = connect::<C>(&parse_url(&format!("ws://{addr}/desk/cy")).unwrap(), Config::default()).await {
            cy = Some(ws);
            break;
        }
        C::sleep(Duration::from_millis(10)).await;
    }
    let mut cy = cy.expect("the closed connection's place was never given back");
    assert_eq!(next::<C>(&mut cy).await, "welcome cy");
    assert_eq!(closes.lock().unwrap().iter().map(|c| c.1).collect::<Vec<_>>(), [4000]);
    bob.send(&Message::text("hi")).await.unwrap();
    assert_eq!(next::<C>(&mut bob).await, "you said hi");
}

/// What is delivered to a connection between `on_upgrade` accepting it and its 101
/// being written (a push from its own hook, another connection's broadcast, a
/// close) waits for its socket and is queued on it first, in order.
async fn deliveries_before_the_socket_opens_are_kept<S: Runtime, C: Runtime>() {
    let (addr, handle, _closes) = start::<S>();
    let mut ws =
        connect::<C>(&parse_url(&format!("ws://{addr}/desk/dee?early=1")).unwrap(), Config::default()).await.unwrap();
    assert_eq!(next::<C>(&mut ws).await, "early bird");
    assert_eq!(next::<C>(&mut ws).await, "welcome dee");
    assert_eq!(handle.connection_count(), 1);

    // Closed by its own on_upgrade: the close follows the 101; nothing is left open.
    let mut late = connect::<C>(&parse_url(&format!("ws://{addr}/desk/eve?refuse_late=1")).unwrap(), Config::default())
        .await
        .expect("accepted, then closed");
    assert!(timeout::<C, _>(LIMIT, late.recv()).await.expect("closed in time").is_none());
    let closed = late.close_info().unwrap();
    assert_eq!((closed.code, closed.reason.as_str()), (CloseCode(4002), "not today"));
    assert_eq!(handle.connection_count(), 1);
}

/// What the gate's hooks and tickets did, in order: "admit PATH", "open NAME",
/// "close NAME", "dropped NAME" (a ticket).
type Log = Arc<Mutex<Vec<String>>>;

/// A reservation, as a service would hold one: made in `admit`, released when
/// dropped.
struct Pass {
    name: String,
    word: String,
    log: Log,
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.log.lock().unwrap().push(format!("dropped {}", self.name));
    }
}

/// Admits `/gate/{name}` asynchronously: refuses "banned"; with `?wait`, says so on
/// `waiting` and answers once `release` lets it; with `?never`, never answers.
/// An admitted upgrade's ticket carries its `?word`, which `on_open` sends; with
/// `?refuse`, `on_upgrade` refuses the upgrade without taking its ticket.
struct Gate {
    log: Log,
    waiting: async_channel::Sender<String>,
    release: async_channel::Receiver<()>,
    /// The tickets of the open connections, released when they close.
    kept: Mutex<HashMap<ConnId, Pass>>,
}

impl Service for Gate {
    async fn admit<'a>(&'a self, request: &'a AdmitRequest<'a>) -> Admit {
        self.log.lock().unwrap().push(format!("admit {}", request.request().path()));
        let name = request.param("name").unwrap_or("?").to_owned();
        if name == "banned" {
            return Admit::reject(StatusCode::FORBIDDEN, "banned by admit");
        }
        let word = request.query("word").unwrap_or_default().into_owned();
        // Reserved before the wait, as a cancelled wait must release it too.
        let pass = Pass { name: name.clone(), word, log: self.log.clone() };
        if request.query("never").is_some() {
            std::future::pending::<()>().await;
        }
        if request.query("wait").is_some() {
            // Either fails only once the test is over.
            let _ = self.waiting.send(name).await;
            let _ = self.release.recv().await;
        }
        Admit::allow_with(pass)
    }

    fn on_http(&self, request: &Request, _: &chinwag_core::chat::Hub) -> HttpResponse {
        HttpResponse::new(StatusCode::OK, "text/plain", format!("page at {}", request.path()))
    }

    fn on_upgrade(&self, cx: &mut Context<'_>) -> Decision {
        if cx.query("refuse").is_some() {
            return Decision::reject(StatusCode::CONFLICT, "refused after admit");
        }
        // A ticket of another type is not this one, and is left in place.
        assert!(cx.take_ticket::<String>().is_none());
        let Some(pass) = cx.take_ticket::<Pass>() else {
            return Decision::reject(StatusCode::INTERNAL_SERVER_ERROR, "no ticket");
        };
        assert!(cx.take_ticket::<Pass>().is_none(), "a ticket is taken once");
        cx.set_attribute("name", pass.name.clone());
        cx.set_attribute("word", pass.word.clone());
        self.kept.lock().unwrap().insert(cx.id(), pass);
        Decision::accept()
    }

    fn on_open(&self, cx: &mut Context<'_>) {
        assert!(cx.take_ticket::<Pass>().is_none(), "tickets are for on_upgrade");
        let (name, word) = (cx.attribute("name").unwrap().to_owned(), cx.attribute("word").unwrap().to_owned());
        self.log.lock().unwrap().push(format!("open {name}"));
        cx.push_text(format!("welcome {name}: {word}"));
    }

    fn on_text(&self, cx: &mut Context<'_>, text: &Utf8Bytes) {
        let name = cx.attribute("name").unwrap().to_owned();
        cx.broadcast(&Message::text(format!("{name}: {text}")));
    }

    fn on_close(&self, cx: &mut Context<'_>, _: &Closed) {
        self.log.lock().unwrap().push(format!("close {}", cx.attribute("name").unwrap()));
        self.kept.lock().unwrap().remove(&cx.id());
    }
}

/// A gate's server and the test's side of it.
struct Gated {
    addr: SocketAddr,
    handle: Handle,
    admin: Arc<dyn Admin>,
    log: Log,
    /// The name of each upgrade whose admit waits, once it does.
    waiting: async_channel::Receiver<String>,
    release: async_channel::Sender<()>,
}

impl Gated {
    fn start<S: Runtime>(config: Config) -> Self {
        let log = Log::default();
        let (waiting_tx, waiting) = async_channel::unbounded();
        let (release, release_rx) = async_channel::unbounded();
        let gate = Gate { log: log.clone(), waiting: waiting_tx, release: release_rx, kept: Mutex::default() };
        let (addr, handle, admin) =
            serve_with_admin::<S, _>(move || Server::new(gate).route("/gate/{name}").unwrap().config(config));
        Self { addr, handle, admin, log, waiting, release }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until `line` is in the log.
    async fn logged<C: Runtime>(&self, line: &str) {
        for _ in 0..500 {
            if self.log().iter().any(|l| l == line) {
                return;
            }
            C::sleep(Duration::from_millis(10)).await;
        }
        panic!("never logged {line:?}: {:?}", self.log());
    }

    /// The hooks' lines about `name` (not its admission).
    fn about(&self, name: &str) -> Vec<String> {
        self.log().into_iter().filter(|l| !l.starts_with("admit ") && l.ends_with(&format!(" {name}"))).collect()
    }
}

/// The status line and body of the answer to `request`.
async fn answer<C: Runtime>(addr: SocketAddr, request: &str) -> (String, String) {
    timeout::<C, _>(LIMIT, raw_answer::<C>(addr, request.as_bytes())).await.expect("an answer")
}

/// While an upgrade's admit waits, open connections go on exchanging messages
/// through the hub: the wait does not hold its lock. The waiting client gets its
/// answer only once admit gives it.
async fn admit_waits_without_the_lock<S: Runtime, C: Runtime>() {
    let gated = Gated::start::<S>(Config::default());
    let addr = gated.addr;
    let (mut ann, welcome) = welcomed::<C>(addr, "/gate/ann?word=hi").await;
    assert_eq!(welcome, "welcome ann: hi");

    let mut bob = C::connect("127.0.0.1", addr.port()).await.unwrap();
    write_all(&mut bob, upgrade_request(addr, "/gate/bob?wait&word=yo").as_bytes()).await.unwrap();
    assert_eq!(timeout::<C, _>(LIMIT, gated.waiting.recv()).await.unwrap().unwrap(), "bob");
    for round in 0..3 {
        ann.send(&Message::text(format!("round {round}"))).await.unwrap();
        let echo = timeout::<C, _>(Duration::from_secs(2), ann.recv()).await;
        assert!(
            matches!(&echo, Some(Some(Message::Text(t))) if t.as_str() == format!("ann: round {round}")),
            "the hub is held during admit's wait: {echo:?}"
        );
    }
    let early = timeout::<C, _>(Duration::from_millis(100), read_some(&mut bob)).await;
    assert!(early.is_none(), "answered before admit did: {early:?}");

    gated.release.send(()).await.unwrap();
    let mut answer = Vec::new();
    while !String::from_utf8_lossy(&answer).contains("welcome bob") {
        let more = timeout::<C, _>(LIMIT, read_some(&mut bob)).await.expect("the 101").unwrap();
        assert!(!more.is_empty(), "closed: {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&more);
    }
    assert!(answer.starts_with(b"HTTP/1.1 101 "), "{:?}", String::from_utf8_lossy(&answer));
    let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(server_frames(&answer[head_end..]), [(1, b"welcome bob: yo".to_vec())]);
}

/// Admit's ticket reaches on_upgrade, and lives as long as the service keeps it;
/// when the upgrade goes no further (on_upgrade refuses it, the client goes away
/// during the wait) it is dropped, and no other hook runs.
async fn tickets_reach_on_upgrade_or_are_dropped<S: Runtime, C: Runtime>() {
    let gated = Gated::start::<S>(Config::default());
    let addr = gated.addr;
    let (mut cat, welcome) = welcomed::<C>(addr, "/gate/cat?word=purr").await;
    assert_eq!(welcome, "welcome cat: purr");
    assert_eq!(gated.about("cat"), ["open cat"], "kept while the connection is open");
    cat.close(CloseCode::NORMAL, "").await.unwrap();
    gated.logged::<C>("dropped cat").await;
    assert_eq!(gated.about("cat"), ["open cat", "close cat", "dropped cat"]);

    // Refused by on_upgrade, which did not take the ticket: the server drops it.
    let (status, body) = answer::<C>(addr, &upgrade_request(addr, "/gate/dan?refuse")).await;
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 409 Conflict", "refused after admit"));
    gated.logged::<C>("dropped dan").await;
    assert_eq!(gated.about("dan"), ["dropped dan"]);

    // The client leaves while admit waits: once admit answers, its ticket is
    // dropped, and the connection is neither opened nor closed.
    let mut eve = C::connect("127.0.0.1", addr.port()).await.unwrap();
    write_all(&mut eve, upgrade_request(addr, "/gate/eve?wait").as_bytes()).await.unwrap();
    assert_eq!(timeout::<C, _>(LIMIT, gated.waiting.recv()).await.unwrap().unwrap(), "eve");
    drop(eve);
    // Time for the server to see the connection end before admit answers.
    C::sleep(Duration::from_millis(300)).await;
    assert!(gated.about("eve").is_empty(), "admit is not cut short: {:?}", gated.log());
    gated.release.send(()).await.unwrap();
    gated.logged::<C>("dropped eve").await;
    C::sleep(Duration::from_millis(100)).await;
    assert_eq!(gated.about("eve"), ["dropped eve"]);
}

/// Admit's refusal reaches the client, with its status and reason, for an upgrade
/// and for a plain request to the same path alike (a page checking before it
/// connects). A plain request it allows goes to on_http, its ticket dropped at
/// once; one off the route never reaches admit.
async fn admit_refuses_upgrades_and_plain_requests<S: Runtime, C: Runtime>() {
    let gated = Gated::start::<S>(Config::default());
    let addr = gated.addr;
    let refused = ("HTTP/1.1 403 Forbidden".to_owned(), "banned by admit".to_owned());
    assert_eq!(answer::<C>(addr, &upgrade_request(addr, "/gate/banned")).await, refused, "upgrade");
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    assert_eq!(answer::<C>(addr, &get("/gate/banned")).await, refused, "plain request");
    assert!(
        connect::<C>(&parse_url(&format!("ws://{addr}/gate/banned")).unwrap(), Config::default()).await.is_err(),
        "a WebSocket client is refused"
    );

    let allowed = answer::<C>(addr, &get("/gate/fay?word=x")).await;
    assert_eq!(allowed, ("HTTP/1.1 200 OK".to_owned(), "page at /gate/fay".to_owned()));
    assert_eq!(gated.about("fay"), ["dropped fay"], "the ticket of a plain request is dropped");

    let page = answer::<C>(addr, &get("/")).await;
    assert_eq!(page, ("HTTP/1.1 200 OK".to_owned(), "page at /".to_owned()));
    let admitted: Vec<String> = gated.log().into_iter().filter(|l| l.starts_with("admit ")).collect();
    assert_eq!(admitted, ["admit /gate/banned", "admit /gate/banned", "admit /gate/banned", "admit /gate/fay"]);
}

/// An admit that does not answer within the handshake timeout: the client gets
/// 503, and the waiting future is dropped (with what it had reserved).
async fn a_slow_admit_gets_503<S: Runtime, C: Runtime>() {
    let handshake_timeout = Duration::from_millis(400);
    let gated = Gated::start::<S>(Config { handshake_timeout: Some(handshake_timeout), ..Config::default() });
    let started = Instant::now();
    let (status, body) = answer::<C>(gated.addr, &upgrade_request(gated.addr, "/gate/gus?never")).await;
    let waited = started.elapsed();
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 503 Service Unavailable", "the server could not decide in time")
    );
    assert!(waited >= handshake_timeout.mul_f32(0.9) && waited < handshake_timeout * 5, "answered after {waited:?}");
    assert_eq!(gated.about("gus"), ["dropped gus"]);
    // Counted as what it is, not as a server at its connection limit (an operator
    // alerting on `server_full` would take a slow admit for missing capacity).
    let metrics = gated.admin.metrics();
    assert!(metrics.contains("chinwag_handshakes_refused_total{reason=\"admit_timeout\"} 1\n"), "{metrics}");
    assert!(metrics.contains("chinwag_handshakes_refused_total{reason=\"server_full\"} 0\n"), "{metrics}");
}

/// A shutdown ends admit's wait at once: the client gets 503, and the waiting
/// future is dropped (with what it had reserved).
async fn shutdown_ends_the_wait<S: Runtime, C: Runtime>() {
    let gated = Gated::start::<S>(Config::default());
    let addr = gated.addr;
    let mut hal = C::connect("127.0.0.1", addr.port()).await.unwrap();
    write_all(&mut hal, upgrade_request(addr, "/gate/hal?wait").as_bytes()).await.unwrap();
    assert_eq!(timeout::<C, _>(LIMIT, gated.waiting.recv()).await.unwrap().unwrap(), "hal");
    gated.handle.shutdown();
    let answer = timeout::<C, _>(Duration::from_secs(2), read_to_end(&mut hal)).await.expect("answered at once");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nthe server is shutting down"), "{answer}");
    assert_eq!(gated.about("hal"), ["dropped hal"]);
}

/// Panics where asked: in `admit`, `on_upgrade` or `on_open`
/// (`?panic=admit|upgrade|open`), in `on_text` (the text "panic"), in `on_http` (a
/// plain request for `/panic`). Records every text its `on_text` is given.
#[derive(Default)]
struct Fragile {
    texts: Arc<Mutex<Vec<String>>>,
}

impl Service for Fragile {
    async fn admit<'a>(&'a self, request: &'a AdmitRequest<'a>) -> Admit {
        assert!(request.query("panic").as_deref() != Some("admit"), "asked to, in admit");
        Admit::allow()
    }

    fn on_http(&self, request: &Request, _: &chinwag_core::chat::Hub) -> HttpResponse {
        assert!(request.path() != "/panic", "asked to, in on_http");
        HttpResponse::new(StatusCode::OK, "text/plain", "fine")
    }

    fn on_upgrade(&self, cx: &mut Context<'_>) -> Decision {
        assert!(cx.query("panic").as_deref() != Some("upgrade"), "asked to, in on_upgrade");
        Decision::accept()
    }

    fn on_open(&self, cx: &mut Context<'_>) {
        assert!(cx.query("panic").as_deref() != Some("open"), "asked to, in on_open");
        cx.push_text("welcome");
    }

    fn on_text(&self, cx: &mut Context<'_>, text: &Utf8Bytes) {
        self.texts.lock().unwrap().push(text.to_string());
        assert!(text.as_str() != "panic", "asked to, in on_text");
        cx.push_text(format!("you said {text}"));
    }
}

/// The connection whose hook panicked is closed with 1011 (a request gets 500);
/// every other connection, the hub and the server go on.
async fn a_panicking_hook_costs_only_its_connection<S: Runtime, C: Runtime>() {
    let texts = Arc::new(Mutex::new(Vec::new()));
    let fragile = Fragile { texts: texts.clone() };
    let (addr, handle) = serve::<S, _>(move || Server::new(fragile).route("/fragile/{user}").unwrap());
    let connect_to = |path: &str| {
        let url = parse_url(&format!("ws://{addr}{path}")).unwrap();
        async move { connect::<C>(&url, Config::default()).await.unwrap() }
    };
    let ended_with_1011 = |ws: &Client<C>| {
        let closed = ws.close_info().expect("closed");
        assert_eq!((closed.code, closed.reason.as_str()), (CloseCode::INTERNAL_ERROR, "internal server error"));
    };
    let (mut ann, mut bob) = (connect_to("/fragile/ann").await, connect_to("/fragile/bob").await);
    assert_eq!(next::<C>(&mut ann).await, "welcome");
    assert_eq!(next::<C>(&mut bob).await, "welcome");

    ann.send(&Message::text("panic")).await.unwrap();
    assert!(timeout::<C, _>(LIMIT, ann.recv()).await.expect("closed in time").is_none());
    ended_with_1011(&ann);
    bob.send(&Message::text("hi")).await.unwrap();
    assert_eq!(next::<C>(&mut bob).await, "you said hi");

    // Its on_open panicked: what it sends before it reads the 1011 reaches no hook.
    let mut dan = connect_to("/fragile/dan?panic=open").await;
    let _ = dan.send(&Message::text("after on_open panicked")).await;
    assert!(timeout::<C, _>(LIMIT, dan.recv()).await.expect("closed in time").is_none());
    ended_with_1011(&dan);

    let upgrade = upgrade_request(addr, "/fragile/cy?panic=upgrade");
    let (status, body) = raw_answer::<C>(addr, upgrade.as_bytes()).await;
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 500 Internal Server Error", "internal server error"));
    let upgrade = upgrade_request(addr, "/fragile/fay?panic=admit");
    let (status, body) = raw_answer::<C>(addr, upgrade.as_bytes()).await;
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 500 Internal Server Error", "internal server error"));
    let (status, body) = raw_answer::<C>(addr, b"GET /panic HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 500 Internal Server Error", "internal server error"));
    let (status, body) = raw_answer::<C>(addr, b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "fine"));

    // Counted; and nothing is wedged: a new connection is served, bob still is.
    assert_eq!(handle.stats().hook_panics, 5);
    let mut eve = connect_to("/fragile/eve").await;
    assert_eq!(next::<C>(&mut eve).await, "welcome");
    eve.send(&Message::text("hi")).await.unwrap();
    assert_eq!(next::<C>(&mut eve).await, "you said hi");
    bob.send(&Message::text("again")).await.unwrap();
    assert_eq!(next::<C>(&mut bob).await, "you said again");
    let deadline = Instant::now() + LIMIT;
    while handle.connection_count() != 2 {
        assert!(Instant::now() < deadline, "the panicked connections never left the hub");
        C::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*texts.lock().unwrap(), ["panic", "hi", "hi", "again"], "texts given to on_text");
}

chinwag_tests::runtime_suite! {
    limit: LIMIT * 3;
    scenarios: [
        names_groups_and_the_handle,
        closing_from_a_hook,
        deliveries_before_the_socket_opens_are_kept,
        admit_waits_without_the_lock,
        tickets_reach_on_upgrade_or_are_dropped,
        admit_refuses_upgrades_and_plain_requests,
        a_slow_admit_gets_503,
        shutdown_ends_the_wait,
        a_panicking_hook_costs_only_its_connection,
    ];
    tokio: chinwag_tokio::Tokio => chinwag_tokio::Tokio;
    async_std: chinwag_futures::AsyncStd => chinwag_futures::AsyncStd;
    smol: chinwag_futures::Smol => chinwag_futures::Smol;
}
