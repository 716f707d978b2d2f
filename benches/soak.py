#!/usr/bin/env python3
"""Soak benchmark for `regsync server` (not part of the test suite).

Runs `regsync server` with a short interval for many cycles against a source registry that
changes every few cycles, garbage-collects the target registry between cycles, then checks the
target against the source. Prints one JSON line: cycles, error counts, and the server's RSS and
open file descriptors at cycle 10 and at the end (a server that stays correct for months keeps
them flat).

What changes, cycle after cycle (every --change-every cycles, in turn):
  * grow:    a new tag in `soak/grow-*` repositories (seed.py --tag-start);
  * retag:   `soak/churn-*` tags flip between two contents (seed.py --generation 0/1), so the
             target's old manifests become untagged and garbage-collection deletes their blobs;
             flipping back needs those blobs again (a run-long "landed" table would lie here);
  * delete:  the newest `soak/grow-*` tag is deleted from the source (by digest).
Every --gc-every cycles the target registry is stopped right after a `Step summary`,
`docker-registry garbage-collect --delete-untagged` runs on its storage, and it is started again
on the same port (tools/../shared/registry/start.sh --keep-data).

Usage (from the project root, after `cargo build --release`):
  python3 benches/soak.py --cycles 300 --interval 2s [--bin target/release/regsync]

Needs the harness in ../shared/registry (start.sh, stop.sh, seed.py, verify.py) and
/usr/bin/docker-registry. Everything listens on 127.0.0.1 and is stopped at the end.
"""

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from urllib.parse import urlparse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def sh(args, env, **kw):
    return subprocess.run(args, env=env, check=True, capture_output=True, text=True, **kw)


def proc_figures(pid):
    """(RSS KiB, open fds) of a live process."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


def delete_tag(base, repo, tag):
    """Delete a source tag by its manifest digest (distribution deletes by digest)."""
    u = urlparse(base)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    accept = ", ".join([
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ])
    c.request("HEAD", f"/v2/{repo}/manifests/{tag}", headers={"Accept": accept})
    r = c.getresponse()
    r.read()
    digest = r.getheader("Docker-Content-Digest")
    if r.status != 200 or not digest:
        return False
    c.request("DELETE", f"/v2/{repo}/manifests/{digest}")
    r = c.getresponse()
    r.read()
    return r.status in (200, 202)


class Server:
    """The regsync server process; its JSON log lines are parsed as they arrive."""

    def __init__(self, bin_path, config, log_path):
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [bin_path, "server", "-c", config, "--logopt", "json"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        self.summaries = []
        self.lock = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.log.write(line)
            try:
                v = json.loads(line)
            except ValueError:
                continue
            if v.get("msg") == "Step summary":
                with self.lock:
                    self.summaries.append(v)
                    self.lock.notify_all()

    def wait_summaries(self, n, timeout):
        end = time.time() + timeout
        with self.lock:
            while len(self.summaries) < n:
                left = end - time.time()
                if left <= 0 or self.proc.poll() is not None:
                    return False
                self.lock.wait(min(left, 1.0))
        return True

    def stop(self):
        self.proc.terminate()
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.reader.join(10)
        self.log.close()
        return code


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/regsync"))
    ap.add_argument("--harness", default=os.path.join(ROOT, "../shared/registry"))
    ap.add_argument("--cycles", type=int, default=300, help="server cycles to run (default 300)")
    ap.add_argument("--interval", default="2s", help="step interval (default 2s)")
    ap.add_argument("--change-every", type=int, default=3, help="change the source every N cycles")
    ap.add_argument("--gc-every", type=int, default=5, help="GC the target every N cycles")
    ap.add_argument("--repos", type=int, default=3, help="repositories per group (default 3)")
    ap.add_argument("--keep", action="store_true", help="keep the state directory")
    args = ap.parse_args()

    state = tempfile.mkdtemp(prefix="regsync-soak-")
    env = dict(os.environ, REGHARNESS_STATE=state)
    h = args.harness
    result = {"bench": "soak", "cycles_asked": args.cycles, "interval": args.interval}
    server = None
    try:
        src = sh(["bash", f"{h}/start.sh", "soak-src"], env).stdout.strip()
        dst_env = dict(line.split("=", 1) for line in
                       sh(["bash", f"{h}/start.sh", "soak-dst", "--env"], env).stdout.split())
        dst, dst_port = dst_env["REG_URL"], dst_env["REG_PORT"]
        seed = ["python3", f"{h}/seed.py", src, "-q", "--layers", "2", "--layer-size", "8KiB",
                "--repos", str(args.repos)]
        # Single-platform images only: distribution 2.8's `garbage-collect --delete-untagged`
        # deletes the untagged child manifests of a tagged index (it marks only tagged
        # manifests), which breaks multi-platform images in any registry it runs on.
        sh(seed + ["--repo-prefix", "soak/stable-", "--tags", "2", "--latest"], env)
        sh(seed + ["--repo-prefix", "soak/churn-", "--tags", "2"], env)
        sh(seed + ["--repo-prefix", "soak/grow-", "--tags", "1"], env)
        shost, dhost = urlparse(src).netloc, urlparse(dst).netloc
        config = os.path.join(state, "regsync.yml")
        repos = [f"soak/{g}-repo-{r:03d}" for g in ("stable", "churn", "grow")
                 for r in range(args.repos)]
        steps = "".join(f"""  - source: {shost}/{repo}
    target: {dhost}/{repo}
    type: repository
