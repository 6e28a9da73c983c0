//! Helpers of the JetStream tests: a broker of the test's own (for the
//! restart test), unique names per test, worker managers running a
//! shared-prefix serving loop, and the exactness check.

#![allow(dead_code)] // not every test file uses every helper

use std::collections::{BTreeSet, VecDeque};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvblocks::events::EventsManager;
use kvblocks::{BlockManager, ImmutableBlock, LogicalLayoutHandle, SequenceHash};
use kvblocks_nats::{
    connect, manager_snapshot, NatsPublisher, PublisherConfig, SnapshotResponder, StreamSettings,
    Subjects,
};
use kvblocks_router::{Router, WorkerId};

/// The project's shared broker (scripts/test.sh starts one if none runs).
pub fn shared_url() -> String {
    std::env::var("KVBLOCKS_NATS_URL").unwrap_or_else(|_| "127.0.0.1:4222".into())
}

/// Names no other test (or run) uses.
pub fn unique(test: &str) -> (StreamSettings, String) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let tag = format!(
        "{test}_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let subjects = Subjects::new(&format!("kvbt.{tag}.ev"), &format!("kvbt.{tag}.snap"))
        .expect("valid test prefixes");
    let settings = StreamSettings::new(&format!("KVBT_{tag}"), subjects).expect("valid name");
    (settings, format!("router_{tag}"))
}

/// Deletes a test's stream from the shared broker, and the streams of test
/// processes that are gone (a test that panicked never reached its own
/// delete; the process id in the name tells whose a stream was).
pub async fn delete_stream(url: &str, settings: &StreamSettings) {
    let Ok(client) = connect(url).await else {
        return;
    };
    let jetstream = async_nats::jetstream::new(client);
    let _ = jetstream.delete_stream(&settings.name).await;
    let mut names = jetstream.stream_names();
    let mut stale = Vec::new();
    while let Some(Ok(name)) = futures_util::StreamExt::next(&mut names).await {
        if stream_owner(&name).is_some_and(|pid| !process_alive(pid)) {
            stale.push(name);
        }
    }
    for name in stale {
        let _ = jetstream.delete_stream(&name).await;
    }
}

/// The process id in a test stream's name (`KVBT_{test}_{pid}_{nanos}_{n}`,
/// see [`unique`]), if it is one.
fn stream_owner(name: &str) -> Option<u32> {
    let tag = name.strip_prefix("KVBT_")?;
    let mut fields = tag.rsplitn(4, '_');
    let (_n, _nanos, pid) = (fields.next()?, fields.next()?, fields.next()?);
    pid.parse().ok()
}

/// Whether process `pid` runs on this machine (the shared broker is local).
fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_test_streams_owner_is_read_from_its_name() {
    let (settings, _) = unique("some_test");
    assert_eq!(stream_owner(&settings.name), Some(std::process::id()));
    assert!(process_alive(std::process::id()));
    assert_eq!(stream_owner("KVBLOCKS_EVENTS"), None);
    assert_eq!(stream_owner("KVBT_x_notapid_1_2"), None);
}

