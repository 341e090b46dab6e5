//! The chat across nodes: every node that runs `chinwag --bus redis://...` on
//! the same Redis serves one chat.
//!
//! The chat's rules stay in `chinwag_core::chat::Replica`; this module only
//! carries its entries to Redis and back, in three tasks per node:
//! - the **writer** appends what the replica outputs, in order, one pipelined
//!   batch per wake-up, each entry with the name change it implies in one Lua
//!   script (see `store.rs`); an entry caught by a broken connection is appended
//!   again on the next one (the replica shows it once);
//! - the **reader** reads the main log and the logs of the rooms this node's
//!   members are in (one blocking `XREAD` for all), from the last entry it
//!   applied in each, and applies them: nothing is lost or shown twice across a
//!   reconnect;
//! - the **heartbeat** registers the node every [`HEARTBEAT`] (it expires after
//!   [`NODE_TTL`]), reaps nodes whose registration expired (their names are
//!   freed and each of their members is announced once as gone), and tells the
//!   replica which nodes are alive.
//!
//! Names are reserved in Redis before the handshake is answered (the service's
//! admission step), so a name held on any node gets 409 on every node. While
//! Redis cannot be reached, connected clients stay connected, a line is refused
//! with an `error:` line, and new clients get 503; departures wait in the
//! writer's queue and go out when Redis is back.

mod store;

use chinwag_core::chat::{Hub, Output, Record, Replica, room};
use chinwag_core::{CloseCode, Rejection};
use chinwag_driver::Runtime;
use chinwag_service::Handle;
use chinwag_service::ops::Readiness;
use futures_lite::future::or;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use chinwag_core::chat::Offset;
use chinwag_core::http::StatusCode;

/// How often a node registers itself.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a registration lasts: a node that misses this many heartbeats in a
/// row is dead, and the others reap it. With the replica's grace for a node it
/// still lists ([`Replica::DEAD_AFTER`]), a dead node's users are announced as
/// gone within about [`NODE_TTL`] + [`HEARTBEAT`] (8 s) when Redis kept its
/// data, and within about 15 s after a Redis restart.
pub const NODE_TTL: Duration = Duration::from_secs(6);
/// How long connecting and a command may take before the attempt is given up.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the reader's `XREAD` blocks when nothing comes.
const READ_BLOCK: Duration = Duration::from_secs(5);
/// Entries per pipelined batch, and per read.
const BATCH: usize = 256;
/// The pauses between attempts to reach Redis: short, as a node's heartbeat
/// must come back well within the others' grace after a Redis restart.
const BACKOFF: [Duration; 4] =
    [Duration::from_millis(100), Duration::from_millis(300), Duration::from_secs(1), Duration::from_secs(2)];

/// What the chat says to a client it cannot admit while Redis is away.
const UNAVAILABLE_AT_THE_DOOR: &str =
    "the chat is unavailable right now (its store cannot be reached); try again later";

/// Something for the writer.
enum Job {
    /// What the replica output.
    Output(Output),
    /// Free a reserved name whose handshake did not complete.
    Release { name: String, prefix: String },
}

/// One node of a chat shared over Redis.
pub struct Cluster {
    node: String,
    client: redis::Client,
    chat: Arc<Mutex<Replica>>,
    jobs: async_channel::Sender<Job>,
    queue: async_channel::Receiver<Job>,
    /// The writer's connection while it is up; admissions and the heartbeat use
    /// it too (it is multiplexed).
    connection: Mutex<Option<MultiplexedConnection>>,
    /// The rooms this node reads, and the last entry applied in each.
    follows: Mutex<BTreeMap<String, Offset>>,
    /// Whether the reader has loaded who is in the chat (admissions wait for it).
    synced: AtomicBool,
    /// Until when admissions wait after Redis lost its data, so that every live
    /// node has registered its members' names again first.
    closed_until: Mutex<Option<Instant>>,
    /// Set once started: the server whose hub the replica delivers to.
    handle: OnceLock<Handle>,
    /// Entries that could not be read (logged and skipped).
    malformed: AtomicU64,
    /// Jobs taken from the queue and not yet written.
    in_flight: AtomicUsize,
    /// Notified when the heartbeat finds the writer's connection dead.
    broken: event_listener::Event,
    /// Notified when the writer has a new connection: the heartbeat runs at once.
    reconnected: event_listener::Event,
}

