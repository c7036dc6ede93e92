"""Starting VS Code never lets `cmd.exe` parse card text: on Windows the folder travels as a
percent-encoded `--folder-uri` and Code.exe is started directly, not through code.cmd."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from remote.client import vscode

NASTY = "/content/my project & calc %PATH% ^|<>\"'!/실험"


def test_folder_uri_holds_nothing_a_shell_or_cmd_reads():
    uri = vscode.folder_uri("colab", NASTY)
    assert all(ch.isalnum() or ch in "/:+-._~%" for ch in uri)
    parts = urlsplit(uri)
    assert parts.scheme == "vscode-remote" and parts.netloc == "ssh-remote+colab"
    assert unquote(parts.path) == NASTY  # VS Code decodes exactly the folder back
    assert vscode.command("colab", NASTY, system="windows") == ["code", "--folder-uri", uri]
    assert vscode.command("colab", "/content", system="linux") == ["code", "--remote", "ssh-remote+colab", "/content"]


def test_windows_starts_code_exe_itself_with_cli_js(tmp_path):
    install = tmp_path / "Microsoft VS Code"
    (install / "bin").mkdir(parents=True)
    (install / "resources" / "app" / "out").mkdir(parents=True)
    (install / "bin" / "code.cmd").write_text("@echo off\n")
    (install / "Code.exe").write_bytes(b"MZ")
    (install / "resources" / "app" / "out" / "cli.js").write_text("")
    argv, env = vscode.windows_launch(str(install / "bin" / "code.cmd"), "colab", NASTY)
    assert argv == [str(install / "Code.exe"), str(install / "resources" / "app" / "out" / "cli.js"),
                    "--folder-uri", vscode.folder_uri("colab", NASTY)]
    assert env == {"ELECTRON_RUN_AS_NODE": "1"}
    (install / "Code.exe").unlink()
    assert vscode.windows_launch(str(install / "bin" / "code.cmd"), "colab", NASTY) is None  # then: print it
