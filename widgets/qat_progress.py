"""``QATProgress``: quantisation-aware training with live loss and metric.

A progress bar over epochs and a plotly chart of the training loss and the eval metric, updated
after every epoch (``workbench.qat.train_qat``'s ``on_epoch``); the plain-PTQ metric is drawn as a
reference line and the float metric as the ceiling. State in traitlets (``epoch``, ``status``);
``history`` is the DataFrame ``train_qat`` returns.
"""

from __future__ import annotations

import ipywidgets as W
import plotly.graph_objects as go
import traitlets
from plotly.subplots import make_subplots

from workbench.evaluate import evaluate
from workbench.qat import QATConfig, train_qat

from .chart import Chart


class QATProgress(W.VBox):
    epoch = traitlets.Int(-1, help="last finished epoch")
    status = traitlets.Unicode("")

    def __init__(self, task, float_model, qmodel, config: QATConfig = QATConfig(), checkpoint_dir=None, **kwargs):
        super().__init__(**kwargs)
        self.task, self.float_model, self.qmodel, self.config, self.checkpoint_dir = task, float_model, qmodel, config, checkpoint_dir
        self.history = None
        self.fp_metric = evaluate(float_model, task) if float_model is not None else None
        self.ptq_metric = evaluate(qmodel, task)
        self.progress = W.IntProgress(value=0, min=0, max=config.epochs, description="epochs", layout=W.Layout(width="320px"))
        self.label = W.Label(f"PTQ {task.metric.name} {self.ptq_metric:.4f}")
        self.run_button = W.Button(description="Train", icon="play", button_style="primary")
        self.run_button.on_click(lambda _: self.run())
        fig = make_subplots(specs=[[{"secondary_y": True}]])
        fig.add_scatter(x=[], y=[], mode="lines+markers", name="training loss", secondary_y=False)
        fig.add_scatter(x=[], y=[], mode="lines+markers", name=f"eval {task.metric.name}", secondary_y=True)
        lines = [("PTQ", self.ptq_metric, "#F58518")] + ([("float", self.fp_metric, "#54A24B")] if self.fp_metric is not None else [])
        for name, value, color in lines:
            fig.add_scatter(x=[0, max(1, config.epochs - 1)], y=[value, value], mode="lines", name=name, line={"dash": "dot", "color": color},
                            secondary_y=True)
        fig.update_layout(height=360, margin=dict(l=50, r=50, t=40, b=40), title="quantisation-aware training", xaxis_title="epoch")
        self.figure = Chart(fig)
        self.children = [W.HBox([self.run_button, self.progress, self.label]), self.figure]

    def run(self):
        """Train (resuming from ``checkpoint_dir`` when it holds a checkpoint); returns the history."""
        self.status = "training"
        self.qmodel, self.history = train_qat(self.task, self.float_model, self.qmodel, self.config, checkpoint_dir=self.checkpoint_dir,
                                              progress=False, on_epoch=self._on_epoch)
        best = evaluate(self.qmodel, self.task)
        self.status = f"done: best {self.task.metric.name} {best:.4f} (PTQ {self.ptq_metric:.4f})"
        self.label.value = self.status
        return self.history

    def _on_epoch(self, row: dict) -> None:
        loss, metric = self.figure.data[0], self.figure.data[1]
        with self.figure.batch_update():
            loss.x, loss.y = tuple(loss.x) + (row["epoch"],), tuple(loss.y) + (row["loss"],)
            metric.x, metric.y = tuple(metric.x) + (row["epoch"],), tuple(metric.y) + (row["metric"],)
        self.progress.value = row["epoch"] + 1
        self.label.value = f"epoch {row['epoch']}: loss {row['loss']:.4f}, {self.task.metric.name} {row['metric']:.4f}"
        self.epoch = row["epoch"]
