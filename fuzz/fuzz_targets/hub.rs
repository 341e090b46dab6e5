//! The chat hub and room rules: arbitrary sequences of opens (with arbitrary names
//! and ages), lines (commands included), disconnects and closes. Checks that
//! nothing panics, that every delivery goes to connections open when it was queued
//! (deliveries are checked after each step), and that
//! once everyone has left, nothing is left behind: no connection, name or group.
#![no_main]

use chinwag_core::chat::{ConnId, Delivery, Hub, room};

/// Reads a length-prefixed string (lossy UTF-8) from the front of `data`.
fn take_str<'a>(data: &mut &'a [u8]) -> String {
    let Some((&len, rest)) = data.split_first() else { return String::new() };
    let len = usize::from(len % 48).min(rest.len());
    let (s, rest) = rest.split_at(len);
    *data = rest;
    String::from_utf8_lossy(s).into_owned()
}

fn check_deliveries(hub: &mut Hub) {
    while let Some(delivery) = hub.poll_delivery() {
        match delivery {
            Delivery::Frame { to, .. } => {
                for conn in to {
                    assert!(hub.is_open(conn), "a frame for {conn:?}, which is not open");
                }
            }
            Delivery::Close { .. } => {}
        }
    }
}

fn leave(hub: &mut Hub, conn: ConnId) {
    let _ = room::leave(hub, conn);
    hub.close(conn);
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let mut hub = Hub::new();
    let mut open: Vec<ConnId> = Vec::new();
    while let Some((&op, rest)) = data.split_first() {
        data = rest;
        let pick = |open: &[ConnId], data: &mut &[u8]| -> Option<usize> {
            let (&i, rest) = data.split_first()?;
            *data = rest;
            (!open.is_empty()).then(|| usize::from(i) % open.len())
        };
        match op % 5 {
            0 => {
                let name = take_str(&mut data);
                let age = take_str(&mut data);
                let conn = hub.open();
                let age = (!age.is_empty()).then_some(age.as_str());
                if room::admit(&mut hub, conn, &name, age).is_ok() {
                    let _ = room::join(&mut hub, conn);
                    open.push(conn);
                } else {
                    hub.close(conn);
                }
            }
            1 | 2 => {
                let Some(i) = pick(&open, &mut data) else { continue };
                let text = take_str(&mut data);
                // Commands are likely: half the lines start with one.
                let text = if op % 5 == 2 {
                    let verbs = ["/msg ", "/join ", "/say ", "/leave ", "/users", "/rooms", "/help", "//", "/"];
                    format!("{}{text}", verbs[usize::from(op / 5) % verbs.len()])
                } else {
                    text
                };
                let _ = room::say(&mut hub, open[i], &text);
            }
            3 => {
                let Some(i) = pick(&open, &mut data) else { continue };
                leave(&mut hub, open.swap_remove(i));
            }
            _ => {
                let Some(i) = pick(&open, &mut data) else { continue };
                let conn = open.swap_remove(i);
                let _ = hub.disconnect(conn, chinwag_core::CloseCode::POLICY_VIOLATION, "fuzz");
                leave(&mut hub, conn);
            }
        }
        check_deliveries(&mut hub);
    }
    for conn in open.drain(..) {
        leave(&mut hub, conn);
        check_deliveries(&mut hub);
    }
    assert!(hub.is_empty(), "connections left behind");
    assert_eq!(hub.name_count(), 0, "names left behind");
    assert_eq!(hub.group_count(), 0, "groups left behind");
});
