//! The pools' decay (`--decay`): after a burst, a quiet server gives its
//! free slabs back.

use std::time::{Duration, Instant};

use crate::harness::{block_on, get, metric, Server, TempDir};

#[test]
fn an_idle_server_gives_memory_back() {
    let dir = TempDir::new("decay");
    let bytes = dir.file("clip.ts", 2 << 20);
    let server = Server::start(&dir.0, &["--decay", "1"]);
    let addr = server.addr;
    block_on(async {
        let reserved = || metric(addr, "pagepool_bytes_reserved", &["pool=\"media\""]);
        // A burst: 64 responses at once map slabs for their chunks (two or
        // three chunks each).
        let burst: Vec<_> = (0..64)
            .map(|_| tokio::spawn(get(addr, "/media/clip.ts", &[])))
            .collect();
        for r in burst {
            let r = r.await.expect("a client task");
            assert!(r.status == 200 && r.body == bytes);
        }
        let after_burst = reserved().await;
        assert!(
            after_burst >= (16 << 20) as f64,
            "the burst mapped {after_burst} bytes"
        );
        // Quiet for the decay period: the free slabs go back, all but those
        // holding a slot a thread still caches (each of the server's two
        // workers caches up to 1 MiB of a class: at most 8 slabs here).
        let by = Instant::now() + Duration::from_secs(10);
        let mut now = after_burst;
        while now > after_burst / 2.0 && Instant::now() < by {
            tokio::time::sleep(Duration::from_millis(250)).await;
            now = reserved().await;
        }
        assert!(
            now <= after_burst / 2.0,
            "still {now} bytes reserved of {after_burst} after the decay"
        );
        assert!(metric(addr, "pagepool_decayed_bytes_total", &["pool=\"media\""]).await > 0.0);
    });
    drop(server);
}
