//! `docs/performance.md` from the raw figures, with its JSON and SVG files.

use super::svg;
use anyhow::Result;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;

/// Headings every report has (checked after writing).
pub const SECTIONS: &[&str] = &[
    "## Method",
    "## Machine",
    "## Targets",
    "## Ingest",
    "## Fleet",
    "## Propagation latency",
    "## Memory",
    "## Scaling",
    "## Shards",
];

/// Files written next to the report.
pub const ASSETS: &[&str] = &[
    "bench.json",
    "ingest.svg",
    "latency.svg",
    "fleet.svg",
    "scaling.svg",
];

fn n(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M/s", v / 1e6)
    } else {
        format!("{:.0} k/s", v / 1e3)
    }
}

fn count(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else {
        format!("{}k", v / 1e3)
    }
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// Writes the report, `bench.json` and the charts.
pub fn write(r: &Value, doc: &Path, assets: &Path, analysis: Option<&str>) -> Result<()> {
    std::fs::write(
        assets.join("bench.json"),
        serde_json::to_string_pretty(r)? + "\n",
    )?;
    let rel = assets
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "performance".to_owned());
    let mut md = String::new();
    let m = &r["machine"];
    let quick = r["quick"].as_bool() == Some(true);
    let _ = writeln!(md, "# Performance\n");
    let _ = writeln!(
        md,
        "Produced by `{}` at commit `{}` on {} ({:.0} s). Raw figures: [`{rel}/bench.json`]({rel}/bench.json).{}\n",
        r["command"].as_str().unwrap_or("cargo xtask bench"),
        m["commit"].as_str().unwrap_or("?"),
        m["date"].as_str().unwrap_or("?"),
        n(&r["duration_s"]),
        if quick {
            " **Quick run: reduced sizes, for CI; the figures are not the project's.**"
        } else {
            ""
        }
    );
    md.push_str(METHOD);
    let _ = writeln!(md, "## Machine\n");
    let _ = writeln!(
        md,
        "- CPU: {} ({} cores seen), memory {:.0} GiB\n- {}; {}; {}\n- Load average at start: {}\n\nThe machine is shared with other builds and tests: compare figures of one run (ratios), not across runs.\n",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        n(&m["memory_bytes"]) / (1u64 << 30) as f64,
        m["kernel"].as_str().unwrap_or("?"),
        m["haproxy"].as_str().unwrap_or("?"),
        m["rustc"].as_str().unwrap_or("?"),
        m["loadavg"].as_str().unwrap_or("?"),
    );
    targets(&mut md, r);
    ingest(&mut md, r, assets, &rel)?;
    fleet(&mut md, r, assets, &rel)?;
    latency(&mut md, r, assets, &rel)?;
    memory(&mut md, r);
    scaling(&mut md, r, assets, &rel)?;
    shards(&mut md, r);
    if let Some(a) = analysis {
        md.push('\n');
        md.push_str(a.trim_end());
        md.push('\n');
    }
    std::fs::write(doc, md)?;
    Ok(())
}

const METHOD: &str = "## Method

- **Processes.** The release daemon (`stktagg`, one section, `from .uncombined to .aggr`)
  and Debian's `haproxy` 2.6 (`nbthread 1`, a peers section with the same table
  `type ip|string len 32 size 12m expire 60s store gpc0,http_req_cnt,http_req_rate(10s)`)
  run on 127.0.0.1. Each measured run gets a fresh process, so no run inherits a table.
- **Load.** `stktagg-loadgen` (crate `stktagg-loadgen`) plays HAProxy-like sources over
  the peers protocol, each a session of the workspace's engine (`stktagg-session`):
  hello, heartbeats, an empty lesson and FINISHED for the target's RESYNC REQUEST
  (answered before the stream starts), acks of the sums it receives (counted, not
  decoded, unless latency is measured), HAProxy's 5 s idle rule; then the table
  definition and a stream encoded before the clock starts and handed to the engine
  as pre-encoded runs: N updates over K keys in a scattered order, update ids in
  sequence (full form first, then incremental, as HAProxy pushes), values `gpc0`,
  `http_req_cnt` (unique per update) and `http_req_rate(10s)`.
