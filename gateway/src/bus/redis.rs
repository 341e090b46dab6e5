//! The Redis bus: events leave as JSON envelopes published on their topic's
//! channel; sends, broadcasts and this node's replies arrive by subscription.
//!
//! Two tasks per node, on whichever runtime serves the gateway:
//! - the **publisher** drains the [`Outbox`](super::Outbox) into one pipelined
//!   `PUBLISH` batch per wake-up (so a burst costs one round trip, not one each);
//! - the **subscriber** holds a subscription to the `send` and `broadcast` topics
//!   and to `chinwag:reply:{node}`, pings Redis when the line is quiet so that a
//!   dead connection is noticed, and applies what arrives.
//!
//! Both reconnect on their own, with a backoff from 100 ms doubling to 5 s. While
//! Redis is unreachable, events wait in the outbox (up to
//! [`OUTBOX_CAPACITY`](super::OUTBOX_CAPACITY), then they are dropped) and go out
//! once it is back (a batch caught by the break is sent once more, so a handler may
//! see it twice); commands published by handlers meanwhile are lost, because
//! Redis pub/sub keeps nothing for a subscriber that is away.

use chinwag_driver::Runtime;
use futures_lite::StreamExt;
use futures_lite::future::or;
use redis::aio::{PubSubSink, PubSubStream};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{BusState, Outgoing};
use crate::GatewayHandle;
use crate::envelope::{self, EnvelopeError};

/// How long connecting, subscribing and a ping may take before the attempt is
/// given up (and retried).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// A quiet subscription is pinged this often: Redis sends nothing on an idle
/// subscription, so only a ping tells a dead peer from a silent one.
const PING_EVERY: Duration = Duration::from_secs(5);
/// The first pause after a failed attempt; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest pause between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Events in one pipelined batch at most.
const BATCH: usize = 512;

/// The channels one node listens on, and how to tell them apart.
#[derive(Clone)]
pub(crate) struct Channels {
    pub(crate) reply: String,
    pub(crate) send: Option<String>,
    pub(crate) broadcast: Option<String>,
}

impl Channels {
    fn all(&self) -> Vec<String> {
        std::iter::once(&self.reply).chain(&self.send).chain(&self.broadcast).cloned().collect()
    }
}

/// One node's Redis bus, ready to start on a runtime.
pub(crate) struct RedisBus {
    pub(crate) client: redis::Client,
    pub(crate) node: String,
    pub(crate) channels: Channels,
    pub(crate) queue: async_channel::Receiver<Outgoing>,
    pub(crate) state: Arc<BusState>,
}

/// Stops a started bus: the subscriber at once, the publisher once it has sent
/// what is queued (the close events of a shutdown, typically).
pub(crate) struct Running {
    queue: async_channel::Receiver<Outgoing>,
    stop: async_channel::Sender<()>,
    publisher_done: async_channel::Receiver<()>,
}

impl Running {
    /// Stops both tasks, waiting up to `grace` for the publisher to flush.
    pub(crate) async fn stop<R: Runtime>(self, grace: Duration) {
        self.queue.close();
        self.stop.close();
        let flushed = within::<R, _>(grace, async {
            let _ = self.publisher_done.recv().await;
        })
        .await;
        if flushed.is_none() {
            tracing::warn!(queued = self.queue.len(), "the bus did not flush its outbox in time: events dropped");
        }
    }
}

impl RedisBus {
    /// Starts the publisher and the subscriber on `R`.
    pub(crate) fn start<R: Runtime>(self, handle: GatewayHandle) -> Running {
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let (done_tx, publisher_done) = async_channel::bounded::<()>(1);
        let running = Running { queue: self.queue.clone(), stop, publisher_done };
        let publisher = Publisher { client: self.client.clone(), queue: self.queue, state: self.state.clone() };
        R::spawn(async move {
            publisher.run::<R>().await;
            drop(done_tx);
        });
        let subscriber = Subscriber {
            client: self.client,
            node: self.node,
            channels: self.channels,
            state: self.state,
            handle,
            stopped,
        };
        R::spawn(subscriber.run::<R>());
        running
    }
}

/// `Some(output)` if `future` finished within `limit`.
async fn within<R: Runtime, T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    or(async { Some(future.await) }, async {
        R::sleep(limit).await;
        None
    })
    .await
}

/// Doubling pauses between attempts, reset by a success.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(BACKOFF_FIRST)
    }

    fn next(&mut self) -> Duration {
        let pause = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        pause
    }

    fn reset(&mut self) {
        self.0 = BACKOFF_FIRST;
    }
}

struct Publisher {
    client: redis::Client,
    queue: async_channel::Receiver<Outgoing>,
    state: Arc<BusState>,
}

