"""MTIF data attribution for the joint model: influence of each training utterance's intent and
slot samples on each task's validation loss, pruning, and a check against retraining."""

from .mtif import Problem, compute_mtif, converge, influence_vectors, inverse_hvp, leave_one_out, score_chunks

__all__ = ["Problem", "compute_mtif", "converge", "influence_vectors", "inverse_hvp", "leave_one_out", "score_chunks"]
