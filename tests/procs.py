"""Run a command in its own process session with a hard timeout, and reap everything it left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment minus DDP/W&B leftovers, plus this folder on PYTHONPATH (test callbacks)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "MASTER_ADDR", "LOCAL_RANK", "NODE_RANK",
                                                             "WORLD_SIZE", "RANK", "WANDB_MODE")}  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH", "")]))
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run(args: list[str], cwd: Path, timeout: float, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``args`` run as ``python -m psn_zoo.cli ...``-style command lists; never outlives ``timeout``."""
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"timed out after {timeout} s:\n{out[-4000:]}") from None
    finally:
        with contextlib.suppress(ProcessLookupError):  # DDP ranks or W&B services the command left behind
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def wandb_env(tmp: Path) -> dict[str, str]:
    """An environment with no W&B credentials and every W&B folder inside ``tmp``."""
    env = clean_env(NETRC=str(tmp / "no-netrc"), WANDB_DISABLE_GIT="true", WANDB_DISABLE_CODE="true")
    env.pop("WANDB_API_KEY", None)
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        env[var] = str(tmp / "wandb-home")
    return env
