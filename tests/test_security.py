"""Secure defaults: what docs/security.md promises, checked on the code and on a real embedded Ray."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from catalogue import documented

PACKAGE = Path(__file__).resolve().parent.parent / "cnn_cluster"
SOURCES = {p: ast.parse(p.read_text()) for p in PACKAGE.rglob("*.py")}


def _calls(name: str):
    for path, tree in SOURCES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                full = f"{getattr(f.value, 'id', '')}.{f.attr}" if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                if full == name:
                    yield path, node


def test_no_shell_true_anywhere():
    for path, tree in SOURCES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "shell":
                assert not (isinstance(node.value, ast.Constant) and node.value.value is True), path
    assert not list(_calls("os.system"))


def test_every_torch_load_is_weights_only():
    loads = list(_calls("torch.load"))
    assert loads
    for path, call in loads:
        kw = {k.arg: k.value for k in call.keywords}
        assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, path


def test_yaml_only_through_the_safe_loader():
    for name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
        assert not list(_calls(name)), name
    assert list(_calls("yaml.safe_load"))
    assert not list(_calls("pickle.load")) and not list(_calls("pickle.loads"))


@pytest.mark.slow
def test_embedded_ray_dashboard_is_local_and_needs_the_token(tmp_path):
    probe = """
import json, urllib.request, urllib.error
from cnn_cluster.cluster import ensure_ray
info = ensure_ray(num_cpus=1, dashboard=True)
try:
    code = urllib.request.urlopen(info.dashboard_url + "/api/jobs/", timeout=10).status
except urllib.error.HTTPError as exc:
    code = exc.code
print(json.dumps({"url": info.dashboard_url, "code": code}))
"""
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    import json

    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen["url"].startswith("http://127.0.0.1:")
    assert seen["code"] == 401  # Ray's token authentication is on


# --------------------------------------------------------------------------- resume trust


def _interrupted_run(tmp_path: Path) -> Path:
    """A run folder as an interrupted sweep leaves it: its config, its state, Tune's pickled state."""
    import yaml

    from tiny import tiny_config

    run = tmp_path / "runs" / "tiny-1"
    (run / "tune" / "tiny").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(tiny_config(tmp_path)))
    (run / "run.json").write_text('{"state": "interrupted"}')
    (run / "tune" / "tiny" / "experiment_state.pkl").write_bytes(b"\x80\x04N.")
    for p in (run, *run.rglob("*")):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return run


def _resume(run: Path, *flags: str):
    from typer.testing import CliRunner

    from cnn_cluster.cli import app

    before = sorted((p, p.stat().st_mtime_ns) for p in run.rglob("*"))
    result = CliRunner().invoke(app, ["submit", "--resume", str(run), *flags])
    assert sorted((p, p.stat().st_mtime_ns) for p in run.rglob("*")) == before  # nothing written
    return result


def test_resume_refuses_a_group_writable_run_folder(tmp_path):
    run = _interrupted_run(tmp_path)
    (run / "tune").chmod(0o775)
    result = _resume(run)
    assert result.exit_code == 2
    assert result.output == f"error: {documented('resume-shared-folder', RUN=str(run))}\n"


def test_resume_refuses_a_world_writable_pickle(tmp_path):
    run = _interrupted_run(tmp_path)
    state = run / "tune" / "tiny" / "experiment_state.pkl"
    state.chmod(0o666)
    result = _resume(run)
    assert result.exit_code == 2 and result.output.startswith(f"error: {state}: writable by group or others")


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="giving a file to another user needs root")
def test_resume_refuses_a_pickle_owned_by_another_user(tmp_path):
    import os
    import pwd

    run = _interrupted_run(tmp_path)
    state = run / "tune" / "tiny" / "experiment_state.pkl"
    nobody = pwd.getpwnam("nobody").pw_uid
    os.chown(state, nobody, -1)
    result = _resume(run)
    me = pwd.getpwuid(os.getuid()).pw_name
    assert result.exit_code == 2
    assert result.output == f"error: {documented('resume-foreign-file', RUN=str(run), ME=me)}\n"


def test_the_override_lets_a_shared_folder_through_and_a_private_one_needs_none(tmp_path):
    from cnn_cluster.run.folder import prepare

    run = _interrupted_run(tmp_path)
    _, opened = prepare(None, [], run)  # mode 755/644, owned by this user: trusted as it is
    assert opened.root == run
    (run / "tune").chmod(0o777)
    _, opened = prepare(None, [], run, trust_shared=True)
    assert opened.root == run
    with pytest.raises(Exception, match="writable by group or others"):
        prepare(None, [], run)
