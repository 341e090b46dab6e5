//! The chat room's rules, seen as what each member's screen shows.

use chinwag_core::chat::{ConnId, Delivery, Hub, Replica};
use chinwag_core::frame::FrameHeader;
use std::collections::BTreeMap;

/// Every member's transcript, built from the hub's deliveries.
#[derive(Default)]
struct Screens(BTreeMap<ConnId, Vec<String>>);

impl Screens {
    fn collect(&mut self, hub: &mut Hub) {
        while let Some(delivery) = hub.poll_delivery() {
            let Delivery::Frame { to, frame } = delivery else { continue };
            let bytes = frame.as_bytes();
            let (header, at) = FrameHeader::decode(bytes).unwrap().unwrap();
            assert_eq!(header.opcode, 1, "the chat sends text");
            let text = std::str::from_utf8(&bytes[at..]).unwrap().to_owned();
            for conn in to {
                self.0.entry(conn).or_default().push(text.clone());
            }
        }
    }

    fn take(&mut self, conn: ConnId) -> Vec<String> {
        self.0.remove(&conn).unwrap_or_default()
    }
}

fn enter(hub: &mut Hub, chat: &mut Replica, screens: &mut Screens, name: &str, age: Option<&str>) -> ConnId {
    let conn = hub.open();
    chat.admit(hub, conn, name, age).unwrap();
    chat.open(hub, conn);
    screens.collect(hub);
    conn
}

#[test]
fn the_guide_scenario() {
    let (mut hub, mut chat, mut screens) = (Hub::new(), Replica::alone(), Screens::default());
    let alice = enter(&mut hub, &mut chat, &mut screens, "Alice", Some("20"));
    assert_eq!(
        screens.take(alice),
        ["Hi Alice! You have successfully connected to the chat", "Alice with age 20 connected to chat"]
    );
    let bob = enter(&mut hub, &mut chat, &mut screens, "Bob", None);
    assert_eq!(screens.take(alice), ["Bob connected to chat"]);
    assert_eq!(screens.take(bob), ["Hi Bob! You have successfully connected to the chat", "Bob connected to chat"]);

    assert_eq!(chat.text(&mut hub, bob, "hello <b>all</b>"), ["Bob: hello <b>all</b>"]);
    screens.collect(&mut hub);
    assert_eq!(screens.take(alice), ["Bob: hello <b>all</b>"]);
    assert_eq!(screens.take(bob), ["Bob: hello <b>all</b>"]);

    assert_eq!(chat.close(&mut hub, bob), ["Bob left the chat"]);
    screens.collect(&mut hub);
    assert_eq!(screens.take(alice), ["Bob left the chat"]);
    assert!(screens.take(bob).is_empty(), "nothing reaches a closed connection");
}

#[test]
fn admission() {
    let (mut hub, mut chat) = (Hub::new(), Replica::alone());
    let refused = |hub: &mut Hub, chat: &mut Replica, name: &str, age: Option<&str>| {
        let conn = hub.open();
        let r = chat.admit(hub, conn, name, age).err().map(|r| r.status);
        chat.close(hub, conn);
        r
    };
    let (hub, chat) = (&mut hub, &mut chat);
    assert_eq!(refused(hub, chat, "", None), Some(400));
    assert_eq!(refused(hub, chat, &"x".repeat(33), None), Some(400));
    assert_eq!(refused(hub, chat, &"é".repeat(32), None), None, "32 characters, 64 bytes");
    assert_eq!(refused(hub, chat, "a\u{7}b", None), Some(400));
    assert_eq!(refused(hub, chat, " ann", None), Some(400));
    for age in ["-1", "151", "abc", "", "+3", "2.5", "99999999999"] {
        assert_eq!(refused(hub, chat, "ann", Some(age)), Some(400), "age {age:?}");
    }
    assert_eq!(refused(hub, chat, "ann", Some("0")), None);
    assert_eq!(refused(hub, chat, "ann", Some("150")), None);

    let taken = hub.open();
    chat.admit(hub, taken, "Zoë", None).unwrap();
    assert_eq!(refused(hub, chat, "Zoë", None), Some(409));
    assert_eq!(refused(hub, chat, "Zoe\u{308}", None), Some(409), "the same name with a combining diaeresis");
    assert_eq!(refused(hub, chat, "zoë", None), None, "case differs: a different name");
    chat.open(hub, taken);
    assert_eq!(refused(hub, chat, "Zoë", None), Some(409), "joined: in the chat");
    chat.close(hub, taken);
    assert_eq!(refused(hub, chat, "Zoë", None), None, "the name is free once its holder left");
}

