"""csna.nn.distance against a brute-force BFS written with plain Python loops."""

from collections import deque

import pytest
import torch

from csna.nn.distance import causal_distance, shortest_path_hops

INF = float("inf")


def bfs_hops(adj: list[list[float]], eps: float) -> list[list[float]]:
    """All-pairs directed hop counts by breadth-first search from every node."""
    k = len(adj)
    hops = [[INF] * k for _ in range(k)]
    for s in range(k):
        hops[s][s] = 0
        queue = deque([s])
        while queue:
            a = queue.popleft()
            for b in range(k):
                if adj[a][b] > eps and hops[s][b] == INF:
                    hops[s][b] = hops[s][a] + 1
                    queue.append(b)
    return hops


def reference_distance(adj: list[list[float]], eps: float):
    """Design §3.3 case by case."""
    P = bfs_hops(adj, eps)
    k = len(adj)
    dist = [[0.0] * k for _ in range(k)]
    unrel = [[False] * k for _ in range(k)]
    for i in range(k):
        for j in range(k):
            if i == j:
                continue
            up, down = P[j][i] < INF, P[i][j] < INF
            if up and down:
                dist[i][j] = P[j][i] - P[i][j]
            elif up:
                dist[i][j] = P[j][i]
            elif down:
                dist[i][j] = -P[i][j]
            else:
                unrel[i][j] = True
    return dist, unrel


def random_dag(k: int, density: float, gen: torch.Generator) -> torch.Tensor:
    """Weighted DAG under a random topological order, weights in (0, 1)."""
    weights = torch.rand(k, k, generator=gen)
    keep = torch.rand(k, k, generator=gen) < density
    A = torch.triu(weights * keep, diagonal=1)
    perm = torch.randperm(k, generator=gen)
    return A[perm][:, perm]


def chain(k: int) -> torch.Tensor:
    A = torch.zeros(k, k)
    for i in range(k - 1):
        A[i, i + 1] = 0.7
    return A


def test_random_dags_match_bfs():
    gen = torch.Generator().manual_seed(0)
    for trial in range(150):
        k = int(torch.randint(2, 13, (1,), generator=gen))
        density = [0.05, 0.2, 0.4, 0.7, 1.0][trial % 5]
        A = random_dag(k, density, gen)
        dist, unrel = causal_distance(A)
        ref_d, ref_u = reference_distance(A.tolist(), 0.0)
        assert dist.dtype == torch.float32 and unrel.dtype == torch.bool
        assert torch.equal(dist, torch.tensor(ref_d)), (trial, A)
        assert torch.equal(unrel, torch.tensor(ref_u)), (trial, A)
        assert torch.equal(dist, -dist.T)
        assert torch.equal(shortest_path_hops(A), torch.tensor(bfs_hops(A.tolist(), 0.0)))


def test_cycle():
    # 0 -> 1 -> 2 -> 0 plus 2 -> 3; 4 isolated.
    A = torch.zeros(5, 5)
    A[0, 1] = A[1, 2] = A[2, 0] = A[2, 3] = 1.0
    dist, unrel = causal_distance(A)
    ref_d, ref_u = reference_distance(A.tolist(), 0.0)
    assert torch.equal(dist, torch.tensor(ref_d))
    assert torch.equal(unrel, torch.tensor(ref_u))
    # Written out: 1 reaches 0 in 2 hops, 0 reaches 1 in 1 hop, so d(0, 1) = 2 - 1.
    assert dist[0, 1] == 1.0 and dist[1, 0] == -1.0
    assert dist[3, 0] == 3.0 and dist[0, 3] == -3.0  # 0 -> 1 -> 2 -> 3
    assert unrel[4, :4].all() and unrel[:4, 4].all() and not unrel.diagonal().any()
    assert torch.equal(dist, -dist.T)


def test_random_graphs_with_cycles_match_bfs():
    gen = torch.Generator().manual_seed(1)
    for _ in range(50):
        k = int(torch.randint(2, 10, (1,), generator=gen))
        A = torch.rand(k, k, generator=gen) * (torch.rand(k, k, generator=gen) < 0.25)
        dist, unrel = causal_distance(A)
        ref_d, ref_u = reference_distance(A.tolist(), 0.0)
        assert torch.equal(dist, torch.tensor(ref_d))
        assert torch.equal(unrel, torch.tensor(ref_u))
        assert torch.equal(dist, -dist.T)


def test_empty_graph_all_unrelated():
    dist, unrel = causal_distance(torch.zeros(6, 6))
    assert torch.equal(dist, torch.zeros(6, 6))
    assert torch.equal(unrel, ~torch.eye(6, dtype=torch.bool))


@pytest.mark.parametrize("k", [2, 5, 12])
def test_chain_is_index_offset(k):
    dist, unrel = causal_distance(chain(k))
    idx = torch.arange(k, dtype=torch.float32)
    assert torch.equal(dist, idx[:, None] - idx[None, :])
    assert not unrel.any()


def test_eps_threshold():
    A = chain(4)
    A[1, 2] = 0.3  # weak link in the middle of the chain
    dist, unrel = causal_distance(A, eps=0.5)
    ref_d, ref_u = reference_distance(A.tolist(), 0.5)
    assert torch.equal(dist, torch.tensor(ref_d))
    assert torch.equal(unrel, torch.tensor(ref_u))
    assert unrel[0, 2] and unrel[3, 0] and dist[1, 0] == 1.0 and dist[3, 2] == 1.0
    # An edge weight exactly equal to eps is not an edge.
    dist_eq, unrel_eq = causal_distance(A, eps=0.3)
    assert unrel_eq[0, 2]


def test_self_loop_ignored_and_no_grad():
    A = chain(3).requires_grad_(True)
    with torch.no_grad():
        A[1, 1] = 0.9
    dist, _ = causal_distance(A)
    assert not dist.requires_grad
    assert torch.equal(dist.diagonal(), torch.zeros(3))
