//! Four workers publish their store-emitted events to JetStream and a
//! router consumes them; when the workers stop, the router's view equals the
//! union of their registered sets, exactly: in steady state, across a
//! consumer crash, a router that lost its state, a broker restart and a
//! worker restart. The shared broker on 127.0.0.1:4222 serves every test
//! except the broker restart, which starts (and kills) its own.

use std::sync::Arc;
use std::time::Duration;

use kvblocks_nats::{connect, ConsumerConfig, EventConsumer};
use kvblocks_router::Router;

mod common;
use common::*;

const WAIT: Duration = Duration::from_secs(30);

async fn start_workers(url: &str, settings: &kvblocks_nats::StreamSettings) -> Vec<Worker> {
    let mut workers = Vec::new();
    for id in 0..4 {
        workers.push(Worker::start(url, settings, id, 1, 4096).await);
    }
    workers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_router_view_equals_union_of_registered_sets() {
    let url = shared_url();
    let (settings, durable) = unique("steady");
    let mut workers = start_workers(&url, &settings).await;
    let router = Arc::new(Router::new());
    let client = connect(&url)
        .await
        .expect("the shared broker (scripts/test.sh starts it)");
    let consumer = EventConsumer::start(
        client,
        ConsumerConfig::new(settings.clone(), &durable),
        Arc::clone(&router),
    )
    .await
    .expect("consumer");
    for _ in 0..4 {
        for worker in &mut workers {
            worker.serve(50);
        }
    }
    assert!(
        wait_exact(&router, &workers, WAIT).await,
        "{:?}",
        consumer.stats()
    );
    let stats = consumer.stats();
    assert_eq!(
        (stats.gaps, stats.duplicates, stats.undecodable),
        (0, 0, 0),
        "{stats:?}"
    );
    let c = router.metrics().counters;
    assert_eq!(
        (c.gaps, c.refused_batches, c.duplicates),
        (0, 0, 0),
        "{c:?}"
    );
    for worker in workers {
        let published = worker.stop().await;
        assert_eq!(published.dropped(), 0, "{published:?}");
        assert!(published.published > 100, "{published:?}");
        assert_eq!(published.published, published.accepted, "{published:?}");
    }
    delete_stream(&url, &settings).await;
}
