"""Benchmark: our fal client/backend against the local fake fal server (tests/fal_server.py).

Not a pytest test. Run it as a script::

    python tests/bench_fal.py [--repeats 10] [--upload-mb 300] [--upload-repeats 3]
                              [--skip-latency] [--skip-upload] [--skip-nodelay] [--seed 1]

About 1.5 minutes on 2 cores with the defaults.

Everything runs in one process: the fake server answers from threads of this process, so server and
client share the machine's cores (2 on the dev box) and the GIL. All figures and ratios are measured in
the same run.

1. Completion-to-result latency: from the moment the server marks a job COMPLETED
   (``fake.jobs[rid].completed_at``, ``time.monotonic()`` in this process) to the moment our MP4 is on
   disk, for

   * ``sse``:  ``FalBackend.follow_and_save`` with ``use_sse=True`` (end = ``save_result`` returned: MP4
     downloaded, JSON sidecar written, journal marked "saved");
   * ``poll``: the same with ``use_sse=False`` (``watch``'s default ``poll_interval_s``);
   * ``ref``:  fal-client's behaviour (``subscribe`` -> ``iter_events(interval=0.1)`` then ``get``): our
     ``FalClient.status()`` every 0.1 s, then ``result()`` + ``download()`` (end = download returned; no
     sidecar / journal, which fal-client does not have).

   Small jobs (max_side=64, 9 frames, run_seconds = 0.5 s + U(0, 0.5) s, so completion falls at a random
   phase of any poll tick), modes run round-robin. Each latency is split into: detect (COMPLETED seen
   by the client), result (GET result), download, and rest (sidecar + journal, for our backend).

   "Added latency" of SSE vs the reference = median(sse) - median(ref) (also shown for p90); the target
   is < 100 ms (both must be below it). A negative value means SSE is faster than fal-client's 0.1 s
   polling. Also shown per mode: TCP connections per job and whether the result GET needed a new one (read
   from the fake's request log), and connection resets the fake saw (a client closing a connection with
   unread data).

   The pass is run twice: (a) the fake as it is, then (b, diagnostic, ``--skip-nodelay`` to skip) with
   TCP_NODELAY on the fake's sockets. The fake writes a response's headers and body separately, so on a
   kept-alive connection Nagle holds the body until the client's delayed ACK (~40 ms on Linux): (a)
   includes that stall in every small result / download; (b) shows what our client itself costs.

2. Upload throughput on loopback: a random file (``--upload-mb`` MB, MB = 10**6 bytes), uploaded with

   * ``ours``: ``FalClient.upload_file`` (multipart above 100 MiB: 10 MiB parts, 4 in parallel);
   * ``raw``:  one sync ``httpx`` POST of the same file to ``{cdn}/files/upload`` streamed from the file
     (httpx reads it in 64 KiB chunks), with a storage token fetched beforehand (not timed);
   * ``ours_single`` (diagnostic): ``upload_file`` with multipart switched off (one streamed POST through
     our ``_FileBody``), to separate multipart's cost from our request plumbing.

   Round-robin, median of ``--upload-repeats``; ratio ours/raw (target >= 0.9). The server's own
   post-body work (the fake writes the file and MD5s it; for multipart it also joins the parts in
   memory and had MD5'd every part) is timed too and shown, so that the figure can be read with and
   without the fake's storage cost.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

KEY = "test-key-id:test-key-secret"
REF_INTERVAL_S = 0.1  # fal-client's iter_events / subscribe default
TARGET_SSE_ADDED_MS = 100.0
TARGET_UPLOAD_RATIO = 0.9


def percentile(values, q: float) -> float:
    """Linear-interpolated percentile (q in 0..100)."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


# ----------------------------------------------------------------------------------------------- latency


