"""The built-in tasks: MLPerf Tiny style networks on synthetic or bundled data, and Hugging Face
models (random init) for the transformer paths. Registered in :mod:`workbench.tasks.registry` when
the registry is first read (entry-point group ``workbench.tasks``).

Importing this module imports neither torch nor the models: each factory imports what its task
needs, and each task is registered with its row of ``workbench tasks`` (``listing``: input shape,
parameters, MACs, metric, data; ``tests/test_cli_startup.py`` checks them against the built
models), so that listing the tasks builds none of them."""

from __future__ import annotations

from .registry import Task, register_task


def _listing(input_shape: str, params: int, macs: int, metric: str, data: str, data_source: str) -> dict:
    return {"input_shape": input_shape, "params": params, "macs": macs, "metric": metric, "data": data, "data_source": data_source}


@register_task("digits-cnn", listing=_listing('1x8x8', 14378, 451904, 'top1_accuracy', 'real',
                                     'scikit-learn load_digits (real)'))
def digits_cnn(seed: int = 0) -> Task:
    from . import builtin_data, models
    from .metrics import ACCURACY

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


@register_task("mnist1d-cnn", listing=_listing('1x40', 9610, 101760, 'top1_accuracy', 'real',
                                     'mnist1d package, generated locally (real)'))
def mnist1d_cnn(seed: int = 0) -> Task:
    from . import builtin_data, models
    from .metrics import ACCURACY

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


@register_task("kws-dscnn", listing=_listing('1x49x10', 22604, 2656768, 'top1_accuracy', 'synthetic',
                                     'synthetic keyword-spotting MFCC stand-in (seeded)'))
def kws_dscnn(seed: int = 0, n: int = 3000) -> Task:
    from . import builtin_data, models
    from .metrics import ACCURACY

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


@register_task("vww-mobilenet", listing=_listing('3x96x96', 210850, 7489664, 'top1_accuracy', 'synthetic',
                                     'synthetic visual-wake-words image stand-in (seeded)'))
def vww_mobilenet(seed: int = 0, n: int = 1500) -> Task:
    from . import builtin_data, models
    from .metrics import ACCURACY

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


@register_task("ic-resnet8", listing=_listing('3x32x32', 77706, 12501632, 'top1_accuracy', 'synthetic',
                                     'synthetic CIFAR-like image stand-in (seeded)'))
def ic_resnet8(seed: int = 0, n: int = 3000) -> Task:
    from . import builtin_data, models
    from .metrics import ACCURACY

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


@register_task("ad-autoencoder", listing=_listing('640', 265864, 264192, 'auc', 'synthetic',
                                     'synthetic machine-sound stand-in (seeded)'))
def ad_autoencoder(seed: int = 0) -> Task:
    from . import builtin_data, models
    from .metrics import AUC

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


@register_task("hf-resnet18", listing=_listing('3x64x64', 11172042, 148050944, 'cosine', 'synthetic',
                                     'synthetic images (seeded); label-free: cosine to the float outputs'))
def hf_resnet18(seed: int = 0, image_size: int = 64) -> Task:
    from . import hf

    return hf.synthetic_task("hf-resnet18", lambda: hf.resnet18(num_labels=10, image_size=image_size, seed=seed), (3, image_size, image_size), seed=seed,
                             description="ResNet-18 (transformers ResNetForImageClassification, basic blocks 2-2-2-2), random init")


@register_task("hf-mobilenetv2", listing=_listing('3x64x64', 2202570, 24461312, 'cosine', 'synthetic',
                                     'synthetic images (seeded); label-free: cosine to the float outputs'))
def hf_mobilenetv2(seed: int = 0, image_size: int = 64) -> Task:
    from . import hf

    return hf.synthetic_task("hf-mobilenetv2", lambda: hf.mobilenet_v2(num_labels=10, image_size=image_size, seed=seed),
                             (3, image_size, image_size), seed=seed,
                             description="MobileNetV2 (transformers MobileNetV2ForImageClassification), random init")


@register_task("hf-bert", listing=_listing('32', 1351556, 37765632, 'cosine', 'synthetic',
                                     'synthetic token ids (seeded); label-free: cosine to the float outputs'))
def hf_bert(seed: int = 0, layers: int = 6, seq_len: int = 32) -> Task:
    from . import hf

    return hf.synthetic_task("hf-bert", lambda: hf.bert_encoder(layers=layers, seed=seed), (seq_len,), tokens=1000, seed=seed,
                             description=f"BERT-style encoder ({layers} layers, hidden 128, transformers BertForSequenceClassification), random init")


@register_task("hf-minilm-embed", listing=_listing('2x32', 11378304, 339738624, 'cosine', 'real',
                                     'shipped English sentences (written for the workbench); label-free: cosine to the float embeddings'))
def hf_minilm_embed(seed: int = 0, layers: int = 6, seq_len: int = 32) -> Task:
    from . import minilm

    return minilm.minilm_task("hf-minilm-embed", layers=layers, seq_len=seq_len, seed=seed)
