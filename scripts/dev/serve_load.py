#!/usr/bin/env python3
"""Times a running `gan-engine serve` from loopback: request-to-images latency for
N = 1, 8, 64, then requests per second with several concurrent clients.

Bounded by design: a fixed number of requests, each with a timeout, to one loopback
address only. Standard library only.

    gan-engine serve --checkpoint RUN --device cpu --port 8080 &
    python3 scripts/dev/serve_load.py --url http://127.0.0.1:8080 --repeat 9 --clients 4 --requests 25
"""
import argparse
import json
import statistics
import threading
import time
import urllib.parse
import urllib.request


def post(url, body, timeout):
    req = urllib.request.Request(url + "/api/sample", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=timeout) as r:
        answer = json.load(r)
    return time.perf_counter() - t0, answer


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--text", default="Women Red Striped Dress")
    ap.add_argument("--sizes", default="1,8,64", help="N values to time one at a time")
    ap.add_argument("--repeat", type=int, default=9, help="timed requests per N (after one warm-up)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=25, help="requests per client in the load run")
    ap.add_argument("--load-n", type=int, default=8, help="images per request in the load run")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    a = ap.parse_args()
    host = urllib.parse.urlparse(a.url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"--url {a.url}: this load generator only talks to loopback")

    with urllib.request.urlopen(a.url + "/api/info", timeout=a.timeout) as r:
        info = json.load(r)
    print(f"model: {info['file']}, iteration {info['iteration']}, {info['size']} px, width {info['width']}, device {info['device']}")

    print("\nlatency, one request at a time (client wall time: request, generator, PNG, base64, JSON parse)")
    print("| N | median ms | min ms | max ms | generator+PNG median ms |")
    print("|---|---|---|---|---|")
    for n in [int(x) for x in a.sizes.split(",")]:
        post(a.url, {"text": a.text, "seed": 999, "n": n}, a.timeout)  # warm-up
        walls, inner = [], []
        for i in range(a.repeat):
            wall, answer = post(a.url, {"text": a.text, "seed": i, "n": n}, a.timeout)
            assert len(answer["images"]) == n
            walls.append(wall * 1e3)
            inner.append(answer["milliseconds"])
        print(f"| {n} | {statistics.median(walls):.1f} | {min(walls):.1f} | {max(walls):.1f} | {statistics.median(inner):.1f} |")

    lat, errors, lock = [], [], threading.Lock()

    def client(k):
        for i in range(a.requests):
            try:
                wall, answer = post(a.url, {"text": a.text, "seed": 1000 * k + i, "n": a.load_n}, a.timeout)
                assert len(answer["images"]) == a.load_n
                with lock:
                    lat.append(wall * 1e3)
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.perf_counter() - t0
    done = len(lat)
    lat.sort()
    print(f"\nload: {a.clients} clients x {a.requests} requests of N = {a.load_n}")
    print(f"{done} answered, {len(errors)} failed in {secs:.2f} s: {done / secs:.1f} requests/s, {done * a.load_n / secs:.0f} images/s")
    if lat:
        print(f"latency under load: median {statistics.median(lat):.1f} ms, p90 {lat[int(0.9 * (len(lat) - 1))]:.1f} ms, max {lat[-1]:.1f} ms")
    if errors:
        print("errors:", errors[:5])
        raise SystemExit(1)


if __name__ == "__main__":
    main()
