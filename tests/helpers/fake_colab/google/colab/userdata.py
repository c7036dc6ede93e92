"""Stand-in for `google.colab.userdata`: secrets come from the JSON file named by FAKE_COLAB_SECRETS."""

import json
import os


class SecretNotFoundError(Exception):
    """As Colab raises for a name missing from the Secrets panel."""

    def __init__(self, key: str) -> None:
        super().__init__(f"Secret {key} does not exist.")


class NotebookAccessError(Exception):
    """As Colab raises when the notebook was not granted access to a secret."""


def get(key: str) -> str:
    path = os.environ.get("FAKE_COLAB_SECRETS")
    secrets = json.load(open(path)) if path and os.path.exists(path) else {}
    denied = os.environ.get("FAKE_COLAB_DENIED", "").split(",")
    if key in denied:
        raise NotebookAccessError(f"Notebook does not have access to secret {key}")
    if key not in secrets:
        raise SecretNotFoundError(key)
    return secrets[key]
