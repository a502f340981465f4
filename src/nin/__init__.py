"""Network In Network (Lin, Chen & Yan, ICLR 2014) for PyTorch."""
from nin.models import create_model, list_models, model_info, param_groups, profile_model, register_model

__version__ = "0.1.0"
__all__ = ["__version__", "create_model", "list_models", "model_info", "param_groups", "profile_model",
           "register_model"]
