"""The integrator and the imbalance method of a config: each is built once from its group, so their
own one-line errors (an unknown name, parameter or value) surface here, and the method is asked
whether it makes sense with this loss and integrator."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError, check_number


def check_integrator(integrator: DictConfig) -> None:
    """A finite ``gamma > 0``, then ``get_integrator``'s own one-line errors: an unknown name, parameter
    or parameter value."""
    from ..integrators import get_integrator

    check_number(integrator, "gamma", "integrator.", positive=True)

    params = OmegaConf.to_container(integrator, resolve=True)
    assert isinstance(params, dict)
    try:
        get_integrator(**params)  # type: ignore[arg-type]
    except ValueError as error:
        raise ConfigError(" ".join(str(error).split())) from None
    except TypeError as error:
        raise ConfigError(f"integrator: {' '.join(str(error).split())}") from None


def check_method(method: DictConfig | None, loss: DictConfig, integrator: DictConfig) -> None:
    """``get_method``'s one-line errors (an unknown method or parameter, a bad value), and whether the
    method makes sense with this loss and integrator (``Method.check_config``)."""
    if method is None:
        return
    from ..integrators import get_integrator
    from ..methods import get_method

    params = OmegaConf.to_container(method, resolve=True)
    assert isinstance(params, dict)
    try:
        built = get_method(**params)  # type: ignore[arg-type]
        built.check_config(bool(loss.get("detach_unimodal", False)), get_integrator(**integrator))  # type: ignore[arg-type]
    except (ValueError, TypeError) as error:
        raise ConfigError(" ".join(str(error).split())) from None
