//! What the shipped Rust chain costs a session with instances made ahead of it: the critical
//! path (take a prepared instance of each policy, run every hook a message passes through,
//! hand the instances to the reaper) per message, against a fresh instance made while the
//! session waits; and the total CPU per message, background instantiation and teardown
//! included. Run with `cargo bench -p sluice --bench critical_path` (`-- --quick`: fewer
//! messages, to check that it runs; `-- --stores`: a store per policy against one store for
//! the chain; `-- --only prepared|fresh|warm|total-prepared|total-fresh`: one mode in a loop
//! and nothing printed, for `perf record`).

mod common;

use common::load;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::policy::{Chain, ChainSettings, EngineOptions, ParsedMessage, PolicyEngine};
use sluice_test_artifacts::{DNSBL, GREYLIST, RATE_LIMIT, SENDER_GUARD, SPAM_HEURISTICS};

const MESSAGE: &str = "From: Alice <alice@example.org>\r\nTo: Bob <bob@example.com>\r\nSubject: Quarterly \
report\r\nDate: Thu, 1 Jan 2026 09:00:00 +0000\r\nMessage-ID: <20260101090000.1234@example.org>\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHi Bob,\r\n\r\nthe quarterly report is \
ready; see https://intranet.example.org/reports/q4 for details.\r\n\r\nAlice\r\n";

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// CPU time of this process (all threads), from /proc/self/stat.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 =
        fields.get(11..13).map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// The shipped Rust chain; `reuse` above 1: warm instances serving that many sessions each.
fn chain_of(rt: &tokio::runtime::Runtime, engine: &PolicyEngine, reuse: u32) -> Arc<Chain> {
    let services = common::services();
    let policies = vec![
        common::load(rt, engine, &services, DNSBL, &[("zones", "bl.test")], reuse),
        common::load(rt, engine, &services, SENDER_GUARD, &[("domains", "example.com")], reuse),
        load(
            rt,
            engine,
            &services,
            RATE_LIMIT,
            &[("messages", "1000000000"), ("recipients", "1000000000")],
            reuse,
        ),
        common::load(rt, engine, &services, GREYLIST, &[("exempt_networks", "198.51.100.0/24")], reuse),
        common::load(rt, engine, &services, SPAM_HEURISTICS, &[], reuse),
    ];
    Arc::new(Chain::new("bench", policies, ChainSettings::default()))
}