- **Ingest** is updates/s from the first byte sent until the target's ack (`0a 84`)
  of the last update; median of the runs; the same streams go to both targets,
  alternating. The daemon also sends each new sum back to the source (that is its
  job), HAProxy only stores. The **generator limit** is the same stream written, through
  the same engine, into a loopback socket whose reader discards it.
- **Deadlines.** Every run has one (30 s + 1 s per 100k updates). A run that misses
  it counts what was acknowledged by then, over the time to its last ack: a lower
  bound, flagged `complete: false` in the tables.
- **Fleet**: S sources share the key space and send at a fixed total rate, each
  receiving every changed sum; the daemon is pinned to core 0 and the generator to
  core 1 (`taskset`), since the generator's threads would otherwise take the
  daemon's CPU by their number alone. The daemon's CPU time comes from
  `/proc/<pid>/stat` (user + system) around the run. A session dropped is one that
  ended before the run did, on either side. Source 1 probes the propagation on a
  table of its own (`/probe.uncombined`, same rule), which only the last source
  decodes: the p99 is from a write at source 1 to the new sum at source S, under
  the load of all the others.
- **Propagation latency**: one source sends at a fixed rate over 100k or 1M keys, two
  others only listen; for each update, the time from its write to the arrival, at
  the *last* of the two listeners, of a sum carrying its `http_req_cnt` (its keys are written by that
  source only, so the sum identifies the update). Updates coalesced into a later sum
  are not samples; the coverage column says how many were. This includes both
  loopback hops and the generator's threads, so it bounds the daemon's own
  receive→send time from above.
- **Memory**: resident set (`VmRSS`) of the daemon idle, then after K keys from 1
  source, and (fresh daemon) after the same K keys from S sources, all acknowledged
  and sessions closed. Per contribution = (RSS growth with S − with 1) / ((S−1)·K);
  per output key = growth with 1 / K − one contribution. Keys are IPv4 (4 bytes).
- **Scaling**: one source fills K keys (K updates), then sends max(K, scaling floor)
  more over the same keys; the figure is the time per update of that second part,
  from the ack of update K to the ack of the last.
- **Shards**: an aggregator pinned to one core (`taskset -c 0`, the generator on
  the other) sums the whole stream of S sources over K keys, then a fresh one a
  shard's part of it (half the keys, half the updates, as 2 shards split them);
  its capacity is updates summed per CPU second of its own, and 2 shards on 2
  cores have twice a shard's (`docs/scaling.md`).

";

