"""prometheus-client's multiprocess mode for ``serve --workers N`` (``metrics.py``).

Must run in the parent before uvicorn starts the workers: the environment variable is read
when prometheus-client is imported, which each worker does afresh. The directory is the
operator's ``PROMETHEUS_MULTIPROC_DIR`` if set (emptied of a previous run's files, or the
counters would resume from them), else a new private temporary directory.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from auth_service.metrics import MULTIPROCESS_DIR_ENV


def prepare_multiprocess_metrics() -> Path:
    configured = os.environ.get(MULTIPROCESS_DIR_ENV)
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix="auth-service-metrics-"))
        os.environ[MULTIPROCESS_DIR_ENV] = str(directory)
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory
