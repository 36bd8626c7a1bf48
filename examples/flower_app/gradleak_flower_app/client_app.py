"""The ClientApp: trains on its private CIFAR-10 images as the server's config says, sends its weights."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from gradleak_flower_app.task import Net, client_images, round_batch, save_truth, train

app = ClientApp()


@app.train()
def train_round(msg: Message, context: Context) -> Message:
    config = msg.content["config"]
    model = Net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    partition = int(context.node_config["partition-id"])
    images, labels = client_images(partition, int(context.node_config["num-partitions"]))
    server_round = int(config["server-round"])
    x, y = round_batch(images, labels, server_round, int(config["batch-size"]))
    run = context.run_config
    loss = train(
        model, x, y, lr=float(config["lr"]), local_steps=int(config["local-steps"]),
        batch_size=int(config["batch-size"]), noise_multiplier=float(run["dp-noise-multiplier"]),
        max_grad_norm=float(run["dp-max-grad-norm"]), seed=int(run["seed"]) * 1000 + server_round * 10 + partition,
    )
    if run["truth-dir"]:
        save_truth(str(run["truth-dir"]), server_round, context.node_id, x, y)
    state = {k.removeprefix("_module."): v for k, v in model.state_dict().items()}  # Opacus wraps the model
    # Exactly what a FedAvg client sends anyway: its weights and its example count.
    reply = RecordDict({"arrays": ArrayRecord(state), "metrics": MetricRecord({"train-loss": loss, "num-examples": len(x)})})
    return Message(content=reply, reply_to=msg)
