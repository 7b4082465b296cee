"""MTIF: multitask influence functions over a parameter scope (METHODS.md section 3).

The engine is model-agnostic. A `Problem` holds the scope parameters `w` (a dict, handled here as
one flat vector), a function giving every example's per-task losses, and the training and
validation data as chunks (dicts of tensors, batch first). `slu.py` builds one from a trained run.

Definitions (T tasks, n training utterances, each utterance i carrying one sample per task l):

    training objective  L(w)  = (1/n) sum_i sum_l c_l * l_l(z_i; w)      (c_l = task loss weight)
    validation loss     V_k(w) = mean over validation utterances of l_k(z; w)
    damped Hessian      H     = grad^2 L(w) + damping * I
    s_k = H^{-1} grad V_k(w)                       (one solve per target task)
    MTIF[i, l, k] = (1/n) * s_k . grad (c_l * l_l(z_i; w))

Removing sample (l, i) from the objective (its weight 1/n -> 0) moves the optimum by
+(1/n) H^{-1} grad(c_l l_l(z_i)), so to first order V_k changes by +MTIF[i, l, k]:
POSITIVE = removing the sample would RAISE task k's validation loss = the sample HELPS task k;
negative = the sample hurts task k. The damping term is, exactly, the Hessian of the proximal
objective L(w) + damping/2 * ||w - w_anchor||^2 that `converge` and the leave-one-out check
minimise, so the check tests the formula with the same H.
"""

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.func import grad, jacrev, jvp, vmap
from tqdm.auto import tqdm


@dataclass
class Problem:
    params: dict  # name -> tensor: the influence scope, at the point where influence is taken
    loss_fn: Callable  # (params dict, chunk dict) -> (batch, T) per-example task losses
    train: list  # chunks: dicts of tensors with the batch first and an "index" (batch,) column
    valid: list
    tasks: tuple = ("intent", "slot")
    task_weights: tuple = (1.0, 1.0)
    names: list = field(init=False)

    def __post_init__(self):
        self.names = list(self.params)
        self.shapes = [self.params[k].shape for k in self.names]
        self.numels = [self.params[k].numel() for k in self.names]
        self.n = sum(len(c["index"]) for c in self.train)
        self.n_valid = sum(len(c["index"]) for c in self.valid)
        w = self.flat()
        self._c = torch.tensor(self.task_weights, dtype=w.dtype, device=w.device)

    # -- flat parameter vectors -----------------------------------------------------------------
    @property
    def size(self) -> int:
        return sum(self.numels)

    def flat(self, params: dict | None = None) -> torch.Tensor:
        params = self.params if params is None else params
        return torch.cat([params[k].detach().reshape(-1) for k in self.names])

    def unflatten(self, w: torch.Tensor) -> dict:
        return {k: t.view(s) for k, t, s in zip(self.names, w.split(self.numels), self.shapes)}

    def losses(self, w, chunk) -> torch.Tensor:
        return self.loss_fn(self.unflatten(w), chunk)

    # -- objectives -----------------------------------------------------------------------------
    def chunk_objective(self, w, chunk, weights=None) -> torch.Tensor:
        """This chunk's share of L(w): sum_i sum_l c_l l_l(z_i) * weight_il / n."""
        losses = self.losses(w, chunk) * self._c
        if weights is not None:
            losses = losses * weights[chunk["index"]]
        return losses.sum() / self.n

    def objective(self, w, weights=None) -> torch.Tensor:
        return sum(self.chunk_objective(w, c, weights) for c in self.train)

    def valid_losses(self, w) -> torch.Tensor:
        """V_k(w) for every task k: (T,)."""
        return sum(self.losses(w, c).sum(0) for c in self.valid) / self.n_valid

    def valid_gradients(self, w) -> torch.Tensor:
        """grad V_k(w) for every task: (T, p)."""
        return sum(jacrev(lambda v, c=c: self.losses(v, c).sum(0))(w) for c in self.valid) / self.n_valid

    def hvp(self, w, v, damping: float, chunks=None, scale: float = 1.0) -> torch.Tensor:
        """(grad^2 L(w) + damping I) v, forward-over-reverse, streamed over the training chunks."""
        out = damping * v
        for c in (self.train if chunks is None else chunks):
            out = out + scale * jvp(grad(lambda u, c=c: self.chunk_objective(u, c)), (w,), (v,))[1]
        return out

    # -- per-example gradients ------------------------------------------------------------------
    def per_example_gradients(self, w, chunk) -> torch.Tensor:
        """grad of c_l * l_l(z_i) for every example and task: (batch, T, p), via vmap(jacrev)."""
        tensors = {k: v for k, v in chunk.items()}

        def single(u, example):
            one = {k: x.unsqueeze(0) for k, x in example.items()}
            return self.losses(u, one)[0] * self._c

        return vmap(jacrev(single), in_dims=(None, 0))(w, tensors)


