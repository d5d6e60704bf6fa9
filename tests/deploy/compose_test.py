"""deploy/compose.yaml brought up by docker compose: the scanserve:cpu image, Prometheus and the
blackbox exporter, with compose.yaml's own commands, mounts, network and published ports.

- Prometheus (in its container) scrapes the server over the compose network and probes its gRPC
  health through the blackbox exporter: both targets up, probe_success 1;
- requests sent with scanctl to the published gRPC port show up in Prometheus as
  scanserve_requests_total, and every query of the Grafana dashboard is valid there;
- the alert rules are loaded and none fires;
- `compose stop` drains the server: its container exits with status 0.

Where the registry images are not there, deploy/compose.offline.yaml is added: it names the
local stand-ins of scripts/deploy_monitoring_standins.sh (Debian's prometheus and blackbox
exporter). Grafana is left out: it has neither a Debian package nor a reachable image here, so
the dashboard is checked through its queries only.

The test builds nothing. Skipped (exit 77) without docker compose (v2 plugin or Debian's
docker-compose), a docker daemon, the images, or with host ports 50051 or 9090 taken.

usage: compose_test.py SCANCTL
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from deploy_testlib import DEPLOY, check, fail, http_get, skip, wait_until  # noqa: E402

try:
    import yaml
except ImportError:
    skip("python3-yaml is not installed (Debian package python3-yaml)")

SERVICES = ("scanserve", "prometheus", "blackbox")
PROMETHEUS = "http://127.0.0.1:9090"


def compose_command():
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    skip("neither `docker compose` nor docker-compose is installed")


def have_image(name):
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


def port_taken(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def api(path, **params):
    url = f"{PROMETHEUS}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    body = json.loads(http_get(url))
    check(body.get("status") == "success", f"{url}: {body}")
    return body["data"]


def query(expr):
    return [(r["metric"], float(r["value"][1])) for r in api("query", query=expr)["result"]]


def main():
    if len(sys.argv) != 2:
        fail("usage: compose_test.py SCANCTL")
    scanctl = sys.argv[1]
    compose = compose_command()
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        skip("no docker daemon answers (docker info failed)")
    with open(os.path.join(DEPLOY, "compose.yaml")) as f:
        spec = yaml.safe_load(f)
    if not have_image(spec["services"]["scanserve"]["image"]):
        skip(f"image {spec['services']['scanserve']['image']} is not built "
             f"(scripts/deploy_images.sh)")
    files = [os.path.join(DEPLOY, "compose.yaml")]
    pinned = [spec["services"][s]["image"] for s in ("prometheus", "blackbox")]
    if not all(have_image(image) for image in pinned):
        offline = os.path.join(DEPLOY, "compose.offline.yaml")
        with open(offline) as f:
            standins = [s["image"] for s in yaml.safe_load(f)["services"].values()]
        missing = [image for image in standins if not have_image(image)]
        if missing:
            skip(f"neither {pinned} nor the stand-ins {missing} are there "
                 f"(scripts/deploy_monitoring_standins.sh)")
        files.append(offline)
        print(f"{pinned} are not there; adding compose.offline.yaml ({standins})")
    for port in (50051, 9090):
        if port_taken(port):
            skip(f"host port {port}, which compose.yaml publishes, is in use")

    project = f"scanserve-test-{os.getpid()}"
    base = [*compose, "-p", project]
    for path in files:
        base += ["-f", path]

    def run(*args, timeout=180):
        result = subprocess.run([*base, *args], capture_output=True, text=True, timeout=timeout)
        check(result.returncode == 0,
              f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result.stdout

    try:
        start = time.monotonic()
        run("up", "-d", "--no-build", *SERVICES)
        print(f"compose up ({' '.join(SERVICES)}): {time.monotonic() - start:.1f}s")

        def targets_up():
            active = api("targets")["activeTargets"]
            health = {t["labels"]["job"]: t["health"] for t in active}
            return health if health == {"scanserve": "up", "scanserve-health": "up"} else None
        health = wait_until(targets_up, 90, "Prometheus to scrape both targets", interval=1)
        print(f"Prometheus targets: {health}")
        check(query('probe_success{job="scanserve-health"}')[0][1] == 1,
              "the gRPC health probe does not report SERVING")

        runs = [["--op=linear_scan", "--shape=2,16,512", "--with=b,c,h0"],
                ["--op=selective_scan", "--shape=1,32,256", "--with=D,z,delta_bias"],
                ["--op=associative_scan", "--shape=2,4,300", "--operator=max"]]
        for args in runs:
            result = subprocess.run([scanctl, "run", "--target=127.0.0.1:50051", *args,
                                     "--verify"], capture_output=True, text=True, timeout=120)
            check(result.returncode == 0 and result.stdout.strip().endswith("PASS"),
                  f"scanctl run {args}: {result.stdout}{result.stderr}")

        def counted():
            r = query('sum(scanserve_requests_total{job="scanserve", code="OK"})')
            return r and r[0][1] == len(runs)
        wait_until(counted, 60, f"Prometheus to count {len(runs)} OK requests", interval=1)
        print(f"Prometheus counts the {len(runs)} requests sent to the published port")

        with open(os.path.join(DEPLOY, "grafana", "dashboards", "scanserve.json")) as f:
            dashboard = json.load(f)
        exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
        for expr in exprs:
            expr = (expr.replace("$__rate_interval", "1m").replace('"$job"', '"scanserve"')
                    .replace('"$instance"', '".*"'))
            api("query", query=expr)
        print(f"dashboard: {len(exprs)} queries valid on the compose Prometheus")

        groups = api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        check(rules and all(r["health"] == "ok" for r in rules),
              f"alert rules not loaded or unhealthy: {[(r['name'], r['health']) for r in rules]}")
        firing = [a for a in api("alerts")["alerts"] if a["state"] == "firing"]
        check(not firing, f"alerts fire on a healthy stack: {firing}")
        print(f"alert rules: {len(rules)} loaded, none firing")

        container = run("ps", "-q", "scanserve").strip()
        start = time.monotonic()
        run("stop", "scanserve")
        state = json.loads(subprocess.run(["docker", "inspect", "--format", "{{json .State}}",
                                           container], capture_output=True, text=True).stdout)
        check(state["ExitCode"] == 0, f"scanserve exited {state['ExitCode']} on compose stop")
        print(f"compose stop: scanserve exit 0 after {time.monotonic() - start:.1f}s")
    finally:
        subprocess.run([*base, "down", "-v", "--remove-orphans"], capture_output=True,
                       timeout=180)
    print("compose OK")


if __name__ == "__main__":
    main()