impl Publisher {
    async fn run<R: Runtime>(self) {
        let mut backoff = Backoff::new();
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(ATTEMPT_TIMEOUT))
            .set_response_timeout(Some(ATTEMPT_TIMEOUT));
        // A batch whose publication failed: sent again, once, on the next
        // connection. Redis restarting is the usual cause, and then it never got it.
        let mut retry: Option<Vec<Outgoing>> = None;
        // Stops when the queue is closed and empty: what was queued before a
        // shutdown still goes out.
        while !(self.queue.is_closed() && self.queue.is_empty() && retry.is_none()) {
            let mut connection = match self.client.get_multiplexed_async_connection_with_config(&config).await {
                Ok(connection) => connection,
                Err(error) => {
                    if self.queue.is_closed() {
                        // Shutting down with Redis away: what is left cannot go out.
                        let left = self.queue.len() + retry.map_or(0, |batch| batch.len());
                        self.state.lost.fetch_add(left as u64, Ordering::Relaxed);
                        break;
                    }
                    tracing::warn!(%error, "bus: cannot connect to Redis to publish; retrying");
                    R::sleep(backoff.next()).await;
                    continue;
                }
            };
            backoff.reset();
            self.state.set_publisher_connected(true);
            tracing::info!("bus: publishing to Redis");
            loop {
                let (batch, second_try) = match retry.take() {
                    Some(batch) => (batch, true),
                    None => match self.next_batch().await {
                        Some(batch) => (batch, false),
                        None => break,
                    },
                };
                let mut pipe = redis::pipe();
                for event in &batch {
                    pipe.publish(&event.channel, &event.payload).ignore();
                }
                match pipe.query_async::<()>(&mut connection).await {
                    Ok(()) => {
                        self.state.published.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    }
                    Err(error) if second_try => {
                        self.state.lost.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        tracing::warn!(%error, events = batch.len(), "bus: publishing failed twice; events lost");
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, events = batch.len(), "bus: publishing failed; reconnecting to retry");
                        retry = Some(batch);
                        break;
                    }
                }
            }
            self.state.set_publisher_connected(false);
        }
        tracing::debug!("bus: publisher stopped");
    }

    /// Waits for the next event and takes what else is queued, up to [`BATCH`];
    /// `None` once the queue is closed and empty. Connections waiting for room are
    /// woken.
    async fn next_batch(&self) -> Option<Vec<Outgoing>> {
        let mut batch = vec![self.queue.recv().await.ok()?];
        while batch.len() < BATCH {
            match self.queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        self.state.room.notify(usize::MAX);
        Some(batch)
    }
}

struct Subscriber {
    client: redis::Client,
    node: String,
    channels: Channels,
    state: Arc<BusState>,
    handle: GatewayHandle,
    stopped: async_channel::Receiver<()>,
}

impl Subscriber {
    async fn run<R: Runtime>(self) {
        let mut backoff = Backoff::new();
        loop {
            let attempt = within::<R, _>(ATTEMPT_TIMEOUT, async {
                let (mut sink, stream) = self.client.get_async_pubsub().await?.split();
                sink.subscribe(self.channels.all()).await?;
                Ok::<_, redis::RedisError>((sink, stream))
            });
            let Some(attempt) = self.unless_stopped(attempt).await else { break };
            let lost = match attempt {
                Some(Ok((sink, stream))) => {
                    backoff.reset();
                    self.state.subscribed.store(true, Ordering::Release);
                    tracing::info!(channels = ?self.channels.all(), "bus: subscribed on Redis");
                    let lost = self.listen::<R>(sink, stream).await;
                    self.state.subscribed.store(false, Ordering::Release);
                    let Some(reason) = lost else { break };
                    reason
                }
                Some(Err(error)) => format!("cannot subscribe: {error}"),
                None => "cannot subscribe: no answer in time".into(),
            };
            tracing::warn!(reason = %lost, "bus: subscription lost; commands published meanwhile are lost; retrying");
            if self.unless_stopped(R::sleep(backoff.next())).await.is_none() {
                break;
            }
        }
        tracing::debug!("bus: subscriber stopped");
    }

    /// `Some(output)` of `future`, or `None` if the bus is stopped first.
    async fn unless_stopped<T>(&self, future: impl Future<Output = T>) -> Option<T> {
        or(async { Some(future.await) }, async {
            let _ = self.stopped.recv().await;
            None
        })
        .await
    }

    /// Applies what arrives until the subscription is lost (`Some(why)`) or the
    /// bus is stopped (`None`).
    async fn listen<R: Runtime>(&self, mut sink: PubSubSink, mut stream: PubSubStream) -> Option<String> {
        enum Step {
            Message(Option<redis::Msg>),
            Quiet,
        }
        loop {
            let step = or(async { Step::Message(stream.next().await) }, async {
                R::sleep(PING_EVERY).await;
                Step::Quiet
            });
            match self.unless_stopped(step).await? {
                Step::Message(Some(message)) => self.apply(message.get_channel_name(), message.get_payload_bytes()),
                Step::Message(None) => return Some("the connection closed".into()),
                // In subscribed mode Redis answers a ping with ["pong", ""]: any answer will do.
                Step::Quiet => match within::<R, _>(ATTEMPT_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Some(format!("ping failed: {error}")),
                    None => return Some("no answer to a ping".into()),
                },
            }
        }
    }

    /// Carries out a command from `channel`, or logs why not.
    fn apply(&self, channel: &str, bytes: &[u8]) {
        match self.command(channel, bytes) {
            Ok(()) => {
                self.state.applied.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                self.state.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(channel, %error, "bus: command refused");
            }
        }
    }

    fn command(&self, channel: &str, bytes: &[u8]) -> Result<(), EnvelopeError> {
        if channel == self.channels.reply {
            let (reply_to, command) = envelope::parse_reply(bytes)?;
            if reply_to.node != self.node {
                return Err(EnvelopeError(format!(
                    "reply_to.node is {:?}, but this is node {:?}",
                    reply_to.node, self.node
                )));
            }
            if !self.handle.answer(reply_to.connection, &reply_to.reply_type, reply_to.on_connect, command) {
                tracing::debug!(connection = reply_to.connection, "bus: a reply for a connection that is gone");
            }
        } else if Some(channel) == self.channels.send.as_deref() {
            self.handle.command(envelope::parse_send(bytes)?);
        } else if Some(channel) == self.channels.broadcast.as_deref() {
            self.handle.command(envelope::parse_broadcast(bytes)?);
        } else {
            return Err(EnvelopeError(format!("a message on {channel:?}, which this node did not subscribe to")));
        }
        Ok(())
    }
}