def make_instrumented(FalClient, FalBackend):
    class TimedClient(FalClient):
        """Our client, stamping when COMPLETED is seen and when result / download return."""

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.marks: dict[str, float] = {}

        async def watch(self, handle, **kw):
            async for update in super().watch(handle, **kw):
                if update.done:
                    self.marks["seen"] = time.monotonic()
                yield update

        async def status(self, handle, logs=True):
            update = await super().status(handle, logs)
            if update.done and "seen" not in self.marks:
                self.marks["seen"] = time.monotonic()
            return update

        async def result(self, handle):
            out = await super().result(handle)
            self.marks["result"] = time.monotonic()
            return out

        async def download(self, *a, **kw):
            out = await super().download(*a, **kw)
            self.marks["download"] = time.monotonic()
            return out

    from ltx_outpaint.fal import follow

    class TimedBackend(FalBackend):
        """Our backend, stamping when save_result has returned (MP4 + sidecar on disk, journal "saved")."""

        saved_at: float | None = None

        async def follow_and_save(self, *a, **kw):
            original = follow.save_result

            async def timed(*args, **kwargs):
                out = await original(*args, **kwargs)
                self.saved_at = time.monotonic()
                return out

            follow.save_result = timed  # follow.py's save step calls the module function
            try:
                return await super().follow_and_save(*a, **kw)
            finally:
                follow.save_result = original

    return TimedClient, TimedBackend


async def one_job(fake, mode: str, run_seconds: float, out_dir: str, seed: int) -> dict:
    from ltx_outpaint.backends import Progress
    from ltx_outpaint.fal.backend import FalBackend, FalConfig
    from ltx_outpaint.fal.client import FalClient
    from ltx_outpaint.fal.hosts import FalHosts
    from ltx_outpaint.fal.journal import Journal, JournalEntry
    from ltx_outpaint.request import ENDPOINT_ID, OutpaintRequest

    TimedClient, TimedBackend = make_instrumented(FalClient, FalBackend)
    fake.run_seconds = run_seconds  # read by the fake at submit
    payload = {**OutpaintRequest(prompt="bench", num_frames=9, frames_per_second=24, seed=seed).to_fal_input(),
               "video_url": "https://example.invalid/source.mp4", "loras": []}
    hosts = FalHosts(queue=fake.queue_url, rest=fake.rest_url, cdn=fake.cdn_url)
    first = len(fake.requests)
    async with TimedClient(KEY, hosts) as client:  # one client per run, like FalBackend.run_async
        handle = await client.submit(ENDPOINT_ID, payload)
        rid = handle.request_id
        if mode in ("sse", "poll"):
            backend = TimedBackend(FalConfig(output_dir=out_dir, use_sse=(mode == "sse")))
            entry = Journal().record(JournalEntry(rid, ENDPOINT_ID, handle.status_url, handle.response_url,
                                                  handle.cancel_url, request=payload, cost_estimate_usd=0.0))
            await backend.follow_and_save(client, handle, entry, Progress())  # (then decodes: not timed)
            end = backend.saved_at
        else:  # fal-client: status every 0.1 s until COMPLETED, then get(), then the user downloads
            while True:
                st = await client.status(handle, logs=False)
                if st.done:
                    break
                await asyncio.sleep(REF_INTERVAL_S)
            res = await client.result(handle)
            await client.download(res.data["video"]["url"], os.path.join(out_dir, f"ref_{rid}.mp4"),
                                  expected_size=res.data["video"].get("file_size"))
            end = time.monotonic()
        marks = dict(client.marks)
    completed = fake.jobs[rid].completed_at
    reqs = fake.requests[first:]
    by_route = {r.route: r.client_port for r in reqs}
    ms = lambda a, b: (a - b) * 1000.0  # noqa: E731
    return {"total": ms(end, completed), "detect": ms(marks["seen"], completed),
            "result": ms(marks["result"], marks["seen"]), "download": ms(marks["download"], marks["result"]),
            "rest": ms(end, marks["download"]), "conns": len({r.client_port for r in reqs}),
            "result_new_conn": by_route.get("result") not in
            {r.client_port for r in reqs if r.route in ("submit", "status", "stream")}}


