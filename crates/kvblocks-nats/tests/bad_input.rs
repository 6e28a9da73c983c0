//! What the transport does with input it cannot trust: a broker that is
//! down at start, bad configuration, and messages on the stream that are
//! corrupt, misaddressed, from unknown workers, duplicated, out of order or
//! from an old incarnation. Each is a typed error or a counted refusal;
//! none reaches the router's index.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use kvblocks::events::{KvCacheEvents, KvbmCacheEvents, StoredBlock, StreamPosition};
use kvblocks::{LogicalLayoutHandle::G1, SequenceHash};
use kvblocks_nats::{
    connect, ConfigError, ConsumerConfig, EventConsumer, NatsError, NatsPublisher, PublisherConfig,
    StreamSettings, Subjects,
};
use kvblocks_router::{Router, WorkerId};
use kvblocks_wire::kvbm::{encode, KvbmEncoding};

mod common;
use common::*;

#[tokio::test]
async fn a_broker_that_is_down_at_start_is_a_typed_error() {
    let url = format!("127.0.0.1:{}", free_port());
    match connect(&url).await {
        Err(NatsError::Connect { url: tried, .. }) => assert_eq!(tried, url),
        other => panic!("expected a connect error, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_configuration_is_refused_before_the_broker_is_asked() {
    assert!(matches!(
        StreamSettings::new("has.dot", Subjects::default()),
        Err(ConfigError::BadName(_))
    ));
    let client = connect(&shared_url()).await.expect("the shared broker");
    let (settings, _) = unique("config");
    let mut config = PublisherConfig::new(settings.clone());
    config.buffer = 0;
    assert!(matches!(
        NatsPublisher::start(client.clone(), config).await,
        Err(NatsError::Config(ConfigError::ZeroBuffer))
    ));
    let router = Arc::new(Router::new());
    let consumer = EventConsumer::start(client, ConsumerConfig::new(settings, "a.b"), router).await;
    assert!(matches!(
        consumer,
        Err(NatsError::Config(ConfigError::BadName(_)))
    ));
}

fn frame(worker: u128, epoch: u64, seq: u64, key: u64) -> Vec<u8> {
    let batch = KvbmCacheEvents {
        events: KvCacheEvents::Create(vec![StoredBlock::orphan(SequenceHash::root(key))]),
        instance_id: worker,
        tier: G1,
        block_size: 16,
        position: StreamPosition { epoch, seq },
    };
    encode(&batch, KvbmEncoding::Extended).expect("a store encodes")
}

fn key(k: u64) -> u64 {
    SequenceHash::root(k).current_sequence_hash()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrustworthy_messages_are_counted_and_never_applied() {
    let url = shared_url();
    let (settings, durable) = unique("bad_messages");
    let client = connect(&url).await.expect("the shared broker");
    let js = jetstream::new(client.clone());
    kvblocks_nats::ensure_stream(&js, &settings)
        .await
        .expect("stream");
    let subjects = &settings.subjects;
    let prefix = subjects.events_prefix();
    let messages: Vec<(String, Vec<u8>)> = vec![
        (subjects.events(5), b"\xc1 not msgpack".to_vec()), // corrupt
        (format!("{prefix}.not_a_worker"), frame(5, 1, 0, 1)), // bad subject
        (subjects.events(6), frame(7, 1, 0, 2)),            // another worker's frame
        (subjects.events(9), frame(9, 1, 0, 3)),            // unknown worker
        (subjects.events(5), frame(5, 1, 0, 10)),           // applied
        (subjects.events(5), frame(5, 1, 0, 10)),           // duplicate
        (subjects.events(5), frame(5, 1, 2, 12)),           // gap: 1 missing, no responder
        (subjects.events(5), frame(5, 1, 1, 11)),           // the missing one: applied
        (subjects.events(5), frame(5, 1, 3, 13)),           // 2 was refused: still a gap
        (subjects.events(7), frame(7, 2, 0, 20)),           // epoch 2
        (subjects.events(7), frame(7, 1, 0, 21)),           // stale epoch 1
        (subjects.events(6), frame(6, 1, 0, 30)),           // applied
    ];
    for (subject, payload) in &messages {
        js.publish(subject.clone(), payload.clone().into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    let router = Arc::new(Router::new());
    let mut config = ConsumerConfig::new(settings.clone(), &durable);
    config.workers = Some(HashSet::from([5, 6, 7]));
    config.snapshot_timeout = Duration::from_millis(300);
    config.replay_idle = Duration::from_millis(200);
    config.retry_recovery = Duration::from_secs(600);
    let consumer = EventConsumer::start(client, config, Arc::clone(&router))
        .await
        .expect("consumer");
    let all = messages.len() as u64;
    assert!(
        wait_until(Duration::from_secs(30), || consumer.stats().messages == all).await,
        "{:?}",
        consumer.stats()
    );
    let stats = consumer.stats();
    assert_eq!(stats.undecodable, 1, "{stats:?}");
    assert_eq!(stats.bad_subjects, 1, "{stats:?}");
    assert_eq!(stats.mismatched, 1, "{stats:?}");
    assert_eq!(stats.unknown_workers, 1, "{stats:?}");
    assert_eq!(stats.duplicates, 1, "{stats:?}");
    assert_eq!(
        stats.gaps, 2,
        "the second gap opens after the first closed: {stats:?}"
    );
    assert_eq!(
        stats.failed_recoveries, 2,
        "no responder, nothing to replay: {stats:?}"
    );
    assert_eq!(stats.refused_in_gap, 2, "{stats:?}");
    assert_eq!(stats.stale_epochs, 1, "{stats:?}");
    assert_eq!(stats.applied, 4, "{stats:?}");

    let holds = |worker: u128, k: u64| router.holds(WorkerId(worker), G1, key(k));
    assert!(holds(5, 10) && holds(5, 11) && holds(7, 20) && holds(6, 30));
    for (worker, k) in [(5, 1), (6, 2), (7, 2), (9, 3), (5, 12), (5, 13), (7, 21)] {
        assert!(
            !holds(worker, k),
            "worker {worker} block {k} must not be applied"
        );
    }
    assert_eq!(router.metrics().held_pairs, 4);
    delete_stream(&url, &settings).await;
}
