//! Serves the `kvbm_*` metrics of three tiers on `http://127.0.0.1:PORT/metrics`
//! while a small serving loop runs.
//!
//! ```text
//! cargo run -p kvblocks --features prometheus --example metrics_server -- [--port 9464] [--requests N] [--rate R] [--g1-blocks B]
//! curl -s http://127.0.0.1:9464/metrics | grep kvbm_evictions_total
//! ```
//!
//! `--port 0` lets the system choose a port; the first line printed names it.
//! `--requests` stops after that many requests (default: run until killed);
//! `--rate` paces the loop (requests per second, default 500; 0 = flat out).

mod http;
mod workload;

use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvblocks::metrics::prometheus::MetricsCollector;
use prometheus_client::registry::Registry;

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    port: u16,
    requests: Option<u64>,
    rate: u64,
    g1_blocks: usize,
}

fn parse_args() -> Result<Args, Error> {
    let mut args = Args {
        port: 9464,
        requests: None,
        rate: 500,
        g1_blocks: 256,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => args.port = value()?.parse()?,
            "--requests" => args.requests = Some(value()?.parse()?),
            "--rate" => args.rate = value()?.parse()?,
            "--g1-blocks" => args.g1_blocks = value()?.parse()?,
            "-h" | "--help" => {
                println!("usage: metrics_server [--port 9464] [--requests N] [--rate 500] [--g1-blocks 256]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    Ok(args)
}

fn main() -> Result<(), Error> {
    let args = parse_args()?;
    let mut tiers = workload::Tiers::new(args.g1_blocks, 0x5eed)?;

    let collector = MetricsCollector::new();
    tiers.export(&collector)?;
    let mut registry = Registry::default();
    collector.register(&mut registry);

    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, args.port))?;
    let server = http::MetricsServer::start(listener, Arc::new(registry))?;
    println!("serving http://{}/metrics", server.addr());

    let start = Instant::now();
    let mut served = 0u64;
    let mut blocks_found = 0usize;
    while args.requests.map_or(true, |limit| served < limit) {
        blocks_found += tiers.serve_request()?;
        served += 1;
        if args.rate > 0 {
            // Pace the loop: request `served` is due at served / rate seconds.
            let due = Duration::from_secs_f64(served as f64 / args.rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        if served % 10_000 == 0 {
            let g1 = tiers.g1.metrics();
            println!(
                "{served} requests, {blocks_found} blocks found cached, G1 evictions {}",
                g1.evictions
            );
        }
    }
    println!(
        "{served} requests, {blocks_found} blocks found cached; {:?}",
        tiers.g1.metrics()
    );
    drop(server);
    Ok(())
}
