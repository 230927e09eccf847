//! Peer transport: length-delimited frames over any stream-oriented network.
//!
//! A frame is `u32 length | magic "KVRF" | version | cluster id (u64) | sender id (u64) |
//! sender incarnation (u64) | range id (varint) | raft-core message` (`peer_header`). The range
//! id names the Raft group the message is for: one connection between two nodes carries every
//! group's messages, and the receiver routes each to its group (`node::store`). Every frame carries the
//! cluster id, so a node of another cluster (a misconfigured peer list) is refused on its first
//! frame rather than after it has corrupted anything; and the sender's incarnation, so that a
//! node whose data directory was wiped is refused by peers that knew its earlier life
//! (`node::identity::PeerGate`).
//!
//! Each peer gets one outbound task with a bounded queue. The node never waits for it: when the
//! queue is full or the peer is unreachable, messages are dropped (Raft tolerates loss) and the
//! core is told the peer is unreachable. Connections reconnect with backoff; connects, writes and
//! idle reads time out, because a connection can stall without ever failing.
//!
//! The [`Net`] trait is the seam for the simulator: production uses [`TokioNet`] (TCP), the
//! simulator a turmoil network, and everything above it is the same code.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use raft_core::codec::{self, DecodeError};
use raft_core::{Message, NodeId};

/// Re-exported for tests that craft peer frames.
pub use raft_core::{Message as RaftMessage, MessageBody as RaftMessageBody};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::node::identity::PeerGate;
use crate::peer_header::{self, HeaderError, RangeIdError, Sender, HEADER_LEN as FRAME_HEADER_LEN};
pub use crate::peer_header::{MESSAGE_MAGIC as FRAME_MAGIC, VERSION as FRAME_VERSION};
use crate::peer_reachability::PeerReachability;
use kv::ranges::RangeId;
pub use peer_identity::{PeerIdentity, PeerRefusals, Refusal};

mod peer_identity;
/// Frames above this size are refused before their body is read.
pub const MAX_FRAME_LEN: usize = 128 << 20;

/// A Raft message and the range (Raft group) it belongs to: what a peer's outbound queue and
/// the node's inbox carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeMessage {
    pub range: RangeId,
    pub msg: Message,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A byte stream to a peer or client.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A listening socket.
pub trait Listener: Send + 'static {
    type Stream: Stream;
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Self::Stream, String)>>;

    /// Starts a task of the node on this network's runtime: on tokio's scheduler by default.
    /// The simulator's network makes them local tasks of the simulated host, because tokio's
    /// scheduler drops its tasks, when a crash drops the host's runtime, in an order set by a
    /// process-wide task counter (ARCHITECTURE.md, the simulator: tasks are local to their host).
    fn spawn<F>(task: F) -> tokio::task::JoinHandle<F::Output>
    where
        Self: Sized,
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tokio::spawn(task)
    }

    /// Makes an accepted connection ready for frames, inside the connection's own task (never
    /// in the accept loop, where one stalled client would hold up every other): a TLS network
    /// does its handshake here and returns who the certificate says the peer is; `None` when
    /// the connection is refused (already reported). Plain networks, the simulator's among
    /// them, authenticate nobody.
    fn establish(
        &self,
        stream: Self::Stream,
        remote: String,
    ) -> BoxFuture<'static, Option<(Self::Stream, PeerIdentity)>> {
        let _ = remote;
        Box::pin(std::future::ready(Some((
            stream,
            PeerIdentity::Unauthenticated,
        ))))
    }
}

/// The network the node runs on.
pub trait Net: Clone + Send + Sync + 'static {
    type Stream: Stream;
    type Listener: Listener<Stream = Self::Stream>;
    fn bind(&self, addr: String) -> BoxFuture<'static, io::Result<Self::Listener>>;
    /// Connects to whichever node listens at `addr` (a TLS network: any member of the cluster).
    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<Self::Stream>>;

    /// Connects to member `member` at `addr`: a TLS network checks the server's certificate
    /// names that member.
    fn connect_member(
        &self,
        addr: String,
        member: NodeId,
    ) -> BoxFuture<'static, io::Result<Self::Stream>> {
        let _ = member;
        self.connect(addr)
    }
}

