"""The built scanserve:cpu image, run by docker the way deploy/compose.yaml and the Kubernetes base
run it: read-only root filesystem, all capabilities dropped, the base's flag file mounted.

- the image's metadata: user 10001 (the manifests' runAsUser), ENTRYPOINT the server of the
  runtime tree, HEALTHCHECK `scanctl health` on the gRPC port, ports 50051 and 9090 exposed;
- the running container: the server runs as uid 10001, docker's HEALTHCHECK turns the container
  healthy, `scanctl health` and `scanctl run --verify` (the image's own scanctl and the host's)
  answer SERVING and PASS, /metrics counts the requests with backend cpu;
- `docker stop` (SIGTERM) drains: the container exits with status 0 within the stop timeout.

The test does not build the image (minutes of compiling: scripts/deploy_images.sh does). It is
skipped (exit 77) when docker is missing, no daemon answers, or the image is not there.

usage: image_test.py SCANCTL [IMAGE]   (IMAGE defaults to scanserve:cpu)
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from deploy_testlib import (DEPLOY, check, fail, http_get, metric_value,  # noqa: E402
                            parse_metrics, skip, wait_until)

IMAGE_UID = 10001
GRPC_PORT = 50051
METRICS_PORT = 9090


def docker(*args, timeout=120, ok=True):
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if ok:
        check(result.returncode == 0,
              f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def inspect(name, fmt):
    return json.loads(docker("inspect", "--format", "{{json " + fmt + "}}", name).stdout)


def published(container, port):
    """The host port docker mapped the container's `port` to (bound on 127.0.0.1)."""
    out = docker("port", container, f"{port}/tcp").stdout.split()
    check(out, f"container port {port} is not published")
    return int(out[0].rsplit(":", 1)[1])


def check_image_config(image):
    config = inspect(image, ".Config")
    config = {k: config.get(k) or default for k, default in
              (("User", ""), ("Entrypoint", []), ("Healthcheck", {}), ("ExposedPorts", {}))}
    check(config["User"] in (f"{IMAGE_UID}:{IMAGE_UID}", str(IMAGE_UID)),
          f"image user is {config['User']!r}, the manifests run as {IMAGE_UID}")
    check(config["Entrypoint"] == ["/opt/scanserve/bin/scanserve_server"],
          f"ENTRYPOINT {config['Entrypoint']}")
    test = config["Healthcheck"].get("Test") or []
    check(len(test) > 2 and test[0] == "CMD" and test[1].endswith("/scanctl") and
          test[2] == "health", f"HEALTHCHECK is {test}, not scanctl health")
    check(f"{GRPC_PORT}/tcp" in config["ExposedPorts"] and
          f"{METRICS_PORT}/tcp" in config["ExposedPorts"], f"exposed {config['ExposedPorts']}")
    size = docker("image", "inspect", "--format", "{{.Size}}", image).stdout.strip()
    print(f"{image}: user {config['User']}, healthcheck {' '.join(test[1:])}, "
          f"{int(size) // (1 << 20)} MiB")


