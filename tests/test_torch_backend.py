"""What Ray Train ships to its controller for our runs must not import torch there."""

import subprocess
import sys

import ray.cloudpickle as cloudpickle

from cnn_cluster.torch_backend import LazyTorchConfig


def _unpickle_in_fresh_python(blob: bytes) -> str:
    code = ("import pickle, sys; pickle.loads(sys.stdin.buffer.read()); "
            "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    return subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, check=True).stdout.decode()


def test_the_controllers_backend_callbacks_unpickle_without_torch():
    from ray.train.torch import TorchConfig
    from ray.train.v2._internal.callbacks.accelerators import AcceleratorSetupCallback
    from ray.train.v2._internal.callbacks.backend_setup import BackendSetupCallback
    from ray.train import ScalingConfig

    def shipped(config) -> bytes:  # the two callbacks that carry the backend to the controller
        return cloudpickle.dumps([BackendSetupCallback(config), AcceleratorSetupCallback(config, ScalingConfig())])

    assert _unpickle_in_fresh_python(shipped(LazyTorchConfig("gloo"))).strip() == "[]"
    assert "torch" in _unpickle_in_fresh_python(shipped(TorchConfig(backend="gloo")))  # Ray's own does


def test_the_package_imports_torch_only_for_a_model():
    code = ("import sys, cnn_cluster; before = 'torch' in sys.modules; cnn_cluster.CNN; "
            "print(before, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]
