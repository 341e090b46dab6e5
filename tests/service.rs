//! The service API as an embedding application uses it: a service of its own with
//! named connections and groups, and a handle pushing from outside the hooks. The
//! same service runs unchanged on every runtime.

use chinwag_core::chat::HubError;
use chinwag_core::{CloseCode, Closed, Config, Message, Utf8Bytes};
use chinwag_driver::{Runtime, WebSocket, connect, parse_url};
use chinwag_service::{Context, Decision, Handle, Limits, Server, Service};
use chinwag_tests::timeout;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        S::block_on(async move {
            let server = Server::new(service).route("/desk/{user}").unwrap().limits(limits);
            let listener = S::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            tx.send((S::local_addr(&listener).unwrap(), server.handle())).unwrap();
            server.serve::<S>(listener).await.unwrap();
        })
    });
    let (addr, handle) = rx.recv().unwrap();
    (addr, handle, closes)
}

async fn open<C: Runtime>(addr: SocketAddr, path: &str) -> Client<C> {
    let mut ws = connect::<C>(&parse_url(&format!("ws://{addr}{path}")).unwrap(), Config::default()).await.unwrap();
    assert!(matches!(ws.recv().await, Some(Message::Text(t)) if t.starts_with("welcome ")));
    ws
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

chinwag_tests::runtime_suite! {
    limit: LIMIT * 3;
    scenarios: [names_groups_and_the_handle, closing_from_a_hook, deliveries_before_the_socket_opens_are_kept];
    tokio: chinwag_tokio::Tokio => chinwag_tokio::Tokio;
    async_std: chinwag_futures::AsyncStd => chinwag_futures::AsyncStd;
    smol: chinwag_futures::Smol => chinwag_futures::Smol;
}
