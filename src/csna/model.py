"""CSNAModel: the four modules of design §3 composed into one network.

Shape alphabet: B batch, p covariates, k nodes, d width, K treatments, C classes, n blocks.

Depth follows the training phases: depth 1 reads the heads from z (encoder only), depth 2
from H (encoder + lattice), depth 3 from R (encoder + lattice + attention). Every lattice
layer and every attention block is a gateable residual block (design §3.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import ModelConfig
from .nn.attention import CausalTransformerBlock
from .nn.distance import causal_distance
from .nn.encoder import CausalEncoder
from .nn.heads import OutcomeHeads, PropensityHead
from .nn.lattice import LatticeEncoder, in_degree_normalised
from .nn.structure import StructureScore, adjustment_set
from .nn.utility import MetaUtility
from .nn.variables import VariableTokenizer

GATE_MODES = ("off", "sample", "hard", "given", "drop")
MODULES = ("encoder", "lattice", "attention", "heads", "utility")
# Variable nodes learn their graph within phase 2: its parameters move this many times faster
# than the phase's learning rate (csna.nn.lattice.LearnedAdjacency).
GRAPH_LR_SCALE = 20.0


@dataclass
class Outputs:
    pred: torch.Tensor  # (B, K) standardised means, or (B, K, C) logits
    prop_logits: torch.Tensor  # (B, K)
    rep: torch.Tensor  # (B, d) pooled representation the heads read
    z: torch.Tensor  # (B, k, d)
    h: torch.Tensor | None = None  # (B, k, d) after the lattice
    r: torch.Tensor | None = None  # (B, k, d) after attention
    adjacency: torch.Tensor | None = None  # (k, k)
    u: torch.Tensor | None = None  # (B, n) utilities of the gateable blocks that were reached
    gates: torch.Tensor | None = None  # (B, n) 1 = block ran for that sample
    value: torch.Tensor | None = None  # (B,) the critic's V(z), with ``with_value=True``
    rep_prop_logits: torch.Tensor | None = None  # (B, K) with model.propensity_rep > 0


class CSNAModel(nn.Module):
    """The causal structural neural architecture.

    Args:
        p: number of input features (after preprocessing).
        n_treatments: K.
        n_classes: 0 for a continuous outcome, C ≥ 2 for a classification outcome.
        cfg: the model section of the config.
        variables: with ``cfg.nodes == "variables"``, (node names, node index of every feature
            column): the m input variables' names followed by the treatment's and the outcome's
            (``csna.nn.variables.column_nodes``).
    """

    def __init__(self, p: int, n_treatments: int, n_classes: int, cfg: ModelConfig,
                 variables: tuple[list[str], list[int]] | None = None):
        super().__init__()
        self.cfg = cfg
        self.p, self.n_treatments, self.n_classes = p, n_treatments, n_classes
        self.structure: StructureScore | None = None
        if cfg.nodes == "variables":
            if variables is None or len(variables[1]) != p:
                raise ValueError("model.nodes = variables needs the node of each of the p feature columns")
            self.node_names, col_node = list(variables[0]), list(variables[1])
            m = len(self.node_names) - 2
            # The input variables each node holds: one each, unless csna.node_groups merged some
            # (then ``csna.prepare.build_model`` sets them).
            self.node_members: list[list[str]] | None = [[n] for n in self.node_names[:m]]
            self.encoder = VariableTokenizer(col_node, m, cfg.d, 2 * cfg.d)
            self.k = m + 2
            # The structure score predicts the feature columns, then t and y, from their parents.
            self.structure = StructureScore(col_node + [m, m + 1], self.k)
        else:
            self.k = cfg.k
            self.node_names = [f"z{i}" for i in range(cfg.k)]
            self.node_members = None
            extra = n_treatments - 1 if cfg.propensity_feature else 0
            self.encoder = CausalEncoder(p + extra, cfg.k, cfg.d, cfg.hidden, cfg.encoder_layers, cfg.dropout,
                                         cfg.z_norm)
        n_lat = cfg.lattice_layers if cfg.use_lattice else 0
        graph_scale, forbidden = 1.0, None
        if self.structure is not None:
            graph_scale = GRAPH_LR_SCALE
            # The one edge known to be impossible: the outcome does not cause the treatment.
            forbidden = torch.zeros(self.k, self.k, dtype=torch.bool)
            forbidden[self.k - 1, self.k - 2] = True
        self.lattice = LatticeEncoder(self.k, cfg.d, n_lat, cfg.tau, cfg.dropout, forbidden, graph_scale)
        self.attention = nn.ModuleList(
            CausalTransformerBlock(cfg.d, cfg.heads, cfg.mlp_ratio, cfg.d_max, cfg.rope_base,
                                   cfg.positional, cfg.dropout)
            for _ in range(cfg.attention_blocks)
        )
        # The heads read the nodes' mean (d) or every node side by side (k·d): ``readout``.
        self.rep_dim = cfg.d * (self.k if cfg.readout == "nodes" else 1)
        self.heads = nn.ModuleDict({
            "outcome": OutcomeHeads(self.rep_dim, n_treatments, n_classes, cfg.head_hidden, cfg.dropout,
                                    cfg.shared_head),
            "propensity": PropensityHead(p, n_treatments, cfg.head_hidden),
        })
        if cfg.propensity_rep > 0:
            self.heads["rep_propensity"] = nn.Linear(self.rep_dim, n_treatments)
        self.n_blocks = n_lat + cfg.attention_blocks
        self.utility = MetaUtility(cfg.d, max(self.n_blocks, 1), cfg.utility_hidden)
        # Outcome scaling (fitted on the training split) so predictions come out in outcome units.
        self.register_buffer("y_mean", torch.zeros(()))
        self.register_buffer("y_std", torch.ones(()))
        # Running factual residual variance per treatment (the detached σ² of L_causal).
        self.register_buffer("sigma2", torch.ones(n_treatments))
        # Normalised per-sample FLOPs of each gateable block (Σ = 1), measured by measure_block_costs.
        self.register_buffer("block_costs", torch.full((max(self.n_blocks, 1),), 1.0 / max(self.n_blocks, 1)))
        self.register_buffer("depth", torch.tensor(3))
        # Hard gates run block i where u_i ≥ this; phase 4 calibrates it on validation rows.
        self.register_buffer("gate_threshold", torch.tensor(0.5))
        # Variable nodes with model.adjust = graph: 1 on the feature columns of the adjustment set
        # the fixed DAG implies, 0 elsewhere (set at the end of phase 2); all ones otherwise.
        self.register_buffer("adjust_cols", torch.ones(p))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints from before the threshold was calibrated gated at 0.5.
        state_dict.setdefault(prefix + "gate_threshold", torch.tensor(0.5))
        state_dict.setdefault(prefix + "adjust_cols", torch.ones(self.p))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ----------------------------------------------------------------- blocks
    def blocks(self) -> list[tuple[str, nn.Module]]:
        """The gateable residual blocks in execution order."""
        out: list[tuple[str, nn.Module]] = [(f"lattice.{i}", m) for i, m in enumerate(self.lattice.layers)]
        out += [(f"attention.{i}", m) for i, m in enumerate(self.attention)]
        return out

    def module_groups(self) -> dict[str, nn.Module]:
        groups = {name: getattr(self, name) for name in MODULES}
        if self.structure is not None:  # learned with the graph it scores
            groups["lattice"] = nn.ModuleList([self.lattice, self.structure])
        return groups

    @torch.no_grad()
    def measure_block_costs(self) -> torch.Tensor:
        """Count each block's FLOPs for one sample with ``FlopCounterMode``; normalise to Σ = 1."""
        dev = self.y_mean.device
        z = torch.zeros(1, self.k, self.cfg.d, device=dev)
        a = self.lattice.adjacency()
        a_in = in_degree_normalised(a)
        dist, unrel = self.causal_distances(a)
        flops = []
        for name, block in self.blocks():
            with FlopCounterMode(display=False) as fc:
                if name.startswith("lattice"):
                    block(z, a_in)
                else:
                    block(z, dist, unrel)
            flops.append(float(fc.get_total_flops()))
        costs = torch.tensor(flops, device=dev) if flops else torch.ones(1, device=dev)
        costs = costs / costs.sum().clamp_min(1.0)
        self.block_costs.copy_(costs)
        return costs

    def causal_distances(self, a: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(dist, unrelated), each (k, k): the causal distances attention reads, taken from the
        dominant orientation of the learned graph ``a`` (default: ``lattice.adjacency()``).

        The one definition of what attention sees; evaluation and figures read it from here.
        """
        a = self.lattice.adjacency() if a is None else a  # (k, k)
        return causal_distance(dominant_edges(a.detach()), self.cfg.edge_eps)

    def graph(self) -> torch.Tensor:
        """A (k, k) as the outcome pathway reads it. With variable nodes the graph is learned by
        the structure score alone (detached here), so it describes the data, not what happens
        to help the outcome fit."""
        a = self.lattice.adjacency()
        return a.detach() if self.structure is not None else a

    @torch.no_grad()
    def fix_graph(self, dag: torch.Tensor, adjust: bool) -> list[int] | None:
        """Fix A to ``dag`` (k, k) and, with ``adjust``, restrict the outcome pathway to the optimal
        adjustment set of treatment → outcome in it (the last two nodes). Returns that set's node
        indices, or None where the DAG has no path from the treatment to the outcome (then every
        column stays in)."""
        self.lattice.adjacency.freeze(dag)
        nodes = adjustment_set(dag.cpu().numpy(), self.k - 2, self.k - 1)
        if adjust and nodes is not None:
            keep = torch.zeros(self.k, device=dag.device)
            keep[nodes] = 1.0
            self.adjust_cols.copy_(keep[self.encoder.col_node])
        return nodes

    def propensity_loss(self, out: Outputs, t: torch.Tensor) -> torch.Tensor:
        """The cross-entropy of ê(x)'s head, plus ``model.propensity_rep`` times that of the head
        on the pooled representation where there is one (DragonNet's). t (B,) int64."""
        loss = nn.functional.cross_entropy(out.prop_logits, t)
        if out.rep_prop_logits is not None:
            loss = loss + self.cfg.propensity_rep * nn.functional.cross_entropy(out.rep_prop_logits, t)
        return loss

    def structure_loss(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(score, A): the structure score's mean squared error of every column given its parents,
        and the graph it was computed on. Args: x (B, p); t (B,); y (B,) standardised."""
        a = self.lattice.adjacency()  # (k, k)
        values = torch.cat([x, t.unsqueeze(1).to(x.dtype), y.unsqueeze(1).to(x.dtype)], dim=1)  # (B, p + 2)
        return self.structure(values, a), a

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's nodes z (B, k, d) of the features x (B, p), as the forward reads them:
        with variable nodes and an adjustment set, a column outside it reads 0 (its training
        mean, standardised, or no category); with ``propensity_feature`` the encoder also reads
        the propensity head's detached log-odds of every arm against arm 0."""
        if self.structure is not None:
            return self.encoder(x * self.adjust_cols)
        if self.cfg.propensity_feature:
            logits = self.heads["propensity"](x).detach()  # (B, K)
            x = torch.cat([x, logits[:, 1:] - logits[:, :1]], dim=1)  # (B, p + K − 1)
        return self.encoder(x)

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, depth: int | None = None, gate_mode: str = "off",
                gates: torch.Tensor | None = None, generator: torch.Generator | None = None,
                drop_rate: float = 0.0, noise: torch.Tensor | None = None, with_value: bool = False,
                z: torch.Tensor | None = None) -> Outputs:
        """Args:
            x: (B, p) preprocessed features.
            depth: 1, 2 or 3 (defaults to the depth trained so far).
            gate_mode: "off" runs every block; "sample" draws g ~ Bernoulli(u) (phase 4
                training); "hard" runs a block where u ≥ ``gate_threshold`` (evaluation; 0.5
                unless phase 4 calibrated it); "given" uses ``gates``.
            gates: (B, n) 0/1, with ``gate_mode="given"``.
            drop_rate: with ``gate_mode="drop"``, each sample skips each block with this
                probability (stochastic depth), so the backbone learns to work with the blocks
                the Meta Utility Layer will later skip.
            noise: (B, n) uniforms in [0, 1) for the "sample" and "drop" draws (gate i of row b
                is ``noise[b, i] < u`` or ``< 1 - drop_rate``); drawn by the caller for the whole
                global batch, so a draw belongs to the sample, not to the process (``csna.dist``).
                Without it the draws come from ``generator``.
            with_value: also return the critic's V(z) (phase 4; inside the forward so that
                DistributedDataParallel sees the critic's parameters used).
            z: (B, k, d) the encoder's output for ``x``, computed once by the caller for
                several passes over the same rows (phase 4's gate calibration).
        """
        if gate_mode not in GATE_MODES:
            raise ValueError(f"gate_mode must be one of {GATE_MODES}, got {gate_mode!r}")
        depth = int(self.depth) if depth is None else depth
        if z is None:
            z = self.encode(x)  # (B, k, d)
        state, h, r, a = z, None, None, None
        us: list[torch.Tensor] = []
        gs: list[torch.Tensor] = []
        block_i = 0

        def run(fn, state, i):
            if gate_mode == "off":
                return fn(state)
            if gate_mode == "drop":
                if noise is not None:
                    return gated(fn, state, (noise[:, i] < 1.0 - drop_rate).to(state.dtype))
                keep = torch.full((state.shape[0],), 1.0 - drop_rate, device=state.device)
                return gated(fn, state, torch.bernoulli(keep, generator=generator))
            u = self.utility.utility(state, i)  # (B,)
            if gate_mode == "sample":
                p_run = u.detach().nan_to_num(1.0).clamp(0.0, 1.0)
                g = ((noise[:, i] < p_run).to(state.dtype) if noise is not None
                     else torch.bernoulli(p_run, generator=generator))
            elif gate_mode == "hard":
                g = (u >= self.gate_threshold).to(state.dtype)
            else:
                g = gates[:, i].to(state.dtype)
            us.append(u)
            gs.append(g)
            return gated(fn, state, g)

        a, lattice_fns, attention_fns = self.block_fns(depth)
        for fn in lattice_fns:
            state = run(fn, state, block_i)
            block_i += 1
        if depth >= 2:
            h = state
        for fn in attention_fns:
            state = run(fn, state, block_i)
            block_i += 1
        if depth >= 3:
            r = state
        rep = self.readout(state)  # (B, d) or (B, k·d)
        pred = self.heads["outcome"](rep)
        prop = self.heads["propensity"](x)  # the covariates, never the balanced representation
        u_all = torch.stack(us, dim=1) if us else None  # (B, n)
        g_all = torch.stack(gs, dim=1) if gs else None  # (B, n)
        value = self.utility.value(z.detach()) if with_value else None  # (B,)
        rep_prop = self.heads["rep_propensity"](rep) if "rep_propensity" in self.heads else None  # (B, K)
        return Outputs(pred, prop, rep, z, h, r, a, u_all, g_all, value, rep_prop)

    def readout(self, state: torch.Tensor) -> torch.Tensor:
        """What the outcome heads read of the nodes ``state`` (B, k, d): their mean (B, d), which
        sees of the attention only its column means, or, with ``model.readout: nodes``, every
        node side by side (B, k·d), so that which nodes each node attended to reaches the heads."""
        return state.flatten(1) if self.cfg.readout == "nodes" else state.mean(dim=1)

    def block_fns(self, depth: int) -> tuple[torch.Tensor | None, list, list]:
        """(A, lattice blocks, attention blocks) up to ``depth``: each block a function of the
        state (B, k, d), in the order the Meta Utility Layer gates them (its block index).
        The graph and the causal distances are computed once here, never per layer (design §3.3)."""
        a, lattice_fns, attention_fns = None, [], []
        if depth >= 2:
            a = self.graph()  # (k, k)
            a_in = in_degree_normalised(a)
            lattice_fns = [lambda s, m=layer: m(s, a_in) for layer in self.lattice.layers]
        if depth >= 3:
            if a is None:
                a = self.graph()
            dist, unrel = self.causal_distances(a)
            attention_fns = [lambda s, m=blk: m(s, dist, unrel) for blk in self.attention]
        return a, lattice_fns, attention_fns

    # ------------------------------------------------------------- utilities
    def to_outcome_units(self, pred: torch.Tensor) -> torch.Tensor:
        """Continuous: de-standardised means (B, K). Classification: probabilities (B, K, C)."""
        if self.n_classes:
            return torch.softmax(pred, dim=-1)
        return pred * self.y_std + self.y_mean


def dominant_edges(a: torch.Tensor) -> torch.Tensor:
    """Keep, for each pair, only the stronger of i → j and j → i. (k, k)

    While the DAG penalty is still soft, A has weight in both directions of most pairs; read
    literally every pair is then a 2-cycle, every causal distance is P[j→i] − P[i→j] = 0, and
    causal RoPE sees no positions at all. The distance is read from the graph's dominant
    orientation instead; message passing still uses all of A.
    """
    return a * (a > a.t())


def gated(fn, state: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Run ``fn`` only on the rows whose gate is 1; the others pass through unchanged.

    Gather, run, scatter: a skipped row never enters the block, so the saving is real FLOPs and
    real time, not a mask applied after the fact.
    """
    idx = torch.nonzero(g > 0.5, as_tuple=False).squeeze(1)  # (B_on,)
    if idx.numel() == state.shape[0]:
        return fn(state)
    if idx.numel() == 0:
        return state
    out = fn(state.index_select(0, idx))  # (B_on, k, d)
    # Under bf16 autocast (CUDA) a block can return another dtype than the stream it reads.
    dt = torch.promote_types(state.dtype, out.dtype)
    return state.to(dt).index_copy(0, idx, out.to(dt))  # (B, k, d)