# -- inverse-Hessian-vector solvers ---------------------------------------------------------------
def explicit_hessian(problem: Problem, w, damping: float, block: int = 64) -> torch.Tensor:
    """The damped Hessian as a (p, p) matrix, built from blocks of vmapped HVPs."""
    p = problem.size
    eye = torch.eye(p, dtype=w.dtype, device=w.device)
    cols = [vmap(lambda v: problem.hvp(w, v, damping))(eye[s:s + block]) for s in range(0, p, block)]
    h = torch.cat(cols)
    return 0.5 * (h + h.T)


def solve_explicit(problem, w, b, damping, max_params: int = 20000) -> tuple:
    """Solve H x = b (b: (T, p)) with a dense Hessian; refuses large scopes."""
    if problem.size > max_params:
        raise ValueError(f"the explicit solver builds a {problem.size} x {problem.size} Hessian; the scope has "
                         f"{problem.size} parameters (limit {max_params}): use --solver cg")
    h = explicit_hessian(problem, w, damping)
    x = torch.linalg.solve(h, b.T).T
    eig = torch.linalg.eigvalsh(h)
    return x, {"min_eigenvalue": eig[0].item(), "max_eigenvalue": eig[-1].item(),
               "residual": ((x @ h - b).norm(dim=1) / b.norm(dim=1).clamp_min(1e-30)).tolist()}


def solve_cg(problem, w, b, damping, tol: float = 1e-8, max_iter: int = 1000, progress: bool = False) -> tuple:
    """Conjugate gradient for H x = b, all T right-hand sides at once (one vmapped HVP a step)."""
    hvp = vmap(lambda v: problem.hvp(w, v, damping))
    x = torch.zeros_like(b)
    r = b.clone()
    d = r.clone()
    rs = (r * r).sum(1)
    target = tol * b.norm(dim=1)
    negative = False
    it = 0
    # no total: cg usually stops long before max_iter, and an ETA computed from it would mislead
    bar = tqdm(desc=f"cg (to relative residual {tol:g}, at most {max_iter} iterations)", disable=not progress,
               leave=False)
    b_norm = b.norm(dim=1).clamp_min(1e-30)
    for it in range(1, max_iter + 1):
        hd = hvp(d)
        curvature = (d * hd).sum(1)
        active = rs.sqrt() > target  # the right-hand sides not solved yet (a solved one's direction is 0)
        negative |= bool((active & (curvature <= 0)).any())  # no minimum along d: more steps will not settle it
        alpha = torch.where(active, rs / curvature, torch.zeros_like(rs))
        x = x + alpha[:, None] * d
        r = r - alpha[:, None] * hd
        rs_new = (r * r).sum(1)
        bar.update()
        bar.set_postfix_str(f"residual {float((rs_new.sqrt() / b_norm).max()):.1e}", refresh=False)
        if bool((rs_new.sqrt() <= target).all()):
            break
        # (a right-hand side solved exactly has rs 0: its direction stays 0, not 0/0; 1e-300 is 0 in float32)
        d = r + torch.where(rs > 0, rs_new / rs, torch.zeros_like(rs))[:, None] * d
        rs = rs_new
    bar.close()
    info = {"iterations": it, "residual": (r.norm(dim=1) / b_norm).tolist()}
    if negative:
        info["negative_curvature"] = True
        info["warning"] = (f"negative curvature met: the damped Hessian (damping {damping:g}) is not positive "
                           f"definite, which more cg iterations cannot mend; rerun with --damping {10 * damping:g} or more")
    return x, info


def top_eigenvalue(problem, w, damping, iterations: int = 20) -> float:
    v = torch.randn(problem.size, dtype=w.dtype, device=w.device, generator=torch.Generator(w.device).manual_seed(0))
    v = v / v.norm()
    value = 0.0
    for _ in range(iterations):
        hv = problem.hvp(w, v, damping)
        value = float(v @ hv)
        v = hv / hv.norm().clamp_min(1e-30)
    return value


