"""``QATProgress``: quantisation-aware training with live loss and metric.

A progress bar over epochs and a plotly chart of the training loss and the eval metric, updated
after every epoch (``workbench.core.qat.train_qat``'s ``on_epoch``); the plain-PTQ metric is drawn as a
reference line and the float metric as the ceiling. "Train" runs in a background thread
(:class:`~widgets.background.Runner`): the button says "Running...", the label gives epochs done /
total and an ETA, and Cancel stops training between epochs (the last epoch's checkpoint stays in
``checkpoint_dir``, and the next Train resumes from it). State in traitlets (``epoch``,
``status``); ``history`` is the DataFrame ``train_qat`` returns.
"""

from __future__ import annotations

import time

import ipywidgets as W
import traitlets
from plotly.subplots import make_subplots

from workbench.tasks.evaluate import evaluate
from workbench.core.qat import QATConfig, train_qat

from .background import Runner, RunnerWidget
from .chart import Chart
from .sensitivity_dashboard import eta_text


class QATProgress(RunnerWidget, W.VBox):
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
        self.runner = Runner(self.run_button)
        self.run_button.on_click(lambda _: self.start())
        self.message = W.HTML()
        fig = make_subplots(specs=[[{"secondary_y": True}]])
        fig.add_scatter(x=[], y=[], mode="lines+markers", name="training loss", secondary_y=False)
        fig.add_scatter(x=[], y=[], mode="lines+markers", name=f"eval {task.metric.name}", secondary_y=True)
        lines = [("PTQ", self.ptq_metric, "#F58518")] + ([("float", self.fp_metric, "#54A24B")] if self.fp_metric is not None else [])
        for name, value, color in lines:
            fig.add_scatter(x=[0, max(1, config.epochs - 1)], y=[value, value], mode="lines", name=name, line={"dash": "dot", "color": color},
                            secondary_y=True)
        better = "higher" if getattr(task.metric, "higher_is_better", True) else "lower"
        fig.update_layout(height=360, margin=dict(l=60, r=60, t=40, b=45), title="quantisation-aware training", xaxis_title="epoch",
                          legend={"orientation": "h", "y": -0.2})
        fig.update_yaxes(title_text="training loss (task loss)", secondary_y=False)
        fig.update_yaxes(title_text=f"eval {task.metric.name} ({better} is better)", secondary_y=True)
        fig.update_traces(selector={"name": "training loss"}, hovertemplate="epoch %{x}: training loss %{y:.4f}<extra></extra>")
        fig.update_traces(selector={"name": f"eval {task.metric.name}"}, hovertemplate=f"epoch %{{x}}: eval {task.metric.name} %{{y:.4f}}<extra></extra>")
        for name, _, _ in lines:
            fig.update_traces(selector={"name": name}, hovertemplate=f"{name} {task.metric.name} %{{y:.4f}}<extra></extra>")
        self.figure = Chart(fig)
        controls = W.Box([self.run_button, self.runner.cancel_button, self.progress, self.label], layout=W.Layout(flex_flow="row wrap", align_items="center"))
        self.children = [controls, self.message, self.figure]

    def start(self):
        """What "Train" does: :meth:`run` in a background thread, with Cancel between epochs."""
        return self.runner.start(self._run_cancellable, on_error=self._failed)

    def _done_text(self) -> str:
        return f"epoch {self.epoch}"

    def _kept_text(self) -> str:
        return "its checkpoint is in checkpoint_dir; Train resumes from it" if self.checkpoint_dir is not None else "no checkpoint_dir: Train starts again"

    def _status_label(self) -> W.Widget:
        return self.label

    def run(self):
        """Train (resuming from ``checkpoint_dir`` when it holds a checkpoint); returns the history (synchronous)."""
        self.status = "training"
        self.message.value = ""
        self._t0, self._epochs_run = time.monotonic(), 0
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
        self._epochs_run += 1
        left = self.config.epochs - row["epoch"] - 1
        eta = eta_text((time.monotonic() - self._t0) / self._epochs_run * left) if left > 0 else ""
        self.label.value = (f"epoch {row['epoch'] + 1}/{self.config.epochs}: loss {row['loss']:.4f}, {self.task.metric.name} {row['metric']:.4f}"
                            + (f", {eta}" if eta else ""))
        self.epoch = row["epoch"]
        self.runner.check()  # the epoch's checkpoint is written before on_epoch: Cancel stops here