def latency_pass(args, out_dir: str, nodelay: bool) -> dict:
    import fal_server
    from fal_server import FakeFal

    modes = ("sse", "poll", "ref")
    rng = random.Random(args.seed)
    results: dict[str, list[dict]] = {m: [] for m in modes}
    t0 = time.monotonic()
    old = fal_server._Handler.disable_nagle_algorithm
    fal_server._Handler.disable_nagle_algorithm = nodelay  # socketserver sets TCP_NODELAY on accepted sockets
    resets = {"n": 0}
    old_handle_error = fal_server._Server.handle_error

    def handle_error(self, request, client_address):  # count RSTs instead of printing socketserver's traceback
        if isinstance(sys.exc_info()[1], ConnectionResetError):
            resets["n"] += 1
        else:
            old_handle_error(self, request, client_address)

    fal_server._Server.handle_error = handle_error
    try:
        with FakeFal(keys={KEY}, max_side=64, queue_seconds=0.1, run_seconds=0.5) as fake:
            for m in modes:  # warm-up (imports, first render / decode), not counted
                asyncio.run(one_job(fake, m, 0.3, out_dir, 0))
            for i in range(args.repeats):
                order = modes[i % 3:] + modes[:i % 3]  # rotate who goes first
                for m in order:
                    before = resets["n"]
                    r = asyncio.run(one_job(fake, m, 0.5 + rng.uniform(0.0, 0.5), out_dir, i + 1))
                    time.sleep(0.05)  # let the fake's connection threads notice closed connections
                    r["resets"] = resets["n"] - before
                    results[m].append(r)
    finally:
        fal_server._Handler.disable_nagle_algorithm = old
        fal_server._Server.handle_error = old_handle_error
    summary = {}
    for m in modes:
        tot = [r["total"] for r in results[m]]
        summary[m] = {"median": statistics.median(tot), "p90": percentile(tot, 90), "min": min(tot),
                      "max": max(tot), "conns": statistics.median(r["conns"] for r in results[m]),
                      "result_new_conn": sum(r["result_new_conn"] for r in results[m]), "n": len(tot),
                      "resets": sum(r["resets"] for r in results[m]),
                      **{k: statistics.median(r[k] for r in results[m])
                         for k in ("detect", "result", "download", "rest")}}
    summary["_seconds"] = time.monotonic() - t0
    return summary


def print_latency(summary: dict, labels: dict) -> tuple[float, float]:
    print(f"   {'mode':<46} {'median':>7} {'p90':>7} {'min':>7} {'max':>7} | median of: {'detect':>6} "
          f"{'result':>6} {'downld':>6} {'rest':>5} | conns/job; result on a new conn; RSTs")
    for m in ("sse", "poll", "ref"):
        s = summary[m]
        print(f"   {labels[m]:<46} {s['median']:7.1f} {s['p90']:7.1f} {s['min']:7.1f} {s['max']:7.1f} | "
              f"{'':10} {s['detect']:6.1f} {s['result']:6.1f} {s['download']:6.1f} {s['rest']:5.1f} | "
              f"{s['conns']:g}; {s['result_new_conn']}/{s['n']}; {s['resets']}")
    added = summary["sse"]["median"] - summary["ref"]["median"]
    added90 = summary["sse"]["p90"] - summary["ref"]["p90"]
    print(f"   added latency of SSE vs reference = median(sse) - median(ref) = {added:+.1f} ms; "
          f"p90(sse) - p90(ref) = {added90:+.1f} ms; target < {TARGET_SSE_ADDED_MS:.0f} ms: "
          f"{'MET' if added < TARGET_SSE_ADDED_MS and added90 < TARGET_SSE_ADDED_MS else 'MISSED'}")
    print(f"   ratios of medians: sse/ref {summary['sse']['median'] / summary['ref']['median']:.2f}, "
          f"poll/ref {summary['poll']['median'] / summary['ref']['median']:.2f}, poll/sse "
          f"{summary['poll']['median'] / summary['sse']['median']:.1f} "
          f"(poll - sse = {summary['poll']['median'] - summary['sse']['median']:+.1f} ms)")
    return added, added90


