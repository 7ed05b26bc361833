"""The dense base, evaluated as it is (no training): the reference every system starts from."""

from langmoe.config import MethodConfig
from langmoe.methods.base.system import run_base
from langmoe.registry import register_method


class BaseSettings(MethodConfig):
    """The base has no settings."""


register_method("base", BaseSettings, run_base, label="dense base (no training)", order=0)
