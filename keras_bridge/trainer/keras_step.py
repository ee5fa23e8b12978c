"""Keras's own step functions run by Lightning: ``train_step``, ``test_step`` and ``predict_step`` as Keras calls them.

A Keras model that customizes its step (``train_step`` / ``test_step`` / ``predict_step``) or its
``compile`` signature, or that arrives compiled by Keras itself, is trained the way Keras's torch
trainer trains it: once per batch Lightning calls :class:`KerasSteps`, which calls the model's
``train_function([data])`` (what ``model.make_train_function()`` returns: ``train_step`` on the batch,
through ``torch.compile`` when the model was compiled with ``jit_compile=True``). The step does its own
``zero_grad``, ``backward``, ``optimizer.apply`` and metric updates, under Lightning's manual
optimization; the logs it returns are the batch logs, and the epoch logs are the model's metric
results when they have the same keys (else the last step's logs), flattened and sorted as Keras's
callbacks receive them.

Under DDP each process runs the step on its shard. Lightning's gradient all-reduce is switched off
(the step calls ``backward`` itself, possibly several times); instead every Keras optimizer the model
holds (``model.optimizer``, a GAN's ``d_optimizer`` / ``g_optimizer``) averages the gradients over
the processes, weighted by each shard's size, right before it applies them, so N processes update
as one process would on the global batch. The model's metric states are summed over the processes
before an epoch's logs are read.

Example:
    >>> import keras, numpy as np
    >>> class Custom(keras.Model):
    ...     def train_step(self, data):
    ...         return super().train_step(data)
    >>> inputs = keras.Input((3,))
    >>> model = Custom(inputs, keras.layers.Dense(1)(inputs))
    >>> runs_keras_steps(model)
    True
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

import torch

from keras_bridge.data.distributed import GlobalBatchInfo, rank_world, split_batch_info
from keras_bridge.utils.compat import keras_flatten_metrics_in_order, keras_symbolic_build
from keras_bridge.utils.keras import import_keras
from keras_bridge.utils.overrides import overridden

if TYPE_CHECKING:
    import keras
    import lightning.pytorch as pl

STEP_METHODS = ("train_step", "test_step", "predict_step")


def overrides(model: keras.Model, name: str) -> bool:
    """Whether the class of the Keras model ``model`` defines its own ``name`` (not ``keras.Model``'s)."""
    return bool(overridden(model, import_keras().Model, (name,)))


def runs_keras_steps(model: keras.Model) -> bool:
    """True for a Keras model whose class overrides ``train_step``, ``test_step``, ``predict_step`` or ``compile``."""
    return any(overrides(model, name) for name in (*STEP_METHODS, "compile"))


def pythonify_logs(logs: Mapping[str, Any]) -> Dict[str, Any]:
    """Logs as Keras's callbacks receive them: keys sorted, nested dicts flattened, values as Python floats."""
    out: Dict[str, Any] = {}
    for key, value in sorted((logs or {}).items()):
        if isinstance(value, Mapping):
            out.update(pythonify_logs(value))
            continue
        try:
            out[key] = float(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
        except (TypeError, ValueError, RuntimeError):
            out[key] = value
    return out


def _as_numbers(logs: Mapping[str, Any]) -> Any:
    # The values read now (the metrics change later), the nesting kept for Keras's flattening.
    if isinstance(logs, Mapping):
        return {k: _as_numbers(v) for k, v in logs.items()}
    return pythonify_logs({"value": logs})["value"]


def keras_data(batch: Any, packed: bool) -> Tuple[Any, Optional[GlobalBatchInfo]]:
    """``(the batch as Keras's data adapter yields it, its DDP batch info or None)``.

    The bridge's array loaders yield ``(x, y, sample_weight)`` with ``None`` entries (``packed``); Keras
    yields ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)``. Other loaders' batches are Keras's as they are.
    """
    batch, info = split_batch_info(batch)
    if info is not None and len(batch) == 1 and not packed:
        batch = batch[0]
    if packed and isinstance(batch, tuple):
        while len(batch) > 1 and batch[-1] is None:
            batch = batch[:-1]
    return batch, info


class StepLogs:
    """The logs of one stage (training, or validation/evaluation) of a model run by :class:`KerasSteps`.

    It answers what :class:`~keras_bridge.compile.tracking.StageTracker` answers (``updated``,
    ``results``, ``reset``), from the logs the model's steps return and its own metrics.
    """

    hooks = None

    def __init__(self, steps: KerasSteps, training: bool) -> None:
        self.steps = steps
        self.training = training
        self.updated = False
        self._last: Any = None
        self._epoch: Optional[Dict[str, Any]] = None
        self._checked = False

    def record(self, logs: Mapping[str, Any]) -> None:
        if not self._checked:
            # Under DDP, at the first step: logs that could not be combined over the processes are refused
            # now (their keys are known only once the model's own step has run), not at the epoch's end.
            self._checked = True
            self.steps.check_logs(logs)
        self._last = logs
        self._epoch = None
        self.updated = True

    def results(self, sync: bool) -> Dict[str, Any]:
        """The last step's logs (``sync=False``), or the epoch's (a collective under DDP)."""
        if not sync:
            return pythonify_logs(self._last)
        return pythonify_logs(self._epoch_logs())

    def with_validation(self, val_logs: Mapping[str, Any]) -> Dict[str, Any]:
        """The epoch's logs and the ``val_*`` logs, as Keras's callbacks receive them at the epoch end.

        Keras flattens the epoch's logs only then: the keys of nested logs (a step returning
        ``{m.name: m.result() for m in self.metrics}`` nests the compiled metrics under
        ``"compile_metrics"``) are sorted with their parent's key.
        """
        return pythonify_logs({**self._epoch_logs(), **val_logs})

    def _epoch_logs(self) -> Dict[str, Any]:
        if self._epoch is None:
            self._epoch = _as_numbers(self.steps.epoch_logs(self._last)) if self.updated else {}
        return self._epoch

    def freeze(self) -> None:
        """Read the epoch's logs now (Keras reads them before validation resets the shared metrics)."""
        if self.updated and self._epoch is None:
            self.results(sync=True)

    def reset(self) -> None:
        if not self.training:
            self.steps.train_logs.freeze()
        self.steps.model.reset_metrics()
        self._last = self._epoch = None
        self.updated = self._checked = False

    def to(self, device: Any) -> StepLogs:
        return self


class KerasSteps:
    """Calls a Keras model's step functions for Lightning, as Keras's torch trainer calls them.

    Args:
        model: the Keras model (compiled by Keras).
    """

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self.train_logs = StepLogs(self, training=True)
        self.eval_logs = StepLogs(self, training=False)
        # Per stage: whether its loader yields (x, y, sample_weight) with None entries (the bridge's arrays).
        self.packed = {"train": True, "eval": True, "predict": True}

    # ------------------------------------------------------------------ before a run
    def prepare(self, mode: str, packed: Dict[str, bool]) -> None:
        """Make the step functions Keras's ``fit`` / ``evaluate`` / ``predict`` make (their checks included).

        Args:
            mode: ``"fit"``, ``"evaluate"`` or ``"predict"``.
            packed: per stage (``"train"``, ``"eval"``, ``"predict"``), whether its loader is the bridge's
                array loader.

        Raises:
            ValueError: Keras's own refusals, e.g. ``steps_per_execution`` above 1 on the torch backend.
        """
        self.packed.update(packed)
        model = self.model
        if mode in ("fit", "evaluate"):
            if mode == "fit":
                model.make_train_function()
            model.make_test_function()
        else:
            model.make_predict_function()

    def build(self, batch: object, stage: str) -> None:
        """Build the model's unbuilt state from the first batch, as Keras's ``fit`` / ``evaluate`` do first."""
        keras_symbolic_build(self.model, keras_data(batch, self.packed[stage])[0])

    def check_callbacks(self, callbacks: Iterable[object]) -> None:
        """Refuse, before the Trainer is made, a callback that would write a Lightning checkpoint (``.ckpt``)."""
        from lightning.pytorch.callbacks import Checkpoint

        for callback in callbacks:
            if isinstance(callback, Checkpoint):
                self.refuse_lightning_checkpoint(f"a Lightning `{type(callback).__name__}` in `callbacks`")
            filepath = str(getattr(callback, "filepath", "") or "")
            if filepath.endswith(".ckpt"):
                self.refuse_lightning_checkpoint(f"`{type(callback).__name__}(filepath={filepath!r})` in `callbacks`")

    def check_trainer(self, trainer: pl.Trainer) -> None:
        """Refuse Trainer options a Keras step cannot honour, before training starts."""
        checkpoints = list(getattr(trainer, "checkpoint_callbacks", None) or [])
        if checkpoints:
            names = ", ".join(type(cb).__name__ for cb in checkpoints)
            self.refuse_lightning_checkpoint(
                f"the Trainer's Lightning checkpoint callbacks ({names}; a Trainer made with "
                "`enable_checkpointing=True` has one)"
            )
        precision = str(getattr(trainer, "precision", "32"))
        if precision in ("16-mixed", "16"):
            raise ValueError(
                "A Keras model's own `train_step` calls `backward` itself, so Lightning's float16 loss scaling "
                f"cannot apply to it. Received: trainer precision={precision!r}. Use precision='bf16-mixed', or "
                "the model's `keras.mixed_precision` policy 'mixed_float16' (Keras scales the loss in "
                "`compile(auto_scale_loss=True)`)."
            )

    # ------------------------------------------------------------------ steps
    def train_step(self, batch: object, trainer: pl.Trainer) -> None:
        data, info = keras_data(batch, self.packed["train"])
        with self._averaging_gradients(trainer, data, info):
            logs = self.model.train_function([data])
        self.train_logs.record(logs)

    def test_step(self, batch: object) -> None:
        data, _ = keras_data(batch, self.packed["eval"])
        with torch.inference_mode(False):  # Keras's test step runs under no_grad only
            self.eval_logs.record(self.model.test_function([data]))

    def predict_step(self, batch: object) -> Any:
        data, _ = keras_data(batch, self.packed["predict"])
        if self.packed["predict"] and isinstance(data, tuple):
            data = data[:1]
        with torch.inference_mode(False):
            return self.model.predict_function([data])

    # ------------------------------------------------------------------ logs
    def epoch_logs(self, last: Any) -> Any:
        """Keras's epoch logs: the model's metric results when they have the last logs' keys, else the last logs."""
        _, world = rank_world()
        if world > 1:
            self._sum_metric_states()
        results = self.model.get_metrics_result()
        if isinstance(last, Mapping) and set(last) == set(results):
            return results
        by_name = {m.name: m for m in self.model.metrics}
        if world > 1 and isinstance(last, Mapping) and set(last) <= set(by_name):
            # `{m.name: m.result() for m in self.metrics}`: the same results, of the summed states.
            return {name: by_name[name].result() for name in last}
        self.check_logs(last, results)
        return last

    def check_logs(self, logs: Any, results: Optional[Mapping[str, Any]] = None) -> None:
        """Under DDP, refuse step logs that are not the model's metric results (the bridge sums those only)."""
        if rank_world()[1] == 1:
            return
        results = self.model.get_metrics_result() if results is None else results
        by_name = {m.name: m for m in self.model.metrics}
        mapping = isinstance(logs, Mapping)
        combinable = mapping and (set(logs) == set(results) or set(logs) <= set(by_name))
        if combinable and set(logs) != set(results):
            # Named like metrics, the epoch's values are those metrics' results: only if the step returned
            # them (a loss tensor logged under the loss tracker's name would be replaced silently).
            now = {name: by_name[name].result() for name in logs}
            combinable = _as_numbers(dict(logs)) == _as_numbers(now)
        if not combinable:
            last = logs if mapping else {}
            raise RuntimeError(
                f"Under DDP the logs of `{type(self.model).__name__}.train_step`/`test_step` must be the results of "
                f"the model's metrics (`model.metrics`), which the bridge sums over the processes. Received logs "
                f"with keys {sorted(last or {})} (values: {_as_numbers(dict(last or {}))}); the metrics give "
                f"{_as_numbers(dict(results))}. Return "
                "`{m.name: m.result() for m in self.metrics}` (tracking each value with a keras.metrics.Mean), "
                "or train on one device."
            )

    def ordered_results(self, logs: Dict[str, Any]) -> Any:
        """``evaluate``'s return value in Keras's order (the model's metrics first, then the other keys sorted)."""
        return keras_flatten_metrics_in_order(self.model, logs)

    def _sum_metric_states(self) -> None:
        dist = torch.distributed
        _, world = rank_world()
        for metric in self.model.metrics:
            for variable in metric.variables:
                aggregation = getattr(variable, "aggregation", "sum")
                value = variable.value.detach().clone()
                if aggregation in ("sum", "mean"):
                    dist.all_reduce(value)
                    if aggregation == "mean":
                        value = value / world
                elif aggregation == "only_first_replica":
                    dist.broadcast(value, src=0)
                else:
                    raise RuntimeError(
                        f"The metric {metric.name!r} keeps the variable {variable.name!r} with aggregation="
                        f"{aggregation!r}: the bridge cannot combine it over the DDP processes. Create it with "
                        "`aggregation='sum'` (Keras's default for metrics), or train on one device."
                    )
                variable.assign(value)

    # ------------------------------------------------------------------ DDP
    @contextlib.contextmanager
    def _averaging_gradients(self, trainer: pl.Trainer, data: Any, info: Optional[GlobalBatchInfo]) -> Iterator[None]:
        """During a step on several processes: the model's optimizers average the gradients they apply."""
        _, world = rank_world()
        wrapper = getattr(trainer.strategy, "model", None)
        if world == 1 or not isinstance(wrapper, torch.nn.parallel.DistributedDataParallel):
            yield
            return
        # This shard's share of the global batch: the average equals the gradient of the global batch's mean.
        weight = _batch_size(data) / info.global_size if info is not None else 1.0 / world
        # The step calls backward itself (maybe twice, on parts of the model): DDP's own reducer stays idle.
        wrapper.require_backward_grad_sync = False
        optimizers = model_optimizers(self.model)
        for optimizer in optimizers:
            optimizer.apply = _averaging(optimizer.apply, weight)
        try:
            yield
        finally:
            for optimizer in optimizers:
                del optimizer.apply

    def refuse_lightning_checkpoint(self, received: str = "") -> None:
        """Lightning checkpoints hold the optimizers Lightning steps: none here. Raise, naming what works.

        Args:
            received: what asked for one (a callback, the Trainer's checkpointing), for the message.
        """
        raise ValueError(
            f"`{type(self.model).__name__}` trains with its own steps and optimizers, which a Lightning checkpoint "
            "(`.ckpt`, `trainer.save_checkpoint`, BackupAndRestore under DDP) cannot hold: resuming from one would "
            "restart the optimizers. Save Keras's own file instead: `module.save('model.keras')` or "
            "`keras.callbacks.ModelCheckpoint('model.keras')` (weights and optimizer state, as Keras saves them); "
            "pass a Trainer with `enable_checkpointing=False`." + (f" Received: {received}." if received else "")
        )

    def finish_fit(self, epochs_run: bool) -> None:
        """Keras's end of ``fit``: EMA weights copied into the model (``use_ema``)."""
        optimizer = getattr(self.model, "optimizer", None)
        if epochs_run and isinstance(optimizer, import_keras().optimizers.Optimizer):
            optimizer.finalize_variable_values(self.model.trainable_weights)


def _averaging(apply: Any, weight: float) -> Any:
    def averaged_apply(grads: Any, trainable_variables: Any = None) -> Any:
        present = [g for g in grads if g is not None]
        if present:
            flat = torch.cat([g.reshape(-1).float() * weight for g in present])
            torch.distributed.all_reduce(flat)
            offset = 0
            for g in present:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()
        return apply(grads, trainable_variables)

    return averaged_apply


def model_optimizers(model: keras.Model) -> List[Any]:
    """The Keras optimizers the model holds as attributes (``optimizer``, a GAN's ``d_optimizer``...), once each."""
    base = import_keras().optimizers.Optimizer
    found: List[Any] = []
    for value in vars(model).values():
        if isinstance(value, base) and all(value is not f for f in found):
            found.append(value)
    return found


def _batch_size(data: Any) -> int:
    leaves = [t for t in import_keras().tree.flatten(data) if t is not None and hasattr(t, "shape")]
    return int(leaves[0].shape[0]) if leaves else 0
