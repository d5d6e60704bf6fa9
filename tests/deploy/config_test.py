"""deploy/compose*.yaml, deploy/prometheus and deploy/grafana agree with each other and with the
server's flags as the Kubernetes base sets them (deploy/k8s/base/common.flags, which compose
mounts too):
- compose builds the Dockerfile's targets from the repository root, mounts only files that
  exist, publishes the gRPC port of the flags, pins every image it pulls, and gives the server
  at least --shutdown_grace + --drain_timeout to stop;
- Prometheus scrapes the server's metrics port and probes its gRPC port through the blackbox
  exporter with a module blackbox.yml defines, and loads the alert rules from where compose
  mounts them;
- Grafana's data source is the Prometheus service, and its dashboard provider reads the folder
  compose mounts the dashboard into;
- the dashboard covers every metric the server exports, with p50/p90/p99, on a valid grid.

Skipped (exit 77) when python3-yaml is missing.
"""

import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(__file__))
from deploy_testlib import DEPLOY, REPO_ROOT, check, skip  # noqa: E402

try:
    import yaml
except ImportError:
    skip("python3-yaml is not installed (Debian package python3-yaml)")

METRICS = ("scanserve_requests_total", "scanserve_request_duration_seconds",
           "scanserve_queue_wait_seconds", "scanserve_execution_seconds",
           "scanserve_batch_requests", "scanserve_batch_rows", "scanserve_queue_depth",
           "scanserve_received_bytes_total", "scanserve_sent_bytes_total",
           "scanserve_backend_info", "scanserve_device_memory_used_bytes")


def load(path):
    with open(os.path.join(DEPLOY, path)) as f:
        return yaml.safe_load(f)


def flags():
    out = {}
    with open(os.path.join(DEPLOY, "k8s", "base", "common.flags")) as f:
        for line in f:
            m = re.match(r"^--(\w+)=(.*)$", line.strip())
            if m:
                out[m.group(1)] = m.group(2)
    return out


def seconds(text):
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    check(parts or text == "0", f"cannot read duration {text!r}")
    return sum(float(n) * scale[u] for n, u in parts)


def dockerfile_stages():
    with open(os.path.join(DEPLOY, "docker", "Dockerfile")) as f:
        return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", f.read(), re.MULTILINE | re.IGNORECASE))


