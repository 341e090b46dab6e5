//! The chat server end to end, on every runtime: the guide's scenario with several
//! clients (ours and tokio-tungstenite, which nobody here wrote), refusals, commands,
//! the page, and shutdown.

use chinwag_core::deflate::DeflateConfig;
use chinwag_core::{CloseCode, Config, HandshakeError, Message};
use chinwag_driver::{Error, Runtime, connect, parse_url};
use chinwag_service::{Handle, Limits};
use chinwag_tests::chat_client::{join, lines, next, nothing_before};
use chinwag_tests::{raw_exchange, start_chat, timeout};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_tungstenite::tungstenite;

const LIMIT: Duration = Duration::from_secs(10);

/// Starts the chat server, with its default settings, on runtime `S`.
fn start_default_chat<S: Runtime>() -> (SocketAddr, Handle) {
    start_chat::<S>(chinwag::chat::config(), Limits::default())
}

async fn guide_scenario<S: Runtime, C: Runtime>() {
    let (addr, handle) = start_default_chat::<S>();
    let mut alice = join::<C>(addr, "/chat/Alice?age=20").await;
    assert_eq!(
        lines::<C>(&mut alice, 2).await,
        ["Hi Alice! You have successfully connected to the chat", "Alice with age 20 connected to chat"]
    );
    let mut bob = join::<C>(addr, "/chat/Bob").await;
    assert_eq!(
        lines::<C>(&mut bob, 2).await,
        ["Hi Bob! You have successfully connected to the chat", "Bob connected to chat"]
    );
    assert_eq!(next::<C>(&mut alice).await, "Bob connected to chat");

    // An independent client (tokio-tungstenite), with a percent-encoded name.
    let (carol_tx, carol_rx) = std::sync::mpsc::channel::<String>();
    let (say_tx, say_rx) = std::sync::mpsc::channel::<&'static str>();
    let carol = std::thread::spawn(move || {
        ::tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async move {
            let (mut ws, response) =
                tokio_tungstenite::connect_async(format!("ws://{addr}/chat/Carol%20C?age=31")).await.unwrap();
            assert_eq!(response.status(), 101);
            for _ in 0..2 {
                let line = ws.next().await.unwrap().unwrap().into_text().unwrap().to_string();
                carol_tx.send(line).unwrap();
            }
            ws.send(tungstenite::Message::text(say_rx.recv().unwrap())).await.unwrap();
            // Carol sees her own line, Bob's line, then Bob leaving.
            for _ in 0..3 {
                let line = ws.next().await.unwrap().unwrap().into_text().unwrap().to_string();
                carol_tx.send(line).unwrap();
            }
            ws.close(None).await.unwrap();
            while ws.next().await.is_some() {}
        })
    });
    let carol_lines = |n| -> Vec<String> { (0..n).map(|_| carol_rx.recv_timeout(LIMIT).unwrap()).collect() };
    assert_eq!(
        carol_lines(2),
        ["Hi Carol C! You have successfully connected to the chat", "Carol C with age 31 connected to chat"]
    );
    assert_eq!(next::<C>(&mut alice).await, "Carol C with age 31 connected to chat");
    assert_eq!(next::<C>(&mut bob).await, "Carol C with age 31 connected to chat");

    say_tx.send("hello from <b>Carol</b>").unwrap();
    for ws in [&mut alice, &mut bob] {
        assert_eq!(next::<C>(ws).await, "Carol C: hello from <b>Carol</b>");
    }
    bob.send(&Message::text("hi")).await.unwrap();
    assert_eq!(next::<C>(&mut alice).await, "Bob: hi");
    assert_eq!(next::<C>(&mut bob).await, "Bob: hi");
    bob.close(CloseCode::NORMAL, "").await.unwrap();
    assert_eq!(next::<C>(&mut alice).await, "Bob left the chat");
    assert_eq!(carol_lines(3), ["Carol C: hello from <b>Carol</b>", "Bob: hi", "Bob left the chat"]);
    carol.join().unwrap();
    assert_eq!(next::<C>(&mut alice).await, "Carol C left the chat");
    nothing_before::<C>(&mut alice, "/users", "online (1): Alice").await;
    assert_eq!(handle.connection_count(), 1);
}

