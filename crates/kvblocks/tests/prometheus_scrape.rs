//! The `metrics_server` example's `/metrics`, scraped over real HTTP and read
//! by an independent Prometheus text parser: every `kvbm_*` family of
//! kvbm-logical's (bar four race counters of its own) with the right type,
//! one series per tier with its `pool` label, values equal to
//! `BlockManager::metrics()`; and the example binary itself, started on
//! port 0. Runs with `--features prometheus` (`scripts/test.sh` does).

#[path = "../examples/metrics_server/http.rs"]
mod http;
#[path = "../examples/metrics_server/workload.rs"]
mod workload;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;

use kvblocks::metrics::prometheus::{MetricKind, MetricsCollector, KVBM_METRICS};
use kvblocks::MetricsSnapshot;
use prometheus_client::registry::Registry;
use prometheus_parse::{Sample, Scrape, Value};

/// kvbm-logical 1.6.1's names and types, written out here rather than taken
/// from `KVBM_METRICS`, so a renamed family fails this test.
const EXPECTED: [(&str, MetricKind); 15] = [
    ("kvbm_allocations_total", MetricKind::Counter),
    ("kvbm_allocations_from_reset_total", MetricKind::Counter),
    ("kvbm_evictions_total", MetricKind::Counter),
    ("kvbm_registrations_total", MetricKind::Counter),
    ("kvbm_duplicate_blocks_total", MetricKind::Counter),
    ("kvbm_registration_dedup_total", MetricKind::Counter),
    ("kvbm_stagings_total", MetricKind::Counter),
    ("kvbm_match_hashes_requested_total", MetricKind::Counter),
    ("kvbm_match_blocks_returned_total", MetricKind::Counter),
    ("kvbm_scan_hashes_requested_total", MetricKind::Counter),
    ("kvbm_scan_blocks_returned_total", MetricKind::Counter),
    ("kvbm_inflight_mutable", MetricKind::Gauge),
    ("kvbm_inflight_immutable", MetricKind::Gauge),
    ("kvbm_reset_pool_size", MetricKind::Gauge),
    ("kvbm_inactive_pool_size", MetricKind::Gauge),
];

const POOLS: [&str; 3] = ["G1", "G2", "G3"];

