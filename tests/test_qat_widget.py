import workbench as wb
from widgets import QATProgress
from workbench.qat import QATConfig


def test_live_loss_and_metric_per_epoch(digits, tmp_path):
    task, model = digits
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(3, 4))
    w = QATProgress(task, model, q, QATConfig(epochs=2, lr=3e-4), checkpoint_dir=tmp_path)
    assert w.figure.data[0].x == () and w.progress.value == 0 and "PTQ" in w.label.value
    seen = []
    w.observe(lambda ch: seen.append((ch["new"], len(w.figure.data[1].y))), "epoch")
    w.run_button.click()  # as the browser would
    assert seen == [(0, 1), (1, 2)] and w.progress.value == 2
    assert list(w.figure.data[1].y) == list(w.history["metric"]) and list(w.figure.data[0].y) == list(w.history["loss"])
    assert w.status.startswith("done: best") and (tmp_path / "qat-last.safetensors").exists()
    ref = [t for t in w.figure.data if t.name == "PTQ"][0]
    assert ref.y[0] == w.ptq_metric
