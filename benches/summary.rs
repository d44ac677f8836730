//! Reads the figures the other benches left (criterion's `estimates.json` files and the stampede
//! table) and prints them as markdown tables, with the ratios DESIGN section 6 asks for and
//! whether each bar holds. Runs nothing itself: `benches/run.sh` runs it last.
//!
//! Run: `cargo bench --bench summary` (after the others).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Where criterion writes: `$CRITERION_HOME`, else `<target>/criterion` (this binary lives in
/// `<target>/release/deps/`).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let exe = std::env::current_exe().expect("this binary's path");
    exe.ancestors()
        .nth(3)
        .expect("the target directory")
        .join("criterion")
}

/// One measured function: its group, its name and its time per iteration (ns).
#[derive(Debug, Clone)]
struct Figure {
    group: String,
    function: String,
    ns: f64,
    low: f64,
    high: f64,
}

/// Whether `file` is older than the run `run.sh` started (`BENCH_SINCE`, Unix seconds). Without
/// `BENCH_SINCE` (the summary run by hand), every figure counts.
fn written_before_this_run(file: &Path) -> bool {
    let Some(since) = std::env::var("BENCH_SINCE")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return false;
    };
    let since = std::time::UNIX_EPOCH + std::time::Duration::from_secs(since);
    fs::metadata(file)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t < since)
}

fn read_figures(dir: &Path, out: &mut Vec<Figure>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if !path.is_dir() {
            continue;
        }
        let new = path.join("new");
        if written_before_this_run(&new.join("estimates.json")) {
            // A group an earlier run left (perhaps renamed or removed since): not this run's.
            continue;
        }
        if let (Ok(bench), Ok(est)) = (
            fs::read_to_string(new.join("benchmark.json")),
            fs::read_to_string(new.join("estimates.json")),
        ) {
            let bench: serde_json::Value = serde_json::from_str(&bench).unwrap_or_default();
            let est: serde_json::Value = serde_json::from_str(&est).unwrap_or_default();
            // Criterion's headline figure: the slope when it has one, else the mean.
            let pick = if est["slope"].is_object() {
                &est["slope"]
            } else {
                &est["mean"]
            };
            let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
            out.push(Figure {
                group: bench["group_id"].as_str().unwrap_or("?").to_owned(),
                function: bench["function_id"]
                    .as_str()
                    .or(bench["title"].as_str())
                    .unwrap_or("?")
                    .to_owned(),
                ns: f(&pick["point_estimate"]),
                low: f(&pick["confidence_interval"]["lower_bound"]),
                high: f(&pick["confidence_interval"]["upper_bound"]),
            });
        } else {
            read_figures(&path, out);
        }
    }
}

