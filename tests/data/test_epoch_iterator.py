"""StepsCarryOver and KerasLoader (keras_bridge/data/epoch_iterator.py): Keras's epoch rules, unit by unit.

``StepsCarryOver``: without ``steps`` every epoch is one new pass; with ``steps`` the iterator carries
over between epochs, a pass that runs out ends the epoch early with Keras's UserWarning and the next
epoch starts a new pass, and a pass of known length read exactly to its end is replaced silently.
``KerasLoader``: the order of the dataset hooks (``on_epoch_end`` once before the first epoch and after
each epoch's last batch, ``on_epoch_begin`` before each epoch; evaluation loaders reset before every
pass) and ``len()``, through a tiny subclass that records what happens.
"""

import warnings

import pytest

from keras_bridge.data.epoch_iterator import KerasLoader, StepsCarryOver


class Passes:
    """``new_pass`` for StepsCarryOver: counts the passes started; ``known`` says whether their length is given."""

    def __init__(self, items="abcd", known=True):
        self.items, self.known, self.started = items, known, 0

    def __call__(self):
        self.started += 1
        return iter(self.items), (len(self.items) if self.known else None)


def epochs(carry, passes, n):
    """The items of ``n`` epochs, and the ran-out warnings raised by each."""
    out = []
    for _ in range(n):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            items = "".join(carry.epoch(passes))
        out.append((items, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]))
    return out


def ran_out(done, steps):
    return f"Your input ran out of data after {done} of steps_per_epoch={steps} batches"


@pytest.mark.parametrize("known", [True, False])
def test_without_steps_every_epoch_is_a_new_whole_pass(known):
    carry, passes = StepsCarryOver(None), Passes(known=known)
    assert epochs(carry, passes, 3) == [("abcd", [])] * 3
    assert passes.started == 3


@pytest.mark.parametrize("known", [True, False])
def test_steps_dividing_a_pass_carry_over(known):
    carry, passes = StepsCarryOver(2), Passes("abcdef", known=known)
    assert epochs(carry, passes, 3) == [("ab", []), ("cd", []), ("ef", [])]
    assert passes.started == 1


def test_a_known_length_pass_read_to_its_end_is_replaced_without_warning():
    carry, passes = StepsCarryOver(2), Passes("abcd", known=True)
    assert epochs(carry, passes, 4) == [("ab", []), ("cd", []), ("ab", []), ("cd", [])]
    assert passes.started == 2


def test_a_pass_that_runs_out_ends_the_epoch_early_and_the_next_starts_a_new_pass():
    carry, passes = StepsCarryOver(3), Passes("abcd", known=True)
    result = epochs(carry, passes, 3)
    assert [items for items, _ in result] == ["abc", "d", "abc"]
    assert result[0][1] == [] and result[2][1] == []
    assert len(result[1][1]) == 1 and result[1][1][0].startswith(ran_out(1, 3))
    assert "The next epoch starts a new pass" in result[1][1][0]
    assert passes.started == 2


def test_an_unknown_length_pass_is_only_known_to_be_over_when_it_runs_out():
    carry, passes = StepsCarryOver(2), Passes("abcd", known=False)
    result = epochs(carry, passes, 4)
    assert [items for items, _ in result] == ["ab", "cd", "", "ab"]
    assert [len(w) for _, w in result] == [0, 0, 1, 0]
    assert result[2][1][0].startswith(ran_out(0, 2))
    assert passes.started == 2


def test_steps_beyond_a_whole_pass_warn_every_epoch():
    carry, passes = StepsCarryOver(5), Passes("abc")
    result = epochs(carry, passes, 2)
    assert [items for items, _ in result] == ["abc", "abc"]
    assert all(len(w) == 1 and w[0].startswith(ran_out(3, 5)) for _, w in result)
    assert passes.started == 2


def test_the_warning_is_a_user_warning():
    carry = StepsCarryOver(3)
    with pytest.warns(UserWarning, match="steps_per_epoch=3"):
        list(carry.epoch(Passes("ab")))