async fn refusals<S: Runtime, C: Runtime>() {
    let (addr, _handle) = start_default_chat::<S>();
    let _alice = join::<C>(addr, "/chat/Alice").await;
    let status = |path: &'static str| async move {
        match connect::<C>(&parse_url(&format!("ws://{addr}{path}")).unwrap(), Config::default()).await {
            Err(Error::Handshake(HandshakeError::UnexpectedStatus(s))) => s,
            Ok(_) => 101,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(status("/chat/Alice").await, 409, "a name already in the chat");
    assert_eq!(status("/chat/Alic%65").await, 409, "the same name, percent-encoded");
    assert_eq!(status(&*Box::leak(format!("/chat/{}", "x".repeat(33)).into_boxed_str())).await, 400);
    assert_eq!(status("/chat/bell%07").await, 400, "a control character");
    assert_eq!(status("/chat/%FF").await, 400, "not UTF-8");
    assert_eq!(status("/chat/Bob?age=old").await, 400);
    assert_eq!(status("/chat/Bob?age=151").await, 400);
    assert_eq!(status("/chat/").await, 404, "no name at all");
    assert_eq!(status("/elsewhere").await, 404);
    assert_eq!(status("/chat/Bob?age=0").await, 101);

    // The reason is in the response body, as plain text.
    let response = raw_exchange::<C>(addr, chinwag_tests::upgrade_request(addr, "/chat/Alice").as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 409 Conflict\r\n"), "{response}");
    assert!(response.ends_with("Alice is already in the chat; choose another name"), "{response}");
}

async fn rooms_and_direct_messages<S: Runtime, C: Runtime>() {
    let (addr, _handle) = start_default_chat::<S>();
    let mut ann = join::<C>(addr, "/chat/ann").await;
    let mut bob = join::<C>(addr, "/chat/bob").await;
    let mut cy = join::<C>(addr, "/chat/cy").await;
    lines::<C>(&mut ann, 4).await;
    lines::<C>(&mut bob, 3).await;
    lines::<C>(&mut cy, 2).await;

    ann.send(&Message::text("/msg cy lunch?")).await.unwrap();
    assert_eq!(next::<C>(&mut cy).await, "ann -> cy: lunch?");
    assert_eq!(next::<C>(&mut ann).await, "ann -> cy: lunch?");
    bob.send(&Message::text("/join ops")).await.unwrap();
    assert_eq!(next::<C>(&mut bob).await, "bob joined #ops");
    cy.send(&Message::text("/join ops")).await.unwrap();
    assert_eq!(next::<C>(&mut bob).await, "cy joined #ops");
    assert_eq!(next::<C>(&mut cy).await, "cy joined #ops");
    cy.send(&Message::text("/say ops ship it")).await.unwrap();
    assert_eq!(next::<C>(&mut bob).await, "#ops cy: ship it");
    assert_eq!(next::<C>(&mut cy).await, "#ops cy: ship it");
    // Nothing of the direct message to cy nor of the room reached ann: the
    // answer to her next command is the next thing she gets.
    nothing_before::<C>(&mut ann, "/msg nobody hi", "error: no one named nobody is online").await;
    // Binary messages are not part of the chat: the sender is told, the rest goes on.
    ann.send(&Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(next::<C>(&mut ann).await, "error: the chat only takes text messages");
    // Neither of ann's errors (nor her binary message) reached bob.
    nothing_before::<C>(&mut bob, "/rooms", "your rooms: #ops").await;
}

async fn shutdown_sends_going_away<S: Runtime, C: Runtime>() {
    let (addr, handle) = start_default_chat::<S>();
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(join::<C>(addr, &format!("/chat/user{i}")).await);
    }
    handle.shutdown();
    for ws in &mut clients {
        while timeout::<C, _>(LIMIT, ws.recv()).await.expect("closed in time").is_some() {}
        let closed = ws.close_info().unwrap();
        assert_eq!((closed.code, closed.reason.as_str()), (CloseCode::GOING_AWAY, "server shutting down"));
        assert!(closed.is_clean());
    }
    // No new connections are accepted.
    assert!(connect::<C>(&parse_url(&format!("ws://{addr}/chat/late")).unwrap(), Config::default()).await.is_err());
}

async fn the_page_is_served_and_self_contained<S: Runtime, C: Runtime>() {
    let (addr, _handle) = start_default_chat::<S>();
    let page = raw_exchange::<C>(addr, format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await;
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(page.contains("content-type: text/html; charset=utf-8\r\n"));
    for needed in [
        "id=\"name\"",
        "id=\"age\"",
        "id=\"connect\"",
        "id=\"send\"",
        "id=\"disconnect\"",
        "Server closed the connection",
    ] {
        assert!(page.contains(needed), "the page lacks {needed}");
    }
    for outside in ["<script src", "<link ", "http://", "https://", "innerHTML"] {
        assert!(!page.contains(outside), "the page must work offline and render text only: found {outside}");
    }
}

/// permessage-deflate: the chat accepts it by default; a client that offers it and
/// one that does not chat together, each getting every line (the broadcast is
/// compressed for one and plain for the other), long lines and short ones.
async fn compressed_and_plain_clients_chat_together<S: Runtime, C: Runtime>() {
    let (addr, _handle) = start_default_chat::<S>();
    let offer = parse_url(&format!("ws://{addr}/chat/Zip")).unwrap().with_deflate(DeflateConfig::default());
    let mut zip = connect::<C>(&offer, Config::default()).await.unwrap();
    let agreed = zip.deflate().expect("the chat accepts permessage-deflate");
    assert!(agreed.server_no_context_takeover && agreed.client_no_context_takeover, "{agreed:?}");
    assert_eq!(
        lines::<C>(&mut zip, 2).await,
        ["Hi Zip! You have successfully connected to the chat", "Zip connected to chat"]
    );
    let mut plain = join::<C>(addr, "/chat/Plain").await;
    assert!(plain.deflate().is_none());
    assert_eq!(
        lines::<C>(&mut plain, 2).await,
        ["Hi Plain! You have successfully connected to the chat", "Plain connected to chat"]
    );
    assert_eq!(next::<C>(&mut zip).await, "Plain connected to chat");
    let long = "{\"text\": \"compress me, compress me, compress me\"} ".repeat(200);
    for (from, line) in [("Zip", long.as_str()), ("Plain", long.as_str()), ("Zip", "hi"), ("Plain", "é€😀 ok")] {
        let sender = if from == "Zip" { &mut zip } else { &mut plain };
        sender.send(&Message::text(line)).await.unwrap();
        let expected = format!("{from}: {line}");
        assert_eq!(next::<C>(&mut zip).await, expected);
        assert_eq!(next::<C>(&mut plain).await, expected);
    }
}

chinwag_tests::runtime_suite! {
    limit: LIMIT * 3;
    scenarios: [guide_scenario, refusals, rooms_and_direct_messages, shutdown_sends_going_away, the_page_is_served_and_self_contained, compressed_and_plain_clients_chat_together];
    tokio: chinwag_tokio::Tokio => chinwag_tokio::Tokio;
    async_std: chinwag_futures::AsyncStd => chinwag_futures::AsyncStd;
    smol_client_on_async_std_server: chinwag_futures::AsyncStd => chinwag_futures::Smol;
}
