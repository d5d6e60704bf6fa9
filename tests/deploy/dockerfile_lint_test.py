"""Lints deploy/docker/Dockerfile and the build context .dockerignore leaves.

hadolint is not packaged for Debian 12, so this checks the rules of hadolint that apply to this
Dockerfile (DL3002 last USER not root, DL3006/DL3007 pinned tags, DL3009 apt lists removed,
DL3015 --no-install-recommends, DL3022 COPY --from a defined stage, DL3025 JSON ENTRYPOINT/CMD,
DL4006 pipefail) plus the project's own: no stage the cpu target does not need comes before it (the
classic builder would build it); two runtime targets (cpu, cuda) on Debian 12 that carry
a scanctl HEALTHCHECK on the served port, run as the non-root uid the Kubernetes manifests expect,
and copy only the runtime tree; every RUN script passes shellcheck (when installed); and the
.dockerignore allowlist keeps exactly the sources the build needs.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from deploy_testlib import DEPLOY, REPO_ROOT, check, fail  # noqa: E402

DOCKERFILE = sys.argv[1] if len(sys.argv) > 1 else os.path.join(DEPLOY, "docker", "Dockerfile")
RUNTIME_TARGETS = ("cpu", "cuda")
K8S_UID = 10001  # deploy/k8s/base/deployment.yaml runAsUser
GRPC_PORT = 50051


def instructions(path):
    """(keyword, argument text, line) for each instruction, continuations joined."""
    out = []
    pending, start = "", 0
    with open(path) as f:
        for number, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if pending and line.lstrip().startswith("#"):
                continue  # comment lines inside a continued instruction
            if not pending:
                start = number
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            text = (pending + line).strip()
            pending = ""
            keyword, _, rest = text.partition(" ")
            out.append((keyword.upper(), rest.strip(), start))
    check(not pending, "Dockerfile ends inside a continued line")
    return out


class Stage:
    def __init__(self, base, name, line):
        self.base, self.name, self.line = base, name, line
        self.parent = None
        self.user = None
        self.healthcheck = None
        self.entrypoint = None
        self.env = {}
        self.expose = []
        self.shell_pipefail = False
        self.copies = []  # (from_stage or None, args)
        self.runs = []  # (script, line)

    def effective(self, attr):
        stage = self
        while stage is not None:
            value = getattr(stage, attr)
            if value:
                return value
            stage = stage.parent
        return None

    def effective_env(self):
        env = {}
        chain = []
        stage = self
        while stage is not None:
            chain.append(stage)
            stage = stage.parent
        for s in reversed(chain):
            env.update(s.env)
        return env


def parse(path):
    global_args = {}
    stages = []
    for keyword, rest, line in instructions(path):
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            global_args[name] = default
            continue
        if keyword == "FROM":
            m = re.match(r"^(\S+)(?:\s+AS\s+(\S+))?$", rest, re.IGNORECASE)
            check(m, f"line {line}: cannot parse FROM {rest}")
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)",
                          lambda v: global_args.get(v.group(1) or v.group(2), ""), m.group(1))
            stage = Stage(base, m.group(2), line)
            stage.parent = next((s for s in stages if s.name == base), None)
            stages.append(stage)
            continue
        check(stages, f"line {line}: {keyword} before the first FROM")
        stage = stages[-1]
        if keyword == "USER":
            stage.user = rest
        elif keyword == "HEALTHCHECK":
            stage.healthcheck = (rest, line)
        elif keyword in ("ENTRYPOINT", "CMD"):
            check(rest.startswith("["), f"line {line}: {keyword} must use the JSON form (DL3025)")
            json.loads(rest)
            if keyword == "ENTRYPOINT":
                stage.entrypoint = json.loads(rest)
        elif keyword == "ENV":
            for item in shlex.split(rest):
                k, _, v = item.partition("=")
                stage.env[k] = v
        elif keyword == "EXPOSE":
            stage.expose += [int(p.split("/")[0]) for p in rest.split()]
        elif keyword == "SHELL":
            shell = json.loads(rest)
            stage.shell_pipefail = "pipefail" in shell
        elif keyword in ("COPY", "ADD"):
            m = re.search(r"--from=(\S+)", rest)
            stage.copies.append((m.group(1) if m else None, rest, keyword, line))
        elif keyword == "RUN":
            stage.runs.append((rest, line))
    return global_args, stages


def lint_runs(stage, all_stages):
    for script, line in stage.runs:
        where = f"line {line} (stage {stage.name})"
        if re.search(r"(?<!\|)\|(?!\|)", script):
            pipefail = any(s.shell_pipefail for s in chain(stage))
            check(pipefail, f"{where}: a RUN with a pipe needs SHELL [..., '-o', 'pipefail'] (DL4006)")
        if "apt-get install" in script:
            check(re.search(r"apt-get install[^&;]*\s-y\b", script),
                  f"{where}: apt-get install without -y")
            check("--no-install-recommends" in script,
                  f"{where}: apt-get install without --no-install-recommends (DL3015)")
            check("rm -rf /var/lib/apt/lists/*" in script,
                  f"{where}: apt lists are not removed in the same RUN (DL3009)")
            check("apt-get update" in script,
                  f"{where}: apt-get install without apt-get update in the same RUN")
        check(not re.search(r"\bsudo\b", script), f"{where}: sudo in RUN (DL3004)")
        check(not re.search(r"(^|&&|;)\s*cd\s", script), f"{where}: cd in RUN; use WORKDIR (DL3003)")


def chain(stage):
    out = []
    while stage is not None:
        out.append(stage)
        stage = stage.parent
    return out


def shellcheck_runs(stages):
    tool = shutil.which("shellcheck")
    if tool is None:
        print("NOTE: shellcheck is not installed: RUN scripts not shellchecked")
        return
    for stage in stages:
        for script, line in stage.runs:
            with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
                f.write("#!/bin/bash\nset -o pipefail\n" + script + "\n")
            result = subprocess.run([tool, "-s", "bash", f.name], capture_output=True, text=True)
            os.unlink(f.name)
            check(result.returncode == 0,
                  f"line {line} (stage {stage.name}): shellcheck:\n{result.stdout}{result.stderr}")
    print(f"shellcheck: {sum(len(s.runs) for s in stages)} RUN scripts clean")


def dockerignore_patterns():
    patterns = []
    with open(os.path.join(REPO_ROOT, ".dockerignore")) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = os.path.normpath(line.lstrip("!")).lstrip("/")
            regex = ""
            i = 0
            while i < len(pattern):
                if pattern.startswith("**/", i):
                    regex += "(.*/)?"
                    i += 3
                elif pattern.startswith("**", i):
                    regex += ".*"
                    i += 2
                elif pattern[i] == "*":
                    regex += "[^/]*"
                    i += 1
                elif pattern[i] == "?":
                    regex += "[^/]"
                    i += 1
                else:
                    regex += re.escape(pattern[i])
                    i += 1
            patterns.append((re.compile("^" + regex + "$"), negated))
    return patterns


def in_context(relpath, patterns):
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = relpath.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for regex, negated in patterns:
        if any(regex.match(p) for p in prefixes):
            excluded = not negated
    return not excluded


def check_context():
    patterns = dockerignore_patterns()
    files = []
    for root, dirs, names in os.walk(REPO_ROOT):
        rel_root = os.path.relpath(root, REPO_ROOT)
        if rel_root == ".":
            dirs[:] = [d for d in dirs if d != ".git"]
        for n in names:
            files.append(os.path.normpath(os.path.join(rel_root, n)))
    kept = {f for f in files if in_context(f, patterns)}
    # What the CPU and CUDA builds read with tests and benchmarks off.
    needed_dirs = ("proto", "kernels", "server", "client")
    for f in files:
        top = f.split("/")[0]
        if top in needed_dirs and not re.match(r"[^/]+/build", f):
            check(f in kept, f".dockerignore drops {f}, which the image build needs")
    for f in ("CMakeLists.txt", "scripts/deploy_runtime_tree.sh"):
        check(f in kept, f".dockerignore drops {f}, which the image build needs")
    for f in kept:
        top = f.split("/")[0]
        check(top not in ("tests", "bench", "docs", "deploy", ".git", ".ci") and
              not top.startswith("build"), f".dockerignore lets {f} into the build context")
    print(f".dockerignore: {len(kept)} of {len(files)} files in the build context")


def main():
    global_args, stages = parse(DOCKERFILE)
    names = [s.name for s in stages if s.name]
    check(len(names) == len(set(names)), f"duplicate stage names {names}")

    # Pinned bases: Debian 12 point releases, never latest or untagged (DL3006, DL3007).
    for stage in stages:
        if stage.parent is not None:
            continue
        image = stage.base
        check(":" in image and not image.endswith(":latest"),
              f"line {stage.line}: base image '{image}' is not pinned to a tag (DL3006/DL3007)")
        check(re.match(r"^debian:12\.\d+(-slim)?$", image),
              f"line {stage.line}: base image '{image}' is not a pinned Debian 12 point release")

    # COPY --from names an earlier stage (DL3022); runtime targets copy only the runtime tree.
    for index, stage in enumerate(stages):
        earlier = [s.name for s in stages[:index]]
        for source, args, keyword, line in stage.copies:
            if source is not None:
                check(source in earlier, f"line {line}: COPY --from={source} is no earlier stage")
        lint_runs(stage, stages)

    by_name = {s.name: s for s in stages}
    for target in RUNTIME_TARGETS:
        check(target in by_name, f"no '{target}' stage (compose.yaml and the overlays build it)")
        stage = by_name[target]
        check(not any(s.base.startswith("build") for s in chain(stage)) and
              all(s.parent is not None or s.base.startswith("debian:") for s in chain(stage)),
              f"stage {target} must derive from the slim runtime base, not a build stage")
        for s in chain(stage):
            for source, args, keyword, line in s.copies:
                check(source is not None and args.endswith("/rootfs/ /"),
                      f"line {line}: runtime stage {s.name} copies '{args}', not the runtime tree")
        user = stage.user
        check(user is not None, f"stage {target} sets no USER (DL3002)")
        uid = user.split(":")[0]
        check(uid not in ("root", "0"), f"stage {target} runs as root (DL3002)")
        check(uid == str(K8S_UID), f"stage {target} runs as {uid}; the manifests expect {K8S_UID}")
        hc = stage.effective("healthcheck")
        check(hc is not None, f"stage {target} has no HEALTHCHECK")
        m = re.search(r"CMD\s+(\[.*\])", hc[0])
        check(m, f"line {hc[1]}: HEALTHCHECK must use CMD in JSON form")
        command = json.loads(m.group(1))
        check(command[0].endswith("/scanctl") and command[1] == "health",
              f"line {hc[1]}: HEALTHCHECK must run scanctl health, runs {command}")
        targets = [a for a in command if a.startswith("--target=")]
        check(targets and targets[0].endswith(f":{GRPC_PORT}"),
              f"line {hc[1]}: HEALTHCHECK must probe the gRPC port {GRPC_PORT}: {command}")
        expose = stage.effective("expose") or []
        check(GRPC_PORT in expose, f"stage {target} does not EXPOSE {GRPC_PORT}")
        entry = stage.effective("entrypoint")
        check(entry and entry[0] == "/opt/scanserve/bin/scanserve_server",
              f"stage {target}: ENTRYPOINT {entry} is not the server of the runtime tree")
    cuda_env = by_name["cuda"].effective_env()
    check("compute" in cuda_env.get("NVIDIA_DRIVER_CAPABILITIES", ""),
          "the cuda stage must ask the NVIDIA container toolkit for the compute capability")
    # The classic builder (docker without buildx) builds every stage before the target: a stage
    # the cpu image does not need, placed before it, would make `--target cpu` run it too (and
    # the CUDA build stage downloads from NVIDIA's repository).
    needed = set()
    pending = ["cpu"]
    while pending:
        stage = by_name.get(pending.pop())
        if stage is None or stage.name in needed:
            continue
        needed.add(stage.name)
        pending += [s.name for s in chain(stage)[1:]]
        pending += [source for source, _, _, _ in stage.copies if source is not None]
    before = [s.name for s in stages[:stages.index(by_name["cpu"])]]
    extra = [name for name in before if name not in needed]
    check(not extra, f"stages {extra} come before 'cpu' but it does not need them: the classic "
          f"builder would build them for --target cpu")

    build_cuda = [s for s in stages if any("--static-cudart" in r for r, _ in s.runs)]
    check(build_cuda, "no build stage checks that the CUDA runtime is linked statically")

    shellcheck_runs(stages)
    check_context()
    print(f"Dockerfile: {len(stages)} stages ({', '.join(names)}) lint clean")


if __name__ == "__main__":
    main()
