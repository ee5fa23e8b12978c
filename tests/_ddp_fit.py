"""Script for tests/test_ddp.py: the same fit on 1 or N processes; rank 0 writes History and weights.

Usage: python tests/_ddp_fit.py OUT_JSON DEVICES
"""

import json
import os
import sys

import numpy as np
import torch

import keras_bridge as kb


def main(out_path: str, devices: int) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(74, 6)).astype("float32")  # 59 training samples: the last global batch of 16 is 11 (6 + 5)
    y = (x[:, :3].sum(axis=1) > 0).astype("int64") + (x[:, 3] > 1).astype("int64")
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3), torch.nn.Softmax(-1))
    module = kb.KerasModule(net)
    module.compile(
        optimizer=kb.optimizers.SGD(0.1, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        weighted_metrics=["sparse_categorical_crossentropy"],
    )
    trainer = {"accelerator": "cpu", "devices": devices}
    if devices > 1:
        trainer["strategy"] = "ddp"
    history = module.fit(
        x,
        y,
        batch_size=16,
        epochs=3,
        validation_split=0.2,
        class_weight={0: 1.0, 1: 2.0, 2: 0.5},
        verbose=0,
        trainer=trainer,
    )
    # Fresh Trainers after fit: on the process that launched the others, Lightning's popen launcher has
    # set LOCAL_RANK, so these join the existing process group instead of launching processes again.
    predictions = module.predict(x, batch_size=16, verbose=0, trainer=trainer)
    evaluation = module.evaluate(x, y, batch_size=16, verbose=0, return_dict=True, trainer=trainer)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        weights = [p.detach().numpy().tolist() for p in net.parameters()]
        with open(out_path, "w") as f:
            json.dump(
                {
                    "history": history.history,
                    "epoch": history.epoch,
                    "weights": weights,
                    "predictions": predictions.tolist(),
                    "evaluate": evaluation,
                },
                f,
            )
    elif devices > 1:
        # Every process gets the full predictions and the synchronised evaluate numbers.
        with open(out_path + f".rank{os.environ['LOCAL_RANK']}", "w") as f:
            json.dump({"predictions": predictions.tolist(), "evaluate": evaluation}, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
