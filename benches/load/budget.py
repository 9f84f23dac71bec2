"""How far past a LiteLLM key's budget a fleet of sidecars goes, and whether every cent of
what it served is written once: N real sidecar processes (release build) share one key with a
small `max_budget` over a database with LiteLLM's whole schema (every migration, from the
pinned LiteLLM in `target/litellm-venv`) and the NOTIFY triggers (`sidecar db install-notify`,
`listen: true`). A driver sends a fixed total request rate through their `dispatch: model`
routes, round-robin, until every sidecar refuses the key (422 `budget_exceeded`) or a bound
passes; the provider (`examples/bench_provider.rs`) answers each with usage 1,000 prompt and
200 completion tokens, which the deployment's own prices make $0.0045.

Prints, per N: the budget in requests, requests served, the overshoot (served past the budget),
the time from the spend written crossing the budget to the last sidecar refusing, and the key's
`spend` after every sidecar stopped (SIGTERM flushes) against served × price: equal, or the
fleet lost or double-counted spend.

    cargo build --release --bin sidecar --example bench_provider
    python3 benches/load/budget.py --sizes 1,10,50 --rate 100 --flush 1s
"""
import argparse
import concurrent.futures
import os
import platform
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request

import keys_db
import measure
import services
from services import MODEL_ROUTE_PREFIX

# What the provider's usage costs at the deployment's prices (services.CREDENTIALS).
COST_PER_REQUEST = 1000 * 0.0000025 + 200 * 0.00001


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--release", default="target/release")
    p.add_argument("--workdir", default="target/bench-budget")
    p.add_argument("--database-url",
                   default="postgresql://postgres@127.0.0.1:5432/test?sslmode=disable")
    p.add_argument("--sizes", default="1,10,50", help="fleet sizes, comma-separated")
    p.add_argument("--rate", type=float, default=100.0, help="total requests per second")
    p.add_argument("--flush", default="1s", help="spend.flush_interval of every sidecar")
    p.add_argument("--budget-requests", type=int, default=100,
                   help="the key's max_budget, in requests' worth")
    p.add_argument("--bound", type=float, default=60.0,
                   help="longest run per size, seconds, after which it is reported as open")
    return p.parse_args()


def post(port, key):
    """One chat completion through a sidecar's model route: its status."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{MODEL_ROUTE_PREFIX}/chat/completions",
        data=measure.REQUEST_BODY.encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def drive(sidecars, rate, bound):
    """Sends `rate` requests per second, round-robin, until every sidecar has refused twice in
    a row (or `bound` seconds): (served, time the first refusal came, time the last sidecar
    began refusing, statuses other than 200 and 422)."""
    served = 0
    odd = {}
    refusing = {}
    first_refusal = None
    lock = threading.Lock()
    start = time.monotonic()

    def one(index):
        nonlocal served, first_refusal
        status = post(sidecars[index].port, keys_db.LITELLM_KEY)
        now = time.monotonic() - start
        with lock:
            if status == 200:
                served += 1
                refusing.pop(index, None)
            elif status == 422:
                first_refusal = first_refusal if first_refusal is not None else now
                since, count = refusing.get(index, (now, 0))
                refusing[index] = (since, count + 1)
            else:
                odd[status] = odd.get(status, 0) + 1

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        sent = 0
        while time.monotonic() - start < bound:
            with lock:
                if len(refusing) == len(sidecars) and all(c >= 2 for _, c in refusing.values()):
                    break
            due = start + sent / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, sent % len(sidecars))
            sent += 1
    closed = max(since for since, _ in refusing.values()) if len(refusing) == len(sidecars) \
        else None
    return served, first_refusal, closed, odd


def run_size(args, n, workdir, provider):
    db = keys_db.LiteLlmDatabase(args.database_url).create()
    budget = args.budget_requests * COST_PER_REQUEST
    sidecars = []
    try:
        db.pg.psql(f'UPDATE "LiteLLM_VerificationToken" SET max_budget = {budget!r};')
        binary = os.path.join(args.release, "sidecar")
        subprocess.run([binary, "-c", os.path.join(workdir, "none.yaml"), "db", "install-notify"],
                       check=True, capture_output=True, env=dict(os.environ, DATABASE_URL=db.url))
        for i in range(n):
            sidecars.append(services.Sidecar(binary, workdir, provider, 1, 100, 5, "warn",
                                             name=f"n{n}-{i}", litellm_keys=(db.url, "public"),
                                             listen=True, flush_interval=args.flush))
        served, first_refusal, closed, odd = drive(sidecars, args.rate, args.bound)
    finally:
        for sidecar in reversed(sidecars):
            sidecar.stop()
    written = float(db.pg.scalar('SELECT spend FROM "LiteLLM_VerificationToken"'))
    logs = db.spend_rows()
    db.drop()
    return dict(n=n, served=served, first_refusal=first_refusal, closed=closed, odd=odd,
                written=written, logs=logs)


def main():
    args = parse_args()
    workdir = os.path.abspath(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    provider = services.Provider(os.path.join(args.release, "examples/bench_provider"), workdir,
                                 1024, 0, 20, 2000)
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs; {args.rate:.0f} req/s in all, "
          f"flush {args.flush}, budget {args.budget_requests} requests "
          f"(${args.budget_requests * COST_PER_REQUEST:.4f})", flush=True)
    print("| sidecars | served | past the budget | first 422 → all refuse | key spend written "
          "/ served × price | spend-log rows |")
    print("| ---: | ---: | ---: | --- | --- | ---: |")
    try:
        for n in [int(s) for s in args.sizes.split(",")]:
            r = run_size(args, n, workdir, provider)
            over = r["served"] - args.budget_requests
            spread = ("not closed within the bound" if r["closed"] is None
                      else f"{r['closed'] - r['first_refusal']:.2f} s")
            expected = r["served"] * COST_PER_REQUEST
            same = "equal" if abs(r["written"] - expected) < 1e-9 else "DIFFERENT"
            odd = f" (other statuses: {r['odd']})" if r["odd"] else ""
            print(f"| {n} | {r['served']} | {over} | {spread} | {r['written']:.4f} / "
                  f"{expected:.4f} ({same}) | {r['logs']} |{odd}", flush=True)
    finally:
        provider.stop()


if __name__ == "__main__":
    main()
