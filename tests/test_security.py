"""Secure defaults: what docs/security.md promises, checked on the code and on a real embedded Ray."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

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
