"""Step-time benchmark: this framework's integrators against the reference code's way and torchjd.

    python -m framework.bench --json bench.json          # full run (about 5 minutes on 2 CPU cores)
    python -m framework.bench --quick --json quick.json  # tiny shapes, seconds (tests)
    python -m framework.bench --device cuda --precision bf16 --batch-size 64  # on a GPU (scripts/gpu_check.sh)

``--device`` (auto | cpu | cuda | cuda:N, default cpu) and ``--precision`` (32 | bf16 | 16, default 32,
:mod:`.precision`): at bf16/16 every variant's forward pass and losses run under ``torch.autocast``,
at 16 with its own ``GradScaler`` (the engine gets ``loss_scale``; the optimizer steps through the
scaler; torchjd's losses are scaled alike). A device or precision the machine cannot run is refused
in one line. Any run but the CPU float32 default prints the device name and the precision.

For each model, every variant trains its own copy of the same initial model on one fixed batch,
all in one process. A step is everything a training step does: forward, per-loss gradients,
integration, optimizer step (SGD, momentum 0.9, weight decay 1e-4, as the paper), ``zero_grad``.
Variants are interleaved in rounds (the order rotates every round), so slow drifts of the machine
hit every variant alike; ``step_ms`` is the median over all timed steps of the variant and
``ratio_to_sum`` is ``step_ms / step_ms(sum)`` on the same model.

``peak_mb`` (MiB) is the peak of live tensor memory during one step: what the variant holds between
steps (parameters, buffers, optimizer state, the batch) plus the highest point the step's own
allocations reach above it. On CPU the step is run once under ``torch.profiler`` with
``profile_memory=True`` and its allocation and free events are replayed in time order; on CUDA it
is ``torch.cuda.max_memory_allocated``. This counts tensors only (not allocator caching or the
Python heap), which is what the variants differ in, and it does not depend on what other
variants left behind in the process (resident-set figures would).

Models: ``cnn_cgmnist`` (the default experiment's small CNNs, CG-MNIST shapes, batch 64),
``resnet18_av`` (two ResNet-18s on a 1x128x128 spectrogram and 2 frames of 3x112x112, batch 16) and
``transformer_xmodal`` (``conf/model/transformer_xmodal.yaml`` on the same batch as ``resnet18_av``;
its step time relative to ``resnet18_av`` is printed variant by variant). The reference code's
step assumes one encoder per modality, so ``mmpareto_reference_style`` is not run on the
transformer (the log says so).

``mmpareto_stats`` is the real :class:`~framework.training.trainer.Trainer` step with the default
statistics settings of ``conf/train.yaml`` and a real :class:`~framework.tracking.RunTracker` on a
temporary sqlite store. Its ``step_ms`` is amortised: the median step (step statistics logged on
every step, buffered) plus the measured time of sending the buffered metrics per step, plus the
probe's covariance traces divided by ``noise_every``. Its ``peak_mb`` is the larger of the step's
and the probe's peaks.

Modules: :mod:`.cases` (the models, their batch, optimizer and time budgets), :mod:`.runner` (one
variant's state and timed step), :mod:`.variants` (the registry of variants, name -> the factory
of its runner), :mod:`.reference` (the reference code's MMPareto step), :mod:`.torchjd_step`
(the torchjd step), :mod:`.stats` (the trainer step with statistics), :mod:`.measure` (timing, peak
memory), :mod:`.protocol` (warmup, memory step, interleaved rounds of one model) and :mod:`.cli`
(the command line and its tables).
"""
