//! Clients that stop reading: they hold their quota, not the pool; normal
//! requests beside them are served whole; they are cut off after the send
//! timeout, and their responses count as failed. And the order of reads
//! that keeps a new response from queueing behind theirs (`read_queue.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::body;
use crate::harness::{block_on, get, metric, Server, TempDir};
use crate::read_queue::{Pass, ReadQueue, Turn};

const STALLED: usize = 200;
const BIG: u64 = 200_000_000;
const SMALL: usize = 1 << 20;
const NORMAL_GETS: usize = 20;
const SEND_TIMEOUT: u64 = 8;

/// A client that asks for `path` and never reads (a 4 KiB receive buffer).
async fn stalled(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut s = socket.connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send");
    s
}

/// Reads what the server sent before it closed; `Err` if it did not close
/// within `limit`.
async fn drain(mut s: TcpStream, limit: Duration) -> Result<usize, ()> {
    let mut got = 0;
    let mut buf = vec![0u8; 64 << 10];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return got, // end of stream, or the reset
                Ok(n) => got += n,
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.map_err(|_| ())
}

#[test]
fn stalled_clients_do_not_starve_normal_requests() {
    let dir = TempDir::new("slow");
    dir.sparse("big.bin", BIG);
    let small = dir.file("small.bin", SMALL);
    let timeout = SEND_TIMEOUT.to_string();
    let server = Server::start(&dir.0, &["--send-timeout", &timeout]);
    let addr = server.addr;
    block_on(async {
        let closed_before = metric(
            addr,
            "media_server_slow_clients_closed_total",
            &["reason=\"send_timeout\""],
        )
        .await;
        let ok_before = metric(
            addr,
            "media_server_requests_total",
            &["route=\"media\"", "status=\"200\""],
        )
        .await;
        let failed_before = metric(
            addr,
            "media_server_responses_failed_total",
            &["route=\"media\"", "reason=\"send_timeout\""],
        )
        .await;
        let at_cap = || {
            metric(
                addr,
                "pagepool_allocations_total",
                &["pool=\"media\"", "outcome=\"exhausted\""],
            )
        };
        let at_cap_before = at_cap().await;
        let started = Instant::now();
        let mut slow = Vec::new();
        for _ in 0..STALLED {
            slow.push(stalled(addr, "/media/big.bin").await);
        }
        // Let every stalled response fill its socket and reach its stall:
        // no byte read for a while.
        let read_bytes = || metric(addr, "media_server_read_bytes_total", &[]);
        let mut last = read_bytes().await;
        let by = Instant::now() + Duration::from_secs(20);
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = read_bytes().await;
            if now == last || Instant::now() > by {
                break;
            }
            last = now;
        }
        let stalled_after = started.elapsed();
        // Each holds the chunk hyper is writing (with, at a chunk's end, the
        // next one) and the one read ahead: at most three.
        let held = metric(addr, "pagepool_buffers_in_use", &["pool=\"media\""]).await;
        assert!(
            held <= 3.0 * STALLED as f64,
            "{held} buffers held by {STALLED} stalled responses"
        );

        let mut latencies = Vec::new();
        for _ in 0..NORMAL_GETS {
            let t = Instant::now();
            let r = get(addr, "/media/small.bin", &[]).await;
            latencies.push(t.elapsed());
            assert_eq!(r.status, 200, "{:?}", r.headers);
            assert!(r.is_whole(), "a truncated response: {} bytes", r.body.len());
            assert!(r.body == small, "the bytes of small.bin");
        }
        assert_eq!(
            at_cap().await - at_cap_before,
            0.0,
            "the media pool reached its cap: stalled clients hold more than their quota"
        );
        let closed = || {
            metric(
                addr,
                "media_server_slow_clients_closed_total",
                &["reason=\"send_timeout\""],
            )
        };
        latencies.sort();
        eprintln!(
            "1 MiB GETs beside {STALLED} stalled clients (stalled after {stalled_after:?}): \
             min {:?}, median {:?}, max {:?}",
            latencies[0],
            latencies[NORMAL_GETS / 2],
            latencies[NORMAL_GETS - 1]
        );

        // Served beside the stalled clients, not once they were cut off.
        assert_eq!(
            closed().await,
            closed_before,
            "the normal GETs waited for the cut-off"
        );
        // Past the send timeout, every stalled client is cut off.
        let by = Instant::now() + Duration::from_secs(SEND_TIMEOUT + 10);
        while closed().await - closed_before < STALLED as f64 && Instant::now() < by {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(closed().await - closed_before, STALLED as f64);
        for s in slow {
            let got = drain(s, Duration::from_secs(5))
                .await
                .expect("the server closed the stalled connection");
            assert!(got < BIG as usize, "a stalled client got everything");
        }
        let ok = metric(
            addr,
            "media_server_requests_total",
            &["route=\"media\"", "status=\"200\""],
        )
        .await;
        assert_eq!(
            ok - ok_before,
            NORMAL_GETS as f64,
            "only whole responses count as 200"
        );
        let failed = metric(
            addr,
            "media_server_responses_failed_total",
            &["route=\"media\"", "reason=\"send_timeout\""],
        )
        .await;
        assert_eq!(
            failed - failed_before,
            STALLED as f64,
            "the cut responses count as failed"
        );
    });
    drop(server);
}

