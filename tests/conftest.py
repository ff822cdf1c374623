import os
import tempfile

import pytest

# Tiny base models are built into a fresh folder per test session, so every run exercises the
# real save_pretrained / from_pretrained path instead of a warm user cache.
os.environ.setdefault("SYNERDETECT_CACHE", tempfile.mkdtemp(prefix="synerdetect-test-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Forget accelerate's per-process state after each test, as accelerate's own ``AccelerateTestCase.tearDown``
    does, so that a test training with one mixed precision does not fix it for the next."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture(scope="session")
def tiny_model():
    """A shared tiny detector for read-only tests (do not train it in place)."""
    from synerdetect import SynerDetect

    return SynerDetect.from_preset("tiny")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_model):
    """The shared tiny detector saved with ``save_pretrained``, as a user's checkpoint folder."""
    return tiny_model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "model")


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for the module: tiny tensors are faster so, and immune to oversubscription on a busy
    2-core machine (request it with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model(request):
    """A tiny detector of the module's own (tests may train or change it), with ``STEPS`` inversion steps when the
    module sets that constant (3 otherwise: fast, and still a real inversion)."""
    from synerdetect import SynerDetect

    steps = getattr(request.module, "STEPS", 3)
    return SynerDetect.from_preset("tiny", **{"model.inversion_steps": steps}).eval()


@pytest.fixture(scope="module")
def bench(request, tmp_path_factory):
    """A very small demo benchmark to train on, built per module: the seen family only, 8 training and 4 test
    images per class, unless the module's ``BENCH`` dict overrides ``n_train``, ``n_test``, ``test_families`` or
    ``seed``."""
    from synerdetect.demo import build_demo_benchmark

    spec = {"n_train": 8, "n_test": 4, "test_families": ("gan_upsample",), "seed": 0}
    spec.update(getattr(request.module, "BENCH", {}))
    root = tmp_path_factory.mktemp("bench")
    build_demo_benchmark(root, size=64, train_families=("gan_upsample",), **spec)
    return root