def bench_latency(args, tmp: str) -> dict:
    from ltx_outpaint.fal.client import FalClient

    poll_default = FalClient.watch.__kwdefaults__["poll_interval_s"]
    labels = {"sse": "ours, SSE (follow_and_save)",
              "poll": f"ours, polling every {poll_default:g} s (use_sse=False)",
              "ref": f"reference: fal-client, status every {REF_INTERVAL_S:g} s"}
    out_dir = os.path.join(tmp, "results")
    print(f"== 1. completion-to-result latency, ms ({args.repeats} jobs per mode, round-robin; max_side=64, "
          f"9 frames, run_seconds 0.5 s + U(0, 0.5) s)")
    print("   latency = time.monotonic() when our MP4 is on disk - fake.jobs[rid].completed_at (the server marked "
          "the job COMPLETED);\n"
          "   'on disk' = sse/poll: FalBackend.save_result returned (MP4 + JSON sidecar written, journal 'saved'); "
          "ref: download() returned.\n"
          "   detect = COMPLETED seen by the client; result = GET result; downld = GET MP4 to disk; "
          "rest = sidecar + journal")
    main = latency_pass(args, out_dir, nodelay=False)
    print(f"\n   a) the fake as it is ({main['_seconds']:.0f} s)")
    added, added90 = print_latency(main, labels)
    out = {"main": main, "added_ms": added, "added_p90_ms": added90}
    if not args.skip_nodelay:
        diag = latency_pass(args, out_dir, nodelay=True)
        print(f"\n   b) diagnostic: the same with TCP_NODELAY on the fake's sockets ({diag['_seconds']:.0f} s). The "
              "fake sends headers and body in two writes,\n"
              "      so Nagle holds the body until the client's delayed ACK (~40 ms on Linux) on a kept-alive "
              "connection;\n      (b) is what our client itself costs; a server that writes headers + body at once "
              "has no such stall")
        print_latency(diag, labels)
        out["nodelay"] = diag
    return out


# ----------------------------------------------------------------------------------------------- uploads


def write_random_file(path: str, nbytes: int) -> None:
    block = 16 * 1024 * 1024
    with open(path, "wb") as f:
        left = nbytes
        while left > 0:
            n = min(block, left)
            f.write(os.urandom(n))
            left -= n


def storage_token(fake) -> str:
    import httpx

    r = httpx.post(f"{fake.rest_url}/storage/auth/token", params={"storage_type": "fal-cdn-v3"}, json={},
                   headers={"Authorization": f"Key {KEY}"})
    r.raise_for_status()
    return r.json()["token"]


def raw_upload(fake, path: str, size: int) -> dict:
    import httpx

    token = storage_token(fake)  # not timed (ours fetches one inside upload_file: ~ms)
    with httpx.Client(timeout=httpx.Timeout(300.0)) as http, open(path, "rb") as f:
        c0, t0 = time.thread_time(), time.perf_counter()
        r = http.post(f"{fake.cdn_url}/files/upload", content=f,
                      headers={"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream",
                               "X-Fal-File-Name": "raw.bin", "Content-Length": str(size)})
        dt, cpu = time.perf_counter() - t0, time.thread_time() - c0
    r.raise_for_status()
    url = r.json()["access_url"]
    return {"s": dt, "cpu": cpu, "url": url}


async def our_upload(fake, path: str, multipart: bool) -> dict:
    from ltx_outpaint.fal.client import FalClient
    from ltx_outpaint.fal.hosts import FalHosts

    spans: list[tuple[str, str, float, float]] = []

    class SpanClient(FalClient):
        async def _request(self, method, url, **kw):  # every HTTP call of the client goes through here
            t0 = time.perf_counter()
            try:
                return await super()._request(method, url, **kw)
            finally:
                spans.append((method, url, t0, time.perf_counter()))

    hosts = FalHosts(queue=fake.queue_url, rest=fake.rest_url, cdn=fake.cdn_url)
    async with SpanClient(KEY, hosts) as client:
        kw = {} if multipart else {"multipart_threshold": 1 << 62}
        c0, t0 = time.thread_time(), time.perf_counter()
        url = await client.upload_file(path, **kw)
        t1, cpu = time.perf_counter(), time.thread_time() - c0
    out = {"s": t1 - t0, "cpu": cpu, "url": url}
    parts = [sp for sp in spans if sp[0] == "PUT" and "/multipart/" in sp[1]]
    if parts:
        p0, p1 = min(sp[2] for sp in parts), max(sp[3] for sp in parts)
        complete = [sp for sp in spans if sp[1].endswith("/complete")]
        out.update(setup=p0 - t0, parts=p1 - p0, complete=sum(sp[3] - sp[2] for sp in complete))
    return out