/// Real TCP through tokio.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioNet;

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Self::Stream, String)>> {
        Box::pin(async move {
            let (s, addr) = tokio::net::TcpListener::accept(self).await?;
            let _ = s.set_nodelay(true);
            Ok((s, addr.to_string()))
        })
    }
}

impl Net for TokioNet {
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;
    fn bind(&self, addr: String) -> BoxFuture<'static, io::Result<Self::Listener>> {
        Box::pin(async move { tokio::net::TcpListener::bind(addr).await })
    }
    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<Self::Stream>> {
        Box::pin(async move {
            let s = tokio::net::TcpStream::connect(addr).await?;
            let _ = s.set_nodelay(true);
            Ok(s)
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    TooLarge {
        len: usize,
        max: usize,
    },
    TooShort(usize),
    BadMagic(u32),
    UnknownVersion(u8),
    WrongCluster {
        ours: u64,
        theirs: u64,
    },
    /// The range id after the header is malformed.
    RangeId(RangeIdError),
    Message(DecodeError),
    /// The header names one node, the message inside another.
    NotFromSender {
        header: NodeId,
        message: NodeId,
    },
    /// A hello frame whose address part is malformed.
    Hello(&'static str),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "peer frame of {len} bytes exceeds the limit of {max}")
            }
            FrameError::TooShort(len) => HeaderError::TooShort(*len).fmt(f),
            FrameError::BadMagic(m) => HeaderError::BadMagic(*m).fmt(f),
            FrameError::UnknownVersion(v) => HeaderError::UnknownVersion(*v).fmt(f),
            &FrameError::WrongCluster { ours, theirs } => {
                HeaderError::WrongCluster { ours, theirs }.fmt(f)
            }
            FrameError::RangeId(e) => write!(f, "malformed peer frame: {e}"),
            FrameError::Message(e) => write!(f, "undecodable raft message: {e}"),
            FrameError::NotFromSender { header, message } => write!(
                f,
                "frame sent by node {header} carries a message from node {message}"
            ),
            FrameError::Hello(why) => write!(f, "malformed hello frame: {why}"),
        }
    }
}

impl From<HeaderError> for FrameError {
    fn from(e: HeaderError) -> Self {
        match e {
            HeaderError::TooShort(len) => FrameError::TooShort(len),
            HeaderError::BadMagic(m) => FrameError::BadMagic(m),
            HeaderError::UnknownVersion(v) => FrameError::UnknownVersion(v),
            HeaderError::WrongCluster { ours, theirs } => FrameError::WrongCluster { ours, theirs },
        }
    }
}

impl std::error::Error for FrameError {}

/// Appends one whole frame (length prefix included) for `msg` of range `range`, sent by
/// incarnation `incarnation` of `msg.from`.
pub fn encode_frame(
    cluster_id: u64,
    incarnation: u64,
    range: RangeId,
    msg: &Message,
    out: &mut BytesMut,
) {
    let body_len = FRAME_HEADER_LEN + peer_header::range_id_len(range) + codec::encoded_len(msg);
    out.reserve(4 + body_len);
    out.put_u32(u32::try_from(body_len).unwrap_or(u32::MAX));
    let sender = Sender {
        node_id: msg.from,
        incarnation,
    };
    peer_header::put_header(FRAME_MAGIC, cluster_id, sender, out);
    peer_header::put_range_id(range, out);
    codec::encode(msg, out);
}

/// Appends the hello frame that opens a message connection: the header, and `advertised` (the
/// peer address this node listens on; left out if longer than [`peer_header::MAX_HELLO_ADDR`]).
pub fn encode_hello(cluster_id: u64, me: Sender, advertised: &str, out: &mut BytesMut) {
    let addr = if advertised.len() <= peer_header::MAX_HELLO_ADDR {
        advertised.as_bytes()
    } else {
        &[]
    };
    out.put_u32((FRAME_HEADER_LEN + 2 + addr.len()) as u32);
    peer_header::put_header(peer_header::HELLO_MAGIC, cluster_id, me, out);
    out.put_u16(addr.len() as u16);
    out.put_slice(addr);
}

