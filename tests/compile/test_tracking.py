"""StageTracker (keras_bridge/compile/tracking.py): the running means behind one stage's Keras logs.

Covers the tracker names taken from the loss and metric plans, ``update_losses`` (batch-size weighted
means of the total and per-output losses across batches), ``update_metrics`` (weighted metrics get
the sample weights, the others do not), ``results`` (sorted keys, Python floats, the same numbers
with and without ``sync`` outside a process group), ``reset`` and ``clone``; expected numbers are
computed by hand.
"""

import pytest
import torch

from keras_bridge.compile.loss_plan import LossPlan
from keras_bridge.compile.metric_plan import MetricPlan
from keras_bridge.compile.tracking import StageTracker

NAMES = ["a", "b"]
# Two batches of output "a" (sizes 2 and 4): absolute errors 1, 2 | 1, 1, 1, 5.
BATCHES = [
    (torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [3.0]]), torch.tensor([1.0, 0.0])),
    (torch.zeros(4, 1), torch.tensor([[1.0], [1.0], [1.0], [5.0]]), torch.tensor([1.0, 1.0, 1.0, 2.0])),
]
# (batch size, total loss, per-output losses) reported for the same two batches.
LOSSES = [(2, 3.0, [1.0, 2.0]), (4, 6.0, [4.0, 2.0])]


def plans(loss=("mse", "mae"), metrics=(["mae"], None), weighted_metrics=None):
    loss_plan = LossPlan(list(loss))
    loss_plan.build(NAMES)
    metric_plan = MetricPlan(list(metrics), weighted_metrics)
    y_true = [BATCHES[0][0], torch.zeros(2, 1)]
    y_pred = [BATCHES[0][1], torch.zeros(2, 1)]
    metric_plan.build(NAMES, y_true, y_pred)
    return loss_plan, metric_plan


def feed(tracker):
    for (batch_size, total, outputs), (y_true, y_pred, sw) in zip(LOSSES, BATCHES):
        tracker.update_losses(torch.tensor(total), [torch.tensor(v) for v in outputs], batch_size)
        tracker.update_metrics([y_true, None], [y_pred, torch.zeros(len(y_pred), 1)], [sw, None])


def test_names_come_from_the_plans():
    tracker = StageTracker(*plans(weighted_metrics={"a": "mae"}), clone=True)
    assert tracker.names == ["loss", "a_loss", "b_loss", "a_mae", "a_weighted_mae"]
    assert tracker.output_loss_names == ["a_loss", "b_loss"]
    assert tracker.metric_names == ["a_mae", "a_weighted_mae"]


def test_one_loss_term_has_no_per_output_tracker():
    tracker = StageTracker(*plans(loss=("mse", None)), clone=True)
    assert tracker.names == ["loss", "a_mae"]


def test_without_plans_only_the_loss_is_tracked():
    tracker = StageTracker(None, None, clone=False)
    assert tracker.names == ["loss"]
    tracker.update_losses(torch.tensor(2.0), [], 3)
    tracker.update_losses(torch.tensor(5.0), [], 1)
    assert tracker.results(sync=False) == {"loss": pytest.approx((2.0 * 3 + 5.0 * 1) / 4)}


@pytest.mark.parametrize("sync", [False, True], ids=["local", "sync-without-process-group"])
def test_results_are_batch_size_weighted_means_with_sorted_keys(sync):
    tracker = StageTracker(*plans(weighted_metrics={"a": "mae"}), clone=True)
    feed(tracker)
    results = tracker.results(sync=sync)
    assert list(results) == ["a_loss", "a_mae", "a_weighted_mae", "b_loss", "loss"]
    assert all(type(v) is float for v in results.values())
    assert results == {
        "loss": pytest.approx((3.0 * 2 + 6.0 * 4) / 6),  # 5.0
        "a_loss": pytest.approx((1.0 * 2 + 4.0 * 4) / 6),  # 3.0
        "b_loss": pytest.approx((2.0 * 2 + 2.0 * 4) / 6),  # 2.0
        "a_mae": pytest.approx((1 + 2 + 1 + 1 + 1 + 5) / 6),  # no sample weights: 11/6
        "a_weighted_mae": pytest.approx((1 * 1 + 0 * 2 + 1 + 1 + 1 + 2 * 5) / (1 + 0 + 1 + 1 + 1 + 2)),  # 2.8
    }


def test_results_after_each_batch_are_running_means():
    tracker = StageTracker(*plans(), clone=True)
    batch_size, total, outputs = LOSSES[0]
    tracker.update_losses(torch.tensor(total), [torch.tensor(v) for v in outputs], batch_size)
    assert tracker.results(sync=False)["loss"] == pytest.approx(3.0)
    batch_size, total, outputs = LOSSES[1]
    tracker.update_losses(torch.tensor(total), [torch.tensor(v) for v in outputs], batch_size)
    assert tracker.results(sync=False)["loss"] == pytest.approx(5.0)


def test_losses_are_detached():
    tracker = StageTracker(None, None, clone=False)
    total = torch.tensor(2.0, requires_grad=True) * 1.5
    tracker.update_losses(total, [], 2)
    assert not tracker.loss.total.requires_grad
    assert tracker.results(sync=False) == {"loss": pytest.approx(3.0)}


def test_reset_starts_the_means_again():
    tracker = StageTracker(*plans(), clone=True)
    assert not tracker.updated
    feed(tracker)
    assert tracker.updated
    tracker.reset()
    assert not tracker.updated
    assert tracker.results(sync=False) == {"a_loss": 0.0, "a_mae": 0.0, "b_loss": 0.0, "loss": 0.0}
    batch_size, total, outputs = LOSSES[1]
    tracker.update_losses(torch.tensor(total), [torch.tensor(v) for v in outputs], batch_size)
    y_true, y_pred, sw = BATCHES[1]
    tracker.update_metrics([y_true, None], [y_pred, torch.zeros(4, 1)], [sw, None])
    assert tracker.results(sync=False) == {
        "a_loss": pytest.approx(4.0),
        "a_mae": pytest.approx(8 / 4),
        "b_loss": pytest.approx(2.0),
        "loss": pytest.approx(6.0),
    }


@pytest.mark.parametrize("clone", [True, False])
def test_clone_copies_the_plans_metrics(clone):
    loss_plan, metric_plan = plans()
    tracker = StageTracker(loss_plan, metric_plan, clone=clone)
    assert (tracker.metrics[0] is metric_plan.entries[0].metric) is not clone
    feed(tracker)
    plan_metric_count = float(metric_plan.entries[0].metric.count)
    assert plan_metric_count == (0.0 if clone else 6.0)


def test_two_stages_keep_separate_states():
    # Validation runs inside the training epoch: its tracker must not touch the training one.
    loss_plan, metric_plan = plans()
    train, val = StageTracker(loss_plan, metric_plan, clone=True), StageTracker(loss_plan, metric_plan, clone=True)
    feed(train)
    val.update_losses(torch.tensor(10.0), [torch.tensor(1.0), torch.tensor(9.0)], 5)
    assert train.results(sync=False)["loss"] == pytest.approx(5.0)
    assert val.results(sync=False)["loss"] == pytest.approx(10.0)
    assert val.results(sync=False)["a_mae"] == 0.0
