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
def bench(tmp_path_factory):
    """A very small demo benchmark (seen family only, 8 training and 4 test images per class) to train on."""
    from synerdetect.demo import build_demo_benchmark

    root = tmp_path_factory.mktemp("bench")
    build_demo_benchmark(
        root, size=64, n_train=8, n_test=4, train_families=("gan_upsample",), test_families=("gan_upsample",), seed=0
    )
    return root
