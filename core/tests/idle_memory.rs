//! What an open connection keeps on the heap while nothing happens: a server
//! holds tens of thousands of idle connections, so every byte here is multiplied.
//! Counted with a global allocator that tracks the bytes live on this thread.

mod common;

use chinwag_core::{Accept, Config, Connection, Event, Message};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

use common::{drain_transmit, masked};

struct Counting;

thread_local! {
    /// Bytes allocated and not yet freed by this thread (tests run on threads of
    /// their own, so they do not see each other's allocations).
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    // `try_with`: the thread-local may be gone while a thread shuts down.
    let _ = LIVE.try_with(|live| live.set(live.get() + delta));
}

// SAFETY: every call is forwarded to the system allocator unchanged.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.with(Cell::get)
}

const REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\nUser-Agent: a browser with a long name/1.0\r\n\r\n";

/// Takes every event, answering the request and echoing messages.
fn drain_events(conn: &mut Connection, now: Instant) {
    while let Some(event) = conn.poll_event(now) {
        match event {
            Event::UpgradeRequest(_) => conn.accept(now, Accept::new()).expect("accept"),
            Event::Text(text) => conn.send(now, &Message::Text(text)).expect("echo"),
            _ => {}
        }
    }
}

/// A server connection through its handshake, the 101 written; and the heap
/// bytes live before it was made. The settings are shared, made beforehand, as a
/// server's are: one copy for all its connections.
fn opened(now: Instant) -> (Connection, isize) {
    thread_local! {
        static SETTINGS: Arc<Config> = Arc::new(Config::default());
    }
    let settings = SETTINGS.with(Arc::clone);
    let before = live();
    let mut conn = Connection::server(settings, now);
    conn.receive(now, REQUEST);
    drain_events(&mut conn, now);
    drop(drain_transmit(&mut conn));
    assert_eq!(conn.state(), chinwag_core::State::Open);
    (conn, before)
}

#[test]
fn an_open_idle_connection_holds_no_heap_memory() {
    let (_conn, before) = opened(Instant::now());
    // The request, the decision, the 101 response and the event queue are all
    // gone once the response is written: the connection is its struct alone.
    assert_eq!(live() - before, 0, "heap bytes an idle open connection keeps");
}

#[test]
fn after_messages_an_idle_connection_keeps_only_its_frame_buffer() {
    let now = Instant::now();
    let (mut conn, before) = opened(now);
    for i in 0..50 {
        conn.receive(now, &masked(0x81, format!("line {i}").as_bytes()));
        drain_events(&mut conn, now);
        drop(drain_transmit(&mut conn));
    }
    // Messages and events are freed as they are taken; what stays is the buffer
    // replies are encoded into, sized by the largest reply (here a few bytes),
    // kept so that the next reply needs no allocation.
    let kept = live() - before;
    assert!(kept <= 64, "an idle connection kept {kept} heap bytes after echoing small messages");
}

/// A burst of lines leaves the buffer it was encoded into (kept while the
/// connection is busy); once the connection has been quiet for the keepalive
/// interval, the ping is written and the buffer given back: a chat's idle users
/// hold none after a storm of join lines.
#[test]
fn a_connection_quiet_for_the_keepalive_interval_gives_its_buffers_back() {
    let now = Instant::now();
    let interval = std::time::Duration::from_secs(10);
    // The settings first, as a server makes them: one copy for all connections.
    let settings = Arc::new(Config { keepalive_interval: Some(interval), ..Config::default() });
    let before = live();
    let mut conn = Connection::server(settings, now);
    conn.receive(now, REQUEST);
    drain_events(&mut conn, now);
    drop(drain_transmit(&mut conn));
    for i in 0..60 {
        conn.send_text(now, &format!("user{i} with age 30 connected to chat")).unwrap();
    }
    drop(drain_transmit(&mut conn));
    let kept = live() - before;
    assert!(kept > 1000, "the burst's buffer is not kept while busy ({kept} bytes)");
    let quiet = now + interval;
    conn.handle_timeout(quiet);
    assert_eq!(drain_transmit(&mut conn), [0x89, 0x00], "the keepalive ping");
    assert_eq!(live() - before, 0, "heap bytes a quiet connection keeps after its ping");
}

/// Every idle connection is this struct, many thousands of times over on a
/// server: what only some connections need (a client's mask source, a
/// subprotocol, compression, a close in progress or done) stays behind one
/// pointer. Growth here is growth of every server's idle cost.
#[cfg(target_pointer_width = "64")]
#[test]
fn the_connection_struct_stays_small() {
    let size = std::mem::size_of::<Connection>();
    assert!(size <= 304, "Connection is {size} bytes");
}
