"""A load test of ``synerdetect serve``: ``synerdetect bench serve --checkpoint DIR``.

Starts the server from the CLI on a free port of 127.0.0.1 in a subprocess, sends a bounded number of single-image
requests from concurrent client threads (httpx), a share of them bad uploads (a truncated PNG, a decompression-bomb
PNG header, a text file, an empty file), and compares with the offline scoring call (``Scorer.score_paths``, what
``synerdetect predict`` runs) on the same good images in the same run. Reports JSON lines: latency percentiles,
images/s served and offline and their ratio, the mean server batch size (from ``/metrics``), errors by kind, the
server's RSS before and after, whether every request was answered without a 5xx, and whether each served logit
equals the offline one (|Δlogit| < 1e-5). Everything is bounded: requests, per-request time and an overall deadline.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import IO, Any

__all__ = ["BAD_KINDS", "bad_payloads", "run_serve_bench"]

#: The bad uploads, and the HTTP status and per-image ``error_kind`` each must get.
BAD_KINDS: dict[str, tuple[int, str]] = {
    "truncated": (422, "corrupt"),
    "bomb": (422, "too_many_pixels"),
    "not_an_image": (415, "not_an_image"),
    "empty": (400, "empty"),
}
LOGIT_TOL = 1e-5
RATIO_TARGET = 0.8


def _png(seed: int, size: tuple[int, int]) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB").save(buf, "PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bomb_png(side: int = 30_000) -> bytes:
    """A PNG whose header declares ``side`` x ``side`` pixels (900 MP) over a few hundred bytes of zeros."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\0" * 65536, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def bad_payloads() -> dict[str, bytes]:
    """One payload per :data:`BAD_KINDS` kind."""
    good = _png(999, (96, 96))
    return {
        "truncated": good[: len(good) // 2],
        "bomb": _bomb_png(),
        "not_an_image": b"this is a text file, not an image\n" * 20,
        "empty": b"",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_server(proc: subprocess.Popen, wait_s: float = 60.0) -> None:
    """Stop a server process that is still running: SIGTERM (it drains in-flight requests), then kill if it
    has not exited within ``wait_s``."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux ``/proc``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _metric(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(1e3 * v[min(len(v) - 1, int(q * len(v)))], 1)


def run_serve_bench(
    checkpoint: str | os.PathLike,
    *,
    clients: int = 32,
    requests: int = 320,
    bad_share: float = 0.1,
    device: str = "cpu",
    max_batch: int = 16,
    n_images: int = 16,
    timeout_s: float = 600.0,
    out: str | os.PathLike | None = None,
    emit: bool = True,
) -> list[dict[str, Any]]:
    """Run the load test (see the module docstring) and return its JSON lines (printed when ``emit``, and written to
    ``out``). Stops by itself: no new request after ``timeout_s``; the server is stopped with SIGTERM at the end."""
    import httpx

    if clients < 1 or requests < 1 or not 0 <= bad_share < 1:
        raise ValueError("bench serve: --clients and --requests must be >= 1 and --bad-share in [0, 1)")
    start = time.monotonic()
    hard_deadline = start + timeout_s
    with tempfile.TemporaryDirectory(prefix="synerdetect-loadtest-") as tmp:
        # 1. The images and the request plan: which request sends which good image or bad payload.
        folder = Path(tmp)
        goods = _write_good_images(folder, n_images)
        plan = _request_plan(requests, bad_share, n_images)

        # 2. The server, in a subprocess of the CLI on a free loopback port.
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        log_path = folder / "server.log"
        with open(log_path, "w") as log:
            proc = _start_server(checkpoint, port, device=device, max_batch=max_batch, clients=clients, log=log)
            try:
                _wait_ready(proc, base, hard_deadline, log_path)
                rss_before = _rss_mb(proc.pid)

                # 3. Offline: the same good images through predict's call, as many as the load test sends.
                n_good = sum(1 for k, _ in plan if k == "good")
                paths = [str(goods[i % n_images]) for i in range(max(n_good, n_images))]
                offline_s, offline_logit = _offline_reference(checkpoint, paths, device=device, max_batch=max_batch)

                # 4. The load: one connected client per thread until the plan or the time runs out.
                srv_cpu0 = _cpu_s(proc.pid)
                done, load_s, client_cpu_s = _run_load(
                    base, plan, goods, clients=clients, timeout_s=timeout_s, stop_at=hard_deadline - 30
                )
                srv_cpu1 = _cpu_s(proc.pid)
                metrics = httpx.get(base + "/metrics", timeout=30).text
                rss_after = _rss_mb(proc.pid)
            finally:
                stop_server(proc, 60)

    # 5. The report: latency, throughput against offline, errors, memory, correctness.
    srv_cpu = round(srv_cpu1 - srv_cpu0, 2) if srv_cpu0 is not None and srv_cpu1 is not None else None
    common = {"checkpoint": str(checkpoint), "device": device, "clients": clients, "requests": requests}
    lines = _report(
        common,
        done,
        plan,
        metrics,
        load_s=load_s,
        offline=(len(paths), offline_s, offline_logit),
        cpu=(client_cpu_s, srv_cpu),
        rss=(rss_before, rss_after),
        exit_code=proc.returncode,
        wall_s=round(time.monotonic() - start, 1),
    )
    text = "".join(json.dumps(line) + "\n" for line in lines)
    if emit:
        sys.stdout.write(text)
        sys.stdout.flush()
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(text)
    return lines


def _write_good_images(folder: Path, n_images: int) -> list[Path]:
    goods = []
    for i in range(n_images):
        p = folder / f"good-{i:02d}.png"
        p.write_bytes(_png(i, (64 + 16 * (i % 5), 64 + 12 * (i % 3))))
        goods.append(p)
    return goods


def _request_plan(requests: int, bad_share: float, n_images: int) -> list[tuple[str, int]]:
    """``(kind, index)`` per request: kind ``"good"`` (index of the image) or a bad kind, spread evenly."""
    bad_names = list(BAD_KINDS)
    plan: list[tuple[str, int]] = []
    n_bad = 0
    for j in range(requests):
        if int((j + 1) * bad_share) > int(j * bad_share):
            plan.append((bad_names[n_bad % len(bad_names)], n_bad))
            n_bad += 1
        else:
            plan.append(("good", (j - n_bad) % n_images))
    return plan


def _start_server(
    checkpoint: str | os.PathLike, port: int, *, device: str, max_batch: int, clients: int, log: IO[str]
) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "synerdetect.cli",
        "serve",
        "--checkpoint",
        str(checkpoint),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        device,
        "--max-batch",
        str(max_batch),
        "--max-queue",
        str(max(64, 2 * clients)),
        "--max-inflight",
        str(max(64, 2 * clients)),
        "--log-level",
        "warning",
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def _wait_ready(proc: subprocess.Popen, base: str, deadline: float, log_path: Path) -> None:
    import httpx

    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError("bench serve: the server did not become ready in time")
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)


def _offline_reference(
    checkpoint: str | os.PathLike, paths: list[str], *, device: str, max_batch: int
) -> tuple[float, dict[str, float]]:
    """Seconds to score ``paths`` offline and the logit of each image, by file name."""
    import torch

    from ..engine.scoring import Scorer

    # as `synerdetect predict` and the server run by default: provenance read for every image
    scorer = Scorer.from_checkpoint(checkpoint, device=device, batch_size=max_batch, provenance=True)
    scorer.warmup()
    t0 = time.perf_counter()
    records = scorer.score_paths(paths, progress=False)
    seconds = time.perf_counter() - t0
    del scorer
    if device == "cuda":
        torch.cuda.empty_cache()
    return seconds, {Path(r["name"]).name: r["logit"] for r in records}


def _run_load(
    base: str, plan: list[tuple[str, int]], goods: list[Path], *, clients: int, timeout_s: float, stop_at: float
) -> tuple[list[dict[str, Any]], float, float]:
    """Send the plan from ``clients`` threads; returns one record per answered request, the load's wall seconds
    and this process's CPU seconds."""
    import httpx

    bads = bad_payloads()
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    cursor = iter(range(len(plan)))

    def payload(kind: str, idx: int) -> tuple[str, bytes]:
        if kind == "good":
            return goods[idx].name, goods[idx].read_bytes()
        return f"bad-{kind}-{idx}.png", bads[kind]

    def client(h: httpx.Client) -> None:
        try:
            while time.monotonic() < stop_at:
                with lock:
                    j = next(cursor, None)
                if j is None:
                    return
                kind, idx = plan[j]
                rec = _one_request(h, kind, *payload(kind, idx))
                with lock:
                    results.append(rec)
        finally:
            h.close()

    # one connected client per thread, made before the clock starts: building an httpx client (its TLS
    # context) and opening the connection is the load generator's set-up, not the server's throughput
    pool = [httpx.Client(base_url=base, timeout=min(120.0, timeout_s)) for _ in range(clients)]
    for h in pool:
        h.get("/healthz")
    t_load, cpu_load = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=client, args=(h,), daemon=True) for h in pool]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, stop_at + 30 - time.monotonic()))
    load_s, client_cpu_s = time.perf_counter() - t_load, time.process_time() - cpu_load
    with lock:
        return list(results), load_s, client_cpu_s


