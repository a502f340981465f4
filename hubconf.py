"""torch.hub entry points: one per registered network, and one per shipped weights file.

    model = torch.hub.load("path/to/network-in-network", "nin_cifar10", source="local")        # untrained
    model = torch.hub.load(..., "nin_mnist", source="local", pretrained=True)                  # default weights
    model = torch.hub.load(..., "nin_mnist_fast", source="local")                              # the weights nin_mnist.fast

With weights, the model takes raw images (float pixel values 0..255, shape (N, C, H, W)) through the weights'
own fitted preprocessing, as ``nin predict`` does, and ``model.classes`` names its outputs; ``preprocess=False``
returns the bare network, which expects preprocessed input. ``nin.list_pretrained()`` lists the weights.
"""
import sys as _sys
from pathlib import Path as _Path

dependencies = ["torch", "numpy", "safetensors"]

try:
    import nin as _nin
except ImportError:  # a plain checkout that was not pip-installed: use its src/ folder
    _sys.path.insert(0, str(_Path(__file__).resolve().parent / "src"))
    import nin as _nin

from nin.inference.pretrained import get_pretrained as _get_pretrained  # noqa: E402  (after the src/ fallback)


def _model_entrypoint(name):
    def entrypoint(pretrained=False, preprocess=True, **kwargs):
        return _nin.create_model(name, pretrained=pretrained, preprocess=preprocess, **kwargs)

    info = _nin.model_info(name)
    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = (f"{info.description}\n\nPaper: {info.paper}. Input {info.input_size}, {info.num_classes} "
                          "classes. pretrained=True loads the default shipped weights (with their preprocessing "
                          "unless preprocess=False); other keyword arguments go to the model's builder.")
    return entrypoint


def _weights_entrypoint(weights_name):
    card = _get_pretrained(weights_name)

    def entrypoint(preprocess=True, data_dir=None):
        return _nin.create_model(weights_name, pretrained=True, preprocess=preprocess, data_dir=data_dir)

    entrypoint.__name__ = entrypoint.__qualname__ = weights_name.replace(".", "_")
    errors = ", ".join(f"{error:.2f}% on {split}" for split, error in card.errors.items())
    entrypoint.__doc__ = (f"{card.model} with the weights {weights_name}: {card.description}. Error {errors} "
                          f"({card.record}). Takes raw 0..255 images unless preprocess=False; data_dir= is where "
                          "the training images are for weights that fit their preprocessing on first use.")
    return entrypoint


for _name in _nin.list_models():
    globals()[_name] = _model_entrypoint(_name)
for _weights in _nin.list_pretrained():
    globals()[_weights.replace(".", "_")] = _weights_entrypoint(_weights)