#[test]
fn direct_messages_and_rooms() {
    let (mut hub, mut chat, mut screens) = (Hub::new(), Replica::alone(), Screens::default());
    let ann = enter(&mut hub, &mut chat, &mut screens, "Ann Lee", None);
    let bob = enter(&mut hub, &mut chat, &mut screens, "bob", None);
    let cy = enter(&mut hub, &mut chat, &mut screens, "cy", None);
    screens.0.clear();

    chat.text(&mut hub, bob, "/msg \"Ann Lee\" psst");
    screens.collect(&mut hub);
    assert_eq!(screens.take(ann), ["bob -> Ann Lee: psst"]);
    assert_eq!(screens.take(bob), ["bob -> Ann Lee: psst"]);
    assert!(screens.take(cy).is_empty());

    chat.text(&mut hub, bob, "/join #ops");
    chat.text(&mut hub, cy, "/join ops");
    chat.text(&mut hub, cy, "/say ops deploy at 5");
    chat.text(&mut hub, ann, "/say ops let me in");
    screens.collect(&mut hub);
    assert_eq!(screens.take(bob), ["bob joined #ops", "cy joined #ops", "#ops cy: deploy at 5"]);
    assert_eq!(screens.take(cy), ["cy joined #ops", "#ops cy: deploy at 5"]);
    assert_eq!(screens.take(ann), ["error: you are not in #ops (try /join ops)"]);

    chat.text(&mut hub, bob, "/leave ops");
    chat.text(&mut hub, bob, "/rooms");
    chat.close(&mut hub, cy);
    chat.text(&mut hub, ann, "/join ops");
    screens.collect(&mut hub);
    assert_eq!(screens.take(bob), ["bob left #ops", "you are in no rooms", "cy left the chat"]);
    assert_eq!(screens.take(ann), ["cy left the chat", "Ann Lee joined #ops"], "the room was empty, and is new again");
}

/// A newcomer whose name is reserved (admitted at the upgrade) but whose socket is
/// not open yet has not joined: the lines said meanwhile are not theirs, so their
/// screen starts with their greeting.
#[test]
fn lines_reach_only_members_who_have_joined() {
    let (mut hub, mut chat, mut screens) = (Hub::new(), Replica::alone(), Screens::default());
    let ann = enter(&mut hub, &mut chat, &mut screens, "ann", None);
    screens.0.clear();
    let bob = hub.open();
    chat.admit(&mut hub, bob, "bob", None).unwrap();
    chat.text(&mut hub, ann, "anyone?");
    screens.collect(&mut hub);
    assert!(screens.take(bob).is_empty(), "not joined yet");
    chat.open(&mut hub, bob);
    screens.collect(&mut hub);
    assert_eq!(screens.take(bob), ["Hi bob! You have successfully connected to the chat", "bob connected to chat"]);
    assert_eq!(screens.take(ann), ["ann: anyone?", "bob connected to chat"]);
    chat.text(&mut hub, bob, "/rooms");
    screens.collect(&mut hub);
    assert_eq!(screens.take(bob), ["you are in no rooms"], "the main chat is not listed as a room");
}

#[test]
fn a_room_is_one_room_in_either_normal_form() {
    let (mut hub, mut chat, mut screens) = (Hub::new(), Replica::alone(), Screens::default());
    let ann = enter(&mut hub, &mut chat, &mut screens, "ann", None);
    let bob = enter(&mut hub, &mut chat, &mut screens, "bob", None);
    screens.0.clear();
    chat.text(&mut hub, ann, "/join caf\u{e9}"); // precomposed é
    chat.text(&mut hub, bob, "/join cafe\u{301}"); // e + combining acute
    chat.text(&mut hub, bob, "/say #cafe\u{301} hello");
    screens.collect(&mut hub);
    assert_eq!(
        screens.take(ann),
        ["ann joined #caf\u{e9}", "bob joined #caf\u{e9}", "#caf\u{e9} bob: hello"],
        "one room, shown in NFC"
    );
    chat.text(&mut hub, ann, "/rooms");
    screens.collect(&mut hub);
    assert_eq!(screens.take(ann), ["your rooms: #caf\u{e9}"]);
}

