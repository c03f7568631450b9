#!/usr/bin/env python3
"""make soak: eventline at a fixed rate for a long while with every feature on
(duplicates, invalid records, late events, invalidations, deletions, entity tombstones,
transforms and current state for both domains), with the lake writer made to fail and
restart in the middle. Samples the processor's RSS, CPU and lag every few seconds, so
that growth shows; writes reports/soak-<time>.json and an SVG chart.

The verdict compares the RSS of the last minute with that of the second minute (growth
within 10% passes) and checks that every record sent got an outcome.
"""
import argparse
import json
import signal
import subprocess
import sys
import time

sys.path.insert(0, __import__("os").path.dirname(__file__))
from run_bench import BIN, ROOT, WORK, Slice, forget_previous_runs, log, proc_stats, psql  # noqa: E402

ALL_TYPES = ",".join([
    "account_created", "account_updated", "contact_created", "opportunity_created",
    "opportunity_stage_changed", "order_created", "order_paid", "order_shipped", "order_cancelled",
])


def chart(samples, path, minutes):
    width, height, left, top = 760, 300, 60, 30
    span = max(s["t"] for s in samples) or 1
    top_rss = max(s["rss_mib"] for s in samples) or 1
    def xy(s, value, scale):
        return left + (width - left - 20) * s["t"] / span, top + (height - top - 40) * (1 - value / scale)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<text x="10" y="18" font-size="15">eventline soak, {minutes} min: RSS (MiB, blue) and CPU (% of one core, orange)</text>']
    rss = " ".join("%.1f,%.1f" % xy(s, s["rss_mib"], top_rss * 1.1) for s in samples)
    cpu = " ".join("%.1f,%.1f" % xy(s, s["cpu_pct"], 200) for s in samples)
    out.append(f'<polyline fill="none" stroke="#3b7dd8" stroke-width="2" points="{rss}"/>')
    out.append(f'<polyline fill="none" stroke="#e08a1e" stroke-width="1.5" points="{cpu}"/>')
    out.append(f'<text x="{left}" y="{height - 10}">0 s</text><text x="{width - 70}" y="{height - 10}">{span:.0f} s</text>')
    out.append(f'<text x="5" y="{top + 10}">{top_rss * 1.1:.0f} MiB</text>')
    out.append("</svg>")
    path.write_text("\n".join(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rate", type=int, default=1_000)
    ap.add_argument("--sample-seconds", type=float, default=5)
    a = ap.parse_args()
    forget_previous_runs()
    WORK.mkdir(parents=True, exist_ok=True)
    s = Slice("soak")
    n = int(a.rate * a.minutes * 60)
    # The lake writer errs twice and panics once halfway through the run: it restarts
    # while the traffic goes on. By time, not by batches: at a steady rate batches are
    # small and many (counting 3,000 of them fired within the first seconds).
    half_ms = int(a.minutes * 60 * 1000 / 2)
    env = dict(s.env, EVENTLINE__FAULTS__PARQUET="error,error,panic", EVENTLINE__FAULTS__AFTER_MS=str(half_ms))
    p = subprocess.Popen([BIN, "run"], env=env, stderr=open(WORK / f"{s.topic}.log", "w"))
    s.wait_ready(p)
    producer = subprocess.Popen(
        [BIN, "produce", "--generate", str(n), "--seed", "5", "--rate", str(a.rate), "--linger-ms", "5",
         "--topic", s.topic, "--types", ALL_TYPES, "--duplicate-ratio", "0.02", "--invalid-ratio", "0.01",
         "--late-ratio", "0.05", "--max-lateness", "1h", "--tombstone-ratio", "0.005",
         "--invalidate-ratio", "0.01", "--delete-ratio", "0.005"],
        env=s.env, stdout=subprocess.DEVNULL, stderr=open(WORK / f"{s.topic}-producer.log", "w"))
    log(f"soak: {n:,} records at {a.rate:,}/s for {a.minutes} min; sampling every {a.sample_seconds} s")
    samples, started = [], time.time()
    last_cpu, last_t = proc_stats(p.pid, "VmRSS")[1], started
    try:
        while True:
            time.sleep(a.sample_seconds)
            if p.poll() is not None:
                raise SystemExit(f"processor exited with {p.returncode}; see {WORK}/{s.topic}.log")
            rss, cpu = proc_stats(p.pid, "VmRSS")
            now = time.time()
            pg, lake = s.durable()
            samples.append({"t": round(now - started, 1), "rss_mib": round(rss / 2**20, 1),
                            "cpu_pct": round(100 * (cpu - last_cpu) / (now - last_t), 1),
                            "postgres_durable": pg, "lake_durable": lake})
            last_cpu, last_t = cpu, now
            if producer.poll() is not None and min(pg, lake) >= n:
                break
            if now - started > a.minutes * 60 + 300:
                raise SystemExit("soak: the processor did not catch up within 5 minutes of the end")
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
        producer.kill()
    outcomes = int(psql(s.db, "SELECT coalesce(sum(count), 0) FROM outcome_counts") or 0)
    restarts = sum(1 for line in open(s.env["EVENTLINE__SUPERVISION__LOG_PATH"]) if '"restart"' in line.lower())
    minute = lambda m: [x["rss_mib"] for x in samples if m * 60 <= x["t"] < (m + 1) * 60]
    second = minute(1)
    last_minute = [x["rss_mib"] for x in samples if x["t"] >= samples[-1]["t"] - 60]
    growth = (sum(last_minute) / len(last_minute)) / (sum(second) / len(second)) - 1 if second and last_minute else float("nan")
    result = {"minutes": a.minutes, "rate": a.rate, "records": n, "outcomes": outcomes, "lake_restarts": restarts,
              "rss_growth_last_vs_second_minute": growth, "peak_rss_mib": max(x["rss_mib"] for x in samples),
              "mean_cpu_pct": sum(x["cpu_pct"] for x in samples) / len(samples), "samples": samples}
    reports = ROOT / "reports"
    reports.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (reports / f"soak-{stamp}.json").write_text(json.dumps(result, indent=2))
    chart(samples, reports / f"soak-{stamp}.svg", a.minutes)
    ok = growth <= 0.10 and outcomes == n
    print(f"soak: {n:,} records at {a.rate:,}/s, {outcomes:,} outcomes, lake writer restarts {restarts}")
    print(f"soak: RSS second minute {sum(second) / max(len(second), 1):.1f} MiB, last minute "
          f"{sum(last_minute) / max(len(last_minute), 1):.1f} MiB ({growth:+.1%}, limit +10%); peak "
          f"{result['peak_rss_mib']} MiB; mean CPU {result['mean_cpu_pct']:.0f}% of a core")
    print(f"soak: {'PASS' if ok else 'FAIL'}; reports/soak-{stamp}.json and .svg")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