/// Reads a hello frame's body: its sender, and the peer address it gave (empty if none).
pub fn decode_hello(cluster_id: u64, body: &[u8]) -> Result<(Sender, String), FrameError> {
    let mut rest = body;
    let sender = peer_header::take_header(peer_header::HELLO_MAGIC, cluster_id, &mut rest)
        .map_err(FrameError::from)?;
    if rest.remaining() < 2 {
        return Err(FrameError::Hello("no address length"));
    }
    let len = rest.get_u16() as usize;
    if len > peer_header::MAX_HELLO_ADDR || rest.remaining() != len {
        return Err(FrameError::Hello("bad address length"));
    }
    let addr = std::str::from_utf8(rest).map_err(|_| FrameError::Hello("address not UTF-8"))?;
    Ok((sender, addr.to_string()))
}

/// Checks a frame's length prefix before its body is read.
pub fn check_frame_len(len: usize) -> Result<(), FrameError> {
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    if len < FRAME_HEADER_LEN {
        return Err(FrameError::TooShort(len));
    }
    Ok(())
}

/// Decodes a frame body (everything after the length prefix): who sent it, and the message
/// with its range; the message must be from the sender.
pub fn decode_frame(
    cluster_id: u64,
    mut body: Bytes,
) -> Result<(Sender, RangeMessage), FrameError> {
    check_frame_len(body.len())?;
    let sender = peer_header::take_header(FRAME_MAGIC, cluster_id, &mut body)?;
    let range = peer_header::take_range_id(&mut body).map_err(FrameError::RangeId)?;
    let msg = codec::decode(body).map_err(FrameError::Message)?;
    if msg.from != sender.node_id {
        return Err(FrameError::NotFromSender {
            header: sender.node_id,
            message: msg.from,
        });
    }
    Ok((sender, RangeMessage { range, msg }))
}

/// Timeouts of the peer transport.
#[derive(Clone, Copy, Debug)]
pub struct TransportTimeouts {
    pub connect: Duration,
    pub write: Duration,
    /// A connection with nothing to read for this long is closed (heartbeats flow far more often).
    pub idle_read: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for TransportTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(1),
            write: Duration::from_secs(2),
            idle_read: Duration::from_secs(10),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
        }
    }
}

