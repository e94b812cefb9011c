"""Pieces every benchmark script here shares: the TensorFlow peer worker, the machine and load
records. Imported as `_common` (the scripts run as `python bench/<name>.py`)."""

from __future__ import annotations

import json
import os
import platform
import subprocess


class TFWorker:
    """A Python with TensorFlow (--tf_python) running `source`, a script that prints one JSON
    line of version info, then answers each JSON request line with one JSON line. TensorFlow
    never shares a process, or a virtual environment, with JAX."""

    def __init__(self, python: str, source: str):
        self.proc = subprocess.Popen(
            [python, "-c", source], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the TensorFlow worker exited; is tensorflow installed there?")
        return json.loads(line)

    def request(self, **fields) -> dict:
        self.proc.stdin.write(json.dumps(fields) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def loadavg() -> list[float]:
    """The 1-, 5- and 15-minute load averages: how much else ran on the machine."""
    return [round(v, 2) for v in os.getloadavg()]


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor(),
    }