/// Polls `condition` until it holds or `timeout` passes.
pub async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A port nothing listens on (now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `nats-server -js` of the test's own, on a free port with a store
/// directory of its own; killed (and the directory removed) on drop.
pub struct Broker {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Broker {
    pub fn start() -> Broker {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kvblocks-nats-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a store directory");
        let mut broker = Broker {
            port: free_port(),
            dir,
            child: None,
        };
        broker.restart();
        broker
    }

    pub fn url(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn binary() -> String {
        for candidate in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
            if std::path::Path::new(candidate).exists() {
                return candidate.into();
            }
        }
        "nats-server".into()
    }

    /// Starts the server (again, with the same port and store) and waits
    /// until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(Self::binary())
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Clone)]
pub struct Gpu;

pub const TIER: LogicalLayoutHandle = LogicalLayoutHandle::G1;
pub const BLOCK_SIZE: usize = 16;

/// A small xorshift generator, so every run serves the same requests.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One worker: a block manager whose store reports to an events manager
/// that publishes to NATS, a snapshot responder, and the requests it holds.
pub struct Worker {
    pub id: u128,
    pub events: Arc<EventsManager>,
    pub manager: Arc<BlockManager<Gpu>>,
    pub publisher: NatsPublisher,
    pub responder: SnapshotResponder,
    held: VecDeque<Vec<ImmutableBlock<Gpu>>>,
    rng: Rng,
    request: u64,
}

impl Worker {
    pub async fn start(
        url: &str,
        settings: &StreamSettings,
        id: u128,
        epoch: u64,
        buffer: usize,
    ) -> Worker {
        let client = connect(url).await.expect("broker reachable");
        let mut config = PublisherConfig::new(settings.clone());
        config.buffer = buffer;
        config.ack_timeout = Duration::from_millis(500);
        config.max_backoff = Duration::from_millis(200);
        let publisher = NatsPublisher::start(client.clone(), config)
            .await
            .expect("stream created");
        let events = Arc::new(
            EventsManager::builder()
                .instance_id(id)
                .block_size(BLOCK_SIZE as u32)
                .epoch(epoch)
                .sink(publisher.sink())
                .build(),
        );
        let manager = Arc::new(
            BlockManager::<Gpu>::builder()
                .block_count(48)
                .block_size(BLOCK_SIZE)
                .event_manager(Arc::clone(&events))
                .build()
                .expect("a manager"),
        );
        let responder = SnapshotResponder::start(
            client,
            &settings.subjects,
            id,
            manager_snapshot(Arc::clone(&manager), Arc::clone(&events)),
        )
        .await
        .expect("responder subscribed");
        Worker {
            id,
            events,
            manager,
            publisher,
            responder,
            held: VecDeque::new(),
            rng: Rng(0x9E37_79B9_7F4A_7C15 ^ ((id as u64 + 1) * 0x1234_5678) ^ epoch),
            request: 0,
        }
    }

    /// Serves `requests` requests of the shared-prefix workload (one of 6
    /// system prompts of 4 blocks, then up to 6 private blocks), holding
    /// each for the next 3 requests, and flushes the events after each.
    pub fn serve(&mut self, requests: usize) {
        for _ in 0..requests {
            self.request += 1;
            let prompt = self.rng.below(6);
            let mut chain = vec![SequenceHash::root(prompt + 1)];
            for i in 1..4 {
                chain.push(chain[i - 1].extend(prompt << 8 | i as u64));
            }
            for i in 0..self.rng.below(7) {
                let private = (self.id as u64) << 48 | self.request << 8 | i;
                chain.push(chain[chain.len() - 1].extend(private));
            }
            let mut blocks = self.manager.match_blocks(&chain);
            let misses = &chain[blocks.len()..];
            if let Some(fresh) = self.manager.allocate_blocks(misses.len()) {
                let staged = fresh
                    .into_iter()
                    .zip(misses)
                    .map(|(block, &key)| block.stage(key, BLOCK_SIZE).expect("our block size"))
                    .collect();
                blocks.extend(self.manager.register_blocks(staged));
            }
            self.held.push_back(blocks);
            if self.held.len() > 3 {
                let oldest = self.held.pop_front().unwrap_or_default();
                self.manager.release_blocks(oldest);
            }
            self.events.flush_all();
        }
    }

    /// The manager's registered set, as (worker, key) pairs.
    pub fn registered(&self) -> BTreeSet<(u128, u64)> {
        let ticket = self.manager.snapshot_barrier().expect("events on");
        let snapshot = self.events.take_snapshot(ticket).expect("our ticket");
        snapshot
            .tiers
            .iter()
            .flat_map(|tier| tier.hashes.iter())
            .map(|hash| (self.id, hash.current_sequence_hash()))
            .collect()
    }

    /// Stops like a process exit: a shutdown batch, the publisher drained.
    pub async fn stop(self) -> kvblocks_nats::PublisherStats {
        self.events.shutdown();
        let stats = self.publisher.close(Duration::from_secs(10)).await;
        drop(self.held);
        stats
    }
}

/// The union of the workers' registered sets.
pub fn union(workers: &[Worker]) -> BTreeSet<(u128, u64)> {
    workers.iter().flat_map(Worker::registered).collect()
}

/// Whether the router holds exactly `expected`.
pub fn router_equals(router: &Router, expected: &BTreeSet<(u128, u64)>) -> bool {
    router.metrics().held_pairs == expected.len() as u64
        && expected
            .iter()
            .all(|&(worker, key)| router.holds(WorkerId(worker), TIER, key))
}

/// Waits until the router holds exactly the workers' registered sets.
pub async fn wait_exact(router: &Router, workers: &[Worker], timeout: Duration) -> bool {
    let expected = union(workers);
    assert!(!expected.is_empty(), "the workload registered nothing");
    wait_until(timeout, || router_equals(router, &expected)).await
}
