"""Tasks: the registry (model factory + data + metric), data splits, built-in data and models, Hugging Face models, loaders, metrics, evaluation and the cached float baseline."""
