"""Colab specifics: detection, secrets from the Secrets panel (`google.colab.userdata`), Drive.

Everything here degrades to "not in Colab" elsewhere (Kaggle, a VM, a lab server),
where the same `up` works from environment variables.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional


def in_colab() -> bool:
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):
        return False


def colab_secret(name: str) -> Optional[str]:
    """The value of a Colab secret, or None when absent, not shared with this notebook, or not Colab.

    Colab raises SecretNotFoundError for a missing name and NotebookAccessError when the
    notebook was not granted access; both mean "not given here" to us.
    """
    if not in_colab():
        return None
    try:
        from google.colab import userdata  # type: ignore[import-not-found]

        value = userdata.get(name)
    except Exception:  # SecretNotFoundError, NotebookAccessError, or no kernel (a CLI subprocess)
        return None
    return value.strip() if isinstance(value, str) and value.strip() else None


def mount_drive(mountpoint: str = "/content/drive") -> Path:
    """Mount Google Drive (Colab asks the user to allow it) and return MyDrive."""
    from google.colab import drive  # type: ignore[import-not-found]

    drive.mount(mountpoint)
    return Path(mountpoint) / "MyDrive"
