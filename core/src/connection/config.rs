//! Limits and timer settings of a connection.

use std::time::Duration;

/// Limits and timer settings of a [`Connection`](crate::Connection).
///
/// The defaults suit a general-purpose library: messages up to 16 MiB, a keepalive
/// ping after 30 s of silence, and a peer that does not answer within another 30 s
/// counts as dead. Servers facing the internet usually want smaller messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The largest frame payload accepted; a larger frame closes with 1009 as soon as
    /// its header arrives (or, with [`Oversized::Skip`], makes its message skipped).
    pub max_frame_size: usize,
    /// The largest message (all fragments together) accepted; closes with 1009 (or,
    /// with [`Oversized::Skip`], the message is skipped).
    pub max_message_size: usize,
    /// What an incoming message over `max_message_size` (or with a frame over
    /// `max_frame_size`) does to the connection.
    pub oversized: Oversized,
    /// With [`Oversized::Skip`], the largest message (all fragments together) read
    /// past: a larger one closes with 1009 as soon as a frame header takes it over
    /// (a header announcing 2^62 bytes closes at once). It bounds how long one
    /// message can keep a connection reading; the incoming message rate bounds how
    /// many.
    pub max_skipped_size: usize,
    /// (Server) The largest opening request head, in bytes; beyond it the answer is
    /// 431. (Client) The largest response head accepted.
    pub max_head_size: usize,
    /// The most header lines in a request or response head; beyond it, 431.
    pub max_headers: usize,
    /// The time the peer has to complete the opening handshake (`None`: no limit).
    pub handshake_timeout: Option<Duration>,
    /// Send a ping after this long without receiving anything (`None`: never).
    pub keepalive_interval: Option<Duration>,
    /// After a keepalive ping, how long to wait for any data before the peer counts
    /// as dead and the connection closes with [`ConnectionError::KeepaliveTimeout`].
    ///
    /// [`ConnectionError::KeepaliveTimeout`]: crate::ConnectionError::KeepaliveTimeout
    pub keepalive_timeout: Duration,
    /// How long to wait for the peer's close frame after sending ours, and (client)
    /// for the server to close the transport after the close handshake.
    pub close_timeout: Duration,
    /// The size of the outgoing backlog, in bytes, above which
    /// [`Connection::is_backlogged`](crate::Connection::is_backlogged) reports true,
    /// so a driver stops queueing until the transport catches up.
    pub backlog_high_water: usize,
    /// The hard bound on the outgoing backlog, in bytes. A data message to be
    /// queued while the backlog is already over it is not queued: the peer reads too
    /// slowly, so the connection is failed at once with a 1008 close frame (policy
    /// violation, reason "too slow: outgoing backlog over the limit") behind what
    /// was queued before, and reported as [`ConnectionError::SlowConsumer`]; the
    /// send returns [`LocalError::Closed`]. A peer that stops reading must not make
    /// the server hold unbounded memory for it, nor slow down anyone else. The close
    /// timeout then bounds how long the queued output may take. Keep it at or above
    /// `backlog_high_water`, or a driver's waiting `send` can trip it.
    ///
    /// [`LocalError::Closed`]: crate::LocalError::Closed
    /// [`ConnectionError::SlowConsumer`]: crate::ConnectionError::SlowConsumer
    pub max_backlog: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_frame_size: 16 << 20,
            max_message_size: 16 << 20,
            oversized: Oversized::Close,
            max_skipped_size: 16 << 20,
            max_head_size: 16 << 10,
            max_headers: 64,
            handshake_timeout: Some(Duration::from_secs(10)),
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(5),
            backlog_high_water: 1 << 20,
            max_backlog: 1 << 20,
        }
    }
}

/// What a connection does with an incoming message over its size limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Oversized {
    /// Close with 1009 (message too big, RFC 6455 §7.4.1) as soon as the frame
    /// header that breaks a limit arrives. The default.
    #[default]
    Close,
    /// Read past the message without keeping any of it, report
    /// [`Event::Skipped`](crate::Event::Skipped) once its last frame has passed, and
    /// stay open: for protocols that answer an oversized message with an error of
    /// their own. Memory stays bounded by the limits; the bytes still have to be
    /// read: [`Config::max_skipped_size`] bounds one skipped message (beyond it,
    /// 1009 after all) and a message rate limit bounds how many. A skipped text
    /// message is not checked for valid UTF-8: nothing interprets it.
    Skip,
}
