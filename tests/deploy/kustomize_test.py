"""deploy/k8s: the overlays render with `kubectl kustomize` and the objects agree with the server.

For each overlay (cpu, gpu):
- the Deployment, headless Service, flags ConfigMap, PodDisruptionBudget, HorizontalPodAutoscaler
  and PodMonitor are there and select the Deployment's pods;
- every flag in the ConfigMap exists in `scanserve_server --helpfull`, and the server starts with
  exactly those flag files (ports moved to free loopback ports) and stops with status 0 on SIGTERM;
- the gRPC probes (startup, readiness, liveness) and the grpc container port are the --port of
  the ConfigMap; the prometheus.io/port annotation, the metrics container port and the
  PodMonitor's port are the port of --metrics_address;
- terminationGracePeriodSeconds covers the preStop sleep + --shutdown_grace + --drain_timeout;
- the pod runs as the non-root uid of the image; the image tag names the Dockerfile target;
- the gpu overlay requests nvidia.com/gpu and runs --backend=cuda, the cpu overlay neither.
deploy/k8s/monitoring: the PrometheusRule carries deploy/prometheus/alerts.yml unchanged, and the
prometheus-adapter rules publish the metrics the HPA asks for, from series the server exports.

usage: kustomize_test.py SCANSERVE_SERVER
Skipped (exit 77) when kubectl or python3-yaml is missing.
"""

import os
import re
import shlex
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from deploy_testlib import DEPLOY, Server, check, fail, require_tool, skip  # noqa: E402

try:
    import yaml
except ImportError:
    skip("python3-yaml is not installed (Debian package python3-yaml)")

K8S = os.path.join(DEPLOY, "k8s")
IMAGE_UID = 10001  # deploy/docker/Dockerfile: USER 10001:10001


def kustomize(path):
    result = subprocess.run(["kubectl", "kustomize", path], capture_output=True, text=True)
    check(result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}")
    return [o for o in yaml.safe_load_all(result.stdout) if o]


def server_flags(server_binary):
    """{name: default} of every flag `--helpfull` lists."""
    result = subprocess.run([server_binary, "--helpfull"], capture_output=True, text=True)
    text = result.stdout + result.stderr
    flags = {}
    entry = None
    for line in text.splitlines():
        m = re.match(r"^\s+--([A-Za-z0-9_]+) \(", line)
        if m:
            entry = [m.group(1), line]
            flags[entry[0]] = None
        elif entry is not None and line.startswith("      "):
            entry[1] += " " + line.strip()
        if entry is not None:
            d = re.search(r"default: (.*?);\s*$", entry[1])
            if d:
                flags[entry[0]] = d.group(1).strip('"')
    check("port" in flags and "flagfile" in flags,
          f"cannot read flags from {server_binary} --helpfull:\n{text[:2000]}")
    return flags


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|ms|us|ns)")


def seconds(duration):
    """absl duration text ("30s", "1m30s", "500ms", "0") in seconds."""
    if duration in ("0", "0s"):
        return 0.0
    parts = _DURATION.findall(duration)
    check(parts and "".join(n + u for n, u in parts) == duration,
          f"cannot read duration {duration!r}")
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    return sum(float(n) * scale[u] for n, u in parts)


def parse_flag_file(text, name):
    flags = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^--([A-Za-z0-9_]+)=(.*)$", line)
        check(m, f"{name}: not a --flag=value line: {line!r}")
        flags[m.group(1)] = m.group(2)
    return flags


