import os
import warnings

import pytest
import torch

# Two cores: keep torch from oversubscribing when pytest-xdist runs workers side by side.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture
def tiny_overrides():
    """A budget that runs all four phases on IHDP in about a second."""
    return ["phase1.epochs=2", "phase1.min_epochs=1", "phase2.epochs=1", "phase3.epochs=1", "phase4.epochs=1"]