#[test]
fn mistakes_reach_only_the_sender() {
    let (mut hub, mut chat, mut screens) = (Hub::new(), Replica::alone(), Screens::default());
    let ann = enter(&mut hub, &mut chat, &mut screens, "ann", None);
    let bob = enter(&mut hub, &mut chat, &mut screens, "bob", None);
    screens.0.clear();
    for command in
        ["/msg", "/msg bob", "/msg nobody hi", "/join", "/say ops", "/say ops hi", "/leave ops", "/dance", "/"]
    {
        assert!(chat.text(&mut hub, ann, command).is_empty(), "{command} is not a public line");
    }
    screens.collect(&mut hub);
    assert!(screens.take(bob).is_empty());
    let answers = screens.take(ann);
    assert_eq!(answers.len(), 9);
    assert!(answers.iter().all(|a| a.starts_with("error: ")), "{answers:?}");
    assert_eq!(answers[0], "error: usage: /msg NAME TEXT");
    assert_eq!(answers[2], "error: no one named nobody is online");
    assert_eq!(answers[7], "error: unknown command /dance (try /help)");

    chat.text(&mut hub, ann, "//shrug");
    chat.text(&mut hub, ann, "/users");
    screens.collect(&mut hub);
    assert_eq!(screens.take(bob), ["ann: /shrug"]);
    assert_eq!(screens.take(ann), ["ann: /shrug", "online (2): ann, bob"]);
}

#[test]
fn direct_messages_find_a_name_in_either_normal_form() {
    let (mut hub, mut chat, mut screens) = (Hub::new(), Replica::alone(), Screens::default());
    // Joined with a decomposed name: stored, and shown, as "é" (NFC).
    let e = enter(&mut hub, &mut chat, &mut screens, "e\u{301}", None);
    let zoe = enter(&mut hub, &mut chat, &mut screens, "Zoë", None);
    let bob = enter(&mut hub, &mut chat, &mut screens, "bob", None);
    screens.0.clear();
    for (to, text) in [("e\u{301}", "decomposed"), ("\u{e9}", "composed")] {
        chat.text(&mut hub, bob, &format!("/msg {to} {text}"));
        screens.collect(&mut hub);
        let line = format!("bob -> \u{e9}: {text}");
        assert_eq!(screens.take(e), [line.as_str()], "/msg {to:?}");
        assert_eq!(screens.take(bob), [line.as_str()]);
    }
    // And the other way round: a composed name reached in decomposed form, quoted.
    chat.text(&mut hub, e, "/msg \"Zoe\u{308}\" hi");
    screens.collect(&mut hub);
    assert_eq!(screens.take(zoe), ["\u{e9} -> Zoë: hi"]);
    assert_eq!(screens.take(e), ["\u{e9} -> Zoë: hi"]);
}

proptest::proptest! {
    /// Whatever mix of precomposed and combining characters a name is typed
    /// with, at the door or in /msg, the same name reaches the same member.
    #[test]
    fn direct_messages_reach_canonically_equivalent_names(
        typed in "[a-zA-Zé\u{e9}\u{c5}\u{1e9b}\u{f1}ë]{0,3}(e\u{301}|E\u{301}\u{323}|\u{212b}|A\u{30a}|n\u{303}|\u{17f}\u{323}\u{307})[a-z\u{301}\u{308}]{0,3}",
        in_msg in 0..3u8,
    ) {
        use unicode_normalization::UnicodeNormalization;
        let (mut hub, mut chat, mut screens) = (Hub::new(), Replica::alone(), Screens::default());
        let member = hub.open();
        let stored = chat.admit(&mut hub, member, &typed, None).unwrap();
        proptest::prop_assert_eq!(&stored, &typed.nfc().collect::<String>());
        chat.open(&mut hub, member);
        let sender = enter(&mut hub, &mut chat, &mut screens, "sender", None);
        screens.0.clear();
        let to: String = match in_msg {
            0 => typed.clone(),
            1 => typed.nfc().collect(),
            _ => typed.nfd().collect(),
        };
        chat.text(&mut hub, sender, &format!("/msg {to} hi"));
        screens.collect(&mut hub);
        let line = format!("sender -> {stored}: hi");
        proptest::prop_assert_eq!(screens.take(member), vec![line.clone()]);
        proptest::prop_assert_eq!(screens.take(sender), vec![line]);
    }
}
