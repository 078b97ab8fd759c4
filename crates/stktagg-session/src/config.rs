//! What a session is told at creation: names, limits, timers and the resync policy.

/// HAProxy's heartbeat interval (`PEER_HEARTBEAT_TIMEOUT`, 3 s).
pub const DEFAULT_HEARTBEAT_MS: u64 = 3_000;
/// HAProxy's liveness window: a session silent for 5 s is closed (`PEER_KEEP_ALIVE_TIMEOUT`).
pub const DEFAULT_IDLE_MS: u64 = 5_000;
/// How long the handshake may take.
pub const DEFAULT_HELLO_MS: u64 = 5_000;
/// Bytes queued for the socket above which no more entries are produced.
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024;

/// A session's configuration.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our own peer name: the caller's name in a hello we send, the name a hello we
    /// accept must call.
    pub local_name: String,
    /// Our process id, sent in our hello.
    pub pid: u32,
    /// The largest message accepted and sent (HAProxy's `tune.bufsize`).
    pub max_message_len: usize,
    /// How long the handshake may take, in milliseconds.
    pub hello_timeout_ms: u64,
    /// Send a heartbeat when nothing was sent for this long.
    pub heartbeat_ms: u64,
    /// Close the session when no byte was received for this long.
    pub idle_timeout_ms: u64,
    /// Stop producing entries while this many bytes wait for the socket.
    pub high_water: usize,
    /// When to ask the peer for a full resync.
    pub resync: ResyncPolicy,
    /// Decode received updates into [`crate::Event::Update`]s (the default). A
    /// receiver that only counts them (a load generator receiving every sum) turns
    /// this off: updates are still acknowledged and counted
    /// ([`crate::PeerSession::updates_received`]), but only their ids are read and
    /// none is reported as an event.
    pub decode_updates: bool,
}

impl SessionConfig {
    /// HAProxy's defaults for a peer called `local_name`.
    pub fn new(local_name: impl Into<String>) -> Self {
        SessionConfig {
            local_name: local_name.into(),
            pid: 0,
            max_message_len: stktagg_wire::frame::DEFAULT_MAX_MESSAGE_LEN,
            hello_timeout_ms: DEFAULT_HELLO_MS,
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            idle_timeout_ms: DEFAULT_IDLE_MS,
            high_water: DEFAULT_HIGH_WATER,
            resync: ResyncPolicy::default(),
            decode_updates: true,
        }
    }
}

/// When a session asks its peer for a full resync (RESYNC REQUEST). The engine
/// applies it; the caller chooses it per peer (a HAProxy node, an aggregator below,
/// an upstream).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResyncPolicy {
    /// Ask as soon as the session is established.
    pub ask_on_start: bool,
    /// After the peer answers PARTIAL, ask again after this many milliseconds
    /// (`None`: not before the caller asks).
    pub retry_after_partial_ms: Option<u64>,
    /// After the peer answered PARTIAL, ask again as soon as it CONFIRMs a lesson of
    /// ours: a HAProxy node that is still learning answers PARTIAL, and is complete
    /// once it has confirmed what we taught it.
    pub retry_on_confirm: bool,
    /// Once every entry taught back to the peer is acknowledged, ask for a full
    /// resync. HAProxy 3.2.0 never pushes local changes to an entry it learned from a
    /// peer; a resync request makes the taught entries its own again.
    pub ask_after_teach_back: bool,
}