fn targets(md: &mut String, r: &Value) {
    let _ = writeln!(md, "## Targets\n");
    let _ = writeln!(md, "| target | measured | met |\n| --- | --- | --- |");
    let min_ratio = arr(&r["ingest"])
        .iter()
        .map(|x| n(&x["ratio"]))
        .fold(f64::INFINITY, f64::min);
    let ok = |b: bool| if b { "yes" } else { "**no**" };
    if min_ratio.is_finite() {
        let _ = writeln!(
            md,
            "| ingest ≥ 3× HAProxy 2.6 (every stream) | {min_ratio:.2}× at worst | {} |",
            ok(min_ratio >= 3.0)
        );
    }
    for (keys, limit_ms) in [(100_000.0, 1.0), (1_000_000.0, 5.0)] {
        let at100k = arr(&r["latency"]).iter().find(|x| {
            (n(&x["rate"]) - 100_000.0).abs() < 1.0 && (n(&x["keys"]) - keys).abs() < 1.0
        });
        if let Some(l) = at100k {
            let p99 = n(&l["latency"]["p99_us"]) / 1000.0;
            let _ = writeln!(
                md,
                "| p99 propagation < {limit_ms} ms at 100k updates/s over {} keys | {p99:.3} ms | {} |",
                count(keys),
                ok(p99 < limit_ms && !l["latency"].is_null())
            );
        }
    }
    let fleet = |sources: f64, rate: f64| {
        arr(&r["fleet"]).iter().find(|x| {
            (n(&x["sources"]) - sources).abs() < 0.5 && (n(&x["total_rate"]) - rate).abs() < 1.0
        })
    };
    if let Some(f) = fleet(100.0, 100_000.0) {
        let (cpu, p99) = (n(&f["cpu_s_per_million"]), n(&f["p99_ms"]));
        let (done, dropped) = (
            f["complete"].as_bool() == Some(true),
            n(&f["sessions_dropped"]),
        );
        let _ = writeln!(
            md,
            "| 100 sources at 100k/s: complete, 0 sessions dropped, ≤ 10 CPU s per million in, p99 to the last source < 50 ms (Fleet, daemon on one core) | {}, {dropped} dropped, {cpu:.2} CPU s, {p99:.0} ms | complete, dropped: {}; CPU: {}; p99: {} |",
            if done { "complete" } else { "incomplete" },
            ok(done && dropped == 0.0),
            ok(cpu <= 10.0),
            ok(p99 < 50.0)
        );
    }
    if let Some(f) = fleet(50.0, 500_000.0) {
        let (done, dropped) = (
            f["complete"].as_bool() == Some(true),
            n(&f["sessions_dropped"]),
        );
        let _ = writeln!(
            md,
            "| 50 sources at 500k/s: complete, 0 sessions dropped (Fleet) | {}, {dropped} dropped | {} |",
            if done { "complete" } else { "incomplete" },
            ok(done && dropped == 0.0)
        );
    }
    let per_key = n(&r["memory"]["bytes_per_output_key"]);
    let _ = writeln!(
        md,
        "| ≤ 150 bytes per output key, whole daemon | {per_key:.1} bytes | {} |",
        ok(per_key <= 150.0)
    );
    let store_per = n(&r["store"]["memory"]["bytes_per_contribution"]);
    let per = n(&r["memory"]["bytes_per_contribution"]);
    let _ = writeln!(
        md,
        "| ≤ 48 bytes per key × source contribution (beyond key bytes), store | {store_per:.1} bytes | {} |",
        ok(store_per <= 48.0)
    );
    let _ = writeln!(
        md,
        "| the same, whole daemon (RSS, per-destination queues included) | {per:.1} bytes | {} |",
        ok(per <= 48.0)
    );
    let ratio = |sc: &[Value]| match (sc.first(), sc.last()) {
        (Some(a), Some(b)) => Some((
            n(&b["ns_per_update"]) / n(&a["ns_per_update"]).max(1e-9),
            count(n(&b["keys"])),
            count(n(&a["keys"])),
        )),
        _ => None,
    };
    if let Some((x, big, small)) = ratio(arr(&r["store"]["scaling"])) {
        let _ = writeln!(
            md,
            "| per-update cost at the largest table ≤ 1.5× at the smallest, store | {x:.2}× ({big} vs {small} keys) | {} |",
            ok(x <= 1.5)
        );
    }
    let e2e: Vec<Value> = arr(&r["scaling"])
        .iter()
        .map(|x| serde_json::json!({"keys": x["keys"], "ns_per_update": e2e_ns(x)}))
        .collect();
    if let Some((x, big, small)) = ratio(&e2e) {
        let _ = writeln!(
            md,
            "| ≤ 2× end to end, whole daemon | {x:.2}× ({big} vs {small} keys) | {} |",
            ok(x <= 2.0)
        );
    }
    md.push('\n');
}

