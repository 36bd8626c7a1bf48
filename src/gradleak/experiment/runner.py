"""Run a prepared experiment: attack, score against the private data, write the outputs."""

from __future__ import annotations

from gradleak.experiment.config import Prepared, RunConfig, RunOutcome
from gradleak.experiment.outputs import write_outputs, write_unscored
from gradleak.experiment.prepare import prepare
from gradleak.experiment.progress import Progress
from gradleak.experiment.records import scored_metrics


def execute(prepared: Prepared) -> RunOutcome:
    """Run the attack, score it against the private data, and write every output file."""
    from gradleak.metrics import score_batch

    config = prepared.config
    progress = Progress(prepared.images, config.iterations, config.quiet)
    try:
        result = prepared.attack.run(prepared.model, prepared.update, observer=progress)
    except BaseException:  # Ctrl-C or a failure: the bar must not claim 100% before "interrupted"
        progress.close(finished=False)
        raise
    progress.close(iterations=result.iterations)
    if prepared.images is None:
        return write_unscored(prepared, result, progress)
    score = score_batch(
        result.images,
        prepared.images,
        true_labels=prepared.labels,
        recovered_labels=result.labels,
        indices=None if config.images or config.update else list(config.indices),
    )
    metrics = scored_metrics(prepared, result, score)
    write_outputs(prepared, result, score, metrics, progress)
    return RunOutcome(out_dir=prepared.out_dir, metrics=metrics, result=result)


def run_experiment(config: RunConfig) -> RunOutcome:
    """Validate, attack, score and write outputs. Raises GradleakError on bad input."""
    return execute(prepare(config))

