"""Winograd convolution F(m x m, 3 x 3) for 3x3, stride-1 layers (m = 2 or 4).

Winograd's minimal filtering computes an ``m x m`` block of outputs of a 3x3 correlation from an
``a x a`` tile of the input (``a = m + 2``) with ``a^2`` products instead of ``9 m^2``::

    y_tile = A^T [ (G w G^T) (.) (B^T d B) ] A          d [a, a] input tile, w [3, 3] kernel, (.) elementwise

``B^T [a, a]``, ``G [a, 3]`` and ``A^T [m, a]`` are fixed matrices (Lavin & Gray 2016, interpolation
points 0, +-1 for m = 2 and 0, +-1, +-2 for m = 4, plus infinity). With channels, the sum over
``C_in`` moves inside the brackets, so at each of the ``a^2`` transform positions ``p = (xi, nu)``
it is one real matrix product over the channels::

    V[p, c, n] = (B^T d_{c, n} B)[p]             transformed input tiles, n = (tile_h, tile_w, b)
    U[p, o, c] = (G w_{o, c} G^T)[p]             transformed kernels
    M[p, o, n] = sum_c U[p, o, c] V[p, c, n]     [C_out, C_in] @ [C_in, B*tiles] per position
    y[b, o, tile] = A^T M[:, o, n] A + bias[o]

That is ``a^2 / m^2`` multiply-adds per output value and input channel, 4 (m = 2) or 2.25 (m = 4),
instead of 9, at the price of the transforms and of keeping ``V`` for backward (``(a / m)^2``
times the input: 4x or 2.25x). Each two-sided transform ``T X T^T`` of the tiles is two GEMMs over all the tiles of
a chunk of channels (:func:`sandwich`); the tiles are kept transform-position-major
(``[p, C, tiles*B]``) so the product over channels is one large GEMM per position.

Backward is the chain rule through these linear maps (``g = dL/dy`` cut into ``m x m`` tiles)::

    Gt[p, o, n]        = (A g_{o, n} A^T)[p]                       transformed output gradient
    dU[p, o, c]        = sum_n Gt[p, o, n] V[p, c, n]              -> dL/dw = G^T dU G
    dV[p, c, n]        = sum_o U[p, o, c] Gt[p, o, n]              -> dL/dd = B dV B^T
    dL/dx_pad          = the tiles' gradients added back where the (overlapping) tiles came from

Output sizes that are not multiples of ``m`` get whole tiles: the input is zero-padded past its
end and the extra outputs are cropped (their gradient is zero).

benchmarks/conv3x3.py times a training step against FastConv2D's im2col and Fourier algorithms
(results in benchmarks/results/conv3x3.md). With 128 images, F(4x4) is the fastest for 32 -> 32
channels on 28x28 (1.5x Fourier at one BLAS thread, 1.2x at two) and 5% faster than Fourier for
32 -> 64 on 14x14 at one BLAS thread, but 1.4x slower at two: its layout copies run on one thread
(the ``workers`` argument runs the batch parts in threads instead). im2col stays far ahead for one
input channel, Fourier for 64 -> 64 on 7x7; F(2x2) was never the fastest.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from digitnet.errors import ConfigError
from digitnet.kernels.parallel import SERIAL, Workers

Buffer = Callable[[str, tuple[int, ...], np.dtype], np.ndarray]

#: the transforms go through chunks of channels whose tiles take about this many bytes (cache-sized)
CHUNK_BYTES = 1 << 19
#: forward and backward go through the batch a part at a time, as many images as keep the largest
#: intermediate array of a part (M = U V, or Gt, ``[a^2, C_out, N]``) near this size: the steps then
#: pass it on through the cache instead of memory (see batch_parts for the measurements)
PART_BYTES = 6 << 20

#: (B^T, G, A^T) of F(m, 3) for m = 2 and 4, from Lavin & Gray, "Fast Algorithms for Convolutional
#: Neural Networks" (2016); exact in binary floating point except G's sixths and twenty-fourths
TRANSFORMS = {
    2: (
        [[1, 0, -1, 0],
         [0, 1, 1, 0],
         [0, -1, 1, 0],
         [0, 1, 0, -1]],
        [[1, 0, 0],
         [1 / 2, 1 / 2, 1 / 2],
         [1 / 2, -1 / 2, 1 / 2],
         [0, 0, 1]],
        [[1, 1, 1, 0],
         [0, 1, -1, -1]],
    ),
    4: (
        [[4, 0, -5, 0, 1, 0],
         [0, -4, -4, 1, 1, 0],
         [0, 4, -4, -1, 1, 0],
         [0, -2, -1, 2, 1, 0],
         [0, 2, -1, -2, 1, 0],
         [0, 4, 0, -5, 0, 1]],
        [[1 / 4, 0, 0],
         [-1 / 6, -1 / 6, -1 / 6],
         [-1 / 6, 1 / 6, -1 / 6],
         [1 / 24, 1 / 12, 1 / 6],
         [1 / 24, -1 / 12, 1 / 6],
         [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0],
         [0, 1, -1, 2, -2, 0],
         [0, 1, 1, 4, 4, 0],
         [0, 1, -1, 8, -8, 1]],
    ),
}


def transform_matrices(tile: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(B^T [a, a], G [a, 3], A^T [m, a])`` of F(m, 3), ``m = tile``, ``a = m + 2``, in float64."""
    if tile not in TRANSFORMS:
        raise ConfigError(f"Winograd tile must be 2 or 4, got {tile!r}")
    return tuple(np.array(matrix, dtype=np.float64) for matrix in TRANSFORMS[tile])


