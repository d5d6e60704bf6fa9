"""The real Prometheus (Debian's package) scraping a running scanserve_server, with deploy/'s files.

Starts the server on loopback, then Prometheus with deploy/prometheus/prometheus.yml (targets
moved to the loopback ports, intervals shortened) and its alert rules, and the blackbox exporter
with deploy/prometheus/blackbox.yml when it is installed. Sends a known number of requests with
`scanctl bench` and checks through Prometheus' HTTP API:
- the request counters and histograms hold exactly the requests sent, the backend info is cpu;
- every query of the Grafana dashboard and of the prometheus-adapter rules is valid PromQL and
  returns data (the GPU memory panel excepted on the CPU backend);
- every alert rule evaluates without error and none is pending or firing on a healthy server;
- the gRPC health probe reports SERVING, then NOT_SERVING once the server drains (what the
  ScanserveNotServing alert watches), and `up` drops to 0 when the server is gone.

usage: prometheus_test.py SCANSERVE_SERVER SCANCTL
Skipped (exit 77) when prometheus is not installed.
"""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from deploy_testlib import (DEPLOY, Server, check, fail, free_port, http_get,  # noqa: E402
                            require_tool, wait_until)

REQUESTS = 400
SHAPE = "1,16,257"


class Prometheus:
    def __init__(self, work, config_text):
        config = os.path.join(work, "prometheus.yml")
        with open(config, "w") as f:
            f.write(config_text)
        shutil.copy(os.path.join(DEPLOY, "prometheus", "alerts.yml"), work)
        self.log_path = os.path.join(work, "prometheus.log")
        self._log = open(self.log_path, "wb")
        # free_port's pick can be taken by a test running beside this one before Prometheus binds
        # it; Prometheus then exits, and the port answers for someone else. Such a start is
        # retried on another port.
        for _ in range(3):
            self.port = free_port()
            self.proc = subprocess.Popen(
                ["prometheus", f"--config.file={config}",
                 f"--storage.tsdb.path={os.path.join(work, 'data')}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=self._log, stderr=subprocess.STDOUT)
            if self._ready(timeout=60):
                return
        fail(f"Prometheus exited on three ports\n{self.log()}")

    def _ready(self, timeout):
        """True once this process answers /-/ready; False if it exited first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if "Ready" in http_get(f"http://127.0.0.1:{self.port}/-/ready", timeout=2):
                    return True
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        fail(f"Prometheus did not become ready in {timeout}s\n{self.log()}")

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-4000:]

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        body = json.loads(http_get(url))
        check(body.get("status") == "success", f"{url}: {body}")
        return body["data"]

    def query(self, expr):
        """Instant vector result of `expr`: [(labels, value)]."""
        data = self.api("query", query=expr)
        check(data["resultType"] in ("vector", "scalar"), f"{expr}: result type {data}")
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def value_of(prom, expr):
    result = prom.query(expr)
    check(len(result) == 1, f"{expr}: expected one series, got {result}")
    return result[0][1]


def dashboard_queries():
    with open(os.path.join(DEPLOY, "grafana", "dashboards", "scanserve.json")) as f:
        dashboard = json.load(f)
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = (target["expr"].replace("$__rate_interval", "1m")
                    .replace('"$job"', '"scanserve"').replace('"$instance"', '".*"'))
            check("$" not in expr, f"panel {panel['title']}: unresolved variable in {expr}")
            yield panel["title"], expr


def adapter_queries():
    path = os.path.join(DEPLOY, "k8s", "monitoring", "prometheus-adapter-config.yaml")
    with open(path) as f:
        text = f.read()
    series = re.findall(r"seriesQuery: '(\w+)\{", text)
    queries = re.findall(r"metricsQuery: '(.*)'", text)
    names = re.findall(r"\bas: (\w+)", text)
    check(len(series) == len(queries) == len(names) >= 2, f"cannot read the rules of {path}")
    for s, q, n in zip(series, queries, names):
        yield n, (q.replace("<<.Series>>", s).replace("<<.LabelMatchers>>", 'job="scanserve"')
                  .replace("<<.GroupBy>>", "instance"))


def main():
    if len(sys.argv) != 3:
        fail("usage: prometheus_test.py SCANSERVE_SERVER SCANCTL")
    server_binary, scanctl = sys.argv[1:]
    require_tool("prometheus")
    blackbox_binary = shutil.which("prometheus-blackbox-exporter")
    work = tempfile.mkdtemp(prefix="scanserve-prometheus-")
    # A grace long enough for a few probes to see NOT_SERVING while the server still runs.
    server = Server(server_binary, ["--backend=cpu", "--shutdown_grace=8s"], log_dir=work)
    prom = None
    blackbox = None
    try:
        server.wait_ready()
        blackbox_port = free_port()
        if blackbox_binary:
            blackbox = subprocess.Popen(
                [blackbox_binary, f"--config.file={os.path.join(DEPLOY, 'prometheus', 'blackbox.yml')}",
                 f"--web.listen-address=127.0.0.1:{blackbox_port}"],
                stdout=open(os.path.join(work, "blackbox.log"), "wb"), stderr=subprocess.STDOUT)
        else:
            print("NOTE: prometheus-blackbox-exporter is not installed: the NOT_SERVING probe is "
                  "not checked")

        with open(os.path.join(DEPLOY, "prometheus", "prometheus.yml")) as f:
            config = f.read()
        for old in ("scanserve:9090", "scanserve:50051", "blackbox:9115", "15s"):
            check(old in config, f"prometheus.yml no longer mentions {old}; update this test")
        config = (config.replace("scanserve:9090", f"127.0.0.1:{server.metrics_port}")
                  .replace("scanserve:50051", server.target)
                  .replace("blackbox:9115", f"127.0.0.1:{blackbox_port}")
                  .replace("15s", "1s"))
        prom = Prometheus(work, config)
        wait_until(lambda: prom.query('up{job="scanserve"} == 1'), 60,
                   f"Prometheus to scrape the server\n{prom.log() if prom.proc.poll() else ''}",
                   interval=0.5)

        bench = subprocess.run(
            [scanctl, "bench", f"--target={server.target}", "--op=linear_scan",
             f"--shape={SHAPE}", f"--requests={REQUESTS}", "--concurrency=4", "--json",
             "--progress=false"], capture_output=True, text=True, timeout=300)
        check(bench.returncode == 0, f"scanctl bench failed ({bench.returncode}):\n"
              f"{bench.stdout}\n{bench.stderr}")
        report = json.loads(bench.stdout)
        print(f"scanctl bench: {json.dumps(report)[:400]}")
        direct = server.metrics()
        ok_direct = sum(v for n, l, v in direct if n == "scanserve_requests_total" and
                        l.get("op") == "linear_scan" and l.get("code") == "OK")
        check(ok_direct == REQUESTS, f"the server counted {ok_direct} OK requests, sent {REQUESTS}")

        # The counters as Prometheus stored them: exactly the requests sent.
        ok_expr = 'scanserve_requests_total{job="scanserve", op="linear_scan", code="OK"}'
        wait_until(lambda: value_of(prom, ok_expr) == REQUESTS, 30,
                   f"Prometheus to hold {ok_expr} == {REQUESTS}", interval=0.5)
        count = value_of(prom, 'scanserve_request_duration_seconds_count{op="linear_scan"}')
        check(count == REQUESTS, f"request_duration_seconds_count {count} != {REQUESTS}")
        errors = value_of(prom, 'sum(scanserve_requests_total{code!="OK"})')
        check(errors == 0, f"{errors} requests counted with an error code")
        check(value_of(prom, 'scanserve_backend_info{backend="cpu"}') == 1, "backend info")
        received = value_of(prom, "scanserve_received_bytes_total")
        check(received > REQUESTS * 2 * 16 * 257 * 4 * 0.9,
              f"received bytes {received} below the payload sent")
        batched = value_of(prom, 'sum(scanserve_batch_requests_sum{op="linear_scan"})')
        check(batched == REQUESTS, f"batches hold {batched} requests, sent {REQUESTS}")
        print(f"Prometheus: {ok_expr} = {REQUESTS}, received bytes {received:.0f}")

        # Give rate() two samples after the traffic, then run every query deploy/ ships.
        time.sleep(3)
        empty_ok = ("GPU memory used per device",)
        for title, expr in dashboard_queries():
            result = prom.query(expr)
            if title in empty_ok:
                continue
            check(result, f"dashboard panel '{title}' returns nothing: {expr}")
        latency = value_of(prom, next(e for t, e in dashboard_queries() if t == "p99 latency"))
        check(math.isfinite(latency) and 0 < latency < 60, f"dashboard p99 latency {latency}")
        for name, expr in adapter_queries():
            result = prom.query(expr)
            check(result and all(math.isfinite(v) for _, v in result),
                  f"adapter metric {name} has no finite value: {expr} -> {result}")
            print(f"adapter {name}: {result[0][1]}")

        # Every alert rule evaluated without error; none pending or firing on a healthy server.
        def rules_evaluated():
            groups = prom.api("rules")["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return rules if rules and all(r.get("lastEvaluation", "").startswith("2") and
                                          not r["lastEvaluation"].startswith("0001")
                                          for r in rules) else None
        rules = wait_until(rules_evaluated, 30, "every alert rule to be evaluated", interval=0.5)
        for r in rules:
            check(r["health"] == "ok", f"alert {r['name']} does not evaluate: {r.get('lastError')}")
        active = [a for a in prom.api("alerts")["alerts"]]
        check(not active, f"alerts active on a healthy server: {active}")
        print(f"{len(rules)} alert rules evaluate cleanly, none active")

        # Health: SERVING, then NOT_SERVING while the server drains, then the target is down.
        if blackbox:
            wait_until(lambda: prom.query('probe_success{job="scanserve-health"} == 1'), 30,
                       "the gRPC health probe to succeed", interval=0.5)
            server.proc.send_signal(15)
            wait_until(lambda: prom.query('probe_success{job="scanserve-health"} == 0'), 7,
                       "the health probe to report NOT_SERVING during the drain", interval=0.25)
            check(server.proc.poll() is None, "the server exited before the probe saw the drain")
            print("health probe: SERVING, then NOT_SERVING while draining")
        code = server.terminate()
        check(code == 0, f"server exited {code} on SIGTERM:\n{server.log()}")
        wait_until(lambda: prom.query('up{job="scanserve"} == 0'), 30,
                   "up to drop to 0 once the server is gone", interval=0.5)
        print("Prometheus test OK")
    finally:
        server.kill()
        if prom:
            prom.stop()
        if blackbox:
            blackbox.terminate()
            blackbox.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
