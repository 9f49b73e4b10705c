"""PyTorch adapter: tensors in the safetensors layout, modules rebuilt by allowlisted factories."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import safepoint as sp

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from safepoint.adapters import torch as sp_torch  # noqa: E402


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv1d(2, 4, kernel_size=3, padding=1),
        torch.nn.BatchNorm1d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 8, 16),
        torch.nn.LayerNorm(16),
        torch.nn.GELU(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(16, 3, bias=False),
    )


def _same_state(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)  # safetensors orders names itself
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


def test_state_dict_round_trip_all_dtypes():
    sd = {
        "f32": torch.randn(3, 4),
        "f64": torch.randn(5, dtype=torch.float64),
        "f16": torch.randn(2, 2).half(),
        "bf16": torch.randn(7).bfloat16(),
        "i64": torch.arange(6).reshape(2, 3),
        "i8": torch.tensor([-1, 2], dtype=torch.int8),
        "u8": torch.tensor([1, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False]),
        "scalar": torch.tensor(3.5),
        "empty": torch.empty(0, 3),
        "strided": torch.randn(4, 6)[:, ::2],  # non-contiguous: stored contiguous
    }
    back = sp.loads(sp.dumps(sd))
    _same_state(sd, back)
    back["f32"].add_(1)  # loaded tensors own writable memory


def test_state_dict_is_readable_by_safetensors(tmp_path):
    net = _net()
    sd = net.state_dict()
    path = tmp_path / "w.sp"
    sp.dump(sd, path)
    assert type(sp.load(path)) is type(sd)
    # the stored buffers and node headers are a safetensors file but for its header
    data = sp_torch.to_safetensors(path)
    _same_state(dict(sd), safetensors_torch.load(data))
    # and the helper writes a file the safetensors library reads
    sp_torch.save_safetensors(net, tmp_path / "net.safetensors")
    _same_state(dict(sd), sp_torch.load_safetensors(tmp_path / "net.safetensors"))


def test_to_safetensors_does_not_import_torch(tmp_path):
    path = tmp_path / "w.sp"
    sp.dump({"a": torch.arange(4.0), "b": torch.ones(2, 2, dtype=torch.int32)}, path)
    code = (
        "import sys\n"
        "from safepoint.adapters.torch import to_safetensors\n"
        f"data = to_safetensors({str(path)!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "sys.stdout.buffer.write(data)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    back = safetensors_torch.load(out)
    assert torch.equal(back["a"], torch.arange(4.0))
    assert torch.equal(back["b"], torch.ones(2, 2, dtype=torch.int32))


def test_sequential_module_round_trip_identical_outputs(tmp_path):
    net = _net().eval()
    x = torch.randn(5, 2, 8)
    store = sp.Store(str(tmp_path / "store"))
    mv = store.put("nets/conv", net)
    back = store.get("nets/conv")
    assert type(back) is torch.nn.Sequential and not back.training
    assert repr(back) == repr(net)
    with torch.no_grad():
        assert torch.equal(back(x), net(x))
    _same_state(net.state_dict(), back.state_dict())
    info = store.inspect(f"nets/conv@{mv.version}")
    assert info.environment["packages"]["torch"] == torch.__version__
    assert all(t["kind"] == "adapter" and t["trusted"] for t in info.types)


@pytest.mark.parametrize(
    "layer, x",
    [
        (lambda: torch.nn.LSTM(3, 5, num_layers=2, batch_first=True), (2, 4, 3)),
        (lambda: torch.nn.GRU(3, 4, bidirectional=True), (4, 2, 3)),
        (lambda: torch.nn.Embedding(10, 3, padding_idx=0), None),
        (lambda: torch.nn.MultiheadAttention(8, 2, batch_first=True), None),
        (
            lambda: torch.nn.Conv2d(1, 2, (3, 2), stride=2, padding_mode="reflect", padding=1),
            (1, 1, 6, 6),
        ),
        (lambda: torch.nn.PReLU(3), (2, 3)),
    ],
    ids=["lstm", "gru", "embedding", "mha", "conv2d", "prelu"],
)
@pytest.mark.slow
def test_standard_layers(layer, x):
    torch.manual_seed(1)
    m = layer().eval()
    back = sp.loads(sp.dumps(m))
    assert type(back) is type(m) and repr(back) == repr(m)
    _same_state(m.state_dict(), back.state_dict())
    with torch.no_grad():
        if isinstance(m, torch.nn.Embedding):
            idx = torch.tensor([[0, 3, 9]])
            assert torch.equal(back(idx), m(idx))
        elif isinstance(m, torch.nn.MultiheadAttention):
            q = torch.randn(2, 3, 8)
            assert torch.equal(back(q, q, q)[0], m(q, q, q)[0])
        else:
            inp = torch.randn(*x)
            a, b = back(inp), m(inp)
            a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
            assert torch.equal(a, b)


class TwoLayer(torch.nn.Module):
    def __init__(self, n_in: int, hidden: int = 8) -> None:
        super().__init__()
        self.n_in, self.hidden = n_in, hidden
        self.body = torch.nn.Sequential(torch.nn.Linear(n_in, hidden), torch.nn.Tanh())
        self.head = torch.nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_custom_module_needs_a_registered_factory():
    net = TwoLayer(4, hidden=6)
    with pytest.raises(sp.SerializationError, match="register_module"):
        sp.dumps(net)
    sp_torch.register_module(TwoLayer)
    data = sp.dumps(net)
    back = sp.loads(data)
    assert type(back) is TwoLayer and back.hidden == 6
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert torch.equal(back(x), net(x))


def test_unregistered_class_in_a_file_is_refused_in_another_process(tmp_path):
    """The loading process has not registered the class: the audit refuses it."""
    sp_torch.register_module(TwoLayer)
    path = tmp_path / "two.sp"
    sp.dump(TwoLayer(3), path)
    code = (
        "import safepoint as sp\n"
        "try:\n"
        f"    sp.load({str(path)!r})\n"
        "except sp.UntrustedTypesError as e:\n"
        "    print('refused', e.types)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "refused" in out.stdout and "TwoLayer" in out.stdout


def test_config_that_does_not_fit_the_tensors_is_refused():
    """A file whose config asks for a bigger layer than its tensors (valid checksums):
    refused, and the layer is built on the meta device so nothing big is allocated."""
    net = torch.nn.Linear(3, 2)
    net.out_features = 10**9  # what a crafted manifest would say
    data = sp.dumps(net)
    with pytest.raises(sp.FormatError, match="do not fit"):
        sp.loads(data)


def test_tensor_with_unsupported_dtype_is_explained():
    with pytest.raises(sp.SerializationError, match="dtype"):
        sp.dumps({"c": torch.zeros(2, dtype=torch.complex128)})
    p = sp.loads(sp.dumps({"p": torch.nn.Parameter(torch.ones(2))}))["p"]
    assert isinstance(p, torch.nn.Parameter) and p.requires_grad
    assert np.array_equal(p.detach().numpy(), np.ones(2))