fn fmt_ns(ns: f64) -> String {
    if !ns.is_finite() {
        "–".to_owned()
    } else if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

struct Figures(Vec<Figure>);

impl Figures {
    fn get(&self, group: &str, function: &str) -> Option<f64> {
        self.0
            .iter()
            .find(|f| f.group == group && f.function == function)
            .map(|f| f.ns)
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "holds"
    } else {
        "does not hold"
    }
}

fn hit_tables(figs: &Figures) {
    // hit/<peer> groups: a row per peer, one- and two-thread columns.
    let mut peers: BTreeMap<String, (Option<f64>, Option<f64>)> = BTreeMap::new();
    // `hit/async` compares two loops, not peers: it has its own bar.
    let peer_groups = figs
        .0
        .iter()
        .filter(|f| f.group.starts_with("hit/") && f.group != "hit/async");
    for f in peer_groups {
        let peer = f.group["hit/".len()..].to_owned();
        let e = peers.entry(peer).or_default();
        match f.function.as_str() {
            "1 thread" => e.0 = Some(f.ns),
            "2 threads" => e.1 = Some(f.ns),
            _ => {}
        }
    }
    if peers.is_empty() {
        return;
    }
    println!("## Hit path, memory backend (`benches/hit_path.rs`)");
    println!();
    println!("| peer | 1 thread, per call | 2 threads, per call on each | 2-thread scaling (2 x t1 / t2) | calls/s on 2 threads |");
    println!("|---|---|---|---|---|");
    let mut rows: Vec<_> = peers.into_iter().collect();
    rows.sort_by(|a, b| {
        a.1 .0
            .unwrap_or(f64::MAX)
            .total_cmp(&b.1 .0.unwrap_or(f64::MAX))
    });
    for (peer, (one, two)) in &rows {
        let scaling = match (one, two) {
            (Some(a), Some(b)) => format!("{:.2}x", 2.0 * a / b),
            _ => "–".into(),
        };
        let rate = two.map_or("–".into(), |t| format!("{:.1} M", 2.0 * 1e3 / t));
        println!(
            "| {peer} | {} | {} | {scaling} | {rate} |",
            fmt_ns(one.unwrap_or(f64::NAN)),
            fmt_ns(two.unwrap_or(f64::NAN))
        );
    }
    println!();
}

fn group_table(figs: &Figures, title: &str, prefix: &str) {
    let rows: Vec<&Figure> = figs
        .0
        .iter()
        .filter(|f| f.group.starts_with(prefix))
        .collect();
    if rows.is_empty() {
        return;
    }
    println!("## {title}");
    println!();
    println!("| group | function | time per iteration | 95% interval |");
    println!("|---|---|---|---|");
    let mut rows = rows;
    rows.sort_by(|a, b| a.group.cmp(&b.group).then(a.ns.total_cmp(&b.ns)));
    for f in rows {
        println!(
            "| {} | {} | {} | {} – {} |",
            f.group,
            f.function,
            fmt_ns(f.ns),
            fmt_ns(f.low),
            fmt_ns(f.high)
        );
    }
    println!();
}

fn bars(figs: &Figures, dir: &Path) {
    println!("## Bars of DESIGN section 6");
    println!();
    let hit = |peer: &str, threads: &str| figs.get(&format!("hit/{peer}"), threads);
    let deco1 = hit("decorated #[cache_on_arguments]", "1 thread");
    let deco2 = hit("decorated #[cache_on_arguments]", "2 threads");
    let cached1 = hit("cached #[cached]", "1 thread");
    let cached2 = hit("cached #[cached]", "2 threads");
    let moka1 = hit("moka get_with", "1 thread");
    let hand1 = hit("region get_or_create (format! key)", "1 thread");
    let hand_buf1 = hit("region get_or_create (reused key)", "1 thread");
    if let (Some(d), Some(c)) = (deco1, cached1) {
        println!(
            "- Decorated hit within 2x of `#[cached]` (one thread): {} / {} = {:.2}x: {}",
            fmt_ns(d),
            fmt_ns(c),
            d / c,
            verdict(d / c <= 2.0)
        );
    }
    if let (Some(d), Some(f)) = (deco1, hit("floor papaya<String, Arc<dyn Any>>", "1 thread")) {
        println!(
            "- (for scale, no bar) Decorated hit / the bare lock-free string-keyed map: {} / {} = {:.2}x; the map alone is {:.2}x `#[cached]`",
            fmt_ns(d),
            fmt_ns(f),
            d / f,
            cached1.map_or(f64::NAN, |c| f / c)
        );
    }
    if let (Some(d), Some(m)) = (deco1, moka1) {
        println!(
            "- Decorated hit at least 2.5x faster than moka `get_with`: {} / {} = {:.2}x: {}",
            fmt_ns(m),
            fmt_ns(d),
            m / d,
            verdict(m / d >= 2.5)
        );
    }
    if let (Some(d), Some(h)) = (deco1, hand1) {
        println!(
            "- Decorated hit within 1.2x of `get_or_create` by hand (format! key): {} / {} = {:.2}x: {}",
            fmt_ns(d),
            fmt_ns(h),
            d / h,
            verdict(d / h <= 1.2)
        );
    }
    if let (Some(d), Some(h)) = (deco1, hand_buf1) {
        println!(
            "- Decorated hit within 1.2x of `get_or_create` by hand (key in a reused buffer, as the macro builds it): {} / {} = {:.2}x: {}",
            fmt_ns(d),
            fmt_ns(h),
            d / h,
            verdict(d / h <= 1.2)
        );
    }
    let sync_loop = figs.get("hit/async", "decorated fn, 1 thread");
    let async_loop = figs.get("hit/async", "decorated async fn in tokio, 1 thread");
    if let (Some(a), Some(s)) = (async_loop, sync_loop) {
        println!(
            "- Async decorated hit (in a tokio runtime) within 1.15x of the blocking decorated hit, same loop: {} / {} = {:.2}x: {}",
            fmt_ns(a),
            fmt_ns(s),
            a / s,
            verdict(a / s <= 1.15)
        );
    }
    if let (Some(a), Some(b)) = (deco1, deco2) {
        let s = 2.0 * a / b;
        println!(
            "- Two threads at least 1.7x the one-thread throughput: 2 x {} / {} = {s:.2}x: {}",
            fmt_ns(a),
            fmt_ns(b),
            verdict(s >= 1.7)
        );
    }
    if let (Some(d), Some(c)) = (deco2, cached2) {
        println!(
            "- More two-thread throughput than `#[cached]` on two threads: {} vs {} per call on each thread ({:.2}x the throughput): {}",
            fmt_ns(d),
            fmt_ns(c),
            c / d,
            verdict(d < c)
        );
    }
    let sh = |f: &str| figs.get("server/hit", f);
    let raw = sh("redis raw GET (redis::Connection)");
    for what in ["redis region get", "redis decorated fn"] {
        if let (Some(r), Some(g)) = (sh(what), raw) {
            println!(
                "- Redis hit within 1.2x of a raw GET ({what}): {} / {} = {:.2}x: {}",
                fmt_ns(r),
                fmt_ns(g),
                r / g,
                verdict(r / g <= 1.2)
            );
        }
    }
    let raw_tls = sh("redis-tls raw GET (redis::Connection)");
    for what in ["redis-tls region get", "redis-tls decorated fn"] {
        if let (Some(r), Some(g)) = (sh(what), raw_tls) {
            println!(
                "- Redis hit over TLS within 1.2x of a raw GET over TLS ({what}): {} / {} = {:.2}x: {}",
                fmt_ns(r),
                fmt_ns(g),
                r / g,
                verdict(r / g <= 1.2)
            );
        }
    }
    if let (Some(t), Some(p)) = (sh("redis-tls region get"), sh("redis region get")) {
        println!(
            "- (for scale, no bar) a Redis hit over TLS / a plain one: {} / {} = {:.2}x",
            fmt_ns(t),
            fmt_ns(p),
            t / p
        );
    }
    let sm = |f: &str| figs.get("server/get_multi 100", f);
    let ss = |f: &str| figs.get("server/set_multi 100", f);
    let sd = |f: &str| figs.get("server/delete_multi 100", f);
    // memcached beside its raw-socket floor (a buffered socket speaking the text protocol).
    let memcached_bars = [
        (
            "memcached `get` within 1.25x of the raw-socket floor",
            sh("memcached region get"),
            sh("memcached raw-socket get (floor)"),
            1.25,
        ),
        (
            "memcached `get_multi` of 100 within 1.3x of the raw-socket floor",
            sm("memcached region get_multi"),
            sm("memcached raw-socket get_multi (floor)"),
            1.3,
        ),
        (
            "memcached `set_multi` of 100 within 1.5x of the floor's `get_multi` of 100",
            ss("memcached region set_multi"),
            sm("memcached raw-socket get_multi (floor)"),
            1.5,
        ),
        (
            "memcached `delete_multi` of 100 within 1.5x of the floor's `get_multi` of 100",
            sd("memcached region delete_multi"),
            sm("memcached raw-socket get_multi (floor)"),
            1.5,
        ),
        (
            "(proposed, not the issue's bar) memcached `set_multi` of 100 within 1.5x of the floor's own pipelined `set … noreply` of 100, the same server work",
            ss("memcached region set_multi"),
            ss("memcached raw-socket set_multi (floor)"),
            1.5,
        ),
    ];
    for (what, ours, floor, bar) in memcached_bars {
        if let (Some(o), Some(f)) = (ours, floor) {
            println!(
                "- {what}: {} / {} = {:.2}x: {}",
                fmt_ns(o),
                fmt_ns(f),
                o / f,
                verdict(o / f <= bar)
            );
        }
    }
    if let (Some(o), Some(f)) = (
        sm("memcached backend get_multi"),
        sm("memcached raw-socket get_multi (floor)"),
    ) {
        println!(
            "- (for scale, no bar) memcached backend `get_multi` of 100 (no region) / the floor's: {} / {} = {:.2}x",
            fmt_ns(o),
            fmt_ns(f),
            o / f
        );
    }
    if let (Some(o), Some(f)) = (
        ss("memcached raw-socket meta ms q set_multi (floor)"),
        ss("memcached raw-socket set_multi (floor)"),
    ) {
        println!(
            "- (for scale, no bar) the floor's meta-protocol quiet `ms … q` of 100 + `mn` / its `set … noreply` of 100 + `version`: {} / {} = {:.2}x",
            fmt_ns(o),
            fmt_ns(f),
            o / f
        );
    }
    if let (Some(o), Some(f)) = (
        ss("memcached raw-socket set_multi (floor)"),
        sm("memcached raw-socket get_multi (floor)"),
    ) {
        println!(
            "- (for scale, no bar) the floor's pipelined `set … noreply` of 100 / its `get_multi` of 100: {} / {} = {:.2}x",
            fmt_ns(o),
            fmt_ns(f),
            o / f
        );
    }
    if let (Some(o), Some(f)) = (
        sd("memcached region delete_multi"),
        sd("memcached raw-socket delete_multi (floor)"),
    ) {
        println!(
            "- (for scale, no bar) memcached `delete_multi` of 100 / the floor's pipelined `delete … noreply` of 100: {} / {} = {:.2}x",
            fmt_ns(o),
            fmt_ns(f),
            o / f
        );
    }
    // The client's own CPU per call (the servers bench's `ThreadCpu`): what the wall-clock
    // ratios above hide or show as the loopback round trip gets slower or faster.
    for (group, ours, floor) in [
        (
            "client cpu/hit",
            "memcached region get",
            "memcached raw-socket get (floor)",
        ),
        (
            "client cpu/get_multi 100",
            "memcached region get_multi",
            "memcached raw-socket get_multi (floor)",
        ),
        (
            "client cpu/set_multi 100",
            "memcached region set_multi",
            "memcached raw-socket set_multi (floor)",
        ),
    ] {
        if let (Some(o), Some(f)) = (figs.get(group, ours), figs.get(group, floor)) {
            println!(
                "- (for scale, no bar) client CPU per call, `{ours}` / `{floor}`: {} / {} = {:.2}x (the difference, {}, is what the client adds to every call's wall time)",
                fmt_ns(o),
                fmt_ns(f),
                o / f,
                fmt_ns(o - f)
            );
        }
    }
    // The servers bench counted the commands of one get_multi on the server: "MGET GET".
    let counts: Option<(u64, u64)> = fs::read_to_string(dir.join("redis-get-multi.txt"))
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse().ok());
            Some((it.next()??, it.next()??))
        });
    if let (Some(multi), Some(mget), Some(singles), Some(one)) = (
        sm("redis region get_multi"),
        sm("redis raw MGET"),
        sm("redis 100 x region get"),
        sh("redis region get"),
    ) {
        let sent = counts.map_or("no command count found".to_owned(), |(m, g)| {
            format!("the server counted {m} MGET and {g} GET for one call")
        });
        println!(
            "- Redis `get_multi` of 100 keys is one round trip: {sent}; {} (raw MGET of the same keys {}, {:.2}x; one region get {}; 100 region gets {}, {:.0}x the get_multi): {}",
            fmt_ns(multi),
            fmt_ns(mget),
            multi / mget,
            fmt_ns(one),
            fmt_ns(singles),
            singles / multi,
            verdict(counts == Some((1, 0)) && singles / multi >= 10.0)
        );
    }
    println!("- Stampede bars: see the stampede table's own verdicts above.");
    println!();
}

fn main() {
    let dir = criterion_dir();
    let mut all = Vec::new();
    read_figures(&dir, &mut all);
    if all.is_empty() {
        println!(
            "No criterion figures under {}: run the other benches first (benches/run.sh).",
            dir.display()
        );
        return;
    }
    let figs = Figures(all);
    println!("# Summary of the benches (from {})", dir.display());
    println!();
    hit_tables(&figs);
    group_table(
        &figs,
        "Miss path, memory backend (`benches/miss_path.rs`)",
        "miss",
    );
    group_table(
        &figs,
        "Byte backends beside memory and the raw clients (`benches/servers.rs`)",
        "server/",
    );
    match fs::read_to_string(dir.join("stampede.md")) {
        Ok(table) => println!("{table}"),
        Err(_) => println!("(no stampede table: run `cargo bench --bench stampede --features redis,memcached,file`)\n"),
    }
    bars(&figs, &dir);
    println!(
        "Plots: criterion's HTML report, {}",
        dir.join("report/index.html").display()
    );
}