/// A client that keeps reading, but a trickle, is cut off by the minimum
/// send rate (not the send timeout: its writes make progress); one reading
/// at full speed beside it is not.
#[test]
fn a_trickling_client_is_below_the_minimum_rate() {
    let dir = TempDir::new("trickle");
    dir.sparse("big.bin", BIG);
    let small = dir.file("small.bin", SMALL);
    let server = Server::start(&dir.0, &["--send-timeout", "2", "--min-send-rate", "1M"]);
    let addr = server.addr;
    block_on(async {
        let reason = |r: &'static str| async move {
            metric(addr, "media_server_slow_clients_closed_total", &[r]).await
        };
        let (rate_before, timeout_before) = (
            reason("reason=\"min_send_rate\"").await,
            reason("reason=\"send_timeout\"").await,
        );
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /media/big.bin HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .expect("send");
        let started = Instant::now();
        let mut got = 0;
        let mut buf = vec![0u8; 64 << 10];
        let ended = loop {
            // 64 KiB every 100 ms: about 640 KiB/s, steady progress, below
            // the 1 MiB/s minimum.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let read = tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut buf)).await;
            match read {
                Ok(Ok(_)) => got += buf.len(),
                Ok(Err(_)) => break true, // the end of the stream, or the reset
                Err(_) => {}
            }
            if started.elapsed() > Duration::from_secs(20) {
                break false;
            }
        };
        assert!(
            ended,
            "the trickling client was never cut off ({got} bytes)"
        );
        assert!((got as u64) < BIG);
        assert_eq!(reason("reason=\"min_send_rate\"").await - rate_before, 1.0);
        assert_eq!(reason("reason=\"send_timeout\"").await, timeout_before);
        let r = get(addr, "/media/small.bin", &[]).await;
        assert!(r.status == 200 && r.body == small);
        assert_eq!(reason("reason=\"min_send_rate\"").await - rate_before, 1.0);
    });
    drop(server);
}