def one(objects, kind, overlay):
    found = [o for o in objects if o["kind"] == kind]
    check(len(found) == 1, f"{overlay}: expected one {kind}, got {len(found)}")
    return found[0]


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def check_overlay(overlay, server_binary, known_flags, adapter_metrics):
    where = f"overlays/{overlay}"
    objects = kustomize(os.path.join(K8S, "overlays", overlay))
    deployment = one(objects, "Deployment", where)
    service = one(objects, "Service", where)
    configmap = one(objects, "ConfigMap", where)
    pdb = one(objects, "PodDisruptionBudget", where)
    hpa = one(objects, "HorizontalPodAutoscaler", where)
    podmonitor = one(objects, "PodMonitor", where)

    template = deployment["spec"]["template"]
    pod_labels = template["metadata"]["labels"]
    pod = template["spec"]
    containers = pod["containers"]
    check(len(containers) == 1, f"{where}: expected one container")
    container = containers[0]
    check(selects(deployment["spec"]["selector"]["matchLabels"], pod_labels),
          f"{where}: the Deployment's selector does not match its pods")
    for name, selector in (("Service", service["spec"]["selector"]),
                           ("PodDisruptionBudget", pdb["spec"]["selector"]["matchLabels"]),
                           ("PodMonitor", podmonitor["spec"]["selector"]["matchLabels"])):
        check(selector and selects(selector, pod_labels),
              f"{where}: the {name} selector {selector} does not select the pods {pod_labels}")
    check(service["spec"].get("clusterIP") == "None", f"{where}: the Service is not headless")
    target = hpa["spec"]["scaleTargetRef"]
    check(target["kind"] == "Deployment" and target["name"] == deployment["metadata"]["name"],
          f"{where}: the HPA scales {target}, not the Deployment")
    for metric in hpa["spec"]["metrics"]:
        check(metric["type"] == "Pods", f"{where}: HPA metric {metric} is not a per-pod metric")
        name = metric["pods"]["metric"]["name"]
        check(name in adapter_metrics,
              f"{where}: the HPA scales on {name}, which the adapter rules do not publish "
              f"({sorted(adapter_metrics)})")

    # The flags: files of the ConfigMap, mounted where --flagfile reads them.
    args = container.get("args", []) + container.get("command", [])[1:]
    flagfile_args = [a for a in args if a.startswith("--flagfile=")]
    check(len(flagfile_args) == 1, f"{where}: expected one --flagfile argument, got {args}")
    mounts = {v["name"]: v["mountPath"] for v in container["volumeMounts"]}
    volume = next(v for v in pod["volumes"] if v.get("configMap", {}).get("name") ==
                  configmap["metadata"]["name"])
    mount_path = mounts[volume["name"]]
    flag_texts = []
    for path in flagfile_args[0].split("=", 1)[1].split(","):
        check(os.path.dirname(path) == mount_path,
              f"{where}: --flagfile {path} is not under the ConfigMap mount {mount_path}")
        key = os.path.basename(path)
        check(key in configmap["data"], f"{where}: the ConfigMap has no {key}")
        flag_texts.append((key, configmap["data"][key]))
    flags = {}
    for key, text in flag_texts:
        flags.update(parse_flag_file(text, key))
    for name in flags:
        check(name in known_flags, f"{where}: flag --{name} does not exist in the server")
    setting = lambda name: flags.get(name, known_flags[name])  # noqa: E731

    # Ports.
    grpc_port = int(setting("port"))
    metrics_port = int(setting("metrics_address").rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    check(ports.get("grpc") == grpc_port, f"{where}: grpc containerPort {ports} != --port {grpc_port}")
    check(ports.get("metrics") == metrics_port,
          f"{where}: metrics containerPort {ports} != --metrics_address port {metrics_port}")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        spec = container.get(probe)
        check(spec is not None and "grpc" in spec, f"{where}: no native gRPC {probe}")
        check(spec["grpc"]["port"] == grpc_port,
              f"{where}: {probe} probes port {spec['grpc']['port']}, the server serves {grpc_port}")
        check(spec["grpc"].get("service", "") == "",
              f"{where}: {probe} asks about service {spec['grpc'].get('service')!r}")
    annotations = template["metadata"].get("annotations", {})
    check(annotations.get("prometheus.io/scrape") == "true", f"{where}: no prometheus.io/scrape")
    check(annotations.get("prometheus.io/port") == str(metrics_port),
          f"{where}: prometheus.io/port {annotations.get('prometheus.io/port')} != {metrics_port}")
    check(annotations.get("prometheus.io/path", "/metrics") == "/metrics",
          f"{where}: prometheus.io/path is not /metrics")
    endpoints = podmonitor["spec"]["podMetricsEndpoints"]
    check(all(e["port"] == "metrics" and e.get("path", "/metrics") == "/metrics" for e in endpoints),
          f"{where}: the PodMonitor does not scrape the metrics port: {endpoints}")
    service_ports = service["spec"]["ports"]
    check(any(p["targetPort"] in ("grpc", grpc_port) and p["port"] == grpc_port
              for p in service_ports),
          f"{where}: the Service does not expose the gRPC port {grpc_port}: {service_ports}")

    # Termination: SIGTERM after preStop, then grace, then drain.
    pre_stop = container["lifecycle"]["preStop"]
    if "exec" in pre_stop:
        command = pre_stop["exec"]["command"]
        check(os.path.basename(command[0]) == "sleep", f"{where}: preStop runs {command}")
        pre_stop_s = seconds(command[1] + ("s" if command[1].isdigit() else ""))
    else:
        pre_stop_s = float(pre_stop["sleep"]["seconds"])
    needed = pre_stop_s + seconds(setting("shutdown_grace")) + seconds(setting("drain_timeout"))
    grace = pod["terminationGracePeriodSeconds"]
    check(grace >= needed,
          f"{where}: terminationGracePeriodSeconds {grace} < preStop {pre_stop_s} + "
          f"shutdown_grace + drain_timeout = {needed}: the kubelet would SIGKILL a draining server")
    check(grace <= needed + 30, f"{where}: terminationGracePeriodSeconds {grace} far above {needed}")

    # Security and image.
    context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    check(context.get("runAsNonRoot") is True, f"{where}: runAsNonRoot is not set")
    check(context.get("runAsUser") == IMAGE_UID, f"{where}: runAsUser is not the image's {IMAGE_UID}")
    check(context.get("readOnlyRootFilesystem") is True, f"{where}: root filesystem is writable")
    image = container["image"]
    backend = setting("backend")
    expected_target = {"cpu": "cpu", "cuda": "cuda"}.get(backend)
    check(expected_target is not None, f"{where}: --backend={backend} (overlays pick cpu or cuda)")
    check(image.endswith(":" + expected_target),
          f"{where}: image {image} is not the Dockerfile's '{expected_target}' target for "
          f"--backend={backend}")

    resources = container.get("resources", {})
    gpus = [resources.get(kind, {}).get("nvidia.com/gpu") for kind in ("limits", "requests")]
    if overlay == "gpu":
        check(backend == "cuda", f"{where}: runs --backend={backend}")
        check(gpus[0] is not None and int(gpus[0]) >= 1,
              f"{where}: no nvidia.com/gpu limit: {resources}")
        check(gpus[1] is None or gpus[1] == gpus[0],
              f"{where}: nvidia.com/gpu request {gpus[1]} != limit {gpus[0]}")
        tolerations = pod.get("tolerations", [])
        check(any(t.get("key") == "nvidia.com/gpu" for t in tolerations),
              f"{where}: no toleration for nvidia.com/gpu taints")
    else:
        check(backend == "cpu", f"{where}: runs --backend={backend}")
        check(gpus == [None, None], f"{where}: the cpu overlay requests GPUs: {resources}")

    # The server itself accepts exactly these flag files.
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for key, text in flag_texts:
            path = os.path.join(tmp, key)
            with open(path, "w") as f:
                f.write(text)
            paths.append(path)
        # Flags after --flagfile win: loopback ports, and the CPU backend where no GPU is.
        extra = ["--backend=cpu"] if backend == "cuda" else []
        started = Server(server_binary, extra, log_dir=tmp,
                         leading_flags=[f"--flagfile={','.join(paths)}"])
        try:
            started.wait_ready()
            text = "\n".join(n for n, _, _ in started.metrics())
            for series in ("scanserve_queue_depth", "scanserve_queue_wait_seconds_bucket"):
                check(series in text, f"the server exports no {series} (adapter rules need it)")
            code = started.terminate()
            check(code == 0, f"{where}: server with the ConfigMap flags exited {code} on SIGTERM:\n"
                  f"{started.log()}")
        finally:
            started.kill()
    print(f"{where}: {len(objects)} objects; flags {sorted(flags)}; grpc {grpc_port}, metrics "
          f"{metrics_port}; grace {grace}s >= {needed}s; image {image}")


def check_monitoring():
    objects = kustomize(os.path.join(K8S, "monitoring"))
    rule = one(objects, "PrometheusRule", "monitoring")
    with open(os.path.join(DEPLOY, "prometheus", "alerts.yml")) as f:
        alerts = yaml.safe_load(f)
    check(rule["spec"] == alerts,
          "monitoring/prometheus-rule.yaml differs from deploy/prometheus/alerts.yml")
    adapter = yaml.safe_load(one(objects, "ConfigMap", "monitoring")["data"]["config.yaml"])
    published = set()
    for r in adapter["rules"]:
        check(re.match(r"^scanserve_\w+\{", r["seriesQuery"]), f"adapter seriesQuery {r}")
        overrides = r["resources"]["overrides"]
        check(overrides["pod"]["resource"] == "pod" and
              overrides["namespace"]["resource"] == "namespace",
              f"adapter rule {r['name']} does not map pod and namespace labels")
        published.add(r["name"]["as"])
    print(f"monitoring: PrometheusRule == alerts.yml; adapter publishes {sorted(published)}")
    return published


def main():
    if len(sys.argv) != 2:
        fail("usage: kustomize_test.py SCANSERVE_SERVER")
    require_tool("kubectl")
    version = subprocess.run(["kubectl", "version", "--client"], capture_output=True, text=True)
    print(version.stdout.strip())
    known = server_flags(sys.argv[1])
    published = check_monitoring()
    for overlay in ("cpu", "gpu"):
        check_overlay(overlay, sys.argv[1], known, published)
    print("kustomize overlays OK")


if __name__ == "__main__":
    main()
