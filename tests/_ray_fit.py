"""Script for tests/test_ray_train.py: the digits-MLP fit of tests/_ddp_launchers.py on Ray Train, 2 CPU workers.

Usage: python tests/_ray_fit.py OUT_DIR

The ``lightning.Trainer`` is built as Ray documents it (``RayDDPStrategy``, ``RayLightningEnvironment``,
``RayTrainReportCallback``, ``prepare_trainer``) and passed to ``fit(trainer=...)``. Worker 0 writes
``result.json`` (History, weights, evaluate, predict, the metrics Ray received).
"""

import json
import os
import sys


def train_func(config):
    import torch

    import keras_bridge as kb  # isort: split
    import keras
    import lightning.pytorch as pl
    import ray.train
    from _ddp_launchers import EPOCHS, digits
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer

    out_dir = config["out_dir"]
    torch.manual_seed(0)
    x, y = digits()
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10), torch.nn.Softmax(-1))
    module = kb.KerasModule(net)
    module.compile(optimizer=kb.optimizers.SGD(0.1, momentum=0.9), loss="sparse_categorical_crossentropy",
                   metrics=["accuracy"])  # fmt: skip
    os.makedirs(os.path.join(out_dir, "ckpt"), exist_ok=True)
    callbacks = [
        keras.callbacks.ModelCheckpoint(os.path.join(out_dir, "ckpt", "m_{epoch}.weights.h5"), save_weights_only=True),
        keras.callbacks.CSVLogger(os.path.join(out_dir, "log.csv")),
        kb.callbacks.ray_report(),  # in place of Ray's RayTrainReportCallback: Keras's numbers, a .keras file
    ]
    trainer = pl.Trainer(devices="auto", accelerator="cpu", strategy=RayDDPStrategy(),
                         plugins=[RayLightningEnvironment()],
                         enable_checkpointing=False, logger=False, enable_progress_bar=False)  # fmt: skip
    trainer = prepare_trainer(trainer)
    history = module.fit(x, y, batch_size=64, validation_split=0.2, epochs=EPOCHS, shuffle=False,
                         callbacks=callbacks, verbose=2, trainer=trainer)  # fmt: skip
    evaluation = module.evaluate(x[480:], y[480:], batch_size=64, verbose=0, return_dict=True, trainer=trainer)
    predictions = module.predict(x[480:], batch_size=64, verbose=0, trainer=trainer)
    rank = ray.train.get_context().get_world_rank()
    result = {"evaluate": evaluation, "predictions": predictions.tolist()}
    if rank == 0:
        result.update(history=history.history, epoch=history.epoch,
                      evaluate_alone=module.evaluate(x[480:], y[480:], batch_size=64, verbose=0, return_dict=True),
                      weights=[p.detach().numpy().tolist() for p in net.parameters()])  # fmt: skip
    name = "result.json" if rank == 0 else f"result_rank{rank}.json"
    with open(os.path.join(out_dir, name), "w") as f:
        json.dump(result, f)


def main(out_dir: str) -> None:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True)
    trainer = TorchTrainer(
        train_func,
        train_loop_config={"out_dir": out_dir},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
        run_config=RunConfig(storage_path=os.path.join(out_dir, "ray_results"), name="kb"),
    )
    result = trainer.fit()
    import keras_bridge as kb

    with result.checkpoint.as_directory() as directory:
        loaded = kb.load_model(os.path.join(directory, "model.keras"))
    from _ddp_launchers import digits

    x, y = digits()
    reloaded = loaded.evaluate(x[480:], y[480:], batch_size=64, verbose=0, return_dict=True)
    with open(os.path.join(out_dir, "ray_metrics.json"), "w") as f:
        json.dump({"last": result.metrics, "reloaded_evaluate": reloaded}, f)
    ray.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