fn ingest(md: &mut String, r: &Value, assets: &Path, rel: &str) -> Result<()> {
    let _ = writeln!(md, "## Ingest\n");
    let _ = writeln!(
        md,
        "| stream | stktagg | HAProxy 2.6 | ours / HAProxy | generator alone | daemon CPU s per run | complete |\n| --- | --- | --- | --- | --- | --- | --- |"
    );
    let gens = arr(&r["generator"]);
    let mut cats = Vec::new();
    let (mut ours, mut hap) = (Vec::new(), Vec::new());
    for (i, x) in arr(&r["ingest"]).iter().enumerate() {
        let name = format!(
            "{} over {} {}",
            count(n(&x["updates"])),
            count(n(&x["keys"])),
            x["key_kind"].as_str().unwrap_or("")
        );
        let cpu: Vec<String> = arr(&x["ours_cpu_s_per_run"])
            .iter()
            .map(|c| format!("{:.2}", n(c)))
            .collect();
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {:.2}× | {} | {} | {} |",
            rate(n(&x["ours_updates_per_s"])),
            rate(n(&x["haproxy_updates_per_s"])),
            n(&x["ratio"]),
            gens.get(i)
                .map_or("-".to_owned(), |g| rate(n(&g["updates_per_s"]))),
            cpu.join(", "),
            x["complete"]
        );
        // Short labels: the chart has little room under each group.
        cats.push(format!(
            "{}/{} {}",
            count(n(&x["updates"])),
            count(n(&x["keys"])),
            if x["key_kind"] == "string" {
                "str"
            } else {
                "ip"
            }
        ));
        ours.push(n(&x["ours_updates_per_s"]));
        hap.push(n(&x["haproxy_updates_per_s"]));
    }
    let _ = writeln!(md, "\n![ingest]({rel}/ingest.svg)\n");
    std::fs::write(
        assets.join("ingest.svg"),
        svg::bars(
            "Ingest, updates/s (median)",
            "updates/s",
            &cats,
            &[("stktagg", ours), ("HAProxy 2.6", hap)],
        ),
    )?;
    Ok(())
}

fn fleet(md: &mut String, r: &Value, assets: &Path, rel: &str) -> Result<()> {
    let _ = writeln!(md, "## Fleet\n");
    let _ = writeln!(
        md,
        "Every source is one session that sends its share of the total rate and receives every changed sum; the daemon runs on core 0, the generator on core 1. Source 1 also probes the propagation on a table of its own, watched by the last source: p99 is from its write to the new sum at the last source, under the load of all the others.\n"
    );
    let _ = writeln!(
        md,
        "| sources | offered | achieved | daemon CPU s | CPU s per million updates in | aggregated updates sent/s | sessions dropped | p99 propagation to the last source | complete |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let (mut cats, mut cpu) = (Vec::new(), Vec::new());
    for x in arr(&r["fleet"]) {
        let p99 = x["p99_ms"]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.3} ms"));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2} | {:.2} | {} | {} | {} | {} |",
            x["sources"],
            rate(n(&x["total_rate"])),
            rate(n(&x["achieved_rate"])),
            n(&x["daemon_cpu_s"]),
            n(&x["cpu_s_per_million"]),
            rate(n(&x["aggregated_per_s"])),
            x["sessions_dropped"],
            p99,
            x["complete"]
        );
        cats.push(format!("{} x {}", x["sources"], rate(n(&x["total_rate"]))));
        cpu.push(n(&x["cpu_s_per_million"]));
    }
    let _ = writeln!(
        md,
        "\nEach source receives every changed sum, coalesced per key while it is behind, so aggregated updates sent grow with the sources while the work per update in stays flat.\n\n![fleet]({rel}/fleet.svg)\n"
    );
    std::fs::write(
        assets.join("fleet.svg"),
        svg::bars(
            "Fleet: daemon CPU seconds per million updates in",
            "CPU s / M updates",
            &cats,
            &[("stktagg", cpu)],
        ),
    )?;
    Ok(())
}