/// Three tiers exported into a registry whose sub-registry adds a `worker`
/// label, served on an OS-chosen port of 127.0.0.1.
fn serve(tiers: &workload::Tiers) -> http::MetricsServer {
    let collector = MetricsCollector::new();
    tiers.export(&collector).expect("three distinct tiers");
    let mut registry = Registry::default();
    collector.register(registry.sub_registry_with_label(("worker".into(), "w0".into())));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    http::MetricsServer::start(listener, Arc::new(registry)).expect("start the server")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// GETs `path`; status, content type and body.
fn get(server: &http::MetricsServer, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let url = format!("http://{}{path}", server.addr());
    let mut request = agent().get(&url);
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    let mut response = request.call().expect("the server answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = response.body_mut().read_to_string().expect("a UTF-8 body");
    (status, content_type, body)
}

/// Scrapes `/metrics` in the 0.0.4 text format and parses it.
fn scrape(server: &http::MetricsServer) -> Scrape {
    let (status, content_type, body) = get(server, "/metrics", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    Scrape::parse(body.lines().map(|line| Ok(line.to_string()))).expect("a parsable exposition")
}

/// The `kvbm_*` samples by (name, pool), each checked for its labels.
fn kvbm_series(scrape: &Scrape) -> BTreeMap<(String, String), &Sample> {
    let mut series = BTreeMap::new();
    for sample in scrape
        .samples
        .iter()
        .filter(|s| s.metric.starts_with("kvbm_"))
    {
        let pool = sample
            .labels
            .get("pool")
            .expect("every kvbm series has a pool label");
        assert_eq!(
            sample.labels.get("worker"),
            Some("w0"),
            "the registry's own label is kept"
        );
        assert_eq!(
            sample.labels.len(),
            2,
            "pool and worker only: {:?}",
            sample.labels
        );
        let previous = series.insert((sample.metric.clone(), pool.to_string()), sample);
        assert!(previous.is_none(), "{} pool={pool} twice", sample.metric);
    }
    series
}

fn value_of(sample: &Sample, kind: MetricKind) -> u64 {
    let value = match (&sample.value, kind) {
        (Value::Counter(v), MetricKind::Counter) | (Value::Gauge(v), MetricKind::Gauge) => *v,
        (other, _) => panic!("{} is {other:?}, expected a {kind:?}", sample.metric),
    };
    assert!(
        value >= 0.0 && value.fract() == 0.0,
        "{} = {value}",
        sample.metric
    );
    value as u64
}

fn snapshots(tiers: &workload::Tiers) -> [MetricsSnapshot; 3] {
    [tiers.g1.metrics(), tiers.g2.metrics(), tiers.g3.metrics()]
}

#[test]
fn the_exported_families_are_kvbm_logicals() {
    let ours: Vec<_> = KVBM_METRICS.iter().map(|m| (m.name, m.kind)).collect();
    assert_eq!(ours, EXPECTED);
}

#[test]
fn a_scrape_reports_every_tier_with_its_pool_label_and_the_managers_values() {
    let mut tiers = workload::Tiers::new(64, 7).expect("build the tiers");
    let server = serve(&tiers);
    let mut found = 0;
    for _ in 0..600 {
        found += tiers.serve_request().expect("serve a request");
    }
    assert!(
        found > 0,
        "requests share prefixes, so some blocks are found cached"
    );

    // Nothing runs between the scrape and the snapshots: they must agree exactly.
    let scraped = scrape(&server);
    let expected = snapshots(&tiers);
    let series = kvbm_series(&scraped);
    assert_eq!(
        series.len(),
        EXPECTED.len() * POOLS.len(),
        "{:?}",
        series.keys()
    );
    for (pool, snapshot) in POOLS.iter().zip(&expected) {
        for (metric, &(name, kind)) in KVBM_METRICS.iter().zip(&EXPECTED) {
            let sample = series
                .get(&(name.to_string(), pool.to_string()))
                .unwrap_or_else(|| panic!("no {name}{{pool={pool:?}}}"));
            assert_eq!(
                value_of(sample, kind),
                metric.value(snapshot),
                "{name}{{pool={pool:?}}}"
            );
        }
    }
    for (name, _) in EXPECTED {
        assert!(
            scraped.docs.get(name).is_some_and(|help| !help.is_empty()),
            "no help for {name}"
        );
    }
    // The workload moved blocks down the tiers: the series are not all zero.
    let [g1, g2, g3] = expected;
    assert!(g1.evictions > 0 && g2.registrations > 0 && g2.evictions > 0 && g3.registrations > 0);
    assert!(g1.match_blocks_returned > 0);
    assert_eq!(
        g1.reset_pool_size + g1.inactive_pool_size,
        64,
        "every request finished"
    );
}

#[test]
fn openmetrics_is_served_when_asked_for_and_other_paths_are_refused() {
    let mut tiers = workload::Tiers::new(32, 11).expect("build the tiers");
    let server = serve(&tiers);
    tiers.serve_request().expect("serve a request");

    let (status, content_type, body) = get(
        &server,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
    );
    assert_eq!(status, 200);
    assert_eq!(content_type, http::OPENMETRICS_CONTENT_TYPE);
    assert!(
        body.ends_with("# EOF\n"),
        "an OpenMetrics exposition ends with # EOF"
    );
    assert!(
        body.contains("# TYPE kvbm_allocations counter\n"),
        "OpenMetrics names the counter family without _total"
    );
    let allocations = tiers.g1.metrics().allocations;
    assert!(
        body.contains(&format!(
            "kvbm_allocations_total{{worker=\"w0\",pool=\"G1\"}} {allocations}\n"
        )) || body.contains(&format!(
            "kvbm_allocations_total{{pool=\"G1\",worker=\"w0\"}} {allocations}\n"
        )),
        "{body}"
    );

    let (status, _, _) = get(&server, "/", None);
    assert_eq!(status, 404);
    let url = format!("http://{}/metrics", server.addr());
    let response = agent().post(&url).send("").expect("the server answers");
    assert_eq!(response.status().as_u16(), 405);
}

#[test]
fn scrapes_taken_while_requests_are_served_never_see_a_counter_go_back() {
    let mut tiers = workload::Tiers::new(64, 3).expect("build the tiers");
    let server = serve(&tiers);
    let mut last: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut scrapes = 0;
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            for _ in 0..3_000 {
                tiers.serve_request().expect("serve a request");
            }
        });
        // Bounded: the worker finishes after its requests; at least two scrapes.
        while !worker.is_finished() || scrapes < 2 {
            let scraped = scrape(&server);
            for ((name, pool), sample) in kvbm_series(&scraped) {
                let kind = EXPECTED.iter().find(|(n, _)| *n == name).map(|&(_, k)| k);
                let kind = kind.unwrap_or_else(|| panic!("unexpected family {name}"));
                let value = value_of(sample, kind);
                if kind == MetricKind::Counter {
                    let before = last
                        .insert((name.clone(), pool.clone()), value)
                        .unwrap_or(0);
                    assert!(
                        value >= before,
                        "{name}{{pool={pool:?}}} went from {before} to {value}"
                    );
                }
            }
            scrapes += 1;
        }
        worker.join().expect("the worker does not panic");
    });
    // Once the work is done, a scrape agrees with the managers again.
    let scraped = scrape(&server);
    let series = kvbm_series(&scraped);
    for (pool, snapshot) in POOLS.iter().zip(snapshots(&tiers)) {
        for (metric, &(name, kind)) in KVBM_METRICS.iter().zip(&EXPECTED) {
            let sample = series[&(name.to_string(), pool.to_string())];
            let value = value_of(sample, kind);
            assert_eq!(value, metric.value(&snapshot), "{name}{{pool={pool:?}}}");
            if kind == MetricKind::Counter {
                assert!(
                    value >= last[&(name.to_string(), pool.to_string())],
                    "{name}"
                );
            }
        }
    }
    assert!(scrapes >= 2);
}

