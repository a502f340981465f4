"""The registry of networks: import the model modules so their builders register."""
from nin.models import baselines as _baselines  # noqa: F401
from nin.models import d2l as _d2l  # noqa: F401  (registers the d2l.ai peer)
from nin.models import nin as _nin  # noqa: F401  (registers the NIN builders)
from nin.models.base import ClassMapNetwork
from nin.models.nin import NIN, Stage
from nin.models.param_groups import param_groups
from nin.models.profile import Profile, profile_model
from nin.models.registry import ModelInfo, create_model, list_models, model_info, register_model

__all__ = [
    "NIN", "ClassMapNetwork", "ModelInfo", "Profile", "Stage", "create_model", "list_models", "model_info",
    "param_groups", "profile_model", "register_model",
]