fn latency(md: &mut String, r: &Value, assets: &Path, rel: &str) -> Result<()> {
    let _ = writeln!(md, "## Propagation latency\n");
    let _ = writeln!(
        md,
        "| rate | keys | achieved | p50 | p99 | p99.9 | max | samples | coverage |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let (mut cats, mut p50, mut p99, mut p999) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for x in arr(&r["latency"]) {
        let l = &x["latency"];
        let ms = |k: &str| n(&l[k]) / 1000.0;
        let _ = writeln!(
            md,
            "| {}/s | {} | {} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {} | {:.1}% |",
            count(n(&x["rate"])),
            count(n(&x["keys"])),
            rate(n(&x["achieved_rate"])),
            ms("p50_us"),
            ms("p99_us"),
            ms("p999_us"),
            ms("max_us"),
            l["samples"],
            n(&x["coverage"]) * 100.0
        );
        cats.push(format!(
            "{}/s, {} keys",
            count(n(&x["rate"])),
            count(n(&x["keys"]))
        ));
        p50.push(ms("p50_us"));
        p99.push(ms("p99_us"));
        p999.push(ms("p999_us"));
    }
    let _ = writeln!(md, "\n![latency]({rel}/latency.svg)\n");
    std::fs::write(
        assets.join("latency.svg"),
        svg::bars(
            "Propagation latency, source to every other source",
            "ms",
            &cats,
            &[("p50", p50), ("p99", p99), ("p99.9", p999)],
        ),
    )?;
    Ok(())
}

fn memory(md: &mut String, r: &Value) {
    let sm = &r["store"]["memory"];
    let _ = writeln!(md, "## Memory\n");
    let _ = writeln!(
        md,
        "**Store alone** (`cargo bench -p stktagg-store --bench memory`, {} keys × {} sources, RSS of a process holding only the store): **{:.1} bytes per key × source contribution**, **{:.1} bytes per output key** (key bytes: {}).\n",
        count(n(&sm["keys"])),
        sm["sources"],
        n(&sm["bytes_per_contribution"]),
        n(&sm["bytes_per_output_key"]),
        sm["key_bytes"],
    );
    let m = &r["memory"];
    let mib = |k: &str| n(&m[k]) / (1u64 << 20) as f64;
    let _ = writeln!(
        md,
        "**Whole daemon** (RSS after the sources sent everything and closed; it keeps what the per-destination queues once held, since the allocator does not return it):\n"
    );
    let _ = writeln!(
        md,
        "| | 1 source | {} sources |\n| --- | --- | --- |\n| RSS idle | {:.1} MiB | {:.1} MiB |\n| RSS with {} keys | {:.1} MiB | {:.1} MiB |\n\n\
         - **per key × source contribution: {:.1} bytes** (key bytes: {})\n- **per output key: {:.1} bytes** (entry, key, map slot, bookkeeping)\n- complete: {}\n",
        m["sources"],
        mib("rss_idle_1"),
        mib("rss_idle_n"),
        count(n(&m["keys"])),
        mib("rss_loaded_1"),
        mib("rss_loaded_n"),
        n(&m["bytes_per_contribution"]),
        m["key_bytes"],
        n(&m["bytes_per_output_key"]),
        m["complete"],
    );
}

/// The daemon's time per update in a scaling run, over the whole run.
fn e2e_ns(x: &Value) -> f64 {
    let rate = n(&x["fill_and_measure_updates_per_s"]);
    if rate > 0.0 { 1e9 / rate } else { 0.0 }
}

