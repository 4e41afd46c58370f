"""csna with EconML's model selection and DoWhy's refuters, on a table whose effects are known.

    pip install -e '.[bench]'          # EconML, DoWhy, LightGBM
    python examples/dowhy_refute.py [--fast] [--n 2000] [--sims 3]

1. EconML's ``RScorer`` ranks csna among EconML's CATE estimators on held-out rows, without
   the truth (the R-loss of Nie & Wager); the true √PEHE is printed beside it to show how
   well the ranking matches.
2. DoWhy estimates the average effect with csna through its EconML wrapper (the common causes
   go to ``W``, the effect modifier to ``X``) and refutes it: a placebo treatment (the effect
   should vanish), a random common cause and a random 80% subset (it should not move).

With the default config each csna fit takes about a minute on two cores and the refuters
refit it ``3 × --sims`` times; ``--fast`` trains phase 1 only (encoder and outcome heads) for
a look in about a minute overall.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

from csna import CSNAEstimator


def dgp(n: int, rng: np.random.Generator):
    """Confounding through w1 and w2; the effect varies with x0 only: τ = 1 + 2·tanh(2·x0)."""
    x0 = rng.normal(size=n)
    w = rng.normal(size=(n, 3))
    e = 1 / (1 + np.exp(-(0.8 * w[:, 0] - 0.6 * w[:, 1] + 0.3 * x0)))
    t = (rng.random(n) < e).astype(int)
    tau = 1 + 2 * np.tanh(2 * x0)
    y = w[:, 0] + 0.5 * w[:, 1] ** 2 + 0.5 * x0 + t * tau + 0.5 * rng.normal(size=n)
    frame = pd.DataFrame({"y": y, "t": t, "x0": x0, "w0": w[:, 0], "w1": w[:, 1], "w2": w[:, 2]})
    return frame, tau


def rscorer_ranking(train: pd.DataFrame, valid: pd.DataFrame, tau_valid: np.ndarray, csna: dict) -> pd.DataFrame:
    from econml.dml import CausalForestDML, LinearDML
    from econml.metalearners import TLearner, XLearner
    from econml.score import RScorer
    from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
    from sklearn.linear_model import LinearRegression, LogisticRegression

    cols = ["x0", "w0", "w1", "w2"]
    X, y, t = train[cols].to_numpy(), train["y"].to_numpy(), train["t"].to_numpy()
    Xv = valid[cols].to_numpy()
    models, seconds = {}, {}
    candidates = {
        "csna": lambda: CSNAEstimator(**csna),
        "CausalForestDML": lambda: CausalForestDML(discrete_treatment=True, n_estimators=200, random_state=0),
        "LinearDML": lambda: LinearDML(model_y=GradientBoostingRegressor(), model_t=GradientBoostingClassifier(),
                                       discrete_treatment=True, random_state=0),
        "XLearner(GBM)": lambda: XLearner(models=GradientBoostingRegressor(random_state=0),
                                          propensity_model=LogisticRegression()),
        "TLearner(linear)": lambda: TLearner(models=LinearRegression()),
    }
    for name, make in candidates.items():
        t0 = time.perf_counter()
        models[name] = make().fit(y, t, X=X)
        seconds[name] = time.perf_counter() - t0
    scorer = RScorer(model_y=GradientBoostingRegressor(random_state=0),
                     model_t=GradientBoostingClassifier(random_state=0), discrete_treatment=True, cv=3, random_state=0)
    scorer.fit(valid["y"].to_numpy(), valid["t"].to_numpy(), X=Xv)
    rows = [{"estimator": k, "R-score (higher is better)": scorer.score(m),
             "true √PEHE": float(np.sqrt(np.mean((m.effect(Xv) - tau_valid) ** 2))), "fit s": seconds[k]}
            for k, m in models.items()]
    return pd.DataFrame(rows).sort_values("R-score (higher is better)", ascending=False).reset_index(drop=True)


def refutations(data: pd.DataFrame, truth: float, csna: dict, sims: int) -> pd.DataFrame:
    from dowhy import CausalModel
    from dowhy.causal_estimators.econml import Econml

    model = CausalModel(data=data.assign(t=data["t"].astype(bool)), treatment="t", outcome="y",
                        common_causes=["w0", "w1", "w2"], effect_modifiers=["x0"])
    estimand = model.identify_effect(proceed_when_unidentifiable=True)
    estimand.set_identifier_method("backdoor")
    wrapper = Econml(estimand, econml_estimator=CSNAEstimator(**csna))
    wrapper.fit(model._data, effect_modifier_names=["x0"])
    estimate = wrapper.estimate_effect(model._data, control_value=0, treatment_value=1, target_units="ate")
    rows = [{"check": "estimate (csna through DoWhy)", "effect": estimate.value, "expected": f"{truth:.3f} (truth)"}]
    for method, options, expected in (
            ("placebo_treatment_refuter", {"placebo_type": "permute"}, "≈ 0"),
            ("random_common_cause", {}, f"≈ {estimate.value:.3f}"),
            ("data_subset_refuter", {"subset_fraction": 0.8}, f"≈ {estimate.value:.3f}")):
        res = model.refute_estimate(estimand, estimate, method_name=method, num_simulations=sims, random_seed=0,
                                    show_progress_bar=False, **options)
        rows.append({"check": method, "effect": float(res.new_effect), "expected": expected})
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame) -> str:
    """A GitHub table (pandas' to_markdown needs the tabulate package, which csna does not pull in)."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="training rows (as many again are held out)")
    ap.add_argument("--sims", type=int, default=3, help="refits per refuter")
    ap.add_argument("--fast", action="store_true", help="phase 1 only: a look in about a minute")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    csna = {"train__progress": False, "log__tensorboard": False}
    if args.fast:
        csna |= {"phase2__epochs": 0, "phase3__epochs": 0, "phase4__epochs": 0, "train__ensemble": 2}
    rng = np.random.default_rng(0)
    data, tau = dgp(2 * args.n, rng)
    train, valid = data.iloc[:args.n], data.iloc[args.n:]
    print("## EconML RScorer: csna among EconML's estimators (held-out rows, no truth needed)\n")
    print(markdown(rscorer_ranking(train, valid, tau[args.n:], csna)))
    print("\n## DoWhy: estimate and refutations\n")
    print(markdown(refutations(train, float(tau[:args.n].mean()), csna, args.sims)))


if __name__ == "__main__":
    main()