def _one_request(h, kind: str, name: str, data: bytes) -> dict[str, Any]:
    """POST one image (retrying a 429 up to three times after its Retry-After / 4); its status, latency and logit."""
    import httpx

    rec: dict[str, Any] = {"kind": kind, "name": name, "status": None, "retries": 0}
    t = time.perf_counter()
    r = None
    for _attempt in range(4):
        try:
            r = h.post("/v1/detect", files=[("files", (name, data, "image/png"))])
        except httpx.HTTPError as e:
            rec["status"], rec["exc"] = None, type(e).__name__
            break
        rec["status"] = r.status_code
        if r.status_code != 429:
            break
        rec["retries"] += 1
        time.sleep(float(r.headers.get("retry-after", "1")) / 4)
    rec["latency_s"] = time.perf_counter() - t
    if rec["status"] is not None and r is not None:
        try:
            res = r.json().get("results") or [{}]
            rec["logit"], rec["error_kind"] = res[0].get("logit"), res[0].get("error_kind")
        except (ValueError, AttributeError):
            rec["error_kind"] = "non_json"
    return rec


def _report(
    common: dict[str, Any],
    done: list[dict[str, Any]],
    plan: list[tuple[str, int]],
    metrics: str,
    *,
    load_s: float,
    offline: tuple[int, float, dict[str, float]],
    cpu: tuple[float, float | None],
    rss: tuple[float | None, float | None],
    exit_code: int | None,
    wall_s: float,
) -> list[dict[str, Any]]:
    n_offline, offline_s, offline_logit = offline
    good = [r for r in done if r["kind"] == "good"]
    good_ok = [r for r in good if r["status"] == 200]
    deltas = [abs(r["logit"] - offline_logit[r["name"]]) for r in good_ok if r.get("logit") is not None]
    errors: dict[str, Any] = {}
    for kind, (want_status, want_kind) in BAD_KINDS.items():
        rs = [r for r in done if r["kind"] == kind]
        errors[kind] = {
            "n": len(rs),
            "statuses": dict(Counter(str(r["status"]) for r in rs)),
            "error_kinds": dict(Counter(str(r.get("error_kind")) for r in rs)),
            "as_expected": all(r["status"] == want_status and r.get("error_kind") == want_kind for r in rs),
        }
    served_ips = len(good_ok) / load_s if load_s > 0 else None
    offline_ips = n_offline / offline_s if offline_s > 0 else None
    ratio = served_ips / offline_ips if served_ips and offline_ips else None
    n_batches = _metric(metrics, "synerdetect_batch_size_count")
    return [
        {
            "bench": "serve_latency",
            **common,
            "p50_ms": _pct([r["latency_s"] for r in good_ok], 0.50),
            "p95_ms": _pct([r["latency_s"] for r in good_ok], 0.95),
            "p99_ms": _pct([r["latency_s"] for r in good_ok], 0.99),
            "p50_ms_all": _pct([r["latency_s"] for r in done], 0.50),
            "p99_ms_all": _pct([r["latency_s"] for r in done], 0.99),
        },
        {
            "bench": "serve_throughput",
            **common,
            "served_images": len(good_ok),
            "load_s": round(load_s, 2),
            "served_images_per_s": round(served_ips, 2) if served_ips else None,
            "offline_images": n_offline,
            "offline_images_per_s": round(offline_ips, 2) if offline_ips else None,
            "ratio": round(ratio, 3) if ratio else None,
            "ratio_target": RATIO_TARGET,
            "meets_target": bool(ratio and ratio >= RATIO_TARGET),
            "mean_batch_size": round(_metric(metrics, "synerdetect_batch_size_sum") / n_batches, 2)
            if n_batches
            else None,
            "forward_passes": int(n_batches),
            "client_cpu_s": round(cpu[0], 2),
            "server_cpu_s": cpu[1],
            # the model worker's busy time: load_s minus this is time the model waited for requests
            "model_busy_s": round(_metric(metrics, "synerdetect_batch_duration_seconds_sum"), 2),
        },
        {
            "bench": "serve_errors",
            **common,
            "bad_requests": sum(1 for r in done if r["kind"] != "good"),
            "by_kind": errors,
            "statuses": dict(Counter(str(r["status"]) for r in done)),
            "retried_429": sum(r["retries"] for r in done),
        },
        {"bench": "serve_memory", **common, "rss_before_mb": rss[0], "rss_after_mb": rss[1]},
        {
            "bench": "serve_correctness",
            **common,
            "answered": len(done),
            "all_answered": len(done) == len(plan) and all(r["status"] is not None for r in done),
            "no_5xx": not any(r["status"] is not None and r["status"] >= 500 for r in done),
            "bad_as_expected": all(e["as_expected"] for e in errors.values()),
            "max_abs_dlogit": max(deltas) if deltas else None,
            "logits_match_offline": bool(deltas) and len(deltas) == len(good) and max(deltas) < LOGIT_TOL,
            "server_exit_code": exit_code,
            "wall_s": wall_s,
        },
    ]