/// Wait (untimed) until every policy of `chain` has `n` instances ready.
fn wait_prepared(chain: &Chain, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while chain.policies.iter().any(|p| p.prepared_instances() < n) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let _ = tracing_subscriber::fmt().with_env_filter("sluice=warn").try_init();
    let (rounds, batch, messages) = if quick { (20, 8, 500) } else { (400, 8, 20_000) };
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let message = Arc::new(ParsedMessage::parse(MESSAGE.as_bytes().to_vec()));
    let prepared_engine = PolicyEngine::new(EngineOptions {
        max_instances: 512,
        prepared_instances: 128,
        ..EngineOptions::default()
    })
    .expect("engine");
    let fresh_engine =
        PolicyEngine::new(EngineOptions { max_instances: 512, ..EngineOptions::default() }).expect("engine");
    let prepared = chain_of(&rt, &prepared_engine, 1);
    let fresh = chain_of(&rt, &fresh_engine, 1);
    let warm = chain_of(&rt, &fresh_engine, 1_000_000);
    let policies = prepared.policies.len() as f64;

    if std::env::args().any(|a| a == "--stores") {
        stores(&rt, &fresh, rounds);
        return;
    }

    // Warm-up: every policy's demand seen, its pool sized, code paged in.
    for _ in 0..200 {
        for chain in [&prepared, &fresh] {
            let judgement = rt.block_on(common::one_message(chain, &message));
            assert_eq!(judgement.reply.code, 250, "the chain must accept the message: {judgement:?}");
        }
    }

    if let Some(only) = std::env::args().skip_while(|a| a != "--only").nth(1) {
        loop_for_a_profiler(&rt, &only, [&prepared, &fresh, &warm], &message, batch);
        return;
    }
    // Critical path: batches of messages whose instances are all ready when they start; the
    // session's own thread's CPU time (the background refill runs on the runtime's workers).
    let (mut with_pool, mut without, mut wall_pool, mut wall_fresh) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut reused, mut wall_reused) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        wait_prepared(&prepared, batch);
        for (chain, cpu, wall) in [
            (&prepared, &mut with_pool, &mut wall_pool),
            (&fresh, &mut without, &mut wall_fresh),
            (&warm, &mut reused, &mut wall_reused),
        ] {
            let (started, on_cpu) = (Instant::now(), thread_cpu());
            for _ in 0..batch {
                rt.block_on(common::one_message(chain, &message));
            }
            cpu.push((thread_cpu() - on_cpu).as_secs_f64() * 1e6 / batch as f64);
            wall.push(started.elapsed().as_secs_f64() * 1e6 / batch as f64);
        }
    }
    let (p, f) = (median(with_pool), median(without));
    println!(
        "shipped Rust chain, {policies} policies, critical path per message (the session thread's CPU time; median of {rounds} batches of {batch}):"
    );
    println!(
        "  prepared instances: {p:7.1} us ({:.1} us per policy); wall {:.1} us",
        p / policies,
        median(wall_pool)
    );
    println!(
        "  made while waiting: {f:7.1} us ({:.1} us per policy); wall {:.1} us",
        f / policies,
        median(wall_fresh)
    );
    let r = median(reused);
    println!(
        "  the floor, one warm instance reused by every session (not the default: state carries over): {r:7.1} us ({:.1} us per policy); wall {:.1} us",
        r / policies,
        median(wall_reused)
    );

    // Total CPU per message, everything included (background instantiation, the reaper).
    for (name, chain) in [("prepared instances", &prepared), ("made while waiting", &fresh)] {
        std::thread::sleep(Duration::from_millis(100));
        let (cpu, wall) = (process_cpu(), Instant::now());
        for _ in 0..messages {
            let judgement = rt.block_on(common::one_message(chain, &message));
            assert_eq!(judgement.reply.code, 250, "the chain must accept the message: {judgement:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
        let used = process_cpu().saturating_sub(cpu);
        let per = used.as_secs_f64() * 1e6 / messages as f64;
        println!(
            "total CPU per message, {name}: {per:6.1} us ({:.1} us per policy); wall {:.1} us",
            per / policies,
            wall.elapsed().as_secs_f64() * 1e6 / messages as f64
        );
    }
}

/// A store per policy against one store for the chain: the CPU time of instantiating the
/// chain's policies and dropping them, alternating, medians of `rounds` batches of 50.
fn stores(rt: &tokio::runtime::Runtime, chain: &Chain, rounds: usize) {
    use sluice::policy::store_cost::{instances_apart, instances_together};
    let policies = &chain.policies;
    let (mut apart, mut together) = (Vec::new(), Vec::new());
    for round in 0..rounds + 20 {
        for (together_now, samples) in [(false, &mut apart), (true, &mut together)] {
            let on_cpu = thread_cpu();
            for _ in 0..50 {
                let made = match together_now {
                    true => rt.block_on(instances_together(policies)),
                    false => rt.block_on(instances_apart(policies)),
                };
                made.expect("instantiate");
            }
            if round >= 20 {
                samples.push((thread_cpu() - on_cpu).as_secs_f64() * 1e6 / 50.0);
            }
        }
    }
    let n = policies.len() as f64;
    let (a, t) = (median(apart), median(together));
    println!(
        "instantiate and drop the chain's {n} policies (CPU per chain; median of {rounds} batches of 50):"
    );
    println!("  a store per policy: {a:7.1} us ({:.1} us per policy)", a / n);
    println!("  one store:          {t:7.1} us ({:.1} us per policy)", t / n);
}

/// One mode in a loop for a profiler: `prepared`, `fresh` or `warm` as the critical path
/// measures them (32,000 sessions, in batches that start with instances ready), or
/// `total-prepared` and `total-fresh` as the total CPU does (30,000 sessions in a row).
fn loop_for_a_profiler(
    rt: &tokio::runtime::Runtime,
    only: &str,
    [prepared, fresh, warm]: [&Arc<Chain>; 3],
    message: &Arc<ParsedMessage>,
    batch: usize,
) {
    let chain = match only.trim_start_matches("total-") {
        "prepared" => prepared,
        "fresh" => fresh,
        "warm" => warm,
        other => panic!("--only {other}: prepared, fresh, warm, total-prepared or total-fresh"),
    };
    if only.starts_with("total-") {
        for _ in 0..30_000 {
            rt.block_on(common::one_message(chain, message));
        }
        return;
    }
    for _ in 0..4000 {
        if only == "prepared" {
            wait_prepared(prepared, batch);
        }
        for _ in 0..batch {
            rt.block_on(common::one_message(chain, message));
        }
    }
}