/// A name reserved in Redis for a handshake in progress: freed when dropped,
/// unless the connection took it ([`NameLease::keep`]).
pub struct NameLease {
    name: String,
    prefix: String,
    jobs: async_channel::Sender<Job>,
    armed: bool,
}

impl NameLease {
    /// The connection holds the name now; its departure frees it.
    pub fn keep(mut self) {
        self.armed = false;
    }

    /// The name as reserved (NFC).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for NameLease {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.jobs.try_send(Job::Release { name: self.name.clone(), prefix: self.prefix.clone() });
        }
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.node).finish_non_exhaustive()
    }
}

/// A fresh random id: a node's (so that a restarted node is a new node, and the
/// others reap the old one), or an epoch's. The gateway's bus makes its node ids
/// the same way.
pub(crate) use chinwag_gateway::bus::new_node_id;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `Some(output)` if `future` finished within `limit`.
async fn within<R: Runtime, T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    or(async { Some(future.await) }, async {
        R::sleep(limit).await;
        None
    })
    .await
}

impl Cluster {
    /// A node of the chat on the Redis at `url` (`redis://host:port[/db]`),
    /// with a fresh node id. Nothing is connected until [`start`](Self::start).
    pub fn new(url: &str) -> Result<Arc<Self>, String> {
        let client = redis::Client::open(url).map_err(|e| format!("bad Redis URL {url:?}: {e}"))?;
        let node = new_node_id();
        let (jobs, queue) = async_channel::unbounded();
        let chat = Arc::new(Mutex::new(Replica::clustered(node.clone())));
        lock(&chat).set_available(false);
        Ok(Arc::new(Self {
            node,
            client,
            chat,
            jobs,
            queue,
            connection: Mutex::new(None),
            follows: Mutex::new(BTreeMap::new()),
            synced: AtomicBool::new(false),
            closed_until: Mutex::new(None),
            handle: OnceLock::new(),
            malformed: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            broken: event_listener::Event::new(),
            reconnected: event_listener::Event::new(),
        }))
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The node's replica, shared with the chat service.
    pub(crate) fn replica(&self) -> Arc<Mutex<Replica>> {
        self.chat.clone()
    }

    /// Hands what the replica output to the writer. Called after every
    /// operation on the replica, with it locked.
    pub(crate) fn flush(&self, chat: &mut Replica) {
        while let Some(output) = chat.poll_output() {
            let _ = self.jobs.try_send(Job::Output(output));
        }
    }

    /// Starts the writer, the reader and the heartbeat on `R`, delivering to the
    /// hub of `handle`'s server.
    pub fn start<R: Runtime>(self: &Arc<Self>, handle: Handle) {
        if self.handle.set(handle).is_err() {
            return;
        }
        R::spawn(self.clone().write::<R>());
        R::spawn(self.clone().read::<R>());
        R::spawn(self.clone().beat::<R>());
    }

    /// Whether new clients can be admitted, and why not (what `/ready` says).
    pub fn readiness(&self) -> Readiness {
        if lock(&self.connection).is_none() || !lock(&self.chat).is_available() {
            Readiness::not_ready(format!("chat node {}: Redis unreachable", self.node))
        } else if !self.synced.load(Ordering::Acquire) {
            Readiness::not_ready(format!("chat node {}: loading who is in the chat", self.node))
        } else {
            Readiness::ready(format!("chat node {}: Redis connected", self.node))
        }
    }

    fn connection(&self) -> Option<MultiplexedConnection> {
        lock(&self.connection).clone()
    }

    fn admitting(&self) -> bool {
        self.synced.load(Ordering::Acquire)
            && lock(&self.closed_until).is_none_or(|until| Instant::now() >= until)
            && lock(&self.chat).is_available()
    }

    /// Decides a newcomer before the handshake is answered: checks the name and
    /// age, and for an upgrade reserves the name in Redis, atomically, for the
    /// whole cluster (409 if anyone on any node holds it). For a plain request (a
    /// page's pre-check) only says whether it would be admitted now.
    pub(crate) async fn admit(
        &self,
        name: &str,
        age: Option<&str>,
        upgrade: bool,
    ) -> Result<Option<NameLease>, Rejection> {
        let unavailable = || Rejection::new(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE_AT_THE_DOOR);
        // The rules alone: an empty hub holds no names; Redis says who is in.
        let (name, _) = room::check(&Hub::new(), name, age)
            .map_err(|r| Rejection::new(StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST), r.reason))?;
        if !self.admitting() {
            return Err(unavailable());
        }
        let Some(mut connection) = self.connection() else { return Err(unavailable()) };
        let taken = || {
            let refusal = room::taken(&name);
            Rejection::new(StatusCode::CONFLICT, refusal.reason)
        };
        if !upgrade {
            let exists: bool = redis::cmd("HEXISTS")
                .arg(store::NAMES)
                .arg(&name)
                .query_async(&mut connection)
                .await
                .map_err(|_| unavailable())?;
            return if exists { Err(taken()) } else { Ok(None) };
        }
        let reserved: i64 = redis::cmd("EVAL")
            .arg(store::RESERVE)
            .arg(1)
            .arg(store::NAMES)
            .arg(&name)
            .arg(store::holder(&self.node, 0, None))
            .arg(store::ABANDONED_AFTER_MS)
            .query_async(&mut connection)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "chat: cannot reserve a name in Redis");
                unavailable()
            })?;
        if reserved == 0 {
            return Err(taken());
        }
        Ok(Some(NameLease { name, prefix: store::holder_prefix(&self.node, 0), jobs: self.jobs.clone(), armed: true }))
    }

    async fn connect<R: Runtime>(&self, response_timeout: Option<Duration>) -> Option<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(ATTEMPT_TIMEOUT))
            .set_response_timeout(response_timeout);
        match within::<R, _>(ATTEMPT_TIMEOUT, self.client.get_multiplexed_async_connection_with_config(&config)).await {
            Some(Ok(connection)) => Some(connection),
            Some(Err(error)) => {
                tracing::warn!(%error, "chat: cannot connect to Redis; retrying");
                None
            }
            None => {
                tracing::warn!("chat: no answer from Redis in time; retrying");
                None
            }
        }
    }

    fn set_available(&self, available: bool) {
        lock(&self.chat).set_available(available);
    }

    // ----- the writer ---------------------------------------------------------------

    async fn write<R: Runtime>(self: Arc<Self>) {
        let mut attempt = 0;
        // Jobs caught by a broken connection: done again, in order, first.
        let mut retry: Vec<Job> = Vec::new();
        // Rooms to read from the next entry this node appends to them.
        let mut joining: BTreeSet<String> = BTreeSet::new();
        loop {
            let Some(mut connection) = self.connect::<R>(Some(ATTEMPT_TIMEOUT)).await else {
                R::sleep(BACKOFF[attempt.min(BACKOFF.len() - 1)]).await;
                attempt += 1;
                continue;
            };
            attempt = 0;
            *lock(&self.connection) = Some(connection.clone());
            // Lines are taken once the heartbeat has checked, on this connection,
            // that Redis still holds the chat (or learnt that it lost it): now.
            self.reconnected.notify(usize::MAX);
            tracing::info!(node = %self.node, "chat: connected to Redis");
            loop {
                let batch = if retry.is_empty() {
                    // The heartbeat found the connection dead: reconnect now, not
                    // at the next line (lines are refused meanwhile, so none may come).
                    let next = or(async { Some(self.queue.recv().await) }, async {
                        self.broken.listen().await;
                        None
                    });
                    let Some(next) = next.await else { break };
                    match next {
                        Ok(first) => {
                            let mut batch = vec![first];
                            while batch.len() < BATCH {
                                match self.queue.try_recv() {
                                    Ok(job) => batch.push(job),
                                    Err(_) => break,
                                }
                            }
                            batch
                        }
                        Err(_) => return,
                    }
                } else {
                    std::mem::take(&mut retry)
                };
                self.in_flight.store(batch.len(), Ordering::Release);
                match self.carry_out(&mut connection, &batch, &mut joining).await {
                    Ok(()) => self.in_flight.store(0, Ordering::Release),
                    Err(error) => {
                        tracing::warn!(%error, jobs = batch.len(), "chat: writing to Redis failed; reconnecting to retry");
                        retry = batch;
                        break;
                    }
                }
            }
            *lock(&self.connection) = None;
            self.set_available(false);
        }
    }

    /// One batch: its Redis commands in one pipeline, then what they mean here
    /// (which rooms to read from where), in order.
    async fn carry_out(
        &self,
        connection: &mut MultiplexedConnection,
        batch: &[Job],
        joining: &mut BTreeSet<String>,
    ) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        let mut commands = 0;
        for job in batch {
            match job {
                Job::Output(Output::Append { room, entry }) => {
                    let (op, name, holder) = match &entry.record {
                        Record::Joined { name, age, .. } => {
                            ("set", name.as_str(), store::holder(&entry.member.node, entry.member.conn, *age))
                        }
                        Record::Left { name } => {
                            ("del", name.as_str(), store::holder_prefix(&entry.member.node, entry.member.conn))
                        }
                        _ => ("-", "", String::new()),
                    };
                    let cmd = pipe.cmd("EVAL").arg(store::APPEND).arg(2).arg(store::log_key(room)).arg(store::NAMES);
                    cmd.arg(op).arg(name).arg(holder).arg(store::LOG_LENGTH);
                    for (key, value) in entry.fields() {
                        cmd.arg(key).arg(value);
                    }
                    commands += 1;
                }
                Job::Output(Output::Reap { node, members }) => {
                    let cmd = pipe.cmd("EVAL").arg(store::REAP_LISTED).arg(4);
                    cmd.arg(store::NODES)
                        .arg(store::NAMES)
                        .arg(store::MAIN_LOG)
                        .arg(format!("{}{node}", store::REAPED));
                    cmd.arg(node).arg(store::LOG_LENGTH);
                    for (member, name) in members {
                        cmd.arg(member.conn).arg(name);
                    }
                    commands += 1;
                }
                Job::Release { name, prefix } => {
                    pipe.cmd("EVAL").arg(store::RELEASE).arg(1).arg(store::NAMES).arg(name).arg(prefix);
                    commands += 1;
                }
                Job::Output(Output::Follow { .. } | Output::Unfollow { .. }) => {}
            }
        }
        let results: Vec<Value> = if commands > 0 { pipe.query_async(connection).await? } else { Vec::new() };
        let mut results = results.into_iter();
        let mut woken = false;
        for job in batch {
            match job {
                Job::Output(Output::Follow { room }) => {
                    joining.insert(room.clone());
                }
                Job::Output(Output::Unfollow { room }) => {
                    joining.remove(room);
                    lock(&self.follows).remove(room);
                }
                Job::Output(Output::Append { room, entry }) => {
                    let id = results.next().as_ref().and_then(store::text).and_then(|id| store::offset(&id));
                    if let Some(id) = id.filter(|_| joining.remove(room)) {
                        // Read the room from this entry on (its first entry for
                        // this node: a member of it joining), with the lines
                        // before it as history, for a member that recovers.
                        self.preload_room(connection, room, id).await?;
                        lock(&self.follows).entry(room.clone()).or_insert(store::before(id));
                        woken = true;
                    }
                    if let Record::Left { .. } | Record::Joined { .. } = entry.record {
                        tracing::debug!(room, "chat: appended a presence change");
                    }
                }
                Job::Output(Output::Reap { node, .. }) => {
                    if let Some(Value::Int(1)) = results.next() {
                        tracing::warn!(node, "chat: reaped a node that Redis no longer lists; its users left the chat");
                    }
                }
                Job::Release { .. } => {
                    results.next();
                }
            }
        }
        if woken {
            self.wake(connection).await;
        }
        Ok(())
    }

    /// Loads the history of `room` from its log, up to (not including) the
    /// entry at `until`, from which the reader will go on.
    async fn preload_room(
        &self,
        connection: &mut MultiplexedConnection,
        room: &str,
        until: Offset,
    ) -> redis::RedisResult<()> {
        let history = lock(&self.chat).history_len();
        let reply: Value = redis::cmd("XREVRANGE")
            .arg(store::log_key(room))
            .arg(format!("({until}"))
            .arg("-")
            .arg("COUNT")
            .arg(history + 1)
            .query_async(connection)
            .await?;
        let mut recent = store::xrevrange_reply(&reply);
        recent.reverse();
        let mut chat = lock(&self.chat);
        // One more than the history: the oldest says where the history begins.
        if recent.len() > history {
            let (floor, _) = recent.remove(0);
            chat.set_history_floor(room, floor);
        }
        for (offset, entry) in &recent {
            if let Ok(entry) = entry {
                chat.preload(room, *offset, entry);
            }
        }
        Ok(())
    }

    /// Interrupts the reader's blocking read, so that it reads a new room now.
    async fn wake(&self, connection: &mut MultiplexedConnection) {
        let key = store::wake_key(&self.node);
        let _: redis::RedisResult<()> = redis::pipe()
            .cmd("XADD")
            .arg(&key)
            .arg("MAXLEN")
            .arg(1)
            .arg("*")
            .arg("w")
            .arg(1)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(60_000)
            .ignore()
            .query_async(connection)
            .await;
    }

    // ----- the reader ---------------------------------------------------------------

    async fn read<R: Runtime>(self: Arc<Self>) {
        let mut attempt = 0;
        let wake = store::wake_key(&self.node);
        let mut woken_at = Offset::default();
        loop {
            // No response timeout on this connection: its reads block on purpose
            // (each is bounded below instead).
            let Some(mut connection) = self.connect::<R>(None).await else {
                R::sleep(BACKOFF[attempt.min(BACKOFF.len() - 1)]).await;
                attempt += 1;
                continue;
            };
            attempt = 0;
            if !self.synced.load(Ordering::Acquire) {
                match within::<R, _>(ATTEMPT_TIMEOUT, self.load(&mut connection)).await {
                    Some(Ok(())) => self.synced.store(true, Ordering::Release),
                    Some(Err(error)) => {
                        tracing::warn!(%error, "chat: cannot load who is in the chat; retrying");
                        continue;
                    }
                    None => continue,
                }
            }
            loop {
                let follows: Vec<(String, Offset)> =
                    lock(&self.follows).iter().map(|(room, at)| (store::log_key(room), *at)).collect();
                let mut cmd = redis::cmd("XREAD");
                cmd.arg("COUNT").arg(BATCH).arg("BLOCK").arg(READ_BLOCK.as_millis() as u64).arg("STREAMS");
                cmd.arg(&wake);
                for (key, _) in &follows {
                    cmd.arg(key);
                }
                cmd.arg(woken_at.to_string());
                for (_, at) in &follows {
                    cmd.arg(at.to_string());
                }
                let reply =
                    match within::<R, _>(READ_BLOCK + ATTEMPT_TIMEOUT, cmd.query_async::<Value>(&mut connection)).await
                    {
                        Some(Ok(reply)) => reply,
                        Some(Err(error)) => {
                            tracing::warn!(%error, "chat: reading from Redis failed; reconnecting");
                            break;
                        }
                        None => {
                            tracing::warn!("chat: a read from Redis took too long; reconnecting");
                            break;
                        }
                    };
                let entries = store::xread_reply(&reply);
                if let Some((_, at, _)) = entries.iter().rev().find(|(key, _, _)| *key == wake) {
                    woken_at = *at;
                }
                self.apply(entries.into_iter().filter(|(key, _, _)| *key != wake));
            }
        }
    }

    /// Who is in the chat, and where the main log is, in one transaction: the
    /// entries after that point are applied on top (a join already listed, or a
    /// departure of someone not listed, shows nothing).
    async fn load(&self, connection: &mut MultiplexedConnection) -> redis::RedisResult<()> {
        let history = lock(&self.chat).history_len();
        let (epoch, recent, names): (String, Value, Vec<(String, String)>) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(store::EPOCH)
            .arg(new_node_id())
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(store::EPOCH)
            .cmd("XREVRANGE")
            .arg(store::MAIN_LOG)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(history + 1)
            .cmd("HGETALL")
            .arg(store::NAMES)
            .query_async(connection)
            .await?;
        // Newest first: the main log's end, and the lines a client may recover.
        let mut recent = store::xrevrange_reply(&recent);
        let at = recent.first().map(|(offset, _)| *offset).unwrap_or_default();
        recent.reverse();
        let members = names.into_iter().filter_map(|(name, holder)| {
            let (node, conn, age) = store::parse_holder(&holder)?;
            // A reservation whose handshake is pending is no one yet.
            (conn != 0).then(|| (chinwag_core::chat::MemberId { node: node.to_owned(), conn }, name.clone(), age))
        });
        let members: Vec<_> = members.collect();
        let count = members.len();
        {
            let mut chat = lock(&self.chat);
            chat.set_epoch(epoch.clone());
            chat.load_presence(members);
            // One more than the history: the oldest says where the history begins.
            let held = if recent.len() > history {
                let (floor, _) = recent.remove(0);
                chat.set_history_floor("", floor);
                &recent[..]
            } else {
                &recent[..]
            };
            for (offset, entry) in held {
                if let Ok(entry) = entry {
                    chat.preload("", *offset, entry);
                }
            }
        }
        lock(&self.follows).insert(String::new(), at);
        tracing::info!(node = %self.node, users = count, %epoch, "chat: joined the cluster");
        Ok(())
    }

    /// Applies entries read from the logs, each after the last one applied in its
    /// room, under the hub's lock and then the replica's (the hooks' order).
    fn apply(&self, entries: impl Iterator<Item = store::ReadEntry>) {
        let Some(handle) = self.handle.get() else { return };
        let mut entries = entries.peekable();
        if entries.peek().is_none() {
            return;
        }
        handle.with_hub(|hub| {
            let mut chat = lock(&self.chat);
            let mut follows = lock(&self.follows);
            for (key, at, entry) in entries {
                let Some(room) = store::room_of(&key) else { continue };
                // A room left meanwhile, or read again from an older position.
                let Some(last) = follows.get_mut(room).filter(|last| at > **last) else { continue };
                *last = at;
                match entry {
                    Ok(entry) => {
                        for line in chat.apply(hub, room, at, entry) {
                            tracing::info!(target: "chat", "{line}");
                        }
                    }
                    Err(error) => {
                        self.malformed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%key, offset = %at, %error, "chat: skipped an entry");
                    }
                }
            }
            self.flush(&mut chat);
        });
    }

    // ----- the heartbeat ------------------------------------------------------------

    async fn beat<R: Runtime>(self: Arc<Self>) {
        let mut epoch: Option<String> = None;
        loop {
            if let Some(mut connection) = self.connection() {
                let failed = match within::<R, _>(ATTEMPT_TIMEOUT, self.beat_once(&mut connection, &mut epoch)).await {
                    Some(Ok(())) => None,
                    Some(Err(error)) => Some(error.to_string()),
                    None => Some("no answer in time".to_owned()),
                };
                match failed {
                    // Answered: lines can be ordered (again).
                    None => self.set_available(true),
                    Some(error) => {
                        tracing::warn!(%error, "chat: heartbeat failed; lines are refused until Redis answers");
                        self.set_available(false);
                        self.broken.notify(usize::MAX);
                    }
                }
            }
            or(R::sleep(HEARTBEAT), self.reconnected.listen()).await;
        }
    }

    async fn beat_once(
        &self,
        connection: &mut MultiplexedConnection,
        epoch: &mut Option<String>,
    ) -> redis::RedisResult<()> {
        let (now_epoch, reaped): (String, i64) = redis::cmd("EVAL")
            .arg(store::HEARTBEAT)
            .arg(3)
            .arg(store::NODES)
            .arg(store::EPOCH)
            .arg(format!("{}{}", store::REAPED, self.node))
            .arg(&self.node)
            .arg(NODE_TTL.as_millis() as u64)
            .arg(new_node_id())
            .query_async(connection)
            .await?;
        match epoch.replace(now_epoch.clone()) {
            Some(known) if known != now_epoch => self.lost_data(connection, &now_epoch).await,
            _ => {}
        }
        if reaped == 1 {
            self.reaped(connection).await?;
        }
        let dead: Vec<String> = redis::cmd("EVAL")
            .arg(store::REAP_EXPIRED)
            .arg(3)
            .arg(store::NODES)
            .arg(store::NAMES)
            .arg(store::MAIN_LOG)
            .arg(store::LOG_LENGTH)
            .arg(store::REAPED)
            .query_async(connection)
            .await?;
        for node in dead {
            tracing::warn!(%node, "chat: a node stopped answering; its users left the chat");
        }
        let alive: BTreeSet<String> =
            redis::cmd("ZRANGE").arg(store::NODES).arg(0).arg(-1).query_async(connection).await?;
        let mut chat = lock(&self.chat);
        chat.nodes_alive(Instant::now(), &alive);
        self.flush(&mut chat);
        Ok(())
    }

    /// Redis came back without its data: read every log from its start, make
    /// this node's members known again, and admit no one until every live node
    /// has had time to do the same (their names are free in Redis until then).
    async fn lost_data(&self, connection: &mut MultiplexedConnection, epoch: &str) {
        tracing::warn!(node = %self.node, "chat: Redis lost its data (restarted empty?); registering this node's users again");
        *lock(&self.closed_until) = Some(Instant::now() + Replica::DEAD_AFTER);
        lock(&self.chat).set_epoch(epoch.to_owned());
        for at in lock(&self.follows).values_mut() {
            *at = Offset::default();
        }
        {
            let mut chat = lock(&self.chat);
            chat.reassert();
            self.flush(&mut chat);
        }
        self.wake(connection).await;
    }

    /// The others declared this node dead (it was away from Redis too long): its
    /// users were announced as gone and their names freed, so they are closed
    /// (1012: reconnect) rather than left as ghosts.
    async fn reaped(&self, connection: &mut MultiplexedConnection) -> redis::RedisResult<()> {
        tracing::warn!(node = %self.node, "chat: this node was declared dead while away from Redis; closing its users so that they reconnect");
        if let Some(handle) = self.handle.get() {
            handle.with_hub(|hub| {
                let conns: Vec<_> = lock(&self.chat).local_members().collect();
                for conn in conns {
                    let _ = hub.disconnect(
                        conn,
                        CloseCode(1012),
                        "the chat server lost contact with the cluster; reconnect",
                    );
                }
            });
        }
        redis::cmd("DEL").arg(format!("{}{}", store::REAPED, self.node)).query_async::<()>(connection).await
    }

    /// Waits until everything queued for Redis is written (the departures of a
    /// shutdown, so that the other nodes announce them at once rather than when
    /// this node's registration expires), up to `grace`. False if time ran out.
    pub async fn flush_queue<R: Runtime>(&self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        while !(self.queue.is_empty() && self.in_flight.load(Ordering::Acquire) == 0) {
            if Instant::now() >= deadline {
                tracing::warn!(queued = self.queue.len(), "chat: Redis did not take what was queued in time");
                return false;
            }
            R::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Entries read that could not be understood.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }
}