def instrument_server(fake) -> dict:
    """Time the fake's handler work after a request's body arrived: `last` for the final request of an upload
    (raw/single: `_upload` = write the file + MD5 it; multipart: `_upload_complete` = join the parts in memory,
    write the file + MD5 it), `parts` summed over multipart parts (`_upload_part`: MD5 of the part for its ETag)."""
    timing = {"last": 0.0, "parts": 0.0}
    lock = threading.Lock()
    for name, slot in (("_upload", "last"), ("_upload_complete", "last"), ("_upload_part", "parts")):
        orig = getattr(fake, name)

        def wrapped(h, ctx, _orig=orig, _slot=slot):
            t0 = time.perf_counter()
            try:
                return _orig(h, ctx)
            finally:
                with lock:
                    if _slot == "parts":
                        timing["parts"] += time.perf_counter() - t0
                    else:
                        timing["last"] = time.perf_counter() - t0

        setattr(fake, name, wrapped)  # _route looks the handler up on the instance
    return timing


def forget_uploads(fake) -> None:
    """Free the fake's copies (its files + the multipart parts it keeps in memory) between runs."""
    with fake._lock:
        for f in list(fake._files.values()):
            try:
                os.remove(f.path)
            except OSError:
                pass
        fake._files.clear()
        fake._multipart.clear()


def upload_dir(nbytes: int) -> str:
    """A temp dir on tmpfs (/dev/shm) when it has room for the file and the fake's copies, else the default."""
    try:
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize > 4 * nbytes:
            return tempfile.mkdtemp(prefix="bench-fal-", dir="/dev/shm")
    except OSError:
        pass
    return tempfile.mkdtemp(prefix="bench-fal-up-")