def mounts(service):
    """{container path: host path (absolute)} of the service's bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        if host.startswith("."):
            out[container] = os.path.normpath(os.path.join(DEPLOY, host))
    return out


def check_compose(f):
    compose = load("compose.yaml")
    services = compose["services"]
    for name in ("scanserve", "prometheus", "blackbox", "grafana"):
        check(name in services, f"compose.yaml has no service {name}")
    stages = dockerfile_stages()

    server = services["scanserve"]
    build = server["build"]
    check(os.path.normpath(os.path.join(DEPLOY, build["context"])) == REPO_ROOT,
          "compose builds from a context other than the repository root")
    check(os.path.isfile(os.path.join(REPO_ROOT, build["dockerfile"])),
          f"compose's dockerfile {build['dockerfile']} does not exist")
    check(build["target"] in stages, f"compose builds target {build['target']}, not in {stages}")

    for name, service in services.items():
        for container, host in mounts(service).items():
            check(os.path.exists(host), f"compose {name} mounts {host}, which does not exist")
        image = service.get("image", "")
        if name != "scanserve":
            check(re.match(r"^[\w./-]+:v?\d+\.\d+\.\d+$", image),
                  f"compose {name} image {image!r} is not pinned to a release")

    server_mounts = mounts(server)
    flagfiles = [a.split("=", 1)[1] for a in server["command"] if a.startswith("--flagfile=")]
    check(flagfiles, "compose runs the server without the Kubernetes flags file")
    for path in flagfiles[0].split(","):
        check(server_mounts.get(path) == os.path.join(DEPLOY, "k8s", "base", "common.flags"),
              f"compose's --flagfile {path} is not deploy/k8s/base/common.flags")
    published = [p for p in server.get("ports", []) if p.endswith(":" + f["port"])]
    check(published, f"compose does not publish the gRPC port {f['port']}")
    stop = seconds(server["stop_grace_period"])
    needed = seconds(f["shutdown_grace"]) + seconds(f["drain_timeout"])
    check(stop >= needed, f"compose stop_grace_period {stop}s < shutdown_grace + drain {needed}s")

    # The offline override swaps images only: commands, mounts and ports stay compose.yaml's.
    for name, service in load("compose.offline.yaml")["services"].items():
        check(name in services and set(service) == {"image"},
              f"compose.offline.yaml: {name} must be a compose.yaml service with only an image")
    gpu = load("compose.gpu.yaml")["services"]["scanserve"]
    check(gpu["build"]["target"] == "cuda" and "cuda" in stages, "compose.gpu.yaml: not the cuda target")
    check("--backend=cuda" in gpu["command"], "compose.gpu.yaml does not run --backend=cuda")
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    check(any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices),
          "compose.gpu.yaml reserves no NVIDIA GPU")
    return services


def check_prometheus(f, services):
    prom_mounts = mounts(services["prometheus"])
    config_path = prom_mounts.get("/etc/prometheus/prometheus.yml")
    check(config_path == os.path.join(DEPLOY, "prometheus", "prometheus.yml"),
          "compose does not mount deploy/prometheus/prometheus.yml as Prometheus' config")
    config = load("prometheus/prometheus.yml")
    for rule_file in config["rule_files"]:
        mounted = prom_mounts.get(os.path.join("/etc/prometheus", rule_file))
        check(mounted and os.path.isfile(mounted),
              f"rule file {rule_file} is not mounted next to the config")
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    metrics_port = f["metrics_address"].rsplit(":", 1)[1]
    targets = [t for c in jobs["scanserve"]["static_configs"] for t in c["targets"]]
    check(targets == [f"scanserve:{metrics_port}"],
          f"Prometheus scrapes {targets}, the server's metrics are on scanserve:{metrics_port}")
    health = jobs["scanserve-health"]
    probed = [t for c in health["static_configs"] for t in c["targets"]]
    check(probed == [f"scanserve:{f['port']}"], f"the health probe targets {probed}")
    module = health["params"]["module"][0]
    blackbox = load("prometheus/blackbox.yml")
    check(blackbox["modules"][module]["prober"] == "grpc", f"blackbox module {module} is not grpc")
    address = [r["replacement"] for r in health["relabel_configs"]
               if r.get("target_label") == "__address__"]
    check(address and address[0].split(":")[0] in services,
          f"the probe goes through {address}, not a compose service")
    bb_mounts = mounts(services["blackbox"])
    bb_config = [a.split("=", 1)[1] for a in services["blackbox"]["command"]
                 if a.startswith("--config.file=")]
    check(bb_config and bb_mounts.get(bb_config[0]) ==
          os.path.join(DEPLOY, "prometheus", "blackbox.yml"),
          "compose's blackbox exporter does not read deploy/prometheus/blackbox.yml")
    with open(os.path.join(DEPLOY, "prometheus", "alerts.yml")) as fh:
        alerts = fh.read()
    check(f"0.8 * {f['max_queued_requests']}" in alerts,
          f"ScanserveQueueSaturated's threshold is not 80% of --max_queued_requests "
          f"{f['max_queued_requests']}")


def check_grafana(services):
    grafana_mounts = mounts(services["grafana"])
    datasources = load("grafana/provisioning/datasources/prometheus.yaml")["datasources"]
    check(len(datasources) == 1, "expected one provisioned data source")
    url = datasources[0]["url"]
    check(url == "http://prometheus:9090", f"Grafana's data source is {url}")
    provider = load("grafana/provisioning/dashboards/scanserve.yaml")["providers"][0]
    folder = provider["options"]["path"]
    check(grafana_mounts.get(folder) == os.path.join(DEPLOY, "grafana", "dashboards"),
          f"the dashboard provider reads {folder}, compose mounts the dashboards elsewhere")
    check(grafana_mounts.get("/etc/grafana/provisioning") ==
          os.path.join(DEPLOY, "grafana", "provisioning"), "provisioning folder not mounted")
    home = services["grafana"]["environment"].get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH", "")
    check(home.startswith(folder + "/") and
          os.path.isfile(os.path.join(DEPLOY, "grafana", "dashboards", os.path.basename(home))),
          f"home dashboard {home} is not a provisioned file")


def check_dashboard():
    with open(os.path.join(DEPLOY, "grafana", "dashboards", "scanserve.json")) as fh:
        dashboard = json.load(fh)
    check(dashboard.get("uid") and dashboard.get("title"), "dashboard needs a uid and a title")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    check(variables.get("datasource", {}).get("type") == "datasource",
          "dashboard has no data source variable")
    ids = [p["id"] for p in dashboard["panels"]]
    check(len(ids) == len(set(ids)), "duplicate panel ids")
    cells = set()
    exprs = []
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        check(g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0,
              f"panel {panel['title']} is off the 24-column grid")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                check((x, y) not in cells, f"panel {panel['title']} overlaps another at {(x, y)}")
                cells.add((x, y))
        if panel["type"] == "row":
            continue
        check(panel.get("targets"), f"panel {panel['title']} has no query")
        for t in panel["targets"]:
            check(t["datasource"]["uid"] == "${datasource}",
                  f"panel {panel['title']} does not use the data source variable")
            check('job=~"$job"' in t["expr"] and 'instance=~"$instance"' in t["expr"],
                  f"panel {panel['title']} ignores the job/replica selection: {t['expr']}")
            exprs.append(t["expr"])
    text = "\n".join(exprs)
    for metric in METRICS:
        check(re.search(rf"\b{metric}(_bucket|_sum|_count)?\{{", text),
              f"no dashboard panel shows {metric}")
    for q in ("0.5", "0.9", "0.99"):
        check(f"histogram_quantile({q}, sum by (op, le) "
              f"(rate(scanserve_request_duration_seconds_bucket" in text,
              f"no p{q} request latency by op")
    used = set(re.findall(r"\b(scanserve_\w+?)(?:_bucket|_sum|_count)?\{", text))
    unknown = used - set(METRICS)
    check(not unknown, f"dashboard queries metrics the server does not export: {unknown}")
    print(f"dashboard: {len(dashboard['panels'])} panels, {len(exprs)} queries over "
          f"{len(used)} metrics")


def main():
    f = flags()
    for name in ("port", "metrics_address", "shutdown_grace", "drain_timeout",
                 "max_queued_requests"):
        check(name in f, f"common.flags sets no --{name}")
    services = check_compose(f)
    check_prometheus(f, services)
    check_grafana(services)
    check_dashboard()
    print("compose, Prometheus and Grafana configuration consistent")


if __name__ == "__main__":
    main()