fn poll<F: Future + ?Sized>(f: Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

/// A response's turn: `read` bytes read so far, its body waiting or not.
fn turn(read: u64, wanted: bool) -> Arc<Turn> {
    let t = Arc::<Turn>::default();
    t.add_read(read);
    t.set_wanted(wanted);
    t
}

type Entering = Pin<Box<dyn Future<Output = Pass>>>;

/// `turn`'s read, entered and polled once: it has to wait.
fn waiting(queue: &Arc<ReadQueue>, turn: &Arc<Turn>) -> Entering {
    let (queue, turn) = (Arc::clone(queue), Arc::clone(turn));
    let mut f: Entering = Box::pin(async move { queue.enter(&turn).await });
    assert!(poll(f.as_mut()).is_pending(), "the queue is full");
    f
}

/// A queue of one read in flight, and that read's pass.
fn full_queue() -> (Arc<ReadQueue>, Pass) {
    let queue = ReadQueue::new(1);
    let Poll::Ready(pass) = poll(std::pin::pin!(queue.enter(&turn(0, true)))) else {
        panic!("an empty queue lets a read in");
    };
    (queue, pass)
}

/// 200 stalled clients' responses each read megabytes before their sockets
/// fill: a new response's read goes before theirs, not after.
#[test]
fn a_new_response_reads_before_responses_that_read_more() {
    let (queue, pass) = full_queue();
    let mut stalled: Vec<Entering> = (0..3)
        .map(|_| waiting(&queue, &turn(3 << 20, true)))
        .collect();
    let mut new = waiting(&queue, &turn(0, true));
    drop(pass);
    let Poll::Ready(pass) = poll(new.as_mut()) else {
        panic!("the new response's read waited behind the stalled ones'");
    };
    for s in &mut stalled {
        assert!(poll(s.as_mut()).is_pending());
    }
    // Then the others, one at a time, first come first.
    drop(pass);
    let Poll::Ready(pass) = poll(stalled[0].as_mut()) else {
        panic!("the first stalled read is next");
    };
    assert!(poll(stalled[1].as_mut()).is_pending());
    drop(pass);
    assert!(poll(stalled[1].as_mut()).is_ready());
}

/// A read its response waits on (hyper asked for the chunk) goes before a
/// read ahead, also one that became wanted while it waited.
#[test]
fn a_read_the_body_waits_on_goes_before_read_ahead() {
    let (queue, pass) = full_queue();
    let ahead = turn(0, false);
    let mut read_ahead = waiting(&queue, &ahead);
    let later = turn(1 << 20, false);
    let mut wanted_later = waiting(&queue, &later);
    let mut demand = waiting(&queue, &turn(2 << 20, true));
    later.set_wanted(true);
    drop(pass);
    let Poll::Ready(pass) = poll(wanted_later.as_mut()) else {
        panic!("the read that became wanted is first");
    };
    assert!(poll(read_ahead.as_mut()).is_pending());
    drop(pass);
    let Poll::Ready(_pass) = poll(demand.as_mut()) else {
        panic!("a wanted read goes before read-ahead");
    };
    assert!(poll(read_ahead.as_mut()).is_pending());
}

/// A read dropped while it waits (its client left) gives up its place, and
/// one dropped after it was let in hands its pass on.
#[test]
fn a_read_dropped_while_waiting_hands_its_place_on() {
    let (queue, pass) = full_queue();
    let gone = waiting(&queue, &turn(0, true));
    let admitted_then_gone = waiting(&queue, &turn(0, true));
    let mut next = waiting(&queue, &turn(0, true));
    drop(gone);
    assert_eq!(queue.waiting(), 2);
    drop(pass); // admits `admitted_then_gone`, which is never polled again
    drop(admitted_then_gone);
    assert!(poll(next.as_mut()).is_ready(), "the pass was lost");
    assert_eq!(queue.waiting(), 0);
}

/// The body tells its turn when hyper waits for a chunk.
#[test]
fn the_body_marks_its_next_read_wanted_while_hyper_waits() {
    let t = Arc::<Turn>::default();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut b = body::sized(Bytes::from_static(b"ab"), rx, 4, Arc::clone(&t));
    assert!(t.is_wanted(), "a new response's first read is wanted");
    assert!(poll(std::pin::pin!(b.frame())).is_ready());
    assert!(!t.is_wanted(), "hyper has a chunk");
    assert!(poll(std::pin::pin!(b.frame())).is_pending());
    assert!(t.is_wanted(), "hyper waits for the next");
    tx.try_send(Ok(Bytes::from_static(b"cd"))).expect("room");
    assert!(poll(std::pin::pin!(b.frame())).is_ready());
    assert!(!t.is_wanted());
}