def solve_lissa(problem, w, b, damping, depth: int = 1000, scale: float | None = None, progress: bool = False) -> tuple:
    """LiSSA (Agarwal et al. 2017) recursion x <- b + x - H x / scale, H^{-1} b ~ x / scale.

    With the encoder features cached a full-batch HVP is cheap, so the recursion uses the whole
    training set (deterministic; the stochastic variant's mini-batch Hessians can exceed `scale`
    and diverge). `scale` must exceed the largest eigenvalue of H (default: 1.1x a power-iteration
    estimate). The error shrinks like (1 - damping/scale)^depth: cg is the better choice; LiSSA is
    here as the method the influence-function literature uses."""
    scale = scale or 1.1 * top_eigenvalue(problem, w, damping)
    hvp = vmap(lambda v: problem.hvp(w, v, damping))
    x = b.clone()
    for _ in tqdm(range(depth), desc="lissa", disable=not progress, leave=False):
        x = b + x - hvp(x) / scale
    x = x / scale
    residual = hvp(x) - b
    return x, {"depth": depth, "scale": scale,
               "residual": (residual.norm(dim=1) / b.norm(dim=1).clamp_min(1e-30)).tolist()}


SOLVERS = {"explicit": solve_explicit, "cg": solve_cg, "lissa": solve_lissa}
RESIDUAL_LIMIT = 1e-3  # relative residual ||H x - b|| / ||b|| above which a solve counts as unconverged


SOLVER_OPTIONS = {"explicit": {"max_params"}, "cg": {"tol", "max_iter"}, "lissa": {"depth", "scale"}}


def inverse_hvp(problem, w, b, damping, solver: str = "cg", progress: bool = False, **kw) -> tuple:
    """Solve H x = b with `solver`. Options of the other solvers are ignored, so a caller can pass
    every solver's settings (--cg-iterations, --lissa-depth) and `auto` still honours them."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; expected one of {', '.join(SOLVERS)}")
    unknown = set(kw) - set().union(*SOLVER_OPTIONS.values())
    if unknown:
        raise TypeError(f"unknown solver option(s): {', '.join(sorted(unknown))}")
    kw = {k: v for k, v in kw.items() if k in SOLVER_OPTIONS[solver]}
    if solver != "explicit":
        kw["progress"] = progress
    return SOLVERS[solver](problem, w, b, damping, **kw)


# -- scores -----------------------------------------------------------------------------------------
def influence_vectors(problem: Problem, damping: float, solver: str = "cg", w=None, progress: bool = False,
                      **solver_kw) -> tuple:
    """s_k = H^{-1} grad V_k for every target task: (T, p), plus solver information."""
    w = problem.flat() if w is None else w
    started = time.perf_counter()
    g = problem.valid_gradients(w)
    s, info = inverse_hvp(problem, w, g, damping, solver, progress, **solver_kw)
    info.update(solver=solver, damping=damping, seconds=time.perf_counter() - started,
                valid_loss=problem.valid_losses(w).tolist(), valid_grad_norm=g.norm(dim=1).tolist())
    unsolved = [(task, r) for task, r in zip(problem.tasks, info["residual"]) if not r <= RESIDUAL_LIMIT]
    if unsolved:  # the scores are then off by up to that fraction; say so instead of ranking silently
        worst = ", ".join(f"{task} {r:.2g}" for task, r in unsolved)
        hint = {"cg": "raise --cg-iterations or --damping", "lissa": "raise --lissa-depth or --damping"}.get(
            solver, "raise --damping")  # every slu-influence command that solves has these options
        message = (f"the {solver} solve did not converge: relative residual {worst} (limit {RESIDUAL_LIMIT:g}), "
                   "so the influence scores are approximate"
                   + ("" if info.get("negative_curvature") else f"; {hint}"))  # (more iterations cannot help there)
        info["warning"] = f"{info['warning']}; {message}" if info.get("warning") else message
    return s, info


def score_chunks(problem: Problem, s: torch.Tensor, chunks=None, w=None, progress: bool = False) -> tuple:
    """MTIF for every example of `chunks` (default: all training chunks).

    Returns (index (m,), scores (m, T sources, T targets)) with scores[i, l, k] = MTIF_{k <- (l, i)}.
    """
    w = problem.flat() if w is None else w
    chunks = problem.train if chunks is None else chunks
    index, scores = [], []
    for chunk in tqdm(chunks, desc="per-example gradients", disable=not progress):
        g = problem.per_example_gradients(w, chunk)  # (B, T, p)
        scores.append(torch.einsum("blp,kp->blk", g, s) / problem.n)
        index.append(chunk["index"])
    return torch.cat(index), torch.cat(scores)


def compute_mtif(problem: Problem, damping: float = 0.01, solver: str = "cg", progress: bool = False,
                 **solver_kw) -> tuple:
    """All training examples' MTIF scores (n, T, T), in index order, and the solver information."""
    s, info = influence_vectors(problem, damping, solver, progress=progress, **solver_kw)
    index, scores = score_chunks(problem, s, progress=progress)
    out = torch.empty_like(scores)
    out[index] = scores
    return out, info