def main():
    if len(sys.argv) not in (2, 3):
        fail("usage: image_test.py SCANCTL [IMAGE]")
    scanctl = sys.argv[1]
    image = sys.argv[2] if len(sys.argv) == 3 else "scanserve:cpu"
    if shutil.which("docker") is None:
        skip("docker is not installed")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        skip("no docker daemon answers (docker info failed)")
    if docker("image", "inspect", image, ok=False).returncode != 0:
        skip(f"image {image} is not built (scripts/deploy_images.sh builds it)")
    check_image_config(image)

    flags = os.path.join(DEPLOY, "k8s", "base", "common.flags")
    name = f"scanserve-image-test-{os.getpid()}"
    docker("run", "-d", "--name", name, "--read-only", "--cap-drop=ALL",
           "--security-opt=no-new-privileges",
           "-p", f"127.0.0.1::{GRPC_PORT}", "-p", f"127.0.0.1::{METRICS_PORT}",
           "-v", f"{flags}:/etc/scanserve/common.flags:ro",
           image, "--flagfile=/etc/scanserve/common.flags", "--backend=cpu")
    try:
        grpc_port = published(name, GRPC_PORT)
        metrics_url = f"http://127.0.0.1:{published(name, METRICS_PORT)}/metrics"
        target = f"127.0.0.1:{grpc_port}"

        def healthy():
            state = inspect(name, ".State")
            if not state["Running"]:
                fail(f"container stopped ({state['ExitCode']}):\n{docker('logs', name).stderr}")
            return state["Health"]["Status"] == "healthy"
        start = time.monotonic()
        # HEALTHCHECK runs every 10 s: the first result comes 10 s after start.
        wait_until(healthy, 60, "docker's HEALTHCHECK to report healthy", interval=0.5)
        print(f"HEALTHCHECK healthy after {time.monotonic() - start:.1f}s")

        status = docker("exec", name, "cat", "/proc/1/status").stdout
        uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)", status, re.MULTILINE)
        check(uids and uids.group(1) == uids.group(2) == str(IMAGE_UID),
              f"the server runs as uid {uids and uids.groups()}, not {IMAGE_UID}")
        exe = docker("exec", name, "readlink", "/proc/1/exe").stdout.strip()
        check(exe == "/opt/scanserve/bin/scanserve_server", f"pid 1 is {exe}")

        inside = docker("exec", name, "/opt/scanserve/bin/scanctl", "health",
                        f"--target=127.0.0.1:{GRPC_PORT}").stdout.strip()
        check(inside == "SERVING", f"scanctl health in the container: {inside!r}")
        outside = subprocess.run([scanctl, "health", f"--target={target}"], capture_output=True,
                                 text=True, timeout=30)
        check(outside.returncode == 0 and outside.stdout.strip() == "SERVING",
              f"scanctl health from the host: {outside.stdout}{outside.stderr}")

        runs = [
            ["docker", "exec", name, "/opt/scanserve/bin/scanctl", "run",
             f"--target=127.0.0.1:{GRPC_PORT}", "--op=selective_scan", "--shape=2,32,256",
             "--with=D,z,delta_bias", "--delta_softplus", "--verify"],
            [scanctl, "run", f"--target={target}", "--op=linear_scan", "--shape=2,64,1024",
             "--dtype=bfloat16", "--with=b,c,h0", "--verify"],
            [scanctl, "run", f"--target={target}", "--op=associative_scan", "--shape=3,8,500",
             "--dtype=int32", "--operator=add", "--exclusive", "--verify"],
        ]
        for command in runs:
            result = subprocess.run(command, capture_output=True, text=True, timeout=120)
            check(result.returncode == 0 and result.stdout.strip().endswith("PASS"),
                  f"{' '.join(command)} ({result.returncode}):\n{result.stdout}{result.stderr}")
            print(f"{' '.join(command[:5])} ...: PASS")

        samples = parse_metrics(http_get(metrics_url))
        ok = metric_value(samples, "scanserve_requests_total", code="OK")
        check(ok == len(runs), f"/metrics counts {ok} OK requests, {len(runs)} were sent")
        check(metric_value(samples, "scanserve_backend_info", backend="cpu") == 1,
              "scanserve_backend_info{backend=cpu} is not 1")

        start = time.monotonic()
        docker("stop", "--time", "40", name, timeout=90)
        state = inspect(name, ".State")
        check(state["ExitCode"] == 0 and not state["OOMKilled"],
              f"the server exited {state['ExitCode']} on docker stop:\n"
              f"{docker('logs', name).stderr}")
        logs = docker("logs", name).stderr
        check("draining" in logs and "stopped after" in logs, f"no drain in the log:\n{logs}")
        print(f"docker stop: exit 0 after {time.monotonic() - start:.1f}s (drained)")
    finally:
        docker("rm", "-f", name, ok=False)
    print("image OK")


if __name__ == "__main__":
    main()
