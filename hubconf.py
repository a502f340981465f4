"""torch.hub entry points: one per registered network, generated from ``nin.list_models()``.

    model = torch.hub.load("path/to/network-in-network", "nin_cifar10", source="local")
    model = torch.hub.load(..., "nin_mnist", source="local", pretrained=True, preprocess=True)

``pretrained=True`` loads the weights shipped in ``nin/pretrained/`` (an error names the model when
none are shipped); ``preprocess=True`` then returns the network with its fitted preprocessing in
front, taking float images of 0..255 pixel values.
"""
import sys as _sys
from pathlib import Path as _Path

dependencies = ["torch", "numpy", "safetensors"]

try:
    import nin as _nin
except ImportError:  # a plain checkout that was not pip-installed: use its src/ folder
    _sys.path.insert(0, str(_Path(__file__).resolve().parent / "src"))
    import nin as _nin

from nin.inference.weights import load_pretrained as _load_pretrained  # noqa: E402  (after the src/ fallback)


def _entrypoint(name):
    def entrypoint(pretrained=False, preprocess=False, **kwargs):
        if not pretrained:
            if preprocess:
                raise ValueError(f"{name}: preprocess=True needs pretrained=True (only trained weights come with "
                                 "fitted preprocessing)")
            return _nin.create_model(name, **kwargs)
        if kwargs:
            raise ValueError(f"{name}: pretrained=True builds the network the weights were trained as; remove "
                             f"{', '.join(sorted(kwargs))}")
        return _load_pretrained(name, with_preprocessing=preprocess)

    info = _nin.model_info(name)
    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = (f"{info.description}\n\nPaper: {info.paper}. Input {info.input_size}, {info.num_classes} "
                          "classes. pretrained=True loads shipped weights (preprocess=True adds their fitted "
                          "preprocessing); other keyword arguments go to nin.create_model.")
    return entrypoint


for _name in _nin.list_models():
    globals()[_name] = _entrypoint(_name)
