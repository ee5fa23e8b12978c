"""Script for tests/trainer/test_keras_step_ddp.py: the guide's custom-train_step model on 1 or N processes.

Usage: python tests/trainer/_ddp_keras_step.py OUT_JSON DEVICES [raw-logs]
With DEVICES=1 it also trains the twin model with plain ``keras.Model.fit`` (written under "keras").
With ``raw-logs`` the step returns its loss tensor, not a metric result: the fit's error and the number of
steps run are written instead. Rank 0 writes the JSON.
"""

import json
import os
import sys

import keras
import numpy as np
from _keras_step_models import GuideModel, dense, regression_data

import keras_bridge as kb


class RawLogsModel(GuideModel):
    """Returns the batch's loss itself, which the processes could not combine into the global batch's."""

    def train_step(self, data):
        super().train_step(data)
        return {"loss": self.compute_loss(y=data[1], y_pred=self(data[0]))}


def build(cls=GuideModel):
    keras.utils.set_random_seed(21)
    model = dense(cls)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
    return model


def train(target, model, trainer=None):
    x, y = regression_data(n=94)  # 70 training samples: the last global batch of 16 is 6 (3 + 3)
    extra = {} if trainer is None else {"trainer": trainer}
    history = target.fit(x, y, batch_size=16, epochs=2, shuffle=False, validation_split=0.25, verbose=0, **extra)
    evaluation = target.evaluate(x, y, batch_size=16, verbose=0, return_dict=True, **extra)
    predictions = target.predict(x[:20], batch_size=8, verbose=0, **extra)
    return {
        "history": history.history,
        "evaluate": evaluation,
        "predictions": np.asarray(predictions).tolist(),
        "weights": [w.tolist() for w in model.get_weights()],
        "calls": dict(model.calls),
    }


def main(out_path: str, devices: int, raw_logs: bool = False) -> None:
    trainer = {"accelerator": "cpu", "devices": devices}
    if devices > 1:
        trainer["strategy"] = "ddp"
    if raw_logs:
        model = build(RawLogsModel)
        try:
            train(kb.KerasModule(model), model, trainer)
            result = {"error": None}
        except RuntimeError as err:
            result = {"error": str(err), "calls": dict(model.calls)}
    else:
        model = build()
        result = {"bridge": train(kb.KerasModule(model), model, trainer)}
    if devices == 1 and not raw_logs:
        reference = build()
        result["keras"] = train(reference, reference)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        with open(out_path, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:] == ["raw-logs"])
