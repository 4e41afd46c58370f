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