def sandwich(left: np.ndarray, tiles: np.ndarray, out: np.ndarray, scratch: np.ndarray) -> None:
    """``out[x, y, :] = sum_{i, j} left[x, i] left[y, j] tiles[i, j, :]``: ``T X T^T`` of every tile at once.

    ``left [n, k]``, ``tiles [k, k, R]`` and ``out [n, n, R]`` (views whose last axis is contiguous),
    ``scratch [k, n, R]``. Two GEMMs with ``k`` inner products per value instead of one with
    ``kron(T, T)`` and ``k^2``: alone on a 512 KB chunk 2x faster for both tile sizes (31 against
    59 us for F(2x2)'s input transform, 36 against 77 for F(4x4)'s); in a whole training step of
    128 images, the same time for F(2x2) and 5-13% less for F(4x4).
    """
    np.matmul(left, tiles, out=scratch)                                  # scratch[i, y] = sum_j left[y, j] tiles[i, j]
    np.matmul(left, scratch.transpose(1, 0, 2), out=out.transpose(1, 0, 2))


def tile_view(array: np.ndarray, size: int) -> np.ndarray:
    """``[size^2, ...]`` as ``[size, size, R]``, a view (it is written through)."""
    view = array.reshape(size, size, -1)
    if not np.may_share_memory(view, array):
        raise ValueError("tile_view needs an array whose trailing axes merge without a copy")
    return view


def batch_last(images: np.ndarray, out: np.ndarray, top: int, left: int) -> None:
    """``out [C, Hf, Wf, B]`` = ``images [B, C, H, W]`` placed at ``(top, left)`` in a zero frame.

    Only the frame is zeroed (``out`` is a reused buffer whose interior is overwritten).
    """
    height, width = images.shape[2:]
    out[:, :top] = 0
    out[:, top + height:] = 0
    out[:, top:top + height, :left] = 0
    out[:, top:top + height, left + width:] = 0
    np.copyto(out[:, top:top + height, left:left + width], images.transpose(1, 2, 3, 0))


def batch_first(framed: np.ndarray, out: np.ndarray, top: int, left: int) -> None:
    """``out [B, C, H, W]`` = the ``H x W`` window at ``(top, left)`` of ``framed [C, Hf, Wf, B]``.

    One channel at a time: a single 4-D copy reads ``framed`` with a stride of ``B`` floats across
    the whole array and is 10x slower (20 ms instead of 2 for 64 channels of 14x14, B = 128).
    """
    height, width = out.shape[2:]
    for channel in range(out.shape[1]):
        np.copyto(out[:, channel], framed[channel, top:top + height, left:left + width].transpose(2, 0, 1))


