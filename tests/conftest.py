import warnings

import pytest
import torch

# One thread: fastest for these small models, and no oversubscription when pytest-xdist runs two workers.
torch.set_num_threads(1)
warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture
def tiny_overrides():
    """A budget that runs all four phases on IHDP in about a second."""
    return ["phase1.epochs=2", "phase1.min_epochs=1", "phase2.epochs=1", "phase3.epochs=1", "phase4.epochs=1",
            "train.ensemble=1"]  # one member: tests/test_ensemble.py covers ensembles


@pytest.fixture
def float64_and_seed():
    """float64 so references compare at 1e-9, and a fixed seed; the default dtype is restored so
    other test files are unaffected. Test files that need it use
    ``pytestmark = pytest.mark.usefixtures("float64_and_seed")``."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def one_torch_thread():
    """The bench's workers run one torch thread; small nets are slower with more on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
