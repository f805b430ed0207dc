"""Which kernel is the fast twin of which reference class."""

from __future__ import annotations

#: reference class -> its kernel (a subclass that overrides forward/backward or step)
KERNELS: dict[type, type] = {}


def kernel_for(reference: type):
    """Class decorator: register the decorated class as the fast version of ``reference``."""

    def add(kernel: type) -> type:
        if not issubclass(kernel, reference):
            raise TypeError(f"{kernel.__name__} must subclass {reference.__name__}")
        KERNELS[reference] = kernel
        return kernel

    return add
