"""Convolution through the convolution theorem, with the discrete Fourier transforms done as matrix products.

A stride-1 convolution of an ``H x W`` image padded to ``Lh x Lw`` (``Lh = H + 2 pH``) is, at every
output position, a circular correlation of period ``(Lh, Lw)``: the window never wraps around,
because ``H_out + kH - 1 = Lh``. The DFT turns a circular correlation into a product per frequency
``k = (kh, kw)``::

    y[b, o]  = sum_c  x_pad[b, c]  (*)  weights[o, c]           (*) = circular correlation
    Y[k, b, o] = sum_c  X[k, b, c] * conj(Wf[k, c, o])          X = DFT(x_pad), Wf = DFT(weights)

so the sum over input channels becomes one small complex matrix product per frequency,
``[B, C_in] @ [C_in, C_out]``, instead of one with ``C_in*kH*kW`` rows per output pixel. For
32 -> 64 channels with a 5x5 kernel on 14x14 images that is 7x fewer multiply-adds than im2col.
Backward uses the same theorem (``g = dL/dy``, ``G = DFT(g)``)::

    dL/dx_pad[b, c]    = sum_o g[b, o] (conv) weights[o, c]  ->  DX[k, b, c] = sum_o G[k, b, o] * Wf[k, c, o]
    dL/dweights[o, c]  = sum_b x_pad[b, c] (*) g[b, o]        ->  DW[k, c, o] = sum_b X[k, b, c] * conj(G[k, b, o])

The images are real, so only ``Lw // 2 + 1`` frequencies along W are kept (the others are complex
conjugates). The transforms are separable, so each is two matrix products (along W, then along
H) with small DFT matrices built once per image size; the zero padding never exists in memory
(it is a phase factor in the matrices), and the inverse transforms evaluate only the positions
that are needed. NumPy's own FFT is slower here: for 4,096 transforms of 18x18 images the
matrix products win because BLAS runs them at full speed, while the FFT pays per transform.

To avoid conjugating large arrays, the input spectrum is kept conjugated, ``X* = DFT+(x)``
(the transform with ``e^{+i theta}``): then ``Y* = X* Wf`` needs no conjugate either, and the inverse
transform of ``Y*`` uses ``e^{-i theta}``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from digitnet.kernels.parallel import SERIAL, Workers

Buffer = Callable[[str, tuple[int, ...], np.dtype], np.ndarray]


def complex_dtype(dtype: np.dtype) -> np.dtype:
    """complex64 for float32 work, complex128 for float64 (gradient checks)."""
    return np.dtype(np.complex64 if np.dtype(dtype) == np.float32 else np.complex128)


def _half_weights(length: int) -> np.ndarray:
    """How often each kept frequency ``0 .. L//2`` stands in the full spectrum: 1 for 0 (and L/2), else 2."""
    weights = np.full(length // 2 + 1, 2.0)
    weights[0] = 1.0
    if length % 2 == 0:
        weights[-1] = 1.0
    return weights


#: the transforms run a chunk of images at a time, as many as keep a chunk's complex rows within this
#: many bytes (``[n_h, Kw, b, Ch]``: 16 images of 64 channels of 14x14), so that its intermediate arrays
#: stay in a core's L2 cache between the three steps; smaller chunks make too many small products
#: (docs/SPEED.md)
CHUNK_BYTES = 1 << 20

#: bytes per cache line: a row stride of an odd number of lines spreads the rows over all of a cache's sets
CACHE_LINE = 64


def unaliased_length(length: int, itemsize: int) -> int:
    """The smallest row length from ``length`` elements whose size is an odd number of cache lines.

    Reading one element from each of many rows 4 KB (or any power of two) apart maps every read to
    the same set of the L1 cache, which holds only a few lines per set: the transpose in
    :meth:`FourierPlan.inverse` took 4-6x as long with 1024-element rows as with 1032 (docs/SPEED.md).
    """
    lines = -(-length * itemsize // CACHE_LINE)
    lines += 1 - lines % 2
    return max(length, lines * CACHE_LINE // itemsize)


def _chunk_scratch(buffer: Buffer, name: str, largest: int) -> Callable[..., np.ndarray]:
    """``scratch(suffix, shape, dtype, count, padded=False)``: the calling thread's scratch array of
    ``shape`` for a chunk of ``count`` images.

    The array is the front of a flat buffer sized for the ``largest`` chunk, so chunks of near-equal
    sizes share one allocation instead of trading it back and forth. ``padded``: the last axis (which
    grows with ``count``) is a view of rows of :func:`unaliased_length` for the largest chunk.
    """
    def scratch(suffix: str, shape: tuple[int, ...], dtype: np.dtype, count: int, padded: bool = False) -> np.ndarray:
        key = f"{name}@{threading.get_ident()}{suffix}"
        if padded:
            *leading, last = shape
            stride = unaliased_length(last // count * largest, np.dtype(dtype).itemsize)
            flat = buffer(key, (int(np.prod(leading)) * stride,), dtype)
            return flat.reshape(*leading, stride)[..., :last]
        size = int(np.prod(shape))
        flat = buffer(key, (size // count * largest,), dtype)
        return flat[:size].reshape(shape)
    return scratch


class FourierPlan:
    """DFT matrices for one geometry: image ``H x W``, kernel ``kH x kW``, padding, stride 1.

    Attributes:
        freq_h, freq_w: ``Lh`` and ``Lw // 2 + 1``, the frequencies kept along each axis.
    """

    def __init__(self, height: int, width: int, kernel: tuple[int, int], padding: tuple[int, int],
                 dtype: np.dtype) -> None:
        (kh, kw), (ph, pw) = kernel, padding
        self.height, self.width = height, width
        self.kernel = kernel
        self.len_h, self.len_w = height + 2 * ph, width + 2 * pw
        self.out_h, self.out_w = self.len_h - kh + 1, self.len_w - kw + 1
        self.freq_h, self.freq_w = self.len_h, self.len_w // 2 + 1
        self.real = np.dtype(dtype)
        self.complex = complex_dtype(dtype)
        norm = 1.0 / (self.len_h * self.len_w)
        # input x (at padded positions h + pH): conjugated spectrum; output gradient g: plain spectrum
        self.x_w, self.x_h = self._forward_pair(height, width, (ph, pw), sign=+1)
        self.g_w, self.g_h = self._forward_pair(self.out_h, self.out_w, (0, 0), sign=-1)
        # inverse transforms: outputs y from Y* (sign -1), input gradient from DX (sign +1)
        self.y_h, self.y_w = self._inverse_pair(self.out_h, self.out_w, (0, 0), sign=-1, norm=norm)
        self.dx_h, self.dx_w = self._inverse_pair(height, width, (ph, pw), sign=+1, norm=norm)
        # kernel transforms, one matrix each over the kH*kW offsets (i, j):
        # Wf[(kh, kw)] = sum_{i,j} e^{-i theta_h(kh, i)} e^{-i theta_w(j, kw)} w[i, j]          [F, kH*kW]
        phase_h = self._phase(np.arange(self.freq_h), np.arange(kh), self.len_h, -1)         # [Lh, kH]
        phase_w = self._phase(np.arange(kw), np.arange(self.freq_w), self.len_w, -1)         # [kW, Kw]
        self.kernel_forward = np.einsum("ai,jb->abij", phase_h, phase_w).reshape(-1, kh * kw).astype(self.complex)
        # and back: w[i, j] = Re sum_{kh, kw} e^{+i theta_h} c_kw Wf[kh, kw] e^{+i theta_w} / (Lh Lw)   [kH*kW, F]
        inv_h = self._phase(np.arange(kh), np.arange(self.freq_h), self.len_h, +1)           # [kH, Lh]
        inv_w = (self._phase(np.arange(self.freq_w), np.arange(kw), self.len_w, +1)
                 * (_half_weights(self.len_w) * norm)[:, None])                               # [Kw, kW]
        self.kernel_inverse = np.einsum("ia,bj->ijab", inv_h, inv_w).reshape(kh * kw, -1).astype(self.complex)
        self.kernel_inverse_conj = np.conjugate(self.kernel_inverse)      # for conj(Wf), see below

    @staticmethod
    def _phase(rows: np.ndarray, cols: np.ndarray, length: int, sign: int) -> np.ndarray:
        """``exp(sign * 2 pi i * rows[:, None] * cols[None, :] / length)`` in complex128."""
        return np.exp(sign * 2j * np.pi * np.outer(rows, cols) / length)

    def _forward_pair(self, n_h: int, n_w: int, offset: tuple[int, int], sign: int):
        """Matrices of the transform of a real ``[.., n_h, n_w]`` image placed at ``offset``.

        Along W: real ``[n_w, 2*Kw]`` whose columns hold (re, im) of ``e^{sign i theta}`` side by
        side, so ``image @ matrix`` is the complex half spectrum stored as interleaved floats.
        Along H: complex ``[Lh, n_h]``.
        """
        phase_w = self._phase(np.arange(n_w) + offset[1], np.arange(self.freq_w), self.len_w, sign)
        along_w = np.stack([phase_w.real, phase_w.imag], axis=-1).reshape(n_w, -1).astype(self.real)
        along_h = self._phase(np.arange(self.freq_h), np.arange(n_h) + offset[0], self.len_h, sign)
        return along_w, along_h.astype(self.complex)

    def _inverse_pair(self, n_h: int, n_w: int, offset: tuple[int, int], sign: int, norm: float):
        """Matrices of the inverse transform, evaluated at ``n_h x n_w`` positions from ``offset``.

        Along H: complex ``[n_h, Lh]``. Along W, to a real result: ``Re(sum_kw c_kw F[kw] e^{sign i theta})
        = sum_kw c_kw (Re F cos - sign Im F sin)``, a real ``[2*Kw, n_w]`` matrix acting on interleaved
        (re, im) pairs; ``c_kw`` counts the dropped conjugate frequencies, ``norm = 1 / (Lh Lw)``.
        """
        along_h = self._phase(np.arange(n_h) + offset[0], np.arange(self.freq_h), self.len_h, sign)
        phase_w = self._phase(np.arange(self.freq_w), np.arange(n_w) + offset[1], self.len_w, sign)
        scale = (_half_weights(self.len_w) * norm)[:, None]
        along_w = np.stack([phase_w.real * scale, -phase_w.imag * scale], axis=1).reshape(-1, n_w)
        return along_h.astype(self.complex), along_w.astype(self.real)

    # -- the three transforms -------------------------------------------------------------------------
    def image_chunks(self, batch: int, per_image_bytes: int) -> list[slice]:
        """Parts of the batch for the transforms: as few as keep each part's complex rows within
        ``CHUNK_BYTES``, of near-equal sizes. Shapes only, so the parts do not depend on the threads."""
        per_chunk = max(1, CHUNK_BYTES // max(1, per_image_bytes))
        count = -(-batch // per_chunk)
        return [slice(batch * index // count, batch * (index + 1) // count) for index in range(count)]

    def _chunks(self, batch: int, n_h: int, channels: int, buffer: Buffer,
                name: str) -> tuple[list[slice], Callable[..., np.ndarray]]:
        """The chunks of a transform whose complex rows are ``[n_h, Kw, b, channels]``, and their scratch."""
        parts = self.image_chunks(batch, n_h * self.freq_w * channels * self.complex.itemsize)
        return parts, _chunk_scratch(buffer, name, max((part.stop - part.start for part in parts), default=1))

    def spectrum_buffer(self, buffer: Buffer, name: str, batch: int, channels: int) -> np.ndarray:
        """``buffer(name)`` as a spectrum ``[F, B, Ch]`` whose frequencies lie :func:`unaliased_length`
        apart: the transforms along H read and write one row of ``B * Ch`` values per frequency, and
        rows a power of two apart (128 images of 64 channels: 64 KB) crowd one set of the L1 cache."""
        stride = unaliased_length(batch * channels, self.complex.itemsize)
        rows = buffer(name, (self.freq_h * self.freq_w, stride), self.complex)
        return rows[:, :batch * channels].reshape(-1, batch, channels)

    def _by_column(self, spectrum: np.ndarray) -> np.ndarray:
        """A spectrum ``[F, B, Ch]`` seen as ``[Lh, Kw, B * Ch]``: a view, never a copy (written through)."""
        by_column = spectrum.reshape(self.freq_h, self.freq_w, -1)
        if not np.may_share_memory(by_column, spectrum):
            raise ValueError("the spectrum's frequencies must be rows of B * Ch values")
        return by_column

    def spectrum(self, images: np.ndarray, along_w: np.ndarray, along_h: np.ndarray, buffer: Buffer,
                 name: str, workers: Workers = SERIAL) -> np.ndarray:
        """``[B, Ch, n_h, n_w]`` real -> ``[F, B, Ch]`` complex, ``F = Lh * Kw`` frequencies (h-major).

        A chunk of images at a time (:meth:`image_chunks`, spread over ``workers``): ``A = images @
        along_w`` over W straight from NCHW (one GEMM), one transpose of that half spectrum to
        ``[n_h, Kw, b, Ch]``, then ``along_h @ A[:, kw]`` over H for each of the ``Kw`` frequencies
        along W (one stacked product) writes the chunk's columns of the frequency-major result. A
        chunk's intermediate arrays stay in the L2 cache; transposing the whole batch's (4-9 MB) at
        once runs at the speed of memory.
        """
        return self.spectrum_of_chunks(images.shape, lambda part: images[part], along_w, along_h, buffer, name,
                                       workers)

    def spectrum_of_chunks(self, shape: tuple[int, ...], images: Callable[[slice], np.ndarray],
                           along_w: np.ndarray, along_h: np.ndarray, buffer: Buffer, name: str,
                           workers: Workers = SERIAL) -> np.ndarray:
        """:meth:`spectrum` of a batch of ``shape`` whose chunks come from ``images(part)``, called once
        per chunk in the thread that transforms it: a view of an array, or a chunk computed just then
        (the gradient a pooling routes back), which the transform reads while it is in the cache."""
        batch, channels, n_h, n_w = shape
        spectrum = self.spectrum_buffer(buffer, name, batch, channels)
        by_column = self._by_column(spectrum)

        parts, scratch = self._chunks(batch, n_h, channels, buffer, name)

        def chunk(part: slice) -> None:
            count, columns = part.stop - part.start, slice(part.start * channels, part.stop * channels)
            half = scratch("_half", (count * channels * n_h, 2 * self.freq_w), self.real, count)
            np.matmul(images(part).reshape(-1, n_w), along_w, out=half)
            rows = scratch("_rows", (n_h, self.freq_w, count * channels), self.complex, count)
            np.copyto(rows.reshape(n_h * self.freq_w, -1), half.view(self.complex).reshape(count * channels, -1).T)
            np.matmul(along_h, rows.transpose(1, 0, 2), out=by_column[:, :, columns].transpose(1, 0, 2))

        workers.run(chunk, parts)
        return spectrum

    def inverse(self, spectrum: np.ndarray, along_h: np.ndarray, along_w: np.ndarray, out: np.ndarray | None,
                buffer: Buffer, name: str, workers: Workers = SERIAL,
                then: Callable[[slice, np.ndarray], None] | None = None) -> np.ndarray | None:
        """``[F, B, Ch]`` complex -> real ``out [B, Ch, n_h, n_w]`` (NCHW, written in place).

        :meth:`spectrum` backwards, a chunk of images at a time: per frequency along W, ``along_h``
        over H into ``[n_h, Kw, b, Ch]`` (one stacked product); a transpose to ``[b, Ch, n_h, Kw]``;
        one real product with ``along_w`` over the (re, im) pairs writes the chunk's images.
        ``then(part, images)``, if given, is called with each chunk's images while they are in the
        cache (a pooling that takes them at once); ``out`` None then keeps them in a chunk-sized buffer
        and never writes the batch.
        """
        _, batch, channels = spectrum.shape
        n_h, n_w = along_h.shape[0], along_w.shape[1]
        by_column = self._by_column(spectrum)

        parts, scratch = self._chunks(batch, n_h, channels, buffer, name)

        def chunk(part: slice) -> None:
            count, columns = part.stop - part.start, slice(part.start * channels, part.stop * channels)
            # rows of an odd number of cache lines: the transpose below reads one value from each
            rows = scratch("_rows", (n_h, self.freq_w, count * channels), self.complex, count, padded=True)
            np.matmul(along_h, by_column[:, :, columns].transpose(1, 0, 2), out=rows.transpose(1, 0, 2))
            images = scratch("_images", (count, channels, n_h, self.freq_w), self.complex, count)
            np.copyto(images, rows.reshape(n_h, self.freq_w, count, channels).transpose(2, 3, 0, 1))
            result = out[part] if out is not None else scratch("_out", (count, channels, n_h, n_w), self.real, count)
            np.matmul(images.view(self.real).reshape(-1, 2 * self.freq_w), along_w, out=result.reshape(-1, n_w))
            if then is not None:
                then(part, result)

        workers.run(chunk, parts)
        return out

    @staticmethod
    def _by_columns(left: np.ndarray, right: np.ndarray, out: np.ndarray, workers: Workers) -> None:
        """``out = left @ right`` by parts of the columns of ``right`` (shapes decide the parts)."""
        parts = workers.product_parts(right.shape[1], 8.0 * out.size * left.shape[1], out.nbytes)
        workers.run(lambda c: np.matmul(left, right[:, c], out=out[:, c]), parts)

    def kernel_spectrum(self, weights: np.ndarray, buffer: Buffer | None = None, name: str = "kernel_spec",
                        workers: Workers = SERIAL) -> np.ndarray:
        """``Wf [F, C_in, C_out]``: the DFT of each ``[kH, kW]`` kernel zero-padded to ``Lh x Lw``.

        One product ``[F, kH*kW] @ [kH*kW, C_in*C_out]`` with the kernels' offsets as rows, by parts
        of its columns (it is bound by writing the spectrum, a few MB: into ``buffer(name, ...)``
        when given, a reused array whose pages are already mapped, else a new one).
        """
        channels_out, channels_in, kh, kw = weights.shape
        by_offset = weights.transpose(2, 3, 1, 0).reshape(kh * kw, -1).astype(self.complex)    # [kH*kW, C*O]
        shape = (len(self.kernel_forward), by_offset.shape[1])
        spectrum = buffer(name, shape, self.complex) if buffer is not None else np.empty(shape, self.complex)
        self._by_columns(self.kernel_forward, by_offset, spectrum, workers)
        return spectrum.reshape(-1, channels_in, channels_out)

    def kernel_from_spectrum(self, spectrum: np.ndarray, conjugated: bool = False,
                             workers: Workers = SERIAL) -> np.ndarray:
        """Inverse of :meth:`kernel_spectrum` at the ``kH x kW`` offsets: real ``[C_out, C_in, kH, kW]``.

        ``conjugated``: ``spectrum`` holds ``conj(Wf)``. Since ``Re(A conj(z)) = Re(conj(A) z)``,
        conjugating the small matrix instead saves a pass over the spectrum. By parts of the
        columns, as it is bound by reading the spectrum.
        """
        frequencies, channels_in, channels_out = spectrum.shape
        kh, kw = self.kernel
        inverse = self.kernel_inverse_conj if conjugated else self.kernel_inverse
        by_column = spectrum.reshape(frequencies, -1)
        kernel = np.empty((kh * kw, by_column.shape[1]), self.complex)                          # [kH*kW, C*O]
        parts = workers.product_parts(by_column.shape[1], 8.0 * kernel.size * frequencies, spectrum.nbytes)
        workers.run(lambda c: np.matmul(inverse, by_column[:, c], out=kernel[:, c]), parts)
        return kernel.real.reshape(kh, kw, channels_in, channels_out).transpose(3, 2, 0, 1)