class WinogradPlan:
    """F(m x m, 3 x 3) for one geometry: image ``H x W``, padding ``(pH, pW)``, stride 1, one dtype.

    Inside, images are kept batch-last, ``[C, H, W, B]``, and a tile index is ``n = (th, tw, b)``:
    the tiles overlap and are read at a stride of ``m``, so with the batch innermost every copy
    moves runs of ``B`` floats instead of single ones (for 32 channels of 14x14 and B = 128 the tile
    gather is 3x faster than from NCHW). The transforms go one chunk of channels at a time, so the
    gathered tiles are still in the cache when the GEMM reads them.

    Attributes:
        out_h, out_w: the output size, ``H + 2 pH - 2`` (as Conv2D).
        tile: ``m``, outputs per tile along each axis; ``alpha = m + 2`` inputs per tile.
        tiles_h, tiles_w: tiles along each axis, ``ceil(out / m)``.
        input_transform ``B^T [a, a]``, output_transform ``A^T [m, a]``: applied on both sides by
            :func:`sandwich`; kernel_transform ``kron(G, G) [a^2, 9]`` acts on flattened 3x3 kernels.
    """

    def __init__(self, height: int, width: int, padding: tuple[int, int], dtype: np.dtype, tile: int = 2) -> None:
        input_t, kernel_t, output_t = transform_matrices(tile)
        self.height, self.width = height, width
        self.pad_h, self.pad_w = padding
        self.out_h, self.out_w = height + 2 * self.pad_h - 2, width + 2 * self.pad_w - 2
        if self.out_h < 1 or self.out_w < 1:
            raise ConfigError(f"a 3x3 kernel with padding {padding} does not fit a {height}x{width} input")
        self.dtype = np.dtype(dtype)
        self.tile, self.alpha = tile, tile + 2
        self.tiles_h, self.tiles_w = -(-self.out_h // tile), -(-self.out_w // tile)
        # the padded input holds whole blocks of m rows/columns, one more than the tiles: a tile reads
        # its own block and 2 rows/columns of the next; (tiles + 1) blocks also let backward add the
        # tiles' gradients back block by block (see _add_tiles)
        self.padded_h, self.padded_w = (self.tiles_h + 1) * tile, (self.tiles_w + 1) * tile
        self.input_transform = input_t.astype(self.dtype)
        self.kernel_transform = np.kron(kernel_t, kernel_t).astype(self.dtype)
        self.output_transform = output_t.astype(self.dtype)

    @property
    def positions(self) -> int:
        """``a^2``, the transform positions (one product over channels each)."""
        return self.alpha * self.alpha

    def _chunks(self, channels: int, batch: int) -> list[slice]:
        """Chunks of channels whose ``a x a`` tiles take about CHUNK_BYTES (at least one channel each)."""
        per_channel = self.positions * self.tiles_h * self.tiles_w * batch * self.dtype.itemsize
        step = max(1, CHUNK_BYTES // per_channel)
        return [slice(start, min(start + step, channels)) for start in range(0, channels, step)]

    # -- transforms ------------------------------------------------------------------------------
    def kernel_tiles(self, weights: np.ndarray) -> np.ndarray:
        """``U [a^2, C_out, C_in]``: ``G w G^T`` of every 3x3 kernel, one product over the 9 offsets."""
        channels_out, channels_in = weights.shape[:2]
        by_offset = weights.transpose(2, 3, 0, 1).reshape(9, -1).astype(self.dtype, copy=False)   # [9, O*C]
        return np.matmul(self.kernel_transform, by_offset).reshape(self.positions, channels_out, channels_in)

    def kernel_from_tiles(self, tiles: np.ndarray, out: np.ndarray) -> None:
        """``out [C_out, C_in, 3, 3] = G^T dU G``: the transpose of :meth:`kernel_tiles` (for gradients)."""
        _, channels_out, channels_in = tiles.shape
        by_offset = np.matmul(self.kernel_transform.T, tiles.reshape(self.positions, -1))           # [9, O*C]
        np.copyto(out, by_offset.reshape(3, 3, channels_out, channels_in).transpose(2, 3, 0, 1))

    def input_tiles(self, x: np.ndarray, tiles: np.ndarray, buffer: Buffer, name: str) -> np.ndarray:
        """``tiles`` = ``V [a^2, C_in, N]``, ``N = tiles * B``: ``B^T d B`` of every (overlapping) ``a x a`` input tile.

        Per chunk of channels one copy gathers the tiles position-major,
        ``d[(i, j), c, th, tw, b] = x_pad[c, th*m + i, tw*m + j, b]``, and :func:`sandwich` with
        ``B^T`` transforms them.
        """
        batch, channels = x.shape[:2]
        m, a = self.tile, self.alpha
        padded = buffer(name + "_pad", (channels, self.padded_h, self.padded_w, batch), self.dtype)
        batch_last(x, padded, self.pad_h, self.pad_w)
        s_c, s_h, s_w, s_b = padded.strides
        for part in self._chunks(channels, batch):
            chunk = padded[part]
            view = as_strided(chunk, (a, a, len(chunk), self.tiles_h, self.tiles_w, batch),
                              (s_h, s_w, s_c, m * s_h, m * s_w, s_b), writeable=False)
            gathered = buffer(name + "_gather", view.shape, self.dtype)
            np.copyto(gathered, view)
            scratch = buffer(name + "_half", view.shape, self.dtype)
            sandwich(self.input_transform, gathered.reshape(a, a, -1), tile_view(tiles[:, part], a),
                     scratch.reshape(a, a, -1))
        return tiles

    def output_tiles(self, grad_out: np.ndarray, buffer: Buffer, name: str) -> np.ndarray:
        """``Gt [a^2, C_out, N]``: ``A g A^T`` of every ``m x m`` output-gradient tile (zeros past the end).

        The tiles do not overlap: ``g[(r, s), o, th, tw, b] = g_framed[o, th*m + r, tw*m + s, b]``.
        """
        batch, channels = grad_out.shape[:2]
        m = self.tile
        framed = buffer(name + "_frame", (channels, self.tiles_h * m, self.tiles_w * m, batch), self.dtype)
        batch_last(grad_out, framed, 0, 0)
        by_block = framed.reshape(channels, self.tiles_h, m, self.tiles_w, m, batch).transpose(2, 4, 0, 1, 3, 5)
        transformed = buffer(name, (self.positions, channels, self.tiles_h * self.tiles_w * batch), self.dtype)
        for part in self._chunks(channels, batch):
            gathered = buffer(name + "_gather", (m, m, part.stop - part.start, self.tiles_h, self.tiles_w, batch),
                              self.dtype)
            np.copyto(gathered, by_block[:, :, part])
            scratch = buffer(name + "_half", (m, self.alpha, *gathered.shape[2:]), self.dtype)
            sandwich(self.output_transform.T, gathered.reshape(m, m, -1), tile_view(transformed[:, part], self.alpha),
                     scratch.reshape(m, self.alpha, -1))
        return transformed

    # -- forward and backward --------------------------------------------------------------------
    def batch_parts(self, batch: int, channels: int) -> list[slice]:
        """Parts of the batch whose ``[a^2, channels, tiles * images]`` arrays take about PART_BYTES.

        ``channels``: the larger of C_in and C_out. A training step of 128 images (1 BLAS thread,
        a loaded machine) in parts of 8 / 16 / 32 images / whole: 32 -> 64 channels of 14x14 with
        F(2x2) 39 / 35 / 34 / 79 ms; 32 -> 32 of 28x28 with F(2x2) 112 / 93 / 103 ms.
        """
        per_image = self.positions * channels * self.tiles_h * self.tiles_w * self.dtype.itemsize
        count = -(-batch // max(1, PART_BYTES // per_image))              # as few parts as fit, of even sizes
        return [slice(batch * index // count, batch * (index + 1) // count) for index in range(count)]

    @staticmethod
    def _lane_prefix(name: str) -> str:
        """``name`` plus the calling thread's id: each thread running parts has scratch arrays of its own."""
        return f"{name}lane{threading.get_ident()}_"

    def forward(self, x: np.ndarray, weights: np.ndarray, bias: np.ndarray, y: np.ndarray, buffer: Buffer,
                name: str, workers: Workers | None = None) -> dict[str, Any]:
        """Write ``y [B, C_out, out_h, out_w]`` = the 3x3 correlation of ``x [B, C_in, H, W]`` plus ``bias``.

        Part by part of the batch: ``V``, then ``M = U V`` (one GEMM per transform position), then
        ``A^T M A`` chunk by chunk of output channels into a batch-last frame (bias added on the
        way), copied to NCHW. Returns the cache backward needs: every part's ``V`` (kept in one
        buffer) and the input's shape. ``workers`` (:class:`~digitnet.kernels.parallel.Workers`):
        the parts run in its threads (then BLAS should run on one); the numbers are the same.
        """
        batch, channels_in = x.shape[:2]
        per_image = self.positions * channels_in * self.tiles_h * self.tiles_w
        kept = buffer(name + "x_tiles", (batch * per_image,), self.dtype)          # every part's V, for backward
        kernel_tiles = self.kernel_tiles(weights)                                   # U  [a^2, O, C]
        shift = bias.astype(self.dtype, copy=False).reshape(-1, 1, 1, 1, 1, 1)
        parts = self.batch_parts(batch, max(channels_in, len(weights)))

        def forward_part(part: slice) -> np.ndarray:
            prefix = self._lane_prefix(name)
            tiles = kept[part.start * per_image:part.stop * per_image].reshape(self.positions, channels_in, -1)
            self.input_tiles(x[part], tiles, buffer, prefix + "x_tiles")           # V  [a^2, C, N]
            self._forward_part(tiles, kernel_tiles, shift, y[part], part.stop - part.start, buffer, prefix)
            return tiles

        return {"x_shape": x.shape, "input_tiles": (workers or SERIAL).run(forward_part, parts)}

    def _forward_part(self, input_tiles: np.ndarray, kernel_tiles: np.ndarray, shift: np.ndarray, y: np.ndarray,
                      batch: int, buffer: Buffer, name: str) -> None:
        """``y`` (one part, NCHW) from its ``V``: ``M = U V``, then ``A^T M A + bias`` a chunk of channels at a time."""
        channels_out = y.shape[1]
        m = self.tile
        products = buffer(name + "products", (self.positions, channels_out, input_tiles.shape[2]), self.dtype)
        np.matmul(kernel_tiles, input_tiles, out=products)                                    # M = U V
        framed = buffer(name + "y_frame", (channels_out, self.tiles_h * m, self.tiles_w * m, batch), self.dtype)
        by_block = framed.reshape(channels_out, self.tiles_h, m, self.tiles_w, m, batch)
        for part in self._chunks(channels_out, batch):
            count = part.stop - part.start
            blocks = buffer(name + "y_blocks", (m, m, count, self.tiles_h, self.tiles_w, batch), self.dtype)
            scratch = buffer(name + "y_half", (self.alpha, m, *blocks.shape[2:]), self.dtype)
            sandwich(self.output_transform, tile_view(products[:, part], self.alpha), blocks.reshape(m, m, -1),
                     scratch.reshape(self.alpha, m, -1))
            # framed[o, th*m + r, tw*m + s, b] = blocks[r, s, o, th, tw, b] + bias[o]
            np.add(blocks.transpose(2, 3, 0, 4, 1, 5), shift[part], out=by_block[part])
            batch_first(framed[part], y[:, part], 0, 0)                 # while the chunk is in the cache

    def backward(self, grad_out: np.ndarray, cache: dict[str, Any], weights: np.ndarray, grad_weights: np.ndarray,
                 grad_bias: np.ndarray, grad_in: np.ndarray | None, buffer: Buffer, name: str,
                 workers: Workers | None = None) -> None:
        """Write ``dL/dweights``, ``dL/dbias`` and (unless ``grad_in`` is None) ``dL/dx`` from ``grad_out``.

        Part by part of the batch (as forward): ``Gt``, then ``dU = Gt V^T`` and ``dV = U^T Gt``
        (one GEMM per position each), then the tiles' input gradients added back into place; the
        parts' ``dU`` are summed in part order, so ``workers`` do not change the numbers.
        ``cache`` is what :meth:`forward` returned; its ``V`` lives in a buffer, so no other forward
        through the same buffer names may come in between.
        """
        channels_out = grad_out.shape[1]
        channels_in = cache["x_shape"][1]
        np.sum(grad_out, axis=(0, 2, 3), out=grad_bias)
        transposed_kernels = self.kernel_tiles(weights).transpose(0, 2, 1) if grad_in is not None else None
        parts = self.batch_parts(len(grad_out), max(channels_in, channels_out))
        part_kernel_tiles = buffer(name + "grad_u", (len(parts), self.positions, channels_out, channels_in),
                                   self.dtype)

        def backward_part(item: tuple[int, slice]) -> None:
            index, part = item
            prefix = self._lane_prefix(name)
            input_tiles = cache["input_tiles"][index]
            grad_tiles = self.output_tiles(grad_out[part], buffer, prefix + "g_tiles")         # Gt [a^2, O, N]
            np.matmul(grad_tiles, input_tiles.transpose(0, 2, 1), out=part_kernel_tiles[index])   # dU = Gt V^T
            if grad_in is not None:
                grad_input_tiles = buffer(prefix + "grad_v", input_tiles.shape, self.dtype)
                np.matmul(transposed_kernels, grad_tiles, out=grad_input_tiles)                # dV = U^T Gt
                self._add_tiles(grad_input_tiles, grad_in[part], buffer, prefix + "grad_x")

        (workers or SERIAL).run(backward_part, list(enumerate(parts)))
        self.kernel_from_tiles(part_kernel_tiles.sum(axis=0), grad_weights)

    def _add_tiles(self, grad_input_tiles: np.ndarray, grad_in: np.ndarray, buffer: Buffer, name: str) -> None:
        """``grad_in`` from ``dV``: ``B dV B^T`` per tile, each tile's gradient added where the tile was read.

        Tile ``(th, tw)`` covers padded rows ``th*m .. th*m + m + 1``: its first ``m`` rows are block
        ``th`` and its last 2 the start of block ``th + 1`` (likewise for columns). So the ``m x m``
        corner of every tile is written (it covers each block once), then the three overlapping
        strips are added, all through a view of the padded gradient as ``[C, blocks_h, m, blocks_w, m, B]``.
        """
        batch, channels = grad_in.shape[:2]
        m, a = self.tile, self.alpha
        th, tw = self.tiles_h, self.tiles_w
        padded = buffer(name + "_pad", (channels, self.padded_h, self.padded_w, batch), self.dtype)
        blocks = padded.reshape(channels, th + 1, m, tw + 1, m, batch)
        for part in self._chunks(channels, batch):
            tile_grads = buffer(name + "_tiles", (a, a, part.stop - part.start, th, tw, batch), self.dtype)
            scratch = buffer(name + "_half", tile_grads.shape, self.dtype)
            sandwich(self.input_transform.T, tile_view(grad_input_tiles[:, part], a), tile_grads.reshape(a, a, -1),
                     scratch.reshape(a, a, -1))
            by_tile = tile_grads.transpose(2, 3, 0, 4, 1, 5)                                   # [c, th, i, tw, j, b]
            into = blocks[part]
            into[:, th] = 0                                               # the last blocks only receive adds
            into[:, :th, :, tw] = 0
            np.copyto(into[:, :th, :, :tw], by_tile[:, :, :m, :, :m])
            into[:, 1:, :2, :tw] += by_tile[:, :, m:, :, :m]
            into[:, :th, :, 1:, :2] += by_tile[:, :, :m, :, m:]
            into[:, 1:, :2, 1:, :2] += by_tile[:, :, m:, :, m:]
            batch_first(padded[part], grad_in[:, part], self.pad_h, self.pad_w)