/// Builds the example (a no-op when `scripts/test.sh` already has) with the
/// cargo running this test, in the same profile; its path.
fn example_binary() -> std::path::PathBuf {
    let test_exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = test_exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build.args([
        "build",
        "--quiet",
        "--locked",
        "-p",
        "kvblocks",
        "--features",
        "prometheus",
    ]);
    build.args(["--example", "metrics_server"]);
    if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        build.arg("--release");
    }
    let target_dir = profile_dir.parent().expect("target/");
    let status = build
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "building the metrics_server example failed"
    );
    profile_dir
        .join("examples")
        .join(format!("metrics_server{}", std::env::consts::EXE_SUFFIX))
}

/// Kills the example when the test ends, passing or not.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_example_binary_on_port_0_prints_its_address_and_serves_three_tiers() {
    use std::io::BufRead;
    let child = std::process::Command::new(example_binary())
        .args(["--port", "0", "--rate", "200", "--g1-blocks", "32"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the example");
    let mut child = Child(child);
    let stdout = child.0.stdout.take().expect("piped stdout");
    let mut first = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut first)
        .expect("the first line");
    // The line is printed once the listener is bound and served.
    let addr = first
        .trim()
        .strip_prefix("serving http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    let addr: std::net::SocketAddr = addr.parse().expect("an address");
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");

    let mut response = agent()
        .get(&format!("http://{addr}/metrics"))
        .call()
        .expect("a scrape");
    assert_eq!(response.status().as_u16(), 200);
    let body = response.body_mut().read_to_string().expect("a UTF-8 body");
    let scraped = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("parsable");
    let mut pools = std::collections::BTreeSet::new();
    let mut kvbm = 0;
    for sample in scraped
        .samples
        .iter()
        .filter(|s| s.metric.starts_with("kvbm_"))
    {
        pools.insert(sample.labels.get("pool").expect("a pool label").to_string());
        kvbm += 1;
    }
    assert_eq!(pools.into_iter().collect::<Vec<_>>(), POOLS);
    assert_eq!(kvbm, EXPECTED.len() * POOLS.len());
    let reset_g2 = scraped
        .samples
        .iter()
        .find(|s| s.metric == "kvbm_reset_pool_size" && s.labels.get("pool") == Some("G2"));
    let free = reset_g2
        .map(|s| value_of(s, MetricKind::Gauge))
        .expect("G2's free slots");
    assert!(
        free <= 4 * 32,
        "G2 is four times G1 (32 blocks): {free} free"
    );
}
