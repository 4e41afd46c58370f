"""``csna bench``: csna against the field's estimators and its own ablations, on shared splits.

Peers need the optional extra ``pip install 'csna[bench]'`` (LightGBM, EconML); the neural
references (TARNet, CFR, DragonNet) are csna's own PyTorch implementations in ``neural.py``.
"""

from .cli import add_subparser, cmd_bench
from .peers import PEERS, Prediction, fit_peer, score
from .run import ABLATIONS, BenchSpec, execute, run_task, tasks_for

__all__ = ["ABLATIONS", "PEERS", "BenchSpec", "Prediction", "add_subparser", "cmd_bench", "execute", "fit_peer",
           "run_task", "score", "tasks_for"]
