"""GRAM training: the loop (loop.py) and its parts, imported by train.py and bench_train.py.

    state.py          TrainingRun: models, optimizers, loss scaler, EMAs; per-step random streams
    gan3d.py          the stage-1 process step (D step + G step, patch_split), official Gan3DProcess
    sr_gan3d.py       the GRAM-HD stage-2 step (patch GAN, R1 on both heads, cross-resolution consistency)
    losses.py         GAN / R1 / pose losses and the NaN check
    ema.py            EMA of G with torch_ema's warm-up
    checkpointing.py  the official 7-file checkpoint sets, saving and resuming
    distributed.py    process group, gradient averaging, cross-rank checks
    logs.py           scalars.jsonl / TensorBoard, snapshots, options.json
    launch.py         processes per GPU / torchrun / CPU
    control.py        the --output_dir lock, stopping on SIGINT/SIGTERM, workers dying with the launcher
"""
