"""The built-in tasks: MLPerf Tiny style networks on synthetic or bundled data, and Hugging Face
models (random init) for the transformer paths. Registered in :mod:`workbench.tasks.registry` when
the registry is first read (entry-point group ``workbench.tasks``)."""

from __future__ import annotations



from . import builtin_data, models
from .metrics import ACCURACY, AUC
from .registry import Task, register_task


@register_task("digits-cnn")
def digits_cnn(seed: int = 0) -> Task:
    return Task(
        name="digits-cnn",
        model_factory=models.DigitsCNN,
        data_factory=lambda: builtin_data.digits_data(seed),
        metric=ACCURACY,
        input_shape=(1, 8, 8),
        data_source="scikit-learn load_digits (real)",
        description="Small CNN on scikit-learn's bundled 8x8 handwritten digits",
        train_epochs=30,
        seed=seed,
    )


@register_task("mnist1d-cnn")
def mnist1d_cnn(seed: int = 0) -> Task:
    return Task(
        name="mnist1d-cnn",
        model_factory=models.MNIST1DCNN,
        data_factory=lambda: builtin_data.mnist1d_data(seed),
        metric=ACCURACY,
        input_shape=(1, 40),
        data_source="mnist1d package, generated locally (real)",
        description="1D CNN on MNIST-1D signals",
        train_epochs=30,
        seed=seed,
    )


@register_task("kws-dscnn")
def kws_dscnn(seed: int = 0, n: int = 3000) -> Task:
    return Task(
        name="kws-dscnn",
        model_factory=models.DSCNN,
        data_factory=lambda: builtin_data.synthetic_classification("keyword-spotting MFCC", (1, 49, 10), 12, n, seed, coarse=3),
        metric=ACCURACY,
        input_shape=(1, 49, 10),
        data_source="synthetic keyword-spotting MFCC stand-in (seeded)",
        synthetic=True,
        description="MLPerf Tiny keyword spotting: DS-CNN on 49x10 MFCC, 12 classes",
        train_epochs=12,
        seed=seed,
    )


@register_task("vww-mobilenet")
def vww_mobilenet(seed: int = 0, n: int = 1500) -> Task:
    return Task(
        name="vww-mobilenet",
        model_factory=models.MobileNetV1,
        data_factory=lambda: builtin_data.synthetic_classification("visual-wake-words image", (3, 96, 96), 2, n, seed, coarse=8),
        metric=ACCURACY,
        input_shape=(3, 96, 96),
        data_source="synthetic visual-wake-words image stand-in (seeded)",
        synthetic=True,
        description="MLPerf Tiny visual wake words: MobileNetV1 (alpha 0.25) on 96x96x3, 2 classes",
        train_epochs=8,
        seed=seed,
    )


@register_task("ic-resnet8")
def ic_resnet8(seed: int = 0, n: int = 3000) -> Task:
    return Task(
        name="ic-resnet8",
        model_factory=models.ResNet8,
        data_factory=lambda: builtin_data.synthetic_classification("CIFAR-like image", (3, 32, 32), 10, n, seed, noise=1.2, distract=1.5),
        metric=ACCURACY,
        input_shape=(3, 32, 32),
        data_source="synthetic CIFAR-like image stand-in (seeded)",
        synthetic=True,
        description="MLPerf Tiny image classification: ResNet-8 on 32x32x3, 10 classes",
        train_epochs=10,
        seed=seed,
    )


@register_task("ad-autoencoder")
def ad_autoencoder(seed: int = 0) -> Task:
    return Task(
        name="ad-autoencoder",
        model_factory=models.FCAutoencoder,
        data_factory=lambda: builtin_data.synthetic_machine_sounds(seed=seed),
        metric=AUC,
        kind="reconstruction",
        input_shape=(640,),
        data_source="synthetic machine-sound stand-in (seeded)",
        synthetic=True,
        description="MLPerf Tiny anomaly detection: FC autoencoder on 640-d log-mel frames, AUC",
        train_epochs=30,
        learning_rate=1e-3,
        seed=seed,
    )


# ----------------------------------------------------------------------------- Hugging Face architectures
# Built from configs with random initialisation (no download), on seeded synthetic inputs, scored
# without labels (cosine similarity of the outputs to the float model's). Small inputs keep them quick.


@register_task("hf-resnet18")
def hf_resnet18(seed: int = 0, image_size: int = 64) -> Task:
    from . import hf

    return hf.synthetic_task("hf-resnet18", lambda: hf.resnet18(num_labels=10, image_size=image_size, seed=seed), (3, image_size, image_size), seed=seed,
                             description="ResNet-18 (transformers ResNetForImageClassification, basic blocks 2-2-2-2), random init")


@register_task("hf-mobilenetv2")
def hf_mobilenetv2(seed: int = 0, image_size: int = 64) -> Task:
    from . import hf

    return hf.synthetic_task("hf-mobilenetv2", lambda: hf.mobilenet_v2(num_labels=10, image_size=image_size, seed=seed),
                             (3, image_size, image_size), seed=seed,
                             description="MobileNetV2 (transformers MobileNetV2ForImageClassification), random init")


@register_task("hf-bert")
def hf_bert(seed: int = 0, layers: int = 6, seq_len: int = 32) -> Task:
    from . import hf

    return hf.synthetic_task("hf-bert", lambda: hf.bert_encoder(layers=layers, seed=seed), (seq_len,), tokens=1000, seed=seed,
                             description=f"BERT-style encoder ({layers} layers, hidden 128, transformers BertForSequenceClassification), random init")


@register_task("hf-minilm-embed")
def hf_minilm_embed(seed: int = 0, layers: int = 6, seq_len: int = 32) -> Task:
    from . import minilm

    return minilm.minilm_task("hf-minilm-embed", layers=layers, seq_len=seq_len, seed=seed)