fn scaling(md: &mut String, r: &Value, assets: &Path, rel: &str) -> Result<()> {
    let _ = writeln!(md, "## Scaling\n");
    let mut store_pts = Vec::new();
    let _ = writeln!(
        md,
        "**Store alone** (criterion, `cargo bench -p stktagg-store --bench apply -- scaling`: one source, keys visited in a scattered order):\n\n| keys | ns per update |\n| --- | --- |"
    );
    for x in arr(&r["store"]["scaling"]) {
        let _ = writeln!(
            md,
            "| {} | {:.0} |",
            count(n(&x["keys"])),
            n(&x["ns_per_update"])
        );
        store_pts.push((n(&x["keys"]), n(&x["ns_per_update"])));
    }
    let _ = writeln!(
        md,
        "\n**Whole daemon** (end to end: decode, store, acks, and the sums sent back to the source). The time per update is over the whole run, fill included: the daemon acknowledges a continuous stream in one burst at its end (see the analysis), which leaves nothing to time between the acks of the tail.\n"
    );
    let _ = writeln!(
        md,
        "| keys | updates | ns per update | daemon RSS | complete |\n| --- | --- | --- | --- | --- |"
    );
    let mut pts = Vec::new();
    for x in arr(&r["scaling"]) {
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.0} MiB | {} |",
            count(n(&x["keys"])),
            count(n(&x["updates"])),
            e2e_ns(x),
            n(&x["rss_bytes"]) / (1u64 << 20) as f64,
            x["complete"]
        );
        pts.push((n(&x["keys"]), e2e_ns(x)));
    }
    let _ = writeln!(md, "\n![scaling]({rel}/scaling.svg)\n");
    std::fs::write(
        assets.join("scaling.svg"),
        svg::lines_logx(
            "Time per update against table size",
            "keys in the table",
            "ns per update",
            &[("daemon, end to end", pts), ("store alone", store_pts)],
        ),
    )?;
    Ok(())
}

/// 1 shard vs 2 (`Bench::shards`); a report rewritten from figures measured
/// before the section existed says so.
fn shards(md: &mut String, r: &Value) {
    let _ = writeln!(md, "## Shards\n");
    let rows = arr(&r["shards"]);
    if rows.is_empty() {
        let _ = writeln!(md, "Not measured in this run.\n");
        return;
    }
    let _ = writeln!(
        md,
        "| shards | keys per aggregator | updates per aggregator | aggregator CPU s | updates/s per core | fleet capacity | RSS per aggregator | complete |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for x in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2} | {} | {} | {:.0} MiB | {} |",
            x["shards"],
            count(n(&x["keys"])),
            count(n(&x["updates"])),
            n(&x["cpu_s"]),
            rate(n(&x["updates_per_cpu_s"])),
            rate(n(&x["fleet_updates_per_s"])),
            n(&x["rss_bytes"]) / f64::from(1u32 << 20),
            x["complete"]
        );
    }
    if let [one, two, ..] = rows {
        let base = n(&one["fleet_updates_per_s"]);
        if base > 0.0 {
            let _ = writeln!(
                md,
                "\n2 shards vs 1: **{:.2}×** the fleet capacity, each aggregator on one core.\n",
                n(&two["fleet_updates_per_s"]) / base
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_shards_section_gives_the_ratio_or_says_it_was_not_measured() {
        let r = json!({"shards": [
            {"shards": 1, "keys": 1_000_000, "updates": 2_000_000.0, "cpu_s": 5.0,
             "updates_per_cpu_s": 400_000.0, "fleet_updates_per_s": 400_000.0,
             "rss_bytes": 550.0 * 1048576.0, "complete": true},
            {"shards": 2, "keys": 500_000, "updates": 1_000_000.0, "cpu_s": 2.0,
             "updates_per_cpu_s": 500_000.0, "fleet_updates_per_s": 1_000_000.0,
             "rss_bytes": 280.0 * 1048576.0, "complete": true},
        ]});
        let mut md = String::new();
        shards(&mut md, &r);
        assert!(md.starts_with("## Shards\n"), "{md}");
        assert!(md.contains("| 2 | 500k |"), "{md}");
        assert!(md.contains("| 280 MiB | true |"), "{md}");
        assert!(md.contains("**2.50×**"), "{md}");
        let mut md = String::new();
        shards(&mut md, &json!({}));
        assert!(md.contains("Not measured"), "{md}");
    }
}
