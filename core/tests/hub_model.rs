//! Model-based property test of the hub: random sequences of opens, closes, name and
//! group operations and pushes, checked against a model made of plain sets.
//!
//! Checked after every step: each delivery goes to exactly the recipients the model
//! expects (so nothing reaches a closed connection or a non-member, and every member
//! gets a group message once); errors match; and at the end every connection's
//! transcript equals the model's, in order.

use chinwag_core::chat::{ConnId, Delivery, Hub, HubError};
use chinwag_core::frame::FrameHeader;
use chinwag_core::{CloseCode, Message};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Debug, Clone)]
enum Op {
    Open,
    Close(usize),
    Disconnect(usize),
    StoreName(usize, u8),
    RemoveName(u8),
    Join(usize, u8),
    Leave(usize, u8),
    RemoveGroup(u8),
    Push(usize),
    PushName(u8),
    PushGroup(u8),
    Broadcast,
    BroadcastExcept(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0usize..8;
    let n = 0u8..3;
    prop_oneof![
        3 => Just(Op::Open),
        1 => k.clone().prop_map(Op::Close),
        1 => k.clone().prop_map(Op::Disconnect),
        2 => (k.clone(), n.clone()).prop_map(|(k, n)| Op::StoreName(k, n)),
        1 => n.clone().prop_map(Op::RemoveName),
        3 => (k.clone(), n.clone()).prop_map(|(k, g)| Op::Join(k, g)),
        1 => (k.clone(), n.clone()).prop_map(|(k, g)| Op::Leave(k, g)),
        1 => n.clone().prop_map(Op::RemoveGroup),
        2 => k.clone().prop_map(Op::Push),
        2 => n.clone().prop_map(Op::PushName),
        3 => n.clone().prop_map(Op::PushGroup),
        2 => Just(Op::Broadcast),
        1 => k.prop_map(Op::BroadcastExcept),
    ]
}

#[derive(Default)]
struct Model {
    open: BTreeSet<ConnId>,
    names: HashMap<String, ConnId>,
    groups: HashMap<String, BTreeSet<ConnId>>,
    transcripts: BTreeMap<ConnId, Vec<String>>,
}

impl Model {
    fn forget(&mut self, c: ConnId) {
        self.open.remove(&c);
        self.names.retain(|_, holder| *holder != c);
        for members in self.groups.values_mut() {
            members.remove(&c);
        }
        self.groups.retain(|_, m| !m.is_empty());
    }
}

fn text_of(frame: &chinwag_core::SharedFrame) -> String {
    let bytes = frame.as_bytes();
    let (_, at) = FrameHeader::decode(bytes).unwrap().unwrap();
    String::from_utf8(bytes[at..].to_vec()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn hub_matches_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        let mut hub = Hub::new();
        let mut model = Model::default();
        let mut ids: Vec<ConnId> = Vec::new();
        let mut got: BTreeMap<ConnId, Vec<String>> = BTreeMap::new();
        let pick = |ids: &[ConnId], k: usize| ids.get(k % ids.len().max(1)).copied();

        for (step, op) in ops.iter().enumerate() {
            let message = format!("m{step}");
            let msg = Message::text(message.clone());
            // The recipients the model expects for this step, oldest first.
            let mut expected: Option<Vec<ConnId>> = None;
            match *op {
                Op::Open => {
                    let id = hub.open();
                    prop_assert!(!ids.contains(&id), "ids are never reused");
                    ids.push(id);
                    model.open.insert(id);
                }
                Op::Close(k) | Op::Disconnect(k) => {
                    let Some(c) = pick(&ids, k) else { continue };
                    let was_open = model.open.contains(&c);
                    if matches!(op, Op::Close(_)) {
                        prop_assert_eq!(hub.close(c).is_some(), was_open);
                    } else {
                        prop_assert_eq!(hub.disconnect(c, CloseCode::NORMAL, "").is_ok(), was_open);
                        if was_open {
                            prop_assert_eq!(hub.poll_delivery(), Some(Delivery::Close { conn: c, code: CloseCode::NORMAL, reason: String::new() }));
                        }
                    }
                    model.forget(c);
                }
                Op::StoreName(k, n) => {
                    let Some(c) = pick(&ids, k) else { continue };
                    let name = format!("n{n}");
                    let result = hub.store_name(c, &name);
                    if model.open.contains(&c) {
                        let previous = model.names.insert(name, c).filter(|&p| p != c);
                        prop_assert_eq!(result, Ok(previous));
                    } else {
                        prop_assert_eq!(result, Err(HubError::NoSuchConnection(c)));
                    }
                }
                Op::RemoveName(n) => {
                    let name = format!("n{n}");
                    prop_assert_eq!(hub.remove_name(&name), model.names.remove(&name));
                }
                Op::Join(k, g) => {
                    let Some(c) = pick(&ids, k) else { continue };
                    let group = format!("g{g}");
                    let result = hub.add_to_group(c, &group);
                    if model.open.contains(&c) {
                        prop_assert_eq!(result, Ok(model.groups.entry(group).or_default().insert(c)));
                    } else {
                        prop_assert!(result.is_err());
                    }
                }
                Op::Leave(k, g) => {
                    let Some(c) = pick(&ids, k) else { continue };
                    let group = format!("g{g}");
                    let result = hub.remove_from_group(c, &group);
                    if model.open.contains(&c) {
                        let removed = model.groups.get_mut(&group).is_some_and(|m| m.remove(&c));
                        model.groups.retain(|_, m| !m.is_empty());
                        prop_assert_eq!(result, Ok(removed));
                    } else {
                        prop_assert!(result.is_err());
                    }
                }
                Op::RemoveGroup(g) => {
                    let group = format!("g{g}");
                    let expected_members = model.groups.remove(&group).map(|m| m.into_iter().collect::<Vec<_>>());
                    prop_assert_eq!(hub.remove_group(&group).ok(), expected_members);
                }
                Op::Push(k) => {
                    let Some(c) = pick(&ids, k) else { continue };
                    let open = model.open.contains(&c);
                    prop_assert_eq!(hub.push(c, &msg).is_ok(), open);
                    expected = open.then(|| vec![c]);
                }
                Op::PushName(n) => {
                    let name = format!("n{n}");
                    let holder = model.names.get(&name).copied();
                    prop_assert_eq!(hub.push_to_name(&name, &msg).ok(), holder);
                    expected = holder.map(|h| vec![h]);
                }
                Op::PushGroup(g) => {
                    let group = format!("g{g}");
                    let members: Option<Vec<ConnId>> = model.groups.get(&group).map(|m| m.iter().copied().collect());
                    prop_assert_eq!(hub.push_to_group(&group, &msg).ok(), members.as_ref().map(Vec::len));
                    expected = members;
                }
                Op::Broadcast => {
                    let all: Vec<ConnId> = model.open.iter().copied().collect();
                    prop_assert_eq!(hub.broadcast(&msg), all.len());
                    expected = Some(all);
                }
                Op::BroadcastExcept(k) => {
                    let Some(c) = pick(&ids, k) else { continue };
                    let others: Vec<ConnId> = model.open.iter().copied().filter(|&o| o != c).collect();
                    prop_assert_eq!(hub.broadcast_except(c, &msg), others.len());
                    expected = Some(others);
                }
            }
            // Nothing left behind: names and groups match the model's.
            prop_assert_eq!(hub.name_count(), model.names.len());
            prop_assert_eq!(hub.group_count(), model.groups.len());
            // What the hub delivered for this step.
            let mut delivered = Vec::new();
            while let Some(d) = hub.poll_delivery() {
                match d {
                    Delivery::Frame { to, frame } => {
                        prop_assert_eq!(text_of(&frame), message.clone());
                        for c in &to {
                            prop_assert!(model.open.contains(c), "delivered to closed {c}");
                            got.entry(*c).or_default().push(message.clone());
                        }
                        delivered.push(to);
                    }
                    other => prop_assert!(false, "unexpected {other:?}"),
                }
            }
            match expected {
                Some(to) if !to.is_empty() => {
                    prop_assert_eq!(&delivered, &vec![to.clone()]);
                    for c in to {
                        model.transcripts.entry(c).or_default().push(message.clone());
                    }
                }
                _ => prop_assert!(delivered.is_empty(), "step {step} {op:?} delivered {delivered:?}"),
            }
        }
        prop_assert_eq!(got, model.transcripts);
    }
}