# -- retraining: the ground truth MTIF approximates -------------------------------------------------
def converge(problem: Problem, w_start, anchor, damping: float, weights=None, max_iter: int = 500,
             tol: float = 1e-10, progress: bool = False) -> torch.Tensor:
    """argmin_w L(w; weights) + damping/2 ||w - anchor||^2 by full-batch L-BFGS from `w_start`.
    `progress` counts the objective's evaluations (a fit on a real run takes minutes)."""
    w = w_start.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-16,
                            history_size=50, line_search_fn="strong_wolfe")
    bar = tqdm(desc="fitting the scope (L-BFGS evaluations)", disable=not progress, leave=False)

    def closure():
        bar.update()
        opt.zero_grad()
        loss = problem.objective(w, weights) + 0.5 * damping * ((w - anchor) ** 2).sum()
        loss.backward()
        return loss

    for _ in range(5):  # LBFGS.step stops at max_iter; restart a few times if still not converged
        opt.step(closure)
        closure()
        if w.grad.abs().max() <= tol:
            break
    bar.close()
    return w.detach()


class _Measured:
    """The actual changes `leave_one_out` measured, kept in a JSON Lines file: the first line holds
    the settings they were measured under (a file with other settings is started afresh), then one
    line per retraining. A half-written last line (the run killed mid-write) is dropped."""

    def __init__(self, path, settings: dict):
        self.path, self.rows = (Path(path) if path else None), {}
        if self.path is None:
            return
        lines = self.path.read_text(encoding="utf-8").splitlines() if self.path.exists() else []
        try:
            same = bool(lines) and json.loads(lines[0]) == settings
        except json.JSONDecodeError:
            same = False
        for line in lines[1:] if same else []:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.rows[json.dumps(row["id"])] = row["actual"]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("".join(json.dumps(x) + "\n" for x in [settings] + [
            {"id": json.loads(k), "actual": v} for k, v in self.rows.items()]), encoding="utf-8")

    def get(self, key: list, measure: Callable[[], list]) -> list:
        if json.dumps(key) in self.rows:
            return self.rows[json.dumps(key)]
        actual = measure()
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"id": key, "actual": actual}) + "\n")
        return actual


def pearson(x, y) -> float:
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = (x.norm() * y.norm()).item()
    return float((x @ y).item() / denom) if denom > 0 else float("nan")


def spearman(x, y) -> float:
    if len(set(map(float, x))) < 2 or len(set(map(float, y))) < 2:
        return float("nan")  # undefined for a constant input (e.g. between-task influence without coupling)
    try:
        from scipy.stats import spearmanr

        return float(spearmanr(list(map(float, x)), list(map(float, y))).statistic)
    except ImportError:
        rank = lambda a: torch.as_tensor(a, dtype=torch.float64).argsort().argsort().double()  # noqa: E731
        return pearson(rank(x), rank(y))


