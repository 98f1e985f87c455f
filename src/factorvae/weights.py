"""Checks on weights read from disk, before anything uses them: a checkpoint's record (step,
finite tensors), whether weights fit a model (keys, shapes, dtypes), and the out-of-memory guard
of every loader (a failed allocation is one ``UserError``). Used by ``factorvae.runs`` (resume,
``load_run``, exports) and the trainer."""

from __future__ import annotations

import contextlib
import re

import torch

from factorvae.errors import UserError, out_of_memory


def check_checkpoint(state, path) -> None:
    """Refuse a checkpoint whose record is not ours before anything uses it: a step that is not a
    whole number >= 0, no model state, weights or optimiser state that are not finite (a run that
    diverged resumes to ``loss=nan``)."""
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise UserError(f"{path}: not a checkpoint of ours (no model state)")
    step = state.get("step", 0)
    if isinstance(step, torch.Tensor) and step.numel() == 1 and not step.is_floating_point():
        step = state["step"] = int(step)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise UserError(f"{path}: its step {str(step)[:40]!r} is not a whole number >= 0; the checkpoint is damaged")
    check_finite(_tensors(state.get("model"), "model") + _tensors(state.get("optim"), "optim"), path,
                 "the run diverged: restart it or resume an earlier copy")


def check_finite(tensors: list[tuple[str, torch.Tensor]], path, advice: str = "") -> None:
    """Refuse (name, tensor) pairs read from ``path`` of which a float one holds NaN or inf."""
    bad = [k for k, v in tensors if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise UserError(f"{path}: {len(bad)} tensor(s) hold NaN or infinite values (e.g. {bad[0]})"
                        + (f"; {advice}" if advice else ""))


def _tensors(tree, prefix: str) -> list[tuple[str, torch.Tensor]]:
    if isinstance(tree, torch.Tensor):
        return [(prefix, tree)]
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    return [kv for k, v in items for kv in _tensors(v, f"{prefix}.{k}")]


def check_fits(state, expected: dict, what: str) -> None:
    """Refuse weights ``state`` that do not fit a model's ``expected`` state dict: keys, shapes and
    dtypes, said in one line (not load_state_dict's list of every key)."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{what} does not fit this model: its weights are not a mapping of tensors")
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    shape = [k for k in sorted(set(state) & set(expected)) if state[k].shape != expected[k].shape]
    dtype = [k for k in sorted(set(state) & set(expected)) if k not in shape and state[k].dtype != expected[k].dtype]
    if missing or extra or shape or dtype:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(extra)} unexpected (e.g. {extra[0]})" if extra else "",
                 f"{len(shape)} of another shape (e.g. {shape[0]}: {tuple(state[shape[0]].shape)} here "
                 f"{tuple(expected[shape[0]].shape)})" if shape else "",
                 f"{len(dtype)} of another dtype (e.g. {dtype[0]}: {state[dtype[0]].dtype}, expected "
                 f"{expected[dtype[0]].dtype})" if dtype else ""]
        raise UserError(f"{what} does not fit this model: " + ", ".join(p for p in parts if p))


#: the out-of-memory advice of training (model size, batch size)
MEMORY_HINT = "reduce train.batch_size or the model's size (model.z_dim, model.arch)"


@contextlib.contextmanager
def memory_guard(hint: str = MEMORY_HINT):
    """Running out of memory inside the block is one ``UserError`` (how much was asked, ``hint``)."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        if not out_of_memory(e):
            raise
        need = re.search(r"allocate (\d+) bytes", str(e))
        need = f" ({int(need.group(1)) / 2**30:.1f} GiB asked for)" if need else ""
        raise UserError(f"out of memory{need}: {hint}") from None
