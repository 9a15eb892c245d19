"""The bubblewrap command line of one fork server: what the sandbox sees of the host.

Read-only /usr, /etc and the interpreter; a private /tmp; no network, IPC, UTS or pid
namespace shared with the host; site-packages hidden and dangerous extension files masked
(docs/SANDBOX.md, "Isolation").
"""

from __future__ import annotations

import functools
import glob
import json
import os
import sys
from pathlib import Path

from astor_core.sandbox.config import SandboxConfig

HARNESS_DIR = Path(__file__).resolve().parent
"""Directory holding _harness.py and _checkrewrite.py (bound read-only at /astor)."""
SANDBOX_HARNESS_DIR = "/astor"
SERVER_CAPS = (
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_CHOWN",
    "CAP_KILL",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
)
"""Capabilities the (trusted) fork server keeps inside the sandbox; job children drop all."""


def uid_for(config: SandboxConfig, slot: int) -> int:
    return config.uid_base + (os.getpid() % (1 << 20)) * 64 + slot % 64


@functools.lru_cache(maxsize=8)
def _python_dirs(prefix: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(extension directories to scan for masked files, package directories to hide)."""
    stdlibs = glob.glob(os.path.join(prefix, "lib", "python3*")) + glob.glob("/usr/lib/python3*")
    stdlibs += glob.glob("/usr/local/lib/python3*")
    dynload = tuple(
        d for d in (os.path.join(s, "lib-dynload") for s in stdlibs) if os.path.isdir(d)
    )
    hidden = [os.path.join(s, n) for s in stdlibs for n in ("site-packages", "dist-packages")]
    return dynload, tuple(sorted(d for d in hidden if os.path.isdir(d)))


def _masked_files(config: SandboxConfig, prefix: str) -> list[str]:
    dynload, _ = _python_dirs(prefix)
    found: set[str] = set()
    for root in dynload:
        for pattern in config.masked_file_globs:
            found.update(glob.glob(os.path.join(root, pattern)))
    return sorted(p for p in found if os.path.isfile(p))


def bwrap_argv(config: SandboxConfig, python: str, settings: dict, privileged: bool) -> list[str]:
    """The bubblewrap command line for one fork server."""
    prefix = os.path.realpath(sys.base_prefix)
    argv = [config.bwrap_path, "--die-with-parent", "--new-session", "--unshare-pid"]
    argv += ["--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    argv += ["--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8"]
    if privileged:
        argv += ["--cap-drop", "ALL"]
        for cap in SERVER_CAPS:
            argv += ["--cap-add", cap]
    else:
        argv += ["--unshare-user"]
    argv += ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    covered = ("/usr/", "/etc/", "/bin/", "/lib/", "/lib64/", "/sbin/")
    for path in dict.fromkeys([prefix, os.path.dirname(python)]):
        if (path + "/").startswith(covered):
            continue
        parts = Path(path).parts
        for i in range(2, len(parts)):
            argv += ["--perms", "0755", "--dir", str(Path(*parts[:i]))]
        argv += ["--ro-bind", path, path]
    argv += ["--ro-bind", str(HARNESS_DIR), SANDBOX_HARNESS_DIR]
    argv += ["--dev", "/dev", "--size", str(config.tmpfs_mb * 1024 * 1024)]
    argv += ["--perms", "0755", "--tmpfs", "/tmp"]
    for path in _python_dirs(prefix)[1]:  # third-party packages are not part of the sandbox
        argv += ["--size", str(1024 * 1024), "--perms", "0755", "--tmpfs", path]
    for path in _masked_files(config, prefix):
        argv += ["--ro-bind", "/dev/null", path]
    argv += [python, "-I", "-S", f"{SANDBOX_HARNESS_DIR}/_harness.py", json.dumps(settings)]
    return argv
