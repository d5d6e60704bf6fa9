"""Shared helpers of the deploy tests: skipping, free ports, server processes, HTTP, metrics text.

Standard library only. A test that cannot run because a tool is missing calls skip(), which
prints the reason and exits with SKIP_CODE (ctest's SKIP_RETURN_CODE for these tests).
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

SKIP_CODE = 77
REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(REPO_ROOT, "deploy")


def skip(reason):
    print(f"SKIPPED: {reason}", flush=True)
    sys.exit(SKIP_CODE)


def fail(message):
    print(f"FAILED: {message}", flush=True)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def require_tool(name):
    path = shutil.which(name)
    if path is None:
        skip(f"'{name}' is not installed (PATH={os.environ.get('PATH', '')})")
    return path


def free_port():
    """A TCP port nothing listens on right now (the kernel's pick for port 0 on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode("utf-8")


def wait_until(predicate, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, urllib.error.URLError, ValueError) as e:
            last_error = e
        time.sleep(interval)
    fail(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text exposition -> list of (name, {label: value}, float)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ValueError(f"unparsable metrics line: {line!r}")
        labels = dict(_LABEL.findall(m.group(3) or ""))
        samples.append((m.group(1), labels, float(m.group(4))))
    return samples


def metric_value(samples, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(v for n, l, v in samples
               if n == name and all(l.get(k) == str(x) for k, x in labels.items()))


class Server:
    """A scanserve_server child process on loopback ports chosen here.

    Its arguments: leading_flags, then the loopback address and ports, then extra_flags (absl
    lets a later flag override an earlier one, including one read from a --flagfile).
    """

    def __init__(self, binary, extra_flags=(), port=None, metrics_port=None, env=None,
                 log_dir=None, leading_flags=()):
        self.port = port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.args = [binary, *leading_flags, "--host=127.0.0.1", f"--port={self.port}",
                     f"--metrics_address=127.0.0.1:{self.metrics_port}", *extra_flags]
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="scanserve-deploy-")
        self.log_path = os.path.join(self.log_dir, f"server-{self.port}.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env)

    @property
    def target(self):
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_url(self):
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_ready(self, timeout=60.0):
        def ready():
            if self.proc.poll() is not None:
                fail(f"server exited with {self.proc.returncode} before it was ready; "
                     f"args {self.args}; log:\n{self.log()}")
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                pass
            return "scanserve_requests_total" in http_get(self.metrics_url, timeout=2)
        wait_until(ready, timeout, f"server {self.target} to listen and serve /metrics")

    def metrics(self):
        return parse_metrics(http_get(self.metrics_url))

    def terminate(self, timeout=60.0):
        """SIGTERM, then the exit code (SIGKILL and failure when it does not exit in time)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            fail(f"server {self.target} did not exit within {timeout}s of SIGTERM; "
                 f"log:\n{self.log()}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
