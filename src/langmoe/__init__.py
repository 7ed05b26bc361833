"""langmoe: language-group Mixture-of-Experts for multilingual language models.

Importing langmoe registers its native MoE folder format (`model_type: langmoe_moe`) with transformers'
`AutoConfig` / `AutoModelForCausalLM`, so `AutoModelForCausalLM.from_pretrained(moe_folder)` loads the MoE model.
The registration runs as soon as transformers is imported (now, if it already is), so `import langmoe` alone
stays fast (the CLI starts without importing torch).
"""

__version__ = "0.1.0"


def _install_registration() -> None:
    import importlib.abc
    import importlib.util
    import sys

    def register() -> None:
        native = sys.modules.get("langmoe.models.native")
        if native is not None and getattr(getattr(native, "__spec__", None), "_initializing", False):
            return  # native.py itself is importing transformers: it registers when it finishes
        try:
            from langmoe.models.native import register_with_transformers

            register_with_transformers()
        except Exception as e:  # noqa: BLE001 - never break the user's `import transformers`
            import warnings

            warnings.warn(f"langmoe could not register its MoE format with transformers: {e}", stacklevel=2)

    if "transformers" in sys.modules:
        register()
        return

    class _AfterTransformers(importlib.abc.MetaPathFinder):
        """One-shot post-import hook: run `register` right after `transformers` is first imported."""

        def find_spec(self, fullname, path=None, target=None):
            if fullname != "transformers":
                return None
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            spec = importlib.util.find_spec(fullname)
            if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
                return spec
            real_exec = spec.loader.exec_module

            def exec_module(module):
                real_exec(module)
                register()

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _AfterTransformers())


_install_registration()