def leave_one_out(problem: Problem, damping: float, examples, solver: str = "explicit", subsets: int = 0,
                  subset_fraction: float = 0.5, seed: int = 0, retrain_iter: int = 500, progress: bool = False,
                  rows_file=None, **solver_kw) -> dict:
    """Compare MTIF with actual retraining of the scope.

    1. w* = argmin of the proximal objective, anchored at the given parameters (so H at w* is the
       H of the formula exactly); MTIF is computed at w*.
    2. For each example i in `examples` and each source task l: retrain from w* with sample (l, i)
       removed; actual change of V_k versus MTIF[i, l, k] (within-task: l == k; between: l != k).
    3. Linear datamodeling score: `subsets` random subsets keeping `subset_fraction` of the
       utterances; actual V_k(w_S) - V_k(w*) against the summed MTIF of the removed utterances
       (Spearman across subsets).

    Each retraining takes seconds to minutes on a real run, so with `rows_file` every actual change
    is appended to that JSON Lines file as it is measured, and a rerun with the same problem and
    settings takes the measured ones from it instead of retraining: an interrupted check resumes.
    """
    anchor = problem.flat()
    T = len(problem.tasks)
    w_star = converge(problem, anchor, anchor, damping, max_iter=retrain_iter, progress=progress)
    v_star = problem.valid_losses(w_star).detach()
    measured = _Measured(rows_file, {"n_train": problem.n, "n_params": problem.size, "damping": damping,
                                     "retrain_iter": retrain_iter, "seed": seed, "subset_fraction": subset_fraction,
                                     "valid_loss": [float(f"{v:.12g}") for v in v_star.tolist()]})
    s, info = influence_vectors(problem, damping, solver, w=w_star, **solver_kw)
    chunks = [{k: v[torch.isin(c["index"], torch.as_tensor(examples))] for k, v in c.items()} for c in problem.train]
    index, scores = score_chunks(problem, s, [c for c in chunks if len(c["index"])], w=w_star)
    pred = {int(i): scores[j] for j, i in enumerate(index)}
    ones = torch.ones(problem.n, T, dtype=w_star.dtype, device=w_star.device)
    rows = []
    for i in tqdm(list(examples), desc="leave-one-out", disable=not progress):
        for l in range(T):
            def retrain():
                weights = ones.clone()
                weights[i, l] = 0
                w_i = converge(problem, w_star, anchor, damping, weights, retrain_iter)
                return (problem.valid_losses(w_i).detach() - v_star).tolist()

            actual = measured.get(["loo", int(i), l], retrain)
            rows.append({"example": int(i), "source": problem.tasks[l], "predicted": pred[int(i)][l].tolist(),
                         "actual": actual})
    result = {"n_train": problem.n, "n_params": problem.size, "damping": damping, "solver": info, "loo": rows,
              "correlation": {}}

    def corr(pairs):
        p, a = [x for x, _ in pairs], [y for _, y in pairs]
        return {"pearson": pearson(p, a), "spearman": spearman(p, a), "n": len(pairs)}

    for k, task in enumerate(problem.tasks):
        for l, source in enumerate(problem.tasks):
            pairs = [(r["predicted"][k], r["actual"][k]) for r in rows if r["source"] == source]
            result["correlation"][f"{source}->{task}"] = corr(pairs)
    result["correlation"]["within"] = corr([(r["predicted"][k], r["actual"][k]) for r in rows
                                            for k, t in enumerate(problem.tasks) if r["source"] == t])
    result["correlation"]["between"] = corr([(r["predicted"][k], r["actual"][k]) for r in rows
                                             for k, t in enumerate(problem.tasks) if r["source"] != t])
    if subsets:
        _, all_scores = score_chunks(problem, s, w=w_star)
        full = torch.empty_like(all_scores)
        full[torch.cat([c["index"] for c in problem.train])] = all_scores
        utterance = full.sum(1)  # (n, T targets): both samples of an utterance
        gen = torch.Generator().manual_seed(seed)
        lds_rows = []
        for j in tqdm(range(subsets), desc="datamodel subsets", disable=not progress):
            keep = torch.randperm(problem.n, generator=gen)[: int(round(subset_fraction * problem.n))]
            mask = torch.zeros(problem.n, dtype=torch.bool)
            mask[keep] = True

            def retrain():
                weights = ones.clone()
                weights[~mask.to(weights.device)] = 0
                w_s = converge(problem, w_star, anchor, damping, weights, retrain_iter)
                return (problem.valid_losses(w_s).detach() - v_star).tolist()

            lds_rows.append({"predicted": utterance[~mask.to(utterance.device)].sum(0).tolist(),
                             "actual": measured.get(["subset", j], retrain)})
        result["datamodel"] = {"subsets": subsets, "fraction": subset_fraction, "rows": lds_rows, **{
            task: {"spearman": spearman([r["predicted"][k] for r in lds_rows], [r["actual"][k] for r in lds_rows]),
                   "pearson": pearson([r["predicted"][k] for r in lds_rows], [r["actual"][k] for r in lds_rows])}
            for k, task in enumerate(problem.tasks)}}
    return result


def finite(x: float) -> float | None:
    return None if x is None or math.isnan(x) else x