/// Sends `to`'s messages over one connection at a time, reconnecting as needed. Messages that
/// arrive while no connection is up are dropped, and `unreachable` is told.
pub async fn run_outbound<N: Net>(
    net: N,
    to: NodeId,
    addr: String,
    (cluster_id, me, advertised): (u64, Sender, String),
    timeouts: TransportTimeouts,
    mut queue: mpsc::Receiver<RangeMessage>,
    unreachable: mpsc::UnboundedSender<NodeId>,
) {
    let mut backoff = timeouts.backoff_min;
    let mut reach = PeerReachability::new(to, &addr);
    let mut buf = BytesMut::new();
    // A message that arrived after the peer closed the connection: the first on the next one.
    let mut carried: Option<RangeMessage> = None;
    loop {
        let stream = match tokio::time::timeout(
            timeouts.connect,
            net.connect_member(addr.clone(), to),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                reach.failed(Instant::now(), &e.to_string());
                carried = None;
                if !discard_while_down(&mut queue, &unreachable, to, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(timeouts.backoff_max);
                continue;
            }
            Err(_) => {
                reach.failed(Instant::now(), "connecting timed out");
                carried = None;
                if !discard_while_down(&mut queue, &unreachable, to, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(timeouts.backoff_max);
                continue;
            }
        };
        backoff = timeouts.backoff_min;
        reach.connected(Instant::now());
        let mut stream = stream;
        buf.clear();
        encode_hello(cluster_id, me, &advertised, &mut buf);
        match tokio::time::timeout(timeouts.write, stream.write_all(&buf)).await {
            Ok(Ok(())) => {}
            _ => {
                let _ = unreachable.send(to);
                continue;
            }
        }
        let incarnation = me.incarnation;
        loop {
            let first = match carried.take() {
                Some(m) => m,
                None => match next_or_closed(&mut queue, &mut stream).await {
                    Next::Message(m) => m,
                    Next::Closed(m) => {
                        tracing::debug!(peer = to, "peer closed the connection; reconnecting");
                        carried = Some(m);
                        break;
                    }
                    Next::QueueClosed => return,
                },
            };
            buf.clear();
            encode_frame(cluster_id, incarnation, first.range, &first.msg, &mut buf);
            // Whatever else is queued goes out in the same write.
            while buf.len() < (1 << 20) {
                match queue.try_recv() {
                    Ok(m) => encode_frame(cluster_id, incarnation, m.range, &m.msg, &mut buf),
                    Err(_) => break,
                }
            }
            let write = async {
                stream.write_all(&buf).await?;
                stream.flush().await
            };
            match tokio::time::timeout(timeouts.write, write).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    reach.failed(Instant::now(), &e.to_string());
                    let _ = unreachable.send(to);
                    break;
                }
                Err(_) => {
                    reach.failed(Instant::now(), "writing stalled");
                    let _ = unreachable.send(to);
                    break;
                }
            }
        }
    }
}

enum Next {
    Message(RangeMessage),
    /// The peer closed the connection (it closes idle ones) before this message came.
    Closed(RangeMessage),
    QueueClosed,
}

/// The next message to send, noticing meanwhile whether the peer closed the connection. The
/// peer never writes on it, so a read that returns means it is gone: found only by the next
/// write, the message written would be lost, and between followers that is a vote request
/// right after their leader died.
async fn next_or_closed<S: Stream>(
    queue: &mut mpsc::Receiver<RangeMessage>,
    stream: &mut S,
) -> Next {
    let mut probe = [0u8; 1];
    tokio::select! {
        // A queued message first: under load the socket is then not polled at all.
        biased;
        m = queue.recv() => m.map_or(Next::QueueClosed, Next::Message),
        _ = stream.read(&mut probe) => match queue.recv().await {
            Some(m) => Next::Closed(m),
            None => Next::QueueClosed,
        },
    }
}

/// Drops queued messages for `wait` (the peer is down); false once the node has gone away.
async fn discard_while_down(
    queue: &mut mpsc::Receiver<RangeMessage>,
    unreachable: &mpsc::UnboundedSender<NodeId>,
    to: NodeId,
    wait: Duration,
) -> bool {
    let _ = unreachable.send(to);
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            biased;
            _ = &mut deadline => return true,
            m = queue.recv() => if m.is_none() { return false },
        }
    }
}

/// Why no frame body came.
#[derive(Debug)]
enum FrameReadError {
    /// The peer closed the connection, or it failed.
    Closed,
    /// Nothing arrived for the idle timeout.
    Idle,
    Refused(FrameError),
}

/// Bytes read from one inbound connection, and the frames in them. One read takes whatever
/// has arrived (under load, many frames: one system call rather than two per frame), and
/// each body is split off the buffer without a copy; the entries decoded from it keep
/// referring to it.
#[derive(Default)]
struct FrameReader {
    buf: BytesMut,
}

/// The size of a new read buffer: a few dozen small frames.
const READ_CHUNK: usize = 16 * 1024;

impl FrameReader {
    /// The next frame's body (after its length prefix).
    async fn next<S: Stream>(
        &mut self,
        stream: &mut S,
        idle_read: Duration,
    ) -> Result<Bytes, FrameReadError> {
        self.fill_to(4, stream, idle_read).await?;
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        let len = len as usize;
        check_frame_len(len).map_err(FrameReadError::Refused)?;
        self.fill_to(4 + len, stream, idle_read).await?;
        let mut body = self.buf.split_to(4 + len).freeze();
        body.advance(4);
        Ok(body)
    }

