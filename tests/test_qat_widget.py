import workbench as wb
from widgets import QATProgress
from workbench.core.qat import QATConfig


def test_live_loss_and_metric_per_epoch(digits, tmp_path):
    task, model = digits
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(3, 4))
    w = QATProgress(task, model, q, QATConfig(epochs=2, lr=3e-4), checkpoint_dir=tmp_path)
    assert w.figure.data[0].x == () and w.progress.value == 0 and "PTQ" in w.label.value
    seen = []
    w.observe(lambda ch: seen.append((ch["new"], len(w.figure.data[1].y))), "epoch")
    w.run_button.click()  # as the browser would: training runs in a thread
    w.runner.join()
    assert seen == [(0, 1), (1, 2)] and w.progress.value == 2
    assert list(w.figure.data[1].y) == list(w.history["metric"]) and list(w.figure.data[0].y) == list(w.history["loss"])
    assert w.status.startswith("done: best") and (tmp_path / "qat-last.safetensors").exists()
    ref = [t for t in w.figure.data if t.name == "PTQ"][0]
    assert ref.y[0] == w.ptq_metric


def test_axis_titles_and_cancel_between_epochs_then_resume(digits, tmp_path):
    task, model = digits
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(3, 4))
    w = QATProgress(task, model, q, QATConfig(epochs=3, lr=3e-4), checkpoint_dir=tmp_path)
    layout = w.figure.layout
    assert layout.xaxis.title.text == "epoch" and layout.yaxis.title.text.startswith("training loss")
    assert layout.yaxis2.title.text == f"eval {task.metric.name} (higher is better)"
    assert "training loss" in w.figure.data[0].hovertemplate and task.metric.name in w.figure.data[1].hovertemplate
    running = []

    def at_first_epoch(change):
        if change["new"] == 0:
            running.append((w.run_button.disabled, w.run_button.description, w.label.value))
            w.runner.cancel()

    w.observe(at_first_epoch, "epoch")
    w.run_button.click()
    w.runner.join()
    assert running[0][:2] == (True, "Running...") and running[0][2].startswith("epoch 1/3") and "ETA" in running[0][2]
    assert w.epoch == 0 and w.status.startswith("cancelled after epoch 0") and w.history is None
    assert not w.run_button.disabled and (tmp_path / "qat-last.safetensors").exists()
    w.unobserve(at_first_epoch, "epoch")
    seen = []
    w.observe(lambda ch: seen.append(ch["new"]), "epoch")
    w.run_button.click()
    w.runner.join()
    assert seen == [1, 2] and list(w.history["epoch"]) == [0, 1, 2]  # resumed from the checkpoint after epoch 0