def test_restart_forgets_the_carried_over_pass():
    carry, passes = StepsCarryOver(2), Passes("abcdef")
    assert "".join(carry.epoch(passes)) == "ab"
    carry.restart()
    assert "".join(carry.epoch(passes)) == "ab"
    assert passes.started == 2


class RecordingLoader(KerasLoader):
    """Batches ``range(n)`` per epoch (through a StepsCarryOver), recording hooks and restarts in ``events``."""

    def __init__(self, n=2, known=True, **kwargs):
        super().__init__(**kwargs)
        self.n, self.known, self.events = n, known, []
        self._carry = StepsCarryOver(self.steps_per_epoch)

    def num_batches(self):
        return self.n if self.known else None

    def on_epoch_begin(self):
        self.events.append("begin")

    def on_epoch_end(self):
        self.events.append("end")

    def _restart(self):
        self.events.append("restart")
        self._carry.restart()

    def _epoch_batches(self):
        return self._carry.epoch(lambda: (iter(range(self.n)), self.n))


def consume(loader, stop_after=None):
    for i, batch in enumerate(loader):
        loader.events.append(f"batch {batch}")
        if stop_after is not None and i + 1 == stop_after:
            break


def test_training_hooks_order():
    loader = RecordingLoader(n=2)
    consume(loader)
    # on_epoch_end runs once before the first epoch (Keras's reset at fit start), and as soon as the
    # last batch has been read (before it is handed out: Lightning stops asking after the last batch).
    assert loader.events == ["restart", "end", "begin", "batch 0", "end", "batch 1"]
    loader.events.clear()
    consume(loader)
    assert loader.events == ["begin", "batch 0", "end", "batch 1"]


def test_reset_runs_on_epoch_end_again_before_the_next_epoch():
    loader = RecordingLoader(n=1)
    consume(loader)
    loader.events.clear()
    loader.reset()
    consume(loader)
    assert loader.events == ["restart", "end", "begin", "end", "batch 0"]


def test_evaluation_loaders_reset_before_every_pass():
    loader = RecordingLoader(n=2, evaluation=True)
    consume(loader)
    consume(loader)
    once = ["restart", "end", "begin", "batch 0", "end", "batch 1"]
    assert loader.events == once + once


def test_an_empty_epoch_still_ends():
    loader = RecordingLoader(n=0)
    consume(loader)
    assert loader.events == ["restart", "end", "begin", "end"]


def test_a_loop_that_breaks_early_skips_on_epoch_end():
    loader = RecordingLoader(n=3)
    consume(loader, stop_after=1)
    assert loader.events == ["restart", "end", "begin", "batch 0"]


def test_steps_per_epoch_carry_over_through_the_loader():
    loader = RecordingLoader(n=4, steps_per_epoch=3)
    consume(loader)
    loader.events.clear()
    with pytest.warns(UserWarning, match="after 1 of steps_per_epoch=3"):
        consume(loader)
    # The pass ran out: the epoch ends after its one remaining batch.
    assert loader.events == ["begin", "end", "batch 3"]
    loader.events.clear()
    consume(loader)
    assert loader.events == ["begin", "batch 0", "batch 1", "end", "batch 2"]


@pytest.mark.parametrize(
    ("n", "known", "steps", "length"),
    [(5, True, None, 5), (5, True, 3, 3), (2, True, 3, 2), (5, False, 3, 3)],
    ids=["pass", "steps-shorter", "pass-shorter", "unknown-pass-with-steps"],
)
def test_len(n, known, steps, length):
    assert len(RecordingLoader(n=n, known=known, steps_per_epoch=steps)) == length


def test_len_of_an_unknown_length_without_steps_is_a_type_error():
    with pytest.raises(TypeError, match="RecordingLoader has no known number of batches"):
        len(RecordingLoader(n=3, known=False))


def test_base_class_leaves_batches_and_peek_to_subclasses():
    loader = KerasLoader()
    assert loader.num_batches() is None
    with pytest.raises(NotImplementedError):
        loader.peek()
    with pytest.raises(NotImplementedError):
        list(loader)