    /// Reads until the buffer holds at least `wanted` bytes.
    async fn fill_to<S: Stream>(
        &mut self,
        wanted: usize,
        stream: &mut S,
        idle_read: Duration,
    ) -> Result<(), FrameReadError> {
        while self.buf.len() < wanted {
            let needed = wanted - self.buf.len();
            // A new chunk only when this one is full: frames are packed into it back to back,
            // so the entries that keep a chunk alive hold little besides their own bytes.
            if self.buf.capacity() - self.buf.len() < needed {
                self.buf.reserve(needed.max(READ_CHUNK));
            }
            match tokio::time::timeout(idle_read, stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Err(FrameReadError::Closed),
                Ok(Ok(_)) => {}
                Err(_) => return Err(FrameReadError::Idle),
            }
        }
        Ok(())
    }
}

/// A connection's first frame, read to its last byte and no further. A join request is
/// shorter than a peer header (its asker knows no cluster yet).
async fn read_first_frame<S: Stream>(
    stream: &mut S,
    idle_read: Duration,
) -> Result<Bytes, FrameReadError> {
    let mut len_buf = [0u8; 4];
    match tokio::time::timeout(idle_read, stream.read_exact(&mut len_buf)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return Err(FrameReadError::Closed),
        Err(_) => return Err(FrameReadError::Idle),
    }
    let len = u32::from_be_bytes(len_buf) as usize;
    if len != crate::join::REQUEST_LEN {
        check_frame_len(len).map_err(FrameReadError::Refused)?;
    }
    let mut body = vec![0u8; len];
    match tokio::time::timeout(idle_read, stream.read_exact(&mut body)).await {
        Ok(Ok(_)) => Ok(Bytes::from(body)),
        _ => Err(FrameReadError::Closed),
    }
}

/// Where an inbound connection that asks for a snapshot is handed (`snapshot_transfer`).
#[derive(Clone)]
pub struct SnapshotService {
    pub serve: mpsc::Sender<crate::snapshot_transfer::ServeRequest>,
    pub events: mpsc::UnboundedSender<crate::node::snapshot_install::SnapshotEvent>,
    pub write_timeout: Duration,
    /// The configuration in force with the members' addresses: the answer to a join request
    /// (`join`), which arrives on the peer port too.
    pub members: tokio::sync::watch::Receiver<kv::MemberTable>,
}

/// Reads frames from one inbound peer connection into `inbox` until it closes or misbehaves.
/// A connection whose first frame asks for a snapshot is handed to `snapshots` instead, and
/// one whose first frame is a bootstrap probe or a join request is answered and closed. Every
/// member id a frame claims must be one the connection's certificate names (`identity`; any,
/// without TLS), and frames from a sender the `gate` does not admit (another incarnation of a
/// pinned peer) close the connection.
pub async fn run_inbound<S: Stream>(
    mut stream: S,
    remote: String,
    identity: PeerIdentity,
    gate: std::sync::Arc<PeerGate>,
    idle_read: Duration,
    inbox: mpsc::Sender<RangeMessage>,
    snapshots: SnapshotService,
) {
    let cluster_id = gate.cluster_id();
    // The first frame is read alone: a join, probe or snapshot request hands the stream on,
    // and nothing after it may sit in this task's buffer.
    let Some(first) = frame_or_close(read_first_frame(&mut stream, idle_read).await, &remote)
    else {
        return;
    };
    let peer = InboundPeer {
        remote,
        identity,
        gate,
    };
    let Some((mut stream, first)) = serve_request(stream, first, &peer, idle_read, snapshots).await
    else {
        return;
    };
    // The sender this connection was admitted for: later frames from it skip the checks.
    let mut admitted: Option<Sender> = None;
    let mut frames = FrameReader::default();
    let mut next = Some(first);
    loop {
        let body = match next.take() {
            Some(body) => body,
            None => match frame_or_close(frames.next(&mut stream, idle_read).await, &peer.remote) {
                Some(body) => body,
                None => return,
            },
        };
        if peer_header::has_magic(peer_header::HELLO_MAGIC, &body) {
            match decode_hello(cluster_id, &body) {
                Ok((sender, addr)) if peer.admits(sender) => {
                    peer.gate.note_introduced(sender.node_id, addr);
                    admitted = Some(sender);
                }
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(remote = %peer.remote, error = %e, "closing peer connection");
                    return;
                }
            }
            continue;
        }
        match decode_frame(cluster_id, body) {
            Ok((sender, msg)) => {
                if admitted != Some(sender) {
                    if !peer.admits(sender) {
                        return;
                    }
                    admitted = Some(sender);
                }
                if inbox.send(msg).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(remote = %peer.remote, error = %e, "closing peer connection");
                return;
            }
        }
    }
}

