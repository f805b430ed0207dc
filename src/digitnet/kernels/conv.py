"""The fast twin of Conv2D: im2col in a channels-last layout, and the Fourier convolution.

:class:`~digitnet.nn.conv.Conv2D` states the math; this kernel computes the same numbers (up to
float32 rounding) faster, in one of two ways:

- **im2col**, arranged for the memory: the padded input is kept channels-last (NHWC), so the patch
  copy moves runs of ``C_in`` floats; with one input channel the patches are stored offset-major
  (``[K, B, H_out*W_out]``: the copy moves image rows) and one small product per image writes NCHW
  directly, the bias riding along as a row of ones. The products are arranged so their outputs come
  out channel-major (``[C_out, P]``), turning into NCHW by copying runs of ``H_out*W_out`` floats.
  col2im is ``kH*kW`` products added into slices, which needs a ``[P, C_in]`` buffer instead of ``[P, K]``.
- **Fourier** (stride 1, :mod:`digitnet.kernels.fourier`): the convolution theorem turns the sums over
  kernel offsets into one product per frequency; the sum over channels stays a matrix product,
  ``[B, C_in] @ [C_in, C_out]`` per frequency.

- **Winograd** F(4x4, 3x3) (stride 1, 3x3 kernels, :mod:`digitnet.kernels.winograd`): 36 products
  per 4x4 block of outputs instead of 144, as one ``[C_out, C_in] @ [C_in, tiles]`` product per
  transform position.

"auto" takes im2col for strided layers, one input channel, kernels under 3x3 and batches under
``FOURIER_MIN_BATCH`` images: with one input channel im2col's product is tiny and the transforms
would dominate, and for a few images the kernels' own transform does. Otherwise it takes Winograd
for 3x3 kernels on outputs of at least ``WINOGRAD_MIN_SIZE`` pixels a side (32 -> 32 channels on
28x28, a training step of 128 images on two workers: 51 ms against Fourier's 54), and Fourier for the
rest (on 14x14: 21 ms against Winograd's 24; on 7x7: 9.4 against 14). benchmarks/results/conv3x3.md,
docs/CNN.md and docs/SPEED.md give the measurements.

All scratch arrays are work buffers reused across batches; ``dL/dx`` is skipped when
``compute_input_grad`` is False (the first layer of a model); in inference mode the batch is
processed in chunks so the scratch arrays stay small (a 2,048-image prediction batch would otherwise
need a 1.3 GB patch matrix). A first convolution (or a Fourier one) and the 2x2 max pooling after it
can also train together, chunk by chunk (:meth:`FastConv2D.forward_pooled`).

Every step runs on the model's workers (:mod:`digitnet.kernels.parallel`): copies, transforms and
products by parts of the batch (or of the frequencies, or of the output channels of ``dL/dW``), each
part writing only its own rows, so that no part sums over another's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from digitnet.errors import ConfigError
from digitnet.kernels.buffers import Buffered
from digitnet.kernels.fourier import FourierPlan
from digitnet.kernels.registry import kernel_for
from digitnet.kernels.winograd import WinogradPlan
from digitnet.nn.base import Layer
from digitnet.nn.conv import Conv2D

#: in inference mode, images per chunk are chosen so the scratch arrays stay below about this size
INFERENCE_BYTES = 32 * 2**20
#: "auto" convolves batches smaller than this by im2col (see FastConv2D.algorithm_for)
FOURIER_MIN_BATCH = 16
#: "auto" takes Winograd F(4x4, 3x3) for 3x3 layers whose output has at least this many rows and columns
WINOGRAD_MIN_SIZE = 20
#: the Winograd tile: F(4x4, 3x3) beat F(2x2, 3x3) on every shape measured (benchmarks/results/conv3x3.md)
WINOGRAD_TILE = 4


@kernel_for(Conv2D)
class FastConv2D(Buffered, Conv2D):
    """:class:`~digitnet.nn.conv.Conv2D` by tuned im2col or the Fourier transform (see the module docstring)."""

    def setup(self) -> None:
        self._cache: dict[str, Any] | None = None
        self._plans: dict[tuple[int, int, str], FourierPlan] = {}
        self._winograd_plans: dict[tuple[int, int, str], WinogradPlan] = {}

    def algorithm_for(self, batch: int | None = None, height: int | None = None, width: int | None = None) -> str:
        """"im2col", "fourier" or "winograd": how forward/backward compute (see ``algorithm``).

        "auto" takes im2col for strided layers, one input channel, kernels under 3x3 and batches
        under FOURIER_MIN_BATCH images; otherwise Winograd F(4x4, 3x3) for 3x3 kernels whose output
        is at least WINOGRAD_MIN_SIZE on each side (``height``/``width`` of the input; None: small),
        and Fourier for the rest. ``batch`` None means a large batch. docs/CNN.md and docs/SPEED.md
        give the measurements behind the rule.
        """
        if self.algorithm != "auto":
            return self.algorithm
        kh, kw = self.kernel_size
        if self.stride != (1, 1) or self.in_channels < 2 or kh * kw < 9 or \
                (batch is not None and batch < FOURIER_MIN_BATCH):
            return "im2col"
        if (kh, kw) == (3, 3) and height is not None and width is not None and \
                min(self.output_hw(height, width)) >= WINOGRAD_MIN_SIZE:
            return "winograd"
        return "fourier"


    # -- forward ----------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(f"Conv2D expects input [B, {self.in_channels}, H, W], got {list(x.shape)}")
        batch, _, height, width = x.shape
        out_h, out_w = self.output_hw(height, width)
        dtype = np.result_type(x, self.params["weights"])
        y = self.output_buffer("y", (batch, self.out_channels, out_h, out_w), dtype, training)
        algorithm = self.algorithm_for(batch, height, width)
        compute = {"im2col": self._forward_im2col, "fourier": self._forward_fourier,
                   "winograd": self._forward_winograd}[algorithm]
        if batch == 0:                    # nothing to compute (and reshapes of empty arrays are ambiguous)
            self._cache = {"algorithm": "empty", "x_shape": x.shape} if training else None
            return y
        if training:
            self._cache = compute(x, y, "")
            return y
        # inference: chunks of images keep the scratch arrays small; nothing is kept for backward
        self._cache = None
        if algorithm == "fourier":
            plan = self._plan(height, width, dtype)
            per_image = plan.freq_h * plan.freq_w * (self.in_channels + self.out_channels) * 2 * dtype.itemsize
        elif algorithm == "winograd":     # V and M: (a/m)^2 = 2.25 times the input and the output
            per_image = 3 * (height * width * self.in_channels + out_h * out_w * self.out_channels) * dtype.itemsize
        else:
            per_image = out_h * out_w * self.in_channels * self.kernel_size[0] * self.kernel_size[1]
            per_image *= dtype.itemsize
        chunk = max(1, INFERENCE_BYTES // max(per_image, 1))
        for start in range(0, batch, chunk):
            part = slice(start, start + chunk)
            compute(x[part], y[part], "inference_")
        return y

    def _forward_winograd(self, x: np.ndarray, y: np.ndarray, prefix: str) -> dict[str, Any]:
        """Write the convolution of ``x`` into ``y`` by Winograd's F(4x4, 3x3) (:mod:`digitnet.kernels.winograd`)."""
        plan = self._winograd_plan(x.shape[2], x.shape[3], y.dtype)
        weights = self.params["weights"].astype(y.dtype, copy=False)
        cache = plan.forward(x, weights, self.params["bias"], y, self.work_buffer, prefix + "winograd_",
                             self.workers if self.workers.enabled else None)
        return {"algorithm": "winograd", "plan": plan, **cache}

    def _winograd_plan(self, height: int, width: int, dtype: np.dtype) -> WinogradPlan:
        key = (height, width, np.dtype(dtype).str)
        if key not in self._winograd_plans:
            self._winograd_plans[key] = WinogradPlan(height, width, self.padding, dtype, tile=WINOGRAD_TILE)
        return self._winograd_plans[key]

    def _forward_im2col(self, x: np.ndarray, y: np.ndarray, prefix: str) -> dict[str, Any]:
        """Write the convolution of ``x`` into ``y`` (both NCHW) by im2col and one matrix product."""
        batch, out_channels, out_h, out_w = y.shape
        weights = self.params["weights"]
        # W_mat[o, (i, j, c)] = weights[o, c, i, j]; tiny, rebuilt because the optimizer changes weights
        w_mat = weights.transpose(0, 2, 3, 1).reshape(out_channels, -1).astype(y.dtype, copy=False)
        bias = self.params["bias"].astype(y.dtype, copy=False)
        x_pad = self._padded_input(x, y.dtype, prefix)
        cols = self._im2col(x_pad, out_h, out_w, prefix)
        parts = self.workers.product_parts(batch, 2.0 * y.size * w_mat.shape[1])          # by images
        if cols.ndim == 3:
            # C_in = 1: cols is [K + 1, B, H_out*W_out] whose last row is ones, so with the bias as
            # an extra column of W_mat one product per image writes y (NCHW) bias included
            w_bias, y_3d = self._weights_with_bias(y.dtype), y.reshape(batch, out_channels, -1)
            self.workers.run(lambda b: np.matmul(w_bias, cols[:, b].transpose(1, 0, 2), out=y_3d[b]), parts)
        else:
            # y_mat = W_mat @ cols.T is channel-major [C_out, P]; the bias goes onto its contiguous
            # rows, then one copy moving runs of H_out*W_out floats makes it NCHW
            y_mat = self.work_buffer(prefix + "y_mat", (out_channels, batch, out_h * out_w), y.dtype)
            cols_4d = cols.reshape(batch, out_h * out_w, -1)

            def images(b: slice) -> None:
                np.matmul(w_mat, cols_4d[b].reshape(-1, cols.shape[1]).T, out=y_mat[:, b].reshape(out_channels, -1))
                y_mat[:, b] += bias[:, None, None]
                np.copyto(y[b].reshape(-1, out_channels, out_h * out_w), y_mat[:, b].transpose(1, 0, 2))

            self.workers.run(images, parts)
        return {"algorithm": "im2col", "x_shape": x.shape, "cols": cols}

    def _weights_with_bias(self, dtype: np.dtype) -> np.ndarray:
        """C_in = 1: ``[W_mat | bias]`` ``[C_out, K + 1]``, to multiply patches that end in a row of ones."""
        weights = self.params["weights"].reshape(self.out_channels, -1)
        return np.concatenate([weights, self.params["bias"][:, None]], axis=1).astype(dtype, copy=False)

    def _padded_input(self, x: np.ndarray, dtype: np.dtype, prefix: str) -> np.ndarray:
        """``x`` as NHWC ``[B, H + 2pH, W + 2pW, C_in]`` with a zero border (a reused work buffer).

        The border is zeroed once when the buffer is allocated; later calls overwrite only the
        interior, so the border stays zero.
        """
        batch, channels, height, width = x.shape
        (pad_h, pad_w) = self.padding
        if pad_h == 0 and pad_w == 0 and channels == 1:
            return x.reshape(batch, height, width, 1)          # NCHW with C=1 is already NHWC
        shape = (batch, height + 2 * pad_h, width + 2 * pad_w, channels)
        name = prefix + "x_pad"
        old = self._work.get(name)
        fresh = old is None or old.shape != shape or old.dtype != dtype
        x_pad = self.work_buffer(name, shape, dtype)
        if fresh:
            x_pad.fill(0)
        interior = x_pad[:, pad_h:pad_h + height, pad_w:pad_w + width, :]
        self.workers.each(lambda b: np.copyto(interior[b], x[b].transpose(0, 2, 3, 1)), batch, x.nbytes)
        return x_pad

    def _im2col(self, x_pad: np.ndarray, out_h: int, out_w: int, prefix: str, parity_major: bool = False) -> np.ndarray:
        """The patches ``cols[(b, h, w), (i, j, c)] = x_pad[b, h*sH + i, w*sW + j, c]``, one copy from a window view.

        Returns ``[P, K]``, or for C_in = 1 the offset-major ``[K + 1, B, H_out*W_out]`` (whose copy
        moves whole image rows instead of single floats) with a last row of ones for the bias.
        ``parity_major`` (C_in = 1, even ``H_out`` and ``W_out``): each image's positions in the order
        ``(h % 2, w % 2, h // 2, w // 2)``, so that the product writes its output parity-major for a 2x2
        max pooling (:meth:`forward_pooled`).
        """
        batch, _, _, channels = x_pad.shape
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        # windows[b, h, w, c, i, j] = x_pad[b, h*sH + i, w*sW + j, c]   (a view, no copy)
        windows = sliding_window_view(x_pad, (kh, kw), axis=(1, 2))[:, ::sh, ::sw][:, :out_h, :out_w]
        if channels == 1:
            name, shape = prefix + "cols", (kh * kw + 1, batch, out_h, out_w)
            old = self._work.get(name)
            cols_t = self.work_buffer(name, shape, x_pad.dtype)
            if old is None or old.shape != shape or old.dtype != x_pad.dtype:
                cols_t[-1] = 1                # the row of ones that carries the bias; never overwritten
            if parity_major:
                # windows [b, (h2, ph), (w2, pw), i, j] -> patches [i, j, b, ph, pw, h2, w2]
                patches = cols_t[:-1].reshape(kh, kw, batch, 2, 2, out_h // 2, out_w // 2)
                self.workers.each(lambda b: np.copyto(patches[:, :, b], windows[b, :, :, 0].reshape(
                    -1, out_h // 2, 2, out_w // 2, 2, kh, kw).transpose(5, 6, 0, 2, 4, 1, 3)), batch, patches.nbytes)
            else:
                patches = cols_t[:-1].reshape(kh, kw, batch, out_h, out_w)
                self.workers.each(lambda b: np.copyto(patches[:, :, b], windows[b, :, :, 0].transpose(3, 4, 0, 1, 2)),
                                  batch, patches.nbytes)
            return cols_t.reshape(kh * kw + 1, batch, out_h * out_w)
        cols = self.work_buffer(prefix + "cols", (batch, out_h, out_w, kh, kw, channels), x_pad.dtype)
        self.workers.each(lambda b: np.copyto(cols[b], windows[b].transpose(0, 1, 2, 4, 5, 3)), batch, cols.nbytes)
        return cols.reshape(batch * out_h * out_w, -1)

    def _plan(self, height: int, width: int, dtype: np.dtype) -> FourierPlan:
        key = (height, width, np.dtype(dtype).str)
        if key not in self._plans:
            self._plans[key] = FourierPlan(height, width, self.kernel_size, self.padding, dtype)
        return self._plans[key]

    def _forward_fourier(self, x: np.ndarray, y: np.ndarray, prefix: str) -> dict[str, Any]:
        """Write the convolution of ``x`` into ``y`` through the convolution theorem (stride 1)."""
        cache, y_spec = self._output_spectrum(x, y.dtype, prefix)
        plan = cache["plan"]
        plan.inverse(y_spec, plan.y_h, plan.y_w, y, self.work_buffer, prefix + "y_inv", self.workers)
        return cache

    def _output_spectrum(self, x: np.ndarray, dtype: np.dtype, prefix: str) -> tuple[dict[str, Any], np.ndarray]:
        """``Y* = X* Wf`` per frequency, the bias included; returns what backward needs, and ``Y*``."""
        batch = len(x)
        plan = self._plan(x.shape[2], x.shape[3], dtype)
        buffer, workers = self.work_buffer, self.workers
        x_spec = plan.spectrum(x, plan.x_w, plan.x_h, buffer, prefix + "x_spec", workers)  # X*  [F, B, C_in]
        kernel_spec = plan.kernel_spectrum(self.params["weights"], buffer, prefix + "kernel_spec",
                                           workers)                                       # Wf  [F, C_in, C_out]
        y_spec = plan.spectrum_buffer(buffer, prefix + "y_spec", batch, self.out_channels)
        workers.run(lambda f: np.matmul(x_spec[f], kernel_spec[f], out=y_spec[f]),      # Y* = X* Wf
                    self._frequency_parts(y_spec, x_spec.shape[2]))
        # the bias is the zero-frequency term: (1 / (Lh Lw)) * bias * Lh * Lw at every position
        y_spec[0] += self.params["bias"] * (plan.len_h * plan.len_w)
        return {"algorithm": "fourier", "x_shape": x.shape, "plan": plan, "x_spec": x_spec,
                "kernel_spec": kernel_spec}, y_spec

    # -- backward ---------------------------------------------------------------------------------
    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        if self._cache is None:
            raise RuntimeError("Conv2D.backward needs a forward(x, training=True) first")
        if self._cache["algorithm"] == "empty":
            for grad in self.grads.values():
                grad.fill(0)
            return None if not self.compute_input_grad else np.zeros(self._cache["x_shape"], grad_out.dtype)
        if self._cache["algorithm"] == "fourier":
            return self._backward_fourier(grad_out)
        if self._cache["algorithm"] == "winograd":
            return self._backward_winograd(grad_out)
        return self._backward_im2col(grad_out)

    def _backward_winograd(self, grad_out: np.ndarray) -> np.ndarray | None:
        cache = self._cache
        grad_in = self.work_buffer("grad_in", cache["x_shape"], grad_out.dtype) if self.compute_input_grad else None
        cache["plan"].backward(grad_out, cache, self.params["weights"].astype(grad_out.dtype, copy=False),
                               self.grads["weights"], self.grads["bias"], grad_in, self.work_buffer, "winograd_",
                               self.workers if self.workers.enabled else None)
        return grad_in

    def _backward_im2col(self, grad_out: np.ndarray) -> np.ndarray | None:
        cols = self._cache["cols"]
        batch, out_channels, out_h, out_w = grad_out.shape
        dtype = grad_out.dtype
        kh, kw = self.kernel_size
        g_mat = None
        if cols.ndim == 3:
            # C_in = 1: [dL/dW_mat, dL/dbias] = sum_b grad_out[b] @ cols[:, b].T, one small product
            # per image (the row of ones in cols gives the bias gradient as the last column)
            per_image = self.work_buffer("grad_w_per_image", (batch, out_channels, cols.shape[0]), dtype)
            g_3d = grad_out.reshape(batch, out_channels, -1)
            self.workers.run(lambda b: np.matmul(g_3d[b], cols[:, b].transpose(1, 2, 0), out=per_image[b]),
                             self.workers.product_parts(batch, 2.0 * grad_out.size * cols.shape[0]))
            grad_w_mat = self._bias_grad_from_total(per_image.sum(axis=0))
        else:
            # dL/dbias[o] = sum_{b, h, w} grad_out[b, o, h, w] (einsum beats sum over two axes)
            self.grads["bias"][...] = np.einsum("bos->o", grad_out.reshape(batch, out_channels, -1))
            g_mat = self._channel_major(grad_out)
            grad_w_mat = self.work_buffer("grad_w_mat", (out_channels, cols.shape[1]), dtype)
            # dL/dW_mat = g_mat @ cols, by rows (output channels): a sum over P within each part
            self.workers.run(lambda o: np.matmul(g_mat[o], cols, out=grad_w_mat[o]),
                             self.workers.product_parts(out_channels, 2.0 * grad_out.size * cols.shape[1]))
        self._set_weight_grads(grad_w_mat)
        if not self.compute_input_grad:
            return None
        if g_mat is None:
            g_mat = self._channel_major(grad_out)
        return self._input_grad_im2col(g_mat, self._cache["x_shape"], out_h, out_w)

    def _bias_grad_from_total(self, total: np.ndarray) -> np.ndarray:
        """C_in = 1: store the last column of ``[dL/dW_mat, dL/dbias]`` as the bias gradient; return dL/dW_mat."""
        self.grads["bias"][...] = total[:, -1]
        return total[:, :-1]

    def _set_weight_grads(self, grad_w_mat: np.ndarray) -> None:
        """``grads["weights"][o, c, i, j] = grad_w_mat[o, (i, j, c)]``."""
        kh, kw = self.kernel_size
        np.copyto(self.grads["weights"],
                  grad_w_mat.reshape(self.out_channels, kh, kw, self.in_channels).transpose(0, 3, 1, 2))

    def _channel_major(self, grad_out: np.ndarray) -> np.ndarray:
        """``g_mat [C_out, P]``: ``g_mat[o, (b, h, w)] = grad_out[b, o, h, w]`` (moves runs of H_out*W_out)."""
        batch, out_channels = grad_out.shape[:2]
        g_mat = self.work_buffer("g_mat", (out_channels, batch, grad_out[0, 0].size), grad_out.dtype)
        g_3d = grad_out.reshape(batch, out_channels, -1)
        self.workers.each(lambda b: np.copyto(g_mat[:, b], g_3d[b].transpose(1, 0, 2)), batch, grad_out.nbytes)
        return g_mat.reshape(out_channels, -1)

    def _input_grad_im2col(self, g_mat: np.ndarray, x_shape: tuple[int, ...], out_h: int,
                           out_w: int) -> np.ndarray:
        """col2im: ``dL/dx`` ``[B, C_in, H, W]`` from ``g_mat [C_out, P]``, one product per kernel offset."""
        batch, channels, height, width = x_shape
        (kh, kw), (sh, sw), (pad_h, pad_w) = self.kernel_size, self.stride, self.padding
        dtype = g_mat.dtype
        # weights_by_offset[i, j] = weights[:, :, i, j] as a contiguous [C_out, C_in] matrix
        weights_by_offset = np.ascontiguousarray(self.params["weights"].transpose(2, 3, 0, 1), dtype=dtype)
        grad_pad = self.work_buffer("grad_x_pad", (batch, height + 2 * pad_h, width + 2 * pad_w, channels),
                                    dtype)
        contribution = self.work_buffer("grad_offset", (batch * out_h * out_w, channels), dtype)
        contribution_4d = contribution.reshape(batch, out_h, out_w, channels)
        g_by_image = g_mat.reshape(g_mat.shape[0], batch, -1)
        grad_in = self.work_buffer("grad_in", x_shape, dtype)

        def images(b: slice) -> None:
            grad_pad[b].fill(0)
            g_part = g_by_image[:, b].reshape(g_mat.shape[0], -1)
            part = contribution_4d[b]
            for i in range(kh):
                for j in range(kw):
                    # contribution[(b, h, w), c] = sum_o g_mat[o, (b, h, w)] * weights[o, c, i, j]
                    np.matmul(g_part.T, weights_by_offset[i, j], out=part.reshape(-1, channels))
                    grad_pad[b, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw, :] += part
            np.copyto(grad_in[b], grad_pad[b, pad_h:pad_h + height, pad_w:pad_w + width, :].transpose(0, 3, 1, 2))

        self.workers.run(images, self.workers.product_parts(batch, 2.0 * contribution.size * g_mat.shape[0] * kh * kw))
        return grad_in

    def _backward_fourier(self, grad_out: np.ndarray) -> np.ndarray | None:
        """``G = DFT(g)``; ``DW* = X*^T G`` per frequency; ``DX = G Wf^T``; inverse transforms."""
        plan: FourierPlan = self._cache["plan"]
        g_spec = plan.spectrum(grad_out, plan.g_w, plan.g_h, self.work_buffer, "g_spec", self.workers)
        return self._backward_from_spectrum(g_spec, grad_out.dtype)

    def _backward_from_spectrum(self, g_spec: np.ndarray, dtype: np.dtype) -> np.ndarray | None:
        """:meth:`_backward_fourier` from ``G [F, B, C_out]``, the output gradient's spectrum."""
        plan: FourierPlan = self._cache["plan"]
        x_spec, kernel_spec = self._cache["x_spec"], self._cache["kernel_spec"]
        buffer, workers = self.work_buffer, self.workers
        # frequency 0 of G is the sum of g over positions, so dL/dbias = sum_b G[0, b] (real)
        np.sum(g_spec[0].real, axis=0, out=self.grads["bias"])
        grad_w_spec = buffer("grad_w_spec", kernel_spec.shape, plan.complex)
        grad_x_spec = (plan.spectrum_buffer(buffer, "grad_x_spec", *x_spec.shape[1:]) if self.compute_input_grad
                       else None)

        def products(job: tuple[str, slice]) -> None:
            kind, f = job
            if kind == "weights":   # conj(DW) = X*^T G: a sum over the batch within each frequency
                np.matmul(x_spec[f].transpose(0, 2, 1), g_spec[f], out=grad_w_spec[f])
            else:                   # DX = G Wf^T
                np.matmul(g_spec[f], kernel_spec[f].transpose(0, 2, 1), out=grad_x_spec[f])

        # both products per frequency in one hand-over, each by parts of the frequencies
        jobs = [("weights", f) for f in self._frequency_parts(grad_w_spec, x_spec.shape[1])]
        if grad_x_spec is not None:
            jobs += [("inputs", f) for f in self._frequency_parts(grad_x_spec, g_spec.shape[2])]
        workers.run(products, jobs)
        np.copyto(self.grads["weights"], plan.kernel_from_spectrum(grad_w_spec, conjugated=True, workers=workers))
        if grad_x_spec is None:
            return None
        grad_in = self.work_buffer("grad_in", self._cache["x_shape"], dtype)
        return plan.inverse(grad_x_spec, plan.dx_h, plan.dx_w, grad_in, buffer, "grad_x_inv", workers)

    def _frequency_parts(self, out: np.ndarray, inner: int) -> list[slice]:
        """Parts of the frequencies for the products per frequency into ``out [F, ., .]`` (complex:
        8 real FLOPs per multiply-add over ``inner``)."""
        return self.workers.product_parts(len(out), 8.0 * out.size * inner)

    # -- training together with the 2x2 max pooling after it ------------------------------------
    def pools_in_chunks(self, pool: Layer, x: np.ndarray) -> bool:
        """Whether :meth:`forward_pooled` can train this layer and ``pool``, the layer after it, on ``x``.

        ``pool`` must be a MaxPool2D whose 2x2 fast path applies, and this layer either the first of
        the usual MNIST network (one input channel, im2col, no ``dL/dx``) or a Fourier convolution.
        """
        takes_fast_path = getattr(pool, "takes_fast_path", None)
        if takes_fast_path is None or x.ndim != 4 or x.shape[1] != self.in_channels or len(x) == 0:
            return False
        algorithm = self.algorithm_for(len(x), *x.shape[2:])
        if algorithm == "im2col":
            if self.in_channels != 1 or self.compute_input_grad:
                return False
        elif algorithm != "fourier":
            return False
        return takes_fast_path((len(x), self.out_channels, *self.output_hw(x.shape[2], x.shape[3])))

    def forward_pooled(self, x: np.ndarray, pool: Layer) -> np.ndarray:
        """``pool.forward(self.forward(x, True), True)``, the same numbers, a chunk of images at a time.

        Each chunk's convolution output is pooled while it is still in the cache, so the batch-sized
        output of this layer (12.8 MB for 32 maps of 28x28 and 128 images) is never written to memory
        nor read back. im2col runs chunks of about the pooling's ``CHUNK_BYTES``, its patches in
        parity-major order so that each chunk's product comes out parity-major and the pooling's passes
        run over contiguous planes (:mod:`digitnet.kernels.pooling`); Fourier pools the chunks of its
        inverse transform.
        """
        batch = len(x)
        out_h, out_w = self.output_hw(x.shape[2], x.shape[3])
        dtype = np.result_type(x, self.params["weights"])
        shape = (batch, self.out_channels, out_h, out_w)
        if self.algorithm_for(batch, *x.shape[2:]) == "fourier":
            self._cache, y_spec = self._output_spectrum(x, dtype, "")
            self._cache["pooled_shape"] = shape
            plan = self._cache["plan"]
            pooled = pool.start_fast_forward(shape, dtype)
            plan.inverse(y_spec, plan.y_h, plan.y_w, None, self.work_buffer, "y_inv", self.workers,
                         then=lambda part, y: pool.fast_forward_chunk(y, part, pooled))
            return pooled
        cols = self._im2col(self._padded_input(x, dtype, ""), out_h, out_w, "", parity_major=True)  # [K + 1, B, P]
        w_bias = self._weights_with_bias(dtype)
        pooled = pool.start_fast_forward(shape, dtype, parity_major=True)
        chunk_shape = (pool.images_per_chunk(shape, dtype), *shape[1:])

        def chunk(part: slice) -> None:                   # chunks spread over the threads
            patches = cols[:, part]
            y = self.lane_buffer("y_chunk", chunk_shape, dtype)[:patches.shape[1]]
            np.matmul(w_bias, patches.transpose(1, 0, 2), out=y.reshape(len(y), self.out_channels, -1))
            pool.fast_forward_parity_chunk(_parity_view(y), part, pooled)

        self.workers.run(chunk, pool.fast_path_chunks(shape, dtype))
        self._cache = {"algorithm": "im2col", "x_shape": x.shape, "cols": cols, "pooled_shape": shape,
                       "chunk_shape": chunk_shape}
        return pooled

    def backward_pooled(self, grad_pooled: np.ndarray, pool: Layer) -> np.ndarray | None:
        """Backward of :meth:`forward_pooled`: fills the gradients of this layer, returns ``dL/dx`` (or None).

        Chunk by chunk, the pooling routes ``grad_pooled`` to its inputs (this layer's outputs), and
        the chunk goes on while it is in the cache: im2col's product per image gives
        ``[dL/dW_mat, dL/dbias]`` (this layer is then the first: no ``dL/dx``; it sums over the positions
        in parity-major order, so these differ from :meth:`backward`'s in the last bits); Fourier transforms the
        chunk into its columns of the spectrum ``G`` and continues as :meth:`backward` does.
        """
        shape, dtype = self._cache["pooled_shape"], grad_pooled.dtype
        if self._cache["algorithm"] == "fourier":
            plan: FourierPlan = self._cache["plan"]

            def grad_chunk(part: slice) -> np.ndarray:
                grad_y = self.lane_chunk("grad_y_chunk", part.stop - part.start, shape[1:], dtype)
                pool.fast_backward_chunk(grad_pooled, part, grad_y)
                return grad_y

            g_spec = plan.spectrum_of_chunks(shape, grad_chunk, plan.g_w, plan.g_h, self.work_buffer, "g_spec",
                                             self.workers)
            return self._backward_from_spectrum(g_spec, dtype)
        cols = self._cache["cols"]
        per_image = self.work_buffer("grad_w_per_image", (shape[0], self.out_channels, cols.shape[0]), dtype)

        def chunk(part: slice) -> None:                   # per image: no sum across chunks until the end
            patches = cols[:, part]
            grad_y = self.lane_buffer("grad_chunk", self._cache["chunk_shape"], dtype)[:patches.shape[1]]
            pool.fast_backward_parity_chunk(grad_pooled, part, _parity_view(grad_y))
            np.matmul(grad_y.reshape(len(grad_y), self.out_channels, -1), patches.transpose(1, 2, 0),
                      out=per_image[part])

        self.workers.run(chunk, pool.fast_path_chunks(shape, dtype))
        self._set_weight_grads(self._bias_grad_from_total(per_image.sum(axis=0)))
        return None

    def release_buffers(self) -> None:
        super().release_buffers()
        self._cache = None


def _parity_view(images: np.ndarray) -> np.ndarray:
    """A contiguous ``[b, C, H, W]`` array holding parity-major images, seen as ``[b, C, 2, 2, H/2, W/2]``."""
    count, channels, height, width = images.shape
    return images.reshape(count, channels, 2, 2, height // 2, width // 2)
