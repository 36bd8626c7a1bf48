"""The ServerApp: FedAvg over the clients, wrapped by gradleak's leakage audit."""

from __future__ import annotations

import json
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from gradleak.integrations.flower import GradleakAudit
from gradleak_flower_app.task import INPUT_SHAPE, initial_model, load_truth

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run = context.run_config
    nodes = int(run.get("min-nodes", 2))
    model = initial_model(int(run["seed"]))
    defenses = []
    if float(run["dp-noise-multiplier"]) > 0:  # the server's own DP policy: the attack may know it
        defenses.append(f"opacus:noise_multiplier={run['dp-noise-multiplier']},max_grad_norm={run['dp-max-grad-norm']}")
    truth_dir = str(run["truth-dir"])
    # The gradleak lines: wrap the strategy, say where results go and what one sample looks like.
    strategy = GradleakAudit(
        FedAvg(fraction_evaluate=0.0, min_train_nodes=nodes, min_available_nodes=nodes),
        model=model, out_dir=Path(str(run["audit-dir"])), input_shape=INPUT_SHAPE,
        attack=str(run["attack"]), attack_settings={"iterations": int(run["attack-iterations"])},
        client_defenses=defenses, seed=int(run["seed"]),
        reference=(lambda r, c: load_truth(truth_dir, r, c)) if truth_dir else None,
    )
    train_config = ConfigRecord({"lr": float(run["lr"]), "local-steps": int(run["local-steps"]),
                                 "batch-size": int(run["batch-size"])})
    result = strategy.start(
        grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=int(run["num-server-rounds"]), train_config=train_config,
    )
    finished = {"rounds": int(run["num-server-rounds"]), "audited": strategy.rows,
                "has_final_model": result.arrays is not None}
    (Path(str(run["audit-dir"])) / "federation.json").write_text(json.dumps(finished, indent=2) + "\n")
