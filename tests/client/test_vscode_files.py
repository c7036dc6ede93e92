"""The .vscode files parse (JSON with comments) and point at files that exist."""

from __future__ import annotations

import json
import re

from _cli import REPO

from remote.card import Card
from remote.client.target import parse_target


def load(name: str) -> dict:
    text = (REPO / ".vscode" / name).read_text()
    return json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.M))


def test_vscode_files_are_consistent():
    assert "ms-vscode-remote.remote-ssh" in load("extensions.json")["recommendations"]
    assert load("settings.json")["files.watcherExclude"]["**/saved/**"] is True
    launch = load("launch.json")
    for config in launch["configurations"]:
        assert config["type"] == "debugpy"
        assert (REPO / config["program"].replace("${workspaceFolder}/", "")).is_file()
    for spec in load("launch.json")["inputs"] + load("tasks.json")["inputs"]:
        for option in spec.get("options", []):
            assert (REPO / option).is_file(), option
    labels = {task["label"] for task in load("tasks.json")["tasks"]}
    assert {"train", "test", "remotectl connect"} <= labels


def test_task_passes_a_pasted_connect_line_as_one_argument():
    card = Card(user="root", host="h", port=2, session="s",
                host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDhDHhvJpwJ2y5fqhmuzsg27VMJZfFjAwEGMXy9aYWF+")
    assert parse_target([f"remotectl connect {card.encode()}"]).session == "s"
