//! The gateway's own metrics, served with the server's on the admin listener:
//! events by topic, commands by kind, and the bus.

use chinwag_core::gateway::Topics;
use chinwag_service::ops::prometheus_client::metrics::counter::Counter;
use chinwag_service::ops::prometheus_client::metrics::family::Family;
use chinwag_service::ops::prometheus_client::registry::Registry;
use std::collections::HashMap;

/// What a command was, for `chinwag_gateway_commands_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommandKind {
    Reply,
    Fail,
    Send,
    Broadcast,
    /// A reply or failure with no event to answer: dropped.
    Unanswerable,
}

impl CommandKind {
    const ALL: [Self; 5] = [Self::Reply, Self::Fail, Self::Send, Self::Broadcast, Self::Unanswerable];

    fn label(self) -> &'static str {
        match self {
            Self::Reply => "reply",
            Self::Fail => "fail",
            Self::Send => "send",
            Self::Broadcast => "broadcast",
            Self::Unanswerable => "unanswerable",
        }
    }
}

type ByTopic = Family<[(&'static str, String); 1], Counter>;

/// The gateway's counters (cheap to clone: each is shared).
#[derive(Debug, Clone, Default)]
pub(crate) struct GatewayMetrics {
    events: ByTopic,
    /// The configured topics' counters, looked up without building a label.
    topics: HashMap<String, Counter>,
    commands: Family<[(&'static str, &'static str); 1], Counter>,
    key_reloads: Family<[(&'static str, &'static str); 1], Counter>,
}

impl GatewayMetrics {
    /// Counters for the topics of a configuration (each exported from the start).
    pub(crate) fn new(topics: &Topics) -> Self {
        let events = ByTopic::default();
        let names = [&topics.on_connect, &topics.on_message, &topics.on_close]
            .into_iter()
            .flatten()
            .chain(topics.message_types.iter().map(|route| &route.topic));
        let topics =
            names.map(|name| (name.clone(), events.get_or_create(&[("topic", name.clone())]).clone())).collect();
        let commands = Family::default();
        for kind in CommandKind::ALL {
            let _ = commands.get_or_create(&[("kind", kind.label())]);
        }
        let key_reloads = Family::default();
        for outcome in ["loaded", "failed"] {
            let _ = key_reloads.get_or_create(&[("outcome", outcome)]);
        }
        Self { events, topics, commands, key_reloads }
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "chinwag_gateway_events_published",
            "Events the gateway published, by topic",
            self.events.clone(),
        );
        registry.register(
            "chinwag_gateway_key_reloads",
            "JWT key reloads (SIGHUP, or the key file changed), by outcome: loaded, or failed (the keys in use stay)",
            self.key_reloads.clone(),
        );
        registry.register(
            "chinwag_gateway_commands",
            "Commands carried out (from in-process handlers and the bus), by kind",
            self.commands.clone(),
        );
    }

    /// Counts an event published to `topic`.
    pub(crate) fn published(&self, topic: &str) {
        match self.topics.get(topic) {
            Some(counter) => {
                counter.inc();
            }
            None => {
                self.events.get_or_create(&[("topic", topic.to_owned())]).inc();
            }
        }
    }

    /// Counts a reload of the JWT keys, and logs it.
    pub(crate) fn key_reload<T: std::fmt::Display>(&self, outcome: &Result<T, String>) {
        match outcome {
            Ok(summary) => {
                tracing::info!("JWT keys loaded from {summary}");
                self.key_reloads.get_or_create(&[("outcome", "loaded")]).inc();
            }
            Err(error) => {
                tracing::error!("JWT keys not reloaded, the keys in use stay: {error}");
                self.key_reloads.get_or_create(&[("outcome", "failed")]).inc();
            }
        }
    }

    /// Counts a command.
    pub(crate) fn command(&self, kind: CommandKind) {
        self.commands.get_or_create(&[("kind", kind.label())]).inc();
    }
}
