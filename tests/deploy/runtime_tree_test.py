"""scripts/deploy_runtime_tree.sh: the runtime stage's file tree is complete and runs on its own.

Assembles the tree from the built binaries, then runs the server out of it with a clean
environment and only the tree's lib/ on the loader path, and checks from /proc/PID/maps that
every shared object the running server mapped is either in the tree or one the runtime image's
base (debian slim) provides. The image's HEALTHCHECK command, taken from the Dockerfile and
pointed at the tree, must report SERVING while the server runs and fail once it is gone; SIGTERM
must end the server with status 0.

usage: runtime_tree_test.py SCANSERVE_SERVER SCANCTL
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from deploy_testlib import DEPLOY, REPO_ROOT, Server, check, fail, require_tool  # noqa: E402

# What debian slim has and the tree must not carry: glibc's libraries, libstdc++ and libgcc_s.
BASE_LIBRARY = re.compile(
    r"^(ld-linux.*\.so.*|lib(c|m|mvec|pthread|dl|rt|resolv|util|anl)\.so.*|libnss_.*|"
    r"libstdc\+\+\.so.*|libgcc_s\.so.*)$")
# Libraries the tree must hold for the server to run anywhere (the GPU host has none of them).
REQUIRED = ("libgrpc++.so", "libgrpc.so", "libprotobuf.so", "libabsl_", "libprometheus-cpp-core.so",
            "libprometheus-cpp-pull.so")


def healthcheck_command(tree, port):
    with open(os.path.join(DEPLOY, "docker", "Dockerfile")) as f:
        text = f.read().replace("\\\n", " ")
    m = re.search(r"^HEALTHCHECK\b.*?CMD\s+(\[.*?\])\s*$", text, re.MULTILINE)
    check(m, "Dockerfile has no HEALTHCHECK CMD [...]")
    command = json.loads(m.group(1))
    return [a.replace("/opt/scanserve", tree).replace(":50051", f":{port}") for a in command]


def main():
    if len(sys.argv) != 3:
        fail("usage: runtime_tree_test.py SCANSERVE_SERVER SCANCTL")
    server_binary, scanctl_binary = sys.argv[1:]
    require_tool("ldd")
    work = tempfile.mkdtemp(prefix="scanserve-runtime-tree-")
    rootfs = os.path.join(work, "rootfs")
    tree = os.path.join(rootfs, "opt", "scanserve")
    lib = os.path.join(tree, "lib")
    try:
        result = subprocess.run(
            [os.path.join(REPO_ROOT, "scripts", "deploy_runtime_tree.sh"), "--server",
             server_binary, "--scanctl", scanctl_binary, "--out", rootfs],
            capture_output=True, text=True)
        print(result.stdout, result.stderr)
        check(result.returncode == 0, f"deploy_runtime_tree.sh failed ({result.returncode})")

        for name in ("scanserve_server", "scanctl"):
            check(os.access(os.path.join(tree, "bin", name), os.X_OK), f"bin/{name} missing")
        with open(os.path.join(rootfs, "etc", "ld.so.conf.d", "scanserve.conf")) as f:
            check(f.read().strip() == "/opt/scanserve/lib", "ld.so.conf.d entry is not the lib dir")
        libs = sorted(os.listdir(lib))
        for required in REQUIRED:
            check(any(l.startswith(required) for l in libs), f"lib/ lacks {required}*: {libs}")
        bundled_base = [l for l in libs if BASE_LIBRARY.match(l)]
        check(not bundled_base, f"lib/ carries base-image libraries {bundled_base}")

        # Every library the binaries need resolves from the tree (or is a base library).
        env = {"LD_LIBRARY_PATH": lib, "PATH": "/usr/bin:/bin"}
        for name in ("scanserve_server", "scanctl"):
            out = subprocess.run(["ldd", os.path.join(tree, "bin", name)], env=env,
                                 capture_output=True, text=True, check=True).stdout
            for line in out.splitlines():
                parts = line.split()
                check("not found" not in line, f"{name}: unresolved library: {line.strip()}")
                if len(parts) >= 3 and parts[1] == "=>" and parts[2].startswith("/"):
                    check(parts[2].startswith(lib + "/") or BASE_LIBRARY.match(parts[0]),
                          f"{name}: {parts[0]} resolves outside the tree: {parts[2]}")

        # Run from the tree with nothing of the build environment.
        server = Server(os.path.join(tree, "bin", "scanserve_server"), ["--backend=cpu"], env=env,
                        log_dir=work)
        try:
            server.wait_ready()
            with open(f"/proc/{server.proc.pid}/maps") as f:
                mapped = {line.split()[-1] for line in f if ".so" in line.split()[-1]}
            for path in sorted(mapped):
                check(path.startswith(lib + "/") or BASE_LIBRARY.match(os.path.basename(path)),
                      f"the running server mapped {path}, which is neither in the tree nor in "
                      f"the base image")
            in_tree = [p for p in mapped if p.startswith(lib + "/")]
            print(f"running server mapped {len(mapped)} shared objects, {len(in_tree)} from the "
                  f"tree")

            command = healthcheck_command(tree, server.port)
            health = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
            check(health.returncode == 0,
                  f"HEALTHCHECK {command} failed ({health.returncode}): {health.stdout}"
                  f"{health.stderr}")
            check("SERVING" in health.stdout + health.stderr,
                  f"HEALTHCHECK printed no SERVING: {health.stdout}{health.stderr}")
            print(f"HEALTHCHECK {' '.join(command)}: {health.stdout.strip()}")

            code = server.terminate()
            check(code == 0, f"server from the tree exited {code} on SIGTERM:\n{server.log()}")
        finally:
            server.kill()
        gone = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
        check(gone.returncode != 0, "HEALTHCHECK succeeded with no server running")
        print("runtime tree OK")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