""" for repo in repos)
        with open(config, "w") as f:
            f.write(f"""version: 1
creds:
  - registry: {shost}
    tls: disabled
  - registry: {dhost}
    tls: disabled
defaults:
  parallel: 4
  interval: {args.interval}
sync:
{steps}""")
        server = Server(args.bin, config, os.path.join(state, "server.log"))
        # Every step logs one summary per run: the initial pass is the first `nsteps`
        # summaries; cycle k is complete with (k + 1) * nsteps of them.
        nsteps = len(repos)
        if not server.wait_summaries(nsteps, 300):
            raise SystemExit("soak: the server's initial pass did not finish")
        generation, next_tag, gcs, changes = 0, 1, 0, []
        per_cycle_timeout = 120
        for cycle in range(1, args.cycles + 1):
            if not server.wait_summaries((cycle + 1) * nsteps, per_cycle_timeout):
                result["stalled_at_cycle"] = cycle
                break
            if cycle == 10:
                result["rss_kib_cycle10"], result["fds_cycle10"] = proc_figures(server.proc.pid)
            if cycle % args.change_every == 0:
                kind = ("grow", "retag", "delete")[(cycle // args.change_every) % 3]
                if kind == "grow":
                    sh(seed + ["--repo-prefix", "soak/grow-", "--tags", "1",
                               "--tag-start", str(next_tag)], env)
                    next_tag += 1
                elif kind == "retag":
                    generation ^= 1
                    sh(seed + ["--repo-prefix", "soak/churn-", "--tags", "2",
                               "--generation", str(generation)], env)
                elif next_tag > 1:
                    next_tag -= 1
                    for r in range(args.repos):
                        delete_tag(src, f"soak/grow-repo-{r:03d}", f"v{next_tag}")
                changes.append(kind)
            if cycle % args.gc_every == 0:
                # Right after a summary: stop the target, collect, start it on the same port.
                sh(["bash", f"{h}/stop.sh", "soak-dst"], env)
                gc = subprocess.run(["/usr/bin/docker-registry", "garbage-collect",
                                     "--delete-untagged",
                                     os.path.join(state, "soak-dst", "config.yml")],
                                    env=env, capture_output=True, text=True)
                if gc.returncode != 0:
                    result.setdefault("gc_failures", []).append(gc.stderr.strip()[-200:])
                sh(["bash", f"{h}/start.sh", "soak-dst", dst_port, "--keep-data"], env)
                gcs += 1
        # One more cycle after the last change, so the target can catch up, then the end figures.
        done = len(server.summaries)
        server.wait_summaries(done + 2 * nsteps, per_cycle_timeout)
        result["rss_kib_end"], result["fds_end"] = proc_figures(server.proc.pid)
        summaries = list(server.summaries)
        code = server.stop()
        server = None
        result["exit_code"] = code
        result["steps"] = nsteps
        result["cycles"] = len(summaries) // nsteps - 1
        result["gc_runs"] = gcs
        result["source_changes"] = len(changes)
        result["cycles_with_errors"] = sum(1 for s in summaries if s.get("errors", 0))
        result["errors"] = sum(s.get("errors", 0) for s in summaries)
        # Cycles that ran while the target was down for GC fail by design; the last ones must not.
        result["last_cycle_errors"] = sum(s.get("errors", 0) for s in summaries[-nsteps:])
        v = subprocess.run(["python3", f"{h}/verify.py", f"{src}/soak", f"{dst}/soak", "-q"],
                           env=env, capture_output=True, text=True)
        result["verify"] = "ok" if v.returncode == 0 else v.stdout.strip().splitlines()[:10]
    finally:
        if server is not None:
            server.stop()
        subprocess.run(["bash", f"{h}/stop.sh", "--all"] + ([] if args.keep else ["--purge"]),
                       env=env, capture_output=True)
        result["state_dir"] = state if args.keep else None
        print(json.dumps(result))
    ok = result.get("verify") == "ok" and not result.get("stalled_at_cycle") \
        and result.get("last_cycle_errors") == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
