"""The configuration: building components from config nodes (:mod:`.targets`), the schema that types
``conf/train.yaml`` while Hydra composes (:mod:`.schema`), the checks that run before anything
else (:mod:`.validation`), and the keys that never tell runs apart (:mod:`.keys`)."""

from .targets import DEFAULT_TRUSTED_TARGETS, FRAMEWORK_KEYS, REQUIRED_TRUSTED_TARGET, build, trusted_targets

__all__ = ["DEFAULT_TRUSTED_TARGETS", "FRAMEWORK_KEYS", "REQUIRED_TRUSTED_TARGET", "build", "trusted_targets"]
