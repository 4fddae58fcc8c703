"""Refuses package installs started by custom-node packs (many run `pip install` at import time).

A Python audit hook (PEP 578) sees every process this interpreter starts (`subprocess.*`,
`os.system`, `os.exec*`, `os.spawn*`, `os.posix_spawn`) and every import. While a bound App does
not allow installs (`--allow-custom-node-installs` off, the default), a command that installs
Python packages (pip/pip3/`python -m pip`, `uv pip install`/`uv add`/`uv sync`, conda/mamba install,
easy_install) and the import of pip's internals (`pip.main([...])` in-process) raise
`InstallRefused` in the calling code, naming the command. Audit hooks cannot be removed, so the
hook is added once per process and asks the binding each time whether it is active.

What it does not prevent (README says so too): a shell script or another program that runs pip
itself (the hook sees only the first command), code that writes into site-packages directly,
downloads and unpacks wheels by hand, or uses ctypes/native code to start processes.
"""
from __future__ import annotations

import logging
import re
import sys

log = logging.getLogger(__name__)

_INSTALL_COMMAND = re.compile(
    r"(^|[\s/\\\"'])(pip[\d.]*(\.exe)?|-m\s+pip|uv(\.exe)?\s+pip|conda|mamba|micromamba)[\"']?\s+install\b"
    r"|(^|[\s/\\\"'])uv(\.exe)?\s+(add|sync)\b|easy_install", re.IGNORECASE)
_PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.system", "os.exec", "os.spawn", "os.posix_spawn"})
_installed = False


class InstallRefused(PermissionError):
    pass


def command_text(event: str, args: tuple) -> str:
    """The command line of a process-starting audit event, as one string."""
    if event == "os.system":
        value = args[0]
    elif event == "subprocess.Popen":  # (executable, args, cwd, env)
        value = args[1] if args[1] is not None else args[0]
    else:  # os.exec / os.spawn / os.posix_spawn: (path, argv, env[, ...])
        value = args[1] if len(args) > 1 and args[1] is not None else args[0]
    if isinstance(value, (bytes, bytearray)):
        value = value.decode(errors="replace")
    if isinstance(value, (list, tuple)):
        value = " ".join(item.decode(errors="replace") if isinstance(item, (bytes, bytearray)) else str(item)
                         for item in value)
    return str(value)


def installs_packages(command: str) -> bool:
    return bool(_INSTALL_COMMAND.search(command))


def _active() -> bool:
    from . import _bound  # read on each event: the hook outlives every App

    return _bound is not None and not getattr(_bound.config, "allow_custom_node_installs", False)


def _hook(event: str, args: tuple) -> None:
    if event in _PROCESS_EVENTS:
        if not _active():
            return
        command = command_text(event, args)
        if installs_packages(command):
            log.error("refused a package install started by custom-node code: %s", command)
            raise InstallRefused(f"installing packages is refused while custom nodes run ({command!r}); start the "
                                 "server with --allow-custom-node-installs to allow it, or install the pack's "
                                 "requirements yourself")
    elif event == "import" and args[0].startswith("pip._internal") and args[0] not in sys.modules and _active():
        raise InstallRefused(f"importing {args[0]} (pip in-process) is refused while custom nodes run; start the "
                             "server with --allow-custom-node-installs to allow it")


def install_hook() -> None:
    global _installed
    if not _installed:
        sys.addaudithook(_hook)
        _installed = True