def bench_upload(args) -> dict:
    size = int(args.upload_mb * 1_000_000)
    tmp = upload_dir(size)
    try:
        return _bench_upload(args, size, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _bench_upload(args, size: int, tmp: str) -> dict:
    from fal_server import FakeFal
    from ltx_outpaint.fal import client as fc

    path = os.path.join(tmp, "upload.bin")
    multipart = size > fc.MULTIPART_THRESHOLD
    n_parts = -(-size // fc.PART_SIZE)
    mb = size / 1e6
    print(f"\n== 2. upload throughput on loopback: {mb:.0f} MB ({size / 2**20:.1f} MiB) random file, "
          f"{args.upload_repeats} repeats round-robin (after one warm-up each), median")
    print("   ours: upload_file -> " + (f"multipart, {n_parts} parts of {fc.PART_SIZE // 2**20} MiB, "
                                         f"{fc.PART_CONCURRENCY} in parallel" if multipart
                                         else "one request (below the multipart threshold)"))
    print(f"   note: the fake server runs in threads of this process: server and client share the "
          f"{os.cpu_count()} cores (and the GIL)")
    print(f"   files (the source + the fake's stored copies) in {tmp}"
          + (" (tmpfs: no disk writeback in the timings)" if tmp.startswith("/dev/shm") else ""))
    write_random_file(path, size)
    methods = ("raw", "ours", "ours_single")
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    t0 = time.monotonic()
    with FakeFal(keys={KEY}, workdir=os.path.join(tmp, "fake-cdn")) as fake:
        timing = instrument_server(fake)

        def one(m: str) -> dict:
            timing["last"] = timing["parts"] = 0.0
            r = raw_upload(fake, path, size) if m == "raw" else asyncio.run(our_upload(fake, path, m == "ours"))
            got = fake.files[r["url"].rsplit("/files/", 1)[-1]].size
            assert got == size, (m, got, size)
            r["server"], r["server_parts"] = timing["last"], timing["parts"]
            forget_uploads(fake)
            return r

        for m in methods:  # warm-up, not counted
            one(m)
        for i in range(args.upload_repeats):
            for m in methods[i % 3:] + methods[:i % 3]:
                runs[m].append(one(m))
    print(f"   ({time.monotonic() - t0:.0f} s)")
    labels = {"raw": "raw: one httpx POST streamed from the file",
              "ours": "ours: FalClient.upload_file",
              "ours_single": "ours, multipart off (diagnostic)"}
    print(f"   {'method':<44} {'MB/s':>7} {'s':>6}  {'runs (s)':<16} {'fake post-body s':>16} "
          f"{'MB/s w/o it':>11} {'client CPU s':>12}")
    summ = {}
    for m in methods:
        rs = runs[m]
        med = statistics.median(r["s"] for r in rs)
        net = statistics.median(r["s"] - r["server"] for r in rs)
        summ[m] = {"s": med, "mbps": mb / med, "server_s": statistics.median(r["server"] for r in rs),
                   "mbps_net": mb / net, "cpu": statistics.median(r["cpu"] for r in rs)}
        all_s = " ".join(f"{r['s']:.2f}" for r in rs)
        print(f"   {labels[m]:<44} {summ[m]['mbps']:7.1f} {med:6.2f}  {all_s:<16} "
              f"{summ[m]['server_s']:16.2f} {summ[m]['mbps_net']:11.1f} {summ[m]['cpu']:12.2f}")
    if multipart:
        rs = runs["ours"]
        ph = {k: statistics.median(r[k] for r in rs) for k in ("setup", "parts", "complete", "server_parts")}
        print(f"   ours, phases (median s): token + init + first read {ph['setup']:.3f}, parts "
              f"{ph['parts']:.2f} ({mb / ph['parts']:.0f} MB/s; the fake's part handlers, MD5 for the ETags, "
              f"{ph['server_parts']:.2f} s summed over threads), complete {ph['complete']:.2f} "
              f"(of which the fake's handler {summ['ours']['server_s']:.2f})")
    ratio = summ["ours"]["mbps"] / summ["raw"]["mbps"]
    ratio_net = summ["ours"]["mbps_net"] / summ["raw"]["mbps_net"]
    print(f"   ratio ours/raw (MB/s, end to end) = {ratio:.2f}; target >= {TARGET_UPLOAD_RATIO}: "
          f"{'MET' if ratio >= TARGET_UPLOAD_RATIO else 'MISSED'}")
    print(f"   ratio ours/raw without the fake's post-body work = {ratio_net:.2f}; "
          f"ours_single/raw = {summ['ours_single']['mbps'] / summ['raw']['mbps']:.2f}")
    print("   fake post-body = the fake's handler after the last body arrived (raw/single: write + MD5 the file; "
          "multipart 'complete':\n   join the parts in memory, write + MD5 the file; it had also MD5'd every part "
          "for its ETag). client CPU = CPU time of\n   the client's thread (event loop / sync httpx), "
          "not counting asyncio.to_thread file reads")
    return {"summary": summ, "ratio": ratio, "ratio_net": ratio_net}


# ----------------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=10, help="jobs per latency mode (default 10)")
    ap.add_argument("--upload-mb", type=float, default=300.0, help="upload size in MB (10**6 bytes; default 300)")
    ap.add_argument("--upload-repeats", type=int, default=3, help="uploads per method (default 3)")
    ap.add_argument("--seed", type=int, default=1, help="jitter seed")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-upload", action="store_true")
    ap.add_argument("--skip-nodelay", action="store_true", help="skip the TCP_NODELAY diagnostic latency pass")
    args = ap.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="bench-fal-")
    os.environ["LTX_OUTPAINT_CONFIG_DIR"] = os.path.join(tmp, "cfg")
    os.environ["FAL_KEY"] = KEY
    for var in ("FAL_KEY_ID", "FAL_KEY_SECRET", "LTX_OUTPAINT_FAL_QUEUE_URL", "LTX_OUTPAINT_FAL_REST_URL",
                "LTX_OUTPAINT_FAL_CDN_URL"):
        os.environ.pop(var, None)
    print(f"bench_fal: python {sys.version.split()[0]}, {os.cpu_count()} CPU cores; fake fal server in-process "
          f"(threads): server and client share the cores")
    t0 = time.monotonic()
    try:
        if not args.skip_latency:
            bench_latency(args, tmp)
        if not args.skip_upload:
            bench_upload(args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\ntotal {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
