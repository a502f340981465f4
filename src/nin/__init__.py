"""Network In Network (Lin, Chen & Yan, ICLR 2014) for PyTorch.

``create_model`` builds any registered network, or loads shipped weights with ``pretrained=True``;
``list_models`` and ``list_pretrained`` say what there is. docs/architecture.md maps the package.
"""
from nin.inference.pretrained import create_model, list_pretrained
from nin.models import list_models, model_info, param_groups, profile_model, register_model

__version__ = "0.1.0"
__all__ = ["__version__", "create_model", "list_models", "list_pretrained", "model_info", "param_groups",
           "profile_model", "register_model"]