/// The far end of an inbound connection, and what decides whom it may speak for.
struct InboundPeer {
    remote: String,
    identity: PeerIdentity,
    gate: std::sync::Arc<PeerGate>,
}

impl InboundPeer {
    /// Whether `sender` may be acted on: the certificate names it, and the gate admits its
    /// incarnation.
    fn admits(&self, sender: Sender) -> bool {
        self.identity.admits(sender.node_id, &self.remote) && self.gate.admit(sender, &self.remote)
    }
}

/// A frame body, or `None` when the connection is done (closed, idle, or refused: logged).
fn frame_or_close(read: Result<Bytes, FrameReadError>, remote: &str) -> Option<Bytes> {
    match read {
        Ok(body) => Some(body),
        Err(FrameReadError::Closed) => None,
        Err(FrameReadError::Idle) => {
            tracing::debug!(%remote, "idle peer connection closed");
            None
        }
        Err(FrameReadError::Refused(e)) => {
            tracing::warn!(%remote, error = %e, "closing peer connection");
            None
        }
    }
}

/// Serves a connection whose first frame is a request (a join request, a bootstrap probe, a
/// snapshot request) and returns `None`; else gives the stream and the frame back, for the
/// message loop.
async fn serve_request<S: Stream>(
    stream: S,
    first: Bytes,
    peer: &InboundPeer,
    idle_read: Duration,
    snapshots: SnapshotService,
) -> Option<(S, Bytes)> {
    use crate::snapshot_transfer::{decode_request, serve, REQUEST_LEN};
    let (remote, gate) = (&peer.remote, &peer.gate);
    let len = first.len();
    if crate::join::is_request(&first) {
        match crate::join::decode_request(&first) {
            Ok(asker) if peer.identity.admits(asker, remote) => {
                tracing::info!(%remote, asker, "answering a join request");
                let answer = crate::join::JoinAnswer {
                    cluster_id: gate.cluster_id(),
                    members: snapshots.members.borrow().clone(),
                };
                crate::join::serve(stream, answer, snapshots.write_timeout).await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%remote, error = %e, "closing peer connection"),
        }
        return None;
    }
    if len == crate::probe::REQUEST_LEN && peer_header::has_magic(peer_header::PROBE_MAGIC, &first)
    {
        match crate::probe::decode_request(first) {
            Ok((_, asker)) if peer.identity.admits(asker.node_id, remote) => {
                let answer = gate.probe_answer(asker.node_id);
                crate::probe::answer(stream, answer, idle_read, asker.node_id).await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%remote, error = %e, "closing peer connection"),
        }
        return None;
    }
    if len == REQUEST_LEN && peer_header::has_magic(peer_header::SNAPSHOT_MAGIC, &first) {
        match decode_request(gate.cluster_id(), first) {
            Ok((sender, request)) if peer.admits(sender) => {
                serve(
                    stream,
                    request,
                    snapshots.serve,
                    snapshots.events,
                    snapshots.write_timeout,
                )
                .await
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%remote, error = %e, "closing peer connection"),
        }
        return None;
    }
    Some((stream, first))
}

#[cfg(test)]
mod tests;
